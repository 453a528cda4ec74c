//! Moving a partition's state from one router's registries into another's.
//!
//! Features and breakdown dimension values are kept in partitions by id, and ids are handed
//! out by the router's registries in order of first sight ([`crate::features`],
//! [`crate::dimensions`]). Two pulse instances of one consumer group see different streams,
//! so their registries differ: feature 3 of the instance that saved a partition may be
//! feature 7, or not yet known, in the instance that takes it over. [`remap`] rewrites a
//! partition's ids by name into the taking router's registries, registering names it does
//! not know yet (under its caps: a name past the cap joins the `__other__` pool there, and
//! what landed on one id is united, sketches by union, statistics by addition).
//!
//! Pure and total: the partition loses nothing but the distinction between names pooled
//! together, and a state remapped into a registry that had room and back is identical.
//! Registering a name does not count as an overflow event: those counters are the
//! stream's, not the partition's.

use crate::dimensions::{DimensionRegistry, FIRST_TRACKED, MAX_DIMENSIONS, OTHER_ID, ValueId};
use crate::engine::EngineState;
use crate::families::{KpiState, Summary};
use crate::family::Rules;
use crate::features::FeatureId;
use crate::ingest::RouterState;
use crate::partition::PartitionState;
use crate::settings::EngineSettings;
use crate::sketch::SketchShape;

/// Where each id of the saving router goes in the taking one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    /// By old feature id, the tracked ones.
    pub features: Vec<FeatureId>,
    /// The pool's id before and after.
    pub other: (FeatureId, FeatureId),
    /// By configured dimension position, by old value id.
    pub values: Vec<Vec<ValueId>>,
}

impl IdMap {
    /// Whether every id stays what it was (the same router, or registries that agree).
    pub fn is_identity(&self) -> bool {
        let same = |ids: &[u16]| ids.iter().enumerate().all(|(i, &id)| usize::from(id) == i);
        same(&self.features) && self.other.0 == self.other.1 && self.values.iter().all(|v| same(v))
    }

    /// The new id of a feature (an id the saving registry never handed out is pooled).
    pub fn feature(&self, id: FeatureId) -> FeatureId {
        self.features
            .get(usize::from(id))
            .copied()
            .unwrap_or(self.other.1)
    }

    /// The new ids of an event's dimension values, by position.
    pub fn dims(&self, ids: [ValueId; MAX_DIMENSIONS]) -> [ValueId; MAX_DIMENSIONS] {
        let mut moved = ids;
        for ((to, from), map) in moved.iter_mut().zip(ids).zip(&self.values) {
            *to = map.get(usize::from(from)).copied().unwrap_or(OTHER_ID);
        }
        moved
    }

    /// The map of `from`'s registries into `into`'s, registering there every name `from`
    /// tracks (in `from`'s order). Both routers' dimensions must be fitted to the same
    /// configuration ([`DimensionRegistry::fit`]), which makes positions agree.
    pub fn between(from: &RouterState, into: &mut RouterState) -> IdMap {
        IdMap {
            features: (0..from.features.tracked() as FeatureId)
                .map(|id| into.features.adopt(from.features.name(id)))
                .collect(),
            other: (from.features.other_id(), into.features.other_id()),
            values: value_maps(&from.dimensions, &mut into.dimensions),
        }
    }
}

fn value_maps(from: &DimensionRegistry, into: &mut DimensionRegistry) -> Vec<Vec<ValueId>> {
    into.dimensions
        .iter_mut()
        .map(|target| {
            let Some(source) = from.dimensions.iter().find(|d| d.name == target.name) else {
                return Vec::new();
            };
            source
                .ids()
                .map(|id| match id {
                    id if id < FIRST_TRACKED => id,
                    id => target.adopt(source.value(id)),
                })
                .collect()
        })
        .collect()
}

/// Rewrites `state`, restored under `settings`' rules and saved by a router with `from`'s
/// registries, into `into`'s (which may gain names). `from`'s dimensions must be fitted to
/// the same configuration as `into`'s.
pub fn remap(state: &mut KpiState, from: &RouterState, into: &mut RouterState, rules: &Rules) {
    let map = IdMap::between(from, into);
    if map.is_identity() {
        return;
    }
    state.features.remap(&map, rules.shape);
    state.sessions.remap(&map);
    state.breakdowns.remap(&map, rules.shape);
    state.breakdown_features.remap(&map, rules.shape);
}

/// Rewrites a partition's `summary`, made by a router with `from`'s registries, into
/// `into`'s (which may gain names): how the global view merges summaries that other
/// instances published ([`crate::global_view`]).
pub fn remap_summary(
    summary: &mut Summary,
    from: &RouterState,
    into: &mut RouterState,
    shape: SketchShape,
) {
    let map = IdMap::between(from, into);
    if map.is_identity() {
        return;
    }
    summary.features.remap(&map, shape);
    summary.breakdowns.remap(&map, shape);
    summary.breakdown_features.remap(&map, shape);
}

/// One engine state from partitions saved by different routers (`parts`: each partition
/// with the router it was saved with): every partition remapped into `router`'s registries,
/// which may gain names, and the event-time clock the newest of them all. The
/// stream's overflow counters stay `router`'s: each instance counts only its own stream.
pub fn gather(
    settings: &EngineSettings,
    mut router: RouterState,
    parts: Vec<(RouterState, PartitionState)>,
) -> EngineState {
    let rules = Rules::of(settings);
    router.features.restore_index();
    router.dimensions.fit(&settings.dimensions);
    let mut partitions = Vec::with_capacity(parts.len());
    for (mut from, mut part) in parts {
        router.max_event_ms = router.max_event_ms.max(from.max_event_ms);
        from.dimensions.fit(&settings.dimensions);
        part.kpis.restore(&rules);
        remap(&mut part.kpis, &from, &mut router, &rules);
        partitions.push(part);
    }
    EngineState { router, partitions }
}

/// `old` re-indexed: entry `i` moves to `to(i)`; what lands on one index is merged, and the
/// result is as long as its last present entry needs.
pub(crate) fn relocate<T: Default>(
    old: Vec<T>,
    to: impl Fn(usize) -> usize,
    present: impl Fn(&T) -> bool,
    mut merge: impl FnMut(&mut T, T),
) -> Vec<T> {
    let mut moved: Vec<T> = Vec::new();
    for (i, entry) in old.into_iter().enumerate() {
        if !present(&entry) {
            continue;
        }
        let at = to(i);
        if moved.len() <= at {
            moved.resize_with(at + 1, T::default);
        }
        merge(&mut moved[at], entry);
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;
    use crate::dimensions::DimensionSettings;
    use proptest::prelude::*;

    const T0: i64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z

    fn settings(max_features: usize) -> EngineSettings {
        EngineSettings {
            max_features,
            dimensions: vec![DimensionSettings {
                name: "platform".into(),
                paths: vec!["/platform".into()],
                max_values: 4,
            }],
            // Feature adoption per platform too: its sketches carry both kinds of id.
            feature_dimensions: vec!["platform".into()],
            ..EngineSettings::default()
        }
    }

    /// A feature event of `user` on `feature` and `platform`, `minute` minutes after T0.
    fn line(user: u32, feature: &str, platform: &str, minute: i64) -> String {
        format!(
            r#"{{"user_id":"u{user}","event":"feature_used","feature":"{feature}","platform":"{platform}","ts":{}}}"#,
            T0 + minute * 60_000
        )
    }

    /// An engine of one partition that has seen `events` (user, feature, platform, minute).
    fn engine(settings: &EngineSettings, events: &[(u32, u8, u8, i64)]) -> Engine {
        let mut settings = settings.clone();
        settings.partitions = 1;
        let mut engine = Engine::new(settings, T0 + 40 * 86_400_000);
        for &(user, feature, platform, minute) in events {
            let line = line(
                user,
                &format!("f{feature}"),
                &format!("p{platform}"),
                minute,
            );
            engine.ingest(line.as_bytes(), None);
        }
        engine
    }

    fn image(state: &KpiState) -> Vec<u8> {
        postcard::to_stdvec(state).unwrap()
    }

    fn events() -> impl Strategy<Value = Vec<(u32, u8, u8, i64)>> {
        prop::collection::vec((0u32..40, 0u8..6, 0u8..3, 0i64..3000), 1..120)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A state moved into another router's registries (with room for every name) and
        /// back is the state it was, and the merged KPIs of the moved state, named by the
        /// other router, are the original's.
        #[test]
        fn a_state_moved_to_another_registry_and_back_is_identical(
            ours in events(),
            theirs in events(),
        ) {
            let settings = settings(16);
            let rules = Rules::of(&settings);
            let mut saver = engine(&settings, &ours);
            let expected = saver.snapshot();
            let saved = saver.state();
            let original = saved.partitions[0].kpis.clone();

            // The taker has seen other events first: other ids for the same names.
            let mut taker = engine(&settings, &theirs).state().router;
            let mut moved = original.clone();
            remap(&mut moved, &saved.router, &mut taker, &rules);

            // The saver's clock, so that the same sessions are closed.
            let mut alone = saved.clone();
            alone.router = RouterState {
                max_event_ms: saved.router.max_event_ms,
                watermark_ms: saved.router.watermark_ms,
                ..taker.clone()
            };
            alone.partitions[0].kpis = moved.clone();
            let mut restored = Engine::restore(settings.clone(), T0 + 40 * 86_400_000, alone);
            let got = restored.snapshot();
            // The taker's registry names features this partition never saw: all zero.
            let mut features = got.kpis.features.features.clone();
            features.retain(|name, kpis| {
                expected.kpis.features.features.contains_key(name) || kpis.active_users.d30 != 0
            });
            prop_assert_eq!(&features, &expected.kpis.features.features);
            prop_assert_eq!(&got.kpis.breakdowns.dimensions, &expected.kpis.breakdowns.dimensions);

            let mut back = moved;
            let mut home = saved.router.clone();
            remap(&mut back, &taker, &mut home, &rules);
            prop_assert_eq!(image(&back), image(&original));
        }
    }

    /// Past the taker's cap, names join its `__other__` pool, united; nothing is counted as
    /// an overflow event.
    #[test]
    fn names_past_the_cap_are_pooled_and_united() {
        let settings = settings(2);
        let rules = Rules::of(&settings);
        let saver = engine(&settings, &[(1, 0, 0, 0), (2, 1, 0, 1), (3, 2, 0, 2)]);
        let saved = saver.state();
        // The taker tracks f5 and f6: every saved feature is pooled, and f2 was already.
        let mut taker = engine(&settings, &[(9, 5, 0, 0), (9, 6, 0, 1)])
            .state()
            .router;
        let overflow = taker.features.overflow_events;
        let mut moved = saved.partitions[0].kpis.clone();
        remap(&mut moved, &saved.router, &mut taker, &rules);
        assert_eq!(taker.features.overflow_events, overflow);
        let day = crate::time::Calendar::new(settings.timezone.clone()).day_of(T0);
        let pooled = moved
            .features
            .feature(day, taker.features.other_id())
            .unwrap();
        assert_eq!(pooled.estimate().round() as u64, 3, "u1, u2 and u3");
        assert!(moved.features.feature(day, 0).is_none());
    }

    /// Two halves of a stream saved by two routers, gathered, give the KPIs of the whole.
    #[test]
    fn partitions_of_two_routers_gather_into_the_whole() {
        let settings = settings(8);
        let first = [(1, 0, 0, 0), (2, 1, 1, 1), (3, 2, 2, 2)];
        let second = [(4, 2, 2, 3), (5, 3, 0, 4), (6, 0, 1, 5)];
        let mut whole = engine(&settings, &[first, second].concat());
        let expected = whole.snapshot();
        let (a, b) = (
            engine(&settings, &first).state(),
            engine(&settings, &second).state(),
        );
        let mut part_b = b.partitions[0].clone();
        part_b.partition = 1;
        let parts = vec![
            (a.router.clone(), a.partitions[0].clone()),
            (b.router.clone(), part_b),
        ];
        let gathered = gather(&settings, b.router.clone(), parts);
        let mut settings = settings.clone();
        settings.partitions = 2;
        let mut engine = Engine::restore(settings, T0 + 40 * 86_400_000, gathered);
        let got = engine.snapshot();
        assert_eq!(got.kpis.features, expected.kpis.features);
        assert_eq!(got.kpis.breakdowns, expected.kpis.breakdowns);
        assert_eq!(got.kpis.activity, expected.kpis.activity);
    }

    /// Sessions still open when a partition is taken over count, once they close, under
    /// their first event's value as the taking registry names it.
    #[test]
    fn open_sessions_keep_their_values_in_the_taking_registry() {
        let settings = settings(8);
        let rules = Rules::of(&settings);
        let mut saver = engine(&settings, &[(1, 0, 0, 0), (2, 1, 1, 1), (3, 2, 1, 2)]);
        let saved = saver.state();
        assert_eq!(saved.partitions[0].kpis.sessions.open_session_keys(), 3);
        saver.close_all_sessions();
        let expected = saver.snapshot();
        // The taker saw p1 before p0: the two swap ids.
        let mut taker = engine(&settings, &[(9, 0, 1, 0), (9, 0, 0, 1)])
            .state()
            .router;
        let mut moved = saved.partitions[0].kpis.clone();
        remap(&mut moved, &saved.router, &mut taker, &rules);
        let mut alone = saved.clone();
        alone.router = RouterState {
            max_event_ms: saved.router.max_event_ms,
            watermark_ms: saved.router.watermark_ms,
            ..taker
        };
        alone.partitions[0].kpis = moved;
        let mut restored = Engine::restore(settings, T0 + 40 * 86_400_000, alone);
        restored.close_all_sessions();
        let sessions = |snapshot: &crate::KpiSnapshot| {
            let platform = &snapshot.kpis.breakdowns.dimensions["platform"];
            let count = |value: &str| platform.get(value).map(|v| v.sessions.d1.count);
            [count("p0"), count("p1")]
        };
        assert_eq!(sessions(&expected), [Some(1), Some(2)]);
        assert_eq!(sessions(&restored.snapshot()), sessions(&expected));
    }

    #[test]
    fn the_same_registry_maps_every_id_to_itself() {
        let settings = settings(4);
        let state = engine(&settings, &[(1, 0, 0, 0), (2, 1, 1, 1)]).state();
        let mut same = state.router.clone();
        let map = IdMap::between(&state.router, &mut same);
        assert!(map.is_identity());
        assert_eq!(map.dims([3, 4, 0, 0, 0, 0, 0, 0]), [3, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(map.feature(1), 1);
    }
}
