//! The HTTP admin endpoint of a node (issue 10 §6): what monitoring and load
//! balancers read, and what an operator commands.
//!
//! - `GET /metrics`: Prometheus text format (role, epoch, positions, lag, log bytes,
//!   every counter of the node);
//! - `GET /role`: `200 primary` only on the node that accepts writes, `503` with the
//!   role otherwise (for a load balancer's health check);
//! - `GET /status`: the [`NodeReport`] as JSON;
//! - `POST /promote` (a backup; `?at_seq=N` refuses unless it holds exactly up to
//!   `N`), `POST /hand-over` (a primary: the first step of a switchover): operator
//!   commands, answered with JSON. With a key configured they need
//!   `Authorization: Bearer <PeerKey::admin_token>`.
//!
//! Plain HTTP/1.1, one request per connection, every step bounded: at most
//! [`ADMIN_CONNECTIONS_MAX`] connections at once (more are answered `503` and
//! closed), a request head of at most [`ADMIN_REQUEST_BYTES_MAX`], read and written
//! within [`ADMIN_IO_TIMEOUT`]. Bind it to loopback or a management network.
//!
//! ```
//! use std::sync::Arc;
//! use kirikae_engine::Database;
//! use kirikae_replicate::{AdminServer, Backup, BackupConfig};
//!
//! let backup = Arc::new(Backup::start(Database::new(), "127.0.0.1:0", BackupConfig::default()).unwrap());
//! let admin = AdminServer::start("127.0.0.1:0", backup.clone(), None).unwrap();
//! let (status, body) = kirikae_replicate::admin_request(admin.local_addr(), "GET", "/role", None).unwrap();
//! assert_eq!((status, body.trim()), (503, "backup"));
//! admin.stop();
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::handshake::PeerKey;
use crate::seq::Seq;

/// Connections served at once; more are refused with `503`.
pub const ADMIN_CONNECTIONS_MAX: usize = 8;
/// Largest request head (request line and headers) read.
pub const ADMIN_REQUEST_BYTES_MAX: usize = 8 << 10;
/// Each read and write of a request.
pub const ADMIN_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What a node is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Accepts writes.
    Primary,
    /// Follows a primary.
    Backup,
    /// Was primary; replaced by a node of a higher epoch (accepts no writes).
    Fenced,
    /// Was primary; handed over in a switchover (accepts no writes).
    HandedOver,
}

impl NodeRole {
    fn name(self) -> &'static str {
        match self {
            NodeRole::Primary => "primary",
            NodeRole::Backup => "backup",
            NodeRole::Fenced => "fenced",
            NodeRole::HandedOver => "handed_over",
        }
    }
}

/// A node's numbers, as `/status` and `/metrics` show them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeReport {
    /// What the node is.
    pub role: NodeRole,
    /// Its epoch (a primary's own; a backup's: its primary's).
    pub epoch: Epoch,
    /// Primary: last sequence committed. Backup: last applied.
    pub last_seq: Seq,
    /// Transactions not yet acknowledged by the backup (primary) or logged but not
    /// applied (backup).
    pub lag_txns: u64,
    /// Bytes of the difference file (primary) or access log (backup).
    pub log_bytes: u64,
    /// Every counter of the node (connections, mismatches, applied, …).
    pub counters: BTreeMap<String, u64>,
}

/// A node the admin endpoint serves: a [`Replicator`](crate::Replicator) or a
/// [`Backup`](crate::Backup), or an embedder's own wrapper of them.
pub trait AdminNode: Send + Sync + 'static {
    /// The node's numbers now.
    fn report(&self) -> NodeReport;

    /// `POST /promote`: promote this node (a backup), if it holds exactly up to
    /// `at_seq` when one is given.
    fn promote(&self, at_seq: Option<Seq>) -> Result<serde_json::Value> {
        let _ = at_seq;
        Err(not_here("promote", self.report().role))
    }

    /// `POST /hand-over`: the first step of a switchover (a primary).
    fn hand_over(&self, timeout: Duration) -> Result<serde_json::Value> {
        let _ = timeout;
        Err(not_here("hand over", self.report().role))
    }
}

fn not_here(what: &str, role: NodeRole) -> ReplicateError {
    ReplicateError::Protocol {
        reason: format!("cannot {what}: this node is {}", role.name()),
    }
}

/// The admin endpoint's server thread (see the module docs); stopped on drop.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Serves `node` on `addr`. With `key`, operator commands need its
    /// [`admin_token`](PeerKey::admin_token).
    pub fn start(
        addr: impl ToSocketAddrs,
        node: Arc<dyn AdminNode>,
        key: Option<PeerKey>,
    ) -> Result<AdminServer> {
        let network = |source| ReplicateError::Network {
            what: "serve the admin endpoint on",
            addr: String::new(),
            source,
        };
        let listener = TcpListener::bind(addr).map_err(network)?;
        let local = listener.local_addr().map_err(network)?;
        listener.set_nonblocking(true).map_err(network)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("kirikae-admin".into())
            .spawn(move || accept_loop(listener, node, key.map(Arc::new), flag))
            .map_err(network)?;
        Ok(AdminServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (requests in progress finish on their own threads).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn accept_loop(
    listener: TcpListener,
    node: Arc<dyn AdminNode>,
    key: Option<Arc<PeerKey>>,
    stop: Arc<AtomicBool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        let (mut stream, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                tracing::warn!("admin endpoint: accept: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(ADMIN_IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(ADMIN_IO_TIMEOUT));
        if open.fetch_add(1, Ordering::SeqCst) >= ADMIN_CONNECTIONS_MAX {
            open.fetch_sub(1, Ordering::SeqCst);
            // Without waiting: take what already arrived of the request (closing on
            // unread bytes would reset the connection before the answer is read).
            let _ = stream.set_nonblocking(true);
            let _ = stream.read(&mut [0u8; 4096]);
            let _ = stream.set_nonblocking(false);
            let _ = respond(&mut stream, 503, "too many admin connections\n");
            let _ = stream.shutdown(std::net::Shutdown::Write);
            continue;
        }
        let (node, key, open2) = (Arc::clone(&node), key.clone(), Arc::clone(&open));
        let spawned = std::thread::Builder::new()
            .name("kirikae-admin-request".into())
            .spawn(move || {
                serve(&mut stream, &*node, key.as_deref());
                linger(&mut stream);
                open2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One request: parsed, authorized, routed, answered.
fn serve(stream: &mut TcpStream, node: &dyn AdminNode, key: Option<&PeerKey>) {
    let head = match read_head(stream) {
        Ok(h) => h,
        Err(why) => {
            let _ = respond(stream, 400, &format!("{why}\n"));
            return;
        }
    };
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let authorized = key.is_none_or(|k| {
        lines.any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("authorization")
                    && value
                        .trim()
                        .strip_prefix("Bearer ")
                        .is_some_and(|t| k.verifies_admin_token(t.trim()))
            })
        })
    });
    let (status, body) = match (method, path) {
        ("GET", "/metrics") => (200, metrics(&node.report())),
        ("GET", "/role") => {
            let role = node.report().role;
            let status = if role == NodeRole::Primary { 200 } else { 503 };
            (status, format!("{}\n", role.name()))
        }
        ("GET", "/status") => (200, json(&node.report())),
        ("POST", "/promote" | "/hand-over") if !authorized => (
            401,
            "an operator command needs `Authorization: Bearer <admin token of the pair's key>`\n"
                .into(),
        ),
        ("POST", "/promote") => match query_u64(query, "at_seq") {
            Ok(at_seq) => answer(node.promote(at_seq.map(Seq))),
            Err(why) => (400, format!("{why}\n")),
        },
        ("POST", "/hand-over") => match query_u64(query, "timeout_ms") {
            Ok(ms) => answer(node.hand_over(Duration::from_millis(ms.unwrap_or(5_000)))),
            Err(why) => (400, format!("{why}\n")),
        },
        (_, "/metrics" | "/role" | "/status" | "/promote" | "/hand-over") => {
            (405, format!("{method} is not allowed on {path}\n"))
        }
        _ => (
            404,
            format!("no {path}: try /metrics, /role, /status, POST /promote, POST /hand-over\n"),
        ),
    };
    let _ = respond(stream, status, &body);
}

/// After the answer: the client reads it before the connection closes (bytes it
/// sent that were never read would reset the connection and lose the answer). Bounded
/// by the read timeout and 64 KiB.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.take(64 << 10).read_to_end(&mut Vec::new());
}

fn answer(result: Result<serde_json::Value>) -> (u16, String) {
    match result {
        Ok(v) => (200, format!("{v}\n")),
        Err(e) => (
            409,
            format!("{}\n", serde_json::json!({ "error": e.to_string() })),
        ),
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")) + "\n"
}

/// `name=N` from a query string (the only parameter allowed); an error names an
/// unknown parameter or a value that is not a number.
fn query_u64(query: &str, name: &str) -> std::result::Result<Option<u64>, String> {
    let Some(pair) = query.split('&').find(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
    if k != name {
        return Err(format!("unknown parameter `{k}` (expected {name})"));
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{name}=`{v}`: expected a non-negative integer"))
}

fn read_head(stream: &mut TcpStream) -> std::result::Result<String, String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > ADMIN_REQUEST_BYTES_MAX {
            return Err(format!("request head over {ADMIN_REQUEST_BYTES_MAX} bytes"));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err("connection closed inside the request head".into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("reading the request: {e}")),
        }
    }
    String::from_utf8(head).map_err(|_| "the request head is not UTF-8".into())
}

fn respond(stream: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        _ => "Service Unavailable",
    };
    let content_type = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain; version=0.0.4"
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The Prometheus text exposition of `report`.
fn metrics(report: &NodeReport) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP kirikae_{name} {help}\n# TYPE kirikae_{name} gauge\nkirikae_{name} {value}\n"
        ));
    };
    gauge("epoch", "The node's epoch.", report.epoch.0);
    gauge(
        "last_seq",
        "Last sequence committed (primary) or applied (backup).",
        report.last_seq.0,
    );
    gauge(
        "lag_txns",
        "Transactions not yet acknowledged (primary) or applied (backup).",
        report.lag_txns,
    );
    gauge(
        "log_bytes",
        "Bytes of the difference file (primary) or access log (backup).",
        report.log_bytes,
    );
    out.push_str("# HELP kirikae_role 1 for the node's current role.\n# TYPE kirikae_role gauge\n");
    for role in [
        NodeRole::Primary,
        NodeRole::Backup,
        NodeRole::Fenced,
        NodeRole::HandedOver,
    ] {
        let on = u64::from(role == report.role);
        out.push_str(&format!("kirikae_role{{role=\"{}\"}} {on}\n", role.name()));
    }
    for (name, value) in &report.counters {
        out.push_str(&format!(
            "# TYPE kirikae_{name} counter\nkirikae_{name} {value}\n"
        ));
    }
    out
}

/// A one-shot admin request (what `kirikae status|promote|hand-over --admin` sends):
/// `(status, body)`, each step bounded by [`ADMIN_IO_TIMEOUT`] (a promotion or
/// hand-over may take longer: up to 30 s).
pub fn admin_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let network = |source| ReplicateError::Network {
        what: "ask the admin endpoint at",
        addr: addr.to_string(),
        source,
    };
    let mut stream = TcpStream::connect_timeout(&addr, ADMIN_IO_TIMEOUT).map_err(network)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(network)?;
    stream
        .set_write_timeout(Some(ADMIN_IO_TIMEOUT))
        .map_err(network)?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(network)?;
    let mut response = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut response)
        .map_err(network)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReplicateError::Protocol {
            reason: format!("{addr} answered no HTTP status: {head:?}"),
        })?;
    Ok((status, body.to_owned()))
}
