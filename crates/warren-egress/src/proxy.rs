//! The transparent proxy every TCP connection of a sandbox with domain rules is redirected to
//! (an nftables `redirect` on the host end of its link, see warren-runtime's network module).
//! It finds the sandbox by the connection's source address and the destination the sandbox
//! meant by `SO_ORIGINAL_DST`, reads the TLS SNI or each HTTP request's Host, and dials the
//! allowed *name* itself, never the address the sandbox chose.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::events::{EgressEvent, Events};
use crate::guard::Guard;
use crate::policy::{Policy, Verdict};
use crate::resolve::Resolver;
use crate::sniff::{self, Opening};
use crate::state::{reset, DialError, Guarded, Mitm, Shared};

/// How long a connection may stay silent before the proxy gives up telling what it is.
const SNIFF_DEADLINE: Duration = Duration::from_secs(10);

/// What the proxy needs from its operator.
#[derive(Default, Clone)]
pub struct ProxyConfig {
    pub resolver: Resolver,
    /// Addresses refused beyond the fixed set (the sandbox links' own range).
    pub refused: Vec<ipnet::Ipv4Net>,
    /// Where the node's CA for brokering secrets is kept (none: secrets are not brokered here).
    pub ca_dir: Option<std::path::PathBuf>,
    /// CA certificates (PEM) trusted upstream besides the web's (`--egress-upstream-ca`).
    pub upstream_ca_pem: Vec<String>,
}

pub struct EgressProxy {
    shared: Arc<Shared>,
    tcp_port: u16,
    dns_port: u16,
}

impl EgressProxy {
    /// Binds the proxy's TCP listener and the DNS filter's UDP socket on ports the kernel picks
    /// (the nftables redirect names them), and starts serving. The receiver gets one event per
    /// connection decided.
    pub async fn start(
        cfg: ProxyConfig,
    ) -> std::io::Result<(Arc<Self>, mpsc::Receiver<EgressEvent>)> {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
        let dns = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
        let (events, received) = Events::new();
        let mitm = match &cfg.ca_dir {
            Some(dir) => Some(Mitm {
                ca: crate::ca::NodeCa::load_or_create(dir).map_err(std::io::Error::other)?,
                upstream: crate::ca::upstream_config(&cfg.upstream_ca_pem)
                    .map_err(std::io::Error::other)?,
            }),
            None => None,
        };
        let shared = Arc::new(Shared::new(
            cfg.resolver,
            Guard::new(&cfg.refused),
            events,
            mitm,
        ));
        let proxy = Arc::new(Self {
            shared: shared.clone(),
            tcp_port: listener.local_addr()?.port(),
            dns_port: dns.local_addr()?.port(),
        });
        tokio::spawn(proxy.clone().accept_loop(listener));
        tokio::spawn(crate::dns::serve(shared, dns));
        Ok((proxy, received))
    }

    /// The CA certificate sandboxes with secrets must trust (PEM).
    pub fn ca_pem(&self) -> Option<&str> {
        self.shared.mitm.as_ref().map(|m| m.ca.cert_pem.as_str())
    }

    pub fn counters(&self) -> &crate::Counters {
        &self.shared.events.counters
    }

    /// Puts sandbox `id`, whose link address is `addr`, under `policy`, or replaces its policy:
    /// new connections follow it at once, and open ones it no longer allows are closed.
    pub fn set(&self, addr: Ipv4Addr, id: &str, policy: Policy) {
        self.shared.set(addr, id, policy)
    }

    /// Forgets the sandbox at `addr` and closes its connections.
    pub fn remove(&self, addr: Ipv4Addr) {
        self.shared.remove(addr)
    }

    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    pub fn dns_port(&self) -> u16 {
        self.dns_port
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, SocketAddr::V4(peer))) => {
                    let proxy = self.clone();
                    tokio::spawn(async move { proxy.serve(stream, *peer.ip()).await });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "egress proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// One redirected connection, from its opening to its end.
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: Ipv4Addr) {
        // Only sandboxes under a policy reach this port (nftables); anything else is dropped.
        let Some(sandbox) = self.shared.sandbox(peer) else {
            return reset(stream);
        };
        let Some(dest) = original_destination(&stream) else {
            return reset(stream);
        };
        let policy = sandbox.policy();
        // An allowed address admits the connection whatever it names (as in E2B), when it is
        // not one the host never dials.
        if let Some(net) = policy.allowed_net(*dest.ip()) {
            if !self.shared.guard.refuses(*dest.ip()) {
                let verdict = Verdict {
                    allowed: true,
                    rule: format!("allowOut {net}"),
                };
                return self
                    .splice_to_address(&sandbox, stream, dest, verdict)
                    .await;
            }
        }
        match sniff::opening(&stream, SNIFF_DEADLINE).await {
            Opening::Tls { sni: Some(name) } => {
                let verdict = policy.judge(Some(&name), *dest.ip());
                if !verdict.allowed {
                    self.shared.refused(&sandbox, Some(&name), dest, &verdict);
                    return reset(stream);
                }
                if policy.intercepts(&name) && self.shared.mitm.is_some() {
                    return crate::mitm::serve(self.shared.clone(), sandbox, stream, name, dest)
                        .await;
                }
                let upstream = self.shared.dial(&name, dest.port()).await;
                self.splice(&sandbox, stream, upstream, Some(name), dest, verdict)
                    .await
            }
            Opening::Http => crate::http::serve(self.shared.clone(), sandbox, stream, dest).await,
            Opening::Tls { sni: None } | Opening::Other => {
                // No name: judged by address alone. Allowed addresses were let through above;
                // without domain rules everything else not denied is too (a sandbox proxied for
                // its secrets only), except addresses the host never dials.
                let verdict = policy.judge(None, *dest.ip());
                if verdict.allowed && !self.shared.guard.refuses(*dest.ip()) {
                    return self
                        .splice_to_address(&sandbox, stream, dest, verdict)
                        .await;
                }
                let verdict = if verdict.allowed {
                    Verdict {
                        allowed: false,
                        rule: "a host or private address".into(),
                    }
                } else {
                    verdict
                };
                self.shared.refused(&sandbox, None, dest, &verdict);
                reset(stream)
            }
        }
    }

    /// A connection judged by its address alone, spliced to that address.
    async fn splice_to_address(
        &self,
        sandbox: &Arc<Guarded>,
        stream: TcpStream,
        dest: SocketAddrV4,
        verdict: Verdict,
    ) {
        let upstream = TcpStream::connect(dest)
            .await
            .map_err(|e| DialError::Connect(e.to_string()));
        self.splice(sandbox, stream, upstream, None, dest, verdict)
            .await
    }

    /// Copies both ways until either side ends or the policy cuts the connection.
    async fn splice(
        &self,
        sandbox: &Arc<Guarded>,
        mut stream: TcpStream,
        upstream: Result<TcpStream, DialError>,
        name: Option<String>,
        dest: SocketAddrV4,
        verdict: Verdict,
    ) {
        let mut upstream = match upstream {
            Ok(u) => u,
            Err(e) => {
                let verdict = Verdict {
                    allowed: false,
                    rule: e.to_string(),
                };
                self.shared
                    .refused(sandbox, name.as_deref(), dest, &verdict);
                return reset(stream);
            }
        };
        let (conn, mut cut) = self.shared.track(sandbox, name.clone(), *dest.ip());
        let _ = stream.set_nodelay(true);
        let copied = tokio::select! {
            r = tokio::io::copy_bidirectional(&mut stream, &mut upstream) => r.unwrap_or((0, 0)),
            _ = cut.wait_for(|c| *c) => {
                self.shared.untrack(sandbox, conn);
                let verdict = Verdict {
                    allowed: false,
                    rule: "a policy change (open connection cut)".into(),
                };
                self.shared.refused(sandbox, name.as_deref(), dest, &verdict);
                return reset(stream);
            }
        };
        self.shared.untrack(sandbox, conn);
        self.shared
            .allowed(sandbox, name.as_deref(), dest, verdict.rule, copied);
    }
}

/// The address the sandbox connected to before the redirect.
fn original_destination(stream: &TcpStream) -> Option<SocketAddrV4> {
    let sin = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::OriginalDst).ok()?;
    Some(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    ))
}
