//! An I/O wrapper that watches the request head go by.
//!
//! hyper accepts a request with both `Content-Length` and
//! `Transfer-Encoding` and silently drops the length, so the service can no
//! longer see that the client sent both (a request-smuggling tell that the
//! relay must refuse). This wrapper notes which framing headers the first
//! request head names while hyper reads it, without copying or delaying the
//! bytes. It also measures the head: hyper's own bound is checked only
//! between reads, so one large read can carry a head past it. The relay
//! serves one request per connection, so the first head is the only one.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the head said about framing; read by the service after hyper has
/// parsed the head (so after every byte of it went through the wrapper).
#[derive(Debug, Default)]
pub struct HeadFlags {
    content_length: AtomicBool,
    transfer_encoding: AtomicBool,
    too_large: AtomicBool,
}

impl HeadFlags {
    /// Both a length and a transfer coding were given.
    pub fn conflicting(&self) -> bool {
        self.content_length.load(Ordering::Acquire)
            && self.transfer_encoding.load(Ordering::Acquire)
    }

    /// The head was longer than the limit given to [`HeadScan::new`].
    pub fn too_large(&self) -> bool {
        self.too_large.load(Ordering::Acquire)
    }
}

/// Only this much of each header line is kept: enough to hold the name.
const NAME_PREFIX: usize = 32;

pub struct HeadScan<T> {
    inner: T,
    flags: Arc<HeadFlags>,
    line: Vec<u8>,
    lines: usize,
    head_len: usize,
    max_head: usize,
    done: bool,
}

impl<T> HeadScan<T> {
    pub fn new(inner: T, flags: Arc<HeadFlags>, max_head: usize) -> Self {
        HeadScan {
            inner,
            flags,
            line: Vec::with_capacity(NAME_PREFIX),
            lines: 0,
            head_len: 0,
            max_head,
            done: false,
        }
    }

    pub(super) fn scan(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.done {
                return;
            }
            self.head_len += 1;
            if self.head_len > self.max_head {
                self.flags.too_large.store(true, Ordering::Release);
                self.done = true;
                return;
            }
            if byte != b'\n' {
                if self.line.len() < NAME_PREFIX {
                    self.line.push(byte);
                }
                continue;
            }
            let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
            if line.is_empty() {
                // Empty lines before the request line are tolerated by
                // hyper; one after it ends the head.
                self.done = self.lines > 0;
            } else {
                if self.lines > 0 {
                    let name = line.split(|b| *b == b':').next().unwrap_or_default();
                    let name = name.trim_ascii();
                    if name.eq_ignore_ascii_case(b"content-length") {
                        self.flags.content_length.store(true, Ordering::Release);
                    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                        self.flags.transfer_encoding.store(true, Ordering::Release);
                    }
                }
                self.lines += 1;
            }
            self.line.clear();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadScan<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.done {
            let this = &mut *self;
            this.scan(&buf.filled()[before..]);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadScan<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags_for(chunks: &[&[u8]]) -> (bool, bool) {
        let flags = Arc::new(HeadFlags::default());
        let mut scan = HeadScan::new((), flags.clone(), 100);
        for chunk in chunks {
            scan.scan(chunk);
        }
        (
            flags.content_length.load(Ordering::Acquire),
            flags.transfer_encoding.load(Ordering::Acquire),
        )
    }

    #[test]
    fn sees_both_headers_across_reads() {
        assert_eq!(
            flags_for(&[
                b"POST / HTTP/1.1\r\nTransfer-Enc",
                b"oding: chunked\r\ncontent-LENGTH : 5\r\n\r\n"
            ]),
            (true, true)
        );
    }

    #[test]
    fn measures_the_head() {
        let flags = Arc::new(HeadFlags::default());
        let mut scan = HeadScan::new((), flags.clone(), 40);
        scan.scan(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody bytes do not count, however many");
        assert!(!flags.too_large());
        let mut scan = HeadScan::new((), flags.clone(), 40);
        scan.scan(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: 0123456789012345\r\n\r\n");
        assert!(flags.too_large());
    }

    #[test]
    fn stops_at_the_end_of_the_head() {
        assert_eq!(
            flags_for(&[b"\r\nPOST / HTTP/1.1\r\nHost: x\r\n\r\nTransfer-Encoding: chunked\r\n"]),
            (false, false)
        );
        assert_eq!(
            flags_for(&[b"GET /content-length HTTP/1.1\r\n\r\n"]),
            (false, false)
        );
    }
}
