//! A loopback TCP proxy that adds one-way delay and loss between a primary and its
//! peer, for tests and benchmarks. Loss on TCP is not a missing message but a
//! retransmission: a "lost" chunk arrives one retransmission timeout late, and since
//! TCP delivers in order, everything behind it waits too — which is what the proxy
//! does.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{ReplicateError, Result};
use crate::proxy_arrival::StampedReader;
use crate::proxy_queue::{DelayQueue, Pacer};

/// What the proxy does to traffic, in each direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Impairment {
    /// Added one-way delay (an RTT of `2 × delay`).
    pub delay: Duration,
    /// Chance that a chunk is "lost" and retransmitted.
    pub loss: f64,
    /// How late a lost chunk arrives (Linux's minimum RTO is 200 ms).
    pub retransmit_after: Duration,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            delay: Duration::ZERO,
            loss: 0.0,
            retransmit_after: Duration::from_millis(200),
        }
    }
}

/// A running proxy: connect to [`local_addr`](LoopbackProxy::local_addr) to reach
/// the target through the impairment.
pub struct LoopbackProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// While set, new connections are closed as soon as they are accepted.
    partitioned: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl LoopbackProxy {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub fn start(target: SocketAddr, impairment: Impairment) -> Result<LoopbackProxy> {
        let network = |source| ReplicateError::Network {
            what: "proxy to",
            addr: target.to_string(),
            source,
        };
        let listener = TcpListener::bind("127.0.0.1:0").map_err(network)?;
        let addr = listener.local_addr().map_err(network)?;
        listener.set_nonblocking(true).map_err(network)?;
        let stop = Arc::new(AtomicBool::new(false));
        let partitioned = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let flags = Flags {
                stop: Arc::clone(&stop),
                partitioned: Arc::clone(&partitioned),
            };
            let connections = Arc::clone(&connections);
            std::thread::Builder::new()
                .name("kirikae-proxy".into())
                .spawn(move || accept_loop(listener, target, impairment, flags, connections))
                .map_err(network)?
        };
        Ok(LoopbackProxy {
            addr,
            stop,
            partitioned,
            connections,
            thread: Some(thread),
        })
    }

    /// Where to connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every connection through the proxy (new ones are still accepted).
    pub fn cut(&self) {
        for s in self.connections.lock().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// A partition: cuts every connection and refuses new ones (each is closed as
    /// soon as it is accepted) until [`heal`](LoopbackProxy::heal).
    pub fn partition(&self) {
        self.partitioned.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Ends a [`partition`](LoopbackProxy::partition): new connections go through.
    pub fn heal(&self) {
        self.partitioned.store(false, Ordering::SeqCst);
    }
}

/// What the accepting thread is told.
struct Flags {
    stop: Arc<AtomicBool>,
    partitioned: Arc<AtomicBool>,
}

impl Drop for LoopbackProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    impairment: Impairment,
    flags: Flags,
    connections: Arc<Mutex<Vec<TcpStream>>>,
) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    while !flags.stop.load(Ordering::SeqCst) {
        let Ok((client, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        if flags.partitioned.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let pairs = [
            (client.try_clone(), server.try_clone()),
            (server.try_clone(), client.try_clone()),
        ];
        {
            let mut c = connections.lock();
            c.extend(client.try_clone().ok());
            c.extend(server.try_clone().ok());
        }
        for (from, to) in pairs {
            if let (Ok(from), Ok(to)) = (from, to) {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let s = seed;
                std::thread::spawn(move || forward(from, to, impairment, s));
            }
        }
    }
}

/// Copies `from` to `to`, each chunk released `delay` after it arrived (later if
/// "lost"), in order.
fn forward(from: TcpStream, to: TcpStream, impairment: Impairment, seed: u64) {
    let queue = Arc::new(DelayQueue::new());
    let writer = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || {
            // Timer slack (50 µs by default) would be added to every wake-up.
            #[cfg(target_os = "linux")]
            let _ = nix::sys::prctl::set_timerslack(1);
            let mut to = to;
            let mut pacer = Pacer::default();
            let mut not_before = Instant::now();
            while let Some((release, chunk)) = queue.pop() {
                // In order: a late chunk holds back the ones behind it.
                not_before = not_before.max(release);
                pacer.wait_until(not_before);
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            // The reader, if still reading, stops at its next chunk.
            queue.close();
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let mut rng = seed | 1;
    let mut buf = vec![0u8; 64 << 10];
    let mut from = StampedReader::new(from);
    loop {
        let (n, arrived) = match from.read(&mut buf) {
            Ok((0, _)) | Err(_) => break,
            Ok(read) => read,
        };
        let mut release = arrived + impairment.delay;
        // xorshift64: a chunk is "lost" with probability `loss`.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if ((rng >> 11) as f64 / (1u64 << 53) as f64) < impairment.loss {
            release += impairment.retransmit_after;
        }
        if !queue.push(release, buf[..n].to_vec()) {
            break;
        }
    }
    queue.close();
    let _ = writer.join();
}
