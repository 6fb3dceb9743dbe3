//! What the node asks of the control plane about each request for a sandbox: is the token good,
//! is the owner within its request rate, where does the audit record go, and who answers the
//! one agent path handled on the host (`POST /execute/async`, whose callback must never enter the
//! sandbox). The control plane implements `Gate`; the node never decides these itself.

use std::time::Duration;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use futures_util::future::BoxFuture;
use warren_core::SandboxId;

use crate::agent_link::AgentLink;

/// A request the control plane turned away, as the client will see it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: axum::http::StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For rate limits: when to retry (also sent as `Retry-After`).
    pub retry_after_seconds: Option<u64>,
}

pub trait Gate: Send + Sync + 'static {
    /// For a valid, unexpired token of `sandbox`: the id of the API key that obtained it, if
    /// recorded. None when the token is not good for this sandbox.
    fn verify_token(&self, sandbox: &SandboxId, token: &str) -> Option<Option<String>>;
    /// Counts one request of the sandbox's owner against its rate limit.
    fn check_rate(&self, owner: &str) -> Result<(), Refusal>;
    /// Records one audited agent call.
    fn record(&self, call: AgentCall) -> BoxFuture<'static, ()>;
    /// A request reached a paused sandbox: resumes it if its owner asked for that (E2B's
    /// autoResume), and says whether it runs again. Nodes that cannot decide it say no.
    fn resume_on_request(&self, _sandbox: &SandboxId) -> BoxFuture<'static, bool> {
        Box::pin(async { false })
    }
    /// Answers `POST /execute/async` for `sandbox`: runs the code through `agent` and delivers
    /// the result to the caller's callback from the host.
    fn execute_async(
        &self,
        sandbox: SandboxId,
        agent: AgentLink,
        req: Request,
    ) -> BoxFuture<'static, Response>;
}

/// An agent call worth auditing: it runs code or changes files, env or processes. Reads are not
/// recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAction {
    Execute,
    ExecuteBackground,
    ExecuteAsync,
    ExecuteIpython,
    ExecuteStream,
    TerminalOpen,
    CommandsRun,
    CommandsBackground,
    FilesWrite,
    FilesUpload,
    FilesMkdir,
    FilesRemove,
    EnvReplace,
    EnvUpdate,
    EnvClear,
    ProcessKill,
    /// E2B: `process.Process/Start` (a command, maybe on a PTY).
    ProcessStart,
    /// E2B: input sent to a running process.
    ProcessInput,
    /// E2B: an entry moved or renamed.
    FilesMove,
    /// E2B: a cell of the code interpreter.
    ExecuteCell,
    /// Desktop: keys typed or pressed, or the clipboard set (what reaches programs as input).
    DesktopInput,
    /// Desktop: a live-view (VNC) session opened.
    DesktopView,
    /// A connection out of the sandbox, allowed or refused by its egress policy (recorded by
    /// the host's egress proxy, not by a request).
    Egress,
}

impl AgentAction {
    /// The audited action of an agent request, from its method and path.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        use AgentAction::*;
        Some(match (method, path) {
            (&Method::POST, "/execute") => Execute,
            (&Method::POST, "/execute/background") => ExecuteBackground,
            (&Method::POST, "/execute/async") => ExecuteAsync,
            (&Method::POST, "/execute/ipython") => ExecuteIpython,
            (&Method::GET, "/execute/stream") => ExecuteStream,
            (&Method::GET, "/terminal") => TerminalOpen,
            (&Method::POST, "/commands/run") => CommandsRun,
            (&Method::POST, "/commands/background") => CommandsBackground,
            (&Method::POST, "/files/write") => FilesWrite,
            (&Method::POST, "/files/upload") => FilesUpload,
            (&Method::POST, "/files/mkdir") => FilesMkdir,
            (&Method::DELETE, "/files/remove") => FilesRemove,
            (&Method::PUT, "/env") => EnvReplace,
            (&Method::PATCH, "/env") => EnvUpdate,
            (&Method::DELETE, "/env") => EnvClear,
            (&Method::DELETE, "/execute/kill") => ProcessKill,
            (&Method::POST, p)
                if p.starts_with("/execute/kill/") || p.starts_with("/processes/") =>
            {
                ProcessKill
            }
            (&Method::POST, "/e2b/envd/process.Process/Start") => ProcessStart,
            (&Method::POST, "/e2b/envd/process.Process/SendInput")
            | (&Method::POST, "/e2b/envd/process.Process/StreamInput") => ProcessInput,
            (&Method::POST, "/e2b/envd/process.Process/SendSignal") => ProcessKill,
            (&Method::POST, "/e2b/envd/files") => FilesUpload,
            (&Method::POST, "/e2b/envd/filesystem.Filesystem/MakeDir") => FilesMkdir,
            (&Method::POST, "/e2b/envd/filesystem.Filesystem/Remove") => FilesRemove,
            (&Method::POST, "/e2b/envd/filesystem.Filesystem/Move") => FilesMove,
            (&Method::POST, "/e2b/interpreter/execute") => ExecuteCell,
            (&Method::POST, "/desktop/keyboard/type")
            | (&Method::POST, "/desktop/keyboard/press")
            | (&Method::POST, "/desktop/keyboard/combination")
            | (&Method::POST, "/desktop/x11/hotkey")
            | (&Method::POST, "/desktop/clipboard/set") => DesktopInput,
            (&Method::GET, "/desktop/vnc/websockify") => DesktopView,
            _ => return None,
        })
    }

    /// The name in the audit trail.
    pub fn as_str(self) -> &'static str {
        use AgentAction::*;
        match self {
            Execute => "execute",
            ExecuteBackground => "execute.background",
            ExecuteAsync => "execute.async",
            ExecuteIpython => "execute.ipython",
            ExecuteStream => "execute.stream",
            TerminalOpen => "terminal.open",
            CommandsRun => "commands.run",
            CommandsBackground => "commands.background",
            FilesWrite => "files.write",
            FilesUpload => "files.upload",
            FilesMkdir => "files.mkdir",
            FilesRemove => "files.remove",
            EnvReplace => "env.replace",
            EnvUpdate => "env.update",
            EnvClear => "env.clear",
            ProcessKill => "process.kill",
            ProcessStart => "process.start",
            ProcessInput => "process.input",
            FilesMove => "files.move",
            ExecuteCell => "execute.cell",
            DesktopInput => "desktop.input",
            DesktopView => "desktop.view",
            Egress => "egress",
        }
    }

    /// Runs whose outcome is the user code's exit status, read from the answer.
    pub fn reports_exit_code(self) -> bool {
        matches!(self, AgentAction::Execute | AgentAction::CommandsRun)
    }
}

/// One audited agent call, as the proxy saw it.
#[derive(Debug, Clone)]
pub struct AgentCall {
    pub sandbox: SandboxId,
    pub owner: String,
    /// The API key the sandbox token was obtained with.
    pub key_id: Option<String>,
    pub action: AgentAction,
    /// Size and SHA-256 of the request body: identifies the input without storing it.
    pub input_bytes: u64,
    pub input_sha256: Option<String>,
    /// `ok`, `failed exit_code=N`, `denied`, `rejected` or `error`.
    pub outcome: String,
    pub status_code: u16,
    pub duration: Duration,
    /// The id the proxy gave the request (also sent back as `X-Request-ID`).
    pub request_id: String,
}
