//! `warren doctor`: what this host can run, tier by tier, why not where not, and how fast.

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print JSON instead of a report.
    #[arg(long)]
    json: bool,
    /// Measurements per tier (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where `serve` looks for templates and the microVM guest kernel.
    #[arg(long, env = "WARREN_CACHE_DIR", default_value = super::DEFAULT_CACHE_DIR)]
    cache_dir: std::path::PathBuf,
    /// The QEMU binary for the microVM tier.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: std::path::PathBuf,
}

fn run_ok(argv: &[&str]) -> Option<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Median wall time of `runs` executions of `argv`, or None if it fails.
fn timed(argv: &[&str], runs: usize) -> Option<f64> {
    let mut ms = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let ok = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms.get(ms.len() / 2).copied()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn host() -> Value {
    let seccomp = read("/proc/self/status")
        .lines()
        .any(|l| l.starts_with("Seccomp:"));
    json!({
        "kernel": run_ok(&["uname", "-r"]),
        "root": nix::unistd::geteuid().is_root(),
        "cgroups": warren_runtime::host::cgroups::CgroupRoot::discover("warren").ok().map(|c| c.version()),
        "user_namespaces": read("/proc/sys/user/max_user_namespaces").trim().parse::<u64>().unwrap_or(0) > 0,
        "overlayfs": read("/proc/filesystems").contains("overlay"),
        "seccomp": seccomp,
        "nftables": run_ok(&["nft", "--version"]),
    })
}

fn namespaces_tier(runs: usize) -> Value {
    let probe = [
        "unshare",
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--mount",
        "--net",
        "--uts",
        "--ipc",
        "true",
    ];
    match timed(&probe, runs) {
        Some(ms) => json!({ "tier": "namespaces", "available": true, "implemented": true,
                           "start_ms": ms, "note": format!("six namespaces + exec, median of {runs} (a full sandbox adds overlay, cgroups, netns and the agent: see bench/)") }),
        None => json!({ "tier": "namespaces", "available": false, "implemented": true,
                        "why": "cannot create user/pid/mount/net/uts/ipc namespaces (run as root; check user.max_user_namespaces)" }),
    }
}

fn gvisor_tier(runs: usize) -> Value {
    let Some(version) = run_ok(&["runsc", "--version"]) else {
        return json!({ "tier": "gvisor", "available": false, "implemented": true,
                       "why": "runsc is not installed (apt-get install runsc; bookworm-backports has the faster systrap platform)" });
    };
    let help = Command::new("runsc")
        .arg("help")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout)
        })
        .unwrap_or_default();
    let platforms: Vec<&str> = ["systrap", "ptrace"]
        .into_iter()
        .filter(|p| help.contains(p) || *p == "ptrace")
        .collect();
    let mut measured = serde_json::Map::new();
    for p in &platforms {
        let flag = format!("--platform={p}");
        let probe = [
            "runsc",
            "--network=none",
            "--ignore-cgroups",
            flag.as_str(),
            "do",
            "true",
        ];
        measured.insert(
            (*p).into(),
            timed(&probe, runs).map_or(Value::Null, Value::from),
        );
    }
    let best = platforms
        .iter()
        .find(|p| measured.get(**p).is_some_and(|v| !v.is_null()))
        .copied();
    let mut t = json!({ "tier": "gvisor", "available": best.is_some(), "implemented": true, "version": version.lines().next(),
            "platform": best, "start_ms_by_platform": measured,
            "note": "bare `runsc do true`; --platform=kvm is not tried: it hangs on PVM hosts" });
    if best.is_none() {
        t["why"] = "runsc is installed but cannot run a container here".into();
    }
    t
}

async fn microvm_tier(a: &DoctorArgs) -> Value {
    let qemu = run_ok(&[&a.qemu.display().to_string(), "--version"]);
    let host = warren_runtime::microvm::qemu::HostVirt::read();
    let (accel, why_not_kvm) = host.accel();
    let acceleration = match &why_not_kvm {
        None => "kvm".to_owned(),
        Some(why) => format!("tcg, EMULATED: {why}; figures here say nothing about microVM speed on hardware virtualisation"),
    };
    let mut t = json!({ "tier": "microvm", "available": false, "implemented": true,
            "qemu": qemu.as_deref().and_then(|q| q.lines().next()), "kvm_device": host.kvm_device,
            "hardware_virtualisation": host.hardware_virtualisation, "pvm": host.pvm, "accel": accel.name(), "acceleration": acceleration,
            // what an emulated guest is told instead of calibrating its TSC (see microvm/tsc.rs)
            "host_tsc_khz": host.tsc_khz });
    let kernel_dir = a.cache_dir.join("guest-kernel");
    let why = if qemu.is_none() {
        Some("qemu-system-x86 is not installed (scripts/guest-kernel installs it)".to_owned())
    } else if warren_runtime::microvm::find_kernel(&kernel_dir).is_none() {
        Some(format!(
            "no guest kernel in {} (scripts/guest-kernel installs one)",
            kernel_dir.display()
        ))
    } else if !std::path::Path::new("/bin/busybox").exists() {
        Some(
            "no static busybox for the guest's initramfs (apt-get install busybox-static)"
                .to_owned(),
        )
    } else {
        match boot_probe(a, &kernel_dir).await {
            Ok(ms) => {
                t["start_ms"] = ms.into();
                t["note"] =
                    format!("bare QEMU boot to the guest agent, median of {}", a.runs).into();
                None
            }
            Err(e) => Some(format!("a probe guest did not boot: {e}")),
        }
    };
    t["available"] = why.is_none().into();
    if let Some(why) = why {
        t["why"] = why.into();
    }
    t
}

/// Median of `runs` boots of a guest with nothing but the agent.
async fn boot_probe(a: &DoctorArgs, kernel_dir: &std::path::Path) -> Result<f64, String> {
    let work = std::env::temp_dir().join(format!("warren-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let result = async {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let bundle = warren_runtime::agent_bundle::prepare(
            &exe.with_file_name("warren-agent"),
            &work.join("agent"),
        )
        .map_err(|e| e.to_string())?;
        let mut ms = Vec::new();
        for _ in 0..a.runs.max(1) {
            let took = warren_runtime::microvm::probe_boot(
                &a.qemu,
                kernel_dir,
                std::path::Path::new("/bin/busybox"),
                &bundle,
                &work,
            )
            .await?;
            ms.push(took.as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms[ms.len() / 2])
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

pub async fn run(a: DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = json!({ "host": host(), "tiers": [namespaces_tier(a.runs), gvisor_tier(a.runs), microvm_tier(&a).await] });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let h = &report["host"];
    println!(
        "host: kernel {}, root {}, cgroups {}, user namespaces {}, overlayfs {}, seccomp {}, {}",
        h["kernel"].as_str().unwrap_or("?"),
        h["root"],
        h["cgroups"].as_str().unwrap_or("none"),
        h["user_namespaces"],
        h["overlayfs"],
        h["seccomp"],
        h["nftables"].as_str().unwrap_or("nft missing")
    );
    println!();
    println!(
        "{:<11} {:<10} {:<12} {:<10} DETAILS",
        "TIER", "RUNNABLE", "IMPLEMENTED", "START"
    );
    for t in report["tiers"].as_array().into_iter().flatten() {
        let start = t["start_ms"].as_f64().or_else(|| {
            t["start_ms_by_platform"]
                .as_object()?
                .values()
                .filter_map(Value::as_f64)
                .reduce(f64::min)
        });
        let detail = t["why"].as_str().or(t["note"].as_str()).unwrap_or("");
        let extra = match t["tier"].as_str() {
            Some("gvisor") => t["platform"]
                .as_str()
                .map(|p| format!(" [platform {p}]"))
                .unwrap_or_default(),
            Some("microvm") => format!(
                " [acceleration: {}]",
                t["acceleration"].as_str().unwrap_or("?")
            ),
            _ => String::new(),
        };
        println!(
            "{:<11} {:<10} {:<12} {:<10} {detail}{extra}",
            t["tier"].as_str().unwrap_or("?"),
            if t["available"] == true { "yes" } else { "no" },
            if t["implemented"] == true {
                "yes"
            } else {
                "no"
            },
            start.map_or("-".into(), |ms| format!("{ms:.1} ms"))
        );
    }
    Ok(ExitCode::SUCCESS)
}
