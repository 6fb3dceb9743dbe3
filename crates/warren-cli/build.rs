//! Puts the commit this build was made from into `WARREN_COMMIT` (`warren --version`,
//! `/health`): from the environment when a packager sets it, else from git, else "unknown" (a
//! source tarball). Here, in the binary crate, so that a commit recompiles only the binary; the
//! libraries learn it at start-up (`warren_api::set_commit`).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=WARREN_COMMIT");
    let commit = std::env::var("WARREN_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WARREN_COMMIT={commit}");
    // Built again when HEAD moves (a commit, a checkout), not on every edit. Only paths that
    // exist: cargo runs a build script whose watched file is missing on every build, and with it
    // recompiles this crate and everything above it.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = std::path::Path::new(&dir);
        for watched in [
            dir.join("HEAD"),
            dir.join("refs/heads"),
            dir.join("packed-refs"),
        ] {
            if watched.exists() {
                println!("cargo:rerun-if-changed={}", watched.display());
            }
        }
    }
}
