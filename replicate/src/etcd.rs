//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/...`, served by etcd
//! 3.4 and later on its client port), on blocking std TCP: no code generation, no
//! async runtime. Only what the arbiter needs: leases, a create-if-absent
//! transaction, a read, a delete. Every call has a deadline.
//!
//! Fencing uses the leader key's **create revision** as the epoch (a number etcd
//! never hands out twice), never etcd's lock API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::error::{ReplicateError, Result};

/// Largest response accepted (a range of one key, a lease answer).
const RESPONSE_BYTES_MAX: usize = 1 << 20;

/// A lease's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseId(pub i64);

/// One etcd endpoint.
#[derive(Clone, Debug)]
pub struct Etcd {
    addr: SocketAddr,
    timeout: Duration,
}

fn failed(addr: SocketAddr, reason: String) -> ReplicateError {
    ReplicateError::Etcd {
        addr: addr.to_string(),
        reason,
    }
}

/// An int64 of the gateway's JSON (sent as a string; absent means 0).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

impl Etcd {
    /// The endpoint at `addr`; every call ends within `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Etcd {
        Etcd { addr, timeout }
    }

    /// One call: `body` posted to `path`, the JSON answer returned.
    fn call(&self, path: &str, body: &Value) -> Result<Value> {
        let deadline = Instant::now() + self.timeout;
        let fail = |reason: String| failed(self.addr, format!("{path}: {reason}"));
        let mut stream = TcpStream::connect_timeout(&self.addr, self.timeout)
            .map_err(|e| fail(format!("connect: {e}")))?;
        stream
            .set_write_timeout(Some(self.timeout))
            .and_then(|()| stream.set_read_timeout(Some(self.timeout)))
            .map_err(|e| fail(e.to_string()))?;
        let payload = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            self.addr,
            payload.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| fail(format!("send: {e}")))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if Instant::now() > deadline {
                return Err(fail("no complete answer in time".into()));
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => return Err(fail(format!("read: {e}"))),
            }
            if raw.len() > RESPONSE_BYTES_MAX {
                return Err(fail(format!("answer over {RESPONSE_BYTES_MAX} bytes")));
            }
            // A streaming call (keepalive) answers once and keeps the stream open:
            // stop at the first complete chunk.
            if let Some(body) = complete_body(&raw) {
                return parse(&raw, body).map_err(fail);
            }
        }
        let body = complete_body(&raw).ok_or_else(|| fail("truncated answer".into()))?;
        parse(&raw, body).map_err(fail)
    }

    /// Grants a lease of `ttl` (whole seconds, at least 1).
    pub fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        let answer = self.call("/v3/lease/grant", &json!({ "TTL": ttl.as_secs().max(1) }))?;
        match int(&answer["ID"]) {
            0 => Err(failed(self.addr, format!("lease refused: {answer}"))),
            id => Ok(LeaseId(id)),
        }
    }

    /// Renews `lease`; `false` if it has expired (or never existed).
    pub fn keep_alive(&self, lease: LeaseId) -> Result<bool> {
        let answer = self.call("/v3/lease/keepalive", &json!({ "ID": lease.0.to_string() }))?;
        Ok(int(&answer["result"]["TTL"]) > 0)
    }

    /// Ends `lease` (and deletes the keys attached to it).
    pub fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.call("/v3/lease/revoke", &json!({ "ID": lease.0.to_string() }))
            .map(drop)
    }

    /// Creates `key` = `value` attached to `lease` if the key does not exist: its
    /// create revision when this call created it, `None` if it already existed.
    pub fn create(&self, key: &str, value: &str, lease: LeaseId) -> Result<Option<i64>> {
        let k = B64.encode(key);
        let answer = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{ "key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0" }],
                "success": [{ "request_put": { "key": k, "value": B64.encode(value), "lease": lease.0.to_string() } }],
            }),
        )?;
        if answer["succeeded"].as_bool() != Some(true) {
            return Ok(None);
        }
        match int(&answer["header"]["revision"]) {
            0 => Err(failed(self.addr, format!("no revision in {answer}"))),
            revision => Ok(Some(revision)),
        }
    }

    /// The value and create revision of `key`, if it exists.
    pub fn get(&self, key: &str) -> Result<Option<(String, i64)>> {
        let answer = self.call("/v3/kv/range", &json!({ "key": B64.encode(key) }))?;
        let Some(kv) = answer["kvs"].get(0) else {
            return Ok(None);
        };
        let value = kv["value"].as_str().unwrap_or_default();
        let value = B64
            .decode(value)
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| failed(self.addr, format!("undecodable value of {key}")))?;
        Ok(Some((value, int(&kv["create_revision"]))))
    }
}

/// Starts of a [`LocalEtcd`] tried before giving up.
const SPAWN_ATTEMPTS: u32 = 3;

/// A single-node etcd run as a child process on free loopback ports, for tests,
/// benchmarks and trying the etcd arbiter on one machine; killed on drop.
pub struct LocalEtcd {
    child: std::process::Child,
    client: SocketAddr,
}

impl LocalEtcd {
    /// Starts `etcd` (from `PATH`) on loopback with its data in `data_dir` and waits
    /// until it answers (at most 20 s). `Ok(None)` if `etcd` is not installed.
    pub fn start(data_dir: &std::path::Path) -> Result<Option<LocalEtcd>> {
        LocalEtcd::start_on(data_dir, std::net::Ipv4Addr::LOCALHOST)
    }

    /// [`LocalEtcd::start`] on free ports of `host` (an address of this machine, e.g.
    /// one a test network's nodes reach).
    pub fn start_on(
        data_dir: &std::path::Path,
        host: std::net::Ipv4Addr,
    ) -> Result<Option<LocalEtcd>> {
        use std::process::Stdio;
        let installed = std::process::Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return Ok(None);
        }
        // A port found free may be taken by someone else before etcd binds it (tests
        // start several at once); etcd then exits, and is started again on others.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match LocalEtcd::spawn(data_dir, host)? {
                Some(local) => return Ok(Some(local)),
                None if attempt < SPAWN_ATTEMPTS => continue,
                None => {
                    return Err(failed(
                        SocketAddr::from((host, 0)),
                        format!("etcd exited at start {SPAWN_ATTEMPTS} times (ports taken?)"),
                    ))
                }
            }
        }
    }

    /// One start on two free ports; `None` if etcd exited before answering.
    fn spawn(data_dir: &std::path::Path, host: std::net::Ipv4Addr) -> Result<Option<LocalEtcd>> {
        use std::process::{Command, Stdio};
        let free = || {
            std::net::TcpListener::bind((host, 0))
                .and_then(|l| Ok((l.local_addr()?, l)))
                .map_err(|e| failed(SocketAddr::from((host, 0)), format!("no free port: {e}")))
        };
        // Both held until both are known: the two ports differ.
        let ((client, client_l), (peer, peer_l)) = (free()?, free()?);
        drop((client_l, peer_l));
        let (client_url, peer_url) = (format!("http://{client}"), format!("http://{peer}"));
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed(client, format!("cannot start etcd: {e}")))?;
        let mut local = LocalEtcd { child, client };
        let etcd = local.client(Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = etcd.get("ready?") {
            if matches!(local.child.try_wait(), Ok(Some(_))) {
                return Ok(None);
            }
            if Instant::now() > deadline {
                return Err(failed(client, format!("did not answer within 20 s: {e}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Some(local))
    }

    /// Its client address.
    pub fn addr(&self) -> SocketAddr {
        self.client
    }

    /// A client of it, each call bounded by `timeout`.
    pub fn client(&self, timeout: Duration) -> Etcd {
        Etcd::new(self.client, timeout)
    }

    /// Its process id (to pause it with SIGSTOP in a test).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a complete HTTP/1.1 response in `raw` (by Content-Length, or the
/// first chunk of a chunked one), as a range of `raw`.
fn complete_body(raw: &[u8]) -> Option<std::ops::Range<usize>> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&raw[..head_end])
        .ok()?
        .to_ascii_lowercase();
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return (raw.len() >= head_end + len).then_some(head_end..head_end + len);
    }
    if head.contains("transfer-encoding: chunked") {
        let rest = &raw[head_end..];
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16).ok()?;
        let start = head_end + line_end + 2;
        return (raw.len() >= start + size).then_some(start..start + size);
    }
    None
}

fn parse(raw: &[u8], body: std::ops::Range<usize>) -> std::result::Result<Value, String> {
    let status = raw
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    let text = String::from_utf8_lossy(&raw[body]);
    if !status.contains(" 200 ") {
        return Err(format!("{status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("bad JSON ({e}): {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_complete_by_length_or_first_chunk_and_errors_name_the_status() {
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
        let r = complete_body(sized).expect("complete");
        assert_eq!(parse(sized, r).unwrap(), json!({"a": 1}));
        assert_eq!(
            complete_body(&sized[..sized.len() - 1]),
            None,
            "one byte short"
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"b\":2}\r\n";
        let r = complete_body(chunked).expect("first chunk");
        assert_eq!(parse(chunked, r).unwrap(), json!({"b": 2}));
        let refused = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nnope!";
        let r = complete_body(refused).expect("complete");
        assert!(parse(refused, r).unwrap_err().contains("400 Bad Request"));
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&Value::Null), 0, "an absent int64 is 0");
    }
}
