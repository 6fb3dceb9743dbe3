//! API errors. Handlers return `ApiError`; the request-id middleware renders it into the hybrid
//! envelope of the wire spec (§2.2), because only the middleware knows the request id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map};

use crate::lifecycle::LifecycleError;
use crate::limits::{QuotaExceeded, RateLimited};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "AUTHENTICATION_REQUIRED", message)
    }
    /// "Sandbox not found": JS turns exactly this wording into `SandboxExpiredError`.
    pub fn sandbox_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            "Sandbox not found",
        )
    }
    pub fn template_not_found(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            format!("Template not found: {name}"),
        )
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            message,
        )
    }
    /// A server-side fault. The detail goes to the log; the client gets a generic message.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("internal error: {context}"),
        )
    }
}

impl From<warren_store::StoreError> for ApiError {
    fn from(e: warren_store::StoreError) -> Self {
        Self::internal("database error", e)
    }
}

impl From<RateLimited> for ApiError {
    fn from(e: RateLimited) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMIT_EXCEEDED",
            e.to_string(),
        );
        err.details
            .insert("retry_after_seconds".into(), json!(e.retry_after_seconds));
        err
    }
}

/// 403 with "limit" in the message and `details.{limit,current,available}`: what the SDKs map to
/// `ResourceLimitError`.
impl From<QuotaExceeded> for ApiError {
    fn from(e: QuotaExceeded) -> Self {
        let mut err = Self::new(
            StatusCode::FORBIDDEN,
            "RESOURCE_LIMIT_EXCEEDED",
            e.to_string(),
        );
        err.details.insert("limit".into(), json!(e.limit));
        err.details.insert("current".into(), json!(e.current));
        err.details
            .insert("available".into(), json!(e.limit.saturating_sub(e.current)));
        err.details.insert("resource".into(), json!(e.resource));
        err
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        use LifecycleError as L;
        match e {
            L::SandboxNotFound => Self::sandbox_not_found(),
            L::TemplateNotFound(name) => Self::template_not_found(&name),
            e @ L::SnapshotNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "SNAPSHOT_NOT_FOUND", e.to_string())
            }
            L::Conflict(message) => Self::new(StatusCode::CONFLICT, "CONFLICT", message),
            e @ L::TemplateNotReady { .. } => {
                Self::new(StatusCode::CONFLICT, "TEMPLATE_NOT_READY", e.to_string())
            }
            L::Invalid(message) => Self::bad_request(message),
            e @ L::InvalidState { .. } => {
                Self::new(StatusCode::CONFLICT, "INVALID_STATE", e.to_string())
            }
            e @ L::TierChoiceDisabled => {
                Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", e.to_string())
            }
            L::Quota(q) => q.into(),
            L::Unavailable(message) => Self::unavailable(message),
            L::Store(e) => e.into(),
            L::Node { context, source } => Self::internal(context, source),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        res.extensions_mut().insert(self);
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Marks a response of the E2B API: its errors are rendered as E2B's `{code, message}` (the SDKs
/// branch on the numeric `code`), not as the Hopx envelope.
#[derive(Clone, Copy)]
pub struct E2bErrors;
