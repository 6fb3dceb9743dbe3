use std::fmt;

/// The lifecycle of a sandbox. `Stopped` and `Deleted` are terminal: nothing runs any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxStatus {
    Creating,
    Running,
    Paused,
    /// Stopped by expiry or by a server shutdown; kept in the store for inspection.
    Stopped,
    /// Creation or a later operation failed; nothing of the sandbox runs.
    Error,
    /// Killed by the user.
    Deleted,
}

impl SandboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Error => "error",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "stopped" => Self::Stopped,
            "error" => Self::Error,
            "deleted" => Self::Deleted,
            _ => return None,
        })
    }

    /// Whether processes of the sandbox may exist (running or frozen).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Creating | Self::Running | Self::Paused)
    }

    pub fn can_pause(self) -> bool {
        self == Self::Running
    }

    pub fn can_resume(self) -> bool {
        self == Self::Paused
    }
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips() {
        use SandboxStatus::*;
        for s in [Creating, Running, Paused, Stopped, Error, Deleted] {
            assert_eq!(SandboxStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn only_running_pauses_and_only_paused_resumes() {
        assert!(SandboxStatus::Running.can_pause());
        assert!(!SandboxStatus::Paused.can_pause());
        assert!(SandboxStatus::Paused.can_resume());
        assert!(!SandboxStatus::Deleted.can_resume());
    }
}
