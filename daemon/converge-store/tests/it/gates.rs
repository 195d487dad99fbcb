//! Convergence gates: held sends and overrides are written with the
//! processing of the event that caused them, and read back per campaign.

use converge_model::EntityKey;
use converge_store::{GateChange, HeldSendStatus, ProcessedEvent, WriteBatch};

use crate::helpers::{TestDb, event, processed_plain};

fn hold(channel: &str) -> GateChange {
    GateChange::Hold {
        campaign: "campaign/c".into(),
        channel: channel.into(),
        rule: "gate".into(),
        reason: "not approved: social (review)".into(),
    }
}

fn processed(seq: i64, gate_changes: Vec<GateChange>) -> ProcessedEvent {
    ProcessedEvent {
        gate_changes,
        ..processed_plain(seq)
    }
}

fn sends_are_held_then_released_by_channel_and_overrides_are_kept(db: &TestDb) {
    let mut store = db.open();
    store
        .write(&WriteBatch {
            appends: vec![event("/t", "s-1"), event("/t", "s-2"), event("/t", "o-1")],
            processed: vec![
                // Holding the same send twice is a no-op.
                processed(1, vec![hold("email"), hold("email")]),
                processed(2, vec![hold("social")]),
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    let open = store.open_held_sends().unwrap();
    assert_eq!(
        open.iter()
            .map(|h| (h.channel.as_str(), h.event_seq, h.event_id.as_str()))
            .collect::<Vec<_>>(),
        [("email", 1, "s-1"), ("social", 2, "s-2")]
    );
    assert!(open[0].event_json.contains("s-1"));

    store
        .write(&WriteBatch {
            processed: vec![processed(
                3,
                vec![
                    GateChange::Release {
                        campaign: "campaign/c".into(),
                        channel: "email".into(),
                        by: "override by mia".into(),
                    },
                    GateChange::Override {
                        campaign: "campaign/c".into(),
                        channel: Some("email".into()),
                        by: "mia".into(),
                        reason: "legal approved".into(),
                        released: 1,
                    },
                ],
            )],
            ..WriteBatch::default()
        })
        .unwrap();
    let open = store.open_held_sends().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].channel, "social");
    let gate = store
        .gate(&EntityKey::parse("campaign/c").unwrap(), 10)
        .unwrap();
    let email = gate
        .held_sends
        .iter()
        .find(|h| h.channel == "email")
        .unwrap();
    assert_eq!(
        (
            email.status,
            email.released_seq,
            email.released_by.as_deref()
        ),
        (HeldSendStatus::Released, Some(3), Some("override by mia"))
    );
    assert_eq!(gate.overrides.len(), 1);
    assert_eq!(
        (gate.overrides[0].by.as_str(), gate.overrides[0].released),
        ("mia", 1)
    );
    // A reader sees the same.
    drop(store);
    let reader = db.reader();
    assert_eq!(reader.open_held_sends().unwrap().len(), 1);
}

conformance!(sends_are_held_then_released_by_channel_and_overrides_are_kept,);
