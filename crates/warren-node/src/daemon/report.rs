//! What a node tells the control plane about itself at join and in every heartbeat.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use warren_runtime::templates::{builtin_recipes, TemplateCache};
use warren_wire::cluster::{NodeCapacity, NodeReport, NodeSandbox, NodeUse};

use super::saved::SavedSandboxes;
use crate::node::Node;
use crate::registry::RunState;

pub struct Reporter {
    tiers: Vec<String>,
    max_sandboxes: u32,
    data_dir: PathBuf,
    templates: TemplateCache,
    layers_dir: PathBuf,
    saved: Arc<SavedSandboxes>,
    node: OnceLock<Arc<Node>>,
}

impl Reporter {
    pub fn new(
        tiers: Vec<String>,
        max_sandboxes: u32,
        data_dir: PathBuf,
        templates: TemplateCache,
        layers_dir: PathBuf,
        saved: Arc<SavedSandboxes>,
    ) -> Self {
        Self {
            tiers,
            max_sandboxes,
            data_dir,
            templates,
            layers_dir,
            saved,
            node: OnceLock::new(),
        }
    }

    /// From now on, report the node's live sandboxes.
    pub fn attach(&self, node: Arc<Node>) {
        let _ = self.node.set(node);
    }

    pub fn report(&self, exited: Vec<(String, i32)>) -> NodeReport {
        const MIB: u64 = 1024 * 1024;
        let memory_mb = warren_runtime::host::memory().map_or(0, |(total, _)| total / MIB);
        let disk_mb = nix::sys::statvfs::statvfs(&self.data_dir)
            .map_or(0, |s| s.blocks() * s.fragment_size() / MIB);
        let vcpu = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let saved = self.saved.all();
        let mut sandboxes = Vec::new();
        let mut used = NodeUse::default();
        if let Some(node) = self.node.get() {
            for id in node.list() {
                let state = match node.state(&id) {
                    Some(RunState::Paused) => "paused",
                    _ => "running",
                };
                // Only the cluster's sandboxes (recorded once started): a build step's sandbox is
                // the control plane's business for one step, and one still starting is not yet
                // the cluster's to reconcile.
                let Some(s) = saved.iter().find(|s| s.id == id.as_str()) else {
                    continue;
                };
                used.vcpu += s.vcpu;
                used.memory_mb += u64::from(s.memory_mb);
                sandboxes.push(NodeSandbox {
                    id: id.to_string(),
                    state: state.to_owned(),
                    port: node.port(&id),
                });
            }
        }
        used.sandboxes = sandboxes.len() as u32;
        let templates = builtin_recipes()
            .into_iter()
            .filter(|r| self.templates.is_ready(r))
            .map(|r| r.name.to_owned())
            .collect();
        let layers = std::fs::read_dir(&self.layers_dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".ready"))
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        NodeReport {
            tiers: self.tiers.clone(),
            capacity: NodeCapacity {
                vcpu,
                memory_mb,
                disk_mb,
                sandboxes: self.max_sandboxes,
            },
            used,
            templates,
            layers,
            sandboxes,
            exited,
            awaiting_secrets: saved
                .iter()
                .filter(|s| s.awaiting_secrets)
                .map(|s| s.id.clone())
                .collect(),
        }
    }
}
