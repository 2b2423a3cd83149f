//! The raw loopback TCP round trip, measured by a bench in its own run: one byte
//! there and back between two threads of this process, `TCP_NODELAY` on both ends.
//! What replication over the same loopback cannot beat. And the same ping-pong,
//! several at once, through the delay proxy: what a sync commit per session could
//! reach over the network the proxy emulates, its own hops included.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use kirikae::replicate::{Impairment, LoopbackProxy};

use crate::CliError;

/// Round trips measured (after as many to warm up).
const ROUND_TRIPS: usize = 5_000;
/// A round trip taking longer than this ends the measurement with an error.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The median of [`ROUND_TRIPS`] round trips, µs.
pub fn median_us() -> Result<f64, CliError> {
    let fail =
        |what: &str, e: std::io::Error| CliError::Usage(format!("tcp round trip: {what}: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| fail("bind", e))?;
    let addr = listener.local_addr().map_err(|e| fail("address", e))?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> { echo(listener.accept()?.0) });
    let mut c = TcpStream::connect(addr).map_err(|e| fail("connect", e))?;
    c.set_nodelay(true).map_err(|e| fail("nodelay", e))?;
    c.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| fail("timeout", e))?;
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    let mut b = [7u8; 1];
    for i in 0..2 * ROUND_TRIPS {
        let t0 = Instant::now();
        c.write_all(&b).map_err(|e| fail("write", e))?;
        c.read_exact(&mut b).map_err(|e| fail("read", e))?;
        if i >= ROUND_TRIPS {
            samples.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(c);
    let _ = echo.join();
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Round trips per second of `pingers` one-byte ping-pongs running at once for
/// `duration`, each on its own connection through a [`LoopbackProxy`] with
/// `impairment` to an echo thread: the bound the emulated network itself puts on
/// `pingers` sessions that each wait for one round trip per commit (the proxy's
/// two extra hops and its timer's lateness included, which an ideal
/// `pingers ÷ RTT` leaves out).
pub fn through_proxy_per_s(
    impairment: Impairment,
    pingers: usize,
    duration: Duration,
) -> Result<f64, CliError> {
    let fail = |e: std::io::Error| CliError::Usage(format!("round trips through the proxy: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(fail)?;
    let addr = listener.local_addr().map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let proxy = LoopbackProxy::start(addr, impairment)
        .map_err(|e| CliError::Usage(format!("round trips through the proxy: {e}")))?;
    let target = proxy.local_addr();
    let deadline = Instant::now() + duration;
    let round_trips = std::thread::scope(|scope| {
        let listener = &listener;
        let echoes = scope.spawn(move || serve_echoes(listener, pingers, deadline + TIMEOUT));
        let pings: Vec<_> = (0..pingers)
            .map(|_| scope.spawn(move || ping_until(target, deadline)))
            .collect();
        let mut total = Ok(0u64);
        for p in pings {
            let done = p
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a pinger panicked")));
            total = match (total, done) {
                (Ok(sum), Ok(n)) => Ok(sum + n),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        // Ends the echo threads still reading.
        proxy.cut();
        let accepted = echoes
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the echo server panicked")));
        accepted.and(total)
    });
    Ok(round_trips.map_err(fail)? as f64 / duration.as_secs_f64())
}

/// Accepts `connections` and echoes each on its own thread until it closes;
/// gives up accepting at `give_up`.
fn serve_echoes(
    listener: &TcpListener,
    connections: usize,
    give_up: Instant,
) -> std::io::Result<()> {
    std::thread::scope(|scope| {
        let mut accepted = 0;
        while accepted < connections {
            match listener.accept() {
                Ok((s, _)) => {
                    accepted += 1;
                    scope.spawn(move || echo(s));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= give_up {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            format!("{accepted} of {connections} connections came"),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}

/// Sends back each byte read, until the connection ends (or nothing comes for
/// [`TIMEOUT`]).
fn echo(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let mut b = [0u8; 1];
    while s.read(&mut b)? == 1 {
        s.write_all(&b)?;
    }
    Ok(())
}

/// One-byte round trips to `target` until `deadline`; returns how many.
fn ping_until(target: std::net::SocketAddr, deadline: Instant) -> std::io::Result<u64> {
    let mut c = TcpStream::connect(target)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(TIMEOUT))?;
    let mut b = [7u8; 1];
    let mut n = 0;
    while Instant::now() < deadline {
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_loopback_round_trip_takes_some_microseconds() {
        let us = super::median_us().unwrap_or_else(|e| panic!("{e}"));
        assert!(us > 0.0 && us < 100_000.0, "{us} µs");
    }

    #[test]
    fn round_trips_through_the_proxy_are_bounded_by_its_delay() {
        let impairment = super::Impairment {
            delay: super::Duration::from_millis(5),
            ..super::Impairment::default()
        };
        let per_s = super::through_proxy_per_s(impairment, 2, super::Duration::from_millis(300))
            .unwrap_or_else(|e| panic!("{e}"));
        // Two pingers, each at most one round trip per 10 ms: 200/s at best. At
        // least one round trip each must have finished in 300 ms.
        assert!(per_s <= 200.0 + 1e-9, "{per_s}/s beats the delay");
        assert!(per_s >= 2.0 / 0.3 - 1e-9, "{per_s}/s");
    }
}
