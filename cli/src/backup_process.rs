//! A `kirikae backup` child process for a bench: started on a free loopback port,
//! ready once it says where it listens, and stopped by closing its standard input,
//! when it prints its final report (applied transactions, checksums).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crossbeam::channel::Receiver;

use crate::CliError;

/// How long a backup may take to load its tables and listen.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long it may take to stop and report once its input closes.
const REPORT_WITHIN: Duration = Duration::from_secs(60);

/// A running backup process.
pub struct BackupProcess {
    child: Child,
    lines: Receiver<String>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl BackupProcess {
    /// Starts `kirikae backup` with `subscribers` rows, the pair's key in `key`,
    /// no access log (memory only), and `extra` arguments.
    pub fn start(subscribers: u64, key: &Path, extra: &[&str]) -> Result<BackupProcess, CliError> {
        let exe = std::env::current_exe().map_err(|e| CliError::Usage(format!("own path: {e}")))?;
        let mut child = Command::new(exe)
            .args(["backup", "--listen", "127.0.0.1:0", "--until-stdin-closes"])
            .args(["--subscribers", &subscribers.to_string()])
            .arg("--key-file")
            .arg(key)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| CliError::Usage(format!("start the backup process: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| CliError::Usage("the backup's output".into()))?;
        let (tx, lines) = crossbeam::channel::bounded(1_024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let line = lines.recv_timeout(READY_WITHIN).map_err(|_| {
                let _ = child.kill();
                CliError::Usage("the backup process did not listen within 60 s".into())
            })?;
            if let Some(rest) = line.strip_prefix("kirikae backup listening on ") {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr
                    .parse()
                    .map_err(|e| CliError::Usage(format!("the backup's address `{addr}`: {e}")))?;
            }
        };
        Ok(BackupProcess { child, lines, addr })
    }

    /// Closes its input and returns its final report (its last JSON line).
    pub fn finish(mut self) -> Result<serde_json::Value, CliError> {
        drop(self.child.stdin.take());
        let mut report = None;
        while let Ok(line) = self.lines.recv_timeout(REPORT_WITHIN) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                report = Some(v);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        report.ok_or_else(|| CliError::Usage("the backup process ended without its report".into()))
    }
}

impl Drop for BackupProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
