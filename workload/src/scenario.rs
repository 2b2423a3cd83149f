//! The restructure scenario behind `kirikae demo` and `kirikae bench restructure`:
//! the subscriber workload runs; after a warm-up and a measured baseline, the table is
//! restructured online; the run goes on for a while on the new table. Operations are
//! sampled every 100 ms and write latency is recorded per phase.

use std::time::{Duration, Instant};

use kirikae_engine::{Database, EngineError};
use kirikae_restructure::{
    Plan, Progress, RestructureError, RestructureOptions, RestructureReport,
};

use crate::workload::{
    KeyChooser, RunningWorkload, Workload, WorkloadReport, SLICE, SUBSCRIBER_TABLE,
};

/// Measurement phases (the workload's phase tags).
pub const WARMUP: usize = 0;
/// The baseline window before the restructure.
pub const BASELINE: usize = 1;
/// While the restructure runs.
pub const DURING: usize = 2;
/// After the switch.
pub const AFTER: usize = 3;

/// How to run the scenario.
#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    /// Worker threads.
    pub threads: usize,
    /// Share of reads.
    pub read_ratio: f64,
    /// Rows in the table (for the key chooser).
    pub rows: u64,
    /// Unmeasured warm-up.
    pub warmup: Duration,
    /// Measured baseline before the restructure.
    pub baseline: Duration,
    /// Measured run after the switch.
    pub after: Duration,
    /// Pause after each operation, µs (0: saturated writers).
    pub think_us: u64,
    /// The plan.
    pub plan: Plan,
    /// Restructure options.
    pub options: RestructureOptions,
}

/// One 100 ms sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since the workload started.
    pub t_s: f64,
    /// Operations per second over the sample.
    pub ops_per_s: f64,
    /// Phase tag at the sample.
    pub phase: usize,
}

/// Write latency over one window, as the writers' calls saw it.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LatencyWindow {
    /// Length of the window.
    pub seconds: f64,
    /// Writes in it.
    pub writes: u64,
    /// 99.99th percentile, µs.
    pub p99_99_us: u64,
    /// Longest write, µs.
    pub max_us: u64,
}

impl LatencyWindow {
    fn over(workload: &WorkloadReport, slices: std::ops::Range<usize>) -> LatencyWindow {
        let h = workload.latency_over(slices.clone());
        LatencyWindow {
            seconds: slices.len() as f64 * SLICE.as_secs_f64(),
            writes: h.len(),
            p99_99_us: h.value_at_quantile(0.9999),
            max_us: h.max(),
        }
    }
}

/// Everything the scenario measured.
pub struct ScenarioResult {
    /// Throughput over time.
    pub samples: Vec<Sample>,
    /// The restructure's report.
    pub report: RestructureReport,
    /// The workload's counts and latency histograms.
    pub workload: WorkloadReport,
    /// Operations per second in the baseline window.
    pub baseline_ops_per_s: f64,
    /// Operations per second while the restructure ran.
    pub during_ops_per_s: f64,
    /// Operations per second after the switch.
    pub after_ops_per_s: f64,
    /// When the restructure started and switched, seconds since the workload started.
    pub restructure_window_s: (f64, f64),
    /// Writes while the restructure ran (whole 100 ms slices covering it).
    pub during: LatencyWindow,
    /// The same workload in a window of equal length right before the restructure
    /// (shorter only if the baseline was): the machine's own noise floor.
    pub before: LatencyWindow,
    /// The longest write that overlapped any hold of writers or the switch, µs.
    pub writer_stall_us_max: u64,
}

/// Errors of the scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// From the engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// From the restructure.
    #[error(transparent)]
    Restructure(#[from] RestructureError),
}

/// What the caller's display is told every sample.
pub struct Tick<'a> {
    /// The sample just taken.
    pub sample: Sample,
    /// The restructure's progress, while it runs.
    pub restructure: Option<&'a Progress>,
}

struct Sampler {
    started: Instant,
    last: (Instant, u64),
    samples: Vec<Sample>,
    /// Operations per phase and time spent per phase.
    ops: [u64; 4],
    secs: [f64; 4],
}

impl Sampler {
    fn tick(&mut self, run: &RunningWorkload, phase: usize) -> Sample {
        std::thread::sleep(Duration::from_millis(100));
        let (now, ops) = (Instant::now(), run.ops());
        let dt = (now - self.last.0).as_secs_f64();
        let delta = ops - self.last.1;
        self.last = (now, ops);
        self.ops[phase] += delta;
        self.secs[phase] += dt;
        let sample = Sample {
            t_s: (now - self.started).as_secs_f64(),
            ops_per_s: delta as f64 / dt,
            phase,
        };
        self.samples.push(sample);
        sample
    }

    fn rate(&self, phase: usize) -> f64 {
        self.ops[phase] as f64 / self.secs[phase].max(1e-9)
    }
}

/// Runs the scenario on `db` (whose subscriber table is loaded), calling `display`
/// every 100 ms.
pub fn run(
    db: &Database,
    config: &ScenarioConfig,
    display: &mut dyn FnMut(Tick<'_>),
) -> Result<ScenarioResult, ScenarioError> {
    let running = Workload {
        threads: config.threads,
        read_ratio: config.read_ratio,
        keys: KeyChooser::hot_set(config.rows),
        think_us: config.think_us,
    }
    .start(db);
    let started = running.epoch();
    let mut sampler = Sampler {
        started,
        last: (started, 0),
        samples: Vec::new(),
        ops: [0; 4],
        secs: [0.0; 4],
    };
    let window = |sampler: &mut Sampler,
                  phase: usize,
                  length: Duration,
                  display: &mut dyn FnMut(Tick<'_>)| {
        running.set_phase(phase);
        let until = Instant::now() + length;
        while Instant::now() < until {
            let sample = sampler.tick(&running, phase);
            display(Tick {
                sample,
                restructure: None,
            });
        }
    };
    window(&mut sampler, WARMUP, config.warmup, display);
    let baseline_from = started.elapsed();
    window(&mut sampler, BASELINE, config.baseline, display);

    running.set_phase(DURING);
    let began = started.elapsed().as_secs_f64();
    let handle = kirikae_restructure::start(
        db,
        SUBSCRIBER_TABLE,
        config.plan.clone(),
        config.options.clone(),
    )?;
    while !handle.is_finished() {
        let sample = sampler.tick(&running, DURING);
        let progress = handle.progress();
        display(Tick {
            sample,
            restructure: Some(&progress),
        });
    }
    let outcome = handle.wait();
    let switched = started.elapsed().as_secs_f64();
    if outcome.is_ok() {
        window(&mut sampler, AFTER, config.after, display);
    }
    let workload = running.stop();
    let report = outcome?;
    let slice_of = |s: f64| (s / SLICE.as_secs_f64()) as usize;
    let during = slice_of(began)..slice_of(switched) + 1;
    let baseline_start = slice_of(baseline_from.as_secs_f64()) + 1;
    let before = during
        .start
        .saturating_sub(during.len())
        .max(baseline_start)..during.start;
    Ok(ScenarioResult {
        during: LatencyWindow::over(&workload, during),
        before: LatencyWindow::over(&workload, before),
        writer_stall_us_max: workload.held_write_us_max,
        baseline_ops_per_s: sampler.rate(BASELINE),
        during_ops_per_s: sampler.rate(DURING),
        after_ops_per_s: sampler.rate(AFTER),
        samples: sampler.samples,
        report,
        workload,
        restructure_window_s: (began, switched),
    })
}
