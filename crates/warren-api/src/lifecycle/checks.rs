//! What a request may ask: limits of a create's fields, checked before anything is recorded or
//! started. A request outside them is the caller's mistake (400), and the message names the field.

use std::collections::BTreeMap;

use warren_store::OnTimeout;
use warren_wire::control::CreateSandboxRequest;

use super::{LifecycleError, LifecycleResult};

use crate::limits::MAX_TIMEOUT_SECONDS;
/// Most environment variables a create may set.
pub const MAX_ENV_VARS: usize = 1000;
/// Largest environment a create may set, JSON-encoded: it reaches the sandbox's agent as one
/// variable, and the kernel refuses any single one over 128 KiB at exec.
pub const MAX_ENV_BYTES: usize = 120 * 1024;

/// Checks `timeout_seconds` of a create or a timeout change against the server's maximum
/// (`max`, at most `MAX_TIMEOUT_SECONDS`).
/// `max`: the longest lifetime the sandbox's organization may ask for, and the flag that set it.
pub(super) fn check_timeout(seconds: i64, (max, flag): (i64, &str)) -> LifecycleResult<()> {
    if seconds <= 0 {
        return Err(LifecycleError::Invalid(
            "timeout_seconds must be a positive number of seconds".into(),
        ));
    }
    if seconds > MAX_TIMEOUT_SECONDS {
        return Err(LifecycleError::Invalid(format!(
            "timeout_seconds may be at most {MAX_TIMEOUT_SECONDS} (365 days); got {seconds}"
        )));
    }
    if seconds > max {
        return Err(LifecycleError::Invalid(format!(
            "timeout_seconds may be at most {max} for this organization (warren serve {flag}); got {seconds}"
        )));
    }
    Ok(())
}

/// What the create asks to happen at its timeout; `auto_resume` alone is a mistake (a sandbox
/// that is never paused has nothing to resume).
pub(super) fn on_timeout(req: &CreateSandboxRequest) -> LifecycleResult<OnTimeout> {
    match (
        req.auto_pause.unwrap_or(false),
        req.auto_resume.unwrap_or(false),
    ) {
        (false, false) => Ok(OnTimeout::Kill),
        (true, false) => Ok(OnTimeout::Pause),
        (true, true) => Ok(OnTimeout::PauseUntilRequest),
        (false, true) => Err(LifecycleError::Invalid(
            "auto_resume needs auto_pause: true".into(),
        )),
    }
}

/// Checks the environment a sandbox starts with (the template's plus the caller's).
pub(super) fn check_env(env: &BTreeMap<String, String>) -> LifecycleResult<()> {
    if env
        .keys()
        .any(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        || env.values().any(|v| v.contains('\0'))
    {
        return Err(LifecycleError::Invalid(
            "env_vars: names must be non-empty without '=' or NUL; values without NUL".into(),
        ));
    }
    let bytes = serde_json::to_string(env).map_or(usize::MAX, |j| j.len());
    if env.len() > MAX_ENV_VARS || bytes > MAX_ENV_BYTES {
        return Err(LifecycleError::Invalid(format!(
            "env_vars: at most {MAX_ENV_VARS} variables and {} KiB in all (as JSON); got {} \
             variables, {} KiB",
            MAX_ENV_BYTES / 1024,
            env.len(),
            bytes.div_ceil(1024)
        )));
    }
    Ok(())
}

/// Metadata is for finding sandboxes again, not for storing data.
pub(super) fn check_metadata(m: &BTreeMap<String, String>) -> LifecycleResult<()> {
    const MAX_ENTRIES: usize = 64;
    const MAX_KEY: usize = 256;
    const MAX_VALUE: usize = 4096;
    if m.len() > MAX_ENTRIES
        || m.iter()
            .any(|(k, v)| k.is_empty() || k.len() > MAX_KEY || v.len() > MAX_VALUE)
    {
        return Err(LifecycleError::Invalid(format!(
            "metadata: at most {MAX_ENTRIES} entries, keys of 1 to {MAX_KEY} bytes, values up to \
             {MAX_VALUE} bytes"
        )));
    }
    Ok(())
}
