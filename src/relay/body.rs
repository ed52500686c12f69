//! Body adapters for the relay: byte counting, the replayable prefix of a
//! chunked upload, and reading a spooled upload back from its file.
//!
//! Every adapter passes frames through one at a time, so the relay holds
//! at most a few read buffers per connection and hyper's flow control
//! (poll a body only when the other side can take more) gives
//! backpressure end to end.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the relay sends, both ways.
pub type RelayBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Counts the data bytes of a body into `counter` as they pass.
pub struct Counted<B> {
    inner: B,
    stats: Arc<super::RelayStats>,
    counter: fn(&super::RelayStats) -> &AtomicU64,
}

impl<B> Counted<B> {
    pub fn new(
        inner: B,
        stats: Arc<super::RelayStats>,
        counter: fn(&super::RelayStats) -> &AtomicU64,
    ) -> Self {
        Counted {
            inner,
            stats,
            counter,
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                (self.counter)(&self.stats).fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How much of a chunked upload is remembered, once it flows, until the
/// upstream's answer starts, so that a 411 can still be answered by
/// resending the whole body. It matters only for an upstream that ignores
/// `Expect: 100-continue` (see [`CONTINUE_WAIT`]); a server that reads the
/// body (every git server) makes the relay forget the prefix after this much.
pub const REPLAY_LIMIT: usize = 2 * 1024 * 1024;

/// How long a chunked body is held back, waiting for the upstream's
/// `100 Continue` (the relay sends `Expect: 100-continue`), before it is
/// sent anyway. A server that refuses chunked bodies answers 411 instead,
/// before a byte of the body has left the relay. One second is curl's wait.
pub const CONTINUE_WAIT: Duration = Duration::from_secs(1);

struct ReplayState {
    incoming: Option<Incoming>,
    prefix: Vec<Bytes>,
    prefix_len: usize,
    /// Still remembering what is sent (no answer yet, limit not reached).
    recording: bool,
    /// The limit was passed: a 411 can no longer be recovered from.
    overflowed: bool,
    /// The relay took the body back; the upstream request must fail.
    taken: bool,
    /// The body may flow: the upstream said 100 Continue, or answered, or
    /// [`CONTINUE_WAIT`] passed.
    open: bool,
    /// The task waiting for the gate to open.
    waker: Option<Waker>,
}

/// A chunked request body on its way upstream, remembering what it sent
/// until the upstream's answer begins (see [`REPLAY_LIMIT`]).
pub struct Replayable {
    state: Arc<Mutex<ReplayState>>,
    stats: Arc<super::RelayStats>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The relay's handle on a [`Replayable`] body that hyper is sending.
#[derive(Clone)]
pub struct ReplayHandle {
    state: Arc<Mutex<ReplayState>>,
}

/// What is left of a chunked body after a 411: the part already handed to
/// the upstream, then the part the client has not sent yet.
pub struct Unsent {
    pub prefix: Vec<Bytes>,
    pub rest: Option<Incoming>,
}

fn lock(state: &Mutex<ReplayState>) -> MutexGuard<'_, ReplayState> {
    // The state stays consistent across a panic in poll (every field is
    // written in one step), so a poisoned lock is still usable.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Replayable {
    pub fn new(incoming: Incoming, stats: Arc<super::RelayStats>) -> (Replayable, ReplayHandle) {
        let state = Arc::new(Mutex::new(ReplayState {
            incoming: Some(incoming),
            prefix: Vec::new(),
            prefix_len: 0,
            recording: true,
            overflowed: false,
            taken: false,
            open: false,
            waker: None,
        }));
        (
            Replayable {
                state: state.clone(),
                stats,
                wait: None,
            },
            ReplayHandle { state },
        )
    }
}

impl ReplayHandle {
    /// The upstream answered with something other than 411: forget the prefix.
    pub fn answered(&self) {
        let mut state = lock(&self.state);
        state.recording = false;
        state.prefix = Vec::new();
        open(&mut state);
    }

    /// The upstream sent an informational answer: 100 lets the body flow.
    pub fn informational(&self, status: hyper::StatusCode) {
        if status == hyper::StatusCode::CONTINUE {
            open(&mut lock(&self.state));
        }
    }

    /// Takes the body back after a 411; `None` when too much was sent to
    /// resend it. The upstream's copy of the body fails from now on.
    pub fn take(&self) -> Option<Unsent> {
        let mut state = lock(&self.state);
        state.taken = true;
        state.recording = false;
        open(&mut state);
        if state.overflowed {
            return None;
        }
        Some(Unsent {
            prefix: std::mem::take(&mut state.prefix),
            rest: state.incoming.take(),
        })
    }
}

fn open(state: &mut ReplayState) {
    state.open = true;
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

#[derive(Debug)]
struct Withdrawn;

impl std::fmt::Display for Withdrawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the relay withdrew the body to resend it with a length")
    }
}

impl std::error::Error for Withdrawn {}

impl Body for Replayable {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut state = lock(&this.state);
        if !state.open {
            let wait = this
                .wait
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(CONTINUE_WAIT)));
            if wait.as_mut().poll(cx).is_pending() {
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            state.open = true;
        }
        if state.taken {
            // An error, not the end: a clean end would make the upstream
            // take a truncated body for a whole one.
            return Poll::Ready(Some(Err(Box::new(Withdrawn))));
        }
        let Some(incoming) = state.incoming.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(incoming).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.stats
                    .bytes_up
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if state.recording {
                    if state.prefix_len + data.len() <= REPLAY_LIMIT {
                        state.prefix_len += data.len();
                        state.prefix.push(data.clone());
                    } else {
                        state.recording = false;
                        state.overflowed = true;
                        state.prefix = Vec::new();
                    }
                }
            }
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }
}

/// Reads a spooled body back in 64 KiB frames; the file (already unlinked
/// on Unix) goes away when the body is dropped.
pub fn file_body(file: tokio::fs::File, len: u64, guard: super::spool::SpoolGuard) -> RelayBody {
    use tokio::io::AsyncReadExt;
    const CHUNK: u64 = 64 * 1024;
    let stream = futures_util::stream::unfold(
        (file, len, guard),
        |(mut file, remaining, guard)| async move {
            if remaining == 0 {
                return None;
            }
            let mut buf = vec![0u8; remaining.min(CHUNK) as usize];
            let item: Result<Frame<Bytes>, BoxError> = match file.read(&mut buf).await {
                Ok(0) => Err("the spool file is shorter than what was written to it".into()),
                Ok(n) => {
                    buf.truncate(n);
                    let left = remaining - n as u64;
                    return Some((Ok(Frame::data(Bytes::from(buf))), (file, left, guard)));
                }
                Err(e) => Err(Box::new(e)),
            };
            Some((item, (file, 0, guard)))
        },
    );
    http_body_util::StreamBody::new(Box::pin(stream)).boxed_unsync()
}

/// A short plain-text body.
pub fn text(message: String) -> RelayBody {
    http_body_util::Full::new(Bytes::from(message))
        .map_err(|never| match never {})
        .boxed_unsync()
}
