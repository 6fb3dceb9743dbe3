//! envd's `filesystem.Filesystem` service: stat, list, make, move and remove entries, and watch
//! a directory (as a stream, or as a watcher polled by id for the synchronous Python SDK).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use notify::{RecursiveMode, Watcher};
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, Code, RpcError};
use super::users::{self, User};
use super::E2b;
use crate::changes::Change;

/// Events a polled watcher keeps between two polls; older ones are dropped.
const WATCHER_BACKLOG: usize = 10_000;

#[derive(Default)]
pub struct Watchers {
    polled: Mutex<HashMap<String, PolledWatcher>>,
}

struct PolledWatcher {
    _watcher: notify::RecommendedWatcher,
    events: Arc<Mutex<Vec<Value>>>,
}

fn name_of(id: u32, table: &str) -> Option<String> {
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(id)).then(|| f[0].to_owned())
    })
}

fn permissions(meta: &std::fs::Metadata) -> String {
    let kind = if meta.is_dir() {
        'd'
    } else if meta.file_type().is_symlink() {
        'L'
    } else {
        '-'
    };
    let mut s = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (meta.mode() >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// `EntryInfo` of `path` (a symlink is described by its target, and says so).
pub fn entry_info(path: &Path) -> std::io::Result<Value> {
    let link = std::fs::symlink_metadata(path)?;
    let is_symlink = link.file_type().is_symlink();
    let meta = if is_symlink {
        std::fs::metadata(path).unwrap_or(link.clone())
    } else {
        link
    };
    let kind = if meta.is_dir() {
        "FILE_TYPE_DIRECTORY"
    } else {
        "FILE_TYPE_FILE"
    };
    let modified = meta
        .modified()
        .map(crate::time_fmt::rfc3339)
        .unwrap_or_default();
    let mut v = json!({
        "name": path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into()),
        "type": kind,
        "path": path.display().to_string(),
        "size": meta.len().to_string(),
        "mode": meta.mode() & 0o7777,
        "permissions": permissions(&meta),
        "owner": name_of(meta.uid(), "/etc/passwd").unwrap_or_else(|| meta.uid().to_string()),
        "group": name_of(meta.gid(), "/etc/group").unwrap_or_else(|| meta.gid().to_string()),
        "modifiedTime": modified,
    });
    let metadata = super::file_metadata::read(path);
    if !metadata.is_empty() {
        v["metadata"] = json!(metadata);
    }
    if is_symlink {
        v["isSymlink"] = json!(true);
        if let Ok(t) = std::fs::read_link(path) {
            v["symlinkTarget"] = json!(t.display().to_string());
        }
    }
    Ok(v)
}

#[derive(Deserialize, Default)]
struct PathReq {
    #[serde(default)]
    path: String,
    #[serde(default)]
    depth: Option<u32>,
    #[serde(default)]
    recursive: Option<bool>,
    /// Watches: each event carries the entry's `EntryInfo` when it can be stat-ed.
    /// (`allowNetworkMounts` needs no field: inotify is asked for any mount either way.)
    #[serde(default, alias = "include_entry", rename = "includeEntry")]
    include_entry: bool,
}

async fn request(headers: &HeaderMap, body: Body) -> Result<(PathReq, User, PathBuf), RpcError> {
    let req: PathReq = connect::read_message(headers, body).await?;
    let user = users::from_request(headers, None)?;
    let full = user.resolve(&req.path);
    Ok((req, user, full))
}

/// File-system work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RpcError> + Send + 'static,
) -> Result<T, RpcError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RpcError::new(Code::Internal, e.to_string()))?
}

pub async fn stat(headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let (req, _, full) = request(&headers, body).await?;
        blocking(move || {
            let entry = entry_info(&full).map_err(|e| RpcError::from_io(&e, &req.path))?;
            Ok(json!({ "entry": entry }))
        })
        .await
    }
    .await;
    connect::unary(result)
}

pub async fn list_dir(headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let (req, _, full) = request(&headers, body).await?;
        let depth = req.depth.unwrap_or(1).max(1);
        blocking(move || {
            let meta = std::fs::metadata(&full).map_err(|e| RpcError::from_io(&e, &req.path))?;
            if !meta.is_dir() {
                return Err(RpcError::invalid(format!(
                    "{} is not a directory",
                    req.path
                )));
            }
            let mut entries = Vec::new();
            walk(&full, depth, &mut entries).map_err(|e| RpcError::from_io(&e, &req.path))?;
            Ok(json!({ "entries": entries }))
        })
        .await
    }
    .await;
    connect::unary(result)
}

fn walk(dir: &Path, depth: u32, out: &mut Vec<Value>) -> std::io::Result<()> {
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        let Ok(info) = entry_info(&child) else {
            continue;
        };
        let descend = depth > 1 && std::fs::symlink_metadata(&child).is_ok_and(|m| m.is_dir());
        out.push(info);
        if descend {
            let _ = walk(&child, depth - 1, out);
        }
    }
    Ok(())
}

pub async fn make_dir(headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let (req, user, full) = request(&headers, body).await?;
        blocking(move || {
            if full.exists() {
                return Err(RpcError::new(
                    Code::AlreadyExists,
                    format!("{} already exists", req.path),
                ));
            }
            // Parents the call creates belong to the user too.
            let created = users::missing_dirs(&full);
            std::fs::create_dir_all(&full).map_err(|e| RpcError::from_io(&e, &req.path))?;
            for c in &created {
                user.own(c);
            }
            let entry = entry_info(&full).map_err(|e| RpcError::from_io(&e, &req.path))?;
            Ok(json!({ "entry": entry }))
        })
        .await
    }
    .await;
    connect::unary(result)
}

pub async fn move_entry(headers: HeaderMap, body: Body) -> Response {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        source: String,
        #[serde(default)]
        destination: String,
    }
    let result = async {
        let req: Req = connect::read_message(&headers, body).await?;
        let user = users::from_request(&headers, None)?;
        let (from, to) = (user.resolve(&req.source), user.resolve(&req.destination));
        blocking(move || {
            std::fs::symlink_metadata(&from).map_err(|e| RpcError::from_io(&e, &req.source))?;
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| RpcError::from_io(&e, &req.destination))?;
            }
            std::fs::rename(&from, &to).map_err(|e| RpcError::from_io(&e, &req.destination))?;
            let entry = entry_info(&to).map_err(|e| RpcError::from_io(&e, &req.destination))?;
            Ok(json!({ "entry": entry }))
        })
        .await
    }
    .await;
    connect::unary(result)
}

pub async fn remove(headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let (req, _, full) = request(&headers, body).await?;
        blocking(move || {
            let meta =
                std::fs::symlink_metadata(&full).map_err(|e| RpcError::from_io(&e, &req.path))?;
            if meta.is_dir() {
                std::fs::remove_dir_all(&full)
            } else {
                std::fs::remove_file(&full)
            }
            .map_err(|e| RpcError::from_io(&e, &req.path))?;
            Ok(json!({}))
        })
        .await
    }
    .await;
    connect::unary(result)
}

fn event_type(change: Change) -> &'static str {
    match change {
        Change::Created => "EVENT_TYPE_CREATE",
        Change::Modified => "EVENT_TYPE_WRITE",
        Change::Removed => "EVENT_TYPE_REMOVE",
        Change::Renamed => "EVENT_TYPE_RENAME",
        Change::Chmod => "EVENT_TYPE_CHMOD",
    }
}

/// The `FilesystemEvent`s of one raw event, named relative to the watched `root`: one per kernel
/// event, as envd reports them (a new file's write is its own event: see `changes`), with the
/// entry's info when asked for and it is still there.
fn events_of(root: &Path, event: &notify::Event, include_entry: bool) -> Vec<Value> {
    let mut out = Vec::new();
    for (path, change) in crate::changes::interpret(event) {
        let name = path
            .strip_prefix(root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string());
        if name.is_empty() {
            continue;
        }
        let mut e = json!({ "name": name, "type": event_type(change) });
        if include_entry && change != Change::Removed {
            if let Ok(entry) = entry_info(&path) {
                e["entry"] = entry;
            }
        }
        out.push(e);
    }
    out
}

fn watch(
    dir: &Path,
    req: &PathReq,
    mut on_event: impl FnMut(Value) -> bool + Send + 'static,
) -> Result<notify::RecommendedWatcher, RpcError> {
    let root = dir.to_path_buf();
    let (recursive, include_entry) = (req.recursive.unwrap_or(false), req.include_entry);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        for e in events_of(&root, &event, include_entry) {
            if !on_event(e) {
                return;
            }
        }
    })
    .map_err(|e| RpcError::new(Code::Internal, format!("cannot watch: {e}")))?;
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher.watch(dir, mode).map_err(|e| {
        RpcError::new(
            Code::Internal,
            format!("cannot watch {}: {e}", dir.display()),
        )
    })?;
    Ok(watcher)
}

fn watchable(full: &Path, shown: &str) -> Result<(), RpcError> {
    match std::fs::metadata(full) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(RpcError::invalid(format!("{shown} is not a directory"))),
        Err(e) => Err(RpcError::from_io(&e, shown)),
    }
}

/// `WatchDir`: a stream of events until the client leaves.
pub async fn watch_dir(headers: HeaderMap, body: Body) -> Response {
    let (req, _, full) = match request(&headers, body).await {
        Ok(r) => r,
        Err(e) => return connect::stream_error(e),
    };
    if let Err(e) = watchable(&full, &req.path) {
        return connect::stream_error(e);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(256);
    let watcher = match watch(&full, &req, move |e| {
        // blocking_send: notify calls this on its own thread.
        tx.blocking_send(e).is_ok()
    }) {
        Ok(w) => w,
        Err(e) => return connect::stream_error(e),
    };
    let keepalive = connect::keepalive_interval(&headers).unwrap_or(Duration::from_secs(50));
    let (sender, response) = connect::server_stream();
    tokio::spawn(async move {
        let _watcher = watcher;
        if !sender.send(&json!({ "start": {} })).await {
            return;
        }
        let mut ticker = tokio::time::interval(keepalive);
        ticker.tick().await;
        loop {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => if !sender.send(&json!({ "filesystem": e })).await { break },
                    None => break,
                },
                _ = ticker.tick() => if !sender.send(&json!({ "keepalive": {} })).await { break },
            }
        }
    });
    response
}

/// `CreateWatcher`: events are kept until `GetWatcherEvents` collects them.
pub async fn create_watcher(State(state): State<E2b>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let (req, _, full) = request(&headers, body).await?;
        watchable(&full, &req.path)?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let watcher = watch(&full, &req, move |e| {
            let mut v = sink.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() >= WATCHER_BACKLOG {
                v.remove(0);
            }
            v.push(e);
            true
        })?;
        let id = crate::tree::new_execution_id();
        state
            .tables
            .watchers
            .polled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.clone(),
                PolledWatcher {
                    _watcher: watcher,
                    events,
                },
            );
        Ok(json!({ "watcherId": id }))
    }
    .await;
    connect::unary(result)
}

#[derive(Deserialize)]
struct WatcherReq {
    #[serde(default, alias = "watcher_id", rename = "watcherId")]
    watcher_id: String,
}

pub async fn get_watcher_events(
    State(state): State<E2b>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let req: WatcherReq = connect::read_message(&headers, body).await?;
        let table = state
            .tables
            .watchers
            .polled
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let w = table.get(&req.watcher_id).ok_or_else(|| {
            RpcError::new(
                Code::NotFound,
                format!("watcher {} not found", req.watcher_id),
            )
        })?;
        let events = std::mem::take(&mut *w.events.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(json!({ "events": events }))
    }
    .await;
    connect::unary(result)
}

pub async fn remove_watcher(State(state): State<E2b>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let req: WatcherReq = connect::read_message(&headers, body).await?;
        state
            .tables
            .watchers
            .polled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req.watcher_id)
            .ok_or_else(|| {
                RpcError::new(
                    Code::NotFound,
                    format!("watcher {} not found", req.watcher_id),
                )
            })?;
        Ok(json!({}))
    }
    .await;
    connect::unary(result)
}
