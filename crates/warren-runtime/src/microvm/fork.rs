//! Snapshots that carry memory, and the copies that resume from them. A snapshot directory holds
//! the guest's saved state (QEMU's migration stream, what a pause writes), a copy of its writable
//! disk taken at the same moment, its initrd and `boot.json` (the machine the state fits: vCPUs,
//! memory, root and agent disks). A copy gets a disk of its own and starts QEMU from the state:
//! the source's processes, interpreter variables and files go on in it. The guest's address is
//! the same inside every sandbox's network namespace, so its network needs no change; the node
//! then tells the copy's agent its own id.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use warren_core::SandboxId;

use super::qemu::Qmp;
use super::{forward, io, Boot, MicrovmDriver};
use crate::driver::{DriverError, Snapshot, SnapshotTaken};
use crate::host::network::GUEST_ADDRESS;
use crate::host::{AgentUp, SandboxHost};

const STATE: &str = "state";
const DATA_DISK: &str = "data.ext4";
const INITRD: &str = "initrd";
const BOOT: &str = "boot.json";

impl MicrovmDriver {
    /// Saves the sandbox's whole machine into `dir`. A running guest is held still while its
    /// state is written and its disk copied, then runs on; a paused one already has its state.
    pub(super) async fn save_machine(
        &self,
        id: &SandboxId,
        dir: &Path,
    ) -> Result<SnapshotTaken, DriverError> {
        let p = self.parts(id)?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io("snapshot directory"))?;
        let saved = async {
            let paused_state = p.dir.join(STATE);
            if paused_state.exists() {
                copy_file(&paused_state, &dir.join(STATE)).await?;
                copy_file(&p.boot.data_disk, &dir.join(DATA_DISK)).await?;
            } else {
                let mut qmp = Qmp::connect(&p.dir.join("qmp.sock")).await?;
                qmp.stop().await?;
                let written = async {
                    let state =
                        std::fs::File::create(dir.join(STATE)).map_err(io("create state file"))?;
                    qmp.save_state(&state).await?;
                    // The disk as the saved memory knows it (QEMU flushed it to the file).
                    copy_file(&p.boot.data_disk, &dir.join(DATA_DISK)).await
                }
                .await;
                // After a completed save QEMU holds the guest stopped, its disks handed over;
                // `cont` takes them back and the source runs on.
                let resumed = qmp.cont().await;
                written?;
                resumed?;
            }
            copy_file(&p.boot.initrd, &dir.join(INITRD)).await?;
            let boot = serde_json::to_vec(&*p.boot).map_err(|source| DriverError::Encode {
                what: "the saved machine's description",
                source,
            })?;
            tokio::fs::write(dir.join(BOOT), boot)
                .await
                .map_err(io("write boot.json"))?;
            Ok(())
        }
        .await;
        if let Err(e) = saved {
            let _ = tokio::fs::remove_dir_all(dir).await;
            return Err(e);
        }
        let bytes = [STATE, DATA_DISK, INITRD]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.blocks() * 512)
            .sum();
        tracing::info!(sandbox = %id, bytes, "microVM saved with its memory");
        Ok(SnapshotTaken {
            snapshot: Snapshot::SavedState(dir.to_path_buf()),
            bytes,
        })
    }

    /// Prepares a copy's disks from the saved machine in `saved` and starts QEMU from its state.
    pub(super) async fn resume_copy(
        &self,
        saved: &Path,
        dir: &Path,
        host: &SandboxHost,
        vmm_uid: u32,
        internet_access: bool,
    ) -> Result<(AgentUp, Boot, tokio::task::JoinHandle<()>), DriverError> {
        let source: Boot = tokio::fs::read(saved.join(BOOT))
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(DriverError::SavedStateIncomplete)?;
        for disk in [&source.root_image, &source.agent_image] {
            if !disk.exists() {
                return Err(DriverError::Unsupported(format!(
                    "the snapshot needs {} which this server no longer has (a template or \
                     Warren itself changed since it was taken); take a new snapshot",
                    disk.display()
                )));
            }
        }
        self.make_dir(dir, vmm_uid).await?;
        self.host
            .network()
            .add_guest_link(&host.net, internet_access)
            .await?;
        let boot = Boot {
            name: format!("warren-{}", file_name(dir)),
            data_disk: dir.join(DATA_DISK),
            initrd: dir.join(INITRD),
            ..source
        };
        for (from, to) in [(DATA_DISK, &boot.data_disk), (INITRD, &boot.initrd)] {
            copy_file(&saved.join(from), to).await?;
            std::os::unix::fs::chown(to, Some(vmm_uid), Some(vmm_uid))
                .map_err(io("chown the copy's disk"))?;
        }
        let state = std::fs::File::open(saved.join(STATE)).map_err(io("open saved state"))?;
        let mut child = self
            .run_from_state(&boot, dir, host, vmm_uid, state)
            .await?;
        let stdout = child.stdout.take().ok_or(DriverError::NoStdout)?;
        let exited = crate::host::watch_exit(child, tokio::io::BufReader::new(stdout).lines());
        let agent_socket = dir.join("run/agent.sock");
        let forwarder = forward::spawn(&agent_socket, host.net.netns_path.clone())?;
        if let Err(e) = wait_for_listener(&host.net.netns_path, self.start_timeout()).await {
            forwarder.abort();
            return Err(e);
        }
        let up = AgentUp {
            agent_socket,
            port_host: GUEST_ADDRESS,
            exited,
            announced_pid: None,
        };
        Ok((up, boot, forwarder))
    }
}

/// The agent of a resumed guest listens as it did when saved; what can lag is the guest's
/// network after the jump in time (ARP, the tap). Waits until a connection is accepted.
async fn wait_for_listener(netns: &Path, within: Duration) -> Result<(), DriverError> {
    let deadline = tokio::time::Instant::now() + within;
    let netns = netns.to_path_buf();
    loop {
        let ns = netns.clone();
        let up = tokio::task::spawn_blocking(move || forward::dial_guest(&ns).is_ok())
            .await
            .unwrap_or(false);
        if up {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(DriverError::TimedOut(
                "waiting for the resumed guest's agent",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn file_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Copies a disk or state file keeping its holes (a writable disk is mostly unwritten), through
/// `cp`, which also clones extents where the file system can.
async fn copy_file(from: &Path, to: &Path) -> Result<(), DriverError> {
    let out = tokio::process::Command::new("cp")
        .args(["--sparse=always", "--reflink=auto", "--"])
        .arg(from)
        .arg(to)
        .output()
        .await
        .map_err(io("run cp"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(DriverError::Tool {
        tool: "cp",
        status: out.status.to_string(),
        output: format!(
            "{}: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}
