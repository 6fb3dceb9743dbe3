//! The tier's floor: a guest with nothing but the agent, timed from QEMU's start to the agent's
//! ready line (`warren doctor`, bench/).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{find_kernel, image, initramfs, qemu};

/// Boots a guest with nothing but the agent (no template root, no network) and returns the time
/// from starting QEMU to the agent's ready line: the floor under every microVM sandbox start.
/// `work` receives the probe's initrd and agent disk.
pub async fn probe_boot(
    qemu: &Path,
    kernel_dir: &Path,
    busybox: &Path,
    agent_bundle: &Path,
    work: &Path,
) -> Result<Duration, String> {
    use tokio::io::AsyncBufReadExt;
    let (kernel, modules) = find_kernel(kernel_dir)
        .ok_or_else(|| format!("no guest kernel in {}", kernel_dir.display()))?;
    let initrd = work.join("probe-initrd");
    let agent_image = work.join("probe-agent.ext4");
    let mut bytes = initramfs::build_base(busybox, &modules).map_err(|e| e.to_string())?;
    bytes.extend(initramfs::build_probe_config().map_err(|e| e.to_string())?);
    std::fs::write(&initrd, bytes).map_err(|e| e.to_string())?;
    image::build_agent_image(agent_bundle, &agent_image).map_err(|e| e.to_string())?;
    let (accel, _) = tokio::task::spawn_blocking(qemu::detect_accel)
        .await
        .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let mut child = qemu::boot_probe_command(qemu, accel, &kernel, &initrd, &agent_image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", qemu.display()))?;
    let stdout = child.stdout.take().ok_or("no QEMU stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = crate::host::until_ready(
        &mut lines,
        Duration::from_secs(120),
        &mut crate::host::Startup::default(),
    )
    .await;
    let took = started.elapsed();
    let _ = child.kill().await;
    if ready {
        Ok(took)
    } else {
        Err("the probe guest never reported ready".into())
    }
}
