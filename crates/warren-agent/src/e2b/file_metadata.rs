//! User-defined file metadata (envd 0.6.2): an upload's `X-Metadata-<key>: <value>` headers are
//! kept as `user.e2b.<key>` extended attributes of the file, as envd keeps them, so they travel
//! with the file (renames, copies with xattrs, snapshots) and are shown in its `EntryInfo`.
//! Each upload replaces the file's metadata: keys it does not send are removed.

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::HeaderMap;

const HEADER_PREFIX: &str = "x-metadata-";
const XATTR_PREFIX: &str = "user.e2b.";
/// The kernel's limit on an xattr name (255) less the namespace prefix.
const MAX_KEY: usize = 255 - XATTR_PREFIX.len();
/// All metadata of one file, keys (with the prefix) and values: within one inode's xattr room.
const MAX_TOTAL: usize = 4096;

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// The metadata an upload's headers carry (keys lowercased, the first value of a repeated
/// header), or why it is refused.
pub fn from_headers(headers: &HeaderMap) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for name in headers.keys() {
        // Header names arrive lowercased.
        let Some(key) = name.as_str().strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        if key.is_empty() || out.contains_key(key) {
            continue;
        }
        let value = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| printable(v))
            .ok_or_else(|| format!("metadata {key:?}: the value must be printable US-ASCII"))?;
        if !printable(key) || key.len() > MAX_KEY {
            return Err(format!(
                "metadata key {key:?}: printable US-ASCII of at most {MAX_KEY} bytes"
            ));
        }
        out.insert(key.to_owned(), value.to_owned());
    }
    let total: usize = out
        .iter()
        .map(|(k, v)| XATTR_PREFIX.len() + k.len() + v.len())
        .sum();
    if total > MAX_TOTAL {
        return Err(format!(
            "metadata of {total} bytes (keys, values and the xattr prefix) is over the {MAX_TOTAL}-byte limit"
        ));
    }
    Ok(out)
}

/// Replaces the metadata of `path` with `metadata`.
pub fn replace(path: &Path, metadata: &BTreeMap<String, String>) -> std::io::Result<()> {
    for key in stored_keys(path)? {
        if !metadata.contains_key(&key) {
            rustix::fs::removexattr(path, format!("{XATTR_PREFIX}{key}").as_str())?;
        }
    }
    for (key, value) in metadata {
        rustix::fs::setxattr(
            path,
            format!("{XATTR_PREFIX}{key}").as_str(),
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    Ok(())
}

fn stored_keys(path: &Path) -> std::io::Result<Vec<String>> {
    // Asked for the size first: most files have no xattrs, and every listed entry comes here.
    let size = match rustix::fs::listxattr_query(path) {
        Ok(0) => return Ok(Vec::new()),
        Ok(size) => size,
        // A file system without xattrs holds no metadata.
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::listxattr(path, &mut names[..])?;
    Ok(names[..n]
        .split(|b| *b == 0)
        .filter_map(|n| std::str::from_utf8(n).ok())
        .filter_map(|n| n.strip_prefix(XATTR_PREFIX))
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The metadata of `path` (none when it has none, or its file system keeps no xattrs).
pub fn read(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in stored_keys(path).unwrap_or_default() {
        let mut value = vec![0u8; MAX_TOTAL];
        if let Ok(n) = rustix::fs::getxattr(
            path,
            format!("{XATTR_PREFIX}{key}").as_str(),
            &mut value[..],
        ) {
            out.insert(key, String::from_utf8_lossy(&value[..n]).into_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn headers_give_lowercased_keys_and_bad_ones_are_refused() {
        let mut h = HeaderMap::new();
        h.insert("X-Metadata-Author", HeaderValue::from_static("mish"));
        h.insert("x-metadata-purpose", HeaderValue::from_static("upload"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let m = from_headers(&h).expect("good metadata");
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec![
                ("author".into(), "mish".into()),
                ("purpose".into(), "upload".into())
            ]
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-metadata-big",
            HeaderValue::from_str(&"v".repeat(5000)).expect("value"),
        );
        assert!(from_headers(&h).is_err());
    }

    #[test]
    fn metadata_is_replaced_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("f");
        std::fs::write(&f, "x").expect("file");
        let first: BTreeMap<_, _> =
            [("a".to_owned(), "1".to_owned()), ("b".into(), "2".into())].into();
        match replace(&f, &first) {
            Ok(()) => {}
            // This test machine's temporary directory keeps no user xattrs.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return,
            Err(e) => panic!("replace: {e}"),
        }
        assert_eq!(read(&f), first);
        let second: BTreeMap<_, _> = [("b".to_owned(), "3".to_owned())].into();
        replace(&f, &second).expect("replace");
        assert_eq!(read(&f), second);
    }
}
