use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use warren_api::{PublicMode, ServeConfig};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    shared_volumes: super::shared_volumes::SharedVolumeArgs,
    /// Address of the control-plane API.
    #[arg(long, env = "WARREN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the store, keys and per-sandbox state live.
    #[arg(long, env = "WARREN_DATA_DIR", default_value = super::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Template root file systems, shared by every data dir.
    #[arg(long, env = "WARREN_CACHE_DIR", default_value = super::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Address the per-sandbox agent listeners bind to (local mode).
    #[arg(long, default_value = "127.0.0.1")]
    sandbox_bind: IpAddr,
    /// Host name clients use to reach the sandbox listeners (defaults to --sandbox-bind).
    #[arg(long)]
    public_hostname: Option<String>,
    /// Route sandboxes as `{port}-{id}.<domain>` by Host header on the main listener instead of one
    /// port per sandbox (needs wildcard DNS pointing at this server).
    #[arg(long)]
    wildcard_domain: Option<String>,
    /// Scheme of wildcard URLs (https when a TLS proxy fronts Warren).
    #[arg(long, default_value = "http")]
    wildcard_scheme: String,
    /// The /16 that sandbox network links are numbered from.
    #[arg(long, default_value = "10.213.0.0")]
    network: Ipv4Addr,
    /// Debian mirror for template builds (default: the one apt uses on this machine).
    #[arg(long)]
    debian_mirror: Option<String>,
    /// Region label reported in sandbox objects.
    #[arg(long, default_value = "local")]
    region: String,
    /// Don't build missing templates at start (they still build on first use).
    #[arg(long)]
    no_prebuild: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a local CA generated in <data-dir>/tls (printed at start; clients trust
    /// its ca.pem). Automatic when listening beyond loopback without --tls-cert.
    #[arg(long, conflicts_with = "tls_cert")]
    tls: bool,
    /// Allow plain HTTP on a non-loopback address (e.g. behind a TLS-terminating proxy).
    #[arg(long)]
    allow_plain_http: bool,
    /// Largest request body sent to a sandbox (file uploads and writes), in MB.
    #[arg(long, default_value_t = 1024)]
    max_upload_mb: u64,
    /// A registry to reach over plain HTTP (repeatable; loopback registries always are).
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Pull Docker Hub images through this registry mirror (host[:port]).
    #[arg(long)]
    registry_mirror: Option<String>,
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
    /// The runsc binary for the gVisor tier.
    #[arg(long, default_value = "runsc")]
    runsc: PathBuf,
    /// Do not offer the microVM tier even if QEMU and a guest kernel are installed.
    #[arg(long)]
    no_microvm: bool,
    /// The QEMU binary for the microVM tier.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Unpacked Debian kernel package that microVM guests boot (scripts/guest-kernel installs
    /// one) [default: <cache-dir>/guest-kernel].
    #[arg(long)]
    guest_kernel_dir: Option<PathBuf>,
    /// Isolation tier of sandboxes that do not ask for one (namespaces, gvisor or microvm); a create
    /// request may pick another available tier with `"isolation"`.
    #[arg(long, default_value = "namespaces")]
    isolation: warren_core::Tier,
    /// Refuse create requests that pick their own isolation tier (templates still choose theirs).
    #[arg(long)]
    no_isolation_override: bool,
    /// Keep the state in PostgreSQL (postgres://USER[:PASSWORD]@HOST[:PORT]/DB) instead of SQLite
    /// in the data dir. Keys, tokens and TLS files stay in the data dir.
    #[arg(long, env = "WARREN_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// On SIGTERM/SIGINT, stop every sandbox and remove all it left. Without this flag sandboxes
    /// keep running when the server exits, and the next start with this data dir takes them over.
    #[arg(long)]
    stop_sandboxes_on_exit: bool,
    /// Keep N warm sandboxes of TEMPLATE started ahead of time (repeatable): a create that
    /// matches takes one and answers in milliseconds. TEMPLATE@TIER=N for another tier than the
    /// default. Warm sandboxes count in no quota until taken and survive a restart.
    ///
    /// Without --pool, built-in templates get warm pools by demand: as many warm sandboxes as
    /// were created in the last minute (up to one per 2 GB of the machine's memory, at most 16),
    /// one for five minutes after the last create, none after; `code-interpreter` starts with one.
    #[arg(long = "pool", value_name = "TEMPLATE=N")]
    pools: Vec<warren_api::PoolTarget>,
    /// Keep no warm sandboxes at all (every create starts one).
    #[arg(long, conflicts_with = "pools")]
    no_pool: bool,
    /// Days audit events are kept before they are purged.
    #[arg(long, default_value_t = 30)]
    audit_retention_days: u64,
    /// Requests per second per API key (bursts of twice that).
    #[arg(long)]
    key_rps: Option<u32>,
    /// Requests per second per organization, control plane and sandboxes together.
    #[arg(long)]
    tenant_rps: Option<u32>,
    /// Live sandboxes per organization [default: 1000].
    #[arg(long)]
    max_sandboxes: Option<u64>,
    /// Total vcpus of live sandboxes per organization [default: no limit; cgroups share the cores
    /// fairly].
    #[arg(long)]
    max_vcpu: Option<u64>,
    /// Total memory limits (MB) of live sandboxes per organization [default: 64 times the host's
    /// memory: a limit is a ceiling, idle sandboxes use a few MB]. Whatever the quotas, a new
    /// sandbox is refused while the machine's available memory is below its reserve.
    #[arg(long)]
    max_memory_mb: Option<u64>,
    /// Total size (MB) of an organization's persistent volumes [default: 102400]. Volumes are
    /// sparse: they take from the host's disk only what is written to them.
    #[arg(long)]
    max_volume_mb: Option<u64>,
    /// Lifetime (seconds) of a sandbox whose create names none (the Hopx SDKs send none unless
    /// asked), so abandoned sandboxes end instead of piling up; 0: such sandboxes run until
    /// deleted [default: 3600]. E2B's SDKs always send one (5 minutes unless told).
    #[arg(long, value_name = "SECONDS", env = "WARREN_DEFAULT_TIMEOUT")]
    default_timeout: Option<i64>,
    /// Longest lifetime (seconds) a create or a timeout change may ask for, for every
    /// organization; longer is refused with a 400 naming this flag [default: 31536000, a year].
    #[arg(long, value_name = "SECONDS", env = "WARREN_MAX_TIMEOUT")]
    max_timeout: Option<i64>,
    /// The longest lifetime for one organization (its tenant name, as in `warren keys create
    /// --tenant`), above or below `--max-timeout`; repeat for several organizations.
    #[arg(long, value_name = "ORG=SECONDS", value_parser = tenant_seconds)]
    tenant_max_timeout: Vec<(String, i64)>,
    /// Pause running sandboxes unused this long (no request through their host, no open
    /// stream or port connection, under 1% of a core of CPU); the next request that reaches one
    /// resumes it, and its timeout keeps running. Off by default: a sandbox that only talks out
    /// (a bot polling a queue) looks unused from outside; 0: never.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "WARREN_IDLE_PAUSE",
        default_value_t = 0
    )]
    idle_pause: u64,
    /// Run no sandboxes on this machine: a control plane for nodes that joined (`warren node`).
    #[arg(long)]
    no_local_node: bool,
    /// Secret `warren node` must present to join this cluster (no nodes can join without it).
    #[arg(long, env = "WARREN_NODE_JOIN_SECRET", hide_env_values = true)]
    node_join_secret: Option<String>,
}

pub async fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(a.log_json);
    raise_open_files_limit();
    warren_api::serve(config(a)?)
        .await
        .context("server failed")?;
    Ok(ExitCode::SUCCESS)
}

/// `warren stop-sandboxes`: stops every sandbox of a data dir while no server runs.
pub async fn stop_all(a: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(a.log_json);
    let data_dir = a.data_dir.clone();
    let stopped = warren_api::stop_sandboxes(config(a)?).await.context(
        "cannot stop the sandboxes (is a server running? stop it first, or kill them through its API)",
    )?;
    println!(
        "stopped {stopped} sandbox(es) of {}; nothing of them is left",
        data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Every sandbox holds a listener and agent connections open in the server: thousands of them
/// need more descriptors than the usual soft limit of 1024. Raised to the hard limit.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open files limit");
            }
        }
    }
}

pub fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        // Colours only on a terminal: a log file or journal gets plain text.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
}

fn tenant_seconds(s: &str) -> Result<(String, i64), String> {
    let (org, secs) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ORG=SECONDS, got {s:?}"))?;
    let secs: i64 = secs
        .parse()
        .map_err(|_| format!("{secs:?} is not a number of seconds"))?;
    let cap = warren_api::MAX_TIMEOUT_SECONDS;
    if org.is_empty() || !(1..=cap).contains(&secs) {
        return Err(format!(
            "expected an organization and 1 to {cap} seconds, got {s:?}"
        ));
    }
    Ok((org.to_owned(), secs))
}

/// Applies `--default-timeout` and `--max-timeout`, refusing values no sandbox could have.
fn lifetimes(
    limits: &mut warren_api::limits::Limits,
    default: Option<i64>,
    max: Option<i64>,
) -> anyhow::Result<()> {
    let cap = warren_api::MAX_TIMEOUT_SECONDS;
    if let Some(max) = max {
        if !(1..=cap).contains(&max) {
            anyhow::bail!("--max-timeout must be between 1 and {cap} seconds; got {max}");
        }
        limits.max_timeout_seconds = max;
    }
    match default {
        Some(0) => limits.default_timeout_seconds = None,
        Some(d) if d < 0 => {
            anyhow::bail!("--default-timeout must be 0 (never) or a number of seconds; got {d}")
        }
        Some(d) => limits.default_timeout_seconds = Some(d),
        None => {}
    }
    match limits.default_timeout_seconds {
        // Only the built-in default gives way to a lower maximum; an asked default must fit.
        Some(d) if d > limits.max_timeout_seconds && default.is_none() => {
            limits.default_timeout_seconds = Some(limits.max_timeout_seconds);
        }
        Some(d) if d > limits.max_timeout_seconds => anyhow::bail!(
            "--default-timeout {d} is longer than --max-timeout {}",
            limits.max_timeout_seconds
        ),
        _ => {}
    }
    Ok(())
}

fn config(a: ServeArgs) -> anyhow::Result<ServeConfig> {
    let public = match a.wildcard_domain {
        Some(domain) => PublicMode::Wildcard {
            domain,
            scheme: a.wildcard_scheme,
        },
        None => PublicMode::Local {
            bind: a.sandbox_bind,
            host: a
                .public_hostname
                .unwrap_or_else(|| a.sandbox_bind.to_string()),
        },
    };
    let mut limits = warren_api::limits::Limits::for_this_host();
    if let Some(v) = a.key_rps {
        limits.key_requests_per_second = v;
    }
    if let Some(v) = a.tenant_rps {
        limits.tenant_requests_per_second = v;
    }
    if let Some(v) = a.max_sandboxes {
        limits.max_sandboxes_per_tenant = v;
    }
    if let Some(v) = a.max_vcpu {
        limits.max_vcpu_per_tenant = v;
    }
    if let Some(v) = a.max_memory_mb {
        limits.max_memory_mb_per_tenant = v;
    }
    if let Some(v) = a.max_volume_mb {
        limits.max_volume_mb_per_tenant = v;
    }
    lifetimes(&mut limits, a.default_timeout, a.max_timeout)?;
    limits.max_timeout_by_tenant = a.tenant_max_timeout.into_iter().collect();
    limits.idle_pause_seconds = (a.idle_pause > 0).then_some(a.idle_pause);
    let shared_volumes = a.shared_volumes.attach(&a.data_dir)?;
    Ok(ServeConfig {
        listen: a.listen,
        data_dir: a.data_dir,
        cache_dir: a.cache_dir.clone(),
        public,
        api_key: std::env::var("WARREN_API_KEY")
            .ok()
            .map(warren_core::Secret::new),
        network_base: a.network,
        debian_mirror: a.debian_mirror,
        region: a.region,
        prebuild_templates: !a.no_prebuild,
        limits,
        audit_retention: std::time::Duration::from_secs(a.audit_retention_days * 86_400),
        tls: match (a.tls_cert, a.tls_key, a.tls) {
            (Some(cert), Some(key), _) => Some(warren_api::tls::TlsSource::Files { cert, key }),
            (_, _, true) => Some(warren_api::tls::TlsSource::Generated { names: vec![] }),
            _ => None,
        },
        allow_plain_http: a.allow_plain_http,
        max_body_bytes: a.max_upload_mb * 1024 * 1024,
        insecure_registries: a.insecure_registries,
        registry_mirror: a.registry_mirror,
        gvisor: !a.no_gvisor,
        egress_upstream_ca: super::read_pems(&a.egress_upstream_ca)?,
        egress_resolver: warren_egress::Resolver::with_pins(&a.egress_resolve)
            .context("--egress-resolve")?,
        runsc: a.runsc,
        microvm: !a.no_microvm,
        qemu: a.qemu,
        guest_kernel_dir: a
            .guest_kernel_dir
            .unwrap_or_else(|| a.cache_dir.join("guest-kernel")),
        default_isolation: a.isolation,
        allow_isolation_override: !a.no_isolation_override,
        database_url: a.database_url,
        stop_sandboxes_on_exit: a.stop_sandboxes_on_exit,
        pools_by_demand: !a.no_pool,
        pools: a.pools,
        no_local_node: a.no_local_node,
        node_join_secret: a
            .node_join_secret
            .filter(|s| !s.is_empty())
            .map(warren_core::Secret::new),
        shared_volumes,
    })
}
