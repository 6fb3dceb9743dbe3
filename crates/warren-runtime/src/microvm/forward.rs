//! The host end of the agent channel: a unix socket (what the proxy expects of every tier)
//! whose connections are relayed to the guest agent's TCP port, dialled from inside the
//! sandbox's network namespace.

use std::path::{Path, PathBuf};

use super::{DriverError, GUEST_ADDRESS, GUEST_AGENT_PORT};
use crate::host::network::in_netns;

pub fn spawn(socket: &Path, netns: PathBuf) -> Result<tokio::task::JoinHandle<()>, DriverError> {
    let listener = tokio::net::UnixListener::bind(socket).map_err(|source| DriverError::Io {
        what: "agent socket".into(),
        source,
    })?;
    Ok(tokio::spawn(async move {
        // Relays live in this set, so aborting the forwarder (the sandbox is destroyed) ends
        // them too: a dead guest never closes its TCP side, they would wait forever.
        let mut relays = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((client, _)) = accepted else { break };
                    relays.spawn(relay(client, netns.clone()));
                }
                Some(_) = relays.join_next(), if !relays.is_empty() => {}
            }
        }
    }))
}

async fn relay(mut client: tokio::net::UnixStream, netns: PathBuf) {
    let Ok(Ok(mut guest)) = tokio::task::spawn_blocking(move || dial_guest(&netns)).await else {
        return; // the guest is gone or not up yet: the client sees EOF
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut guest).await;
}

/// Connects to the guest agent from inside the sandbox's network namespace.
pub(super) fn dial_guest(netns: &Path) -> std::io::Result<tokio::net::TcpStream> {
    let stream = in_netns(netns, || {
        let s = std::net::TcpStream::connect((GUEST_ADDRESS, GUEST_AGENT_PORT))?;
        s.set_nodelay(true)?;
        Ok(s)
    })?;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}
