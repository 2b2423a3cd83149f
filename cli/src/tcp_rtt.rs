//! The raw loopback TCP round trip, measured by a bench in its own run: one byte
//! there and back between two threads of this process, `TCP_NODELAY` on both ends.
//! What replication over the same loopback cannot beat.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

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
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_loopback_round_trip_takes_some_microseconds() {
        let us = super::median_us().unwrap_or_else(|e| panic!("{e}"));
        assert!(us > 0.0 && us < 100_000.0, "{us} µs");
    }
}
