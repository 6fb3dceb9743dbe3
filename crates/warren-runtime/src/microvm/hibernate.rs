//! Pause and resume of a microVM: the guest's state goes to a file and its QEMU ends, so a paused
//! sandbox holds no memory and no CPU; resume starts QEMU again from that file. Processes,
//! memory, open files and the writable disk are as they were; only the guest's TCP connections
//! to the outside have to be made again (the agent's listener is unaffected).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use warren_core::SandboxId;

use super::qemu::Qmp;
use super::{forward, io, Boot, ExitRelay, MicrovmDriver};
use crate::driver::DriverError;
use crate::host::SandboxHost;

/// What pause and resume need of a live sandbox.
pub(super) struct Parts {
    pub host: SandboxHost,
    pub dir: std::path::PathBuf,
    pub vmm_uid: u32,
    pub boot: Arc<Boot>,
    pub exit: Arc<ExitRelay>,
}

impl MicrovmDriver {
    pub(super) fn parts(&self, id: &SandboxId) -> Result<Parts, DriverError> {
        let live = self.live();
        let l = live
            .get(id)
            .ok_or_else(|| DriverError::NotFound(id.clone()))?;
        Ok(Parts {
            host: l.host.clone(),
            dir: l.dir.clone(),
            vmm_uid: l.vmm_uid,
            boot: l.boot.clone(),
            exit: l.exit.clone(),
        })
    }

    pub(super) async fn hibernate(&self, id: &SandboxId) -> Result<(), DriverError> {
        let p = self.parts(id)?;
        let state_path = p.dir.join("state");
        let mut qmp = Qmp::connect(&p.dir.join("qmp.sock")).await?;
        qmp.stop().await?;
        let saved = async {
            let state = std::fs::File::create(&state_path).map_err(io("create state file"))?;
            Ok::<_, DriverError>(qmp.save_state(&state).await?)
        }
        .await;
        if let Err(e) = saved {
            let _ = qmp.cont().await;
            let _ = std::fs::remove_file(&state_path);
            return Err(e);
        }
        p.exit.hibernating.store(true, Ordering::SeqCst);
        let _ = qmp.execute("quit", serde_json::json!({})).await;
        // QEMU is the only process in the cgroup: gone when its pid list is empty.
        for _ in 0..500 {
            if p.host.cgroup.pids().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(f) = self.live().get_mut(id).and_then(|l| l.forwarder.take()) {
            f.abort();
        }
        tracing::info!(sandbox = %id, "microVM paused to its state file");
        Ok(())
    }

    /// Starts QEMU for `boot` from a saved state and lets the guest run on: a resume after a
    /// pause, or a copy of a snapshot. On failure QEMU is killed.
    pub(super) async fn run_from_state(
        &self,
        boot: &Boot,
        dir: &Path,
        host: &SandboxHost,
        vmm_uid: u32,
        state: std::fs::File,
    ) -> Result<tokio::process::Child, DriverError> {
        let qmp_socket = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&qmp_socket);
        let mut child = self.launch(boot, dir, host, vmm_uid, Some(&state))?;
        drop(state);
        let resumed = async {
            let deadline = tokio::time::Instant::now() + self.start_timeout();
            let mut qmp = loop {
                match Qmp::connect(&qmp_socket).await {
                    Ok(q) => break q,
                    Err(e) if tokio::time::Instant::now() > deadline => return Err(e.into()),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            tokio::time::timeout(self.start_timeout(), qmp.wait_incoming())
                .await
                .map_err(|_| DriverError::TimedOut("restoring the guest from its saved state"))??;
            Ok::<_, DriverError>(qmp.cont().await?)
        }
        .await;
        if let Err(e) = resumed {
            let _ = child.start_kill();
            return Err(e);
        }
        Ok(child)
    }

    pub(super) async fn restore(&self, id: &SandboxId) -> Result<(), DriverError> {
        let p = self.parts(id)?;
        let state_path = p.dir.join("state");
        let state = std::fs::File::open(&state_path).map_err(io("open state file"))?;
        let mut child = match self
            .run_from_state(&p.boot, &p.dir, &p.host, p.vmm_uid, state)
            .await
        {
            Ok(child) => child,
            Err(e) => {
                // The guest is lost: let the service clean the sandbox up.
                p.exit.report(-1);
                return Err(e);
            }
        };
        p.exit.hibernating.store(false, Ordering::SeqCst);
        let stdout = child.stdout.take().ok_or(DriverError::NoStdout)?;
        p.exit.watch(crate::host::watch_exit(
            child,
            tokio::io::BufReader::new(stdout).lines(),
        ));
        let socket = p.dir.join("run/agent.sock");
        let _ = std::fs::remove_file(&socket);
        let forwarder = forward::spawn(&socket, p.host.net.netns_path.clone())?;
        match self.live().get_mut(id) {
            Some(l) => l.forwarder = Some(forwarder),
            None => forwarder.abort(),
        }
        let _ = std::fs::remove_file(&state_path);
        tracing::info!(sandbox = %id, "microVM resumed from its state file");
        Ok(())
    }
}
