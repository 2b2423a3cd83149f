//! A node as a child process (`kirikae primary` or `kirikae backup`), for the demo
//! and the benches: its standard output read line by line on a thread of its own
//! (each line with the instant it arrived), its standard error kept in a file for
//! when it fails; and a free loopback port to give one.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError};

use crate::CliError;

/// Lines read ahead of the demo, at most (the child then waits for it).
const LINES_AHEAD_MAX: usize = 100_000;

/// A line of a node's output and when it arrived.
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// A running node.
pub struct Node {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    stderr: PathBuf,
}

impl Node {
    /// Starts `kirikae ARGS` as `name`, its standard error in `dir/name.stderr`.
    pub fn spawn(name: &str, args: &[String], dir: &Path) -> Result<Node, CliError> {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::Usage(format!("the demo's own path: {e}")))?;
        let stderr = dir.join(format!("{name}.stderr"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .map_err(|e| CliError::Usage(format!("{}: {e}", stderr.display())))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .map_err(|e| CliError::Usage(format!("start the {name}: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| CliError::Usage(format!("the {name}'s output")))?;
        let copy = dir.join(format!("{name}.stdout"));
        let mut copy = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&copy)
            .map_err(|e| CliError::Usage(format!("{}: {e}", copy.display())))?;
        let (tx, rx) = crossbeam::channel::bounded(LINES_AHEAD_MAX);
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Kept for the operator; the demo goes on without it.
                let _ = writeln!(copy, "{text}");
                if tx
                    .send(Line {
                        at: Instant::now(),
                        text,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Node {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
            stderr,
        })
    }

    /// Waits up to `timeout` for a line starting with `prefix` (the lines before
    /// it are passed over); returns the rest of it.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, CliError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    if let Some(rest) = line.text.strip_prefix(prefix) {
                        return Ok(rest.to_owned());
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    return Err(self.failed(&format!(
                        "did not say `{prefix}` within {} s",
                        timeout.as_secs()
                    )));
                }
            }
        }
    }

    /// The lines that arrived so far.
    pub fn drain(&self) -> Vec<Line> {
        self.lines.try_iter().collect()
    }

    /// SIGSTOP (`stop == true`) or SIGCONT: the process is frozen, or goes on, as a
    /// machine that stalls would.
    pub fn freeze(&self, stop: bool) -> Result<(), CliError> {
        use nix::sys::signal::{kill, Signal};
        let signal = if stop {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        kill(pid, signal).map_err(|e| CliError::Usage(format!("{signal} the {}: {e}", self.name)))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL; returns once the process is gone.
    pub fn kill(&mut self) -> Result<(), CliError> {
        self.child
            .kill()
            .map_err(|e| CliError::Usage(format!("SIGKILL the {}: {e}", self.name)))?;
        let _ = self.child.wait();
        Ok(())
    }

    /// Closes its standard input (a node run with `--until-stdin-closes` then
    /// stops and reports) and waits up to `timeout` for it to exit; returns the
    /// lines it printed meanwhile and its final report (its last line that is a
    /// JSON object).
    pub fn finish(
        &mut self,
        timeout: Duration,
    ) -> Result<(Vec<Line>, serde_json::Value), CliError> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => lines.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    return Err(self.failed(&format!(
                        "did not stop within {} s of its input closing",
                        timeout.as_secs()
                    )));
                }
            }
        }
        let status = self
            .child
            .wait()
            .map_err(|e| CliError::Usage(format!("wait for the {}: {e}", self.name)))?;
        let report = lines
            .iter()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(&l.text).ok())
            .filter(serde_json::Value::is_object);
        match (status.success(), report) {
            (true, Some(report)) => Ok((lines, report)),
            _ => Err(self.failed(&format!("ended with {status} without its report"))),
        }
    }

    /// An error naming this node, with the end of its standard error.
    pub fn failed(&self, what: &str) -> CliError {
        let tail = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        CliError::Usage(format!(
            "the {} {what} (its standard error, {}: {})",
            self.name,
            self.stderr.display(),
            tail.join(" | ")
        ))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A demo that fails half-way leaves no process behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free loopback port (bound, then let go for a child or a peer to take).
pub fn free_port() -> Result<SocketAddr, CliError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| CliError::Usage(format!("a free port: {e}")))
}

/// A `kirikae backup` node for a bench: memory only, ready once it says where it
/// listens, stopped by [`finish`](BackupProcess::finish), which returns its final
/// report (applied transactions, checksums).
pub struct BackupProcess {
    node: Node,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl BackupProcess {
    /// How long it may take to load its tables and listen, and to stop and report.
    const WITHIN: Duration = Duration::from_secs(60);

    /// Starts `kirikae backup` on any free port with `subscribers` rows, the pair's
    /// key in `key`, and `extra` arguments; its output files go to `dir`.
    pub fn start(
        dir: &Path,
        subscribers: u64,
        key: &Path,
        extra: &[&str],
    ) -> Result<BackupProcess, CliError> {
        let mut args: Vec<String> = ["backup", "--listen", "127.0.0.1:0", "--until-stdin-closes"]
            .map(str::to_owned)
            .to_vec();
        args.extend(["--subscribers".to_owned(), subscribers.to_string()]);
        args.extend(["--key-file".to_owned(), key.display().to_string()]);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut node = Node::spawn("backup", &args, dir)?;
        let said = node.wait_line("kirikae backup listening on ", Self::WITHIN)?;
        let addr = said.split_whitespace().next().unwrap_or_default();
        let addr = addr
            .parse()
            .map_err(|e| CliError::Usage(format!("the backup's address `{addr}`: {e}")))?;
        Ok(BackupProcess { node, addr })
    }

    /// Freezes it (SIGSTOP) or lets it go on (SIGCONT).
    pub fn freeze(&self, stop: bool) -> Result<(), CliError> {
        self.node.freeze(stop)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.node.pid()
    }

    /// Closes its input and returns its final report.
    pub fn finish(mut self) -> Result<serde_json::Value, CliError> {
        self.node.finish(Self::WITHIN).map(|(_, report)| report)
    }
}
