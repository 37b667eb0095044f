//! A connection whose writes fail once they have made no progress for a while.
//!
//! A client that stops reading its answer (or its event stream) fills the socket's buffer, and
//! the server's write then waits for good, holding one of the server's connections. Wrapped in
//! [`WriteStall`], that write fails with [`io::ErrorKind::TimedOut`] once nothing at all could be
//! written for the limit, and the server closes the connection. (A Unix socket takes writes again
//! only once most of its buffer has been read, so a client must read on the order of the
//! buffer's size within the limit: about 200 KiB per minute with Linux's defaults.) Reads are not timed here: an
//! event stream's client sends nothing for as long as it follows, and the server's own timers
//! bound the reading of a request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner`, whose writes, flushes and shutdown fail after `limit` without progress.
#[derive(Debug)]
pub(super) struct WriteStall<S> {
    inner: S,
    limit: Duration,
    /// Armed when a write first had to wait, disarmed by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteStall<S> {
    pub(super) fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// What a write-side poll of `inner` returned, turned into an error once the writes have
    /// waited for `limit` in a row.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?}"),
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.timed(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn a_write_the_peer_does_not_read_fails_after_the_limit() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut ours = WriteStall::new(ours, LIMIT);
        let chunk = vec![7u8; 64 * 1024];
        let err = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Err(e) = ours.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await
        .expect("the stalled write never failed");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_cut() {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut ours = WriteStall::new(ours, LIMIT);
        let total = 1024 * 1024;
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = vec![0u8; 64 * 1024];
            // Takes what has arrived, more often than the limit: the writer waits each time,
            // but never for the limit in a row.
            while got < total {
                tokio::time::sleep(LIMIT / 4).await;
                let n = theirs.read(&mut buf).await.unwrap();
                assert_ne!(n, 0);
                got += n;
                while let Ok(n) = theirs.try_read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
            }
            got
        });
        ours.write_all(&vec![1u8; total]).await.unwrap();
        ours.flush().await.unwrap();
        assert_eq!(reader.await.unwrap(), total);
    }
}
