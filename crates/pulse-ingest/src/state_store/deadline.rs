//! A deadline on every request to the state store (`state.timeout`).
//!
//! Why: object_store's HTTP clients retry a failing request with backoff for up to three
//! minutes (ten retries), and each attempt may wait 30 s for an answer. Against a store that
//! has gone silent (a network partition, a blackholed endpoint) one checkpoint then hangs for
//! minutes: it counts as failed only then, no other checkpoint starts meanwhile, and an
//! assigned partition waits that long before its load is tried again. With the deadline a
//! request that has not answered, retries included, fails, the checkpoint counts as failed
//! and the next one is tried at the next interval; a store that answers within it is not
//! affected. A read includes its body, so a transfer that stalls half-way is cut as well.
//!
//! Cutting a request off leaves its outcome unknown (it may still land): the store's
//! callers are written for that (see `save_partition`'s "answer lost" case).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// `inner`, each request of which fails after `limit` without an answer.
#[derive(Debug)]
pub(super) struct Deadline {
    inner: Arc<dyn ObjectStore>,
    limit: Duration,
}

impl Deadline {
    pub(super) fn new(inner: Arc<dyn ObjectStore>, limit: Duration) -> Deadline {
        Deadline { inner, limit }
    }
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Deadline({:?}, {})", self.limit, self.inner)
    }
}

fn expired(limit: Duration) -> object_store::Error {
    object_store::Error::Generic {
        store: "state store",
        source: format!("no answer within {limit:?} (state.timeout)").into(),
    }
}

/// `request`, or the deadline's error once `limit` has passed.
async fn within<T>(
    limit: Duration,
    request: impl Future<Output = object_store::Result<T>>,
) -> object_store::Result<T> {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or_else(|_| Err(expired(limit)))
}

/// `stream`, each item of which must come within `limit`; ends after the first expiry.
fn each_within<T: Send + 'static>(
    limit: Duration,
    stream: BoxStream<'static, object_store::Result<T>>,
) -> BoxStream<'static, object_store::Result<T>> {
    futures::stream::unfold(Some(stream), move |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout(limit, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((Err(expired(limit)), None)),
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for Deadline {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        within(self.limit, self.inner.put_opts(location, payload, opts)).await
    }

    /// Not used by pulse (checkpoints are single puts); passed through, undecorated.
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
        within(self.limit, async {
            let got = self.inner.get_opts(location, options).await?;
            let (meta, range, attributes, extensions) = (
                got.meta.clone(),
                got.range.clone(),
                got.attributes.clone(),
                got.extensions.clone(),
            );
            let bytes = got.bytes().await?;
            Ok(GetResult {
                payload: GetResultPayload::Stream(
                    futures::stream::once(async { Ok(bytes) }).boxed(),
                ),
                meta,
                range,
                attributes,
                extensions,
            })
        })
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        each_within(self.limit, self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        each_within(self.limit, self.inner.list(prefix))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        within(self.limit, self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        within(self.limit, self.inner.copy_opts(from, to, options)).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::super::watched::Watched;
    use super::*;

    // Paused time: the runtime moves the clock on whenever every task waits, so the
    // deadline passes without the test sleeping.
    #[tokio::test(start_paused = true)]
    async fn a_silent_store_fails_every_request_at_the_deadline() {
        let limit = Duration::from_secs(5);
        // A blackhole: the store never answers.
        let silent = Watched::default();
        silent.answer(false);
        let store = Deadline::new(Arc::new(silent), limit);
        let path = Path::from("p/x");
        let started = tokio::time::Instant::now();
        let put = store.put(&path, PutPayload::from_static(b"x")).await;
        assert!(put.unwrap_err().to_string().contains("state.timeout"));
        assert_eq!(
            started.elapsed(),
            limit,
            "failed at the deadline, not later"
        );
        assert!(store.get(&path).await.is_err());
        assert!(store.list_with_delimiter(None).await.is_err());
        assert!(store.copy(&path, &Path::from("q")).await.is_err());
        assert!(store.delete(&path).await.is_err());
        let listed: Vec<_> = store.list(None).collect().await;
        assert_eq!(listed.len(), 1, "one error, then the listing ends");
        assert!(listed[0].is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_answers_is_unchanged() {
        let store = Deadline::new(Arc::new(InMemory::new()), Duration::from_secs(5));
        let path = Path::from("p/x");
        store
            .put(&path, PutPayload::from_static(b"state"))
            .await
            .unwrap();
        let read = store.get(&path).await.unwrap();
        assert_eq!(read.meta.size, 5);
        assert_eq!(read.bytes().await.unwrap().as_ref(), b"state");
        let listed: Vec<_> = store
            .list(None)
            .map(|m| m.unwrap().location)
            .collect()
            .await;
        assert_eq!(listed, std::slice::from_ref(&path));
        store.delete(&path).await.unwrap();
        assert!(matches!(
            store.get(&path).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }
}
