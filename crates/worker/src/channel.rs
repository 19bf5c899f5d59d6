//! The local channel of Nimbus's own runtimes: the Runtime API's four
//! calls as frames on the environment's control socket, so that a warm
//! invocation costs two socket writes rather than two HTTP exchanges. The
//! HTTP Runtime API stays served beside it for AWS's runtime clients and
//! custom runtimes, with the same rules (both end in [`Shared`]).
//!
//! Frames are a header line and then exactly `len` bytes:
//! - runtime to worker: `next`, `response <id> <len>`, `error <id> <len>`,
//!   `init_error <len>`;
//! - worker to runtime: `invoke <meta len> <payload len>`, where the meta is
//!   a JSON object of the Runtime API's `lambda-runtime-*` headers (names in
//!   lower case) and the payload is the event; and `ok` after an
//!   `init_error`, which the runtime waits for before it exits.
//!
//! Anything else closes the channel, which the runtime sees as the end.
//!
//! The worker's end is registered for input only. A socket registered for
//! output too is reported writable each time the runtime reads what the
//! worker sent (a Unix socket's one wait queue serves both directions):
//! one wake-up of a server thread for nothing on every invoke, and its
//! cost charged to the runtime's CPU share. A write that finds the buffer
//! full waits on a registration for output made for that write alone.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use nix::sys::socket::{recv, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, Interest, ReadBuf};

use crate::env::{Reply, Shared};
use crate::runtime_api::{response_too_large, RESPONSE_MAX};

/// The worker's end of a channel, registered with the runtime for input.
pub struct Socket(AsyncFd<UnixStream>);

impl Socket {
    /// Registers a connected socket (made non-blocking here).
    pub fn new(stream: UnixStream) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        register(stream, Interest::READABLE).map(Self)
    }

    /// Resolves once the runtime has closed its end (or sent something,
    /// which it must not while it waits for an invocation).
    async fn closed(&self) {
        loop {
            let Ok(mut ready) = self.0.readable().await else { return };
            let mut byte = [0u8; 1];
            match ready.try_io(|fd| Ok(recv(fd.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT)?)) {
                Err(_would_block) => continue,
                Ok(_) => return,
            }
        }
    }

    async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        let mut output: Option<AsyncFd<UnixStream>> = None;
        while !buf.is_empty() {
            match self.0.get_ref().write(buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let output = match &mut output {
                        Some(o) => o,
                        // A duplicate descriptor: epoll keeps one entry per
                        // descriptor, so this one goes with this write.
                        None => output.insert(register(self.0.get_ref().try_clone()?, Interest::WRITABLE)?),
                    };
                    output.writable().await?.clear_ready();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[allow(unsafe_code)]
fn register(stream: UnixStream, interest: Interest) -> std::io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `AsyncFd` owns the stream, so nothing closes or replaces
    // its descriptor while it is registered (tokio's condition).
    unsafe { AsyncFd::register_with_interest(stream, interest) }.map_err(|e| e.into())
}

/// Reads a [`Socket`] as a stream.
struct Reader<'a>(&'a Socket);

impl AsyncRead for Reader<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            let mut ready = ready!(self.0 .0.poll_read_ready(cx))?;
            match ready.try_io(|fd| fd.get_ref().read(buf.initialize_unfilled())) {
                Ok(read) => return Poll::Ready(read.map(|n| buf.advance(n))),
                Err(_would_block) => continue,
            }
        }
    }
}

/// What an invocation is told of a runtime that closed its channel while
/// it waited for one.
pub(crate) const HUNG_UP: &str = "the runtime closed its channel";

/// The longest frame header (`response <request id> <length>`).
const HEADER_MAX: u64 = 256;

/// Serves the channel until the runtime closes it or breaks the protocol.
pub async fn serve(socket: Socket, shared: Arc<Shared>) {
    shared.channel_open.send_replace(Some(true));
    // Closed however serving ends (see `Shared::channel_open`).
    struct Closed<'a>(&'a Shared);
    impl Drop for Closed<'_> {
        fn drop(&mut self) {
            self.0.channel_open.send_replace(Some(false));
        }
    }
    let _closed = Closed(&shared);
    let mut reader = BufReader::new(Reader(&socket));
    let mut header = String::new();
    loop {
        header.clear();
        // The runtime shares its process with the function, which can write
        // here too: a line without end must not grow without end.
        match (&mut reader).take(HEADER_MAX).read_line(&mut header).await {
            Ok(0) | Err(_) => return,
            Ok(_) if !header.ends_with('\n') => return broken(&shared, "an overlong frame header"),
            Ok(_) => {}
        }
        let words: Vec<&str> = header.split_whitespace().collect();
        let served = match words.as_slice() {
            // Its failures are the runtime's end closing, not a broken protocol.
            ["next"] => match next(&shared, &socket).await {
                Some(()) => Some(()),
                None => return,
            },
            ["response", id, len] => body(&mut reader, len).await.map(|b| {
                shared.complete(id, b.map_or_else(|()| Reply::Error(response_too_large()), Reply::Response));
            }),
            ["error", id, len] => body(&mut reader, len).await.map(|b| {
                shared.complete(id, Reply::Error(b.unwrap_or_else(|()| response_too_large())));
            }),
            // Acknowledged: the runtime exits right after, and its exit must
            // not overtake the error (HTTP's 202 gives the same order).
            ["init_error", len] => match body(&mut reader, len).await {
                Some(b) => {
                    shared.init_failed(b.unwrap_or_else(|()| response_too_large()));
                    socket.write_all(b"ok\n").await.ok()
                }
                None => None,
            },
            _ => None,
        };
        if served.is_none() {
            return broken(&shared, &format!("the frame header {:?}", header.trim_end()));
        }
    }
}

/// Closes a channel whose runtime broke the protocol (its function can
/// write here too), failing the invocation it serves: the environment is
/// then retired, as after an exit.
fn broken(shared: &Shared, what: &str) {
    tracing::warn!("runtime broke the channel protocol with {what}; closing it");
    shared.fail_current(Reply::Exited("the runtime broke its channel's protocol".into()));
}

/// Reads a body of `len` bytes: `Err` when over the limit (it is skipped),
/// `None` when the channel failed.
async fn body(reader: &mut (impl AsyncReadExt + Unpin), len: &str) -> Option<Result<Bytes, ()>> {
    let len: u64 = len.parse().ok()?;
    if len > RESPONSE_MAX as u64 {
        let skipped = tokio::io::copy(&mut reader.take(len), &mut tokio::io::sink()).await.ok()?;
        return (skipped == len).then_some(Err(()));
    }
    let mut buf = vec![0u8; len as usize];
    reader.read_exact(&mut buf).await.ok()?;
    Some(Ok(Bytes::from(buf)))
}

/// An invocation's headers as the Runtime API's `next` gives them.
#[derive(serde::Serialize)]
struct Meta<'a> {
    #[serde(rename = "lambda-runtime-aws-request-id")]
    request_id: &'a str,
    #[serde(rename = "lambda-runtime-deadline-ms")]
    deadline_ms: String,
    #[serde(rename = "lambda-runtime-invoked-function-arn")]
    invoked_arn: &'a str,
    #[serde(rename = "lambda-runtime-trace-id")]
    trace_id: &'a str,
    #[serde(rename = "lambda-runtime-client-context", skip_serializing_if = "Option::is_none")]
    client_context: Option<&'a str>,
}

/// Hands the runtime its next invocation, when there is one. `None` when
/// the channel closed (first, the invocation is left queued).
async fn next(shared: &Shared, socket: &Socket) -> Option<()> {
    shared.mark_ready();
    let job = {
        let mut jobs = shared.jobs_rx.lock().await;
        tokio::select! {
            // First: a runtime killed while it waited (the node's memory
            // ceiling picks idle environments too) has closed its end before
            // the node learns of its exit, and an invocation written to it
            // would be lost with it. Still queued, the invocation being
            // handed over goes elsewhere (`Outcome::undelivered`); later ones
            // see the channel closed (`Env::run`).
            biased;
            () = socket.closed() => {
                shared.fail_current(Reply::Exited(HUNG_UP.into()));
                return None;
            }
            job = jobs.recv() => job?,
        }
    };
    let meta = serde_json::to_string(&Meta {
        request_id: &job.request_id,
        deadline_ms: job.deadline_ms.to_string(),
        invoked_arn: &job.invoked_arn,
        trace_id: &job.trace_id,
        client_context: job.client_context.as_deref(),
    })
    .ok()?;
    let mut frame = format!("invoke {} {}\n", meta.len(), job.payload.len()).into_bytes();
    frame.extend_from_slice(meta.as_bytes());
    frame.extend_from_slice(&job.payload);
    socket.write_all(&frame).await.ok()
}
