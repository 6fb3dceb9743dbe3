//! `/files/*`. Writes go to a temporary file in the target directory and are renamed into place,
//! so a failed or interrupted write never destroys the previous content.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Multipart, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use warren_wire::agent::{
    FileContent, FileInfo, FileList, FileWriteRequest, PathRequest, UploadResponse,
};

use super::user_path;
use crate::changes::temp_sibling;
use crate::error::AgentError;

/// Largest file `/files/read` returns (as JSON text); larger ones are for `/files/download`, which
/// streams.
const MAX_READ_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Deserialize)]
pub struct PathQuery {
    path: Option<String>,
}

/// The query's `path`, checked, and where it points.
fn required(q: &PathQuery) -> Result<(String, PathBuf), AgentError> {
    let path = q.path.clone().unwrap_or_default();
    let full = user_path(&path).map_err(|e| e.with_path(&path))?;
    Ok((path, full))
}

/// Opens `full` for reading if it is a regular file. A device (`/dev/zero` never ends), FIFO
/// (its open would wait for a writer: opened non-blocking, then checked on the open file) or
/// socket is refused, as is a directory.
async fn open_regular(full: &Path, path: &str) -> Result<(tokio::fs::File, u64), AgentError> {
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(full)
        .await
        .map_err(|e| AgentError::from_io(&e, path))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| AgentError::from_io(&e, path))?;
    let refuse = |what: &str| {
        Err(AgentError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PATH",
            format!("{path} is {what}: only regular files can be read"),
        )
        .with_path(path))
    };
    if meta.is_dir() {
        return refuse("a directory");
    }
    if !meta.is_file() {
        return refuse("not a regular file (a device, FIFO or socket)");
    }
    Ok((file, meta.len()))
}

pub async fn read(Query(q): Query<PathQuery>) -> Result<Json<FileContent>, AgentError> {
    use tokio::io::AsyncReadExt;
    let (path, full) = required(&q)?;
    let (file, _) = open_regular(&full, &path).await?;
    // Read one byte past the limit to tell "exactly the limit" from "more" (files in /proc
    // report a size of 0, so the size cannot be trusted).
    let mut bytes = Vec::new();
    file.take(MAX_READ_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| AgentError::from_io(&e, &path))?;
    if bytes.len() as u64 > MAX_READ_BYTES {
        return Err(AgentError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "FILE_TOO_LARGE",
            format!(
                "{path} is larger than {} MiB: download it instead (/files/download streams any size)",
                MAX_READ_BYTES / 1024 / 1024
            ),
        )
        .with_path(&path));
    }
    Ok(Json(FileContent {
        size: bytes.len() as u64,
        content: String::from_utf8_lossy(&bytes).into_owned(),
        path,
    }))
}

pub async fn download(Query(q): Query<PathQuery>) -> Result<Response, AgentError> {
    let (path, full) = required(&q)?;
    let (file, len) = open_regular(&full, &path).await?;
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut res = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&content_disposition(&name)) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    // Files in /proc report a size of 0 but have content: those are sent chunked.
    if len > 0 {
        if let Ok(v) = header::HeaderValue::from_str(&len.to_string()) {
            res.headers_mut().insert(header::CONTENT_LENGTH, v);
        }
    }
    Ok(res)
}

/// `attachment` with the file's name: as plain ASCII (anything else replaced by `_`) and, for
/// names that are not, also UTF-8 percent-encoded (RFC 6266 `filename*`). File names may hold any
/// byte but `/` and NUL; a header may not.
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    if ascii == name {
        return format!("attachment; filename=\"{ascii}\"");
    }
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn parse_mode(mode: Option<&str>) -> Result<Option<u32>, AgentError> {
    match mode {
        None | Some("") => Ok(None),
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Some)
            .ok_or_else(|| {
                AgentError::bad_request(format!(
                    "invalid mode {m:?}: expected an octal string such as \"0644\""
                ))
            }),
    }
}

/// Writes `data` to `target` atomically, creating parent directories.
pub(crate) async fn write_atomically(
    target: &Path,
    data: &[u8],
    mode: Option<u32>,
    display: &str,
    prepare: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), AgentError> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| AgentError::from_io(&e, display))?;
    if target.is_dir() {
        return Err(AgentError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PATH",
            format!("{display} is a directory"),
        )
        .with_path(display));
    }
    let tmp = temp_sibling(target);
    let written = crate::changes::Written::of(target, data.len() as u64);
    let result = async {
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(data).await?;
        f.flush().await?;
        if let Some(m) = mode {
            tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(m)).await?;
        }
        // Owner and attributes go on the temporary file, so that the target appears whole and
        // watchers see no attribute change of it.
        prepare(&tmp)?;
        crate::changes::note_atomic_write(target, written);
        tokio::fs::rename(&tmp, target).await
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(AgentError::from_io(&e, display));
    }
    Ok(())
}

pub async fn write(Json(req): Json<FileWriteRequest>) -> Result<Json<Value>, AgentError> {
    let full = user_path(&req.path)?;
    let mode = parse_mode(req.mode.as_deref())?;
    let data = match req.encoding.as_deref() {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(req.content.as_bytes())
            .map_err(|e| AgentError::bad_request(format!("content is not valid base64: {e}")))?,
        None | Some("utf-8") | Some("utf8") | Some("text") => req.content.into_bytes(),
        Some(other) => {
            return Err(AgentError::bad_request(format!(
                "unknown encoding {other:?}: use \"base64\" or omit it"
            )))
        }
    };
    if req.overwrite == Some(false) && full.exists() {
        return Err(AgentError::new(
            StatusCode::CONFLICT,
            "FILE_ALREADY_EXISTS",
            format!("File already exists: {}", req.path),
        )
        .with_path(&req.path));
    }
    write_atomically(&full, &data, mode, &req.path, |_| Ok(())).await?;
    Ok(Json(json!({
        "success": true,
        "path": req.path,
        "size": data.len(),
        "message": "File written",
        "timestamp": crate::time_fmt::now(),
    })))
}

fn permissions(meta: &std::fs::Metadata) -> String {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else {
        '-'
    };
    let mode = meta.mode();
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn file_info(path: &Path, meta: &std::fs::Metadata) -> FileInfo {
    let modified = crate::time_fmt::rfc3339(meta.modified().unwrap_or(std::time::UNIX_EPOCH));
    let is_dir = meta.is_dir();
    FileInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        path: path.to_string_lossy().into_owned(),
        size: meta.len(),
        is_directory: is_dir,
        is_dir,
        is_symlink: meta.file_type().is_symlink(),
        permissions: permissions(meta),
        modified_time: modified.clone(),
        modified,
    }
}

pub async fn list(Query(q): Query<PathQuery>) -> Result<Json<FileList>, AgentError> {
    let path = q
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/workspace".into());
    let full = user_path(&path)?;
    let mut dir = tokio::fs::read_dir(&full)
        .await
        .map_err(|e| AgentError::from_io(&e, &path))?;
    let mut files = Vec::new();
    while let Some(entry) = dir
        .next_entry()
        .await
        .map_err(|e| AgentError::from_io(&e, &path))?
    {
        let p = entry.path();
        if let Ok(meta) = tokio::fs::symlink_metadata(&p).await {
            files.push(file_info(&p, &meta));
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(FileList {
        count: files.len(),
        files,
        path,
    }))
}

pub async fn exists(Query(q): Query<PathQuery>) -> Result<Json<Value>, AgentError> {
    let (path, full) = required(&q)?;
    let exists = tokio::fs::symlink_metadata(full).await.is_ok();
    Ok(Json(json!({ "exists": exists, "path": path })))
}

pub async fn remove(Query(q): Query<PathQuery>) -> Result<Json<Value>, AgentError> {
    let (path, full) = required(&q)?;
    if full == Path::new("/") {
        return Err(AgentError::new(
            StatusCode::FORBIDDEN,
            "PATH_NOT_ALLOWED",
            "refusing to remove /",
        )
        .with_path(&path));
    }
    let meta = tokio::fs::symlink_metadata(&full)
        .await
        .map_err(|e| AgentError::from_io(&e, &path))?;
    let r = if meta.is_dir() {
        tokio::fs::remove_dir_all(&full).await
    } else {
        tokio::fs::remove_file(&full).await
    };
    r.map_err(|e| AgentError::from_io(&e, &path))?;
    Ok(Json(
        json!({ "success": true, "path": path, "message": "Removed" }),
    ))
}

pub async fn mkdir(Json(req): Json<PathRequest>) -> Result<Json<Value>, AgentError> {
    tokio::fs::create_dir_all(user_path(&req.path)?)
        .await
        .map_err(|e| AgentError::from_io(&e, &req.path))?;
    Ok(Json(
        json!({ "success": true, "path": req.path, "message": "Directory created" }),
    ))
}

/// Multipart upload: a `file` part and a `path` field, in either order. The file part is streamed
/// to a temporary file first, so its size is bounded only by the sandbox's disk.
pub async fn upload(mut form: Multipart) -> Result<Json<UploadResponse>, AgentError> {
    let mut dest: Option<String> = None;
    let mut staged: Option<(PathBuf, u64, Option<String>)> = None;
    let staging_dir = Path::new("/tmp/.warren");
    let bad = |e: axum::extract::multipart::MultipartError| {
        AgentError::bad_request(format!("invalid multipart body: {e}"))
    };
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            "path" => dest = Some(field.text().await.map_err(bad)?),
            "file" => {
                let filename = field.file_name().map(str::to_owned);
                tokio::fs::create_dir_all(staging_dir)
                    .await
                    .map_err(|e| AgentError::from_io(&e, "/tmp/.warren"))?;
                let tmp = temp_sibling(&staging_dir.join("upload"));
                let mut f = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| AgentError::from_io(&e, "/tmp/.warren"))?;
                let mut size = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    size += chunk.len() as u64;
                    if let Err(e) = f.write_all(&chunk).await {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return Err(AgentError::from_io(&e, "upload"));
                    }
                }
                f.flush()
                    .await
                    .map_err(|e| AgentError::from_io(&e, "upload"))?;
                staged = Some((tmp, size, filename));
            }
            _ => {}
        }
    }
    let Some((tmp, size, filename)) = staged else {
        return Err(AgentError::new(
            StatusCode::BAD_REQUEST,
            "MISSING_PARAMETER",
            "multipart part 'file' is required",
        ));
    };
    let dest = match dest.filter(|d| !d.is_empty()) {
        Some(d) if d.ends_with('/') => {
            format!("{d}{}", filename.unwrap_or_else(|| "upload".into()))
        }
        Some(d) => d,
        None => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(AgentError::new(
                StatusCode::BAD_REQUEST,
                "MISSING_PARAMETER",
                "multipart field 'path' is required",
            ));
        }
    };
    let full = match user_path(&dest) {
        Ok(f) => f,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    let moved = async {
        if let Some(parent) = full.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let len = tokio::fs::metadata(&tmp)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        crate::changes::note_atomic_write(&full, crate::changes::Written::of(&full, len));
        match tokio::fs::rename(&tmp, &full).await {
            Ok(()) => Ok(()),
            // Different file systems (e.g. a tmpfs /tmp): copy to a sibling, then rename.
            Err(_) => {
                let sibling = temp_sibling(&full);
                tokio::fs::copy(&tmp, &sibling).await?;
                tokio::fs::rename(&sibling, &full).await
            }
        }
    }
    .await;
    let _ = tokio::fs::remove_file(&tmp).await;
    moved.map_err(|e| AgentError::from_io(&e, &dest))?;
    Ok(Json(UploadResponse {
        success: true,
        path: dest,
        size,
        message: "File uploaded".into(),
        timestamp: crate::time_fmt::now(),
    }))
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn any_file_name_makes_a_valid_header() {
        assert_eq!(
            content_disposition("report.pdf"),
            "attachment; filename=\"report.pdf\""
        );
        for name in [
            "®>\u{17}]",
            "a\"b\\c",
            "naïve résumé.txt",
            "tab\there",
            "\u{7f}",
        ] {
            let v = content_disposition(name);
            assert!(
                axum::http::HeaderValue::from_str(&v).is_ok(),
                "{name:?} gave {v:?}"
            );
        }
        assert_eq!(
            content_disposition("é.txt"),
            "attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%A9.txt"
        );
    }
}
