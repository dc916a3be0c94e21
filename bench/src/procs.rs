//! The benchmark's child processes (ingest, worker, the no-Redis reference
//! server): started with their output in log files, waited for until they
//! answer, stopped with SIGTERM, killed when dropped so that no run leaves a
//! process behind, and observed through `/proc` (CPU time, resident memory).

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use http::StatusCode;

use crate::load::get_status;

/// Why a child process could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The log file could not be created.
    #[error("cannot create log file {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        /// What it is.
        name: String,
        /// The executable.
        program: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The process ended before it was asked to.
    #[error("{name} exited early ({status}); see its log {log}")]
    Exited {
        /// What it is.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
    },
    /// The process did not answer 200 in time.
    #[error("{name} did not answer 200 on http://{addr}{path} within {secs} s; see its log {log}")]
    NotReady {
        /// What it is.
        name: String,
        /// Where it was asked.
        addr: SocketAddr,
        /// The path asked.
        path: String,
        /// How long we waited.
        secs: u64,
        /// Its log file.
        log: PathBuf,
    },
}

/// A running child process.
pub struct Proc {
    name: String,
    log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `program args...`, its stdout and stderr going to
    /// `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Self, ProcError> {
        let log = log_dir.join(format!("{name}.log"));
        let file = File::create(&log).map_err(|source| ProcError::Log {
            path: log.clone(),
            source,
        })?;
        let err_file = file.try_clone().map_err(|source| ProcError::Log {
            path: log.clone(),
            source,
        })?;
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file)
            .spawn()
            .map_err(|source| ProcError::Spawn {
                name: name.into(),
                program: program.into(),
                source,
            })?;
        Ok(Self {
            name: name.into(),
            log,
            child,
        })
    }

    /// Fails when the process has already exited.
    pub fn check_running(&mut self) -> Result<(), ProcError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(ProcError::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
            }),
            Err(error) => Err(ProcError::Exited {
                name: self.name.clone(),
                status: error.to_string(),
                log: self.log.clone(),
            }),
        }
    }

    /// Waits until `GET http://<addr><path>` answers 200.
    pub async fn wait_ready(
        &mut self,
        addr: SocketAddr,
        path: &str,
        limit: Duration,
    ) -> Result<(), ProcError> {
        let start = Instant::now();
        while start.elapsed() < limit {
            self.check_running()?;
            if get_status(addr, path).await == Some(StatusCode::OK) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ProcError::NotReady {
            name: self.name.clone(),
            addr,
            path: path.into(),
            secs: limit.as_secs(),
            log: self.log.clone(),
        })
    }

    /// Asks the process to stop (SIGTERM) and waits up to `grace` for it,
    /// then kills it.
    pub async fn terminate(mut self, grace: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < grace {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Drop kills it.
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        cpu_time_from_stat(&stat)
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    }
}

/// CPU time (user + system) this process (the benchmark itself: load
/// generator and sink) has used so far.
pub fn own_cpu_time() -> Option<Duration> {
    cpu_time_from_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// utime + stime of a `/proc/<pid>/stat` line.
fn cpu_time_from_stat(stat: &str) -> Option<Duration> {
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks_per_sec(),
    ))
}

fn clock_ticks_per_sec() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_time_from_a_stat_line() {
        let ticks = clock_ticks_per_sec();
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        let cpu = cpu_time_from_stat(stat).unwrap();
        assert!((cpu.as_secs_f64() - 300.0 / ticks).abs() < 1e-9);
    }

    #[test]
    fn observes_a_running_child_and_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Proc::spawn(
            "sleeper",
            Path::new("sleep"),
            &["30".to_owned()],
            dir.path(),
        )
        .unwrap();
        child.check_running().unwrap();
        assert!(child.rss_kib().is_some());
        assert!(child.cpu_time().is_some());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pid = child.child.id();
        rt.block_on(child.terminate(Duration::from_secs(5)));
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
                // A reaped pid may have been reused; it is not our sleeper then.
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .map(|c| !c.starts_with("sleep"))
                    .unwrap_or(true)
            }
        );
    }
}
