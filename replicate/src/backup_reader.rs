//! The backup's connection reader. While the primary sends a backlog, the stream is
//! read and decoded on a thread of its own, so that the next messages are decoded
//! while the applier thread applies these (issue 13 §1: decoding was about a quarter
//! of that thread's time while it drained a backlog, time the lanes stood still).
//! Otherwise the applier thread reads the socket itself: a lone sync commit then
//! wakes one thread, not two (a hand-off costs tens of µs on a small VM, measured as
//! 3 % fewer sync commits at RTT 1 ms).
//!
//! The read-ahead starts when a read of the applier thread fills its buffer (more is
//! waiting) and stops when the applier thread finds less than a buffer's worth
//! decoded ahead; the decoder, which may hold part of a frame, goes with whoever
//! reads. Read ahead is put in an inbox the applier thread empties at each turn, so
//! that a backlog still comes in large batches (one run for the lanes, one
//! acknowledgement). The inbox is bounded by the bytes read into it: past
//! [`INBOX_BYTES_MAX`] the reader waits, its socket buffer fills, and the primary's
//! writes slow down.

use std::io::{ErrorKind, Read as _};
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

/// How often a waiting reader looks whether it is stopped.
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

/// What the reader thread and the applier thread share, under one lock.
#[derive(Default)]
struct State {
    /// The applier thread wants the reader thread to read ahead.
    reading: bool,
    /// The decoder when the reader thread does not hold it: handed to it with
    /// `reading`, given back once it stops.
    decoder: Option<FrameDecoder>,
    /// Decoded ahead, not taken yet.
    messages: Vec<Message>,
    /// Bytes read ahead for them (and for part of a frame, if any) since the last
    /// take: more than 0 means the primary was heard.
    bytes: usize,
    /// How the stream ended, if it did.
    end: Option<Result<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Read ahead, stopped reading, switched on or off, made room, or stopping.
    changed: Condvar,
    stop: AtomicBool,
}

/// Reads and decodes one connection's stream (see the module docs). Dropping it
/// stops its thread and ends reading on the socket.
pub(crate) struct StreamReader {
    shared: Arc<Shared>,
    stream: TcpStream,
    /// The decoder while the applier thread reads the socket itself.
    decoder: Option<FrameDecoder>,
    buf: Vec<u8>,
    addr: String,
    thread: Option<JoinHandle<()>>,
}

impl StreamReader {
    /// Starts on `stream` (from `addr`, named in errors) with `decoder`, which may
    /// hold bytes read already. The stream's read timeout bounds how long a take
    /// waits, and how long the reader thread takes to notice it is stopped.
    pub(crate) fn start(
        stream: &TcpStream,
        decoder: FrameDecoder,
        addr: String,
    ) -> Result<StreamReader> {
        let network = |source| network(&addr, source);
        let reading = stream.try_clone().map_err(network)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let (shared, addr) = (Arc::clone(&shared), addr.clone());
            std::thread::Builder::new()
                .name("kirikae-backup-reader".into())
                .spawn(move || read_ahead(reading, &addr, &shared))
                .map_err(network)?
        };
        Ok(StreamReader {
            shared,
            stream: stream.try_clone().map_err(network)?,
            decoder: Some(decoder),
            buf: vec![0u8; READ_BYTES],
            addr,
            thread: Some(thread),
        })
    }

    /// Adds to `messages`, in order, what the primary sent since the last take:
    /// read here (waiting up to the stream's read timeout) or, during a backlog,
    /// taken from what was read ahead (waiting up to `wait`). With the connection's
    /// end if it came: the messages before it are to be applied all the same.
    pub(crate) fn take(&mut self, wait: Duration, messages: &mut Vec<Message>) -> Arrival {
        match self.decoder.take() {
            Some(decoder) => self.read_here(decoder, messages),
            None => self.take_read_ahead(wait, messages),
        }
    }

    fn read_here(&mut self, mut decoder: FrameDecoder, messages: &mut Vec<Message>) -> Arrival {
        // Complete frames already in the decoder (the handshake's bytes) come first.
        let before = messages.len();
        let n = match decode(&mut decoder, messages) {
            Err(e) => return Arrival::Failed(e),
            Ok(()) if messages.len() > before => 0,
            Ok(()) => match read_some(&mut self.stream, &mut self.buf, &self.addr) {
                Read::Bytes(n) => n,
                Read::Nothing => {
                    self.decoder = Some(decoder);
                    return Arrival::Nothing;
                }
                Read::End(Ok(())) => return Arrival::Closed,
                Read::End(Err(e)) => return Arrival::Failed(e),
            },
        };
        decoder.push(&self.buf[..n]);
        if let Err(e) = decode(&mut decoder, messages) {
            return Arrival::Failed(e);
        }
        if n == self.buf.len() {
            // A full buffer: more is waiting. Read ahead while this is applied.
            let mut state = self.shared.state.lock();
            state.reading = true;
            state.decoder = Some(decoder);
            drop(state);
            self.shared.changed.notify_all();
        } else {
            self.decoder = Some(decoder);
        }
        Arrival::Heard
    }

    fn take_read_ahead(&mut self, wait: Duration, messages: &mut Vec<Message>) -> Arrival {
        let mut state = self.shared.state.lock();
        if state.bytes == 0 && state.end.is_none() && (state.reading || state.decoder.is_none()) {
            self.shared.changed.wait_for(&mut state, wait);
        }
        messages.append(&mut state.messages);
        let taken_bytes = std::mem::take(&mut state.bytes);
        let end = state.end.take();
        if taken_bytes < READ_BYTES {
            // The backlog is read: the next messages are read here, once the reader
            // thread gives the decoder back (after the read it may be in).
            state.reading = false;
        }
        if !state.reading {
            self.decoder = state.decoder.take();
        }
        drop(state);
        self.shared.changed.notify_all();
        match end {
            Some(Ok(())) => Arrival::Closed,
            Some(Err(e)) => Arrival::Failed(e),
            None if taken_bytes > 0 => Arrival::Heard,
            None => Arrival::Nothing,
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // A reader waiting is let go, one blocked in a read is woken (end of file),
        // without waiting for the read timeout.
        self.shared.changed.notify_all();
        let _ = self.stream.shutdown(Shutdown::Read);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn network(addr: &str, source: std::io::Error) -> ReplicateError {
    ReplicateError::Network {
        what: "read from",
        addr: addr.to_owned(),
        source,
    }
}

/// What one read of the socket gave.
enum Read {
    Bytes(usize),
    /// The read timed out (or was interrupted).
    Nothing,
    /// The primary closed the connection, or the read failed.
    End(Result<()>),
}

fn read_some(stream: &mut TcpStream, buf: &mut [u8], addr: &str) -> Read {
    match stream.read(buf) {
        Ok(0) => Read::End(Ok(())),
        Ok(n) => Read::Bytes(n),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) =>
        {
            Read::Nothing
        }
        Err(e) => Read::End(Err(network(addr, e))),
    }
}

/// Moves every complete message in `decoder` to `messages`.
fn decode(decoder: &mut FrameDecoder, messages: &mut Vec<Message>) -> Result<()> {
    while let Some(m) = decoder.next_message()? {
        messages.push(m);
    }
    Ok(())
}

/// The reader thread: reads ahead while the applier thread wants it to.
fn read_ahead(mut stream: TcpStream, addr: &str, shared: &Shared) {
    let mut buf = vec![0u8; READ_BYTES];
    while !shared.stop.load(Ordering::SeqCst) {
        let mut decoder = {
            let mut state = shared.state.lock();
            loop {
                if state.reading {
                    if let Some(d) = state.decoder.take() {
                        break d;
                    }
                }
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                shared.changed.wait_for(&mut state, STOP_CHECK_EVERY);
            }
        };
        // Reads until switched off (checked after each read), then gives the
        // decoder back with what it decoded.
        loop {
            let (n, end) = match read_some(&mut stream, &mut buf, addr) {
                Read::Bytes(n) => (n, None),
                Read::Nothing => (0, None),
                Read::End(end) => (0, Some(end)),
            };
            decoder.push(&buf[..n]);
            let mut messages = Vec::new();
            let end = match decode(&mut decoder, &mut messages) {
                Ok(()) => end,
                Err(e) => Some(Err(e)),
            };
            let mut state = shared.state.lock();
            while n > 0 && state.bytes >= INBOX_BYTES_MAX {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                shared.changed.wait_for(&mut state, STOP_CHECK_EVERY);
            }
            state.messages.append(&mut messages);
            state.bytes += n;
            let ended = end.is_some();
            state.end = state.end.take().or(end);
            if ended || !state.reading {
                state.decoder = Some(decoder);
                drop(state);
                shared.changed.notify_all();
                if ended {
                    return;
                }
                break;
            }
            drop(state);
            shared.changed.notify_all();
        }
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
    fn take_all(reader: &mut StreamReader, deadline: Instant) -> (Vec<Message>, Arrival) {
        let mut messages = Vec::new();
        loop {
            match reader.take(Duration::from_millis(50), &mut messages) {
                Arrival::Nothing | Arrival::Heard if Instant::now() < deadline => continue,
                end => return (messages, end),
            }
        }
    }

    /// Writes heartbeats 1..=`n` in one go on a thread of its own (more than the
    /// socket buffers hold), which gives the stream back once written.
    fn write_backlog(mut primary: TcpStream, n: u64) -> std::thread::JoinHandle<TcpStream> {
        let backlog: Vec<u8> = (1..=n)
            .flat_map(|n| encode(&heartbeat(n), MAX).expect("encode"))
            .collect();
        assert!(backlog.len() > 2 * super::READ_BYTES);
        std::thread::spawn(move || {
            primary.write_all(&backlog).expect("write the backlog");
            primary
        })
    }

    /// Takes `n` messages (or what came within 20 s); whether any was read ahead.
    fn take_backlog(reader: &mut StreamReader, n: usize) -> (Vec<Message>, bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut messages, mut read_ahead) = (Vec::new(), false);
        while messages.len() < n && Instant::now() < deadline {
            reader.take(Duration::from_millis(50), &mut messages);
            read_ahead |= reader.decoder.is_none();
        }
        (messages, read_ahead)
    }

    #[test]
    fn messages_come_in_order_however_split_and_the_end_after_them() {
        let early = encode(&heartbeat(1), MAX).expect("encode");
        let (mut primary, mut reader, _backup) = pair(&early, Duration::from_millis(20));
        let mut rest = Vec::new();
        for n in 2..=200 {
            rest.extend(encode(&heartbeat(n), MAX).expect("encode"));
        }
        // In pieces that cut frames anywhere.
        for piece in rest.chunks(7) {
            primary.write_all(piece).expect("write");
        }
        drop(primary);
        let (messages, end) = take_all(&mut reader, Instant::now() + Duration::from_secs(10));
        assert!(matches!(end, Arrival::Closed), "ended with {end:?}");
        let expected: Vec<Message> = (1..=200).map(heartbeat).collect();
        assert_eq!(messages, expected);
    }

    #[test]
    fn a_corrupt_frame_ends_the_connection_with_an_error_after_the_good_ones() {
        let (mut primary, mut reader, _backup) = pair(&[], Duration::from_millis(20));
        let mut bytes = encode(&heartbeat(1), MAX).expect("encode");
        let mut bad = encode(&heartbeat(2), MAX).expect("encode");
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        bytes.extend(bad);
        primary.write_all(&bytes).expect("write");
        let (messages, end) = take_all(&mut reader, Instant::now() + Duration::from_secs(10));
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
        let (primary, mut reader, _backup) = pair(&[], Duration::from_secs(30));
        // A backlog gets the reader thread reading; then the primary falls silent,
        // leaving it blocked in a read.
        let writer = write_backlog(primary, 60_000);
        let (messages, read_ahead) = take_backlog(&mut reader, 60_000);
        assert_eq!(messages.len(), 60_000);
        assert!(
            read_ahead,
            "a backlog of several buffers was not read ahead"
        );
        let _primary = writer.join().expect("writer");
        let started = Instant::now();
        drop(reader);
        // Far below the 30 s read timeout: the drop ended the blocked read.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_backlog_is_read_ahead_then_reading_comes_back_to_the_applier_thread() {
        let (primary, mut reader, _backup) = pair(&[], Duration::from_millis(20));
        let writer = write_backlog(primary, 60_000);
        let (messages, read_ahead) = take_backlog(&mut reader, 60_000);
        let expected: Vec<Message> = (1..=60_000).map(heartbeat).collect();
        assert_eq!(messages, expected);
        assert!(
            read_ahead,
            "a backlog of several buffers was not read ahead"
        );
        // A lone message after the backlog: the reader thread gives the decoder
        // back, and reading is done on the applier thread again.
        let mut primary = writer.join().expect("writer");
        primary
            .write_all(&encode(&heartbeat(60_001), MAX).expect("encode"))
            .expect("write");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut after = Vec::new();
        while (after.is_empty() || reader.decoder.is_none()) && Instant::now() < deadline {
            reader.take(Duration::from_millis(50), &mut after);
        }
        assert_eq!(after, vec![heartbeat(60_001)]);
        assert!(reader.decoder.is_some(), "still reading ahead");
        drop(primary);
        let (rest, end) = take_all(&mut reader, Instant::now() + Duration::from_secs(10));
        assert!(rest.is_empty());
        assert!(matches!(end, Arrival::Closed), "ended with {end:?}");
    }
}
