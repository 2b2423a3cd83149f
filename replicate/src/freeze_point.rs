//! Freeze points for crash tests of real processes (seed 000 §6.3: the primary killed
//! at each step of a sync commit). With `KIRIKAE_FREEZE_AT=POINT:N` in its
//! environment, the thread that brings the `N`th sync transaction to `POINT` writes
//! `kirikae: frozen at POINT (sequence S)` to standard error and never returns, so
//! that a test can `kill -9` the process with that transaction exactly there.
//! Without the variable nothing happens (one load of a `OnceLock` per sync commit).
//!
//! The points, in a sync commit's order:
//! - `before-prepare`: the commit gate decided sync, nothing is sent yet;
//! - `after-prepared`: the backup answered `Prepared` with matching responses, the
//!   local commit has not happened (seed 000 Table 2 cases 4 and 5 at a takeover);
//! - `before-commit-sent`: the link thread is about to send the `Commit` (the local
//!   commit returns and is acknowledged meanwhile; the backup holds it prepared).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::seq::Seq;

/// A step of a sync commit where a process can be frozen (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezePoint {
    /// Sync decided, nothing sent.
    BeforePrepare,
    /// `Prepared` matched; the local commit has not happened.
    AfterPrepared,
    /// The local commit may return; the `Commit` is not sent.
    BeforeCommitSent,
}

impl FreezePoint {
    /// Every point, in a sync commit's order.
    pub const ALL: [FreezePoint; 3] = [
        FreezePoint::BeforePrepare,
        FreezePoint::AfterPrepared,
        FreezePoint::BeforeCommitSent,
    ];

    /// The name `KIRIKAE_FREEZE_AT` uses.
    pub fn name(self) -> &'static str {
        match self {
            FreezePoint::BeforePrepare => "before-prepare",
            FreezePoint::AfterPrepared => "after-prepared",
            FreezePoint::BeforeCommitSent => "before-commit-sent",
        }
    }

    /// Parses `POINT:N` (N ≥ 1). The error names what is wrong.
    pub fn parse(text: &str) -> Result<(FreezePoint, u64), String> {
        let (name, n) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: expected POINT:N, e.g. after-prepared:5"))?;
        let point = FreezePoint::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                format!(
                    "`{name}`: unknown point (before-prepare, after-prepared, before-commit-sent)"
                )
            })?;
        let n: u64 = n
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("`{n}`: expected a count of at least 1"))?;
        Ok((point, n))
    }
}

impl std::fmt::Display for FreezePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

struct Armed {
    point: FreezePoint,
    nth: u64,
    seen: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let text = std::env::var("KIRIKAE_FREEZE_AT").ok()?;
            match FreezePoint::parse(&text) {
                Ok((point, nth)) => Some(Armed {
                    point,
                    nth,
                    seen: AtomicU64::new(0),
                }),
                Err(e) => {
                    // A typo must not silently test nothing.
                    eprintln!("kirikae: KIRIKAE_FREEZE_AT ignored: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// A sync transaction (`seq`, if it has one yet) reached `point`: freezes this
/// thread forever if it is the armed one.
pub(crate) fn reached(point: FreezePoint, seq: Option<Seq>) {
    let Some(armed) = armed() else { return };
    if armed.point != point || armed.seen.fetch_add(1, Ordering::SeqCst) + 1 != armed.nth {
        return;
    }
    match seq {
        Some(seq) => eprintln!("kirikae: frozen at {point} (sequence {})", seq.0),
        None => eprintln!("kirikae: frozen at {point}"),
    }
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_and_bad_text_is_named() {
        assert_eq!(
            FreezePoint::parse("after-prepared:5"),
            Ok((FreezePoint::AfterPrepared, 5))
        );
        for p in FreezePoint::ALL {
            assert_eq!(FreezePoint::parse(&format!("{p}:1")), Ok((p, 1)));
        }
        assert!(FreezePoint::parse("after-prepared")
            .unwrap_err()
            .contains("POINT:N"));
        assert!(FreezePoint::parse("later:1")
            .unwrap_err()
            .contains("unknown point"));
        assert!(FreezePoint::parse("before-prepare:0")
            .unwrap_err()
            .contains("at least 1"));
    }
}
