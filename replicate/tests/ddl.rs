//! Catalog changes in the replication stream (issue 12, first step): a backup that
//! has nothing to apply a catalog change with refuses it, naming the table and the
//! change, and applies nothing of it; the transactions around it are unaffected.

// Test code: a failed unwrap is the test failing, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kirikae_engine::{CatalogEvent, Key, Operation, SessionInfo};
use kirikae_replicate::{AccessKind, Applier, Epoch, Message, Mode, RuleSet, Seq, TimeOfDay};
use kirikae_testkit::{kv_database, kv_row};

const T: &str = "acct";

fn ship(seq: u64, operations: Vec<Operation>) -> Message {
    Message::Ship {
        seq: Seq(seq),
        epoch: Epoch(1),
        mode: Mode::Ordered,
        operations: operations.into(),
        verify: false,
    }
}

#[test]
fn a_backup_without_a_ddl_handler_rejects_a_catalog_change_and_applies_what_surrounds_it() {
    let db = kv_database(&[T]);
    let s = db.session(SessionInfo::default());
    let mut backup = Applier::new(&s);
    backup.connected(Epoch(1)).unwrap();
    let insert = |k: i64| Operation::Insert {
        table: T.into(),
        row: kv_row(k, k).into(),
    };
    let schema = db.table(T).unwrap().schema().as_ref().clone();
    let ddl = Operation::Ddl {
        table: T.into(),
        event: CatalogEvent::Switched { schema },
    };
    backup.handle(ship(1, vec![insert(1)])).unwrap();
    backup.handle(ship(2, vec![ddl])).unwrap();
    backup.handle(ship(3, vec![insert(3)])).unwrap();
    let mut replies = Vec::new();
    backup.work(&mut replies).unwrap();
    backup.flush(&mut replies).unwrap();
    let rejected: Vec<_> = replies
        .iter()
        .filter_map(|m| match m {
            Message::Rejected { seq, reason, .. } => Some((*seq, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 1, "{replies:?}");
    let (seq, reason) = &rejected[0];
    assert_eq!(*seq, Seq(2));
    assert!(
        reason.contains("switched") && reason.contains(T) && reason.contains("cannot apply"),
        "{reason}"
    );
    let get = |k: i64| s.get(T, &Key::from(k)).unwrap();
    assert!(
        get(1).is_some() && get(3).is_some(),
        "the transactions around it"
    );
    assert_eq!(db.table(T).unwrap().schema().columns().len(), 2);
}

#[test]
fn rules_on_kind_ddl_decide_a_catalog_change_s_mode() {
    let rules = RuleSet::parse(
        r#"
default = "async"
[[rule]]
name = "schema changes wait for the backup"
kind = "ddl"
mode = "sync"
"#,
        "ddl.toml",
    )
    .unwrap();
    let ddl = Operation::Ddl {
        table: T.into(),
        event: CatalogEvent::Dropped,
    };
    assert_eq!(AccessKind::from(ddl.kind()), AccessKind::Ddl);
    let insert = Operation::Insert {
        table: T.into(),
        row: kv_row(1, 1).into(),
    };
    let info = SessionInfo::default();
    let mode = |ops: &[Operation]| rules.decide_transaction(ops, &info, TimeOfDay::hm(12, 0));
    let decided = mode(&[ddl]);
    assert_eq!(decided.mode, Mode::Sync);
    assert_eq!(
        decided.rule.as_deref(),
        Some("schema changes wait for the backup")
    );
    assert_eq!(mode(&[insert]).mode, Mode::Async);
}
