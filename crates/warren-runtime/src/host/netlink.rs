//! Network namespaces and links made in-process: `unshare` + a bind mount for the namespace
//! (what `ip netns add` does) and rtnetlink for links, addresses and routes.
//!
//! Why not `ip`: every `ip -n NS …` copies the host's mount namespace to remount `/sys`, and the
//! host holds one mount per sandbox namespace under `/run/netns`, so each sandbox's set-up got
//! slower with every sandbox already running (9 ms with ten, 21 ms with 800), on top of a process
//! start per step. A netlink socket opened inside the new namespace needs neither.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use nix::mount::{MntFlags, MsFlags};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Where named network namespaces live, shared with `ip netns`.
pub const NETNS_DIR: &str = "/run/netns";

/// The loopback device's index, the same in every new network namespace.
const LOOPBACK_INDEX: u32 = 1;

/// A netlink connection to the kernel, bound to the network namespace it was opened in.
#[derive(Clone)]
pub struct Netlink(Handle);

/// A namespace just made: the file that names it and a connection opened inside it. Dropping it
/// closes the connection (a socket inside a namespace keeps the namespace alive).
pub struct NewNamespace {
    pub file: File,
    pub inside: Netlink,
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does the first time, so that
/// namespaces named there are seen in mount namespaces copied from the host's.
pub fn prepare_netns_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_DIR)?;
    let share = || {
        nix::mount::mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match share() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself first.
        Err(nix::errno::Errno::EINVAL) => {
            nix::mount::mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            Ok(share()?)
        }
        Err(e) => Err(e.into()),
    }
}

impl Netlink {
    /// A connection in the calling thread's network namespace (the host's, for the server).
    pub fn connect() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self(handle))
    }

    /// Creates the network namespace named by `path` (a new file under `NETNS_DIR`; an existing
    /// one is an error, never a namespace shared by two sandboxes) with a connection inside it.
    /// unshare changes only the calling thread's namespace, so this runs on a thread of its own
    /// that ends right after.
    pub async fn add_namespace(path: &Path) -> io::Result<NewNamespace> {
        let runtime = tokio::runtime::Handle::current();
        let path = path.to_path_buf();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("warren-netns".into())
            .spawn(move || {
                let _ = tx.send(new_namespace_on_this_thread(&path, &runtime));
            })?;
        rx.await
            .map_err(|_| io::Error::other("the network namespace thread ended early"))?
    }

    /// Sets the link with `index` up.
    pub async fn set_up(&self, index: u32) -> Result<(), rtnetlink::Error> {
        self.0
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
    }

    pub async fn loopback_up(&self) -> Result<(), rtnetlink::Error> {
        self.set_up(LOOPBACK_INDEX).await
    }

    /// Adds a veth pair: `name` here, `peer` in the namespace of `peer_ns`; both stay down.
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_ns: &File,
    ) -> Result<(), rtnetlink::Error> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_owned())
            .setns_by_fd(peer_ns.as_raw_fd())
            .build();
        let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.0.link().add(pair).execute().await
    }

    /// The index of link `name`, if it exists.
    pub async fn index_of(&self, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
        let mut links = self.0.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if is_no_such_device(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Gives link `index` the address `address/prefix` and sets it up.
    pub async fn address_up(
        &self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), rtnetlink::Error> {
        self.0
            .address()
            .add(index, address.into(), prefix)
            .execute()
            .await?;
        self.set_up(index).await
    }

    pub async fn default_route(&self, gateway: Ipv4Addr) -> Result<(), rtnetlink::Error> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.0.route().add(route).execute().await
    }

    /// Deletes link `name`; one that does not exist is no error.
    pub async fn delete_link(&self, name: &str) -> Result<(), rtnetlink::Error> {
        let Some(index) = self.index_of(name).await? else {
            return Ok(());
        };
        match self.0.link().del(index).execute().await {
            Err(e) if !is_no_such_device(&e) => Err(e),
            _ => Ok(()),
        }
    }
}

fn new_namespace_on_this_thread(
    path: &Path,
    runtime: &tokio::runtime::Handle,
) -> io::Result<NewNamespace> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)?;
    // From here on the name is ours: a failure removes it again (never one that existed).
    let made = bind_new_namespace(path, runtime);
    if made.is_err() {
        let _ = remove_namespace(path);
    }
    made
}

fn bind_new_namespace(path: &Path, runtime: &tokio::runtime::Handle) -> io::Result<NewNamespace> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    nix::mount::mount(
        Some("/proc/thread-self/ns/net"),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    let file = File::open(path)?;
    // The socket belongs to the namespace it is opened in, this thread's new one; registering
    // it with the server's reactor needs the runtime entered.
    let _runtime = runtime.enter();
    let inside = Netlink::connect()?;
    Ok(NewNamespace { file, inside })
}

/// Unmounts and removes a namespace's name (what `ip netns del` does); the namespace itself ends
/// with the last process or socket in it. A name that is not there is no error.
pub fn remove_namespace(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Turns IPv6 off on link `link` of the calling thread's network namespace; on a kernel without
/// IPv6 there is nothing to do.
pub fn disable_ipv6(link: &str) -> io::Result<()> {
    match std::fs::write(format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6"), "1") {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// The errno the kernel answered a request with, if it did.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn is_no_such_device(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(libc::ENODEV)
}
