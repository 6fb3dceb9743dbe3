use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use crate::processes::ProcessTable;

/// Facts about the sandbox given at boot.
#[derive(Debug, Clone)]
pub struct BootInfo {
    pub sandbox_id: String,
    pub template: String,
    pub vcpu: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
}

#[derive(Clone)]
pub struct AgentState(Arc<Inner>);

pub struct Inner {
    pub boot: BootInfo,
    /// The sandbox's id: the boot's, or the one given after a resume into a copy
    /// (`POST /warren/identity`).
    sandbox_id: RwLock<String>,
    /// Variables set through `/env` (and `env_vars` on create). Applied to every later run.
    env: RwLock<BTreeMap<String, String>>,
    pub processes: ProcessTable,
    pub kernel: crate::kernel::Kernel,
    pub started: Instant,
    pub started_at: SystemTime,
    pub total_executions: AtomicU64,
    pub active_executions: AtomicU64,
    pub total_requests: AtomicU64,
    pub total_errors: AtomicU64,
    /// (instant, cumulative cpu seconds) of the previous metrics call, for a usage percentage.
    pub last_cpu_sample: Mutex<(Instant, f64)>,
}

impl std::ops::Deref for AgentState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AgentState {
    pub fn new(boot: BootInfo, env: BTreeMap<String, String>) -> Self {
        Self(Arc::new(Inner {
            sandbox_id: RwLock::new(boot.sandbox_id.clone()),
            boot,
            env: RwLock::new(env),
            processes: ProcessTable::default(),
            kernel: crate::kernel::Kernel::default(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            total_executions: AtomicU64::new(0),
            active_executions: AtomicU64::new(0),
            total_requests: AtomicU64::new(0),
            total_errors: AtomicU64::new(0),
            last_cpu_sample: Mutex::new((Instant::now(), 0.0)),
        }))
    }

    pub fn sandbox_id(&self) -> String {
        self.sandbox_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_sandbox_id(&self, id: String) {
        *self.sandbox_id.write().unwrap_or_else(|p| p.into_inner()) = id;
    }

    pub fn global_env(&self) -> BTreeMap<String, String> {
        self.env.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace_env(&self, vars: BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = self.env.write().unwrap_or_else(|p| p.into_inner());
        *env = vars;
        env.clone()
    }

    pub fn merge_env(&self, vars: BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = self.env.write().unwrap_or_else(|p| p.into_inner());
        env.extend(vars);
        env.clone()
    }

    /// The environment of a user process. Priority: request > global (`/env`) > agent defaults.
    pub fn process_env(
        &self,
        request: Option<&BTreeMap<String, String>>,
    ) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = [
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin",
            ),
            ("HOME", "/root"),
            ("LANG", "C.UTF-8"),
            ("TERM", "xterm-256color"),
            ("PYTHONUNBUFFERED", "1"),
            ("MPLBACKEND", "Agg"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.insert("SANDBOX_ID".into(), self.sandbox_id());
        env.extend(self.global_env());
        if let Some(r) = request {
            env.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        env
    }

    pub fn count_execution(&self) -> ExecutionGuard {
        self.total_executions.fetch_add(1, Ordering::Relaxed);
        self.active_executions.fetch_add(1, Ordering::Relaxed);
        ExecutionGuard(self.clone())
    }
}

/// Keeps `active_executions` right however a request ends (including a dropped connection).
pub struct ExecutionGuard(AgentState);

impl Drop for ExecutionGuard {
    fn drop(&mut self) {
        self.0.active_executions.fetch_sub(1, Ordering::Relaxed);
    }
}
