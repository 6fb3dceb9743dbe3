//! A node for tests without root: its sandboxes are entries in a map, every call is recorded,
//! and a test says which calls fail, what the machine has room for and which sandboxes survive a
//! restart. The lifecycle cannot tell it from a machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use warren_core::{SandboxId, Tier};
use warren_node::AgentLink;
use warren_runtime::{SandboxSpec, Snapshot, SnapshotTaken};
use warren_wire::cluster::MeasuredUsage;

use super::{AdoptOrder, HandOver, NodeCallError, NodeHandle, NodeStarted, StartOrder};

/// A sandbox of the fake node.
#[derive(Debug, Clone)]
pub struct FakeSandbox {
    pub owner: String,
    pub tier: Tier,
    pub paused: bool,
    pub env_vars: BTreeMap<String, String>,
    pub internet: bool,
    /// Started from a snapshot: the layers it runs on, topmost first.
    pub layers: Vec<PathBuf>,
}

/// A call the lifecycle made, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Start(SandboxId),
    Stop(SandboxId),
    Pause(SandboxId),
    Resume(SandboxId),
    Snapshot(SandboxId),
    HandOver(SandboxId),
    StartBuild(SandboxId),
    Adopt(SandboxId),
    SetNetwork(SandboxId, Option<warren_wire::control::EgressPolicy>),
    RemoveLeftovers,
}

#[derive(Default)]
struct State {
    sandboxes: BTreeMap<SandboxId, FakeSandbox>,
    calls: Vec<Call>,
    /// The next starts fail with this (the template's ready check did not pass).
    fail_starts: Option<String>,
    /// Whether the machine is short of memory.
    no_room: bool,
    /// Sandboxes an earlier server left that are still alive (`adopt` takes them), and whether
    /// they are found paused.
    survivors: BTreeMap<SandboxId, bool>,
    /// How long each start takes.
    start_delay: Duration,
    /// What `idle_sandboxes` reports (the running ones among them).
    idle: BTreeSet<SandboxId>,
}

pub struct FakeNode {
    tiers: Vec<Tier>,
    state: Mutex<State>,
}

impl FakeNode {
    pub fn new(tiers: &[Tier]) -> Self {
        Self {
            tiers: tiers.to_vec(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub fn sandbox(&self, id: &SandboxId) -> Option<FakeSandbox> {
        self.state().sandboxes.get(id).cloned()
    }

    pub fn fail_starts(&self, why: Option<&str>) {
        self.state().fail_starts = why.map(str::to_owned);
    }

    pub fn set_no_room(&self, short: bool) {
        self.state().no_room = short;
    }

    /// The sandboxes the node reports unused from now on.
    pub fn set_idle(&self, ids: &[SandboxId]) {
        self.state().idle = ids.iter().cloned().collect();
    }

    pub fn set_start_delay(&self, delay: Duration) {
        self.state().start_delay = delay;
    }

    /// An earlier server's sandbox whose processes still run (`paused`: as found).
    pub fn survives(&self, id: &SandboxId, paused: bool) {
        self.state().survivors.insert(id.clone(), paused);
    }

    /// The sandbox's init ended on its own: the node no longer runs it.
    pub fn lose(&self, id: &SandboxId) {
        self.state().sandboxes.remove(id);
    }

    fn record(&self, call: Call) {
        self.state().calls.push(call);
    }

    fn running(&self, id: &SandboxId) -> Result<(), NodeCallError> {
        if self.state().sandboxes.contains_key(id) {
            Ok(())
        } else {
            Err(NodeCallError::NotRunning)
        }
    }
}

fn handle_of(id: &SandboxId, tier: Tier) -> String {
    serde_json::json!({ "fake": id.as_str(), "tier": tier }).to_string()
}

#[async_trait]
impl NodeHandle for FakeNode {
    fn tiers(&self) -> Vec<Tier> {
        self.tiers.clone()
    }

    fn has_room(&self) -> Result<(), warren_node::NoRoom> {
        if self.state().no_room {
            return Err(warren_node::NoRoom {
                available_mib: 100,
                reserve_mib: 512,
            });
        }
        Ok(())
    }

    fn sandboxes(&self) -> BTreeSet<SandboxId> {
        self.state().sandboxes.keys().cloned().collect()
    }

    async fn start(&self, order: StartOrder) -> Result<NodeStarted, NodeCallError> {
        self.record(Call::Start(order.id.clone()));
        let delay = self.state().start_delay;
        tokio::time::sleep(delay).await;
        if let Some(why) = self.state().fail_starts.clone() {
            return Err(NodeCallError::NotReady(why));
        }
        if !self.tiers.contains(&order.tier) {
            return Err(NodeCallError::NoSuchTier(order.tier.to_string()));
        }
        self.state().sandboxes.insert(
            order.id.clone(),
            FakeSandbox {
                owner: order.owner,
                tier: order.tier,
                paused: false,
                env_vars: order.env_vars,
                internet: order.internet_access,
                layers: order.run.layers,
            },
        );
        Ok(NodeStarted {
            tier: order.tier,
            port: Some(40_000),
            handle: handle_of(&order.id, order.tier),
            paused: false,
        })
    }

    async fn stop(&self, id: &SandboxId) -> Result<(), NodeCallError> {
        self.record(Call::Stop(id.clone()));
        self.state().sandboxes.remove(id);
        Ok(())
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), NodeCallError> {
        self.record(Call::Pause(id.clone()));
        self.running(id)?;
        if let Some(s) = self.state().sandboxes.get_mut(id) {
            s.paused = true;
        }
        Ok(())
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), NodeCallError> {
        self.record(Call::Resume(id.clone()));
        self.running(id)?;
        if let Some(s) = self.state().sandboxes.get_mut(id) {
            s.paused = false;
        }
        Ok(())
    }

    async fn idle_sandboxes(&self, _idle_for: Duration) -> Result<Vec<SandboxId>, NodeCallError> {
        let s = self.state();
        Ok(s.idle
            .iter()
            .filter(|id| s.sandboxes.get(*id).is_some_and(|b| !b.paused))
            .cloned()
            .collect())
    }

    async fn pause_if_idle(
        &self,
        id: &SandboxId,
        _idle_for: Duration,
    ) -> Result<bool, NodeCallError> {
        if !self.state().idle.contains(id) {
            return Ok(false);
        }
        self.pause(id).await?;
        Ok(true)
    }

    async fn usage(&self, id: &SandboxId) -> Result<MeasuredUsage, NodeCallError> {
        self.running(id)?;
        Ok(MeasuredUsage {
            cpu_pct_of_one: 1.5,
            cpu_time_ms: 20,
            memory_bytes: 4 << 20,
            disk_bytes: Some(0),
            processes: 2,
        })
    }

    async fn snapshot(&self, id: &SandboxId, dir: &Path) -> Result<SnapshotTaken, NodeCallError> {
        self.record(Call::Snapshot(id.clone()));
        self.running(id)?;
        let layer = dir.join("layer");
        std::fs::create_dir_all(&layer).map_err(|e| NodeCallError::Unsupported(e.to_string()))?;
        Ok(SnapshotTaken {
            snapshot: Snapshot::Layer(layer),
            bytes: 4096,
        })
    }

    async fn set_network(
        &self,
        id: &SandboxId,
        _: &str,
        egress: Option<&warren_wire::control::EgressPolicy>,
        _: &[warren_wire::cluster::SecretBinding],
        _: bool,
    ) -> Result<(), NodeCallError> {
        self.record(Call::SetNetwork(id.clone(), egress.cloned()));
        if !self.state().sandboxes.contains_key(id) {
            return Err(NodeCallError::NotRunning);
        }
        Ok(())
    }

    async fn hand_over(&self, id: &SandboxId, to: HandOver) -> Result<(), NodeCallError> {
        self.record(Call::HandOver(id.clone()));
        let mut state = self.state();
        let s = state
            .sandboxes
            .get_mut(id)
            .ok_or(NodeCallError::NotRunning)?;
        s.owner = to.owner;
        s.internet = to.cut_internet_of.is_none() && s.internet;
        s.env_vars.extend(to.env_vars);
        Ok(())
    }

    async fn start_build(
        &self,
        spec: SandboxSpec,
        owner: &str,
    ) -> Result<AgentLink, NodeCallError> {
        self.record(Call::StartBuild(spec.id.clone()));
        self.state().sandboxes.insert(
            spec.id,
            FakeSandbox {
                owner: owner.to_owned(),
                tier: Tier::Namespaces,
                paused: false,
                env_vars: spec.env_vars,
                internet: spec.internet_access,
                layers: spec.layers,
            },
        );
        Ok(AgentLink::new(PathBuf::from("/nonexistent/agent.sock")))
    }

    async fn adopt(&self, order: AdoptOrder) -> Result<NodeStarted, NodeCallError> {
        self.record(Call::Adopt(order.id.clone()));
        let found = self.state().survivors.remove(&order.id);
        let Some(paused) = found else {
            return Err(NodeCallError::NotAdopted("its processes had ended".into()));
        };
        self.state().sandboxes.insert(
            order.id.clone(),
            FakeSandbox {
                owner: order.owner,
                tier: order.tier,
                paused,
                env_vars: BTreeMap::new(),
                internet: true,
                layers: Vec::new(),
            },
        );
        Ok(NodeStarted {
            tier: order.tier,
            port: order.port,
            handle: order.handle,
            paused,
        })
    }

    async fn remove_leftovers(&self) {
        self.record(Call::RemoveLeftovers);
    }
}
