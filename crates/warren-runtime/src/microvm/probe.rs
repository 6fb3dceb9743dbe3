//! The tier's floor: a guest with nothing but the agent, timed from QEMU's start to the agent's
//! ready line (`warren doctor`, bench/).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{find_kernel, image, initramfs, qemu, MicrovmUnavailable};
use crate::driver::DriverError;

/// Boots a guest with nothing but the agent (no template root, no network) and returns the time
/// from starting QEMU to the agent's ready line: the floor under every microVM sandbox start.
/// `work` receives the probe's initrd and agent disk.
pub async fn probe_boot(
    qemu: &Path,
    kernel_dir: &Path,
    busybox: &Path,
    agent_bundle: &Path,
    work: &Path,
) -> Result<Duration, MicrovmUnavailable> {
    use tokio::io::AsyncBufReadExt;
    let (kernel, modules) = find_kernel(kernel_dir)
        .ok_or_else(|| MicrovmUnavailable::NoKernel(kernel_dir.to_path_buf()))?;
    let initrd = work.join("probe-initrd");
    let agent_image = work.join("probe-agent.ext4");
    let mut bytes = initramfs::build_base(busybox, &modules)?;
    bytes.extend(initramfs::build_probe_config()?);
    std::fs::write(&initrd, bytes).map_err(|source| MicrovmUnavailable::Io {
        path: initrd.clone(),
        source,
    })?;
    image::build_agent_image(agent_bundle, &agent_image)?;
    let (accel, _) = tokio::task::spawn_blocking(qemu::detect_accel)
        .await
        .map_err(|_| DriverError::Panicked("the acceleration check"))?;
    let started = std::time::Instant::now();
    let mut child = qemu::boot_probe_command(qemu, accel, &kernel, &initrd, &agent_image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| MicrovmUnavailable::QemuMissing {
            qemu: qemu.to_path_buf(),
            source,
        })?;
    let stdout = child.stdout.take().ok_or(DriverError::NoStdout)?;
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
        Err(MicrovmUnavailable::NeverReady)
    }
}
