//! Per-sandbox network namespaces.
//!
//! Every sandbox gets its own namespace, so its loopback is its own and it cannot see the host's
//! or another sandbox's. Without internet access the namespace holds only `lo`: there is no route
//! anywhere. With internet access a veth pair joins it to the host, and one nftables table masks
//! its traffic out while dropping anything aimed at the host itself, at other sandboxes, at
//! private ranges or at link-local metadata addresses.
//!
//! Namespaces, links, addresses and routes are made in-process (`netlink`); nftables rules and a
//! VM guest's tap are set up by `nft` and `ip` with argv (never a shell string), confined to this
//! module.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::egress::Load;
use tokio::process::Command;
use warren_egress::{EgressProxy, Policy};

use super::netlink::{self, Netlink, NewNamespace};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cannot run {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("no free sandbox network slots")]
    Exhausted,
    /// Its link was never made (created without internet access and without allowed
    /// destinations), and one cannot be added to a running sandbox.
    #[error("the sandbox was created without network access, so an egress policy cannot open it; create it with internet access or an allow list")]
    NoLink,
    #[error("cannot {what}: {source}")]
    Netlink {
        what: &'static str,
        source: rtnetlink::Error,
    },
    #[error("cannot create network namespace {path}: {source}")]
    Namespace {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Adds what was being done to a netlink error.
fn doing(what: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    move |source| NetworkError::Netlink { what, source }
}

/// The names of one host slot's network objects (see `slot`).
#[derive(Debug, Clone)]
pub struct NetNames {
    /// Of sandbox network namespaces: `<netns><sandbox id>`.
    pub netns: String,
    /// Of the host ends of veth pairs: `<veth><n>`.
    pub veth: String,
    /// The nftables table of the slot's rules.
    pub table: String,
}
/// A VM guest's link inside its sandbox's namespace (see `add_guest_link`).
pub const GUEST_TAP: &str = "wtap0";
pub const GUEST_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 255, 1);
pub const GUEST_ADDRESS: Ipv4Addr = Ipv4Addr::new(172, 31, 255, 2);

/// Networking of all sandboxes of one server.
pub struct Network {
    /// The /16 that sandbox links are carved from, as /30s.
    base: Ipv4Addr,
    names: NetNames,
    /// A netlink connection in the host's namespace.
    host: Netlink,
    slots: Mutex<Slots>,
    /// The host's resolv.conf, given to sandboxes with internet access.
    pub resolv_conf: Option<String>,
    /// Judges the TCP and DNS of sandboxes whose policy names domains (see `create`).
    proxy: Arc<EgressProxy>,
}

/// What was created for one sandbox; enough to remove it again.
#[derive(Debug, Clone)]
pub struct SandboxNet {
    pub netns_name: String,
    pub netns_path: PathBuf,
    slot: Option<u32>,
    /// Whether its link may carry an egress table (see `egress`) to remove with it.
    egress: bool,
}

impl SandboxNet {
    /// A namespace by name, whether or not it exists (for removal).
    pub(crate) fn named(netns_name: &str, slot: Option<u32>) -> Self {
        Self {
            netns_name: netns_name.to_owned(),
            netns_path: netlink::netns_path(netns_name),
            slot,
            egress: slot.is_some(),
        }
    }

    /// The /30 (and veth `wv<slot>`) of a sandbox with internet access.
    pub fn slot(&self) -> Option<u32> {
        self.slot
    }
}

const SLOTS: u32 = 16_384; // a /16 in /30s

impl Network {
    /// Prepares host-wide state: forwarding and the nftables table (replaced atomically).
    pub async fn init(
        base: Ipv4Addr,
        names: NetNames,
        proxy: Arc<EgressProxy>,
    ) -> Result<Self, NetworkError> {
        let NetNames {
            veth: veth_prefix,
            table,
            ..
        } = &names;
        let cidr = format!("{base}/16");
        let resolv_conf = tokio::fs::read_to_string("/etc/resolv.conf").await.ok();
        // Sandboxes resolve names through the host's own nameservers, which often sit in a private
        // range: allow DNS to exactly those before private ranges are dropped.
        let dns: Vec<String> = resolv_conf
            .as_deref()
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
            .filter(|a| !a.is_loopback())
            .map(|a| a.to_string())
            .collect();
        let dns_rule = if dns.is_empty() {
            String::new()
        } else {
            format!("iifname \"{veth_prefix}*\" ip daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 53 accept\n", dns.join(", "))
        };
        let (tcp, dns_port) = (proxy.tcp_port(), proxy.dns_port());
        // A sandbox's egress table marks the TCP and DNS of a sandbox whose policy names domains
        // or brokers secrets (`egress::PROXIED_MARK`): that traffic is redirected to the egress
        // proxy and its DNS filter, and any of it still going straight out (a flow opened before
        // the policy) is dropped in `forward`. The mark lives in the per-sandbox table, so a
        // sandbox stays under its policy across a server restart (the new proxy, until told the
        // policy again, refuses what reaches it). The proxy's ports take only redirected traffic.
        let mark = super::egress::PROXIED_MARK;
        let ruleset = format!(
            "table inet {table}\n\
             delete table inet {table}\n\
             table inet {table} {{\n\
               chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n\
                 iifname \"{veth_prefix}*\" meta mark {mark} meta l4proto tcp redirect to :{tcp}\n\
                 iifname \"{veth_prefix}*\" meta mark {mark} udp dport 53 redirect to :{dns_port}\n\
               }}\n\
               chain input {{ type filter hook input priority -10; policy accept;\n\
                 iifname \"{veth_prefix}*\" ct state established,related accept\n\
                 iifname \"{veth_prefix}*\" meta mark {mark} ct status dnat accept\n\
                 iifname \"{veth_prefix}*\" drop\n\
                 tcp dport {tcp} drop\n\
                 udp dport {dns_port} drop\n\
               }}\n\
               chain forward {{ type filter hook forward priority -10; policy accept;\n\
                 oifname \"{veth_prefix}*\" ct state established,related accept\n\
                 oifname \"{veth_prefix}*\" drop\n\
                 iifname \"{veth_prefix}*\" meta mark {mark} meta l4proto tcp drop\n\
                 iifname \"{veth_prefix}*\" meta mark {mark} th dport 53 drop\n\
                 {dns_rule}\
                 iifname \"{veth_prefix}*\" ip daddr {{ 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/3 }} drop\n\
                 iifname \"{veth_prefix}*\" meta nfproto ipv6 drop\n\
                 iifname \"{veth_prefix}*\" accept\n\
               }}\n\
               chain postrouting {{ type nat hook postrouting priority 100; policy accept;\n\
                 ip saddr {cidr} oifname != \"{veth_prefix}*\" masquerade\n\
               }}\n\
             }}\n"
        );
        run_stdin("nft", &["-f", "-"], &ruleset).await?;
        let io_err = |cmd: &str| {
            let cmd = cmd.to_owned();
            move |source| NetworkError::Spawn { cmd, source }
        };
        netlink::prepare_netns_dir().map_err(io_err("share /run/netns"))?;
        let host = Netlink::connect().map_err(io_err("open a netlink socket"))?;
        tokio::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .await
            .map_err(|source| NetworkError::Spawn {
                cmd: "enable ip_forward".into(),
                source,
            })?;
        Ok(Self {
            base,
            names,
            host,
            slots: Mutex::default(),
            resolv_conf,
            proxy,
        })
    }

    /// Creates the namespace of sandbox `id`; with `internet` also its veth link and routes. An
    /// egress policy adds its rules on the link; one that allows destinations gives a sandbox
    /// without internet access a link too, on which only those pass.
    pub async fn create(
        &self,
        id: &str,
        internet: bool,
        egress: Option<&Policy>,
    ) -> Result<SandboxNet, NetworkError> {
        let egress = egress.filter(|e| !e.is_empty());
        let linked = internet || egress.is_some_and(|e| !e.allow.is_empty() || e.has_domains());
        let name = self.netns_name(id);
        let path = netlink::netns_path(&name);
        let made =
            Netlink::add_namespace(&path)
                .await
                .map_err(|source| NetworkError::Namespace {
                    path: path.clone(),
                    source,
                })?;
        let mut net = SandboxNet {
            netns_path: path,
            netns_name: name,
            slot: None,
            egress: false,
        };
        let mut result = self.configure(&mut net, &made, linked).await;
        drop(made);
        if let (Ok(()), Some(policy)) = (&result, egress) {
            net.egress = true;
            result = self
                .load_policy(&net, id, Some(policy), internet, Load::Fresh)
                .await;
        }
        if let Err(e) = result {
            self.destroy(&net).await;
            return Err(e);
        }
        Ok(net)
    }

    /// Puts a sandbox's link under `policy` (none: only `internet` decides), replacing what it
    /// had: the link's table, whether its TCP and DNS go through the egress proxy, and the
    /// proxy's view. Connections the new policy refuses are cut (the proxy closes its own; the
    /// table and the `forward` chain drop packets of direct ones).
    pub async fn set_policy(
        &self,
        net: &SandboxNet,
        id: &str,
        policy: Option<&Policy>,
        internet: bool,
    ) -> Result<(), NetworkError> {
        self.load_policy(net, id, policy, internet, Load::Replace)
            .await
    }

    async fn load_policy(
        &self,
        net: &SandboxNet,
        id: &str,
        policy: Option<&Policy>,
        internet: bool,
        load: Load,
    ) -> Result<(), NetworkError> {
        let policy = policy.filter(|p| !p.is_empty());
        let Some(slot) = net.slot else {
            return match policy {
                None => Ok(()),
                Some(_) => Err(NetworkError::NoLink),
            };
        };
        let (_, guest) = self.addresses(slot);
        let table = self.egress_table(slot);
        match policy {
            Some(p) => {
                self.slots().with_egress.insert(slot);
                // The proxy learns the policy before the table sends it anything.
                if p.proxied() {
                    self.proxy.set(guest, id, p.clone());
                }
                let ruleset =
                    super::egress::ruleset(p, &table, &self.veth_name(slot), internet, load);
                run_stdin("nft", &["-f", "-"], &ruleset).await?;
                if !p.proxied() {
                    self.proxy.remove(guest);
                }
            }
            None => {
                self.slots().with_egress.remove(&slot);
                let _ = run("nft", &["delete", "table", "netdev", &table]).await;
                self.proxy.remove(guest);
            }
        }
        Ok(())
    }

    /// The network namespace of sandbox `id`.
    pub fn netns_name(&self, id: &str) -> String {
        format!("{}{id}", self.names.netns)
    }

    fn veth_name(&self, slot: u32) -> String {
        format!("{}{slot}", self.names.veth)
    }

    /// The `netdev` table of the egress rules on link `slot`.
    fn egress_table(&self, slot: u32) -> String {
        format!("{}_egress_{slot}", self.names.table)
    }

    /// The namespace (and link slot) of a sandbox an earlier server process created, if its
    /// namespace still exists; the slot is taken again.
    pub fn adopt(&self, netns_name: &str, slot: Option<u32>) -> Option<SandboxNet> {
        let netns_path = netlink::netns_path(netns_name);
        if !netns_name.starts_with(&self.names.netns) || !netns_path.exists() {
            return None;
        }
        if let Some(s) = slot {
            self.slots().used.insert(s);
        }
        Some(SandboxNet {
            netns_name: netns_name.to_owned(),
            netns_path,
            slot,
            // Whether it had an egress table is not recorded: removal tries.
            egress: slot.is_some(),
        })
    }

    /// Brings up `lo` and, with `linked`, the veth pair, its addresses and the default route.
    async fn configure(
        &self,
        net: &mut SandboxNet,
        ns: &NewNamespace,
        linked: bool,
    ) -> Result<(), NetworkError> {
        ns.inside
            .loopback_up()
            .await
            .map_err(doing("bring up lo"))?;
        if !linked {
            return Ok(());
        }
        let slot = self.add_veth(ns).await?;
        net.slot = Some(slot);
        let (host_ip, guest_ip) = self.addresses(slot);
        let veth = self.veth_name(slot);
        address_link(&self.host, &veth, host_ip).await?;
        address_link(&ns.inside, "eth0", guest_ip).await?;
        ns.inside
            .default_route(host_ip)
            .await
            .map_err(doing("add the default route"))
    }

    /// Takes a slot and adds its veth pair, the peer as `eth0` in namespace `ns`. A slot whose
    /// veth from an earlier sandbox is still being removed by the kernel is skipped.
    async fn add_veth(&self, ns: &NewNamespace) -> Result<u32, NetworkError> {
        let mut tries = 0;
        loop {
            let slot = self.slots().take().ok_or(NetworkError::Exhausted)?;
            let veth = self.veth_name(slot);
            match self.host.add_veth(&veth, "eth0", &ns.file).await {
                // The host's end carries no IPv6 either: with a link-local address and route
                // per sandbox, every IPv6 route lookup on the host scanned them all.
                Ok(()) => {
                    if let Err(e) = netlink::disable_ipv6(&veth) {
                        tracing::warn!(%veth, error = %e, "cannot turn IPv6 off");
                    }
                    return Ok(slot);
                }
                Err(e) => {
                    self.slots().used.remove(&slot);
                    tries += 1;
                    if netlink::errno(&e) != Some(libc::EEXIST) || tries == 8 {
                        return Err(doing("add a veth pair")(e));
                    }
                }
            }
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn addresses(&self, slot: u32) -> (Ipv4Addr, Ipv4Addr) {
        let base = u32::from(self.base) & 0xffff_0000;
        (
            Ipv4Addr::from(base + slot * 4 + 1),
            Ipv4Addr::from(base + slot * 4 + 2),
        )
    }

    /// Gives a VM guest a link into the sandbox's namespace: a tap device (`GUEST_TAP`) whose
    /// namespace side is `GUEST_GATEWAY` and whose guest side is `GUEST_ADDRESS`. Every sandbox
    /// namespace uses the same pair, so a guest's address never depends on the host (a restored
    /// snapshot works anywhere) and the host never routes to it. With internet access the
    /// namespace forwards the guest's traffic and masks it behind its own veth address, so the
    /// host's rules apply to it exactly as to a namespace-tier sandbox.
    pub async fn add_guest_link(
        &self,
        net: &SandboxNet,
        internet: bool,
    ) -> Result<(), NetworkError> {
        let ns = net.netns_name.as_str();
        let tap = format!(
            "tuntap add dev {GUEST_TAP} mode tap\n\
             addr add {GUEST_GATEWAY}/30 dev {GUEST_TAP}\n\
             link set {GUEST_TAP} up\n"
        );
        run_stdin("ip", &["-n", ns, "-batch", "-"], &tap).await?;
        if internet {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
            )
            .await?;
            run_stdin(
                "ip",
                &["netns", "exec", ns, "nft", "-f", "-"],
                "table ip warren_guest {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"eth0\" masquerade\n  }\n}\n",
            )
            .await?;
        }
        Ok(())
    }

    /// Takes a running sandbox's link away, so that it has only `lo` from now on, like a sandbox
    /// created without internet access (a warm sandbox handed to a create that wants none). The
    /// slot stays taken until the sandbox is destroyed.
    pub async fn unlink(&self, slot: u32) -> Result<(), NetworkError> {
        self.host
            .delete_link(&self.veth_name(slot))
            .await
            .map_err(doing("remove the veth"))
    }

    /// Removes the namespace, and with it the veth pair. Errors are logged, not returned:
    /// removal must go as far as it can.
    ///
    /// The veth is not deleted here: once the sandbox's processes are gone, unmounting the
    /// namespace's name ends the namespace, and the kernel then removes the pair with it, many
    /// namespaces at once. Deleting it here waited ~15 ms per sandbox for RCU grace periods while
    /// holding the lock every other sandbox's network set-up needs. Its slot can still be taken
    /// at once: slots go round (see `Slots`), and one whose old veth lingers is skipped.
    pub async fn destroy(&self, net: &SandboxNet) {
        if let Some(slot) = net.slot {
            let tabled = self.slots().with_egress.remove(&slot);
            if net.egress || tabled {
                self.proxy.remove(self.addresses(slot).1);
                let _ = run(
                    "nft",
                    &["delete", "table", "netdev", &self.egress_table(slot)],
                )
                .await;
            }
            self.slots().used.remove(&slot);
        }
        if let Err(e) = netlink::remove_namespace(&net.netns_path) {
            tracing::warn!(netns = %net.netns_name, error = %e, "cannot remove network namespace");
        }
    }

    /// Removes the nftables table; called once every sandbox is gone. The sandboxes' veths go
    /// with their namespaces, but a namespace can outlive its sandbox for a while (the kernel
    /// cleans up in batches; an idle pooled connection into it holds it), so after a short wait
    /// the ones still there are deleted: a stopped server leaves nothing behind.
    pub async fn release_host(&self) {
        for round in 0..40 {
            let left = self.host_veths().await;
            if left.is_empty() {
                break;
            }
            if round == 20 {
                for (_, name) in left {
                    let _ = self.host.delete_link(&name).await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if let Err(e) = run("nft", &["delete", "table", "inet", &self.names.table]).await {
            tracing::warn!(error = %e, "cannot remove the nftables table");
        }
    }

    /// The host ends of this server's veth pairs that exist now, with their slots.
    async fn host_veths(&self) -> Vec<(u32, String)> {
        let mut found = Vec::new();
        if let Ok(mut dir) = tokio::fs::read_dir("/sys/class/net").await {
            while let Ok(Some(e)) = dir.next_entry().await {
                let name = e.file_name().to_string_lossy().into_owned();
                let slot = name
                    .strip_prefix(self.names.veth.as_str())
                    .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
                    .and_then(|n| n.parse::<u32>().ok());
                if let Some(slot) = slot {
                    found.push((slot, name));
                }
            }
        }
        found
    }

    /// Removes namespaces and links of sandboxes from an earlier run of the server, except those
    /// of the sandboxes it adopted (`keep_netns`, taken slots).
    pub async fn remove_leftovers(&self, keep_netns: &HashSet<String>) {
        if let Ok(mut dir) = tokio::fs::read_dir(netlink::NETNS_DIR).await {
            while let Ok(Some(e)) = dir.next_entry().await {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&self.names.netns) && !keep_netns.contains(&name) {
                    let _ = netlink::remove_namespace(&e.path());
                }
            }
        }
        let kept = self.slots().used.clone();
        for (slot, name) in self.host_veths().await {
            if !kept.contains(&slot) {
                let _ = self.host.delete_link(&name).await;
            }
        }
        // Egress tables of links no sandbox holds.
        let listed = Command::new("nft")
            .args(["list", "tables", "netdev"])
            .output()
            .await
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let prefix = format!("{}_egress_", self.names.table);
        for line in listed.lines() {
            let Some(table) = line.trim().strip_prefix("table netdev ") else {
                continue;
            };
            let slot = table
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<u32>().ok());
            if slot.is_some_and(|s| !kept.contains(&s)) {
                let _ = run("nft", &["delete", "table", "netdev", table]).await;
            }
        }
    }
}

/// Gives link `name` of `netlink`'s namespace the address `address/30` and sets it up.
async fn address_link(
    netlink: &Netlink,
    name: &str,
    address: Ipv4Addr,
) -> Result<(), NetworkError> {
    let index = netlink
        .index_of(name)
        .await
        .map_err(doing("find a sandbox link"))?
        .ok_or(NetworkError::Netlink {
            what: "find a sandbox link",
            source: rtnetlink::Error::RequestFailed,
        })?;
    netlink
        .address_up(index, address, 30)
        .await
        .map_err(doing("address a sandbox link"))
}

/// Link slots in use. They are handed out round the ring, from after the last one taken, so that
/// a slot given back is taken again only after all the others.
#[derive(Default)]
struct Slots {
    used: BTreeSet<u32>,
    next: u32,
    /// Links given an egress table while running (`set_policy`): removed with the sandbox.
    with_egress: BTreeSet<u32>,
}

impl Slots {
    fn take(&mut self) -> Option<u32> {
        let slot = (self.next..SLOTS)
            .chain(0..self.next)
            .find(|s| !self.used.contains(s))?;
        self.used.insert(slot);
        self.next = (slot + 1) % SLOTS;
        Some(slot)
    }
}

/// Runs `f` on a short-lived thread that has joined the network namespace at `netns`, for
/// sockets and devices that must be opened in there. setns changes only the calling thread, and
/// this thread ends right after, so the rest of the server stays where it is.
pub fn in_netns<T: Send + 'static>(
    netns: &std::path::Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("network namespace thread panicked"))?
}

async fn run(cmd: &str, args: &[&str]) -> Result<(), NetworkError> {
    run_with_input(cmd, args, None).await
}

async fn run_stdin(cmd: &str, args: &[&str], input: &str) -> Result<(), NetworkError> {
    run_with_input(cmd, args, Some(input)).await
}

/// Runs `cmd` with argv (never a shell), feeding `input` on stdin when given; a non-zero exit
/// becomes an error carrying its stderr.
async fn run_with_input(cmd: &str, args: &[&str], input: Option<&str>) -> Result<(), NetworkError> {
    use tokio::io::AsyncWriteExt;
    let spawn_err = |source| NetworkError::Spawn {
        cmd: cmd.into(),
        source,
    };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).await.map_err(spawn_err)?;
    }
    let out = child.wait_with_output().await.map_err(spawn_err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
