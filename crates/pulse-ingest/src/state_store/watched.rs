//! For tests: an in-memory object store that does on cue what a network does to requests
//! and a real server cannot be made to do when a test wants it: requests held (a silent
//! store, or a slow one) until released, an answer lost after the store applied the write,
//! and how many reads were under way at once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use object_store::memory::InMemory;
use tokio::sync::watch;

use super::decorated::{Around, Decorated, Request};

/// An in-memory store, watched.
pub(crate) fn store() -> Arc<Decorated<Watched>> {
    Arc::new(Decorated::new(
        Arc::new(InMemory::new()),
        Watched::default(),
    ))
}

#[derive(Debug)]
pub(crate) struct Watched {
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
        f.write_str("Watched")
    }
}

impl Around for Watched {
    fn request<'a, T: Send + 'a>(
        &'a self,
        kind: Request,
        request: BoxFuture<'a, object_store::Result<T>>,
    ) -> BoxFuture<'a, object_store::Result<T>> {
        Box::pin(async move {
            let _reading = (kind == Request::Get).then(|| Reading::new(self));
            if kind == Request::Get {
                // A round trip: other tasks run meanwhile, as they would while a request
                // is on the wire.
                tokio::task::yield_now().await;
            }
            self.until_open().await;
            let answer = request.await?;
            if kind == (Request::Put { create: true })
                && self.lose_next_create_answer.swap(false, Ordering::SeqCst)
            {
                return Err(object_store::Error::Generic {
                    store: "watched",
                    source: "the connection dropped before the answer".into(),
                });
            }
            Ok(answer)
        })
    }

    fn stream<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        let open = self.until_open();
        futures::stream::once(async move {
            open.await;
            stream
        })
        .flatten()
        .boxed()
    }
}
