//! For tests: an in-memory object store that does on cue what a network does to requests
//! and a real server cannot be made to do when a test wants it: requests held (a silent
//! store, or a slow one) until released, an answer lost after the store applied the write,
//! and how many reads were under way at once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct Watched {
    inner: InMemory,
    /// `false` holds every request until it is `true` again.
    open: watch::Sender<bool>,
    /// Requests waiting for `open`.
    holding: Arc<AtomicUsize>,
    reading: AtomicUsize,
    most_reading: AtomicUsize,
    /// The next create-if-absent write is applied, and then answered with an error.
    lose_next_create_answer: AtomicBool,
}

impl Default for Watched {
    fn default() -> Watched {
        Watched {
            inner: InMemory::new(),
            open: watch::Sender::new(true),
            holding: Arc::default(),
            reading: AtomicUsize::new(0),
            most_reading: AtomicUsize::new(0),
            lose_next_create_answer: AtomicBool::new(false),
        }
    }
}

impl Watched {
    /// Holds requests (`false`) or lets them go on (`true`).
    pub(crate) fn answer(&self, open: bool) {
        self.open.send_replace(open);
    }

    /// Requests held now.
    pub(crate) fn holding(&self) -> usize {
        self.holding.load(Ordering::SeqCst)
    }

    /// Returns once requests may go on.
    fn until_open(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut open = self.open.subscribe();
        let holding = self.holding.clone();
        async move {
            if !*open.borrow() {
                holding.fetch_add(1, Ordering::SeqCst);
                let _ = open.wait_for(|open| *open).await;
                holding.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// `stream`, held until requests may go on.
    fn held<T: Send + 'static>(&self, stream: BoxStream<'static, T>) -> BoxStream<'static, T> {
        let open = self.until_open();
        futures::stream::once(async move {
            open.await;
            stream
        })
        .flatten()
        .boxed()
    }

    /// The most reads that were under way at once since [`Self::count_reads_from_now`].
    pub(crate) fn most_reading(&self) -> usize {
        self.most_reading.load(Ordering::SeqCst)
    }

    pub(crate) fn count_reads_from_now(&self) {
        self.most_reading.store(0, Ordering::SeqCst);
    }

    pub(crate) fn lose_next_create_answer(&self) {
        self.lose_next_create_answer.store(true, Ordering::SeqCst);
    }
}

/// A read under way, counted until it ends or is dropped (its task aborted).
struct Reading<'a>(&'a AtomicUsize);

impl<'a> Reading<'a> {
    fn new(store: &'a Watched) -> Reading<'a> {
        let now = store.reading.fetch_add(1, Ordering::SeqCst) + 1;
        store.most_reading.fetch_max(now, Ordering::SeqCst);
        Reading(&store.reading)
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Display for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Watched({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Watched {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.until_open().await;
        let create = matches!(opts.mode, PutMode::Create);
        let put = self.inner.put_opts(location, payload, opts).await?;
        if create && self.lose_next_create_answer.swap(false, Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "watched",
                source: "the connection dropped before the answer".into(),
            });
        }
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let _reading = Reading::new(self);
        // A round trip: other tasks run meanwhile, as they would while a request is on
        // the wire.
        tokio::task::yield_now().await;
        self.until_open().await;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.held(self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.held(self.inner.list(prefix))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.until_open().await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.until_open().await;
        self.inner.copy_opts(from, to, options).await
    }
}
