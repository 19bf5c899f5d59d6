//! Streamed invocations, shared by InvokeWithResponseStream and function
//! URLs in RESPONSE_STREAM mode: the invocation runs in its own task while
//! the caller receives what the function writes, then the outcome. Also
//! the event stream framing (`application/vnd.amazon.eventstream`) that
//! InvokeWithResponseStream answers in.

use std::sync::Arc;

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use nimbus_control::Streamed;
use nimbus_control::{Control, InvokeRequest, Invoked};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks in flight between the runtime and a slow caller.
const IN_FLIGHT: usize = 16;

type Done = Result<Invoked, nimbus_control::Error>;

/// How a streamed invocation began.
pub enum Started {
    /// The function is streaming its response.
    Streaming { content_type: String, executed_version: String, chunks: Chunks },
    /// It ended without streaming: refused (throttled, not found), or a
    /// buffered response or error.
    Finished(Done),
}

/// Starts an invocation whose response may be streamed, and waits until
/// it either starts streaming or ends.
pub async fn start(control: Arc<Control>, mut req: InvokeRequest) -> Started {
    let (tx, mut rx) = mpsc::channel(IN_FLIGHT);
    req.stream = Some(tx);
    let prepared = match control.prepare_invoke(req).await {
        Ok(p) => p,
        Err(e) => return Started::Finished(Err(e)),
    };
    let executed_version = prepared.executed_version.clone();
    let mut done = tokio::spawn(async move { control.run_invoke(prepared).await });
    loop {
        tokio::select! {
            biased;
            Some(event) = rx.recv() => {
                if let Streamed::Start { content_type } = event {
                    let chunks = Chunks { rx, running: Some(done), finished: None };
                    return Started::Streaming { content_type, executed_version, chunks };
                }
            }
            result = &mut done => return Started::Finished(joined(result)),
        }
    }
}

fn joined(result: Result<Done, tokio::task::JoinError>) -> Done {
    result.unwrap_or_else(|e| Err(nimbus_control::Error::Unavailable(format!("The invocation task failed: {e}"))))
}

/// A streaming response's chunks, then its outcome.
pub struct Chunks {
    rx: mpsc::Receiver<Streamed>,
    running: Option<JoinHandle<Done>>,
    /// Boxed: an outcome is large, and a stream's state holds one of these.
    finished: Option<Box<Done>>,
}

pub enum Next {
    Chunk(Bytes),
    End(Box<Done>),
}

impl Chunks {
    /// The next chunk, or the outcome once every chunk has been read
    /// (`None` after that).
    pub async fn next(&mut self) -> Option<Next> {
        while let Some(running) = self.running.as_mut() {
            tokio::select! {
                biased;
                Some(event) = self.rx.recv() => {
                    if let Streamed::Chunk(b) = event {
                        return Some(Next::Chunk(b));
                    }
                }
                result = running => {
                    self.running = None;
                    self.finished = Some(Box::new(joined(result)));
                }
            }
        }
        // The runtime handed over every chunk before the invocation ended;
        // what is still queued comes before the outcome.
        while let Ok(event) = self.rx.try_recv() {
            if let Streamed::Chunk(b) = event {
                return Some(Next::Chunk(b));
            }
        }
        self.finished.take().map(Next::End)
    }
}

/// One event message of an event stream response (InvokeWithResponseStream's, StartLiveTail's).
pub(crate) fn event(event_type: &'static str, content_type: &'static str, payload: Bytes) -> Bytes {
    frame(":event-type", event_type, "event", content_type, payload)
}

/// A modelled exception ending an event stream (StartLiveTail's `SessionTimeoutException`).
pub(crate) fn exception(exception_type: &'static str, payload: Bytes) -> Bytes {
    frame(":exception-type", exception_type, "exception", "application/json", payload)
}

fn frame(
    type_header: &'static str,
    kind: &'static str,
    message_type: &'static str,
    content_type: &'static str,
    payload: Bytes,
) -> Bytes {
    let message = Message::new(payload)
        .add_header(Header::new(type_header, HeaderValue::String(kind.into())))
        .add_header(Header::new(":content-type", HeaderValue::String(content_type.into())))
        .add_header(Header::new(":message-type", HeaderValue::String(message_type.into())));
    let mut buf = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut buf).expect("a message within the frame limits");
    Bytes::from(buf)
}

fn payload_chunk(b: Bytes) -> Bytes {
    event("PayloadChunk", "application/octet-stream", b)
}

/// InvokeWithResponseStream's body: PayloadChunk events while the function
/// writes (a function that does not stream sends its response as one),
/// then InvokeComplete with the function's error and the log tail.
pub fn event_stream(first: Result<Chunks, Box<Invoked>>, tail: bool) -> axum::body::Body {
    enum State {
        Streaming(Chunks),
        Buffered(Box<Invoked>),
        Complete(Box<Done>),
        Over,
    }
    let state = match first {
        Ok(chunks) => State::Streaming(chunks),
        Err(invoked) => State::Buffered(invoked),
    };
    let frames = futures_util::stream::unfold(state, move |state| async move {
        let (frame, next) = match state {
            State::Streaming(mut chunks) => match chunks.next().await? {
                Next::Chunk(b) => (payload_chunk(b), State::Streaming(chunks)),
                Next::End(done) => (complete(&done, tail), State::Over),
            },
            State::Buffered(invoked) => {
                let o = &invoked.outcome;
                if o.function_error.is_none() && !o.payload.is_empty() {
                    (payload_chunk(o.payload.clone()), State::Complete(Box::new(Ok(*invoked))))
                } else {
                    (complete(&Ok(*invoked), tail), State::Over)
                }
            }
            State::Complete(done) => (complete(&done, tail), State::Over),
            State::Over => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(frame), next))
    });
    axum::body::Body::from_stream(frames)
}

/// The InvokeComplete event for how the invocation ended.
fn complete(done: &Done, tail: bool) -> Bytes {
    let mut body = serde_json::Map::new();
    match done {
        Ok(invoked) => {
            let o = &invoked.outcome;
            if o.function_error.is_some() {
                let error: serde_json::Value = serde_json::from_slice(&o.payload).unwrap_or_default();
                let text = |k: &str| error[k].as_str().unwrap_or_default().to_string();
                body.insert("ErrorCode".into(), text("errorType").into());
                body.insert("ErrorDetails".into(), text("errorMessage").into());
            }
            if tail {
                body.insert("LogResult".into(), crate::ops::log_tail(&o.log_text()).into());
            }
        }
        Err(e) => {
            body.insert("ErrorCode".into(), "ServiceException".into());
            body.insert("ErrorDetails".into(), e.to_string().into());
        }
    }
    event("InvokeComplete", "application/json", Bytes::from(serde_json::Value::Object(body).to_string()))
}
