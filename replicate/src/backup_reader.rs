//! The backup's connection reader: reads and decodes the primary's stream on a
//! thread of its own, so that the next messages are decoded while the applier
//! thread applies these (issue 13 §1: decoding was about a quarter of that thread's
//! time while it drained a backlog, time the lanes stood still).
//!
//! The hand-off is an inbox the applier thread empties at each turn: all that was
//! decoded since, so that a backlog still comes in large batches (one run for the
//! lanes, one acknowledgement) and a lone commit at once. The inbox is bounded by
//! the bytes read into it: past [`INBOX_BYTES_MAX`] the reader waits, its socket
//! buffer fills, and the primary's writes slow down.

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{ReplicateError, Result};
use crate::wire::{FrameDecoder, Message};

/// Bytes asked of the socket in one read.
const READ_BYTES: usize = 256 << 10;

/// Bytes read into the inbox and not taken yet, at most (a frame larger than this
/// still gets in, alone).
const INBOX_BYTES_MAX: usize = 4 << 20;

/// How often a reader waiting for room looks whether it is stopped.
const STOP_CHECK_EVERY: Duration = Duration::from_millis(20);

/// What [`StreamReader::take`] found. The messages it added came before any end.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// Nothing within the wait.
    Nothing,
    /// Bytes arrived (the messages they completed, if any, were added).
    Heard,
    /// The primary closed the connection.
    Closed,
    /// A read failed or a frame was bad: the connection is over.
    Failed(ReplicateError),
}

/// What the reader has decoded and the applier thread not taken yet.
#[derive(Default)]
struct Inbox {
    messages: Vec<Message>,
    /// Bytes read for them (and for part of a frame, if any).
    bytes: usize,
    /// Bytes arrived since the last take.
    heard: bool,
    /// How the stream ended, if it did.
    end: Option<Result<()>>,
}

struct Shared {
    inbox: Mutex<Inbox>,
    /// Messages or an end arrived, or room was made, or the reader is stopped.
    changed: Condvar,
    stop: AtomicBool,
}

/// Reads and decodes one connection's stream on its own thread (see the module
/// docs). Dropping it stops the thread and ends reading on the socket.
pub(crate) struct StreamReader {
    shared: Arc<Shared>,
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
}

impl StreamReader {
    /// Starts reading `stream` (from `addr`, named in errors) with `decoder`, which
    /// may hold bytes read already. The stream's read timeout bounds how long the
    /// thread takes to notice it is stopped.
    pub(crate) fn start(
        stream: &TcpStream,
        decoder: FrameDecoder,
        addr: String,
    ) -> Result<StreamReader> {
        let network = |source| ReplicateError::Network {
            what: "read from",
            addr: addr.clone(),
            source,
        };
        let reading = stream.try_clone().map_err(network)?;
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let (shared, addr) = (Arc::clone(&shared), addr.clone());
            std::thread::Builder::new()
                .name("kirikae-backup-reader".into())
                .spawn(move || read_loop(reading, decoder, &addr, &shared))
                .map_err(network)?
        };
        Ok(StreamReader {
            shared,
            stream: stream.try_clone().map_err(network)?,
            thread: Some(thread),
        })
    }

    /// Waits up to `wait` for something from the primary, then moves every message
    /// decoded so far to `messages`, in order, with the connection's end if it
    /// came: the messages before the end are to be applied all the same.
    pub(crate) fn take(&self, wait: Duration, messages: &mut Vec<Message>) -> Arrival {
        let mut inbox = self.shared.inbox.lock();
        if !inbox.heard && inbox.end.is_none() {
            self.shared.changed.wait_for(&mut inbox, wait);
        }
        let heard = std::mem::take(&mut inbox.heard);
        if messages.is_empty() {
            std::mem::swap(messages, &mut inbox.messages);
        } else {
            messages.append(&mut inbox.messages);
        }
        inbox.bytes = 0;
        let end = inbox.end.take();
        drop(inbox);
        self.shared.changed.notify_all();
        match end {
            Some(Ok(())) => Arrival::Closed,
            Some(Err(e)) => Arrival::Failed(e),
            None if heard => Arrival::Heard,
            None => Arrival::Nothing,
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // A reader waiting for room is let go, one blocked in a read is woken (end
        // of file), without waiting for the read timeout.
        self.shared.changed.notify_all();
        let _ = self.stream.shutdown(Shutdown::Read);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(mut stream: TcpStream, mut decoder: FrameDecoder, addr: &str, shared: &Shared) {
    let mut buf = vec![0u8; READ_BYTES];
    // The messages decoded before the end go with it.
    let end = |mut messages: Vec<Message>, end: Result<()>| {
        let mut inbox = shared.inbox.lock();
        inbox.messages.append(&mut messages);
        inbox.end = Some(end);
        drop(inbox);
        shared.changed.notify_all();
    };
    // The decoder may hold bytes read during the handshake: decoded first.
    let mut read = Some(0);
    while !shared.stop.load(Ordering::SeqCst) {
        let n = match read.take() {
            Some(n) => n,
            None => match stream.read(&mut buf) {
                Ok(0) => return end(Vec::new(), Ok(())),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    let error = ReplicateError::Network {
                        what: "read from",
                        addr: addr.to_owned(),
                        source: e,
                    };
                    return end(Vec::new(), Err(error));
                }
            },
        };
        decoder.push(&buf[..n]);
        let mut messages = Vec::new();
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => return end(messages, Err(e.into())),
            }
        }
        if n == 0 && messages.is_empty() {
            continue;
        }
        let mut inbox = shared.inbox.lock();
        while inbox.bytes >= INBOX_BYTES_MAX {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            shared.changed.wait_for(&mut inbox, STOP_CHECK_EVERY);
        }
        inbox.messages.append(&mut messages);
        inbox.bytes += n;
        inbox.heard = true;
        drop(inbox);
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::{Arrival, StreamReader};
    use crate::epoch::Epoch;
    use crate::seq::Seq;
    use crate::wire::{encode, FrameDecoder, Message};

    const MAX: usize = 1 << 20;

    /// A connected pair: the primary's end, and a reader of the backup's end (its
    /// read timeout `read_timeout`), with `early` already read by the handshake.
    fn pair(early: &[u8], read_timeout: Duration) -> (TcpStream, StreamReader, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let primary = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (backup, from) = listener.accept().expect("accept");
        backup
            .set_read_timeout(Some(read_timeout))
            .expect("timeout");
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(early);
        let reader = StreamReader::start(&backup, decoder, from.to_string()).expect("start");
        (primary, reader, backup)
    }

    fn heartbeat(n: u64) -> Message {
        Message::Heartbeat {
            epoch: Epoch(1),
            last_seq: Seq(n),
        }
    }

    /// Takes until the connection ends or `deadline` passes.
    fn take_all(reader: &StreamReader, deadline: Instant) -> (Vec<Message>, Arrival) {
        let mut messages = Vec::new();
        loop {
            match reader.take(Duration::from_millis(50), &mut messages) {
                Arrival::Nothing | Arrival::Heard if Instant::now() < deadline => continue,
                end => return (messages, end),
            }
        }
    }

    #[test]
    fn messages_come_in_order_however_split_and_the_end_after_them() {
        let early = encode(&heartbeat(1), MAX).expect("encode");
        let (mut primary, reader, _backup) = pair(&early, Duration::from_millis(20));
        let mut rest = Vec::new();
        for n in 2..=200 {
            rest.extend(encode(&heartbeat(n), MAX).expect("encode"));
        }
        // In pieces that cut frames anywhere.
        for piece in rest.chunks(7) {
            primary.write_all(piece).expect("write");
        }
        drop(primary);
        let (messages, end) = take_all(&reader, Instant::now() + Duration::from_secs(10));
        assert!(matches!(end, Arrival::Closed), "ended with {end:?}");
        let expected: Vec<Message> = (1..=200).map(heartbeat).collect();
        assert_eq!(messages, expected);
    }

    #[test]
    fn a_corrupt_frame_ends_the_connection_with_an_error_after_the_good_ones() {
        let (mut primary, reader, _backup) = pair(&[], Duration::from_millis(20));
        let mut bytes = encode(&heartbeat(1), MAX).expect("encode");
        let mut bad = encode(&heartbeat(2), MAX).expect("encode");
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        bytes.extend(bad);
        primary.write_all(&bytes).expect("write");
        let (messages, end) = take_all(&reader, Instant::now() + Duration::from_secs(10));
        assert_eq!(messages, vec![heartbeat(1)]);
        match end {
            Arrival::Failed(e) => assert!(
                e.to_string().contains("at byte 11: checksum mismatch"),
                "{e}"
            ),
            other => panic!("ended with {other:?}"),
        }
    }

    #[test]
    fn a_reader_of_a_silent_primary_stops_without_waiting_out_its_read_timeout() {
        let (_primary, reader, _backup) = pair(&[], Duration::from_secs(30));
        let mut messages = Vec::new();
        assert!(matches!(
            reader.take(Duration::from_millis(10), &mut messages),
            Arrival::Nothing
        ));
        let started = Instant::now();
        drop(reader);
        // Far below the 30 s read timeout: the drop ended the blocked read.
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
