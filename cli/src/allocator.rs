//! The binary's allocator options: mimalloc with arena memory committed lazily and
//! freed memory kept in the process rather than purged back to the system.
//!
//! Why: with mimalloc's defaults on Linux (arenas committed eagerly, freed pages
//! purged after 10 ms) and transparent huge pages, the primary's resident memory
//! grew by 40–55 MiB during a 2-second resync of 1M rows and by 100–140 MiB during
//! one of 10M rows, although the resync itself held under 5 MiB (`kirikae bench
//! resync`); committing arenas lazily keeps that growth at 8–10 MiB. Purging is
//! turned off as well because, with lazy commit, purging a switched-away table
//! (the reclaimer frees millions of rows) stalled writers for 30–40 ms right after
//! a restructure's switch, against under 0.1 ms without purging. The price: memory
//! freed inside the process is reused by it but not given back to the system, so
//! the resident size stays at its high-water mark (the usual trade of a database
//! server).
//!
//! mimalloc reads these options when it initializes, before `main`; setting them
//! later does not change the arena it already committed. So the process starts
//! itself once more with them in its environment (children it spawns inherit them
//! and do not). An operator's own `MIMALLOC_ARENA_EAGER_COMMIT` or
//! `MIMALLOC_PURGE_DELAY` is left as given, and if the restart cannot happen the
//! process goes on with mimalloc's defaults.

use std::os::unix::process::CommandExt;

/// The options, as mimalloc's environment variables.
const OPTIONS: [(&str, &str); 2] = [
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ("MIMALLOC_PURGE_DELAY", "-1"),
];

/// Call first thing in `main`: returns once the options are in effect (or cannot
/// be).
pub fn configure() {
    if OPTIONS
        .iter()
        .any(|(name, _)| std::env::var_os(name).is_some())
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` returns only if the restart failed.
    let error = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .envs(OPTIONS)
        .exec();
    eprintln!(
        "note: running with mimalloc's default options ({} could not restart itself with its own: {error})",
        exe.display()
    );
}
