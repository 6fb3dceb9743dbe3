//! Text on screen: tesseract reads a capture of the screen (or a region), enlarged for it.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::screen::{capture_scaled, Area};
use super::{body, x};
use crate::error::AgentError;

/// How much larger OCR sees the screen than it is (see `capture::screen_png`).
const OCR_SCALE: u32 = 2;

fn language(v: Option<&str>) -> Result<String, AgentError> {
    let lang = v.unwrap_or("eng");
    if !lang.is_empty()
        && lang.len() <= 64
        && lang
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '+')
    {
        Ok(lang.to_owned())
    } else {
        Err(AgentError::bad_request(format!(
            "invalid OCR language {lang:?}"
        )))
    }
}

/// `tsv`: word boxes, found as sparse text (page segmentation mode 11). A screen is not a page:
/// the default layout analysis misses a terminal's lines amid large empty areas.
async fn tesseract(png: &[u8], lang: &str, tsv: bool) -> Result<String, AgentError> {
    let mut args = vec!["stdin", "stdout", "-l", lang];
    if tsv {
        args.extend(["--psm", "11", "tsv"]);
    }
    let out = x::run_with_input("tesseract", &args, Some(png)).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[derive(Deserialize)]
pub struct Ocr {
    x: Option<i64>,
    y: Option<i64>,
    width: Option<i64>,
    height: Option<i64>,
    language: Option<String>,
}

/// The text in a region (the whole screen without one).
pub async fn ocr(bytes: Bytes) -> Result<Response, AgentError> {
    let o: Ocr = body(&bytes)?;
    let lang = language(o.language.as_deref())?;
    let area = match (o.x, o.y, o.width, o.height) {
        (Some(x), Some(y), Some(width), Some(height)) => Some(
            Area {
                x,
                y,
                width,
                height,
            }
            .checked()?,
        ),
        _ => None,
    };
    let png = capture_scaled(None, area, OCR_SCALE).await?;
    let text = tesseract(&png, &lang, false).await?;
    Ok(Json(json!({ "text": text.trim(), "language": lang })).into_response())
}

#[derive(Deserialize)]
pub struct FindText {
    text: String,
    timeout: Option<u64>,
}

/// One word tesseract read, with its box.
struct Word {
    text: String,
    left: i64,
    top: i64,
    width: i64,
    height: i64,
    confidence: f64,
}

/// Where `text` is on screen: the smallest run of words on one line whose text contains it
/// (case-insensitive), from tesseract's word boxes.
async fn locate(text: &str) -> Result<Option<Value>, AgentError> {
    // Spaces are not compared: OCR splits and joins words where the text has none or one.
    let needle: String = text.to_lowercase().split_whitespace().collect();
    if needle.is_empty() {
        return Err(AgentError::bad_request("text must not be empty"));
    }
    let png = capture_scaled(None, None, OCR_SCALE).await?;
    let tsv = tesseract(&png, "eng", true).await?;
    // level page block par line word left top width height conf text
    let mut lines: Vec<((i64, i64, i64), Vec<Word>)> = Vec::new();
    for row in tsv.lines().skip(1) {
        let f: Vec<&str> = row.split('\t').collect();
        if f.len() < 12 || f[0] != "5" || f[11].trim().is_empty() {
            continue;
        }
        let n = |i: usize| f[i].parse::<i64>().unwrap_or(0);
        // Boxes back in screen pixels.
        let px = |i: usize| n(i) / i64::from(OCR_SCALE);
        let key = (n(2), n(3), n(4));
        let word = Word {
            text: f[11].to_owned(),
            left: px(6),
            top: px(7),
            width: px(8),
            height: px(9),
            confidence: f[10].parse().unwrap_or(0.0),
        };
        match lines.last_mut() {
            Some((k, words)) if *k == key => words.push(word),
            _ => lines.push((key, vec![word])),
        }
    }
    for (_, words) in &lines {
        for start in 0..words.len() {
            let mut joined = String::new();
            for end in start..words.len() {
                joined.push_str(&words[end].text.to_lowercase());
                if joined.contains(&needle) {
                    let span = &words[start..=end];
                    let left = span.iter().map(|w| w.left).min().unwrap_or(0);
                    let top = span.iter().map(|w| w.top).min().unwrap_or(0);
                    let right = span.iter().map(|w| w.left + w.width).max().unwrap_or(0);
                    let bottom = span.iter().map(|w| w.top + w.height).max().unwrap_or(0);
                    let conf = span.iter().map(|w| w.confidence).sum::<f64>() / span.len() as f64;
                    let found: Vec<&str> = span.iter().map(|w| w.text.as_str()).collect();
                    return Ok(Some(json!({
                        "text": found.join(" "),
                        "x": left, "y": top, "width": right - left, "height": bottom - top,
                        "center_x": (left + right) / 2, "center_y": (top + bottom) / 2,
                        "confidence": conf,
                    })));
                }
            }
        }
    }
    Ok(None)
}

pub async fn find_element(bytes: Bytes) -> Result<Response, AgentError> {
    let f: FindText = body(&bytes)?;
    let element = locate(&f.text).await?;
    Ok(Json(json!({ "found": element.is_some(), "element": element })).into_response())
}

/// Polls the screen until `text` shows (`timeout` seconds, 30 by default).
pub async fn wait_for(bytes: Bytes) -> Result<Response, AgentError> {
    let f: FindText = body(&bytes)?;
    let deadline = Instant::now() + Duration::from_secs(f.timeout.unwrap_or(30).min(300));
    loop {
        if let Some(element) = locate(&f.text).await? {
            return Ok(Json(json!({ "found": true, "element": element })).into_response());
        }
        if Instant::now() >= deadline {
            return Err(AgentError::new(
                StatusCode::REQUEST_TIMEOUT,
                "EXECUTION_TIMEOUT",
                format!("{:?} did not appear on screen in time", f.text),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn bounds(bytes: Bytes) -> Result<Response, AgentError> {
    let f: FindText = body(&bytes)?;
    match locate(&f.text).await? {
        Some(e) => Ok(Json(
            json!({ "x": e["x"], "y": e["y"], "width": e["width"], "height": e["height"] }),
        )
        .into_response()),
        None => Err(AgentError::new(
            StatusCode::NOT_FOUND,
            "ELEMENT_NOT_FOUND",
            format!("{:?} is not on screen", f.text),
        )),
    }
}
