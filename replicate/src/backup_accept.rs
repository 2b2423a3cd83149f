//! The backup's front door: one thread accepts connections, and each connection gets
//! its own handshake thread with a deadline. Only a connection whose primary proved
//! the pair's key ([`crate::handshake`]) is handed to the applier's thread; a
//! stranger (idle, trickling bytes, forging messages) costs one short-lived thread
//! and never delays an authenticated primary. Handshakes in progress are capped.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use parking_lot::Mutex;

use crate::backup::{BackupConfig, BackupStatus};
use crate::error::{ReplicateError, Result};
use crate::handshake::{BackupHandshake, PrimaryGreeting};
use crate::wire::{encode, FrameDecoder, Message, PROTOCOL_VERSION};

/// Largest frame accepted before the handshake checks out: a `Hello` or a `Proof`
/// is a few dozen bytes, and a stranger must not make us buffer megabytes.
const HANDSHAKE_FRAME_BYTES_MAX: usize = 4 << 10;

/// An authenticated connection, handed to the applier's thread.
pub(crate) struct Handshaken {
    pub stream: TcpStream,
    /// Bytes received after the primary's proof (its first messages, perhaps).
    pub early: Vec<u8>,
    pub greeting: PrimaryGreeting,
    pub from: SocketAddr,
}

/// Accepts connections until `stop`, starting a handshake thread for each (at most
/// `handshakes_max` at a time; more are closed at once and counted).
pub(crate) fn accept_loop(
    listener: TcpListener,
    config: BackupConfig,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<BackupStatus>>,
    handshaken: Sender<Handshaken>,
) {
    let in_progress = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        let (stream, from) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if in_progress.load(Ordering::SeqCst) >= config.handshakes_max {
            refused(&status, from, "too many handshakes in progress".into());
            continue;
        }
        in_progress.fetch_add(1, Ordering::SeqCst);
        let (config, status2, tx, counter) = (
            config.clone(),
            Arc::clone(&status),
            handshaken.clone(),
            Arc::clone(&in_progress),
        );
        let spawned = std::thread::Builder::new()
            .name("kirikae-handshake".into())
            .spawn(move || {
                let deadline = Instant::now() + config.handshake_timeout;
                match handshake(stream, from, &config, &status2, deadline) {
                    Ok(conn) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if tx.send_timeout(conn, left).is_err() {
                            refused(&status2, from, "the backup is stopping".into());
                        }
                    }
                    Err(e) => refused(&status2, from, e.to_string()),
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            in_progress.fetch_sub(1, Ordering::SeqCst);
            refused(
                &status,
                from,
                format!("cannot start a handshake thread: {e}"),
            );
        }
    }
}

fn refused(status: &Mutex<BackupStatus>, from: SocketAddr, reason: String) {
    tracing::info!("connection from {from} refused: {reason}");
    let mut s = status.lock();
    s.handshakes_refused += 1;
    s.last_refusal = Some(format!("{from}: {reason}"));
}

/// Runs the backup's side of the handshake on `stream`, all of it before `deadline`.
fn handshake(
    mut stream: TcpStream,
    from: SocketAddr,
    config: &BackupConfig,
    status: &Mutex<BackupStatus>,
    deadline: Instant,
) -> Result<Handshaken> {
    let network = |what, source| ReplicateError::Network {
        what,
        addr: from.to_string(),
        source,
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| network("greet", e))?;
    stream.set_nodelay(true).map_err(|e| network("greet", e))?;
    let mut decoder = FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX);
    let primary_hello = next(&mut stream, &mut decoder, deadline, from)?;
    let own_hello = {
        let s = status.lock();
        Message::Hello {
            version: PROTOCOL_VERSION,
            epoch: s.epoch,
            node: config.node.clone(),
            last_seq: s.last_seq,
            nonce: [0; 32],
        }
    };
    let (shake, [hello, proof]) =
        BackupHandshake::answer(config.key.clone(), primary_hello, own_hello)?;
    let mut out = encode(&hello, HANDSHAKE_FRAME_BYTES_MAX)?;
    out.extend_from_slice(&encode(&proof, HANDSHAKE_FRAME_BYTES_MAX)?);
    stream
        .set_write_timeout(Some(remaining(deadline, from)?))
        .map_err(|e| network("greet", e))?;
    stream.write_all(&out).map_err(|e| network("greet", e))?;
    let primary_proof = next(&mut stream, &mut decoder, deadline, from)?;
    let greeting = shake.verify(&primary_proof)?;
    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(|e| network("serve", e))?;
    Ok(Handshaken {
        stream,
        early: decoder.into_unread(),
        greeting,
        from,
    })
}

fn remaining(deadline: Instant, from: SocketAddr) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ReplicateError::Unauthenticated {
            reason: format!("{from} did not finish the handshake in time"),
        });
    }
    Ok(left)
}

/// The next message, read before `deadline` (however slowly its bytes trickle in).
fn next(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    deadline: Instant,
    from: SocketAddr,
) -> Result<Message> {
    let mut buf = [0u8; 1024];
    loop {
        if let Some(m) = decoder.next_message()? {
            return Ok(m);
        }
        stream
            .set_read_timeout(Some(remaining(deadline, from)?))
            .map_err(|e| ReplicateError::Network {
                what: "greet",
                addr: from.to_string(),
                source: e,
            })?;
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(ReplicateError::Unauthenticated {
                    reason: format!("{from} closed the connection during the handshake"),
                })
            }
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                remaining(deadline, from)?;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ReplicateError::Network {
                    what: "greet",
                    addr: from.to_string(),
                    source: e,
                })
            }
        }
    }
}
