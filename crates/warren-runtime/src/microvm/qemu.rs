//! QEMU as the microVM tier's VMM: the command line of a `microvm` machine and a QMP client.
//!
//! The guest image (kernel, initramfs, disks by serial, a tap link) makes no QEMU-specific
//! assumption, so another VMM (Firecracker, Cloud Hypervisor) can boot the same guest: see
//! docs/isolation.md.

use std::path::Path;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How guest instructions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation (vmx/svm) through /dev/kvm.
    Kvm,
    /// QEMU's software emulation: correct, about an order of magnitude slower.
    Tcg {
        /// The host's TSC rate, which is the emulated guest's too: told to the guest kernel so
        /// that it does not calibrate it (see `tsc`). `None` where the host's TSC is not invariant.
        tsc_khz: Option<u32>,
    },
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg { .. } => "tcg",
        }
    }
}

/// What the host offers for running guests.
#[derive(Debug, Clone, Copy)]
pub struct HostVirt {
    pub kvm_device: bool,
    /// vmx or svm among the CPU flags.
    pub hardware_virtualisation: bool,
    /// `/dev/kvm` is backed by PVM (pagetable-based virtualisation, `kvm_pvm`): it accepts KVM
    /// ioctls but cannot run a stock guest kernel at speed.
    pub pvm: bool,
    /// The host's invariant TSC rate (see `tsc::host_khz`).
    pub tsc_khz: Option<u32>,
}

impl HostVirt {
    pub fn read() -> Self {
        let flags = super::tsc::CpuFlags::read();
        Self {
            kvm_device: Path::new("/dev/kvm").exists(),
            hardware_virtualisation: flags.has("vmx") || flags.has("svm"),
            pvm: Path::new("/sys/module/kvm_pvm").exists(),
            tsc_khz: super::tsc::host_khz(&flags),
        }
    }

    /// KVM when stock guests can run on it, else TCG with the reason.
    pub fn accel(self) -> (Accel, Option<String>) {
        let why_not = if !self.kvm_device {
            "no /dev/kvm"
        } else if self.pvm {
            "/dev/kvm is PVM (kvm_pvm), which cannot run stock guest kernels"
        } else if !self.hardware_virtualisation {
            "the CPU shows no vmx/svm hardware virtualisation"
        } else {
            return (Accel::Kvm, None);
        };
        (
            Accel::Tcg {
                tsc_khz: self.tsc_khz,
            },
            Some(why_not.into()),
        )
    }
}

/// The acceleration this host allows (see `HostVirt::accel`).
pub fn detect_accel() -> (Accel, Option<String>) {
    HostVirt::read().accel()
}

/// One guest to boot.
pub struct VmLaunch<'a> {
    pub name: &'a str,
    pub vcpu: u32,
    pub memory_mb: u32,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub root_image: &'a Path,
    pub data_disk: &'a Path,
    pub agent_image: &'a Path,
    /// An open tap device (see `tap::open`), inherited by QEMU under this number.
    pub tap_fd: i32,
    pub qmp_socket: &'a Path,
    /// Resume from a saved state (`Qmp::save_state`) read from this inherited descriptor.
    pub incoming_fd: Option<i32>,
}

/// The machine every guest runs on: console on stdout, kernel and initrd, no devices yet.
fn machine(
    qemu: &Path,
    accel: Accel,
    name: &str,
    vcpu: u32,
    memory_mb: u32,
    kernel: &Path,
    initrd: &Path,
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(qemu);
    c.args(["-name", name])
        .args(["-M", "microvm,acpi=on"])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        // QEMU's own seccomp filter: no exec, no privilege or scheduling changes, no obsolete
        // system calls, even if a guest finds a bug in a device model.
        .args([
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ]);
    match accel {
        // `-cpu host` aborts on some hosts over the arch-capabilities MSR.
        Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
        // A small translation cache: the default (1 GiB) would count against the sandbox's
        // memory limit.
        Accel::Tcg { .. } => c.args(["-accel", "tcg,thread=multi,tb-size=64", "-cpu", "max"]),
    };
    c.args(["-smp", &vcpu.max(1).to_string()])
        .args(["-m", &format!("{}M", memory_mb.max(128))])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(kernel_command_line(accel));
    c
}

fn kernel_command_line(accel: Accel) -> String {
    let mut line = String::from(
        "console=ttyS0 quiet loglevel=3 panic=-1 reboot=t pci=off random.trust_cpu=on",
    );
    if let Accel::Tcg { tsc_khz: Some(khz) } = accel {
        // `tsc=reliable` as well: the guest's clocksource watchdog judges the TSC against
        // jiffies, which an emulated guest loses whenever its vCPU thread is descheduled; it
        // then marked the TSC unstable within two seconds of boot and kept time by jiffies,
        // running 15 % slow on a busy host. The TSC is the host's invariant counter, which the
        // host itself keeps time by.
        line.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
    }
    line
}

fn disk(c: &mut tokio::process::Command, id: &str, file: &Path, read_only: bool) {
    let ro = if read_only { ",readonly=on" } else { "" };
    c.arg("-drive").arg(format!(
        "id={id},file={},format=raw,if=none,cache=unsafe{ro}",
        file.display()
    ));
    c.args([
        "-device",
        &format!("virtio-blk-device,drive={id},serial=warren-{id}"),
    ]);
}

/// A guest with nothing but the agent disk, booting to the agent (the tier's floor).
pub fn boot_probe_command(
    qemu: &Path,
    accel: Accel,
    kernel: &Path,
    initrd: &Path,
    agent_image: &Path,
) -> tokio::process::Command {
    let mut c = machine(qemu, accel, "warren-boot-probe", 1, 256, kernel, initrd);
    disk(&mut c, "agent", agent_image, true);
    c
}

/// The QEMU command line of a sandbox. The guest console (kernel messages, the agent's `ready`)
/// is on stdout.
pub fn command(qemu: &Path, accel: Accel, vm: &VmLaunch) -> tokio::process::Command {
    let mut c = machine(
        qemu,
        accel,
        vm.name,
        vm.vcpu,
        vm.memory_mb,
        vm.kernel,
        vm.initrd,
    );
    disk(&mut c, "root", vm.root_image, true);
    disk(&mut c, "data", vm.data_disk, false);
    disk(&mut c, "agent", vm.agent_image, true);
    c.args(["-netdev", &format!("tap,id=net0,fd={}", vm.tap_fd)])
        .args(["-device", "virtio-net-device,netdev=net0"])
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            vm.qmp_socket.display()
        ));
    if let Some(fd) = vm.incoming_fd {
        c.arg("-incoming").arg(format!("fd:{fd}"));
    }
    c
}

/// One QMP command as sent on the wire.
fn message(command: &str, arguments: Value) -> String {
    json!({ "execute": command, "arguments": arguments }).to_string() + "\n"
}

/// A migration bandwidth no local disk reaches (64 GiB/s).
const UNTHROTTLED_BYTES_PER_SECOND: u64 = 64 << 30;

/// A QMP connection (one command at a time).
///
/// Hand-written: QMP is newline-delimited JSON with a greeting and a capabilities handshake, a few
/// dozen lines; the Rust QAPI crates generate bindings for QEMU's whole schema.
pub struct Qmp {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

/// A QMP conversation with a guest's QEMU failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("QMP connection closed")]
    Closed,
    #[error("QMP reply: {0}")]
    BadReply(serde_json::Error),
    /// QEMU refused a command; its description says why
    #[error("QMP {command}: {desc}")]
    Refused { command: String, desc: String },
    #[error("saving the guest failed: {0}")]
    SaveFailed(String),
    #[error("restoring the guest failed (QEMU status {0:?})")]
    RestoreFailed(Option<String>),
}

fn qmp_err(what: &'static str) -> impl FnOnce(std::io::Error) -> QmpError {
    move |source| QmpError::Io { what, source }
}

impl Qmp {
    pub async fn connect(socket: &Path) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(qmp_err("connect"))?;
        let (r, writer) = stream.into_split();
        let mut qmp = Self {
            lines: BufReader::new(r).lines(),
            writer,
        };
        qmp.read_line().await?; // greeting
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read_line(&mut self) -> Result<Value, QmpError> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(qmp_err("read"))?
            .ok_or(QmpError::Closed)?;
        serde_json::from_str(&line).map_err(QmpError::BadReply)
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.writer
            .write_all(message(command, arguments).as_bytes())
            .await
            .map_err(qmp_err("write"))?;
        self.reply(command).await
    }

    /// The reply to the command just sent; asynchronous events are skipped.
    async fn reply(&mut self, command: &str) -> Result<Value, QmpError> {
        loop {
            let reply = self.read_line().await?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(QmpError::Refused {
                    command: command.to_owned(),
                    desc: err
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("failed")
                        .to_owned(),
                });
            }
        }
    }

    /// Stops the guest's vCPUs (memory and devices stay as they are).
    pub async fn stop(&mut self) -> Result<(), QmpError> {
        self.execute("stop", json!({})).await.map(drop)
    }

    pub async fn cont(&mut self) -> Result<(), QmpError> {
        self.execute("cont", json!({})).await.map(drop)
    }

    /// Saves the stopped guest's whole state (memory, devices) into `file`, handed to QEMU over
    /// the QMP socket (QEMU runs under a seccomp filter that forbids it to open or exec).
    pub async fn save_state(&mut self, file: &std::fs::File) -> Result<(), QmpError> {
        self.send_fd("warren-state", file).await?;
        // QEMU throttles a migration to 128 MiB/s by default (it expects a network, and a
        // running guest); the guest is stopped and the stream goes to a local file.
        self.execute(
            "migrate-set-parameters",
            json!({ "max-bandwidth": UNTHROTTLED_BYTES_PER_SECOND }),
        )
        .await?;
        self.execute("migrate", json!({ "uri": "fd:warren-state" }))
            .await?;
        loop {
            let info = self.execute("query-migrate", json!({})).await?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    return Err(QmpError::SaveFailed(
                        info.get("error-desc")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown error")
                            .to_owned(),
                    ))
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// Waits until a guest started with `-incoming` has loaded its saved state.
    pub async fn wait_incoming(&mut self) -> Result<(), QmpError> {
        loop {
            let status = self.execute("query-status", json!({})).await?;
            match status.get("status").and_then(Value::as_str) {
                Some("inmigrate") => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Some("paused") | Some("postmigrate") | Some("prelaunch") | Some("running") => {
                    return Ok(())
                }
                other => return Err(QmpError::RestoreFailed(other.map(str::to_owned))),
            }
        }
    }

    /// `getfd`: passes `file` to QEMU under `name` (SCM_RIGHTS on the QMP socket).
    async fn send_fd(&mut self, name: &str, file: &std::fs::File) -> Result<(), QmpError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::AsRawFd;
        let msg = message("getfd", json!({ "fdname": name }));
        let fds = [file.as_raw_fd()];
        self.writer
            .as_ref()
            .writable()
            .await
            .map_err(qmp_err("write"))?;
        sendmsg::<()>(
            self.writer.as_ref().as_raw_fd(),
            &[std::io::IoSlice::new(msg.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| qmp_err("getfd")(e.into()))?;
        self.reply("getfd").await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulated_guest_is_told_the_tsc_rate_instead_of_calibrating_it() {
        let emulated = kernel_command_line(Accel::Tcg {
            tsc_khz: Some(2_596_120),
        });
        assert!(
            emulated.ends_with(" tsc_early_khz=2596120 tsc=reliable"),
            "{emulated}"
        );
        for line in [
            kernel_command_line(Accel::Kvm),
            kernel_command_line(Accel::Tcg { tsc_khz: None }),
        ] {
            assert!(!line.contains("tsc_early_khz"), "{line}");
        }
    }
}
