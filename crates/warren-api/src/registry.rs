//! Images from OCI registries (Docker Hub and compatible) as build bases: the manifest (for
//! linux/amd64), then each layer blob, kept by digest under `<cache>/blobs` and unpacked once
//! into the shared layer store (`blob-<digest>`), so templates built from the same image — or
//! from images sharing layers — share them on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use warren_runtime::layers::LayerStore;

use crate::builds::spec::{RegistryCredentials, TemplateSpec};
use crate::builds::Build;

pub struct Registry {
    blobs: PathBuf,
    /// Registries spoken to over plain HTTP (loopback ones always are: traffic stays local).
    insecure: Vec<String>,
    /// Pull Docker Hub images from this registry instead (for hosts without direct access).
    mirror: Option<String>,
}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

impl Registry {
    pub fn new(cache_dir: &std::path::Path, insecure: Vec<String>, mirror: Option<String>) -> Self {
        Self {
            blobs: cache_dir.join("blobs").join("sha256"),
            insecure,
            mirror,
        }
    }

    fn reference(&self, image: &str) -> Result<Reference, String> {
        let r: Reference = image.parse().map_err(|e| {
            format!("{image:?} is neither a local template nor an image reference: {e}")
        })?;
        match &self.mirror {
            Some(m) if r.registry() == "docker.io" || r.registry() == "index.docker.io" => {
                let tag = r.tag().unwrap_or("latest");
                let rewritten = match r.digest() {
                    Some(d) => format!("{m}/{}@{d}", r.repository()),
                    None => format!("{m}/{}:{tag}", r.repository()),
                };
                rewritten
                    .parse()
                    .map_err(|e| format!("mirror reference: {e}"))
            }
            _ => Ok(r),
        }
    }

    /// Pulls `image` and returns it as the base of a build.
    pub async fn pull(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        layers: &LayerStore,
        build: &Build,
    ) -> Result<TemplateSpec, String> {
        let reference = self.reference(image)?;
        let registry = reference.resolve_registry().to_owned();
        let mut insecure = self.insecure.clone();
        if is_loopback(&registry) {
            insecure.push(registry.clone());
        }
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            platform_resolver: Some(Box::new(linux_amd64_resolver)),
            ..Default::default()
        });
        let auth = match credentials {
            Some(c) if !c.username.is_empty() => {
                RegistryAuth::Basic(c.username.clone(), c.password.expose().to_owned())
            }
            _ => RegistryAuth::Anonymous,
        };
        build.log(format!("Pulling {reference} from {registry}"));
        let (manifest, digest, config) = client
            .pull_manifest_and_config(&reference, &auth)
            .await
            .map_err(|e| format!("cannot pull {reference}: {e}"))?;
        build.log(format!(
            "  manifest {digest}: {} layers",
            manifest.layers.len()
        ));
        tokio::fs::create_dir_all(&self.blobs)
            .await
            .map_err(|e| format!("blob store: {e}"))?;
        let mut spec = TemplateSpec::default();
        for (i, layer) in manifest.layers.iter().enumerate() {
            let hex = layer
                .digest
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| format!("unsupported layer digest {}", layer.digest))?
                .to_owned();
            let key = format!("blob-{hex}");
            if layers.is_ready(&key) {
                build.log(format!(
                    "  layer {}/{} {:.19} cached",
                    i + 1,
                    manifest.layers.len(),
                    layer.digest
                ));
            } else {
                let blob = self.blobs.join(&hex);
                if !blob.exists() {
                    build.log(format!(
                        "  layer {}/{} {:.19} downloading ({} bytes)",
                        i + 1,
                        manifest.layers.len(),
                        layer.digest,
                        layer.size
                    ));
                    let part = blob.with_extension("part");
                    let mut file = tokio::fs::File::create(&part)
                        .await
                        .map_err(|e| format!("blob: {e}"))?;
                    // pull_blob checks the content against the digest.
                    client
                        .pull_blob(&reference, layer, &mut file)
                        .await
                        .map_err(|e| format!("layer {}: {e}", layer.digest))?;
                    tokio::fs::rename(&part, &blob)
                        .await
                        .map_err(|e| format!("blob: {e}"))?;
                }
                build.log(format!(
                    "  layer {}/{} {:.19} unpacking",
                    i + 1,
                    manifest.layers.len(),
                    layer.digest
                ));
                let staged = layers.staging(&key).map_err(|e| e.to_string())?;
                let target = staged.clone();
                tokio::task::spawn_blocking(move || {
                    let f = std::fs::File::open(&blob).map_err(|e| e.to_string())?;
                    warren_runtime::layers::unpack_image_layer(f, &target)
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())??;
                layers.commit(&staged, &key).map_err(|e| e.to_string())?;
            }
            spec.layers.insert(0, layers.path(&key));
        }
        // The image's own settings: environment and working directory.
        let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
        let env: BTreeMap<String, String> = config["config"]["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str()?.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        spec.env = env;
        spec.workdir = config["config"]["WorkingDir"]
            .as_str()
            .filter(|w| !w.is_empty())
            .map(str::to_owned);
        spec.key = format!("image-{digest}");
        Ok(spec)
    }
}
