//! File-change events as a user means them, for both watch APIs (Hopx's `/files/watch`, E2B's
//! `WatchDir`). The files APIs write atomically: a temporary sibling is filled, then renamed
//! over the target. The kernel reports that as a create/write of the temporary file and a rename;
//! a user wrote one file. So temporary files are never reported, and a rename that completes an
//! atomic write is reported as the kernel reports a plain write of the target, the way the
//! vendors' agents (inotify underneath) show it: a new file is created and then written (no write
//! when it is empty), an existing one is written. The writes are looked up among those this agent
//! made in the last seconds.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use notify::event::{EventKind, ModifyKind, RenameMode};

/// How long a finished atomic write is remembered for the watchers that see its rename.
const REMEMBER: Duration = Duration::from_secs(10);

static RECENT_WRITES: Mutex<Vec<(PathBuf, Written, Instant)>> = Mutex::new(Vec::new());

/// What an atomic write did to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A file that did not exist, with content or empty.
    New { empty: bool },
    /// A file that existed, replaced.
    Replaced,
}

impl Written {
    /// For a write of `len` bytes to `target`, before it is renamed into place.
    pub fn of(target: &Path, len: u64) -> Self {
        if target.exists() {
            Self::Replaced
        } else {
            Self::New { empty: len == 0 }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Modified,
    Removed,
    Renamed,
    Chmod,
}

/// The name of the temporary sibling an atomic write of `target` fills.
pub fn temp_sibling(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    target.with_file_name(format!(".{name}.warren-{nonce:x}.tmp"))
}

fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n.contains(".warren-") && n.ends_with(".tmp"))
}

/// Called just before the rename that completes an atomic write of `target`.
pub fn note_atomic_write(target: &Path, written: Written) {
    let mut recent = RECENT_WRITES.lock().unwrap_or_else(|p| p.into_inner());
    recent.retain(|(_, _, at)| at.elapsed() < REMEMBER);
    recent.push((target.to_path_buf(), written, Instant::now()));
}

fn atomic_write_of(target: &Path) -> Option<Written> {
    let recent = RECENT_WRITES.lock().unwrap_or_else(|p| p.into_inner());
    recent
        .iter()
        .rev()
        .find(|(p, _, at)| p == target && at.elapsed() < REMEMBER)
        .map(|(_, written, _)| *written)
}

/// What one raw event means, per path.
pub fn interpret(event: &notify::Event) -> Vec<(PathBuf, Change)> {
    let change = match &event.kind {
        EventKind::Create(_) => Change::Created,
        EventKind::Modify(ModifyKind::Name(mode)) => {
            return renamed(*mode, &event.paths);
        }
        EventKind::Modify(ModifyKind::Metadata(_)) => Change::Chmod,
        EventKind::Modify(_) => Change::Modified,
        EventKind::Remove(_) => Change::Removed,
        _ => return Vec::new(),
    };
    event
        .paths
        .iter()
        .filter(|p| !is_temp(p))
        .map(|p| (p.clone(), change))
        .collect()
}

fn renamed(mode: RenameMode, paths: &[PathBuf]) -> Vec<(PathBuf, Change)> {
    match (mode, paths) {
        // Both ends in one event: the separate From and To events carry the same news.
        (RenameMode::Both, _) => Vec::new(),
        (RenameMode::To, [to]) if !is_temp(to) => match atomic_write_of(to) {
            Some(Written::Replaced) => vec![(to.clone(), Change::Modified)],
            Some(Written::New { empty: true }) => vec![(to.clone(), Change::Created)],
            Some(Written::New { empty: false }) => {
                vec![
                    (to.clone(), Change::Created),
                    (to.clone(), Change::Modified),
                ]
            }
            None => vec![(to.clone(), Change::Renamed)],
        },
        (_, paths) => paths
            .iter()
            .filter(|p| !is_temp(p))
            .map(|p| (p.clone(), Change::Renamed))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange};

    fn ev(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        e.paths = paths.iter().map(PathBuf::from).collect();
        e
    }

    #[test]
    fn an_atomic_write_is_reported_as_a_plain_write_of_the_target() {
        let target = Path::new("/w/a.txt");
        let tmp = temp_sibling(target);
        let tmp = tmp.to_str().expect("test value");
        note_atomic_write(target, Written::New { empty: false });
        let events = [
            ev(EventKind::Create(CreateKind::File), &[tmp]),
            ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &[tmp]),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &[tmp],
            ),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                &["/w/a.txt"],
            ),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &[tmp, "/w/a.txt"],
            ),
        ];
        let all: Vec<_> = events.iter().flat_map(interpret).collect();
        let a = PathBuf::from("/w/a.txt");
        assert_eq!(
            all,
            vec![(a.clone(), Change::Created), (a.clone(), Change::Modified)],
            "created, then written: nothing of the temporary file"
        );
        note_atomic_write(target, Written::Replaced);
        assert_eq!(interpret(&events[3]), vec![(a.clone(), Change::Modified)]);
        note_atomic_write(target, Written::New { empty: true });
        assert_eq!(interpret(&events[3]), vec![(a, Change::Created)]);
    }

    #[test]
    fn a_user_rename_stays_a_rename() {
        let e = ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            &["/w/moved-by-user"],
        );
        assert_eq!(
            interpret(&e),
            vec![(PathBuf::from("/w/moved-by-user"), Change::Renamed)]
        );
    }
}
