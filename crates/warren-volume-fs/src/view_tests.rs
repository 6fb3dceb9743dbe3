//! The view over a plain directory, mounted for real: it takes an idmapped mount (the kernel's
//! FUSE_ALLOW_IDMAP), a file a mapped user creates through that mount is stored with the
//! canonical id, and the kernel checks permissions against the owners shown. Needs root and
//! /dev/fuse; says so loudly and passes nothing when it cannot run.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use warren_runtime::host::idmapped::{clone_mount, is_mount_point, mapping_namespace};
use warren_runtime::host::ids::CANONICAL_BASE;

/// The host range the test's "sandbox" sees the canonical range as.
const SHOWN_BASE: u32 = 3_000_000;

fn as_user(uid: u32, script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("run setpriv")
}

#[test]
fn a_mapped_user_creates_files_stored_with_canonical_ids() {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED LOUDLY: the view test needs root and /dev/fuse");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let (src, view, shown) = (
        root.path().join("src"),
        root.path().join("view"),
        root.path().join("shown"),
    );
    for d in [&src, &view, &shown] {
        std::fs::create_dir(d).expect("mkdir");
    }
    std::os::unix::fs::chown(&src, Some(CANONICAL_BASE), Some(CANONICAL_BASE)).expect("chown");
    std::fs::write(src.join("roots.txt"), "root's").expect("write");
    std::os::unix::fs::chown(
        src.join("roots.txt"),
        Some(CANONICAL_BASE),
        Some(CANONICAL_BASE),
    )
    .expect("chown");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    // Everything on the path to the shown mount must be reachable by the mapped user.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let (s, v) = (src.clone(), view.clone());
    let server = std::thread::spawn(move || crate::serve(&s, &v));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_mount_point(&view) {
        assert!(Instant::now() < deadline, "the view did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }

    let userns = mapping_namespace(CANONICAL_BASE, SHOWN_BASE, None).expect("user namespace");
    let tree = clone_mount(&view, 0, Some(&userns)).expect("an idmapped mount of the view");
    rustix::mount::move_mount(
        &tree,
        "",
        rustix::fs::CWD,
        &shown,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .expect("move the idmapped mount into place");

    // Seen through the mount: canonical root as the shown range's root.
    assert_eq!(
        std::fs::metadata(shown.join("roots.txt"))
            .expect("stat")
            .uid(),
        SHOWN_BASE
    );
    let user = SHOWN_BASE + 1000;
    let made = as_user(user, &format!(
        "echo mine > {0}/mine.txt && mkdir {0}/dir && ln -s mine.txt {0}/link && mv {0}/mine.txt {0}/dir/",
        shown.display()
    ));
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for stored in ["dir", "dir/mine.txt", "link"] {
        let md = std::fs::symlink_metadata(src.join(stored)).expect("stat");
        assert_eq!(
            (md.uid(), md.gid()),
            (CANONICAL_BASE + 1000, CANONICAL_BASE + 1000),
            "{stored}"
        );
    }
    // Root's file is not the user's to change: the kernel checks, through the mapping.
    let denied = as_user(user, &format!("echo x >> {}/roots.txt", shown.display()));
    assert!(!denied.status.success());
    assert_eq!(
        std::fs::read_to_string(src.join("roots.txt")).expect("read"),
        "root's"
    );

    // The server ends when nothing holds its file system any more: the clone's descriptor too.
    drop(tree);
    let _ = rustix::mount::unmount(&shown, rustix::mount::UnmountFlags::DETACH);
    let _ = rustix::mount::unmount(&view, rustix::mount::UnmountFlags::DETACH);
    let _ = server.join();
}
