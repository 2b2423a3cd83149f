//! Planned switchover (seed 003 \[0034\]: switch to the backup for maintenance, then
//! replicate the other way, claim 13's role swap): the primary hands over at one
//! sequence, the backup is promoted at exactly that sequence, the promoted node starts
//! as primary numbering on from it, and the old primary's database becomes the new
//! backup's. Nothing is lost or doubled: the hand-over refuses every commit it does
//! not wait for.

use std::net::SocketAddr;

use kirikae_engine::Database;

use crate::applier::StartAt;
use crate::backup::{Backup, BackupConfig};
use crate::epoch::Epoch;
use crate::error::{ReplicateError, Result};
use crate::replicator::{HandOver, Replicator, ReplicatorConfig};
use crate::seq::Seq;

/// What a switchover is given: both ends as they run now, and how each will run
/// after the swap.
pub struct Switchover {
    /// The primary's replicator (on `old_primary_db`), already handed over. (If the
    /// hand-over fails, the caller still has the primary, accepting commits again.)
    pub primary: Replicator,
    /// What [`Replicator::hand_over`] returned.
    pub hand_over: HandOver,
    /// The old primary's database: it becomes the new backup's.
    pub old_primary_db: Database,
    /// The backup (over `new_primary_db`).
    pub backup: Backup,
    /// The backup's database: it becomes the new primary's.
    pub new_primary_db: Database,
    /// The new primary's replicator; its `peer` is `new_backup_listen`. Its epoch and
    /// first sequence are set here from the promotion.
    pub new_primary: ReplicatorConfig,
    /// Where the new backup listens (a fixed address: the new primary connects to
    /// it).
    pub new_backup_listen: SocketAddr,
    /// The new backup's settings; its start position is set here.
    pub new_backup: BackupConfig,
}

/// Both ends after a switchover.
pub struct Switched {
    /// The new primary's replicator (on the old backup's database).
    pub primary: Replicator,
    /// The new backup (over the old primary's database).
    pub backup: Backup,
    /// The promoted node's backup server, kept running: a stale primary that
    /// connects to it meets the new epoch and is fenced.
    pub fence: Backup,
    /// What happened.
    pub report: SwitchoverReport,
}

/// What a switchover did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SwitchoverReport {
    /// The new primary's epoch.
    pub epoch: Epoch,
    /// The hand-over sequence: the old primary's last, the new primary's first is the
    /// next.
    pub at_seq: Seq,
    /// From the first refused commit to the new primary accepting commits.
    pub writes_paused_us: u64,
}

/// Swaps the roles of a primary and its backup once the primary has handed over
/// (see the module docs). An error leaves the old primary closed to writes and the
/// backup as the error says (promoted or not).
pub fn switchover(s: Switchover) -> Result<Switched> {
    let at_seq = s.hand_over.at_seq;
    // Closing the old primary's link first lets the backup take the promotion at
    // once (it answers commands between a primary's batches); its database stays
    // closed to writes.
    s.primary.shutdown();
    let promotion = s.backup.promote()?;
    if promotion.last_seq != at_seq || !promotion.in_doubt_committed.is_empty() {
        return Err(ReplicateError::Protocol {
            reason: format!(
                "the backup was promoted after {} (in doubt: {:?}), not at the hand-over sequence {at_seq}",
                promotion.last_seq, promotion.in_doubt_committed
            ),
        });
    }
    let mut config = s.new_primary;
    config.link.epoch = promotion.epoch;
    config.link.start_after = at_seq;
    config.peer = s.new_backup_listen;
    let primary = Replicator::start(&s.new_primary_db, config)?;
    let writes_paused_us = s.hand_over.refusing_since.elapsed().as_micros() as u64;
    let backup_config = BackupConfig {
        start_at: Some(StartAt {
            seq: at_seq,
            epoch: promotion.epoch,
        }),
        ..s.new_backup
    };
    let backup = Backup::start(s.old_primary_db, s.new_backup_listen, backup_config)?;
    Ok(Switched {
        primary,
        backup,
        fence: s.backup,
        report: SwitchoverReport {
            epoch: promotion.epoch,
            at_seq,
            writes_paused_us,
        },
    })
}
