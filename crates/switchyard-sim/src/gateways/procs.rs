//! Child processes of the comparison: started with their output in a log file, killed (with
//! every process they started) when their guard drops, and measured from `/proc`.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The processes started and not yet stopped, for [`kill_all_started`].
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills every process a [`ProcGuard`] started and has not stopped yet, with their
/// descendants: for a signal handler, when the guards will not get to drop.
pub fn kill_all_started() {
    for pid in live().drain(..) {
        for d in descendants(pid).into_iter().rev() {
            kill_pid(d);
        }
        kill_pid(pid);
    }
}

/// A started process, killed with its descendants when dropped.
#[derive(Debug)]
pub struct ProcGuard {
    child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl ProcGuard {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// The I/O error of opening the log or spawning.
    pub fn start(mut cmd: Command, log: &Path) -> std::io::Result<ProcGuard> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()?;
        live().push(child.id());
        Ok(ProcGuard {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it has exited (and so cannot be serving).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Kills it and every process it started, and reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        // Descendants first (by their ids, found from /proc), then the process itself.
        for d in descendants(pid).into_iter().rev() {
            kill_pid(d);
        }
        let _ = child.kill();
        live().retain(|p| *p != pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The ids of every descendant of `pid` (children before grandchildren), from `/proc`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(s) = stat_fields(p) {
                if let Some(pp) = s.get(1).and_then(|x| x.parse::<u32>().ok()) {
                    parent_of.push((p, pp));
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// The fields of `/proc/PID/stat` after the command name (field 3, the state, first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Clock ticks per second of `/proc` times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) used so far by `pid` and its descendants.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = clock_ticks();
    let mut total = 0.0;
    for p in std::iter::once(pid).chain(descendants(pid)) {
        if let Some(f) = stat_fields(p) {
            // utime and stime are fields 14 and 15; f[0] is field 3.
            let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
            total += t(11) + t(12);
        }
    }
    total / ticks
}

/// Peak resident memory (VmHWM), MB, of `pid` plus its descendants'.
pub fn peak_rss_mb(pid: u32) -> f64 {
    let mut kb = 0.0;
    for p in std::iter::once(pid).chain(descendants(pid)) {
        let s = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        if let Some(l) = s.lines().find(|l| l.starts_with("VmHWM:")) {
            kb += l
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    kb / 1024.0
}

/// A loopback port free right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_guard_kills_its_process_and_proc_figures_read() {
        let dir = std::env::temp_dir();
        let log = dir.join(format!("switchyard-proc-test-{}.log", std::process::id()));
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut g = ProcGuard::start(cmd, &log).unwrap();
        let pid = g.pid();
        assert!(!g.exited());
        assert!(cpu_seconds(pid) >= 0.0);
        assert!(peak_rss_mb(pid) > 0.0);
        drop(g);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || stat_fields(pid).is_none_or(|f| f[0] == "Z")
        );
        let _ = std::fs::remove_file(log);
    }
}
