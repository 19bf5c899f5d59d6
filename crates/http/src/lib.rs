//! Serves an axum router over HTTP/1, one task per connection, until
//! asked to stop (then each connection finishes its request): the node's
//! API and each environment's Runtime API. It owns connections, not
//! requests: everything about a request is the router's, but for how many
//! are in flight (when asked to count them), which a stop waits for.
//!
//! It is `axum::serve` but for one thing: a connection is polled through
//! [`Repoll`]. hyper reads a request's body in the same poll as it polls
//! the handler waiting for it, so the handler's waker (the connection's own
//! task) is woken while that task runs; tokio then puts the task back as a
//! yield and wakes a parked thread to take it, which finds nothing to do.
//! That happened once per boto3 invoke (whose body arrives in a TCP segment
//! of its own) and once per response a runtime posts, and the extra thread
//! kept both CPUs busy, so that the scheduler moved runtimes between them
//! (BENCHMARKS "Session 20").

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::extract::ConnectInfo;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// What one listener lets its clients hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once: the next waits in the listener's backlog
    /// until one closes, so that clients cannot take every descriptor the
    /// node needs for its own work.
    pub connections: usize,
    /// How long a client may take to send a request's head, counted from
    /// when the connection is ready for it (so an idle keep-alive
    /// connection closes after this long too). `None` waits without end.
    pub header_read: Option<Duration>,
    /// How long a client may pause while sending a request's body: past it
    /// the body ends in an error, as if the connection broke, so that a
    /// client that stops mid-body does not hold its connection and what the
    /// node has read of the body for ever. `None` waits without end.
    pub body_idle: Option<Duration>,
    /// How long a response may wait for its client to read any of it: past
    /// it the connection closes, so that a client that sends requests and
    /// never reads the answers does not hold its slot (and a graceful stop)
    /// for ever. `None` waits without end.
    pub write_stall: Option<Duration>,
    /// Header fields a request may have (hyper's default, 100, when `None`:
    /// its fastest). S3 counts metadata by size, not by entries.
    pub headers_max: Option<usize>,
    /// Writes response header names in title case (`Lambda-Runtime-Aws-Request-Id`),
    /// for clients that compare them as written, as hand-made runtimes do.
    pub title_case_headers: bool,
}

/// The longest request head (its line and header fields): a connection's
/// read buffer grows to hold one, and hyper's own bound (about 400 KB) let
/// a few thousand unfinished heads hold gigabytes.
const HEAD_MAX: usize = 64 << 10;

/// How often a listener whose slots are all taken says so.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Requests a listener is serving, each from its arrival until its
/// response's body has gone out (or its client has gone): what a stop
/// waits for, which the node says when it stops.
#[derive(Debug, Clone, Default)]
pub struct Requests(Arc<AtomicUsize>);

impl Requests {
    /// How many are being served now.
    pub fn in_flight(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn enter(&self) -> Served {
        self.0.fetch_add(1, Ordering::SeqCst);
        Served(self.0.clone())
    }
}

/// One request of [`Requests`], counted until dropped.
struct Served(Arc<AtomicUsize>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds its request's place in [`Requests`] until it
/// has gone out or is dropped.
struct Counted {
    inner: axum::body::Body,
    _served: Served,
}

impl hyper::body::Body for Counted {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `listener` until `stop` completes, then waits for
/// the open connections to finish their requests. The peer's address is
/// each request's `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: impl Future<Output = ()>,
    limits: Limits,
) {
    serve_counted(listener, router, stop, limits, None).await
}

/// [`serve`], counting the requests in flight in `requests`.
pub async fn serve_counting(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: impl Future<Output = ()>,
    limits: Limits,
    requests: Requests,
) {
    serve_counted(listener, router, stop, limits, Some(requests)).await
}

async fn serve_counted(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: impl Future<Output = ()>,
    limits: Limits,
    requests: Option<Requests>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_header_size(HEAD_MAX)
        .title_case_headers(limits.title_case_headers);
    if let Some(n) = limits.headers_max {
        http1.max_headers(n);
    }
    // Dropped at the stop: every connection sees its sender closed.
    let (stopping, stopped) = tokio::sync::watch::channel(());
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<Infallible>(1);
    tokio::pin!(stop);
    let mut warned_at: Option<std::time::Instant> = None;
    loop {
        if slots.available_permits() == 0 && warned_at.is_none_or(|t| t.elapsed() > FULL_WARNING_EVERY) {
            tracing::warn!(connections = limits.connections, "every connection slot is taken; new clients wait");
            warned_at = Some(std::time::Instant::now());
        }
        let permit = tokio::select! {
            Ok(permit) = slots.clone().acquire_owned() => permit,
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let router = router.clone();
        let body_idle = limits.body_idle;
        let requests = requests.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let request = match body_idle {
                Some(after) => request.map(|body| axum::body::Body::new(Idle::new(body, after))),
                None => request.map(axum::body::Body::new),
            };
            let served = requests.as_ref().map(Requests::enter);
            let response = tower::ServiceExt::oneshot(router.clone(), request);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(match served {
                    Some(served) => response.map(|inner| axum::body::Body::new(Counted { inner, _served: served })),
                    None => response,
                })
            }
        });
        let mut stopped = stopped.clone();
        let done = done_tx.clone();
        let http1 = http1.clone();
        tokio::spawn(Repoll::new(async move {
            // The connection (and its socket) goes at the end of this block,
            // before its slot is given back: the slots count open sockets.
            {
                let io = TokioIo::new(Stalled::new(stream, limits.write_stall));
                let connection = http1.serve_connection(io, service).with_upgrades();
                tokio::pin!(connection);
                let mut stopping = false;
                loop {
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(e) = result {
                                tracing::trace!(%peer, error = %e, "connection ended");
                            }
                            break;
                        }
                        _ = stopped.changed(), if !stopping => {
                            stopping = true;
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            drop(done);
            drop(permit);
        }));
    }
    drop(stopping);
    drop(done_tx);
    // Every connection's sender is dropped when it ends.
    let _ = done.recv().await;
}

/// How long a client may keep a connection waiting on it: the timer is
/// made only when a wait first begins (most requests never wait), and
/// counts from the start of each wait.
struct Patience {
    after: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether a wait is under way (the timer counts from its start).
    waiting: bool,
}

impl Patience {
    fn new(after: Duration) -> Self {
        Self { after, timer: None, waiting: false }
    }

    /// The client made progress: the next wait counts afresh.
    fn progressed(&mut self) {
        self.waiting = false;
    }

    /// Whether the wait under way (begun now, if none was) has lasted
    /// `after`; if not, `cx` is woken when it has.
    fn run_out(&mut self, cx: &mut Context<'_>) -> bool {
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
        if !self.waiting {
            timer.as_mut().reset(tokio::time::Instant::now() + self.after);
            self.waiting = true;
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

/// A request body that ends in an error once its client has sent nothing
/// for `after`.
struct Idle {
    inner: Incoming,
    patience: Patience,
}

impl Idle {
    fn new(inner: Incoming, after: Duration) -> Self {
        Self { inner, patience: Patience::new(after) }
    }
}

impl hyper::body::Body for Idle {
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.patience.progressed();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.patience.run_out(cx) {
            true => Poll::Ready(Some(Err("the client sent nothing of the request body for too long".into()))),
            false => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket whose writes fail once they have waited for the
/// client to read for longer than its patience (most answers fit in the
/// socket's buffer, and never wait).
struct Stalled {
    inner: tokio::net::TcpStream,
    patience: Option<Patience>,
}

impl Stalled {
    fn new(inner: tokio::net::TcpStream, after: Option<Duration>) -> Self {
        Self { inner, patience: after.map(Patience::new) }
    }

    /// What a write that returned `result` answers: its result, or once it
    /// has waited too long, an error that ends the connection.
    fn check<T>(&mut self, cx: &mut Context<'_>, result: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        let Some(patience) = &mut self.patience else { return result };
        if result.is_ready() {
            patience.progressed();
            return result;
        }
        match patience.run_out(cx) {
            true => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing of the response for too long",
            ))),
            false => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for Stalled {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Stalled {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A failed accept: the peer gave up (nothing to do), or the node is out
/// of descriptors, which a moment may free.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Polls a future again at once when it is woken while being polled (by
/// itself, or by another thread meanwhile), a few times, instead of
/// handing the wake-up to the scheduler. A future that keeps waking itself
/// (its cooperative budget spent) is handed back after [`Repoll::AGAIN`].
struct Repoll<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    waker: Waker,
}

/// Where a wake-up of the inner future goes.
struct Flag {
    state: AtomicU8,
    /// The task's own waker, as of its last poll.
    task: AtomicWaker,
}

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // During a poll the poll goes on; otherwise the task is woken.
        if let Err(IDLE) = self.state.compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire) {
            self.task.wake();
        }
    }
}

impl<F: Future> Repoll<F> {
    const AGAIN: usize = 4;

    fn new(inner: F) -> Self {
        let flag = Arc::new(Flag { state: AtomicU8::new(IDLE), task: AtomicWaker::new() });
        Self { inner: Box::pin(inner), waker: Waker::from(flag.clone()), flag }
    }
}

impl<F: Future> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.flag.task.register(cx.waker());
        for _ in 0..Self::AGAIN {
            this.flag.state.store(POLLING, Ordering::Release);
            let polled = this.inner.as_mut().poll(&mut Context::from_waker(&this.waker));
            if polled.is_ready() {
                this.flag.state.store(IDLE, Ordering::Release);
                return polled;
            }
            if this.flag.state.compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Poll::Pending;
            }
        }
        this.flag.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Wakes itself `times` times, then is ready; counts its polls.
    struct SelfWaking {
        times: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.times == 0 {
                return Poll::Ready(());
            }
            self.times -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts the wake-ups the scheduler gets.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future>(f: &mut Repoll<F>, count: &Arc<Count>) -> Poll<F::Output> {
        let waker = Waker::from(count.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    /// One poll through `Repoll` of a future that wakes itself `times`
    /// times: (ready, the future's polls, the scheduler's wake-ups).
    fn once_waking_itself(times: usize) -> (bool, usize, usize) {
        let polls = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut f = Repoll::new(SelfWaking { times, polls: polls.clone() });
        let ready = poll_once(&mut f, &count).is_ready();
        (ready, polls.load(Ordering::SeqCst), count.0.load(Ordering::SeqCst))
    }

    #[test]
    fn a_wake_up_during_the_poll_is_a_poll_in_place() {
        // Polled three times, the scheduler never asked.
        assert_eq!(once_waking_itself(2), (true, 3, 0));
    }

    #[test]
    fn a_future_that_keeps_waking_itself_is_handed_back() {
        // Woken once, to be polled later.
        assert_eq!(once_waking_itself(100), (false, Repoll::<SelfWaking>::AGAIN, 1));
    }

    #[test]
    fn a_wake_up_after_the_poll_wakes_the_task() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut f = Repoll::new(std::future::pending::<()>());
        assert!(poll_once(&mut f, &count).is_pending());
        f.waker.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
