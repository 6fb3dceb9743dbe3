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

use super::spec::{RegistryCredentials, TemplateSpec};
use super::Build;

/// Why an image could not be pulled as a build's base.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{image:?} is neither a local template nor an image reference: {source}")]
    Reference {
        image: String,
        source: oci_client::ParseError,
    },
    #[error("mirror reference: {0}")]
    Mirror(oci_client::ParseError),
    #[error("cannot pull {reference}: {source}")]
    Pull {
        reference: String,
        source: oci_client::errors::OciDistributionError,
    },
    #[error("layer {digest}: {source}")]
    Blob {
        digest: String,
        source: oci_client::errors::OciDistributionError,
    },
    #[error("unsupported layer digest {0}")]
    Digest(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Layer(#[from] warren_runtime::layers::LayerError),
    #[error("unpacking a layer panicked")]
    Panicked,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> RegistryError {
    move |source| RegistryError::Io { what, source }
}

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

    fn reference(&self, image: &str) -> Result<Reference, RegistryError> {
        let r: Reference = image.parse().map_err(|source| RegistryError::Reference {
            image: image.to_owned(),
            source,
        })?;
        match &self.mirror {
            Some(m) if r.registry() == "docker.io" || r.registry() == "index.docker.io" => {
                let tag = r.tag().unwrap_or("latest");
                let rewritten = match r.digest() {
                    Some(d) => format!("{m}/{}@{d}", r.repository()),
                    None => format!("{m}/{}:{tag}", r.repository()),
                };
                rewritten.parse().map_err(RegistryError::Mirror)
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
    ) -> Result<TemplateSpec, RegistryError> {
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
            .map_err(|source| RegistryError::Pull {
            reference: reference.to_string(),
            source,
        })?;
        build.log(format!(
            "  manifest {digest}: {} layers",
            manifest.layers.len()
        ));
        tokio::fs::create_dir_all(&self.blobs)
            .await
            .map_err(io("blob store"))?;
        let mut spec = TemplateSpec::default();
        for (i, layer) in manifest.layers.iter().enumerate() {
            let hex = layer
                .digest
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| RegistryError::Digest(layer.digest.clone()))?
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
                    let mut file = tokio::fs::File::create(&part).await.map_err(io("blob"))?;
                    // pull_blob checks the content against the digest.
                    client
                        .pull_blob(&reference, layer, &mut file)
                        .await
                        .map_err(|source| RegistryError::Blob {
                            digest: layer.digest.clone(),
                            source,
                        })?;
                    tokio::fs::rename(&part, &blob).await.map_err(io("blob"))?;
                }
                build.log(format!(
                    "  layer {}/{} {:.19} unpacking",
                    i + 1,
                    manifest.layers.len(),
                    layer.digest
                ));
                let staged = layers.staging(&key)?;
                let target = staged.clone();
                tokio::task::spawn_blocking(move || {
                    let f = std::fs::File::open(&blob).map_err(io("blob"))?;
                    Ok::<_, RegistryError>(warren_runtime::layers::unpack_image_layer(f, &target)?)
                })
                .await
                .map_err(|_| RegistryError::Panicked)??;
                layers.commit(&staged, &key)?;
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
