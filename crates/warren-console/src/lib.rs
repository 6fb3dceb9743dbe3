//! The web console's files. The front end lives in `web/` (Preact + TypeScript, built by Vite);
//! its build output `dist/` is committed and embedded here, so `warren serve` serves the console
//! with nothing else installed. `scripts/test` rebuilds it and fails when `dist/` is stale.

use std::borrow::Cow;

#[derive(rust_embed::Embed)]
#[folder = "dist/"]
struct Dist;

/// One file of the console.
pub struct Asset {
    pub body: Cow<'static, [u8]>,
    pub content_type: String,
    /// Vite names its bundles by content hash: they never change under the same name.
    pub immutable: bool,
}

/// The file at `path` (relative to `/console/`); the page itself for an empty path.
pub fn asset(path: &str) -> Option<Asset> {
    let path = if path.is_empty() { "index.html" } else { path };
    let file = Dist::get(path)?;
    Some(Asset {
        content_type: file.metadata.mimetype().to_owned(),
        body: file.data,
        immutable: path.starts_with("assets/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_bundles_are_embedded() {
        let page = asset("").expect("index.html is embedded");
        assert!(page.content_type.starts_with("text/html"));
        let html = String::from_utf8_lossy(&page.body);
        // Every file the page loads is embedded under the path it names.
        let mut loaded = 0;
        for part in html.split("/console/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                asset(name).is_some(),
                "{name} is named by the page but not embedded"
            );
            loaded += 1;
        }
        assert!(loaded >= 2, "the page loads its script and style: {html}");
        assert!(asset("no/such/file.js").is_none());
    }
}
