//! Timing helpers for the benchmarks: run an operation on N threads for a fixed time,
//! with a progress bar on stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

/// A progress bar for one timed cell, drawn on stderr (stdout stays clean for JSON).
pub fn cell_bar(label: &str, duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(crate::progress::style("{prefix:>28} [{bar:30}] {msg}"));
    bar.set_prefix(label.to_owned());
    bar
}

/// Runs `op(thread, i)` on `threads` threads for `duration`; returns operations per
/// second over all threads. `op` must be safe to call concurrently.
pub fn ops_per_s(
    label: &str,
    threads: usize,
    duration: Duration,
    op: &(dyn Fn(usize, u64) + Sync),
) -> f64 {
    let bar = cell_bar(label, duration);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + duration;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let done = &done;
            scope.spawn(move || {
                let mut i = 0u64;
                loop {
                    for _ in 0..256 {
                        op(t, i);
                        i += 1;
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                done.fetch_add(i, Ordering::Relaxed);
            });
        }
        while Instant::now() < deadline {
            bar.set_position(started.elapsed().as_millis() as u64);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    bar.finish_with_message(format!("{:.0} ops/s", rate));
    rate
}

/// Runs `op(i)` on the calling thread for `duration`; returns operations per second.
/// For operations that cannot leave their thread (e.g. a SQLite prepared statement).
pub fn ops_per_s_local(label: &str, duration: Duration, op: &mut dyn FnMut(u64)) -> f64 {
    let bar = cell_bar(label, duration);
    let started = Instant::now();
    let deadline = started + duration;
    let mut i = 0u64;
    loop {
        for _ in 0..256 {
            op(i);
            i += 1;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if i % 65_536 == 0 {
            bar.set_position((now - started).as_millis() as u64);
        }
    }
    let rate = i as f64 / started.elapsed().as_secs_f64();
    bar.finish_with_message(format!("{:.0} ops/s", rate));
    rate
}

/// A process's CPU time so far (user + system), µs: this one's (`pid` `None`) or a
/// child's, from `/proc/<pid>/stat` (in clock ticks of 10 ms; 0 where it cannot be
/// read).
pub fn process_cpu_us(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) * 10_000
}

/// Cores kept busy by `cpu_us` of CPU time (summed over processes) spent in
/// `seconds` of wall time.
pub fn cores_busy(cpu_us: u64, seconds: f64) -> f64 {
    cpu_us as f64 / 1e6 / seconds.max(1e-9)
}

/// Async ÷ ordered of the mean rate of each mode's runs (`(mode, rate)` pairs);
/// `None` unless each mode has runs and every one of them measured a rate.
pub fn async_over_ordered<'m>(runs: impl IntoIterator<Item = (&'m str, f64)>) -> Option<f64> {
    let runs: Vec<(&str, f64)> = runs.into_iter().collect();
    let mean = |mode: &str| {
        let rates: Vec<f64> = runs
            .iter()
            .filter(|(m, _)| *m == mode)
            .map(|&(_, r)| r)
            .collect();
        let measured = !rates.is_empty() && rates.iter().all(|r| r.is_finite() && *r > 0.0);
        measured.then(|| rates.iter().sum::<f64>() / rates.len() as f64)
    };
    Some(mean("async")? / mean("ordered")?)
}
