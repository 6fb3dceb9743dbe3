//! `/desktop/*` in a sandbox without a desktop: 400 `DESKTOP_NOT_AVAILABLE` naming the programs
//! the template lacks (spec §5.6 allows 400 or 501; a missing desktop is the caller's choice of
//! template, not a server fault), in `details` for the Python SDK and at the top level for JS,
//! so both raise their own `DesktopNotAvailableError`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// What a desktop needs, by the program each package provides.
const NEEDED: &[(&str, &str)] = &[
    ("Xvnc", "tigervnc-standalone-server"),
    ("xdotool", "xdotool"),
    ("wmctrl", "wmctrl"),
    ("xclip", "xclip"),
    ("ffmpeg", "ffmpeg"),
    ("tesseract", "tesseract-ocr"),
];

fn on_path(program: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        .split(':')
        .chain(["/usr/bin", "/usr/local/bin"])
        .any(|dir| std::path::Path::new(dir).join(program).is_file())
}

pub(crate) async fn unavailable() -> Response {
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    let message = "Desktop automation is not available in this sandbox: its template has no \
                   desktop (create the sandbox from a `desktop` template)";
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": message,
            "message": message,
            "code": "DESKTOP_NOT_AVAILABLE",
            "missing_dependencies": missing,
            "details": { "missing_dependencies": missing },
            "timestamp": crate::time_fmt::now(),
        })),
    )
        .into_response()
}
