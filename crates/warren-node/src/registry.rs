//! The live sandboxes of this node: which tier runs each, how to reach its agent and ports, who
//! owns it, whether it is paused, and its listener.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use warren_core::SandboxId;
use warren_runtime::AnyDriver;

use crate::activity::Activity;
use crate::agent_link::AgentLink;

/// Running or paused (a sandbox in any other state is not in the registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
}

/// What the proxy needs to reach one live sandbox.
#[derive(Debug, Clone)]
pub struct Target {
    pub agent: AgentLink,
    /// The sandbox's network namespace, where its ports are dialled from.
    pub netns: PathBuf,
    /// Address of the sandbox's ports inside `netns` (its loopback, or a VM guest).
    pub port_host: Ipv4Addr,
    /// The tenant the sandbox belongs to (rate limits and audit).
    pub owner: String,
    pub state: RunState,
    /// When it was last in use (`activity.rs`).
    pub activity: std::sync::Arc<Activity>,
    /// Taken over while frozen: its agent, perhaps of another release, has not said which
    /// protocol it speaks yet (it is asked when it resumes).
    pub protocol_unasked: bool,
}

pub(crate) struct Entry {
    pub driver: AnyDriver,
    pub target: Target,
    pub listener: Option<tokio::task::JoinHandle<()>>,
    pub port: Option<u16>,
}

#[derive(Default)]
pub(crate) struct Registry {
    live: Mutex<HashMap<SandboxId, Entry>>,
}

impl Registry {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Entry>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn target(&self, id: &SandboxId) -> Option<Target> {
        self.lock().get(id).map(|e| e.target.clone())
    }

    pub fn driver(&self, id: &SandboxId) -> Option<AnyDriver> {
        self.lock().get(id).map(|e| e.driver.clone())
    }

    pub fn insert(&self, id: SandboxId, entry: Entry) {
        self.lock().insert(id, entry);
    }

    /// Removes the sandbox and stops its listener.
    pub fn remove(&self, id: &SandboxId) -> Option<Entry> {
        let entry = self.lock().remove(id);
        if let Some(h) = entry.as_ref().and_then(|e| e.listener.as_ref()) {
            h.abort();
        }
        entry
    }

    pub fn set_state(&self, id: &SandboxId, state: RunState) {
        if let Some(e) = self.lock().get_mut(id) {
            e.target.state = state;
        }
    }

    pub fn set_protocol_asked(&self, id: &SandboxId) {
        if let Some(e) = self.lock().get_mut(id) {
            e.target.protocol_unasked = false;
        }
    }
}
