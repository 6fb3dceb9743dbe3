//! `warren node` (the daemon that runs a machine's sandboxes for a cluster), `warren node drain`
//! / `activate`, and `warren nodes list`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use warren_node::daemon::{DaemonConfig, NodeTls};
use warren_node::machine::MachineConfig;
use warren_wire::cluster::{NodeAnswer, NodeList};

use crate::client::{Client, ClientOpts, NO_BODY};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    action: Option<NodeAction>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(clap::Subcommand, Debug)]
enum NodeAction {
    /// Stop placing new sandboxes on a node (its sandboxes keep running).
    Drain {
        id: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Place sandboxes on a drained node again.
    Activate {
        id: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(clap::Args, Debug)]
struct DaemonArgs {
    #[command(flatten)]
    shared_volumes: super::shared_volumes::SharedVolumeArgs,
    /// The control plane's URL (or its load balancer's).
    #[arg(long, env = "WARREN_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// PEM of the CA of the control plane's certificate, if not a public one.
    #[arg(long)]
    control_plane_ca: Option<PathBuf>,
    /// Address of the node's API; its sandboxes listen on the same host.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Host name clients reach this node's sandboxes at [default: --listen's address].
    #[arg(long)]
    public_host: Option<String>,
    /// The node's name in listings [default: host name and address].
    #[arg(long)]
    name: Option<String>,
    /// A label, key=value (repeatable); `region` places sandboxes that ask for one.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Where the node keeps its id, its sandboxes' records and state.
    #[arg(long, env = "WARREN_DATA_DIR", default_value = "/var/lib/warren-node")]
    data_dir: PathBuf,
    /// Template root file systems and layers (shared by every Warren on the machine).
    #[arg(long, env = "WARREN_CACHE_DIR", default_value = super::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// The /16 sandbox links are numbered from (each Warren on a machine takes the next one).
    #[arg(long, default_value = "10.213.0.0")]
    network: Ipv4Addr,
    /// Debian mirror for preparing built-in templates.
    #[arg(long)]
    debian_mirror: Option<String>,
    /// Most sandboxes this node runs at once.
    #[arg(long, default_value_t = 1000)]
    max_sandboxes: u32,
    /// Largest request body sent to a sandbox (file uploads and writes), in MB.
    #[arg(long, default_value_t = 1024)]
    max_upload_mb: u64,
    /// Pin NAME to IPv4 address IP for the egress proxy and the sandboxes' DNS filter, as curl's
    /// `--resolve` (repeatable; for tests and split-horizon names). Without it, the host's
    /// resolver answers.
    #[arg(long = "egress-resolve", value_name = "NAME=IP")]
    egress_resolve: Vec<String>,
    /// Trust this CA certificate (PEM file) for upstream servers when the egress proxy makes
    /// TLS connections for brokered secrets, besides the web's roots (repeatable).
    #[arg(long = "egress-upstream-ca", value_name = "FILE")]
    egress_upstream_ca: Vec<PathBuf>,
    /// Do not offer the gVisor tier even if runsc is installed.
    #[arg(long)]
    no_gvisor: bool,
    #[arg(long, default_value = "runsc")]
    runsc: PathBuf,
    /// Do not offer the microVM tier even if QEMU and a guest kernel are installed.
    #[arg(long)]
    no_microvm: bool,
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Unpacked Debian kernel package for microVM guests [default: <cache-dir>/guest-kernel].
    #[arg(long)]
    guest_kernel_dir: Option<PathBuf>,
    /// Tier of sandboxes that do not ask for one.
    #[arg(long, default_value = "namespaces")]
    isolation: warren_core::Tier,
    /// Serve HTTPS (node API and sandboxes) with a local CA generated in <data-dir>/tls; control
    /// planes trust it for this node, clients trust its ca.pem. Automatic on a non-loopback
    /// --listen without --tls-cert or --allow-plain-http.
    #[arg(long, conflicts_with = "tls_cert")]
    tls: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Wildcard mode (as `warren serve --wildcard-domain`): sandboxes are reached as
    /// `{port}-{id}.<domain>` through the control planes, which relay to this node.
    #[arg(long)]
    wildcard_domain: Option<String>,
    /// Serve plain HTTP on a non-loopback address (a private network, or a mesh that encrypts).
    #[arg(long)]
    allow_plain_http: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum NodesCommand {
    /// Every node that joined: state, labels, capacity and use.
    List {
        #[command(flatten)]
        opts: ClientOpts,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
}

fn parse_labels(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--label {p:?}: expected key=value"))
        })
        .collect()
}

pub async fn run(a: NodeArgs) -> anyhow::Result<ExitCode> {
    match a.action {
        Some(NodeAction::Drain { id, opts }) => set_state(&opts, &id, "drain").await,
        Some(NodeAction::Activate { id, opts }) => set_state(&opts, &id, "activate").await,
        None => daemon(a.daemon).await,
    }
}

async fn daemon(a: DaemonArgs) -> anyhow::Result<ExitCode> {
    super::serve::init_logging(a.log_json);
    super::serve::raise_open_files_limit();
    let control_plane = a
        .control_plane
        .context("--control-plane URL (or WARREN_CONTROL_PLANE) is required")?;
    let exposed = !a.listen.ip().is_loopback();
    let source = match (a.tls_cert.clone(), a.tls_key.clone()) {
        (Some(cert), Some(key)) => Some(warren_api::tls::TlsSource::Files { cert, key }),
        _ if a.tls || (exposed && !a.allow_plain_http) => {
            let mut names = vec!["localhost".to_owned(), a.listen.ip().to_string()];
            names.extend(a.public_host.clone());
            Some(warren_api::tls::TlsSource::Generated { names })
        }
        _ => None,
    };
    let tls = match source {
        None => None,
        Some(source) => {
            std::fs::create_dir_all(&a.data_dir)
                .with_context(|| format!("create {}", a.data_dir.display()))?;
            let (acceptor, ca) =
                warren_api::tls::acceptor(&source, &a.data_dir).context("set up TLS")?;
            let ca_pem = match &ca {
                Some(path) => {
                    eprintln!(
                        "warren node: HTTPS certificate authority: {}",
                        path.display()
                    );
                    Some(
                        std::fs::read_to_string(path)
                            .with_context(|| format!("read {}", path.display()))?,
                    )
                }
                None => None,
            };
            Some(NodeTls { acceptor, ca_pem })
        }
    };
    let join_secret = std::env::var("WARREN_NODE_JOIN_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .context("WARREN_NODE_JOIN_SECRET must hold the cluster's join secret")?;
    let shared = a.shared_volumes.attach(&a.data_dir)?;
    let cfg = DaemonConfig {
        version: warren_api::long_version().to_owned(),
        control_plane,
        control_plane_ca: a.control_plane_ca,
        listen: a.listen,
        public_host: a.public_host,
        name: a.name,
        labels: parse_labels(&a.labels)?,
        join_secret,
        machine: MachineConfig {
            data_dir: a.data_dir,
            cache_dir: a.cache_dir.clone(),
            network_base: a.network,
            gvisor: !a.no_gvisor,
            runsc: a.runsc,
            microvm: !a.no_microvm,
            qemu: a.qemu,
            guest_kernel_dir: a
                .guest_kernel_dir
                .unwrap_or_else(|| a.cache_dir.join("guest-kernel")),
            default_isolation: a.isolation,
            egress_upstream_ca: super::read_pems(&a.egress_upstream_ca)?,
            egress_resolver: warren_egress::Resolver::with_pins(&a.egress_resolve)
                .context("--egress-resolve")?,
        },
        debian_mirror: a.debian_mirror,
        max_body_bytes: a.max_upload_mb * 1024 * 1024,
        max_sandboxes: a.max_sandboxes,
        tls,
        wildcard_domain: a.wildcard_domain,
        shared_volumes: shared.as_ref().map(|s| s.view()),
    };
    let ran = warren_node::daemon::run(cfg, warren_api::shutdown_signal()).await;
    // Sandboxes that run on keep their own mounts of the view (and through it, the store).
    if let Some(store) = shared {
        store.detach();
    }
    ran.context("node failed")?;
    Ok(ExitCode::SUCCESS)
}

async fn set_state(opts: &ClientOpts, id: &str, action: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(opts)?;
    let answer: NodeAnswer = client
        .call(
            reqwest::Method::POST,
            &format!("/v1/admin/nodes/{id}/{action}"),
            NO_BODY,
        )
        .await?;
    let state = answer.node.map_or_else(|| "?".to_owned(), |n| n.state);
    println!("node {id}: {state}");
    Ok(ExitCode::SUCCESS)
}

pub async fn nodes(cmd: NodesCommand) -> anyhow::Result<ExitCode> {
    let NodesCommand::List { opts, json } = cmd;
    let client = Client::new(&opts)?;
    if json {
        let page: serde_json::Value = client
            .call(reqwest::Method::GET, "/v1/admin/nodes", NO_BODY)
            .await?;
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(ExitCode::SUCCESS);
    }
    let page: NodeList = client
        .call(reqwest::Method::GET, "/v1/admin/nodes", NO_BODY)
        .await?;
    println!(
        "{:<18} {:<10} {:<26} {:<16} {:>9} {:>11} {:>6}",
        "ID", "STATE", "PUBLIC HOST", "LABELS", "SANDBOXES", "MEMORY MB", "SEEN"
    );
    for n in &page.data {
        let labels = n
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{:<18} {:<10} {:<26} {:<16} {:>4}/{:<4} {:>5}/{:<5} {:>5.1}s",
            n.id,
            n.state,
            n.public_host,
            labels,
            n.used.sandboxes,
            n.capacity.sandboxes,
            n.used.memory_mb,
            n.capacity.memory_mb,
            n.last_seen_seconds_ago,
        );
    }
    if page.data.is_empty() {
        println!("(no node has joined; start `warren node --control-plane URL` with WARREN_NODE_JOIN_SECRET)");
    }
    Ok(ExitCode::SUCCESS)
}
