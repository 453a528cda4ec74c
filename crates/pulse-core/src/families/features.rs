//! Feature adoption: distinct users of each feature over 1, 7 and 30 days, and adoption,
//! their share of the window's active users.
//!
//! Per partition: a day ring of one HyperLogLog sketch per feature used that day, indexed
//! by the router's feature registry (names in order of first appearance, capped at
//! `features.max_tracked`, the rest pooled as `__other__`, so labels stay bounded).
//!
//! The same bookkeeping serves the users of one breakdown value
//! ([`super::breakdown_features`]): a day of sketches by feature ([`FeatureDay`]), recorded,
//! folded into windows and turned into adoption by the functions below.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::PartitionEvent;
use crate::families::{Family, Sections, Summary};
use crate::family::{RollupOut, RollupValue, Rules, SectionContext, SeriesDef, SeriesOut, gauge};
use crate::features::FeatureId;
use crate::ring::DayRing;
use crate::sketch::{DistinctSketch, SketchShape, UserHash};
use crate::windows::{
    PastFor, PastSketches, Previous, SketchWindows, SummaryPoint, Windowed, ratio, union_estimate,
};

use super::activity::day_union;

#[derive(Debug)]
pub struct Features;

/// One population's users of each feature on one day, indexed by [`FeatureId`]; grown on
/// first use.
pub type FeatureDay = Vec<Option<DistinctSketch>>;

/// `Default` is the state of a family absent from an older image: empty, given its rings
/// by `restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FeaturesState {
    days: DayRing<FeatureDay>,
    /// Writes that met a slot holding a newer day (should stay 0).
    dropped: u64,
}

#[derive(Debug, Clone, Default)]
pub struct FeaturesCache {
    past: PastFor,
    /// Indexed by [`FeatureId`]; a feature beyond the end has no past.
    features: Vec<PastSketches>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FeaturesSummary {
    /// Indexed by [`FeatureId`].
    pub features: Vec<SketchWindows>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureKpis {
    pub active_users: Windowed<u64>,
    pub adoption: Windowed<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeaturesSection {
    pub features: BTreeMap<String, FeatureKpis>,
}

pub const FEATURE_ACTIVE_USERS: SeriesDef = gauge(
    "pulse_feature_active_users",
    &["feature", "window"],
    "Distinct users of the feature in the window; names past the cap are pooled as __other__.",
);
pub const FEATURE_ADOPTION_RATIO: SeriesDef = gauge(
    "pulse_feature_adoption_ratio",
    &["feature", "window"],
    "Users of the feature divided by active users, in the window.",
);

/// One day's feature sketches moved to their ids in another registry ([`crate::remap`]).
pub(crate) fn remap_feature_day(
    day: &mut FeatureDay,
    map: &crate::remap::IdMap,
    shape: crate::sketch::SketchShape,
) {
    *day = crate::remap::relocate(
        std::mem::take(day),
        |id| usize::from(map.feature(id as FeatureId)),
        Option::is_some,
        |mine, theirs| crate::windows::merge_sketch(mine, theirs, shape),
    );
}

impl FeaturesSummary {
    /// Each feature's windows moved to its id in another registry ([`crate::remap`]).
    pub(crate) fn remap(&mut self, map: &crate::remap::IdMap, shape: SketchShape) {
        self.features = crate::remap::relocate(
            std::mem::take(&mut self.features),
            |id| usize::from(map.feature(id as FeatureId)),
            |_| true,
            |mine, theirs| mine.merge(theirs, shape),
        );
    }

    /// Takes `other` in: each feature's windows of both.
    pub(crate) fn merge(&mut self, other: FeaturesSummary, shape: SketchShape) {
        if self.features.len() < other.features.len() {
            self.features
                .resize_with(other.features.len(), SketchWindows::default);
        }
        for (mine, theirs) in self.features.iter_mut().zip(other.features) {
            mine.merge(theirs, shape);
        }
    }
}

impl FeaturesState {
    /// The sketch of feature `id` on `day`, if held.
    pub fn feature(&self, day: crate::time::Day, id: FeatureId) -> Option<&DistinctSketch> {
        self.days.get(day)?.get(usize::from(id))?.as_ref()
    }

    /// Moves each feature's sketches to its id in another registry ([`crate::remap`]).
    pub(crate) fn remap(&mut self, map: &crate::remap::IdMap, shape: crate::sketch::SketchShape) {
        for (_, day) in self.days.iter_mut() {
            remap_feature_day(day, map, shape);
        }
    }

    /// Every feature sketch held, for measuring.
    pub fn sketches(&self) -> impl Iterator<Item = &DistinctSketch> {
        self.days.iter().flat_map(|(_, day)| day.iter().flatten())
    }
}

impl Family for Features {
    type State = FeaturesState;
    type Cache = FeaturesCache;
    type Summary = FeaturesSummary;
    type Section = FeaturesSection;

    const SERIES: &'static [SeriesDef] = &[FEATURE_ACTIVE_USERS, FEATURE_ADOPTION_RATIO];

    fn new_state(rules: &Rules) -> FeaturesState {
        FeaturesState {
            days: DayRing::new(rules.retention_days),
            dropped: 0,
        }
    }

    fn restore(state: &mut FeaturesState, rules: &Rules) {
        state.days.fit(rules.retention_days);
    }

    fn apply(
        state: &mut FeaturesState,
        cache: &mut FeaturesCache,
        event: &PartitionEvent,
        rules: &Rules,
    ) {
        let Some(id) = event.feature else {
            return;
        };
        cache.past.note_write(event.day);
        let Some(day) = state.days.get_or_insert_with(event.day, Vec::new) else {
            state.dropped += 1;
            return;
        };
        record_feature(day, id, &event.user, rules.shape);
    }

    fn summarize(
        state: &FeaturesState,
        cache: &mut FeaturesCache,
        at: SummaryPoint,
        rules: &Rules,
    ) -> FeaturesSummary {
        let days: Vec<Option<&FeatureDay>> = at.days().map(|d| state.days.get(d)).collect();
        let refresh = !cache.past.valid_for(at.today);
        fold_features(&days, &mut cache.features, refresh, rules.shape)
    }

    fn merge(into: &mut FeaturesSummary, other: FeaturesSummary, rules: &Rules) {
        into.merge(other, rules.shape);
    }

    fn estimated_bytes(state: &FeaturesState, cache: &FeaturesCache) -> usize {
        let sketches = state
            .sketches()
            .map(DistinctSketch::estimated_bytes)
            .sum::<usize>();
        let slots = state
            .days
            .iter()
            .map(|(_, day)| day.len() * std::mem::size_of::<Option<DistinctSketch>>())
            .sum::<usize>();
        let past = cache
            .features
            .iter()
            .map(PastSketches::estimated_bytes)
            .sum::<usize>();
        sketches + slots + past
    }

    fn section(
        summaries: &[Summary],
        earlier: &Sections,
        cx: &SectionContext<'_>,
    ) -> FeaturesSection {
        let registry = &cx.router.features;
        let active = &earlier.activity.active_users;
        let features = feature_ids(cx, summaries)
            .into_iter()
            .map(|id| {
                let windows = summaries
                    .iter()
                    .filter_map(|s| s.features.features.get(usize::from(id)));
                let kpis = feature_kpis(cx.shape, windows, active);
                (registry.name(id).to_owned(), kpis)
            })
            .collect();
        FeaturesSection { features }
    }

    fn series(sections: &Sections, out: &mut dyn SeriesOut) {
        for (feature, k) in &sections.features.features {
            for ((window, u), (_, a)) in k
                .active_users
                .labelled()
                .into_iter()
                .zip(k.adoption.labelled())
            {
                out.sample(&FEATURE_ACTIVE_USERS, &[feature, window], *u as f64);
                out.sample(&FEATURE_ADOPTION_RATIO, &[feature, window], *a);
            }
        }
    }

    fn rollups(sections: &Sections, summaries: &[Summary], out: &mut RollupOut<'_>) {
        let windows: Vec<usize> = out.windows().collect();
        let registry = &out.cx.router.features;
        for id in feature_ids(out.cx, summaries) {
            let name = registry.name(id);
            let Some(kpis) = sections.features.features.get(name) else {
                continue;
            };
            let dimensions = [("feature", name)];
            // The day's distinct users of the feature, across partitions.
            let day_sketch = (out.sketches && windows.contains(&0))
                .then(|| {
                    let days = summaries.iter().filter_map(|s| {
                        s.features.features.get(usize::from(id))?.current[0].as_ref()
                    });
                    day_union(out.shape, days)
                })
                .flatten();
            for &w in &windows {
                let users = *kpis.active_users.get(w) as f64;
                // A feature nobody used in the window has no record (a distinct count of a
                // past window never goes down, so no zero is needed to overwrite anything).
                if users == 0.0 {
                    continue;
                }
                out.push(RollupValue {
                    metric: "feature_active_users",
                    window: w,
                    dimensions: &dimensions,
                    value: users,
                    sketch: day_sketch.as_ref(),
                });
                out.push(RollupValue {
                    metric: "feature_adoption",
                    window: w,
                    dimensions: &dimensions,
                    value: *kpis.adoption.get(w),
                    sketch: None,
                });
            }
        }
    }
}

/// Records that `user` used feature `id` on the day of `day`.
pub(crate) fn record_feature(
    day: &mut FeatureDay,
    id: FeatureId,
    user: &UserHash,
    shape: SketchShape,
) {
    let index = usize::from(id);
    if day.len() <= index {
        day.resize(index + 1, None);
    }
    day[index]
        .get_or_insert_with(|| DistinctSketch::new(shape))
        .insert(user);
}

/// Folds one population's feature days, today first, into each feature's windows; `past`
/// (by [`FeatureId`]) is recomputed when `refresh`, else taken as it was kept (a feature
/// beyond its end had no day before today when it was computed).
pub(crate) fn fold_features(
    days: &[Option<&FeatureDay>],
    past: &mut Vec<PastSketches>,
    refresh: bool,
    shape: SketchShape,
) -> FeaturesSummary {
    let count = days.iter().flatten().map(|d| d.len()).max().unwrap_or(0);
    let of = |id: usize| -> Vec<Option<&DistinctSketch>> {
        days.iter()
            .map(|d| d.and_then(|d| d.get(id)?.as_ref()))
            .collect()
    };
    if refresh {
        *past = (0..count)
            .map(|id| PastSketches::fold(&of(id), shape))
            .collect();
    }
    let no_past = PastSketches::default();
    FeaturesSummary {
        features: (0..count)
            .map(|id| {
                let past = past.get(id).unwrap_or(&no_past);
                SketchWindows::fold(&of(id), past, Previous::Skip, shape)
            })
            .collect(),
    }
}

/// One feature's users and adoption among a population's `active` users, from its windows
/// in every summary.
pub(crate) fn feature_kpis<'a>(
    shape: SketchShape,
    windows: impl Iterator<Item = &'a SketchWindows> + Clone,
    active: &Windowed<u64>,
) -> FeatureKpis {
    let users = Windowed::from_fn(|w| {
        union_estimate(shape, windows.clone().filter_map(|f| f.current[w].as_ref()))
    });
    let adoption = Windowed::from_fn(|w| ratio(*users.get(w) as f64, *active.get(w) as f64));
    FeatureKpis {
        active_users: users,
        adoption,
    }
}

/// The features a snapshot shows: every tracked one, and `__other__` once something was
/// pooled into it.
fn feature_ids(cx: &SectionContext<'_>, summaries: &[Summary]) -> Vec<FeatureId> {
    let registry = &cx.router.features;
    let mut ids: Vec<FeatureId> = (0..registry.tracked() as FeatureId).collect();
    let other = registry.other_id();
    if summaries
        .iter()
        .any(|s| s.features.features.len() > usize::from(other))
    {
        ids.push(other);
    }
    ids
}
