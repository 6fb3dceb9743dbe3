use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use warren_wire::agent::AgentErrorBody;

/// An agent API error with its spec code (§2.4). User-code failures are not errors: they are
/// 200 responses with `success: false`.
#[derive(Debug)]
pub struct AgentError {
    status: StatusCode,
    code: &'static str,
    message: String,
    path: Option<String>,
}

impl AgentError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            path: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    pub fn file_not_found(path: &str) -> Self {
        Self {
            path: Some(path.to_owned()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "FILE_NOT_FOUND",
                format!("File not found: {path}"),
            )
        }
    }

    pub fn with_path(mut self, path: &str) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    /// Maps a file-system error on `path` to the code a client expects.
    pub fn from_io(e: &std::io::Error, path: &str) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound => Self::file_not_found(path),
            PermissionDenied => Self::new(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                format!("Permission denied: {path}"),
            )
            .with_path(path),
            AlreadyExists => Self::new(
                StatusCode::CONFLICT,
                "FILE_ALREADY_EXISTS",
                format!("File already exists: {path}"),
            )
            .with_path(path),
            _ => match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "FILE_OPERATION_FAILED",
                    format!("No space left in the sandbox writing {path}"),
                )
                .with_path(path),
                Some(libc::ENOTDIR)
                | Some(libc::EISDIR)
                | Some(libc::ENAMETOOLONG)
                | Some(libc::ELOOP) => Self::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PATH",
                    format!("Invalid path {path}: {e}"),
                )
                .with_path(path),
                // The sandbox itself is short of something: worth a retry, not the caller's fault.
                Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOMEM) => Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "FILE_OPERATION_FAILED",
                    format!("{path}: {e}"),
                )
                .with_path(path),
                // Anything else comes from the file the caller named (a device that refuses
                // reads, /proc/self/mem, a file system that cannot do it): the caller's to fix.
                _ => Self::new(
                    StatusCode::BAD_REQUEST,
                    "FILE_OPERATION_FAILED",
                    format!("{path}: {e}"),
                )
                .with_path(path),
            },
        }
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let mut details = serde_json::Map::new();
        if let Some(p) = &self.path {
            details.insert("path".into(), p.clone().into());
        }
        let body = AgentErrorBody {
            error: self.message.clone(),
            message: self.message,
            code: self.code.to_owned(),
            path: self.path,
            details,
            timestamp: crate::time_fmt::now(),
        };
        (self.status, Json(body)).into_response()
    }
}
