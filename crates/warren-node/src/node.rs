//! `Node`: the typed commands the control plane gives the node (start, destroy, pause, resume,
//! run a command, usage, list), and the events it reports back (a sandbox ended on its own).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use warren_core::{SandboxId, Tier};
use warren_runtime::host::Host;
use warren_runtime::{
    AnyDriver, IsolationDriver, NotAdopted, SandboxHandle, SandboxSpec, SandboxUsage,
};
use warren_wire::agent::{CommandRequest, CommandResponse};
use warren_wire::cluster::MeasuredUsage;

use crate::activity::Activity;
use crate::agent_link::AgentLink;
use crate::error::{NoRoom, NodeError};
use crate::gate::Gate;
use crate::proxy::Proxy;
use crate::readiness::{NotReady, Readiness};
use crate::registry::{Entry, Registry, RunState, Target};

/// How clients reach sandboxes on this node.
#[derive(Debug, Clone)]
pub enum Listeners {
    /// Each sandbox gets a listener of its own on this address.
    Local { bind: IpAddr },
    /// Sandboxes are routed by Host header on the control plane's listener (`Proxy::route_by_host`).
    Wildcard,
}

pub struct NodeConfig {
    /// The machine's host layer, which every tier stands on.
    pub host: Arc<Host>,
    /// Every tier this node runs, the default first.
    pub tiers: Vec<AnyDriver>,
    pub listeners: Listeners,
    /// HTTPS for the sandbox listeners.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Largest request body forwarded to a sandbox.
    pub max_body_bytes: u64,
}

/// What to start.
pub struct SandboxStart {
    pub spec: SandboxSpec,
    /// None for the node's default.
    pub tier: Option<Tier>,
    /// The tenant the sandbox belongs to.
    pub owner: String,
    /// Give the sandbox a listener of its own (local mode). Build sandboxes have none: only the
    /// control plane talks to them.
    pub listen: bool,
}

/// A sandbox an earlier server process started, to take over.
pub struct Adopt {
    pub id: SandboxId,
    /// The tier that runs it.
    pub tier: Tier,
    /// What its start returned (`Started::handle`).
    pub handle: SandboxHandle,
    pub owner: String,
    /// It was recorded paused (the driver reports how it really is).
    pub paused: bool,
    /// Its listener's port before, kept if it is free.
    pub port: Option<u16>,
}

/// A started (or adopted) sandbox.
#[derive(Debug, Clone)]
pub struct Started {
    pub tier: Tier,
    /// Its listener's port (local mode).
    pub port: Option<u16>,
    /// What a later server process needs to take it over; the control plane keeps it.
    pub handle: SandboxHandle,
    /// Paused (an adopted sandbox, as found).
    pub paused: bool,
}

/// What the node reports to the control plane.
#[derive(Debug)]
pub enum NodeEvent {
    /// The sandbox's init ended without being asked to (out of memory, `kill 1`, a crashed VM).
    Exited { id: SandboxId, code: i32 },
}

/// How many sandbox starts run at once. A start is CPU work (namespaces, mounts, the agent's
/// start); a hundred at once share the CPU fairly and all finish late, each creating client
/// waiting for the slowest. Taken a few at a time they finish in order, as fast as one alone,
/// and the machine does the same work in the same time.
fn concurrent_starts() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// Capacity of the event channel; a sandbox's exit waits for room rather than being lost.
const EVENT_DEPTH: usize = 256;

pub struct Node {
    host: Arc<Host>,
    tiers: Vec<AnyDriver>,
    /// Agent bundles that adopted sandboxes still run (kept on disk).
    bundles_in_use: Mutex<HashSet<PathBuf>>,
    registry: Arc<Registry>,
    proxy: Proxy,
    listeners: Listeners,
    events: mpsc::Sender<NodeEvent>,
    meter: crate::usage::UsageMeter,
    /// Sandbox starts under way at once, per tier (see `concurrent_starts`): a tier whose starts
    /// are slow (an emulated VM's boot) never holds up another's.
    starts: std::collections::HashMap<Tier, tokio::sync::Semaphore>,
}

impl Node {
    /// The node and the receiving end of its events. `tiers` must not be empty.
    pub fn new(cfg: NodeConfig, gate: Arc<dyn Gate>) -> (Arc<Self>, mpsc::Receiver<NodeEvent>) {
        let registry = Arc::new(Registry::default());
        let proxy = Proxy::new(registry.clone(), gate.clone(), cfg.max_body_bytes, cfg.tls);
        let (events, received) = mpsc::channel(EVENT_DEPTH);
        if let Some(egress) = cfg.host.take_egress_events() {
            tokio::spawn(crate::egress_audit::forward(
                egress,
                registry.clone(),
                gate.clone(),
            ));
        }
        let node = Arc::new(Self {
            host: cfg.host,
            bundles_in_use: Mutex::new(HashSet::new()),
            registry,
            proxy,
            listeners: cfg.listeners,
            events,
            meter: crate::usage::UsageMeter::default(),
            starts: cfg
                .tiers
                .iter()
                .map(|d| (d.tier(), tokio::sync::Semaphore::new(concurrent_starts())))
                .collect(),
            tiers: cfg.tiers,
        });
        (node, received)
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The tiers this node runs, the default first.
    pub fn tiers(&self) -> Vec<Tier> {
        self.tiers.iter().map(IsolationDriver::tier).collect()
    }

    fn driver(&self, tier: Option<Tier>) -> Result<AnyDriver, NodeError> {
        let found = match tier {
            None => self.tiers.first(),
            Some(t) => self.tiers.iter().find(|d| d.tier() == t),
        };
        found.cloned().ok_or_else(|| NodeError::NoSuchTier {
            wanted: tier.map_or_else(String::new, |t| t.to_string()),
            available: crate::tier_list(&self.tiers()),
        })
    }

    /// Whether this machine can take another sandbox: its available memory must stay above a
    /// reserve (5 % of its memory, at least 512 MiB) for the host and the sandboxes already
    /// running. Quotas are promises of the control plane; this is what the machine really has.
    pub fn has_room(&self) -> Result<(), NoRoom> {
        const MIB: u64 = 1024 * 1024;
        let Some((total, available)) = warren_runtime::host::memory() else {
            return Ok(());
        };
        let reserve = (total / 20).max(512 * MIB);
        if available < reserve {
            return Err(NoRoom {
                available_mib: available / MIB,
                reserve_mib: reserve / MIB,
            });
        }
        Ok(())
    }

    /// Starts a sandbox and returns once its agent answers (and, in local mode, its listener is
    /// open). A VM guest is told the host's time first.
    pub async fn start(&self, mut req: SandboxStart) -> Result<Started, NodeError> {
        let driver = self.driver(req.tier)?;
        // Semaphores are never closed: `ok()` only satisfies the type.
        let turn = self.starts.get(&driver.tier());
        let _turn = match turn {
            Some(s) => s.acquire().await.ok(),
            None => None,
        };
        let id = req.spec.id.clone();
        // With TLS terminated for some host (brokered secrets, header rules), TLS clients must
        // trust the CA the egress proxy presents.
        let ca = match &req.spec.egress {
            Some(p) if p.intercepts_any() => self.host.egress_ca_pem().map(str::to_owned),
            _ => None,
        };
        if ca.is_some() {
            req.spec.env_vars.extend(crate::egress::trust_env());
        }
        let started = driver.start(&req.spec).await?;
        let agent = AgentLink::new(started.agent_socket);
        if let (Some(pem), None) = (&ca, &req.spec.saved_state) {
            if let Err(e) = crate::egress::install_ca(&agent, pem).await {
                drop(started.exited);
                let _ = driver.destroy(&id).await;
                return Err(NodeError::Agent(e));
            }
        }
        if driver.has_own_clock() {
            set_clock(&id, &agent).await;
        }
        if req.spec.saved_state.is_some() {
            // Resumed from its source's memory: the agent holds the source's id and environment.
            let renamed = match agent.set_identity(id.as_str()).await {
                Ok(()) => agent.merge_env(&req.spec.env_vars).await,
                Err(e) => Err(e),
            };
            if let Err(e) = renamed {
                drop(started.exited);
                let _ = driver.destroy(&id).await;
                return Err(NodeError::Agent(e));
            }
        }
        let target = Target {
            agent,
            netns: netns_path(&started.handle),
            port_host: started.port_host,
            owner: req.owner,
            state: RunState::Running,
            activity: Activity::new(),
            protocol_unasked: false,
        };
        self.register(&id, &driver, target, started.exited);
        let port = match (&self.listeners, req.listen) {
            (Listeners::Local { bind }, true) => match self.open_listener(&id, *bind, 0).await {
                Ok(port) => Some(port),
                Err(e) => {
                    let _ = self.destroy(&id).await;
                    return Err(e);
                }
            },
            _ => None,
        };
        Ok(Started {
            tier: driver.tier(),
            port,
            handle: started.handle,
            paused: false,
        })
    }

    /// Starts a sandbox and waits until its template says it is ready (`Readiness`); a sandbox
    /// that does not become ready is removed. A copy resumed with its source's memory is ready
    /// as it resumes: its source ran the start command already.
    pub async fn start_ready(
        &self,
        req: SandboxStart,
        readiness: &Readiness,
    ) -> Result<Started, NodeError> {
        let resumed = req.spec.saved_state.is_some();
        let id = req.spec.id.clone();
        let started = self.start(req).await?;
        if resumed {
            return Ok(started);
        }
        let ready = match self.agent(&id) {
            Some(agent) => readiness.wait(&agent).await,
            None => Err(NotReady::Ended),
        };
        if let Err(why) = ready {
            tracing::warn!(sandbox = %id, error = %why, "template start/ready check failed");
            if let Err(e) = self.destroy(&id).await {
                tracing::error!(sandbox = %id, error = %e, "sandbox teardown incomplete");
            }
            return Err(why.into());
        }
        Ok(started)
    }

    /// Takes over a sandbox an earlier server process started: its processes kept running while
    /// no server was there. It answers at its old port if that is still free. When it did not
    /// survive, what is left of it is removed and the error says why.
    pub async fn adopt(&self, req: Adopt) -> Result<Started, NotAdopted> {
        let driver = self
            .driver(Some(req.tier))
            .map_err(|e| NotAdopted(e.to_string()))?;
        let adopted = driver.adopt(&req.id, &req.handle, req.paused).await?;
        let agent = AgentLink::new(adopted.agent_socket);
        // An agent of another release may speak a protocol this node does not. A frozen one
        // cannot answer: it is asked when it resumes (`resume`).
        if !adopted.paused {
            if let Some(why) = unsupported_protocol_of(&agent).await {
                let _ = driver.destroy(&req.id).await;
                return Err(NotAdopted(why));
            }
        }
        self.bundles_in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.handle.agent_bundle.clone());
        let target = Target {
            agent,
            netns: netns_path(&req.handle),
            port_host: adopted.port_host,
            owner: req.owner,
            state: if adopted.paused {
                RunState::Paused
            } else {
                RunState::Running
            },
            activity: Activity::new(),
            protocol_unasked: adopted.paused,
        };
        let (id, paused) = (req.id, adopted.paused);
        self.register(&id, &driver, target, adopted.exited);
        let port = match (&self.listeners, req.port) {
            (Listeners::Local { bind }, Some(old)) => {
                match self.open_listener(&id, *bind, old).await {
                    Ok(port) => Some(port),
                    Err(e) => {
                        tracing::warn!(sandbox = %id, port = old, error = %e, "the sandbox's port is taken: it gets a new public_host");
                        self.open_listener(&id, *bind, 0).await.ok()
                    }
                }
            }
            (Listeners::Local { bind }, None) => self.open_listener(&id, *bind, 0).await.ok(),
            (Listeners::Wildcard, _) => None,
        };
        Ok(Started {
            tier: driver.tier(),
            port,
            handle: req.handle,
            paused,
        })
    }

    fn register(
        &self,
        id: &SandboxId,
        driver: &AnyDriver,
        target: Target,
        exited: oneshot::Receiver<i32>,
    ) {
        self.registry.insert(
            id.clone(),
            Entry {
                driver: driver.clone(),
                target,
                listener: None,
                port: None,
            },
        );
        self.watch_exit(id.clone(), exited);
    }

    /// Removes everything of sandboxes an earlier server process left on this machine that is
    /// not one of this node's sandboxes now (call after adopting): processes, cgroups,
    /// namespaces, links, directories, and agent bundles nothing runs any more.
    pub async fn remove_leftovers(&self) {
        let keep: HashSet<SandboxId> = self.list().into_iter().collect();
        self.host.remove_leftovers(&keep).await;
        for d in &self.tiers {
            d.remove_leftovers(&keep).await;
        }
        let current = self.host.agent_bundle().to_path_buf();
        let mut in_use: Vec<PathBuf> = self
            .bundles_in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        in_use.push(current.clone());
        if let Some(root) = current.parent() {
            warren_runtime::agent_bundle::remove_unused(root, &in_use);
        }
    }

    /// Undoes host-wide set-up (the firewall table) once no sandbox is left on this machine.
    pub async fn release_host(&self) {
        self.host.release().await;
    }

    fn watch_exit(&self, id: SandboxId, exited: oneshot::Receiver<i32>) {
        let registry = self.registry.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let code = exited.await.unwrap_or(-1);
            // Gone from the registry: it was destroyed on purpose.
            if registry.driver(&id).is_some() {
                let _ = events.send(NodeEvent::Exited { id, code }).await;
            }
        });
    }

    async fn open_listener(
        &self,
        id: &SandboxId,
        bind: IpAddr,
        port: u16,
    ) -> Result<u16, NodeError> {
        let listener = tokio::net::TcpListener::bind((bind, port))
            .await
            .map_err(NodeError::Listener)?;
        let port = listener.local_addr().map_err(NodeError::Listener)?.port();
        let handle = self.proxy.serve_listener(id.clone(), listener);
        match self.registry.lock().get_mut(id) {
            Some(e) => {
                e.listener = Some(handle);
                e.port = Some(port);
            }
            None => handle.abort(),
        }
        Ok(port)
    }

    /// Stops a sandbox and removes every trace of it on this machine. A sandbox that is not
    /// running here is already gone: nothing to do.
    pub async fn destroy(&self, id: &SandboxId) -> Result<(), NodeError> {
        let Some(entry) = self.registry.remove(id) else {
            return Ok(());
        };
        entry.driver.destroy(id).await?;
        Ok(())
    }

    pub async fn pause(&self, id: &SandboxId) -> Result<(), NodeError> {
        let driver = self
            .registry
            .driver(id)
            .ok_or_else(|| NodeError::NotRunning(id.clone()))?;
        driver.pause(id).await?;
        self.registry.set_state(id, RunState::Paused);
        Ok(())
    }

    pub async fn resume(&self, id: &SandboxId) -> Result<(), NodeError> {
        let driver = self
            .registry
            .driver(id)
            .ok_or_else(|| NodeError::NotRunning(id.clone()))?;
        driver.resume(id).await?;
        if let Some(t) = self.registry.target(id).filter(|t| t.protocol_unasked) {
            // Frozen by another release and not asked at the take-over: one this node cannot
            // speak to is frozen again, with its memory and files, for a release that can.
            if let Some(why) = unsupported_protocol_of(&t.agent).await {
                driver.pause(id).await?;
                return Err(NodeError::AgentProtocol(why));
            }
            self.registry.set_protocol_asked(id);
        }
        if driver.has_own_clock() {
            if let Some(agent) = self.agent(id) {
                set_clock(id, &agent).await;
            }
        }
        self.registry.set_state(id, RunState::Running);
        if let Some(t) = self.registry.target(id) {
            t.activity.touch(); // its idle time starts again
        }
        Ok(())
    }

    /// Pauses a sandbox if it is still unused for `idle_for`; a request that arrived while it
    /// was being paused resumes it at once (false). The proxy counts a request as open before it
    /// reads the sandbox's state, so a request either sees it paused (and asks the Gate to
    /// resume it) or is seen here.
    pub async fn pause_if_idle(
        &self,
        id: &SandboxId,
        idle_for: std::time::Duration,
    ) -> Result<bool, NodeError> {
        let target = self
            .registry
            .target(id)
            .ok_or_else(|| NodeError::NotRunning(id.clone()))?;
        if target.activity.idle_for() < idle_for {
            return Ok(false);
        }
        self.pause(id).await?;
        if target.activity.idle_for() < idle_for {
            self.resume(id).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// The running sandboxes unused for at least `idle_for` (see `activity.rs`); each one's CPU
    /// time is read on the way, so call this at least every `idle_for` to count CPU use.
    pub fn idle_sandboxes(&self, idle_for: std::time::Duration) -> Vec<SandboxId> {
        let running: Vec<(SandboxId, AnyDriver, Arc<Activity>)> = self
            .registry
            .lock()
            .iter()
            .filter(|(_, e)| e.target.state == RunState::Running)
            .map(|(id, e)| (id.clone(), e.driver.clone(), e.target.activity.clone()))
            .collect();
        running
            .into_iter()
            .filter_map(|(id, driver, activity)| {
                if let Some(cpu_ns) = driver.cpu_ns(&id) {
                    activity.saw_cpu(cpu_ns);
                }
                (activity.idle_for() >= idle_for).then_some(id)
            })
            .collect()
    }

    /// Gives a live sandbox to another tenant (a warm sandbox taken by a create): rate limits
    /// and audit records follow the owner.
    pub fn set_owner(&self, id: &SandboxId, owner: &str) {
        if let Some(e) = self.registry.lock().get_mut(id) {
            e.target.owner = owner.to_owned();
        }
    }

    /// Replaces a running sandbox's egress policy (none: `internet` alone decides). New
    /// connections follow it at once; open ones it refuses are cut.
    pub async fn set_egress(
        &self,
        id: &SandboxId,
        handle: &SandboxHandle,
        policy: Option<&warren_runtime::host::egress::Policy>,
        internet: bool,
    ) -> Result<(), NodeError> {
        if self.registry.driver(id).is_none() {
            return Err(NodeError::NotRunning(id.clone()));
        }
        // TLS terminated for a host from now on: the sandbox's system bundle must hold the CA,
        // and processes started from now on are pointed at it as a create's would be (clients
        // already running with a bundle of their own do not see it).
        if let (Some(pem), Some(agent)) = (
            self.host
                .egress_ca_pem()
                .filter(|_| policy.is_some_and(|p| p.intercepts_any())),
            self.agent(id),
        ) {
            crate::egress::install_ca(&agent, pem)
                .await
                .map_err(NodeError::Agent)?;
            agent
                .merge_env(&crate::egress::trust_env())
                .await
                .map_err(NodeError::Agent)?;
        }
        self.host
            .set_egress(id, &handle.host, policy, internet)
            .await
            .map_err(|e| match e {
                warren_runtime::host::HostError::Network(n) => NodeError::Egress(n.to_string()),
                e => NodeError::Driver(e.into()),
            })
    }

    /// Connections the egress proxy allowed and refused so far.
    pub fn egress_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.host.egress_counters();
        (c.allowed.load(Relaxed), c.refused.load(Relaxed))
    }

    /// Takes a running sandbox off the network: it keeps only its loopback.
    pub async fn cut_internet(&self, handle: &SandboxHandle) -> Result<(), NodeError> {
        self.host
            .cut_link(&handle.host)
            .await
            .map_err(|e| NodeError::Driver(e.into()))
    }

    /// Copies the sandbox's file system changes into `dest` as a layer (see
    /// `IsolationDriver::snapshot`). Returns the bytes copied.
    pub async fn snapshot(
        &self,
        id: &SandboxId,
        dir: &std::path::Path,
    ) -> Result<warren_runtime::SnapshotTaken, NodeError> {
        let driver = self
            .registry
            .driver(id)
            .ok_or_else(|| NodeError::NotRunning(id.clone()))?;
        Ok(driver.snapshot(id, dir).await?)
    }

    /// The link to a live sandbox's agent.
    pub fn agent(&self, id: &SandboxId) -> Option<AgentLink> {
        self.registry.target(id).map(|t| t.agent)
    }

    /// Runs a command to completion in the sandbox, for the control plane itself.
    pub async fn run_command(
        &self,
        id: &SandboxId,
        req: &CommandRequest,
    ) -> Result<CommandResponse, NodeError> {
        let agent = self
            .agent(id)
            .ok_or_else(|| NodeError::NotRunning(id.clone()))?;
        Ok(agent.run_command(req).await?)
    }

    /// Resource usage, read from outside the sandbox.
    pub fn usage(&self, id: &SandboxId) -> Option<SandboxUsage> {
        self.registry.driver(id)?.usage(id)
    }

    /// Resource usage with the CPU rate of the last moments (the first question about a
    /// sandbox waits a quarter of a second for a second reading).
    pub async fn measured_usage(&self, id: &SandboxId) -> Option<MeasuredUsage> {
        self.meter.measure(id, || self.usage(id)).await
    }

    /// The sandbox's listener port (local mode).
    pub fn port(&self, id: &SandboxId) -> Option<u16> {
        self.registry.lock().get(id).and_then(|e| e.port)
    }

    pub fn state(&self, id: &SandboxId) -> Option<RunState> {
        self.registry.target(id).map(|t| t.state)
    }

    /// Every sandbox running (or paused) on this node.
    pub fn list(&self) -> Vec<SandboxId> {
        self.registry.lock().keys().cloned().collect()
    }
}

/// Why this node cannot speak to `agent`, if it cannot (an agent that does not answer within a
/// few seconds is given the benefit of the doubt: a busy sandbox is not an incompatible one).
async fn unsupported_protocol_of(agent: &AgentLink) -> Option<String> {
    let asked = tokio::time::timeout(std::time::Duration::from_secs(5), agent.protocol()).await;
    match asked {
        Ok(Ok(p)) => warren_wire::agent::unsupported_agent_protocol(p),
        _ => None,
    }
}

/// A sandbox's network namespace, where its ports are dialled from.
fn netns_path(handle: &SandboxHandle) -> PathBuf {
    PathBuf::from("/run/netns").join(&handle.host.netns)
}

/// Tells the agent of a sandbox with a clock of its own the host's time. A failure is logged, not
/// returned: the sandbox runs, with its clock off by up to a second (or by a pause).
async fn set_clock(id: &SandboxId, agent: &AgentLink) {
    if let Err(e) = agent.set_clock(SystemTime::now()).await {
        tracing::warn!(sandbox = %id, error = %e, "could not set the sandbox's clock");
    }
}
