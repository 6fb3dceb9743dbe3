//! What the proxy's parts share: the sandboxes under a policy (by link address), their open
//! connections (so that a policy change can cut them), the resolver, the addresses never dialled
//! and the decision events.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::events::{Decision, EgressEvent, Events};
use crate::guard::Guard;
use crate::policy::{Policy, Verdict};
use crate::resolve::Resolver;

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// One sandbox as the proxy knows it.
pub(crate) struct Guarded {
    pub id: String,
    policy: RwLock<Arc<Policy>>,
    live: Mutex<HashMap<u64, Live>>,
}

/// An open connection, kept so that a policy change can close it.
struct Live {
    name: Option<String>,
    addr: Ipv4Addr,
    cut: watch::Sender<bool>,
}

impl Guarded {
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) struct Shared {
    sandboxes: RwLock<HashMap<Ipv4Addr, Arc<Guarded>>>,
    pub resolver: Resolver,
    pub guard: Guard,
    pub events: Events,
    /// TLS interception for hosts with secrets, where the node has a CA.
    pub mitm: Option<Mitm>,
    next_conn: std::sync::atomic::AtomicU64,
}

pub(crate) struct Mitm {
    pub ca: crate::ca::NodeCa,
    pub upstream: Arc<rustls::ClientConfig>,
}

impl Shared {
    pub fn new(resolver: Resolver, guard: Guard, events: Events, mitm: Option<Mitm>) -> Self {
        Self {
            sandboxes: RwLock::default(),
            resolver,
            guard,
            events,
            mitm,
            next_conn: Default::default(),
        }
    }

    /// Puts sandbox `id`, whose link address is `addr`, under `policy`, or replaces its policy:
    /// new connections follow it at once, and open ones it no longer allows are closed.
    pub fn set(&self, addr: Ipv4Addr, id: &str, policy: Policy) {
        let policy = Arc::new(policy);
        let mut map = self.sandboxes.write().unwrap_or_else(|p| p.into_inner());
        match map.get(&addr) {
            Some(g) if g.id == id => {
                *g.policy.write().unwrap_or_else(|p| p.into_inner()) = policy.clone();
                for live in g.live().values() {
                    if !self.still_allowed(&policy, live) {
                        let _ = live.cut.send(true);
                    }
                }
            }
            _ => {
                map.insert(
                    addr,
                    Arc::new(Guarded {
                        id: id.to_owned(),
                        policy: RwLock::new(policy),
                        live: Mutex::default(),
                    }),
                );
            }
        }
    }

    /// Forgets the sandbox at `addr` and closes its connections.
    pub fn remove(&self, addr: Ipv4Addr) {
        let gone = self
            .sandboxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
        if let Some(g) = gone {
            for live in g.live().values() {
                let _ = live.cut.send(true);
            }
        }
    }

    fn still_allowed(&self, policy: &Policy, live: &Live) -> bool {
        policy.judge(live.name.as_deref(), live.addr).allowed
    }

    pub fn sandbox(&self, addr: Ipv4Addr) -> Option<Arc<Guarded>> {
        self.sandboxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .cloned()
    }

    /// Resolves `name` on the host and connects to the first address that is not refused.
    pub async fn dial(&self, name: &str, port: u16) -> Result<TcpStream, DialError> {
        let addrs = self
            .resolver
            .resolve(name)
            .await
            .map_err(|e| DialError::Resolve(e.to_string()))?;
        let mut last = DialError::Refused;
        for a in addrs {
            if self.guard.refuses(a) {
                continue;
            }
            match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect((a, port))).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => last = DialError::Connect(e.to_string()),
                Err(_) => last = DialError::Connect("timed out".into()),
            }
        }
        Err(last)
    }

    /// Registers an open connection; the receiver turns true when a policy change cuts it.
    pub fn track(
        &self,
        sandbox: &Guarded,
        name: Option<String>,
        addr: Ipv4Addr,
    ) -> (u64, watch::Receiver<bool>) {
        let id = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (cut, rx) = watch::channel(false);
        sandbox.live().insert(id, Live { name, addr, cut });
        (id, rx)
    }

    /// Records the name an open connection now talks to (HTTP: the latest request's Host).
    pub fn rename(&self, sandbox: &Guarded, id: u64, name: &str) {
        if let Some(live) = sandbox.live().get_mut(&id) {
            if live.name.as_deref() != Some(name) {
                live.name = Some(name.to_owned());
            }
        }
    }

    pub fn untrack(&self, sandbox: &Guarded, id: u64) {
        sandbox.live().remove(&id);
    }

    pub fn refused(
        &self,
        sandbox: &Guarded,
        name: Option<&str>,
        dest: SocketAddrV4,
        verdict: &Verdict,
    ) {
        tracing::debug!(sandbox = %sandbox.id, name, addr = %dest, rule = %verdict.rule, "egress refused");
        self.record(
            sandbox,
            name,
            dest,
            Decision::Refused,
            verdict.rule.clone(),
            (0, 0),
        );
    }

    /// Records what went through for the sandbox: `rule` says why or what was done, `bytes` are
    /// what it sent and received (when counted).
    pub fn allowed(
        &self,
        sandbox: &Guarded,
        name: Option<&str>,
        dest: SocketAddrV4,
        rule: String,
        bytes: (u64, u64),
    ) {
        self.record(sandbox, name, dest, Decision::Allowed, rule, bytes);
    }

    fn record(
        &self,
        sandbox: &Guarded,
        name: Option<&str>,
        dest: SocketAddrV4,
        decision: Decision,
        rule: String,
        (bytes_out, bytes_in): (u64, u64),
    ) {
        self.events.send(EgressEvent {
            sandbox: sandbox.id.clone(),
            name: name.map(str::to_owned),
            addr: *dest.ip(),
            port: dest.port(),
            decision,
            rule,
            bytes_out,
            bytes_in,
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot resolve: {0}")]
    Resolve(String),
    #[error("resolves only to private or host addresses")]
    Refused,
    #[error("cannot connect: {0}")]
    Connect(String),
}

/// Closes with a TCP reset, so that the sandbox's program sees a refusal at once instead of a
/// connection that seemed to open.
pub(crate) fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}
