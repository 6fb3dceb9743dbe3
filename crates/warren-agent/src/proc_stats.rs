//! Processes of the sandbox as /proc shows them (the pid namespace holds exactly the sandbox's
//! own): what the process list, the metrics and the background-run list report.

/// One process as /proc shows it.
pub struct ProcSample {
    pub pid: i32,
    pub name: String,
    pub command: String,
    pub state: String,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Every process in the sandbox.
pub fn sample_processes() -> Vec<ProcSample> {
    let ticks = clock_ticks();
    let page = page_size();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        out.extend(sample_with(pid, ticks, page));
    }
    out
}

/// Process `pid`, if it exists.
pub fn sample(pid: i32) -> Option<ProcSample> {
    sample_with(pid, clock_ticks(), page_size())
}

fn sample_with(pid: i32, ticks: f64, page: u64) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may contain spaces; fields follow the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command = String::from_utf8_lossy(&cmdline)
        .replace('\0', " ")
        .trim()
        .to_owned();
    Some(ProcSample {
        pid,
        command: if command.is_empty() {
            name.clone()
        } else {
            command
        },
        name,
        state: fields.first().map(|s| s.to_string()).unwrap_or_default(),
        // fields[11], [12] are utime, stime; fields[21] is rss in pages.
        cpu_seconds: (num(11) + num(12)) as f64 / ticks,
        rss_bytes: num(21) * page,
    })
}
