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
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};

use super::decorated::{Around, Request};

/// Every request fails after this long without an answer (see [`super::decorated`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline(pub Duration);

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Deadline({:?})", self.0)
    }
}

impl Deadline {
    fn expired(&self) -> object_store::Error {
        object_store::Error::Generic {
            store: "state store",
            source: format!("no answer within {:?} (state.timeout)", self.0).into(),
        }
    }
}

impl Around for Deadline {
    fn request<'a, T: Send + 'a>(
        &'a self,
        _: Request,
        request: BoxFuture<'a, object_store::Result<T>>,
    ) -> BoxFuture<'a, object_store::Result<T>> {
        Box::pin(async move {
            tokio::time::timeout(self.0, request)
                .await
                .unwrap_or_else(|_| Err(self.expired()))
        })
    }

    /// Each item must come within the deadline; the stream ends after the first expiry.
    fn stream<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        let deadline = *self;
        futures::stream::unfold(Some(stream), move |stream| async move {
            let mut stream = stream?;
            match tokio::time::timeout(deadline.0, stream.next()).await {
                Ok(Some(item)) => Some((item, Some(stream))),
                Ok(None) => None,
                Err(_) => Some((Err(deadline.expired()), None)),
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

    use super::super::decorated::Decorated;
    use super::super::watched;
    use super::*;

    // Paused time: the runtime moves the clock on whenever every task waits, so the
    // deadline passes without the test sleeping.
    #[tokio::test(start_paused = true)]
    async fn a_silent_store_fails_every_request_at_the_deadline() {
        let limit = Duration::from_secs(5);
        // A blackhole: the store never answers.
        let silent = watched::store();
        silent.around().answer(false);
        let store = Decorated::new(silent, Deadline(limit));
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
        let store = Decorated::new(Arc::new(InMemory::new()), Deadline(Duration::from_secs(5)));
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
