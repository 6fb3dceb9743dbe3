//! The Connect protocol (connectrpc.com/docs/protocol) with its JSON codec, which is what both
//! E2B SDKs speak to envd. Written here rather than taken from a crate: the Rust Connect crates
//! are code generators built around binary protobuf and tonic; the SDKs only use JSON, whose
//! framing is a few lines (a unary call is a JSON body; a stream is a sequence of envelopes —
//! one flags byte, a big-endian u32 length, the message — ending with an end-of-stream envelope
//! that carries the error, if any).

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Flag of the envelope that ends a stream.
const END_STREAM: u8 = 0x02;
/// Requests are small JSON messages (file contents go through `/files`).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A Connect error code (the subset envd uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    FailedPrecondition,
    ResourceExhausted,
    Unimplemented,
    Internal,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::FailedPrecondition => "failed_precondition",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
        }
    }

    /// The HTTP status of a unary error with this code (the protocol's table).
    fn http_status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// A file-system error on `path`, with the code a client branches on.
    pub fn from_io(e: &std::io::Error, path: &str) -> Self {
        use std::io::ErrorKind::*;
        let code = match e.kind() {
            NotFound => Code::NotFound,
            AlreadyExists => Code::AlreadyExists,
            PermissionDenied => Code::PermissionDenied,
            InvalidInput | NotADirectory | IsADirectory | DirectoryNotEmpty => {
                Code::InvalidArgument
            }
            _ => Code::Internal,
        };
        Self::new(code, format!("{path}: {e}"))
    }

    fn body(&self) -> Value {
        json!({ "code": self.code.as_str(), "message": self.message })
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        (self.code.http_status(), axum::Json(self.body())).into_response()
    }
}

/// Whether the request uses the streaming content type (an enveloped body).
pub fn is_streaming(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/connect+"))
}

/// The one request message of a unary or server-streaming call.
pub async fn read_message<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, RpcError> {
    let bytes = axum::body::to_bytes(body, MAX_MESSAGE)
        .await
        .map_err(|e| RpcError::invalid(format!("cannot read the request: {e}")))?;
    let json = if is_streaming(headers) {
        let mut frames = Frames::default();
        frames.push(&bytes);
        match frames.next_frame()? {
            Some((_, m)) => m,
            None => return Err(RpcError::invalid("the request stream holds no message")),
        }
    } else {
        bytes
    };
    let json: &[u8] = if json.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &json
    };
    serde_json::from_slice(json).map_err(|e| RpcError::invalid(format!("invalid request: {e}")))
}

/// Splits an enveloped byte stream into messages.
#[derive(Default)]
pub struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete envelope: its flags and message.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Bytes)>, RpcError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(RpcError::new(Code::ResourceExhausted, "message too large"));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let flags = self.buf[0];
        if flags & 0x01 != 0 {
            return Err(RpcError::new(
                Code::Unimplemented,
                "compressed messages are not accepted",
            ));
        }
        let msg = Bytes::copy_from_slice(&self.buf[5..5 + len]);
        self.buf.drain(..5 + len);
        Ok(Some((flags, msg)))
    }
}

/// The messages of a client stream, read one at a time as the handler asks for them: nothing is
/// read ahead, so a client that sends faster than its messages are handled is held back by the
/// connection's flow control instead of filling the agent's memory.
pub struct ClientStream {
    body: axum::body::BodyDataStream,
    frames: Frames,
    ended: bool,
}

impl ClientStream {
    pub fn new(body: Body) -> Self {
        Self {
            body: body.into_data_stream(),
            frames: Frames::default(),
            ended: false,
        }
    }

    /// The next message; None once the client ended the stream.
    pub async fn next(&mut self) -> Result<Option<Value>, RpcError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            if let Some((flags, msg)) = self.frames.next_frame()? {
                if flags & END_STREAM != 0 {
                    self.ended = true;
                    return Ok(None);
                }
                let v = serde_json::from_slice(&msg)
                    .map_err(|e| RpcError::invalid(format!("invalid message: {e}")))?;
                return Ok(Some(v));
            }
            match self.body.next().await {
                Some(chunk) => {
                    let chunk = chunk
                        .map_err(|e| RpcError::invalid(format!("request stream broke: {e}")))?;
                    self.frames.push(&chunk);
                }
                None => self.ended = true,
            }
        }
    }
}

/// A unary answer.
pub fn unary<T: Serialize>(result: Result<T, RpcError>) -> Response {
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// The sending half of a server stream: messages go out as they are sent; `end` (or dropping the
/// sender) closes the stream with its end-of-stream envelope.
pub struct StreamSender {
    tx: mpsc::Sender<Bytes>,
    ended: bool,
}

impl StreamSender {
    /// False once the client is gone.
    pub async fn send<T: Serialize>(&self, msg: &T) -> bool {
        match serde_json::to_vec(msg) {
            Ok(b) => self.tx.send(envelope(0, &b)).await.is_ok(),
            Err(_) => false,
        }
    }

    pub async fn end(mut self, error: Option<RpcError>) {
        self.ended = true;
        let trailer = match error {
            Some(e) => json!({ "error": e.body() }),
            None => json!({}),
        };
        let _ = self
            .tx
            .send(envelope(END_STREAM, trailer.to_string().as_bytes()))
            .await;
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.tx.try_send(envelope(END_STREAM, b"{}"));
        }
    }
}

/// A streaming response and the sender that feeds it.
pub fn server_stream() -> (StreamSender, Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let body = Body::from_stream(tokio_stream_from(rx).map(Ok::<Bytes, std::convert::Infallible>));
    let res = Response::builder()
        .header(header::CONTENT_TYPE, "application/connect+json")
        .body(body)
        .unwrap_or_default();
    (StreamSender { tx, ended: false }, res)
}

/// A stream that fails before its first message: a streaming response holding only the error.
pub fn stream_error(e: RpcError) -> Response {
    let (tx, res) = server_stream();
    tokio::spawn(tx.end(Some(e)));
    res
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Bytes>) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `Keepalive-Ping-Interval` (seconds) the SDKs ask for on long streams.
pub fn keepalive_interval(headers: &HeaderMap) -> Option<std::time::Duration> {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(std::time::Duration::from_secs)
}

/// `Connect-Timeout-Ms`: the deadline of the call.
pub fn deadline(headers: &HeaderMap) -> Option<std::time::Duration> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_split_across_chunks() {
        let mut f = Frames::default();
        let e = envelope(0, br#"{"a":1}"#);
        f.push(&e[..3]);
        assert!(f.next_frame().expect("test value").is_none());
        f.push(&e[3..]);
        f.push(&envelope(END_STREAM, b"{}"));
        let (flags, m) = f.next_frame().expect("test value").expect("test value");
        assert_eq!((flags, &m[..]), (0, &br#"{"a":1}"#[..]));
        assert_eq!(
            f.next_frame().expect("test value").expect("test value").0,
            END_STREAM
        );
        assert!(f.next_frame().expect("test value").is_none());
    }

    /// A client stream is read one message at a time, in order, and ends at its end-of-stream
    /// envelope even when more bytes follow.
    #[tokio::test]
    async fn a_client_stream_yields_its_messages_one_at_a_time() {
        let mut bytes = Vec::new();
        for m in [&br#"{"n":1}"#[..], br#"{"n":2}"#] {
            bytes.extend_from_slice(&envelope(0, m));
        }
        bytes.extend_from_slice(&envelope(END_STREAM, b"{}"));
        bytes.extend_from_slice(&envelope(0, br#"{"n":3}"#));
        // Split mid-envelope, as a network would.
        let (a, b) = bytes.split_at(7);
        let chunks = vec![
            Ok::<_, std::io::Error>(Bytes::copy_from_slice(a)),
            Ok(Bytes::copy_from_slice(b)),
        ];
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let mut stream = ClientStream::new(body);
        for n in [1, 2] {
            let m = stream
                .next()
                .await
                .expect("a message")
                .expect("not the end");
            assert_eq!(m["n"], n);
        }
        assert!(stream.next().await.expect("the end").is_none());
        assert!(stream.next().await.expect("still the end").is_none());
    }
}
