//! Streamed object bodies.
//!
//! Media objects can be gigabytes, so they move as a stream of chunks and no contract ever asks
//! for a whole object in memory. The stream type is a boxed
//! [`futures_core::Stream`]`<Item = Result<Bytes>>` — the same shape `object_store`, `reqwest`,
//! `hyper` and the AWS SDK convert to and from in one line — rather than a reader trait of our
//! own or tokio's `AsyncRead`:
//!
//! - `futures-core` and `bytes` are tiny, have been at 0.3 / 1.x for years and carry no runtime,
//!   so a provider is not tied to tokio, and this crate's API does not move when tokio does;
//! - `Bytes` chunks are reference-counted, so passing one from a download to an upload copies
//!   nothing;
//! - a stream yields errors per chunk, which an `io::Read`-style trait would flatten into
//!   `io::Error`.

use crate::error::{Error, Result};
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// An object's bytes, as a stream of chunks, with its length when known.
///
/// When a length is declared, the body itself enforces it: a stream that yields more, or ends
/// with fewer, bytes yields an [`Error::Invalid`] instead, so every provider refuses a short or
/// overlong upload the same way without counting bytes itself.
pub struct ObjectBody {
    stream: BoxStream,
    length: Option<u64>,
    seen: u64,
    done: bool,
}

impl ObjectBody {
    /// Wraps a stream of chunks. `length`, if given, is enforced (see the type's docs).
    pub fn new<S>(stream: S, length: Option<u64>) -> Self
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        ObjectBody {
            stream: Box::pin(stream),
            length,
            seen: 0,
            done: false,
        }
    }

    /// A body of bytes already in memory (small objects, tests).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let length = Some(bytes.len() as u64);
        ObjectBody::new(Once(Some(bytes)), length)
    }

    /// An empty body.
    pub fn empty() -> Self {
        ObjectBody::from_bytes(Bytes::new())
    }

    /// The declared length in bytes, if known.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// The next chunk, or `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Reads the whole body into memory, refusing with [`Error::QuotaExceeded`] past `max_bytes`.
    /// For small objects and tests only: providers stream instead.
    pub async fn collect(mut self, max_bytes: u64) -> Result<Bytes> {
        let mut out = BytesMut::new();
        while let Some(chunk) = self.next_chunk().await {
            let chunk = chunk?;
            let used = out.len() as u64 + chunk.len() as u64;
            if used > max_bytes {
                return Err(Error::QuotaExceeded {
                    what: "object body held in memory".into(),
                    limit: max_bytes,
                    used,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    fn length_error(&self, declared: u64) -> Error {
        Error::invalid(
            "object body",
            format!(
                "declared {declared} bytes, but the stream gave {}",
                self.seen
            ),
        )
    }
}

impl Stream for ObjectBody {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = self.stream.as_mut().poll_next(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                match self.length {
                    Some(declared) if self.seen > declared => {
                        self.done = true;
                        Poll::Ready(Some(Err(self.length_error(declared))))
                    }
                    _ => Poll::Ready(Some(Ok(chunk))),
                }
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                match self.length {
                    Some(declared) if self.seen != declared => {
                        Poll::Ready(Some(Err(self.length_error(declared))))
                    }
                    _ => Poll::Ready(None),
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBody")
            .field("length", &self.length)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl From<Bytes> for ObjectBody {
    fn from(bytes: Bytes) -> Self {
        ObjectBody::from_bytes(bytes)
    }
}

impl From<Vec<u8>> for ObjectBody {
    fn from(bytes: Vec<u8>) -> Self {
        ObjectBody::from_bytes(bytes)
    }
}

/// A stream of at most one chunk.
struct Once(Option<Bytes>);

impl Stream for Once {
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.take().map(Ok))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// Runs a future to completion on this thread (the crate has no runtime, on purpose).
    pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(v) => return v,
                Poll::Pending => std::thread::park(),
            }
        }
    }

    /// A stream over fixed chunks.
    struct Chunks(std::vec::IntoIter<Bytes>);
    impl Stream for Chunks {
        type Item = Result<Bytes>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.next().map(Ok))
        }
    }

    fn chunks(parts: &[&'static str], length: Option<u64>) -> ObjectBody {
        let v: Vec<Bytes> = parts
            .iter()
            .map(|p| Bytes::from_static(p.as_bytes()))
            .collect();
        ObjectBody::new(Chunks(v.into_iter()), length)
    }

    #[test]
    fn body_streams_its_chunks() {
        let body = chunks(&["ab", "cd", "e"], Some(5));
        assert_eq!(block_on(body.collect(5)).expect("fits"), "abcde");
        assert_eq!(
            block_on(chunks(&["x"], None).collect(10)).expect("fits"),
            "x"
        );
        assert_eq!(block_on(ObjectBody::empty().collect(0)).expect("fits"), "");
        let body = ObjectBody::from(b"hello".to_vec());
        assert_eq!(body.length(), Some(5));
    }

    #[test]
    fn body_refuses_short_and_overlong_streams() {
        for (parts, declared) in [(&["ab", "cd"][..], 3), (&["ab"][..], 3)] {
            let err = block_on(chunks(parts, Some(declared)).collect(100)).expect_err("mismatch");
            assert!(matches!(err, Error::Invalid { .. }), "{err}");
            assert!(err.to_string().contains("declared 3 bytes"), "{err}");
        }
    }

    #[test]
    fn collect_stops_at_its_limit() {
        let err = block_on(chunks(&["abc", "def"], None).collect(4)).expect_err("too big");
        assert!(
            matches!(
                err,
                Error::QuotaExceeded {
                    limit: 4,
                    used: 6,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn body_is_send() {
        fn check<T: Send + Unpin>() {}
        check::<ObjectBody>();
    }
}
