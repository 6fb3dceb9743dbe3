//! Screen recordings with ffmpeg (x11grab), as mp4 (H.264) or webm (VP8), kept in the sandbox's
//! own disk so they go away with it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::Child;

use super::{body, screen, x, DesktopState, LOG_DIR};
use crate::error::AgentError;

/// How long ffmpeg has to finish its file after it is asked to stop.
const FINISH_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Default)]
pub struct Recordings {
    inner: tokio::sync::Mutex<Book>,
}

#[derive(Default)]
struct Book {
    by_id: HashMap<String, Recording>,
    latest: Option<String>,
}

struct Recording {
    format: &'static str,
    path: PathBuf,
    started: Instant,
    /// Set when it ended: how long it ran, and whether ffmpeg wrote a file.
    ended: Option<(Duration, bool)>,
    ffmpeg: Option<Child>,
}

impl Recording {
    fn state(&mut self) -> &'static str {
        if self.ended.is_none() {
            // ffmpeg stopping by itself (the display went away, the disk filled) is a failure.
            if let Some(Ok(Some(_))) = self.ffmpeg.as_mut().map(Child::try_wait) {
                self.ended = Some((self.started.elapsed(), false));
            }
        }
        match self.ended {
            None => "recording",
            Some((_, true)) => "stopped",
            Some((_, false)) => "failed",
        }
    }

    fn json(&mut self, id: &str) -> serde_json::Value {
        let status = self.state();
        let duration = self
            .ended
            .map(|(d, _)| d)
            .unwrap_or_else(|| self.started.elapsed());
        let file_size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        json!({
            "recording_id": id, "id": id, "status": status,
            "duration": duration.as_secs_f64(), "file_size": file_size,
            "format": self.format, "output_file": self.path,
            "is_recording": status == "recording",
        })
    }
}

/// Python sends `{fps, format, quality}`; JS `{output_file}`.
#[derive(Deserialize)]
pub struct Start {
    fps: Option<u32>,
    format: Option<String>,
    quality: Option<String>,
    output_file: Option<String>,
}

pub async fn start(State(d): State<DesktopState>, bytes: Bytes) -> Result<Response, AgentError> {
    let s: Start = body(&bytes)?;
    let format: &'static str = match s.format.as_deref() {
        None | Some("mp4") => "mp4",
        Some("webm") => "webm",
        Some(other) => {
            return Err(AgentError::bad_request(format!(
                "format must be mp4 or webm, not {other:?}"
            )))
        }
    };
    let crf = match s.quality.as_deref() {
        None | Some("medium") => "28",
        Some("low") => "35",
        Some("high") => "20",
        Some(other) => {
            return Err(AgentError::bad_request(format!(
                "quality must be low, medium or high, not {other:?}"
            )))
        }
    };
    let fps = s.fps.unwrap_or(10).clamp(1, 60).to_string();
    let mut book = d.recordings.inner.lock().await;
    let active = book
        .by_id
        .iter_mut()
        .find_map(|(id, r)| (r.state() == "recording").then(|| id.clone()));
    if let Some(active) = active {
        return Err(AgentError::new(
            StatusCode::CONFLICT,
            "RECORDING_IN_PROGRESS",
            format!("recording {active} is still running; stop it first"),
        ));
    }
    let id = format!("rec_{}", hex_id());
    let user = x::desktop_user();
    let path = match s.output_file.filter(|f| !f.trim().is_empty()) {
        Some(f) => user.resolve(&f),
        None => PathBuf::from(LOG_DIR)
            .join("recordings")
            .join(format!("{id}.{format}")),
    };
    if let Some(dir) = path.parent() {
        for made in crate::e2b::users::missing_dirs(dir).into_iter().rev() {
            std::fs::create_dir(&made)
                .map_err(|e| AgentError::from_io(&e, &made.to_string_lossy()))?;
            user.own(&made);
        }
    }
    let (w, h) = screen::current_size().await?;
    let size = format!("{w}x{h}");
    let path_arg = path.to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec![
        "-loglevel",
        "error",
        "-y",
        "-f",
        "x11grab",
        "-draw_mouse",
        "1",
        "-framerate",
        &fps,
        "-video_size",
        &size,
        "-i",
        x::DISPLAY,
        // Even sizes, as the 4:2:0 encoders need.
        "-vf",
        "scale=trunc(iw/2)*2:trunc(ih/2)*2",
        "-pix_fmt",
        "yuv420p",
    ];
    match format {
        "mp4" => args.extend([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            crf,
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ]),
        _ => args.extend([
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-crf",
            crf,
            "-b:v",
            "2M",
            "-f",
            "webm",
        ]),
    }
    args.push(&path_arg);
    let log = std::fs::File::create(PathBuf::from(LOG_DIR).join(format!("{id}.log"))).ok();
    let mut cmd = x::command("ffmpeg");
    // Progress on stdout tells when the first frame is in, so the call returns once the
    // recording has begun (on a busy machine ffmpeg can take a second to start).
    cmd.args(["-progress", "pipe:1", "-stats_period", "0.1"])
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log.map(Stdio::from).unwrap_or_else(Stdio::null));
    let mut child = cmd.spawn().map_err(|e| {
        AgentError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("cannot run ffmpeg: {e}"),
        )
    })?;
    if let Some(progress) = child.stdout.take() {
        if !first_frame(progress).await {
            let _ = child.kill().await;
            return Err(AgentError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "RECORDING_FAILED",
                format!(
                    "ffmpeg stopped before its first frame; see /desktop/debug/logs ({id}.log)"
                ),
            ));
        }
    }
    let mut rec = Recording {
        format,
        path,
        started: Instant::now(),
        ended: None,
        ffmpeg: Some(child),
    };
    let answer = rec.json(&id);
    book.by_id.insert(id.clone(), rec);
    book.latest = Some(id);
    Ok(Json(answer).into_response())
}

/// How long a start waits for ffmpeg's first frame before answering anyway.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until ffmpeg reports a frame (true), or stops first (false); then keeps draining its
/// progress in the background so a full pipe never stalls it. A slow start past the timeout is
/// answered as recording: ffmpeg is still running and may yet catch up.
async fn first_frame(progress: tokio::process::ChildStdout) -> bool {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(progress).lines();
    let started = tokio::time::timeout(FIRST_FRAME_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let frames = line.strip_prefix("frame=").map(str::trim);
            if frames.is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 0)) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(true);
    if started {
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    }
    started
}

fn hex_id() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Deserialize, Default)]
pub struct Which {
    #[serde(alias = "id")]
    recording_id: Option<String>,
}

/// The recording named, or the latest one (JS names none).
fn pick(book: &mut Book, id: Option<String>) -> Result<(String, &mut Recording), AgentError> {
    let id = id
        .filter(|i| !i.is_empty())
        .or_else(|| book.latest.clone())
        .ok_or_else(|| {
            AgentError::new(
                StatusCode::NOT_FOUND,
                "RECORDING_NOT_FOUND",
                "no recording has been started",
            )
        })?;
    match book.by_id.get_mut(&id) {
        Some(r) => Ok((id, r)),
        None => Err(AgentError::new(
            StatusCode::NOT_FOUND,
            "RECORDING_NOT_FOUND",
            format!("no recording {id:?}"),
        )),
    }
}

pub async fn stop(State(d): State<DesktopState>, bytes: Bytes) -> Result<Response, AgentError> {
    let w: Which = body(&bytes)?;
    let mut book = d.recordings.inner.lock().await;
    let (id, rec) = pick(&mut book, w.recording_id)?;
    if rec.ended.is_none() {
        if let Some(mut child) = rec.ffmpeg.take() {
            let elapsed = rec.started.elapsed();
            // "q" makes ffmpeg finish the file (an mp4 without its index is unplayable).
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"q").await;
            }
            let wrote = match tokio::time::timeout(FINISH_TIMEOUT, child.wait()).await {
                Ok(Ok(status)) => status.success(),
                _ => {
                    let _ = child.kill().await;
                    false
                }
            };
            rec.ended = Some((elapsed, wrote));
        }
    }
    Ok(Json(rec.json(&id)).into_response())
}

pub async fn status(
    State(d): State<DesktopState>,
    Query(w): Query<Which>,
) -> Result<Response, AgentError> {
    let mut book = d.recordings.inner.lock().await;
    let (id, rec) = pick(&mut book, w.recording_id)?;
    Ok(Json(rec.json(&id)).into_response())
}

pub async fn download(
    State(d): State<DesktopState>,
    headers: HeaderMap,
    Query(w): Query<Which>,
) -> Result<Response, AgentError> {
    send(d, headers, w.recording_id).await
}

pub async fn download_by_path(
    State(d): State<DesktopState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AgentError> {
    send(d, headers, Some(id)).await
}

async fn send(
    d: DesktopState,
    headers: HeaderMap,
    id: Option<String>,
) -> Result<Response, AgentError> {
    let (path, format) = {
        let mut book = d.recordings.inner.lock().await;
        let (id, rec) = pick(&mut book, id)?;
        match rec.state() {
            "recording" => {
                return Err(AgentError::new(
                    StatusCode::CONFLICT,
                    "RECORDING_IN_PROGRESS",
                    format!("recording {id} is still running; stop it first"),
                ))
            }
            "failed" => {
                return Err(AgentError::new(
                    StatusCode::CONFLICT,
                    "RECORDING_FAILED",
                    format!("recording {id} failed; see /desktop/debug/logs"),
                ))
            }
            _ => (rec.path.clone(), rec.format),
        }
    };
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| AgentError::from_io(&e, &path.to_string_lossy()))?;
    if screen::wants_json(&headers) {
        return Ok(screen::buffer_json(&bytes));
    }
    let mime = if format == "webm" {
        "video/webm"
    } else {
        "video/mp4"
    };
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}
