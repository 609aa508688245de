//! Processes the cluster runs: started detached (own process group, output to a log file)
//! so they outlive `cargo xtask cluster up`, recorded by pid, and stopped only when the pid
//! still runs the binary that was recorded — never someone else's process.
//!
//! Also the one way the workspace stops a process it started (the cluster, the test
//! fixtures, xtask): [`stop`] a child, [`stop_group`] a child and its process group,
//! [`stop_pid`] a process that is not our child, or hold a [`ChildGuard`] that stops it on
//! drop. Each sends SIGTERM, waits up to a grace period (zero: SIGKILL at once), then
//! sends SIGKILL, and waits until the process has gone.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext};

/// One process the cluster started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub component: String,
    pub pid: u32,
    pub exe: PathBuf,
    pub log: PathBuf,
}

/// A process started by [`spawn`]: its record, and the handle while we are its parent.
#[derive(Debug)]
pub struct Spawned {
    pub record: ProcessRecord,
    pub child: Child,
}

impl Spawned {
    /// `Some(reason)` when the process has already exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("it exited with {status}")),
            Ok(None) => None,
            Err(e) => Some(format!("its status is unknown: {e}")),
        }
    }
}

/// Start `exe` with `args`, its output appended to `log`, in its own process group so that
/// a Ctrl-C meant for the caller does not reach it.
pub fn spawn(
    component: &str,
    exe: &Path,
    args: &[String],
    env: &[(&str, &Path)],
    log: &Path,
) -> Result<Spawned, Error> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .at(log)?;
    let err = out.try_clone().at(log)?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|source| Error::Spawn {
        what: exe.display().to_string(),
        source,
    })?;
    Ok(Spawned {
        record: ProcessRecord {
            component: component.to_string(),
            pid: child.id(),
            exe: exe.to_path_buf(),
            log: log.to_path_buf(),
        },
        child,
    })
}

/// Whether `record.pid` is a live (not zombie) process running `record.exe`.
pub fn is_running(record: &ProcessRecord) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{}", record.pid));
    let Ok(exe) = std::fs::read_link(proc_dir.join("exe")) else {
        return false;
    };
    if !runs_binary(&exe, &record.exe) {
        return false;
    }
    match std::fs::read_to_string(proc_dir.join("stat")) {
        // Field 3 is the state; after the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether a process whose `/proc/<pid>/exe` reads `proc_exe` runs the binary recorded as
/// `recorded`. The kernel shows the resolved path (no symlink in it, as when `target/` is a
/// link to another disk) and appends " (deleted)" once the binary was rebuilt, so the
/// recorded path is resolved the same way before the two are compared whole.
fn runs_binary(proc_exe: &Path, recorded: &Path) -> bool {
    let resolved = resolve(recorded);
    let shown = proc_exe.as_os_str().to_string_lossy();
    let shown = shown.strip_suffix(" (deleted)").unwrap_or(&shown);
    Path::new(shown) == resolved
}

/// `path` with every symlink resolved; when the file itself is gone (a rebuilt binary
/// replaced by a new one is still there, a deleted one is not), its folder resolved.
fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Stop the processes in order (SIGTERM, then SIGKILL after `grace`), waiting until each
/// has gone. Records whose pid no longer runs their binary are skipped.
pub fn stop_all(records: &[ProcessRecord], grace: Duration) {
    for record in records {
        // Which process the pid is, is checked once, before any signal: an exiting process
        // loses its `/proc/<pid>/exe` link before it is gone, so "still there" is its state.
        if !is_running(record) {
            continue;
        }
        match stop_pid(record.pid, grace, || exists(record.pid)) {
            PidStopped::Exited => {}
            PidStopped::Killed => {
                tracing::warn!(component = %record.component, pid = record.pid, "did not stop on SIGTERM; killed (SIGKILL)");
            }
            PidStopped::Running => {
                tracing::warn!(component = %record.component, pid = record.pid, "still running after SIGKILL");
            }
        }
    }
}

/// Whether process `pid` exists and has not exited (a zombie has: it only waits to be
/// reaped by its parent).
fn exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- Stopping a process: SIGTERM, a grace period, SIGKILL ----------------------------------

/// How often a stopping process is checked for having gone (waiting on a condition).
const POLL: Duration = Duration::from_millis(20);

/// How long a SIGKILLed process that is not our child may take to disappear.
const AFTER_SIGKILL: Duration = Duration::from_secs(5);

/// A grace period with no end: SIGTERM, then wait as long as the process takes (no SIGKILL).
pub const NO_DEADLINE: Duration = Duration::MAX;

/// How a child ended when it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited within the grace period (or had already), with this status.
    Exited(ExitStatus),
    /// It still ran when the grace period ended, and was killed (SIGKILL).
    Killed(ExitStatus),
}

impl Stopped {
    /// The exit status, however it ended.
    pub fn status(self) -> ExitStatus {
        match self {
            Stopped::Exited(s) | Stopped::Killed(s) => s,
        }
    }
}

/// Stop `child`: SIGTERM, wait up to `grace` for it to exit, then SIGKILL and wait. A zero
/// `grace` kills at once (a crash, or a process that needs no clean-up); [`NO_DEADLINE`]
/// never kills. The child is reaped either way.
pub fn stop(child: &mut Child, grace: Duration) -> std::io::Result<Stopped> {
    let pid = pid_of(child.id());
    stop_with(child, grace, |signal| kill(pid, signal))
}

/// [`stop`] for a child that leads its own process group (started with
/// `CommandExt::process_group(0)`): every signal goes to the whole group, so processes the
/// child forked (nginx's workers, say) get it too. Only the leader is waited for.
pub fn stop_group(leader: &mut Child, grace: Duration) -> std::io::Result<Stopped> {
    let pgid = pid_of(leader.id());
    stop_with(leader, grace, |signal| killpg(pgid, signal))
}

/// How a process that is not our child ended when it was stopped with [`stop_pid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidStopped {
    /// It was gone within the grace period (or before).
    Exited,
    /// It still ran when the grace period ended, and went on SIGKILL.
    Killed,
    /// It still runs: it survived SIGKILL for a while, or we may not signal it.
    Running,
}

/// Stop process `pid`, which is not our child (we cannot wait for it): SIGTERM, up to
/// `grace` for `alive()` to turn false, then SIGKILL and up to 5 s more. `alive` says
/// whether `pid` still runs the process meant (a pid is reused once it is gone).
pub fn stop_pid(pid: u32, grace: Duration, alive: impl Fn() -> bool) -> PidStopped {
    if pid == 0 {
        // kill(0, …) would signal our own process group.
        return PidStopped::Running;
    }
    let pid = pid_of(pid);
    let gone_within = |limit: Duration| {
        let deadline = Instant::now().checked_add(limit);
        loop {
            if !alive() {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            std::thread::sleep(POLL);
        }
    };
    if !alive() {
        return PidStopped::Exited;
    }
    if !grace.is_zero() {
        if kill(pid, Signal::SIGTERM).is_err() {
            return if alive() {
                PidStopped::Running
            } else {
                PidStopped::Exited
            };
        }
        if gone_within(grace) {
            return PidStopped::Exited;
        }
    }
    if kill(pid, Signal::SIGKILL).is_ok() && gone_within(AFTER_SIGKILL) {
        PidStopped::Killed
    } else if alive() {
        PidStopped::Running
    } else {
        PidStopped::Killed
    }
}

/// A child stopped (see [`stop`]) when dropped, so that a failing test or task leaves
/// nothing running.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    pid: u32,
    grace: Duration,
    group: bool,
}

impl ChildGuard {
    /// Guard `child`: on drop, SIGTERM and up to `grace` before SIGKILL.
    pub fn new(child: Child, grace: Duration) -> ChildGuard {
        ChildGuard {
            pid: child.id(),
            child: Some(child),
            grace,
            group: false,
        }
    }

    /// Guard `leader` and its process group (see [`stop_group`]).
    pub fn group(leader: Child, grace: Duration) -> ChildGuard {
        ChildGuard {
            pid: leader.id(),
            child: Some(leader),
            grace,
            group: true,
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Stop it now (once; later calls and the drop do nothing).
    pub fn stop(&mut self) -> Option<std::io::Result<Stopped>> {
        let mut child = self.child.take()?;
        Some(if self.group {
            stop_group(&mut child, self.grace)
        } else {
            stop(&mut child, self.grace)
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// SIGTERM (unless `grace` is zero), up to `grace` for `child` to exit, then SIGKILL.
/// `signal` sends to the child (or its group); an error (it is gone) is no reason to stop,
/// the wait that follows tells.
fn stop_with(
    child: &mut Child,
    grace: Duration,
    signal: impl Fn(Signal) -> nix::Result<()>,
) -> std::io::Result<Stopped> {
    if let Some(status) = child.try_wait()? {
        return Ok(Stopped::Exited(status));
    }
    if !grace.is_zero() {
        let _ = signal(Signal::SIGTERM);
        let deadline = Instant::now().checked_add(grace);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Stopped::Exited(status));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    let _ = signal(Signal::SIGKILL);
    Ok(Stopped::Killed(child.wait()?))
}

fn pid_of(id: u32) -> Pid {
    // Linux pids fit an i32 (pid_max is at most 2^22).
    Pid::from_raw(i32::try_from(id).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of its own under the temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("cutover-proc-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Held while a test writes a binary and starts it. A process forked by a test running
    /// in parallel inherits the open write handle of a binary being copied, until it execs;
    /// starting that binary meanwhile fails with "Text file busy" (seen on CI).
    static COPY_AND_SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A copy of `sleep` at `dir/bin/sleeper`, started through `via` (the same folder
    /// reached another way), as the cluster starts its binaries.
    fn start_sleeper(dir: &TempDir, via: &Path) -> Spawned {
        let _one_at_a_time = COPY_AND_SPAWN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bin = dir.0.join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let sleep = ["/usr/bin/sleep", "/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sleep is installed");
        std::fs::copy(sleep, bin.join("sleeper")).expect("copy sleep");
        spawn(
            "sleeper",
            &via.join("sleeper"),
            &["600".to_string()],
            &[],
            &dir.0.join("sleeper.log"),
        )
        .expect("spawn")
    }

    #[test]
    fn a_binary_started_through_a_symlinked_folder_is_recognised_and_stopped() {
        // Found by an acceptance run: with `target/` reached through a symlink, the
        // process node was never stopped, because /proc/<pid>/exe shows the resolved path.
        let dir = TempDir::new("link");
        let link = dir.0.join("target-link");
        std::os::unix::fs::symlink(dir.0.join("bin"), &link).expect("symlink");
        std::fs::create_dir_all(dir.0.join("bin")).expect("bin dir");
        let mut sleeper = start_sleeper(&dir, &link);
        assert!(
            sleeper.record.exe.starts_with(&link),
            "recorded as started, unresolved"
        );
        assert!(is_running(&sleeper.record), "a live process of ours");
        stop_all(
            std::slice::from_ref(&sleeper.record),
            Duration::from_secs(5),
        );
        let status = sleeper.child.wait().expect("wait");
        assert!(
            !status.success(),
            "stopped by a signal, not exited: {status}"
        );
        assert!(!is_running(&sleeper.record));
    }

    #[test]
    fn a_pid_that_runs_another_binary_is_never_signalled() {
        let dir = TempDir::new("foreign");
        let mut sleeper = start_sleeper(&dir, &dir.0.join("bin"));
        let foreign = ProcessRecord {
            exe: dir.0.join("bin").join("something-else"),
            ..sleeper.record.clone()
        };
        assert!(!is_running(&foreign));
        stop_all(std::slice::from_ref(&foreign), Duration::from_secs(1));
        assert!(
            sleeper.exited().is_none(),
            "the process running another binary is left alone"
        );
        // A name that only starts like the recorded one is another binary too.
        let prefix = ProcessRecord {
            exe: dir.0.join("bin").join("sleep"),
            ..sleeper.record.clone()
        };
        assert!(!is_running(&prefix));
        stop_all(
            std::slice::from_ref(&sleeper.record),
            Duration::from_secs(5),
        );
        sleeper.child.wait().expect("wait");
    }

    #[test]
    fn a_rebuilt_binary_still_counts_as_the_one_recorded() {
        let dir = TempDir::new("rebuilt");
        let mut sleeper = start_sleeper(&dir, &dir.0.join("bin"));
        // cargo replaces a rebuilt binary: the old inode shows as "(deleted)".
        let exe = dir.0.join("bin").join("sleeper");
        std::fs::remove_file(&exe).expect("remove");
        std::fs::copy("/proc/self/exe", &exe).expect("a new file at the same path");
        assert!(is_running(&sleeper.record));
        stop_all(
            std::slice::from_ref(&sleeper.record),
            Duration::from_secs(5),
        );
        sleeper.child.wait().expect("wait");
        assert!(!is_running(&sleeper.record));
    }
    /// `sh -c script` with a piped stdout, started as the other tests start their children
    /// (one at a time, see [`COPY_AND_SPAWN`]); `group` makes it lead a process group.
    fn start_sh(
        script: &str,
        group: bool,
    ) -> (Child, std::io::BufReader<std::process::ChildStdout>) {
        let _one_at_a_time = COPY_AND_SPAWN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]).stdout(Stdio::piped());
        if group {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().expect("spawn sh");
        let stdout = child.stdout.take().expect("piped stdout");
        (child, std::io::BufReader::new(stdout))
    }

    /// The next line `sh` printed (it prints once it is set up: no race with the signals).
    fn line(out: &mut impl std::io::BufRead) -> String {
        let mut l = String::new();
        out.read_line(&mut l).expect("read a line");
        l.trim().to_string()
    }

    fn signal_of(stopped: Stopped) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt as _;
        stopped.status().signal()
    }

    #[test]
    fn a_child_that_exits_on_sigterm_is_stopped_within_the_grace() {
        let (mut child, mut out) = start_sh("echo up; exec sleep 30", false);
        assert_eq!(line(&mut out), "up");
        let started = Instant::now();
        let stopped = stop(&mut child, Duration::from_secs(10)).expect("stop");
        assert!(
            matches!(stopped, Stopped::Exited(_)),
            "exited on SIGTERM: {stopped:?}"
        );
        assert_eq!(signal_of(stopped), Some(Signal::SIGTERM as i32));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no need to wait out the grace"
        );
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        // The ignored disposition survives the exec, so `sleep` itself ignores SIGTERM.
        let (mut child, mut out) = start_sh("trap '' TERM; echo up; exec sleep 30", false);
        assert_eq!(line(&mut out), "up");
        let grace = Duration::from_millis(300);
        let started = Instant::now();
        let stopped = stop(&mut child, grace).expect("stop");
        assert!(matches!(stopped, Stopped::Killed(_)), "{stopped:?}");
        assert_eq!(signal_of(stopped), Some(Signal::SIGKILL as i32));
        assert!(started.elapsed() >= grace, "the grace was given");
    }

    #[test]
    fn a_zero_grace_kills_at_once() {
        let (mut child, mut out) = start_sh("echo up; exec sleep 30", false);
        assert_eq!(line(&mut out), "up");
        let stopped = stop(&mut child, Duration::ZERO).expect("stop");
        assert_eq!(
            signal_of(stopped),
            Some(Signal::SIGKILL as i32),
            "{stopped:?}"
        );
    }

    #[test]
    fn a_child_that_already_exited_is_only_reaped() {
        let (mut child, mut out) = start_sh("echo up", false);
        assert_eq!(line(&mut out), "up");
        assert_eq!(line(&mut out), "", "end of output: it has exited");
        let stopped = stop(&mut child, Duration::from_secs(10)).expect("stop");
        assert!(stopped.status().success(), "{stopped:?}");
    }

    #[test]
    fn a_group_is_stopped_with_the_processes_its_leader_forked() {
        let (mut leader, mut out) = start_sh("sleep 30 & echo $!; wait", true);
        let forked: u32 = line(&mut out).parse().expect("the forked pid");
        let alive = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z'))
            })
        };
        assert!(alive(forked), "the forked sleep runs");
        stop_group(&mut leader, Duration::from_secs(10)).expect("stop the group");
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(forked) {
            assert!(
                Instant::now() < deadline,
                "the forked sleep outlived its group"
            );
            std::thread::sleep(POLL);
        }
    }

    #[test]
    fn a_guard_stops_its_child_when_dropped() {
        let (child, mut out) = start_sh("echo up; exec sleep 30", false);
        assert_eq!(line(&mut out), "up");
        let guard = ChildGuard::new(child, Duration::from_secs(10));
        let pid = guard.id();
        drop(guard);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "stopped and reaped on drop"
        );
    }
}
