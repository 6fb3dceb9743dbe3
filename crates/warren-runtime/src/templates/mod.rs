//! Template root file systems: the built-in recipes and the on-disk cache they are built into.
//!
//! The cache lives outside any data dir (`--cache-dir`, default `/var/cache/warren`), so a fresh
//! data dir reuses it. A template is ready when `<cache>/templates/<name>/READY` holds the hash of
//! its recipe; changing a recipe rebuilds it.

mod builder;
mod recipes;

use std::path::{Path, PathBuf};

pub use builder::BuildError;
pub use recipes::{builtin_recipes, Recipe};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct TemplateCache {
    root: PathBuf,
    /// Debian mirror for debootstrap.
    mirror: String,
}

impl TemplateCache {
    pub fn new(cache_dir: &Path, mirror: Option<String>) -> Self {
        Self {
            root: cache_dir.join("templates"),
            mirror: mirror.unwrap_or_else(default_mirror),
        }
    }

    pub fn rootfs(&self, name: &str) -> PathBuf {
        self.root.join(name).join("rootfs")
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.root.join(name).join("READY")
    }

    pub fn is_ready(&self, recipe: &Recipe) -> bool {
        std::fs::read_to_string(self.marker(recipe.name))
            .is_ok_and(|h| h.trim() == recipe_hash(recipe))
    }

    /// Builds the template unless the cache already has it. `progress` receives human-readable
    /// lines. Concurrent builders (two servers, a server and the CLI) serialise on a file lock.
    pub async fn ensure(
        &self,
        recipe: &Recipe,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<PathBuf, BuildError> {
        if self.is_ready(recipe) {
            return Ok(self.rootfs(recipe.name));
        }
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| BuildError::io("cache dir", e))?;
        let _lock = builder::lock(&self.root.join(format!("{}.lock", recipe.name))).await?;
        if self.is_ready(recipe) {
            return Ok(self.rootfs(recipe.name));
        }
        builder::build(recipe, &self.root, &self.mirror, progress).await?;
        tokio::fs::write(self.marker(recipe.name), recipe_hash(recipe))
            .await
            .map_err(|e| BuildError::io("write marker", e))?;
        Ok(self.rootfs(recipe.name))
    }
}

/// What a built-in template's READY marker holds: changes with its recipe.
pub fn recipe_hash(r: &Recipe) -> String {
    let mut h = Sha256::new();
    h.update(r.suite);
    for p in &r.packages {
        h.update(b"\0");
        h.update(p);
    }
    for (path, content, mode) in r.files {
        h.update(format!("\0file={path}:{mode:o}:"));
        h.update(content);
    }
    h.update(format!("shift={}", crate::namespaces::ID_BASE));
    // Bumped when the build itself changes (v2: pip may install into the system's Python; v3:
    // the `user` account E2B's clients expect; v4: /etc/hosts names localhost, /workspace
    // belongs to `user`).
    h.update(b"build=v4");
    hex::encode(h.finalize())
}

/// The Debian mirror the machine's own apt uses, so template builds reach what the host reaches.
fn default_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                texts.push(t);
            }
        }
    }
    for t in &texts {
        for line in t.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let url = line.strip_prefix("URIs:").map(str::trim).or_else(|| {
                line.strip_prefix("deb ")
                    .and_then(|r| r.split_whitespace().find(|w| w.starts_with("http")))
            });
            if let Some(url) = url {
                if url.trim_end_matches('/').ends_with("/debian") {
                    return url.to_owned();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_owned()
}
