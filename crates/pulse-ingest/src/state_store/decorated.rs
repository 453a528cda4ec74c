//! An object store wrapped by another that acts around each of its requests: the request
//! deadline ([`super::deadline`]) and, in tests, `watched`. The store's methods are passed
//! through here once; a decorator ([`Around`]) says only what it does around a request.
//!
//! A read's body is read inside the request, so that what a decorator does around it (a
//! deadline) covers the transfer too; pulse reads every object whole anyway.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// The kind of a request, for a decorator that treats them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// A write; `create`: only if absent (a manifest).
    Put {
        create: bool,
    },
    Get,
    /// A listing, copy or the like.
    Other,
}

/// What a decorator does around the requests of the store it wraps.
pub(crate) trait Around: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// Runs `request`, a request of kind `kind` to the wrapped store.
    fn request<'a, T: Send + 'a>(
        &'a self,
        kind: Request,
        request: BoxFuture<'a, object_store::Result<T>>,
    ) -> BoxFuture<'a, object_store::Result<T>>;

    /// A listing (or deletion) of the wrapped store, item by item.
    fn stream<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>>;
}

/// `inner` with `around` around each request.
#[derive(Debug)]
pub(crate) struct Decorated<A> {
    inner: Arc<dyn ObjectStore>,
    around: A,
}

impl<A: Around> Decorated<A> {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, around: A) -> Decorated<A> {
        Decorated { inner, around }
    }

    #[cfg(test)]
    pub(crate) fn around(&self) -> &A {
        &self.around
    }
}

impl<A: Around> fmt::Display for Decorated<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.around, self.inner)
    }
}

#[async_trait]
impl<A: Around> ObjectStore for Decorated<A> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let create = matches!(opts.mode, PutMode::Create);
        let put = self.inner.put_opts(location, payload, opts);
        self.around.request(Request::Put { create }, put).await
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
        let get = async {
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
        };
        self.around.request(Request::Get, Box::pin(get)).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.around.stream(self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.around.stream(self.inner.list(prefix))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix);
        self.around.request(Request::Other, listed).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let copy = self.inner.copy_opts(from, to, options);
        self.around.request(Request::Other, copy).await
    }
}
