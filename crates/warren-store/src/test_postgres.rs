//! A private PostgreSQL server for the store's tests: Debian's `postgresql` binaries, started
//! once per test process in a temporary directory as the unprivileged `postgres` user, on a
//! loopback port. It dies with the test process (SIGQUIT through the parent-death signal of the
//! thread that started it, a thread that lives as long as the process). Each test gets a fresh
//! database of its own. Without the binaries the PostgreSQL half of the suite says so loudly and
//! runs nothing.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The server's port, or why there is none.
static SERVER: OnceLock<Result<u16, String>> = OnceLock::new();

fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Removes data directories of earlier test runs whose server is gone.
fn remove_stale(root: &Path) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("warren-store-pg-") {
            continue;
        }
        let pid: Option<i32> = std::fs::read_to_string(e.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()));
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn start() -> Result<u16, String> {
    let bin = bin_dir().ok_or(
        "PostgreSQL binaries not found under /usr/lib/postgresql (apt-get install postgresql)",
    )?;
    let (uid, gid) = postgres_ids().ok_or("no postgres user (apt-get install postgresql)")?;
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);
    let dir = tmp.join(format!("warren-store-pg-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
    let initdb = Command::new(bin.join("initdb"))
        .args([
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "-D",
        ])
        .arg(&data)
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !initdb.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        ));
    }
    let port = free_port()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let postgres = bin.join("postgres");
    // The thread that forks the server must outlive every test: the parent-death signal is
    // tied to it, not to the process.
    std::thread::spawn(move || {
        let mut cmd = Command::new(postgres);
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&dir)
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl with plain integer arguments, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(format!("postgres: {e}")));
            }
        }
        // Keep the thread (and so the server's parent-death signal) until the process exits.
        loop {
            std::thread::park();
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("PostgreSQL did not start within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(port)
}

/// A fresh, empty database on the test server; None (after a loud note) without PostgreSQL.
pub async fn database() -> Option<String> {
    let port = match SERVER.get_or_init(start) {
        Ok(p) => *p,
        Err(why) => {
            eprintln!("SKIPPED LOUDLY: store tests on PostgreSQL: {why}");
            return None;
        }
    };
    let name = format!("t_{}", hex::encode(rand::random::<[u8; 6]>()));
    let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    sqlx::any::install_default_drivers();
    // The port answers before the server takes connections ("the database system is starting
    // up"): try again for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await {
            Ok(conn) => break conn,
            Err(e) if Instant::now() < deadline && e.to_string().contains("starting up") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect to the test PostgreSQL: {e}"),
        }
    };
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    Some(format!("postgres://postgres@127.0.0.1:{port}/{name}"))
}
