//! Feature adoption per breakdown value: for the dimensions marked `features = true` (at
//! most two), the distinct users of each feature among the users carrying each value over
//! 1, 7 and 30 days, and their share of that value's active users.
//!
//! It is the features family's bookkeeping once per (dimension, value), not a copy of it:
//! per partition, a day ring holding, per dimension position and value id, the same
//! [`FeatureDay`] of sketches by feature id, recorded, folded into windows (the unions of
//! past days kept between refreshes) and turned into adoption by the same functions.
//! Feature ids come from the router's feature registry (capped by `features.max_tracked`,
//! the rest `__other__`) and value ids from its dimension registry, so summaries merge by
//! id and any partitioning gives the answer of one partition.
//!
//! Why a family of its own rather than more of the breakdowns family's state: a checkpoint
//! written before it existed loads with it empty, and the breakdowns' saved layout stays as
//! it was. Its figures are shown inside each value's breakdown
//! (`dimensions.<name>.<value>.features`), so the breakdowns section asks this module for
//! them ([`value_features`]) and this family's own section is empty; its series and rollups
//! read them from there. The cost is a sketch per (day, value, feature used), up to
//! (`max_values` + 3) × (`max_tracked` + 1) per day and dimension: hence opt-in, and two
//! dimensions at most.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dimensions::ValueId;
use crate::event::PartitionEvent;
use crate::families::{Family, Sections, Summary};
use crate::family::{RollupOut, RollupValue, Rules, SectionContext, SeriesDef, SeriesOut, gauge};
use crate::features::FeatureId;
use crate::ring::DayRing;
use crate::sketch::{DistinctSketch, SketchShape};
use crate::windows::{PastFor, PastSketches, SummaryPoint, Windowed, merge_sketch};

use super::breakdowns::{by_key, ids_held, merge_by_value, moved_from, moved_value};
use super::features::{
    FeatureDay, FeatureKpis, FeaturesSummary, feature_kpis, fold_features, record_feature,
    remap_feature_day,
};

#[derive(Debug)]
pub struct BreakdownFeatures;

/// Per dimension position, per value id; a position whose dimension does not break
/// features down holds nothing.
type DayValues = Vec<Vec<FeatureDay>>;

/// `Default` is the state of a family absent from an older image: empty, fitted by `restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BreakdownFeaturesState {
    /// The key of the dimension at each position (see [`crate::dimensions::DimensionKeys`]).
    keys: Vec<u64>,
    days: DayRing<DayValues>,
    /// Writes that met a slot holding a newer day (should stay 0).
    dropped: u64,
}

#[derive(Debug, Clone, Default)]
pub struct BreakdownFeaturesCache {
    past: PastFor,
    /// Per dimension position, per value id, per feature id.
    values: Vec<Vec<Vec<PastSketches>>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BreakdownFeaturesSummary {
    /// Per dimension position, per value id: each feature's windows among its users.
    pub dimensions: Vec<Vec<FeaturesSummary>>,
}

/// Empty: the figures are each value's `features` in the breakdowns section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakdownFeaturesSection {}

const VALUE_FEATURE_WINDOW: &[&str] = &["dimension", "value", "feature", "window"];

pub const DIMENSION_FEATURE_ACTIVE_USERS: SeriesDef = gauge(
    "pulse_dimension_feature_active_users",
    VALUE_FEATURE_WINDOW,
    "Distinct users of the feature with an event carrying the value in the window (dimensions with features = true).",
);
pub const DIMENSION_FEATURE_ADOPTION_RATIO: SeriesDef = gauge(
    "pulse_dimension_feature_adoption_ratio",
    VALUE_FEATURE_WINDOW,
    "Users of the feature carrying the value divided by the value's active users, in the window.",
);

impl BreakdownFeaturesState {
    /// Every value's feature sketches moved to the value's and the features' ids in another
    /// registry ([`crate::remap`]); what lands on one id is united.
    pub(crate) fn remap(&mut self, map: &crate::remap::IdMap, shape: SketchShape) {
        for (_, day) in self.days.iter_mut() {
            for (position, values) in day.iter_mut().enumerate() {
                values
                    .iter_mut()
                    .for_each(|features| remap_feature_day(features, map, shape));
                *values = crate::remap::relocate(
                    std::mem::take(values),
                    |id| moved_value(map, position, id),
                    |features| !features.is_empty(),
                    |mine, theirs| {
                        if mine.len() < theirs.len() {
                            mine.resize_with(theirs.len(), || None);
                        }
                        for (mine, theirs) in mine.iter_mut().zip(theirs) {
                            merge_sketch(mine, theirs, shape);
                        }
                    },
                );
            }
        }
    }
}

impl BreakdownFeaturesSummary {
    /// Every value's feature windows moved to the value's and the features' ids in another
    /// registry ([`crate::remap`]).
    pub(crate) fn remap(&mut self, map: &crate::remap::IdMap, shape: SketchShape) {
        for (position, values) in self.dimensions.iter_mut().enumerate() {
            values
                .iter_mut()
                .for_each(|features| features.remap(map, shape));
            *values = crate::remap::relocate(
                std::mem::take(values),
                |id| moved_value(map, position, id),
                |features| !features.features.is_empty(),
                |mine, theirs| mine.merge(theirs, shape),
            );
        }
    }
}

impl Family for BreakdownFeatures {
    type State = BreakdownFeaturesState;
    type Cache = BreakdownFeaturesCache;
    type Summary = BreakdownFeaturesSummary;
    type Section = BreakdownFeaturesSection;

    const SERIES: &'static [SeriesDef] = &[
        DIMENSION_FEATURE_ACTIVE_USERS,
        DIMENSION_FEATURE_ADOPTION_RATIO,
    ];

    fn new_state(rules: &Rules) -> BreakdownFeaturesState {
        BreakdownFeaturesState {
            keys: rules.dimensions.as_slice().to_vec(),
            days: DayRing::new(rules.retention_days),
            dropped: 0,
        }
    }

    fn restore(state: &mut BreakdownFeaturesState, rules: &Rules) {
        state.days.fit(rules.retention_days);
        let keys = rules.dimensions.as_slice();
        let from = moved_from(&state.keys, keys);
        for (_, day) in state.days.iter_mut() {
            if state.keys != keys {
                *day = by_key(std::mem::take(day), &from);
            }
            // A dimension no longer marked `features = true` gives its sketches back.
            for (position, values) in day.iter_mut().enumerate() {
                if !breaks_features(rules, position) {
                    *values = Vec::new();
                }
            }
        }
        state.keys = keys.to_vec();
    }

    fn apply(
        state: &mut BreakdownFeaturesState,
        cache: &mut BreakdownFeaturesCache,
        event: &PartitionEvent,
        rules: &Rules,
    ) {
        let Some(feature) = event.feature else {
            return;
        };
        if rules.feature_dimensions == 0 {
            return;
        }
        cache.past.note_write(event.day);
        let Some(day) = state.days.get_or_insert_with(event.day, Vec::new) else {
            state.dropped += 1;
            return;
        };
        day.resize_with(state.keys.len(), Vec::new);
        for (position, (values, id)) in day.iter_mut().zip(event.dims).enumerate() {
            if !breaks_features(rules, position) {
                continue;
            }
            let index = usize::from(id);
            if values.len() <= index {
                values.resize_with(index + 1, Vec::new);
            }
            record_feature(&mut values[index], feature, &event.user, rules.shape);
        }
    }

    fn summarize(
        state: &BreakdownFeaturesState,
        cache: &mut BreakdownFeaturesCache,
        at: SummaryPoint,
        rules: &Rules,
    ) -> BreakdownFeaturesSummary {
        let days: Vec<Option<&DayValues>> = at.days().map(|d| state.days.get(d)).collect();
        let refresh = !cache.past.valid_for(at.today);
        cache.values.resize_with(state.keys.len(), Vec::new);
        let dimensions = cache
            .values
            .iter_mut()
            .enumerate()
            .map(|(position, past)| {
                let count = ids_held(&days, position);
                if past.len() < count {
                    past.resize_with(count, Vec::new);
                }
                past.iter_mut()
                    .take(count)
                    .enumerate()
                    .map(|(id, past)| {
                        let of: Vec<Option<&FeatureDay>> =
                            days.iter().map(|d| (*d)?.get(position)?.get(id)).collect();
                        fold_features(&of, past, refresh, rules.shape)
                    })
                    .collect()
            })
            .collect();
        BreakdownFeaturesSummary { dimensions }
    }

    fn merge(into: &mut BreakdownFeaturesSummary, other: BreakdownFeaturesSummary, rules: &Rules) {
        merge_by_value(&mut into.dimensions, other.dimensions, |mine, theirs| {
            mine.merge(theirs, rules.shape);
        });
    }

    fn estimated_bytes(state: &BreakdownFeaturesState, cache: &BreakdownFeaturesCache) -> usize {
        let slot = std::mem::size_of::<Option<DistinctSketch>>();
        let days = state
            .days
            .iter()
            .flat_map(|(_, day)| day.iter().flatten())
            .map(|features| {
                let sketches = features.iter().flatten();
                sketches.map(DistinctSketch::estimated_bytes).sum::<usize>() + features.len() * slot
            })
            .sum::<usize>();
        let past = cache
            .values
            .iter()
            .flatten()
            .flatten()
            .map(PastSketches::estimated_bytes)
            .sum::<usize>();
        days + past
    }

    fn section(_: &[Summary], _: &Sections, _: &SectionContext<'_>) -> BreakdownFeaturesSection {
        BreakdownFeaturesSection {}
    }

    fn series(sections: &Sections, out: &mut dyn SeriesOut) {
        for (dimension, values) in &sections.breakdowns.dimensions {
            for (value, kpis) in values {
                for (feature, k) in &kpis.features {
                    let users = k.active_users.labelled();
                    for ((window, u), (_, a)) in users.into_iter().zip(k.adoption.labelled()) {
                        let labels = [dimension.as_str(), value, feature, window];
                        out.sample(&DIMENSION_FEATURE_ACTIVE_USERS, &labels, *u as f64);
                        out.sample(&DIMENSION_FEATURE_ADOPTION_RATIO, &labels, *a);
                    }
                }
            }
        }
    }

    fn rollups(sections: &Sections, _: &[Summary], out: &mut RollupOut<'_>) {
        let windows: Vec<usize> = out.windows().collect();
        for (dimension, values) in &sections.breakdowns.dimensions {
            for (value, kpis) in values {
                for (feature, k) in &kpis.features {
                    let dimensions = [
                        ("dimension", dimension.as_str()),
                        ("value", value.as_str()),
                        ("feature", feature.as_str()),
                    ];
                    for &w in &windows {
                        let users = *k.active_users.get(w);
                        // As for features: no record for a window nobody used it in.
                        if users == 0 {
                            continue;
                        }
                        for (metric, value) in [
                            ("dimension_feature_active_users", users as f64),
                            ("dimension_feature_adoption", *k.adoption.get(w)),
                        ] {
                            out.push(RollupValue {
                                metric,
                                window: w,
                                dimensions: &dimensions,
                                value,
                                sketch: None,
                            });
                        }
                    }
                }
            }
        }
    }
}

fn breaks_features(rules: &Rules, position: usize) -> bool {
    rules.feature_dimensions & (1 << position) != 0
}

/// The features used by the users carrying value `id` of the dimension at `position`, with
/// their adoption among the value's `active` users: those some of them used in the 30-day
/// window. Empty for a dimension without `features = true`.
pub(crate) fn value_features(
    summaries: &[Summary],
    position: usize,
    id: ValueId,
    active: &Windowed<u64>,
    cx: &SectionContext<'_>,
) -> BTreeMap<String, FeatureKpis> {
    let of = summaries.iter().filter_map(move |s| {
        s.breakdown_features
            .dimensions
            .get(position)?
            .get(usize::from(id))
    });
    let count = of.clone().map(|f| f.features.len()).max().unwrap_or(0);
    (0..count)
        .filter_map(|feature| {
            let windows = of.clone().filter_map(move |f| f.features.get(feature));
            let used = windows.clone().any(|w| w.current[2].is_some());
            used.then(|| {
                let name = cx.router.features.name(feature as FeatureId).to_owned();
                (name, feature_kpis(cx.shape, windows, active))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::dimensions::DimensionSettings;
    use crate::{Engine, EngineSettings, EngineState, KpiSnapshot};

    const WALL: i64 = 1_900_000_000_000;
    /// 2026-03-01T00:00:00Z.
    const T0: i64 = 1_772_323_200_000;

    fn settings(features: &[&str]) -> EngineSettings {
        let dimension = |name: &str| DimensionSettings {
            name: name.into(),
            paths: vec![format!("/{name}")],
            max_values: 5,
        };
        EngineSettings {
            dimensions: vec![dimension("platform"), dimension("plan")],
            feature_dimensions: features.iter().map(|n| (*n).to_owned()).collect(),
            ..EngineSettings::default()
        }
    }

    fn use_feature(engine: &mut Engine, user: &str, feature: &str, ts: i64) {
        let line = format!(
            r#"{{"user_id":"{user}","event":"feature_used","feature":"{feature}","ts":{ts},"platform":"web","plan":"pro"}}"#
        );
        engine.ingest(line.as_bytes(), None);
    }

    fn features_of(snapshot: &KpiSnapshot, dimension: &str, value: &str) -> Vec<String> {
        let values = &snapshot.kpis.breakdowns.dimensions[dimension];
        values[value].features.keys().cloned().collect()
    }

    #[test]
    fn only_marked_dimensions_break_features_down_and_a_restart_follows_the_marks() {
        let mut engine = Engine::new(settings(&["platform"]), WALL);
        use_feature(&mut engine, "a", "export", T0);
        use_feature(&mut engine, "b", "search", T0 + 1);
        let snapshot = engine.snapshot();
        assert_eq!(
            features_of(&snapshot, "platform", "web"),
            ["export", "search"]
        );
        assert!(features_of(&snapshot, "plan", "pro").is_empty());
        let web = &snapshot.kpis.breakdowns.dimensions["platform"]["web"];
        assert_eq!(web.features["export"].adoption.d1, 0.5);

        let bytes = engine.state().to_bytes();
        let state = EngineState::from_bytes(&bytes).unwrap();
        let mut moved = Engine::restore(settings(&["plan"]), WALL, state);
        let snapshot = moved.snapshot();
        assert!(
            features_of(&snapshot, "platform", "web").is_empty(),
            "unmarked: its sketches are given back"
        );
        assert!(
            features_of(&snapshot, "plan", "pro").is_empty(),
            "starts empty"
        );
        use_feature(&mut moved, "c", "alerts", T0 + 2);
        assert_eq!(features_of(&moved.snapshot(), "plan", "pro"), ["alerts"]);
    }
}
