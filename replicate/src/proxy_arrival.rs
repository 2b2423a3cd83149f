//! When a chunk reached the loopback proxy: the kernel's receive timestamp, not the
//! instant the proxy's reading thread got round to it.
//!
//! Why: the emulated delay must start when the bytes arrived, as a kernel queueing
//! discipline's would. A blocked reader on this kind of VM wakes 20–150 µs after
//! its data (an idle virtual CPU is woken by its host first); counting the delay
//! from the wake-up added that lateness to every chunk, both ways, on top of the
//! round trip the proxy emulates. With `SO_TIMESTAMPNS` the kernel stamps each
//! segment as it is queued to the socket, and `recvmsg` hands the stamp over.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The oldest a stamp may say a chunk is. Beyond it the stamp is not believed
/// (the wall clock stepped) and the chunk counts as arriving when read.
const AGE_MAX: Duration = Duration::from_secs(1);

/// Reads from a TCP stream, telling when what it read arrived.
pub(crate) struct StampedReader {
    stream: TcpStream,
    /// Whether the kernel was asked to stamp arrivals (a refusal falls back to
    /// the instant of the read).
    stamped: bool,
    #[cfg(target_os = "linux")]
    control: Vec<u8>,
}

impl StampedReader {
    pub(crate) fn new(stream: TcpStream) -> StampedReader {
        #[cfg(target_os = "linux")]
        {
            use nix::sys::socket::{setsockopt, sockopt::ReceiveTimestampns};
            let stamped = setsockopt(&stream, ReceiveTimestampns, &true).is_ok();
            StampedReader {
                stream,
                stamped,
                control: nix::cmsg_space!(nix::sys::time::TimeSpec),
            }
        }
        #[cfg(not(target_os = "linux"))]
        StampedReader {
            stream,
            stamped: false,
        }
    }

    /// Reads what is there (waiting for something), returning how many bytes and
    /// when the last of them arrived; `Ok((0, _))` at the end of the stream.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, Instant)> {
        let (n, stamped) = self.read_stamped(buf)?;
        Ok((n, stamped.unwrap_or_else(Instant::now)))
    }

    /// Reads as [`read`](StampedReader::read) does; the arrival is `None` when the
    /// kernel gave no believable stamp. It stamps nothing until the first socket
    /// asking for stamps switches stamping on, which it does from a work queue, a
    /// moment later (`net_enable_timestamp`).
    #[cfg(not(target_os = "linux"))]
    fn read_stamped(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, Option<Instant>)> {
        Ok((self.stream.read(buf)?, None))
    }

    /// See the other platforms' version.
    #[cfg(target_os = "linux")]
    fn read_stamped(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, Option<Instant>)> {
        if !self.stamped {
            return Ok((self.stream.read(buf)?, None));
        }
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::AsRawFd;
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let received = loop {
            match recvmsg::<()>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut self.control),
                MsgFlags::empty(),
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(received) => break received,
            }
        };
        let now = Instant::now();
        let stamp = received.cmsgs().ok().and_then(|mut cmsgs| {
            cmsgs.find_map(|cmsg| match cmsg {
                ControlMessageOwned::ScmTimestampns(t) => Some(t),
                _ => None,
            })
        });
        let arrived = stamp.and_then(|t| {
            let stamp = Duration::new(
                u64::try_from(t.tv_sec()).ok()?,
                u32::try_from(t.tv_nsec()).ok()?,
            );
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            let age = wall.checked_sub(stamp)?;
            (age <= AGE_MAX).then(|| now.checked_sub(age)).flatten()
        });
        Ok((received.bytes, arrived))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn a_chunk_read_late_is_stamped_with_when_it_arrived() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut sender = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (receiver, _) = listener.accept().expect("accept");
        receiver
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reader = StampedReader::new(receiver.try_clone().expect("clone"));
        let mut buf = [0u8; 16];
        // Stamping starts a moment after it is asked for (see `read_stamped`):
        // chunks are sent until one is stamped, within a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        let late = Duration::from_millis(20);
        let (sent, seen, arrived) = loop {
            let sent = Instant::now();
            sender.write_all(b"hello").expect("write");
            // Once peek sees the bytes they have arrived; read well after that.
            receiver.peek(&mut buf).expect("peek");
            let seen = Instant::now();
            std::thread::sleep(late);
            let (n, arrived) = reader.read_stamped(&mut buf).expect("read");
            assert_eq!(&buf[..n], b"hello");
            match arrived {
                Some(arrived) => break (sent, seen, arrived),
                None if cfg!(target_os = "linux") && Instant::now() < deadline => continue,
                None if cfg!(target_os = "linux") => panic!("no chunk stamped in 10 s"),
                None => return,
            }
        };
        // A millisecond for converting the wall-clock stamp; the read came 20 later.
        assert!(
            arrived + Duration::from_millis(1) >= sent,
            "stamped {:?} before the send",
            sent.saturating_duration_since(arrived)
        );
        assert!(
            arrived <= seen + Duration::from_millis(1),
            "stamped {:?} after the bytes were seen, read {late:?} after",
            arrived.saturating_duration_since(seen),
        );
        drop(sender);
        assert_eq!(reader.read(&mut buf).expect("end").0, 0);
    }
}
