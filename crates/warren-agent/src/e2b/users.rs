//! The user an envd call acts as. The E2B SDKs name it in `Authorization: Basic <user:>`; the
//! host's proxy, which checks the real credential (`X-Access-Token`) and strips every
//! credential, passes the name on as `X-Warren-User`. Without one, envd's default user applies:
//! `user` where the template has that account, else root.

use std::path::PathBuf;

use axum::http::HeaderMap;

use super::connect::RpcError;

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl User {
    fn root() -> Self {
        Self {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: PathBuf::from("/root"),
        }
    }

    /// A path as the user means it: relative paths start at the home directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = std::path::Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else if let Some(rest) = path.strip_prefix("~/") {
            self.home.join(rest)
        } else {
            self.home.join(p)
        }
    }

    /// Makes a file the agent (root) created belong to the user.
    pub fn own(&self, path: &std::path::Path) {
        if self.uid != 0 {
            let _ = std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid));
        }
    }
}

/// `dir` and those of its ancestors that do not exist yet, deepest first: what a
/// `create_dir_all(dir)` is about to make, for the user to own afterwards.
pub fn missing_dirs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(up) => p = up,
            None => break,
        }
    }
    missing
}

/// The account `name` from /etc/passwd.
pub fn lookup(name: &str) -> Option<User> {
    if name == "root" {
        return Some(User::root());
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(User {
            name: name.to_owned(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: PathBuf::from(f[5]),
        })
    })
}

fn default_user() -> User {
    lookup("user").unwrap_or_else(User::root)
}

/// The user named by the request (`username` query parameter or Basic authorization), or the
/// default one.
pub fn from_request(headers: &HeaderMap, username: Option<&str>) -> Result<User, RpcError> {
    let named = match username.filter(|u| !u.is_empty()) {
        Some(u) => Some(u.to_owned()),
        None => basic_user(headers),
    };
    match named {
        None => Ok(default_user()),
        Some(name) => lookup(&name).ok_or_else(|| {
            RpcError::invalid(format!("user {name:?} does not exist in this sandbox"))
        }),
    }
}

fn basic_user(headers: &HeaderMap) -> Option<String> {
    let name = headers.get("x-warren-user")?.to_str().ok()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}
