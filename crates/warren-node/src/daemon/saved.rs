//! The node's own record of its sandboxes, so that a restarted `warren node` takes them over
//! without asking the control plane (which may be unreachable just then). One JSON file per
//! sandbox, written atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use warren_core::Tier;
use warren_runtime::SandboxHandle;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSandbox {
    pub id: String,
    pub tier: Tier,
    pub handle: SandboxHandle,
    pub owner: String,
    pub paused: bool,
    pub port: Option<u16>,
    pub vcpu: u32,
    pub memory_mb: u32,
    /// Its egress policy and internet access, put back in place when the node takes it over.
    #[serde(default)]
    pub egress: Option<warren_wire::control::EgressPolicy>,
    #[serde(default = "yes")]
    pub internet_access: bool,
    /// Its policy has brokered secrets, whose values live in this process only.
    #[serde(default)]
    pub brokers_secrets: bool,
    /// Taken over by a restarted node, which lost those values: the control plane gives them
    /// again (see `NodeReport::awaiting_secrets`). Never written down.
    #[serde(skip)]
    pub awaiting_secrets: bool,
}

fn yes() -> bool {
    true
}

pub struct SavedSandboxes {
    dir: PathBuf,
    map: Mutex<HashMap<String, SavedSandbox>>,
}

impl SavedSandboxes {
    /// Reads every record in `dir` (unreadable ones are logged and skipped).
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut map = HashMap::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<SavedSandbox>(&b).ok())
            {
                Some(s) => {
                    map.insert(s.id.clone(), s);
                }
                None => tracing::warn!(file = %path.display(), "unreadable sandbox record skipped"),
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            map: Mutex::new(map),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SavedSandbox>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn all(&self) -> Vec<SavedSandbox> {
        self.lock().values().cloned().collect()
    }

    pub fn put(&self, s: SavedSandbox) {
        let path = self.file(&s.id);
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(&s)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::error!(sandbox = %s.id, error = %e, "cannot save the sandbox's record: a restart of this node will not take it over");
        }
        self.lock().insert(s.id.clone(), s);
    }

    pub fn set_paused(&self, id: &str, paused: bool) {
        let found = self.lock().get(id).cloned();
        if let Some(mut s) = found {
            s.paused = paused;
            self.put(s);
        }
    }

    /// Records a policy put in place with (or without) brokered secrets.
    pub fn set_egress(
        &self,
        id: &str,
        egress: Option<warren_wire::control::EgressPolicy>,
        brokers_secrets: bool,
    ) {
        let found = self.lock().get(id).cloned();
        if let Some(mut s) = found {
            s.egress = egress;
            s.brokers_secrets = brokers_secrets;
            s.awaiting_secrets = false;
            self.put(s);
        }
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
        let _ = std::fs::remove_file(self.file(id));
    }
}
