//! Processes the cluster runs: started detached (own process group, output to a log file)
//! so they outlive `cargo xtask cluster up`, recorded by pid, and stopped only when the pid
//! still runs the binary that was recorded — never someone else's process.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
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
    // A rebuilt binary shows as "<path> (deleted)"; the path prefix still identifies it.
    let owned = exe
        .as_os_str()
        .to_string_lossy()
        .starts_with(record.exe.as_os_str().to_string_lossy().as_ref());
    if !owned {
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

/// Stop the processes in order (SIGTERM, then SIGKILL after `grace`), waiting until each
/// has gone. Records whose pid no longer runs their binary are skipped.
pub fn stop_all(records: &[ProcessRecord], grace: Duration) {
    for record in records {
        if !is_running(record) {
            continue;
        }
        let pid = Pid::from_raw(record.pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while is_running(record) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if is_running(record) {
            tracing::warn!(component = %record.component, pid = record.pid, "did not stop on SIGTERM; sending SIGKILL");
            let _ = kill(pid, Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while is_running(record) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
