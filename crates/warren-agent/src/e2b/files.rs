//! envd's plain HTTP routes: `GET /files` (a file's bytes), `POST /files` (multipart or
//! octet-stream uploads, written atomically like every write of the agent), `/health`, `/envs`
//! and `/metrics`.

use std::collections::BTreeMap;
use std::path::Path;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::file_metadata;
use super::users::{self, User};
use super::E2b;

/// envd's error body: `{"code": <http status>, "message": ...}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "code": status.as_u16(), "message": message.into() })),
    )
        .into_response()
}

fn io_error(e: &std::io::Error, path: &str) -> Response {
    use std::io::ErrorKind::*;
    let status = match e.kind() {
        NotFound => StatusCode::NOT_FOUND,
        PermissionDenied => StatusCode::FORBIDDEN,
        StorageFull | QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
        IsADirectory | NotADirectory | InvalidInput => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, format!("{path}: {e}"))
}

#[derive(Deserialize)]
pub struct FileQuery {
    path: Option<String>,
    username: Option<String>,
}

fn user_of(headers: &HeaderMap, q: &FileQuery) -> Result<User, Box<Response>> {
    users::from_request(headers, q.username.as_deref())
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e.message)))
}

/// `GET /files?path=`: the file's bytes, streamed.
pub async fn download(headers: HeaderMap, Query(q): Query<FileQuery>) -> Response {
    let user = match user_of(&headers, &q) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let Some(path) = q.path.as_deref().filter(|p| !p.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "path is required");
    };
    let full = user.resolve(path);
    let file = match tokio::fs::File::open(&full).await {
        Ok(f) => f,
        Err(e) => return io_error(&e, path),
    };
    match file.metadata().await {
        Ok(m) if m.is_dir() => error(StatusCode::BAD_REQUEST, format!("{path} is a directory")),
        Ok(m) if !m.is_file() => error(
            StatusCode::BAD_REQUEST,
            format!("{path} is not a regular file"),
        ),
        Err(e) => io_error(&e, path),
        Ok(m) => {
            let stream = tokio_util::io::ReaderStream::new(file);
            Response::builder()
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, m.len())
                .body(Body::from_stream(stream))
                .unwrap_or_default()
        }
    }
}

fn write_info(path: &Path, metadata: &BTreeMap<String, String>) -> Value {
    let mut v = json!({
        "name": path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        "type": "file",
        "path": path.display().to_string(),
    });
    if !metadata.is_empty() {
        v["metadata"] = json!(metadata);
    }
    v
}

/// Writes `data` to `target` as `user`: parents created (and owned by the user), then the file,
/// through a temporary sibling (owned by the user, carrying the metadata) renamed into place.
async fn store(
    user: &User,
    target: &Path,
    data: &[u8],
    shown: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<(), Response> {
    let missing = users::missing_dirs(target.parent().unwrap_or(Path::new("/")));
    crate::routes::write_file_atomically(target, data, shown, |tmp| {
        user.own(tmp);
        file_metadata::replace(tmp, metadata)
            .map_err(|e| std::io::Error::other(format!("cannot keep its metadata: {e}")))
    })
    .await
    .map_err(|e| e.into_response())?;
    for m in &missing {
        user.own(m);
    }
    Ok(())
}

/// `POST /files?path=`: a multipart form (one part per file, named by `path` or by the part's
/// file name) or an octet-stream body (maybe gzip-encoded) for `path`.
pub async fn upload(headers: HeaderMap, Query(q): Query<FileQuery>, req: Request) -> Response {
    let user = match user_of(&headers, &q) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let metadata = match file_metadata::from_headers(&headers) {
        Ok(m) => m,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("multipart/form-data") {
        // The whole body is read before it is parsed: the parser stops at the closing boundary,
        // and a connection closed with bytes still unread can fail the sender's last write.
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("upload broke off: {e}")),
        };
        let req = Request::from_parts(parts, Body::from(bytes));
        let mut form = match Multipart::from_request(req, &()).await {
            Ok(f) => f,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
        };
        let mut written = Vec::new();
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
            };
            let name = field.file_name().map(str::to_owned);
            let path = match (q.path.as_deref().filter(|p| !p.is_empty()), name.as_deref()) {
                (Some(p), _) if written.is_empty() => p.to_owned(),
                (_, Some(n)) if !n.is_empty() => n.to_owned(),
                _ => return error(StatusCode::BAD_REQUEST, "each file needs a path"),
            };
            let data = match field.bytes().await {
                Ok(b) => b,
                Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
            };
            let full = user.resolve(&path);
            if let Err(r) = store(&user, &full, &data, &path, &metadata).await {
                return r;
            }
            written.push(write_info(&full, &metadata));
        }
        return Json(written).into_response();
    }
    let Some(path) = q.path.clone().filter(|p| !p.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "path is required");
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let mut body = req.into_body().into_data_stream();
    let mut data = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => data.extend_from_slice(&c),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("upload broke off: {e}")),
        }
    }
    if gzip {
        match gunzip(&data).await {
            Ok(d) => data = d,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not gzip: {e}")),
        }
    }
    let full = user.resolve(&path);
    if let Err(r) = store(&user, &full, &data, &path, &metadata).await {
        return r;
    }
    Json(vec![write_info(&full, &metadata)]).into_response()
}

/// gzip is decoded by the system's `gzip` (every template has it), so the agent carries no
/// decompressor of its own for this one rarely used upload option.
async fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut child = tokio::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    let input = data.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = child.wait_with_output().await?;
    let _ = writer.await;
    if !out.status.success() {
        return Err(std::io::Error::other("gzip failed"));
    }
    Ok(out.stdout)
}

pub async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /envs`: the sandbox-wide environment variables.
pub async fn envs(State(state): State<E2b>) -> Json<Value> {
    Json(json!(state.global_env()))
}

/// `GET /metrics`: envd's shape of the sandbox's usage.
pub async fn metrics(State(state): State<E2b>) -> Json<Value> {
    let m = crate::routes::usage_snapshot(&state);
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let system = &m["system"];
    Json(json!({
        "ts": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "cpu_count": state.boot.vcpu,
        "cpu_used_pct": num(&system["cpu"]["usage_percent"]),
        "mem_total": num(&system["memory"]["total"]) as u64,
        "mem_used": num(&system["memory"]["used"]) as u64,
        "disk_used": num(&system["disk"]["used"]) as u64,
        "disk_total": num(&system["disk"]["total"]) as u64,
    }))
}
