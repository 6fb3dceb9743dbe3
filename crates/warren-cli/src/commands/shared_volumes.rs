//! `--volumes-juicefs`: volumes in the cluster's shared JuiceFS store (serve and node alike).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use warren_volume_fs::SharedStore;

#[derive(clap::Args, Debug, Clone)]
pub struct SharedVolumeArgs {
    /// Keep volumes in a JuiceFS file system shared by the cluster, given by its metadata URL
    /// (e.g. postgres://…/jfs; made beforehand with `juicefs format`, data in any S3 bucket), so
    /// that sandboxes on every node mount the same volumes. Every control plane and node of the
    /// cluster takes the same URL. Without it, volumes are images on this machine.
    #[arg(long, env = "WARREN_VOLUMES_JUICEFS", value_name = "META_URL")]
    pub volumes_juicefs: Option<String>,
    /// The `juicefs` binary that mounts the store.
    #[arg(long, default_value = "juicefs", value_name = "PATH")]
    pub juicefs: PathBuf,
}

impl SharedVolumeArgs {
    /// Mounts the store and its id-keeping view under `<data-dir>/shared-volumes`.
    pub fn attach(&self, data_dir: &Path) -> anyhow::Result<Option<Arc<SharedStore>>> {
        let Some(meta) = &self.volumes_juicefs else {
            return Ok(None);
        };
        let warren = std::env::current_exe().context("find the warren binary")?;
        let store = SharedStore::attach(
            meta,
            &self.juicefs,
            &data_dir.join("shared-volumes"),
            &warren,
        )
        .context("--volumes-juicefs: attach the shared volume store")?;
        Ok(Some(Arc::new(store)))
    }
}

/// `warren volume-view SOURCE MOUNTPOINT` (hidden): serves the id-keeping view, started by the
/// server in a session of its own.
pub fn serve_view(source: &Path, mountpoint: &Path) -> std::process::ExitCode {
    match warren_volume_fs::serve(source, mountpoint) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren volume-view: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
