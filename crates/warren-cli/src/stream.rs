//! The terminal side of the agent's WebSockets: `warren exec --stream` and `warren shell`.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;
use warren_wire::agent::{StreamMessage, TerminalMessage};

use crate::client::{Agent, Socket};

async fn send(socket: &mut Socket, msg: Value) -> anyhow::Result<()> {
    socket
        .send(Message::Text(msg.to_string().into()))
        .await
        .context("the sandbox closed the connection")
}

/// The next message of a shape the client knows, or None once the socket is closed (messages it
/// does not know are skipped).
async fn next<T: DeserializeOwned>(socket: &mut Socket) -> Option<T> {
    while let Some(Ok(msg)) = socket.next().await {
        let text = match msg {
            Message::Text(t) => t.as_str().to_owned(),
            Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Message::Close(_) => return None,
            _ => continue,
        };
        if let Ok(v) = serde_json::from_str(&text) {
            return Some(v);
        }
    }
    None
}

/// Runs `command` with bash, printing stdout and stderr as they arrive. Returns the exit code.
pub async fn execute(
    agent: &Agent,
    command: &str,
    timeout: u64,
    workdir: &str,
) -> anyhow::Result<i32> {
    let mut socket = agent.websocket("/execute/stream").await?;
    let start = json!({ "type": "execute", "code": command, "language": "bash", "timeout": timeout, "workdir": workdir });
    send(&mut socket, start).await?;
    let mut exit_code = None;
    while let Some(msg) = next::<StreamMessage>(&mut socket).await {
        match msg {
            StreamMessage::Stdout { data, .. } => {
                let mut out = std::io::stdout().lock();
                out.write_all(data.as_bytes())?;
                out.flush()?;
            }
            StreamMessage::Stderr { data, .. } => eprint!("{data}"),
            StreamMessage::Error { error, .. } => eprintln!("warren: {error}"),
            StreamMessage::Result { exit_code: c, .. } => exit_code = Some(c),
            StreamMessage::Complete { .. } => break,
        }
    }
    let _ = socket.close(None).await;
    exit_code.context("the stream ended without a result")
}

/// Puts the local terminal in raw mode for as long as it lives.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enable() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Self(None);
        }
        let Ok(saved) = tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        Self(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer, which outlives the call.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

/// An interactive shell: local keystrokes in, the sandbox's PTY out. Returns the shell's exit code.
pub async fn shell(agent: &Agent) -> anyhow::Result<i32> {
    let mut socket = agent.websocket("/terminal").await?;
    let resize = |(cols, rows): (u16, u16)| json!({ "type": "resize", "cols": cols, "rows": rows });
    if let Some(size) = terminal_size() {
        send(&mut socket, resize(size)).await?;
    }
    let _raw = RawMode::enable();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 4096];
    let mut stdin_open = true;
    loop {
        tokio::select! {
            msg = next::<TerminalMessage>(&mut socket) => match msg {
                Some(TerminalMessage::Output { data }) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(data.as_bytes())?;
                    out.flush()?;
                }
                Some(TerminalMessage::Exit { code }) => return Ok(code),
                Some(TerminalMessage::Error { error, .. }) => bail!("{error}"),
                None => bail!("the sandbox closed the terminal"),
            },
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => {
                    // End of local input: end the remote shell's input too (Ctrl-D).
                    stdin_open = false;
                    send(&mut socket, json!({ "type": "input", "data": "\u{4}" })).await?;
                }
                Ok(n) => {
                    let data = String::from_utf8_lossy(&buf[..n]).into_owned();
                    send(&mut socket, json!({ "type": "input", "data": data })).await?;
                }
            },
            _ = winch.recv() => {
                if let Some(size) = terminal_size() {
                    send(&mut socket, resize(size)).await?;
                }
            }
        }
    }
}
