/// Resource limits of one sandbox. They come from its template and are enforced by the driver
/// (cgroup cpu quota, memory limit, size of the writable layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub vcpu: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
}

impl Resources {
    /// The number of processes a sandbox may run at once. Derived from memory so that a fork bomb
    /// hits this ceiling long before it exhausts host pids or kernel memory.
    pub fn max_pids(&self) -> u32 {
        (self.memory_mb / 2).clamp(256, 4096)
    }
}
