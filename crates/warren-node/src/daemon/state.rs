//! The node daemon's shared state, and where a template's layers come from on this node: built-in
//! templates prepared here, built templates' layers fetched once from the control plane.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use warren_runtime::layers::LayerStore;
use warren_runtime::templates::{builtin_recipes, TemplateCache};
use warren_wire::cluster::TemplateSource;

use super::control::{ControlError, ControlPlane};
use super::saved::SavedSandboxes;
use crate::layer_archive::valid_layer_key;
use crate::node::Node;
use crate::tokens::TokenVerifier;

/// Why a template's layers are not on this node.
#[derive(Debug, thiserror::Error)]
pub enum LayersUnavailable {
    #[error("template {0} is not built into this node")]
    NotBuiltIn(String),
    #[error("template {name} could not be built: {reason}")]
    BuildFailed { name: String, reason: String },
    #[error(
        "template {0} is still being prepared on this node (once, a few minutes); retry shortly"
    )]
    StillPreparing(String),
    #[error("invalid layer key {0:?}")]
    InvalidKey(String),
    #[error("fetch layer {key}: {source}")]
    Fetch { key: String, source: ControlError },
    #[error("download layer {key}: {source}")]
    Download { key: String, source: std::io::Error },
    #[error("unpack layer {key}: {source}")]
    Unpack { key: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] warren_runtime::layers::LayerError),
}

/// How long a start waits for a built-in template this node is still preparing.
const TEMPLATE_WAIT: Duration = Duration::from_secs(40);

pub struct Daemon {
    pub node: Arc<Node>,
    pub node_id: String,
    pub verifier: TokenVerifier,
    pub saved: Arc<SavedSandboxes>,
    pub templates: TemplateCache,
    pub layers: LayerStore,
    pub control: Arc<ControlPlane>,
    pub reporter: Arc<super::report::Reporter>,
    /// Wildcard mode's domain (`{port}-{id}.<domain>` routed by Host header).
    pub wildcard_domain: Option<String>,
    /// One layer download at a time (a second start for the same template waits and finds it).
    pub layer_fetch: tokio::sync::Mutex<()>,
    /// The view of the shared volume store (see `DaemonConfig::shared_volumes`).
    pub shared_volumes: Option<PathBuf>,
}

impl Daemon {
    /// The mounts of a start's shared volumes, each from this node's view of the store.
    pub fn shared_mounts(
        &self,
        asked: &[warren_wire::cluster::SharedVolumeMount],
    ) -> Result<Vec<warren_runtime::VolumeMount>, String> {
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        let Some(view) = &self.shared_volumes else {
            return Err(
                "this node has no shared volume store (start it with --volumes-juicefs, as \
                        the control planes)"
                    .into(),
            );
        };
        asked
            .iter()
            .map(|m| {
                volume_source(view, &m.key)
                    .map(|source| warren_runtime::VolumeMount {
                        source,
                        target: m.path.clone(),
                        read_only: m.read_only,
                    })
                    .ok_or_else(|| format!("volume key {:?} is not <tenant>/<volume>", m.key))
            })
            .collect()
    }

    /// The host paths of a template's layers on this node: a built-in template prepared here
    /// (built on first use), a built one's layers fetched from the control plane once.
    pub async fn layers_of(
        &self,
        source: &TemplateSource,
    ) -> Result<Vec<PathBuf>, LayersUnavailable> {
        match source {
            TemplateSource::Builtin { name } => self.builtin_rootfs(name).await.map(|p| vec![p]),
            TemplateSource::Layers { keys } => {
                let mut paths = Vec::with_capacity(keys.len());
                for key in keys {
                    if let Some(name) = key.strip_prefix("builtin:") {
                        paths.push(self.builtin_rootfs(name).await?);
                        continue;
                    }
                    if !valid_layer_key(key) {
                        return Err(LayersUnavailable::InvalidKey(key.clone()));
                    }
                    if !self.layers.is_ready(key) {
                        self.fetch_layer(key).await?;
                    }
                    paths.push(self.layers.path(key));
                }
                Ok(paths)
            }
        }
    }

    /// A built-in template's root file system on this node, prepared on first use.
    async fn builtin_rootfs(&self, name: &str) -> Result<PathBuf, LayersUnavailable> {
        let recipe = builtin_recipes()
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| LayersUnavailable::NotBuiltIn(name.to_owned()))?;
        if self.templates.is_ready(&recipe) {
            return Ok(self.templates.rootfs(recipe.name));
        }
        let templates = self.templates.clone();
        let build = tokio::spawn(async move {
            let progress = |line: String| tracing::info!(target: "warren::template", "{line}");
            templates.ensure(&recipe, &progress).await
        });
        let failed = |reason: String| LayersUnavailable::BuildFailed {
            name: name.to_owned(),
            reason,
        };
        match tokio::time::timeout(TEMPLATE_WAIT, build).await {
            Ok(Ok(Ok(rootfs))) => Ok(rootfs),
            Ok(Ok(Err(e))) => Err(failed(e.to_string())),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(LayersUnavailable::StillPreparing(name.to_owned())),
        }
    }

    /// Downloads a layer from the control plane (a tar stream) and unpacks it into the cache.
    async fn fetch_layer(&self, key: &str) -> Result<(), LayersUnavailable> {
        let _one = self.layer_fetch.lock().await;
        if self.layers.is_ready(key) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let res = self
            .control
            .layer(key)
            .await
            .map_err(|source| LayersUnavailable::Fetch {
                key: key.to_owned(),
                source,
            })?;
        let staged = self.layers.staging(key)?;
        let archive = staged.with_extension("tar");
        let downloaded = async {
            let mut file = tokio::fs::File::create(&archive).await?;
            let mut body = res.bytes_stream();
            let mut bytes = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                bytes += chunk.len() as u64;
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            Ok::<u64, std::io::Error>(bytes)
        }
        .await;
        let bytes = match downloaded {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(&archive);
                let _ = std::fs::remove_dir_all(&staged);
                return Err(LayersUnavailable::Download {
                    key: key.to_owned(),
                    source: e,
                });
            }
        };
        let (from, into) = (archive.clone(), staged.clone());
        let unpacked = tokio::task::spawn_blocking(move || {
            let mut tar = tar::Archive::new(std::fs::File::open(&from)?);
            tar.set_preserve_permissions(true);
            tar.set_preserve_ownerships(true);
            tar.set_unpack_xattrs(true);
            tar.set_overwrite(true);
            tar.unpack(&into)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let _ = std::fs::remove_file(&archive);
        if let Err(source) = unpacked {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(LayersUnavailable::Unpack {
                key: key.to_owned(),
                source,
            });
        }
        self.layers.commit(&staged, key)?;
        tracing::info!(
            layer = key,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "layer fetched from the control plane"
        );
        Ok(())
    }
}

/// The directory of the volume `key` (`<tenant digest>/<volume id>`) in the view: two plain
/// components, so that nothing the control plane sends names a directory outside it.
fn volume_source(view: &std::path::Path, key: &str) -> Option<PathBuf> {
    let plain =
        |c: &str| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match key.split_once('/') {
        Some((tenant, volume)) if plain(tenant) && plain(volume) => {
            Some(view.join(tenant).join(volume))
        }
        _ => None,
    }
}

#[cfg(test)]
mod volume_key_tests {
    use std::path::Path;

    #[test]
    fn keys_name_two_plain_components_inside_the_view() {
        let view = Path::new("/v");
        assert_eq!(
            super::volume_source(view, "ab12/vol_9f").as_deref(),
            Some(Path::new("/v/ab12/vol_9f"))
        );
        for bad in [
            "",
            "ab12",
            "ab12/",
            "/vol",
            "../x",
            "ab/../../etc",
            "ab/c/d",
            "ab/..",
        ] {
            assert_eq!(super::volume_source(view, bad), None, "{bad}");
        }
    }
}
