//! The guest's initramfs: busybox (static), the virtio/overlay modules of the guest kernel, and
//! the init script, built once per server start. Each sandbox's initrd is that archive followed by
//! a second small one with its configuration (the kernel unpacks concatenated archives in order),
//! so secrets such as env values travel inside the VM image and never on QEMU's command line.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::driver::DriverError;

const INIT_SCRIPT: &str = include_str!("init.sh");

/// Kernel modules the guest needs, in load order (dependencies first). Debian's cloud kernel
/// builds all of them as modules.
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "overlay",
];

/// Everything the guest needs to know about its sandbox.
pub struct GuestConfig<'a> {
    pub sandbox_id: &'a str,
    pub template: &'a str,
    pub hostname: String,
    pub vcpu: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub workdir: &'a str,
    pub guest_ip: std::net::Ipv4Addr,
    pub gateway_ip: std::net::Ipv4Addr,
    pub agent_port: u16,
    pub env: &'a BTreeMap<String, String>,
    pub resolv_conf: Option<&'a str>,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> DriverError {
    let what = what.to_owned();
    move |source| DriverError::Io { what, source }
}

/// Builds the shared part: `/init`, `/bin/busybox`, `/modules/*.ko` and `/modules/order`.
pub fn build_base(busybox: &Path, modules_dir: &Path) -> Result<Vec<u8>, DriverError> {
    let mut entries: Vec<(String, u32, Vec<u8>)> = vec![
        ("bin".into(), 0o040755, vec![]),
        ("dev".into(), 0o040755, vec![]),
        ("proc".into(), 0o040755, vec![]),
        ("sys".into(), 0o040755, vec![]),
        ("modules".into(), 0o040755, vec![]),
        ("init".into(), 0o100755, INIT_SCRIPT.as_bytes().to_vec()),
        (
            "bin/busybox".into(),
            0o100755,
            std::fs::read(busybox).map_err(io("read busybox"))?,
        ),
        ("modules/order".into(), 0o100644, MODULES.join("\n").into()),
    ];
    let found = find_modules(modules_dir);
    for m in MODULES {
        let path = found
            .get(*m)
            .ok_or_else(|| DriverError::MissingKernelModule {
                module: (*m).to_owned(),
                dir: modules_dir.to_path_buf(),
            })?;
        let bytes = std::fs::read(path).map_err(io("read kernel module"))?;
        entries.push((format!("modules/{m}.ko"), 0o100644, bytes));
    }
    archive(entries)
}

/// The per-sandbox archive appended to the base one.
pub fn build_config(cfg: &GuestConfig) -> Result<Vec<u8>, DriverError> {
    let vars = [
        ("WARREN_SANDBOX_ID", cfg.sandbox_id.to_owned()),
        ("WARREN_TEMPLATE", cfg.template.to_owned()),
        ("WARREN_HOSTNAME", cfg.hostname.clone()),
        ("WARREN_VCPU", cfg.vcpu.to_string()),
        ("WARREN_MEMORY_MB", cfg.memory_mb.to_string()),
        ("WARREN_DISK_MB", cfg.disk_mb.to_string()),
        ("WARREN_WORKDIR", cfg.workdir.to_owned()),
        ("WARREN_GUEST_IP", cfg.guest_ip.to_string()),
        ("WARREN_GATEWAY_IP", cfg.gateway_ip.to_string()),
        ("WARREN_AGENT_PORT", cfg.agent_port.to_string()),
    ];
    let config: String = vars
        .iter()
        .map(|(k, v)| format!("{k}={}\n", shell_quote(v)))
        .collect();
    let env = serde_json::to_vec(cfg.env).map_err(|source| DriverError::Encode {
        what: "the environment",
        source,
    })?;
    let mut entries = vec![
        ("warren".to_owned(), 0o040700, vec![]),
        ("warren/config".to_owned(), 0o100600, config.into_bytes()),
        ("warren/env.json".to_owned(), 0o100600, env),
    ];
    if let Some(resolv) = cfg.resolv_conf {
        entries.push((
            "warren/resolv.conf".into(),
            0o100644,
            resolv.as_bytes().to_vec(),
        ));
    }
    archive(entries)
}

/// The per-sandbox archive of a boot probe: the agent alone, straight from its disk.
pub fn build_probe_config() -> Result<Vec<u8>, DriverError> {
    archive(vec![
        ("warren".to_owned(), 0o040700, vec![]),
        (
            "warren/config".to_owned(),
            0o100600,
            b"WARREN_BOOT_PROBE=1\n".to_vec(),
        ),
        ("warren/env.json".to_owned(), 0o100600, b"{}".to_vec()),
    ])
}

/// Single-quotes `s` for the guest's shell (`'` becomes `'\''`).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn archive(entries: Vec<(String, u32, Vec<u8>)>) -> Result<Vec<u8>, DriverError> {
    let mut out = Vec::new();
    for (ino, (name, mode, data)) in entries.into_iter().enumerate() {
        let len = u32::try_from(data.len()).map_err(|_| DriverError::TooLarge(name.clone()))?;
        let mut w = cpio::NewcBuilder::new(&name)
            .ino(ino as u32 + 1)
            .mode(mode)
            .nlink(if mode & 0o040000 != 0 { 2 } else { 1 })
            .write(out, len);
        w.write_all(&data).map_err(io("write initramfs"))?;
        out = w.finish().map_err(io("write initramfs"))?;
    }
    cpio::newc::trailer(out).map_err(io("write initramfs"))
}

/// `name -> path` of every `.ko` below `dir`.
fn find_modules(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                found.insert(name.to_owned(), path);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn config_archive_is_newc_with_trailer() -> Result<(), Box<dyn std::error::Error>> {
        let env = BTreeMap::from([("K".to_owned(), "v'1".to_owned())]);
        let bytes = build_config(&GuestConfig {
            sandbox_id: "abc",
            template: "base",
            hostname: "sandbox-abc".into(),
            vcpu: 1,
            memory_mb: 512,
            disk_mb: 1024,
            workdir: "/my dir",
            guest_ip: "10.0.0.2".parse()?,
            gateway_ip: "10.0.0.1".parse()?,
            agent_port: 7777,
            env: &env,
            resolv_conf: None,
        })?;
        assert!(bytes.starts_with(b"070701"));
        let mut reader = cpio::NewcReader::new(std::io::Cursor::new(bytes))?;
        let mut names = vec![];
        loop {
            let name = reader.entry().name().to_owned();
            if reader.entry().is_trailer() {
                break;
            }
            if name == "warren/config" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut reader, &mut text)?;
                assert!(text.contains("WARREN_WORKDIR='/my dir'\n"));
            }
            names.push(name);
            reader = cpio::NewcReader::new(reader.finish()?)?;
        }
        assert_eq!(names, ["warren", "warren/config", "warren/env.json"]);
        Ok(())
    }
}
