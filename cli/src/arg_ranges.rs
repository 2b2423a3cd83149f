//! Value parsers for the command line's numbers: every option accepts only its valid
//! range, and anything else is a usage error naming the option (clap adds the name)
//! and the range, never a panic later in the run.

use std::ops::RangeInclusive;

/// Longest run or pause the CLI accepts, seconds (a week).
const SECONDS_MAX: f64 = 7.0 * 24.0 * 3600.0;

/// A finite number in `range`; `what` says what the range means.
fn float_in(s: &str, range: RangeInclusive<f64>, what: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number ({what})"))?;
    if !v.is_finite() || !range.contains(&v) {
        return Err(format!("`{s}` is out of range ({what})"));
    }
    Ok(v)
}

/// Seconds, 0 to a week.
pub fn seconds(s: &str) -> Result<f64, String> {
    float_in(s, 0.0..=SECONDS_MAX, "seconds, 0 to 604800")
}

/// A finite number above 0, up to `max`.
fn positive_up_to(s: &str, max: f64, what: &str) -> Result<f64, String> {
    match float_in(s, 0.0..=max, what)? {
        0.0 => Err(format!("`{s}` is out of range ({what})")),
        v => Ok(v),
    }
}

/// Seconds, more than 0, up to a week.
pub fn positive_seconds(s: &str) -> Result<f64, String> {
    positive_up_to(s, SECONDS_MAX, "seconds, more than 0, up to 604800")
}

/// A share, 0 to 1.
pub fn share(s: &str) -> Result<f64, String> {
    float_in(s, 0.0..=1.0, "a share, 0 to 1")
}

/// A duty cycle, more than 0, up to 1.
pub fn duty(s: &str) -> Result<f64, String> {
    positive_up_to(s, 1.0, "a duty cycle, more than 0, up to 1")
}

/// A percentage, 0 to 100.
pub fn percent(s: &str) -> Result<f64, String> {
    float_in(s, 0.0..=100.0, "a percentage, 0 to 100")
}

/// A round-trip time, 0 to 10,000 ms.
pub fn rtt_ms(s: &str) -> Result<f64, String> {
    float_in(s, 0.0..=10_000.0, "milliseconds, 0 to 10000")
}

/// A rate per second, more than 0, up to 10^9.
pub fn rate(s: &str) -> Result<f64, String> {
    positive_up_to(s, 1e9, "per second, more than 0, up to 1000000000")
}

/// Rows or subscribers: 1 to 100 million (the 24 GiB machines hold about that many).
pub fn rows(s: &str) -> Result<u64, String> {
    count(s, 1..=100_000_000, "1 to 100000000")
}

/// Threads or sessions: 1 to 1024.
pub fn threads(s: &str) -> Result<usize, String> {
    count(s, 1..=1024, "1 to 1024").map(|n| n as usize)
}

/// Apply lanes of a backup, 1 to `APPLY_LANES_MAX`.
pub fn apply_lanes(s: &str) -> Result<usize, String> {
    let max = kirikae::replicate::APPLY_LANES_MAX as u64;
    count(s, 1..=max, &format!("1 to {max}")).map(|n| n as usize)
}

/// A think time, 0 to 1,000,000 µs.
pub fn think_us(s: &str) -> Result<u64, String> {
    count(s, 0..=1_000_000, "microseconds, 0 to 1000000")
}

/// A copy rate limit, 1 to 10^9 rows/s.
pub fn rate_limit(s: &str) -> Result<u64, String> {
    count(s, 1..=1_000_000_000, "rows per second, 1 to 1000000000")
}

/// A trial count, 1 to 10000.
pub fn trials(s: &str) -> Result<u64, String> {
    count(s, 1..=10_000, "trials, 1 to 10000")
}

/// A failover delay, milliseconds: 100 ms to 10 minutes.
pub fn failover_ms(s: &str) -> Result<u64, String> {
    count(s, 100..=600_000, "milliseconds, 100 to 600000")
}

/// A status line's period, ms: 50 to 60000.
pub fn status_every_ms(s: &str) -> Result<u64, String> {
    count(s, 50..=60_000, "milliseconds, 50 to 60000")
}

fn count(s: &str, range: RangeInclusive<u64>, what: &str) -> Result<u64, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number ({what})"))?;
    if !range.contains(&v) {
        return Err(format!("`{s}` is out of range ({what})"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_outside_their_range_are_refused_with_the_range() {
        for bad in ["-1", "nan", "inf", "-inf", "1e300", "", "x"] {
            let e = seconds(bad).expect_err(bad);
            assert!(e.contains("seconds, 0 to 604800"), "{bad}: {e}");
        }
        assert_eq!(seconds("0"), Ok(0.0));
        assert_eq!(seconds("2.5"), Ok(2.5));
        assert!(positive_seconds("0").is_err());
        assert!(duty("0").is_err() && duty("5").is_err() && duty("1") == Ok(1.0));
        assert!(share("2").is_err() && share("0") == Ok(0.0));
        assert!(percent("150").is_err() && percent("100") == Ok(100.0));
        assert!(rtt_ms("-3").is_err() && rtt_ms("10") == Ok(10.0));
        assert!(rate("0").is_err() && rate("nan").is_err() && rate("5") == Ok(5.0));
        assert!(rows("0").is_err() && rows("-5").is_err() && rows("1") == Ok(1));
        assert!(threads("0").is_err() && threads("5000").is_err() && threads("2") == Ok(2));
        assert!(think_us("-1").is_err() && think_us("0") == Ok(0));
        assert!(rate_limit("0").is_err() && rate_limit("1000") == Ok(1000));
    }
}
