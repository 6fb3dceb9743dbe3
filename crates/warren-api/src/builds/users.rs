//! Users in a build: COPY owners named as in the image being built (`user`, `user:group`,
//! `1000:1000`), and RUN steps of E2B's dialect run as a user in a working directory, as E2B's
//! builder runs them (`user` in `/home/user` unless a step says otherwise).

use std::path::{Path, PathBuf};

use super::BuildError;

/// The uid and gid E2B's `user` gets when the image has no such account yet: the first RUN
/// step as `user` creates it with these ids (`as_user`).
const DEFAULT_USER_IDS: (u32, u32) = (1000, 1000);

/// A file of the image the layers (topmost first) make, as the overlay would show it. Whiteouts
/// are not followed: a deleted `/etc/passwd` is a broken image either way.
fn read_in_layers(layers: &[PathBuf], rel: &str) -> Option<String> {
    layers
        .iter()
        .find_map(|l| std::fs::read_to_string(l.join(rel)).ok())
}

/// The fields of `name`'s line in a passwd- or group-shaped file.
fn entry<'a>(db: Option<&'a str>, name: &str) -> Option<Vec<&'a str>> {
    db?.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[0] == name)
}

/// A user's uid and primary gid.
fn user_ids(passwd: Option<&str>, name: &str) -> Option<(u32, u32)> {
    let f = entry(passwd, name)?;
    Some((f[2].parse().ok()?, f[3].parse().ok()?))
}

fn group_id(group: Option<&str>, name: &str) -> Option<u32> {
    entry(group, name)?[2].parse().ok()
}

/// `owner` (`name`, `name:group`, `uid:gid`, `root`; none = root) as ids inside the sandbox.
pub fn resolve_owner(owner: Option<&str>, layers: &[PathBuf]) -> Result<(u32, u32), BuildError> {
    let Some(o) = owner.filter(|o| !o.is_empty()) else {
        return Ok((0, 0));
    };
    let passwd = read_in_layers(layers, "etc/passwd");
    let group = read_in_layers(layers, "etc/group");
    let unknown = || BuildError::Owner(o.to_owned());
    let (u, g) = match o.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (o, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) if u == "root" => (0, 0),
        Err(_) => match user_ids(passwd.as_deref(), u) {
            Some(ids) => ids,
            None if u == "user" => DEFAULT_USER_IDS,
            None => return Err(unknown()),
        },
    };
    let gid = match g {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) if g == "root" => 0,
            Err(_) => match group_id(group.as_deref(), g) {
                Some(gid) => gid,
                None if g == "user" => DEFAULT_USER_IDS.1,
                None => return Err(unknown()),
            },
        },
    };
    if uid >= 65_536 || gid >= 65_536 {
        return Err(unknown());
    }
    Ok((uid, gid))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script that runs `command` as `user` in `workdir`, both made when missing (as E2B's
/// builder does: `set_user("guest")` needs no `useradd` step). Runs as root first; `setpriv`
/// (util-linux) drops to the user where it exists, busybox images use `su`.
pub fn as_user(command: &str, user: &str, workdir: &Path) -> String {
    let (u, w, c) = (
        quote(user),
        quote(&workdir.to_string_lossy()),
        quote(command),
    );
    if user == "root" {
        return format!("mkdir -p -- {w} && cd -- {w} && exec bash -c {c}");
    }
    format!(
        "set -e
PATH=\"$PATH:/usr/sbin:/sbin\"
if ! id -u {u} >/dev/null 2>&1; then
  useradd -m -u {uid} -s /bin/bash {u} 2>/dev/null || useradd -m -s /bin/bash {u} 2>/dev/null || adduser -D {u}
fi
if [ ! -d {w} ]; then mkdir -p -- {w}; chown {u}: {w}; fi
cd -- {w}
home=$(getent passwd {u} | cut -d: -f6)
if command -v setpriv >/dev/null 2>&1; then
  exec setpriv --reuid={u} --regid=\"$(id -g {u})\" --init-groups env HOME=\"$home\" USER={u} LOGNAME={u} bash -c {c}
fi
exec su -s /bin/sh {u} -c {c}",
        uid = DEFAULT_USER_IDS.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_resolve_by_name_in_the_image_being_built() {
        let lower = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(lower.path().join("etc")).expect("etc");
        std::fs::write(
            lower.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/bash\nguest:x:1001:1002::/home/guest:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(lower.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        let layers = [lower.path().to_path_buf()];
        assert_eq!(
            resolve_owner(Some("guest"), &layers).expect("guest"),
            (1001, 1002)
        );
        assert_eq!(
            resolve_owner(Some("guest:staff"), &layers).expect("g:s"),
            (1001, 50)
        );
        assert_eq!(resolve_owner(Some("7:8"), &layers).expect("ids"), (7, 8));
        assert_eq!(resolve_owner(None, &layers).expect("none"), (0, 0));
        // `user` is made by the first RUN as `user` when the image lacks it.
        assert_eq!(
            resolve_owner(Some("user"), &layers).expect("user"),
            (1000, 1000)
        );
        assert!(resolve_owner(Some("nobody-here"), &layers).is_err());
        assert!(resolve_owner(Some("70000"), &layers).is_err());
    }

    #[test]
    fn a_command_as_a_user_quotes_everything_it_is_given() {
        let s = as_user("echo 'hi' && whoami", "guest", Path::new("/home/guest"));
        assert!(s.contains("bash -c 'echo '\\''hi'\\'' && whoami'"), "{s}");
        assert!(s.contains("--reuid='guest'"), "{s}");
        assert!(as_user("id", "root", Path::new("/")).starts_with("mkdir -p -- '/'"));
    }
}
