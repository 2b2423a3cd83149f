//! The handshake: a full exchange with one key, and every way to get in without it
//! refused (another key, a forged, replayed or reflected proof, a Hello altered in
//! flight, no Hello first, another protocol version).

use crate::handshake::*;
use crate::*;

fn key(byte: u8) -> Option<PeerKey> {
    Some(PeerKey::new(vec![byte; 32]).expect("key"))
}

fn hello(epoch: u64, last_seq: u64, node: &str) -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        epoch: Epoch(epoch),
        node: node.into(),
        last_seq: Seq(last_seq),
        nonce: [0; 32],
    }
}

/// Runs a handshake; returns what each side learned or the first error.
fn exchange(
    primary_key: Option<PeerKey>,
    backup_key: Option<PeerKey>,
) -> Result<(BackupGreeting, PrimaryGreeting)> {
    let primary = PrimaryHandshake::new(primary_key, hello(4, 90, "p"))?;
    let (backup, [b_hello, b_proof]) =
        BackupHandshake::answer(backup_key, primary.hello().clone(), hello(3, 80, "b"))?;
    let (greeting, p_proof) = primary.answer(&b_hello, &b_proof)?;
    Ok((greeting, backup.verify(&p_proof)?))
}

#[test]
fn the_same_key_on_both_sides_gets_in_and_each_learns_the_others_hello() {
    let (at_primary, at_backup) = exchange(key(1), key(1)).expect("handshake");
    assert_eq!(
        at_primary,
        BackupGreeting {
            last_seq: Seq(80),
            epoch: Epoch(3),
            node: "b".into()
        }
    );
    assert_eq!(
        at_backup,
        PrimaryGreeting {
            epoch: Epoch(4),
            last_seq: Seq(90),
            node: "p".into()
        }
    );
    // No key on either side: the same exchange, proving nothing.
    exchange(None, None).expect("unauthenticated pair");
}

#[test]
fn another_key_is_refused_by_whichever_side_checks_first() {
    for (p, b) in [(key(1), key(2)), (key(1), None), (None, key(1))] {
        match exchange(p, b) {
            Err(ReplicateError::Unauthenticated { reason }) => {
                assert!(reason.contains("does not match"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn a_forged_replayed_or_reflected_proof_is_refused() {
    // A stranger without the key: any proof bytes.
    let (backup, _) = BackupHandshake::answer(
        key(1),
        PrimaryHandshake::new(key(9), hello(99, 0, "x"))
            .expect("hs")
            .hello()
            .clone(),
        hello(3, 80, "b"),
    )
    .expect("answer");
    assert!(backup.verify(&Message::Proof { mac: [0; 32] }).is_err());

    // Replay: the primary's proof from a recorded handshake, against a new nonce.
    let primary = PrimaryHandshake::new(key(1), hello(4, 90, "p")).expect("hs");
    let (backup, [b_hello, b_proof]) =
        BackupHandshake::answer(key(1), primary.hello().clone(), hello(3, 80, "b"))
            .expect("answer");
    let (_, recorded) = primary.answer(&b_hello, &b_proof).expect("primary");
    backup.verify(&recorded).expect("the real one");
    let (fresh, _) = BackupHandshake::answer(key(1), primary.hello().clone(), hello(3, 80, "b"))
        .expect("answer");
    assert!(fresh.verify(&recorded).is_err(), "a replayed proof");

    // Reflection: the backup's own proof sent back to it.
    let primary = PrimaryHandshake::new(key(1), hello(4, 90, "p")).expect("hs");
    let (backup, [_, b_proof]) =
        BackupHandshake::answer(key(1), primary.hello().clone(), hello(3, 80, "b"))
            .expect("answer");
    assert!(backup.verify(&b_proof).is_err(), "a reflected proof");
}

#[test]
fn a_hello_altered_in_flight_breaks_its_proof() {
    let primary = PrimaryHandshake::new(key(1), hello(4, 90, "p")).expect("hs");
    let (_, [b_hello, b_proof]) =
        BackupHandshake::answer(key(1), primary.hello().clone(), hello(3, 80, "b"))
            .expect("answer");
    let Message::Hello {
        version,
        epoch,
        node,
        nonce,
        ..
    } = b_hello
    else {
        panic!("a hello")
    };
    let altered = Message::Hello {
        version,
        epoch,
        node,
        nonce,
        last_seq: Seq(1_000_000),
    };
    assert!(primary.answer(&altered, &b_proof).is_err());
}

#[test]
fn the_hello_comes_first_and_versions_must_match() {
    match BackupHandshake::answer(
        key(1),
        Message::Ack {
            seq: Seq(1),
            epoch: Epoch(1),
        },
        hello(3, 80, "b"),
    ) {
        Err(ReplicateError::Wire(WireError::NoHandshake { got, .. })) => assert_eq!(got, "Ack"),
        Err(other) => panic!("expected NoHandshake, got {other}"),
        Ok(_) => panic!("accepted an Ack first"),
    }
    let mut old = hello(4, 90, "p");
    if let Message::Hello { version, .. } = &mut old {
        *version = PROTOCOL_VERSION + 1;
    }
    match BackupHandshake::answer(key(1), old, hello(3, 80, "b")) {
        Err(ReplicateError::Wire(WireError::Version { ours, theirs })) => {
            assert_eq!((ours, theirs), (PROTOCOL_VERSION, PROTOCOL_VERSION + 1))
        }
        Err(other) => panic!("expected Version, got {other}"),
        Ok(_) => panic!("accepted another version"),
    }
}

#[test]
fn keys_are_at_least_16_bytes_and_read_from_a_file_without_surrounding_whitespace() {
    assert!(matches!(
        PeerKey::new(vec![1; 15]),
        Err(ReplicateError::BadKey { .. })
    ));
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pair.key");
    std::fs::write(&path, "  0123456789abcdef0123456789abcdef\n").expect("write");
    let from_file = PeerKey::from_file(&path).expect("key file");
    let direct = PeerKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).expect("key");
    let primary = PrimaryHandshake::new(Some(from_file), hello(1, 0, "p")).expect("hs");
    let (backup, [h, p]) =
        BackupHandshake::answer(Some(direct), primary.hello().clone(), hello(1, 0, "b"))
            .expect("answer");
    let (_, proof) = primary.answer(&h, &p).expect("same key");
    backup.verify(&proof).expect("same key");
    std::fs::write(&path, "short\n").expect("write");
    match PeerKey::from_file(&path) {
        Err(ReplicateError::BadKey {
            source_name,
            reason,
        }) => {
            assert!(
                source_name.ends_with("pair.key") && reason.contains("5 bytes"),
                "{reason}"
            )
        }
        other => panic!("expected BadKey, got {other:?}"),
    }
}
