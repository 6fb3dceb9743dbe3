//! `warren doctor`: what this host can run, tier by tier, why not where not, and how fast.

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print JSON instead of a report.
    #[arg(long)]
    json: bool,
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
        "cgroups": warren_runtime::namespaces::cgroups::CgroupRoot::discover().ok().map(|c| c.version()),
        "user_namespaces": read("/proc/sys/user/max_user_namespaces").trim().parse::<u64>().unwrap_or(0) > 0,
        "overlayfs": read("/proc/filesystems").contains("overlay"),
        "seccomp": seccomp,
        "nftables": run_ok(&["nft", "--version"]),
    })
}

fn namespaces_tier() -> Value {
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
    match timed(&probe, 5) {
        Some(ms) => json!({ "tier": "namespaces", "available": true, "implemented": true,
                           "start_ms": ms, "note": "six namespaces + exec, median of 5 (a full sandbox adds overlay, cgroups, netns and the agent: see bench/)" }),
        None => json!({ "tier": "namespaces", "available": false, "implemented": true,
                        "why": "cannot create user/pid/mount/net/uts/ipc namespaces (run as root; check user.max_user_namespaces)" }),
    }
}

fn gvisor_tier() -> Value {
    let Some(version) = run_ok(&["runsc", "--version"]) else {
        return json!({ "tier": "gvisor", "available": false, "implemented": false,
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
            timed(&probe, 3).map_or(Value::Null, Value::from),
        );
    }
    let best = platforms
        .iter()
        .find(|p| measured.get(**p).is_some_and(|v| !v.is_null()))
        .copied();
    json!({ "tier": "gvisor", "available": best.is_some(), "implemented": false, "version": version.lines().next(),
            "platform": best, "start_ms_by_platform": measured,
            "why": "the gVisor driver is not implemented in this build yet; runsc itself works here as measured",
            "note": "--platform=kvm is not tried: it hangs on PVM hosts" })
}

fn microvm_tier() -> Value {
    let qemu = run_ok(&["qemu-system-x86_64", "--version"]);
    let kvm = std::path::Path::new("/dev/kvm").exists();
    let cpuinfo = read("/proc/cpuinfo");
    let hw_virt = cpuinfo.contains(" vmx") || cpuinfo.contains(" svm");
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    let accel = match (kvm, hw_virt, pvm) {
        (true, true, _) => "kvm",
        (true, false, true) => "tcg (KVM here is PVM: stock guest kernels do not boot at speed, so guests would be emulated)",
        _ => "tcg (no usable KVM: guests would be emulated)",
    };
    json!({ "tier": "microvm", "available": qemu.is_some(), "implemented": false,
            "qemu": qemu.as_deref().and_then(|q| q.lines().next()), "kvm_device": kvm, "hardware_virtualisation": hw_virt,
            "pvm": pvm, "acceleration": accel,
            "why": if qemu.is_none() { "qemu-system-x86 is not installed" } else { "the microVM driver is not implemented in this build yet" } })
}

pub fn run(a: DoctorArgs) -> anyhow::Result<ExitCode> {
    let report =
        json!({ "host": host(), "tiers": [namespaces_tier(), gvisor_tier(), microvm_tier()] });
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
