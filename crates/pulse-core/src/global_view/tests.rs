use proptest::prelude::*;

use super::*;
use crate::engine::Engine;
use crate::family::Rules;
use crate::partition::Partition;
use crate::settings::EngineSettings;
use crate::snapshot::{self, KpiSnapshot};
use crate::time::Calendar;

const WALL_MS: i64 = 1_900_000_000_000;
const T0: i64 = 1_772_323_200_000;

fn settings(partitions: usize) -> EngineSettings {
    EngineSettings {
        partitions,
        ..EngineSettings::default()
    }
}

/// An engine fed `events` (user, kind, feature, minutes after T0) over `partitions`.
fn shape() -> crate::sketch::SketchShape {
    Rules::of(&settings(1)).shape
}

fn engine_of(partitions: usize, events: &[(u32, u8, u8, i64)]) -> Engine {
    let mut engine = Engine::new(settings(partitions), WALL_MS);
    for &(user, kind, feature, minutes) in events {
        let kind = ["login", "signup", "feature_used", "session_start"][kind as usize % 4];
        let line = format!(
            r#"{{"user_id":"u{user}","event":"{kind}","feature":"f{feature}","ts":{}}}"#,
            T0 + minutes * 60_000
        );
        engine.ingest(line.as_bytes(), None);
    }
    engine
}

/// Every partition of `engine` as this instance would hold it: topic `events`.
fn locals(engine: &Engine) -> Vec<LocalPartition> {
    let at = engine.ingestor().clone().summary_point();
    let state = engine.state();
    state
        .partitions
        .into_iter()
        .map(|p| LocalPartition {
            topic: "events".into(),
            partition: p.partition as i32,
            inputs: p.inputs,
            summary: Partition::with_state(engine.settings(), p.kpis).summarize(at),
        })
        .collect()
}

fn head(local: &LocalPartition, router: &RouterState) -> PartitionHead {
    PartitionHead::new(
        &local.inputs,
        router.clone(),
        local.summary.estimated_bytes,
        SessionHold::Done,
    )
}

/// The snapshot of a combined view, as the runtime builds it.
fn snapshot_of(combined: &Combined, engine: &Engine) -> KpiSnapshot {
    snapshot::build(
        &combined.router,
        &combined.counters,
        &combined.summaries,
        &mut Calendar::new(engine.settings().timezone.clone()),
        Rules::of(engine.settings()).shape,
        engine.ingestor().now_ms(),
    )
}

/// Publishes every partition of `engine` under `epoch`, returning the records.
fn publish(engine: &Engine, publisher: &mut Publisher, epoch: u64) -> Vec<Record> {
    let router = engine.state().router;
    locals(engine)
        .iter()
        .flat_map(|l| {
            publisher.changed(&l.topic, l.partition, epoch, &head(l, &router), &l.summary)
        })
        .collect()
}

fn read(records: &[Record]) -> RemoteView {
    let mut view = RemoteView::default();
    for (key, value) in records {
        assert_eq!(view.take(key, value).unwrap(), Taken::Applied, "{key}");
    }
    view
}

fn events() -> impl Strategy<Value = Vec<(u32, u8, u8, i64)>> {
    proptest::collection::vec((0u32..400, 0u8..4, 0u8..4, 0i64..3 * 1440), 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Summaries published and read back by an instance that owns nothing give the very
    /// snapshot of the instance that holds every partition.
    #[test]
    fn published_and_read_back_merges_to_the_same_snapshot(events in events(), partitions in 1usize..5) {
        let mut engine = engine_of(partitions, &events);
        let expected = engine.snapshot();
        let records = publish(&engine, &mut Publisher::default(), 1);
        let view = read(&records);
        let empty = Engine::new(settings(partitions), WALL_MS);
        let combined = view.combine(Vec::new(), empty.ingestor().state(), shape(), |_, _| false);
        prop_assert_eq!(combined.remote_partitions, engine.state().partitions.len());
        let got = snapshot_of(&combined, &engine);
        prop_assert_eq!(&got.kpis, &expected.kpis);
        prop_assert_eq!(&got.events, &expected.events);
        prop_assert_eq!(&got.last_event_at, &expected.last_event_at);
    }

    /// Half the partitions local and owned, half from the topic: still the same snapshot,
    /// and the topic's copy of an owned partition is not counted twice.
    #[test]
    fn local_and_remote_partitions_merge_without_double_counting(events in events()) {
        let mut engine = engine_of(4, &events);
        let expected = engine.snapshot();
        let records = publish(&engine, &mut Publisher::default(), 1);
        let view = read(&records);
        let router = engine.state().router;
        let local: Vec<LocalPartition> = locals(&engine).into_iter().filter(|l| l.partition % 2 == 0).collect();
        let combined = view.combine(local, &router, shape(), |_, p| p % 2 == 0);
        let got = snapshot_of(&combined, &engine);
        prop_assert_eq!(&got.kpis, &expected.kpis);
        prop_assert_eq!(&got.events, &expected.events);
    }
}

#[test]
fn only_changed_pieces_are_sent_again() {
    let events: Vec<_> = (0..40).map(|user| (user, 2, 0, 0)).collect();
    let mut engine = engine_of(2, &events);
    let mut publisher = Publisher::default();
    let first = publish(&engine, &mut publisher, 1);
    assert_eq!(first.len(), 2 * (1 + crate::families::NAMES.len()));
    assert!(
        publish(&engine, &mut publisher, 1).is_empty(),
        "nothing changed, nothing sent"
    );
    // A login of a known user, later: its partition's activity and sessions change, its
    // features do not; the other partition's sessions do not either.
    engine.ingest(
        format!(
            r#"{{"user_id":"u1","event":"login","ts":{}}}"#,
            T0 + 20 * 60_000
        )
        .as_bytes(),
        None,
    );
    let again: Vec<String> = publish(&engine, &mut publisher, 1)
        .into_iter()
        .map(|(key, _)| key.split_once('/').unwrap().1.to_owned())
        .collect();
    let (touched, other) = if again.contains(&"0/activity".to_owned()) {
        ("0", "1")
    } else {
        ("1", "0")
    };
    // The other partition's head carries the clock; its activity, the trailing minutes'.
    for (piece, sent) in [
        (format!("{touched}/activity"), true),
        (format!("{touched}/features"), false),
        (format!("{touched}/funnels"), false),
        (format!("{other}/head"), true),
        (format!("{other}/sessions"), false),
    ] {
        assert_eq!(again.contains(&piece), sent, "{piece} in {again:?}");
    }
    // A new epoch (another owner) sends everything again.
    assert_eq!(publish(&engine, &mut publisher, 2).len(), first.len());
}

#[test]
fn a_stale_epoch_is_ignored_and_a_dead_owners_summary_keeps_counting() {
    let mut engine = engine_of(1, &[(1, 0, 0, 0), (2, 0, 0, 1)]);
    let before = engine.snapshot();
    let current = publish(&engine, &mut Publisher::default(), 5);
    for user in 3..50 {
        engine.ingest(
            format!(r#"{{"user_id":"u{user}","event":"login","ts":{T0}}}"#).as_bytes(),
            None,
        );
    }
    let stale = publish(&engine, &mut Publisher::default(), 4);
    let mut view = read(&current);
    for (key, value) in &stale {
        assert_eq!(
            view.take(key, value).unwrap(),
            Taken::Stale {
                epoch: 4,
                newest: 5
            }
        );
    }
    let empty = Engine::new(settings(1), WALL_MS);
    let combined = view.combine(Vec::new(), empty.ingestor().state(), shape(), |_, _| false);
    let got = snapshot_of(&combined, &engine);
    assert_eq!(got.kpis, before.kpis, "the epoch-5 summary stands");
    assert_eq!(got.events.accepted, 2);
}

#[test]
fn records_of_another_kind_are_errors_not_panics() {
    let mut view = RemoteView::default();
    assert!(matches!(view.take("events", b""), Err(PieceError::Key(_))));
    assert!(matches!(
        view.take("events/0/head", b"PLG"),
        Err(PieceError::Magic { .. })
    ));
    let mut value = encode_record(1, b"\xff\xff\xff");
    assert!(matches!(
        view.take("events/0/activity", &value),
        Err(PieceError::Corrupt { .. })
    ));
    value = encode_record(1, b"");
    assert_eq!(
        view.take("events/0/a_family_of_the_future", &value)
            .unwrap(),
        Taken::UnknownPiece
    );
    assert!(
        view.combine(
            Vec::new(),
            engine_of(1, &[]).ingestor().state(),
            shape(),
            |_, _| { false }
        )
        .summaries
        .is_empty(),
        "a partition without its head is not counted"
    );
}

/// Two instances that met the features in opposite orders number them differently: the
/// summaries of the other are remapped by name, so every feature's figures are its own.
#[test]
fn another_instances_feature_ids_are_remapped_by_name() {
    let events: Vec<_> = (0..200u32)
        .map(|user| (user, 2, (user % 4) as u8, i64::from(user)))
        .collect();
    let mut whole = engine_of(2, &events);
    let expected = whole.snapshot();
    let here = engine_of(2, &events);
    let reversed: Vec<_> = events.iter().rev().copied().collect();
    let other = engine_of(2, &reversed);
    let (here_router, other_router) = (here.state().router, other.state().router);
    assert_ne!(
        here_router.features.name(0),
        other_router.features.name(0),
        "the test needs registries that disagree"
    );
    let view = read(&publish(&other, &mut Publisher::default(), 1));
    let local = locals(&here)
        .into_iter()
        .filter(|l| l.partition == 0)
        .collect();
    let combined = view.combine(local, &here_router, shape(), |_, p| p == 0);
    let got = snapshot_of(&combined, &whole);
    assert_eq!(got.kpis.features, expected.kpis.features);
    assert_eq!(got.kpis.activity, expected.kpis.activity);
}

/// The topic tells each publisher's clock: an instance whose own partitions' newest event
/// is older folds its summaries at the stream's newest instead (the runtime raises its
/// event-time clock to this), as one instance reading everything would.
#[test]
fn the_topic_tells_the_newest_event_of_the_stream() {
    let mut view = RemoteView::default();
    assert_eq!(view.newest_event_ms(), None);
    let early = engine_of(1, &[(1, 0, 0, 10)]);
    for (key, value) in publish(&early, &mut Publisher::default(), 1) {
        view.take(&key, &value).unwrap();
    }
    assert_eq!(view.newest_event_ms(), Some(T0 + 10 * 60_000));
    let later = engine_of(1, &[(2, 0, 0, 100)]);
    for (key, value) in publish(&later, &mut Publisher::default(), 2) {
        view.take(&key, &value).unwrap();
    }
    assert_eq!(view.newest_event_ms(), Some(T0 + 100 * 60_000));
}
