//! envd and the code interpreter of E2B, served by the same agent as the Hopx API so that both
//! protocols drive the same sandbox. The host's proxy sends E2B's envd port (49983) here under
//! `/e2b/envd` and the interpreter's port (49999) under `/e2b/interpreter`, after checking the
//! sandbox's access token; nothing here sees a credential.

mod connect;
mod file_metadata;
mod files;
mod filesystem;
mod interpreter;
mod process;
pub(crate) mod users;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::state::AgentState;

/// Uploads can be large; the host's proxy applies the real limit.
const MAX_BODY: usize = 2 * 1024 * 1024 * 1024;

/// What E2B's calls keep between requests.
#[derive(Default)]
pub struct Tables {
    processes: process::Processes,
    watchers: filesystem::Watchers,
    contexts: interpreter::Contexts,
}

/// The E2B handlers' state: the agent's, and E2B's own tables.
#[derive(Clone)]
pub struct E2b {
    agent: AgentState,
    tables: Arc<Tables>,
}

impl std::ops::Deref for E2b {
    type Target = AgentState;
    fn deref(&self) -> &AgentState {
        &self.agent
    }
}

pub fn router(agent: AgentState) -> Router {
    let envd = Router::new()
        .route("/health", get(files::health))
        .route("/envs", get(files::envs))
        .route("/metrics", get(files::metrics))
        .route("/files", get(files::download).post(files::upload))
        .route("/process.Process/Start", post(process::start))
        .route("/process.Process/Connect", post(process::connect))
        .route("/process.Process/List", post(process::list))
        .route("/process.Process/SendInput", post(process::send_input))
        .route("/process.Process/StreamInput", post(process::stream_input))
        .route("/process.Process/SendSignal", post(process::send_signal))
        .route("/process.Process/CloseStdin", post(process::close_stdin))
        .route("/process.Process/Update", post(process::update))
        .route("/filesystem.Filesystem/Stat", post(filesystem::stat))
        .route("/filesystem.Filesystem/ListDir", post(filesystem::list_dir))
        .route("/filesystem.Filesystem/MakeDir", post(filesystem::make_dir))
        .route("/filesystem.Filesystem/Move", post(filesystem::move_entry))
        .route("/filesystem.Filesystem/Remove", post(filesystem::remove))
        .route(
            "/filesystem.Filesystem/WatchDir",
            post(filesystem::watch_dir),
        )
        .route(
            "/filesystem.Filesystem/CreateWatcher",
            post(filesystem::create_watcher),
        )
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(filesystem::get_watcher_events),
        )
        .route(
            "/filesystem.Filesystem/RemoveWatcher",
            post(filesystem::remove_watcher),
        );
    let interpreter = Router::new()
        .route("/health", get(files::health))
        .route("/execute", post(interpreter::execute))
        .route(
            "/contexts",
            post(interpreter::create_context).get(interpreter::list_contexts),
        )
        .route("/contexts/{id}", delete(interpreter::remove_context))
        .route("/contexts/{id}/restart", post(interpreter::restart_context));
    Router::new()
        .nest("/e2b/envd", envd)
        .nest("/e2b/interpreter", interpreter)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(E2b {
            agent,
            tables: Arc::new(Tables::default()),
        })
}
