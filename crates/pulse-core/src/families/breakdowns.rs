//! Breakdowns: the engagement KPIs of the users of each value of each configured dimension
//! (platform, app version, country, plan, tenant) — active users now and a day earlier, new
//! users, stickiness and sessions — so "DAU dropped" can be followed by "on which platform?".
//!
//! It is the activity family's bookkeeping once per (dimension, value), not a copy of it:
//! per partition, a day ring holding, per dimension and value id, the same [`ActivityDay`]
//! (everyone who carried the value that day, and who signed up with it); folded into windows
//! by the same [`fold_days`] and into ratios by the same stickiness [`ratios`]. A user active
//! on web and iOS counts under both, so a dimension's values do not add up to the total.
//!
//! Sessions: a session's value is that of its first event, which out-of-order arrival can
//! change until the session is final. So the sessions family's open events carry their
//! value ids (with dimensions configured), and the sessions it closes are handed on here
//! ([`super::sessions::ClosedByValue`]) to be counted under their first event's values, in a
//! day ring of statistics like the sessions family's.
//!
//! Value ids come from the router's stream-wide registry ([`crate::dimensions`]), so an id
//! means the same value in every partition and summaries merge by id. The state keeps, per
//! position, the key of its dimension's name: a restored state follows its dimensions when
//! the configuration adds, drops or reorders them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dimensions::{ValueId, ValueRegistry};
use crate::event::PartitionEvent;
use crate::families::{Family, Sections, Summary};
use crate::family::counter;
use crate::family::{RollupOut, RollupValue, Rules, SectionContext, SeriesDef, SeriesOut, gauge};
use crate::ring::DayRing;
use crate::session_stats::SessionStats;
use crate::sketch::{DistinctSketch, SketchShape};
use crate::time::Day;
use crate::windows::{
    PastFor, PastSketches, SketchWindows, SummaryPoint, WINDOWS, Windowed, union_estimate,
};

use super::activity::{ActivityDay, day_union, fold_days, record_day};
use super::breakdown_features::value_features;
use super::features::FeatureKpis;
use super::sessions::{ClosedByValue, SessionKpis, past_sessions, session_kpis, with_today};
use super::stickiness::{StickinessRatios, ratios};

#[derive(Debug)]
pub struct Breakdowns;

/// Per dimension position, per value id; grown on first use.
pub(crate) type DayValues = Vec<Vec<Option<ActivityDay>>>;

/// `Default` is the state of a family absent from an older image: empty, fitted by `restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BreakdownsState {
    /// The key of the dimension at each position (see [`crate::dimensions::DimensionKeys`]).
    pub(crate) keys: Vec<u64>,
    pub(crate) days: DayRing<DayValues>,
    /// Closed sessions by start day, per dimension position, per value id of the first event.
    pub(crate) session_days: DayRing<Vec<Vec<SessionStats>>>,
    /// Writes that met a slot holding a newer day (should stay 0).
    pub(crate) dropped: u64,
}

#[derive(Debug, Clone, Default)]
pub struct BreakdownsCache {
    past: PastFor,
    /// Per dimension position, per value id: (active, signups).
    values: Vec<Vec<[PastSketches; 2]>>,
    /// Per dimension position, per value id: its sessions of the days before today, by
    /// window ([`past_sessions`]). Merging thirty days of duration histograms per value
    /// was most of a refresh with 500 tenants.
    sessions: Vec<Vec<[SessionStats; 3]>>,
    /// What `sessions` are of: today, and how many sessions had closed into each day
    /// before it (every closed session counts under every dimension, so the first one's
    /// total sees any close). Sessions close into past days when the watermark moves, not
    /// when events arrive, so this is checked instead of noting writes as `past` does.
    sessions_for: Option<(Day, Vec<u64>)>,
}

/// One value's contribution to a snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValueSummary {
    pub active: SketchWindows,
    pub active_daily: Vec<Option<DistinctSketch>>,
    pub signups: SketchWindows,
    /// Sessions started in each window, by their first event's value.
    pub sessions: [SessionStats; 3],
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BreakdownsSummary {
    /// Per dimension position, per value id (`None`: no user carried it in 31 days).
    pub dimensions: Vec<Vec<Option<ValueSummary>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueKpis {
    pub active_users: Windowed<u64>,
    pub active_users_previous: Windowed<u64>,
    pub new_users: Windowed<u64>,
    pub stickiness: StickinessRatios,
    pub sessions: Windowed<SessionKpis>,
    /// Feature name → its users among the value's and their adoption, for a dimension with
    /// `features = true` (see [`super::breakdown_features`]): the features some of them used
    /// in the 30-day window.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, FeatureKpis>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakdownsSection {
    /// Dimension name → value → its KPIs; absent when no dimension is configured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, BTreeMap<String, ValueKpis>>,
    /// Dimension name → events whose value was pooled into `__other__`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimension_overflow_events: BTreeMap<String, u64>,
}

const VALUE_WINDOW: &[&str] = &["dimension", "value", "window"];

pub const DIMENSION_ACTIVE_USERS: SeriesDef = gauge(
    "pulse_dimension_active_users",
    VALUE_WINDOW,
    "Distinct users with an event carrying the dimension's value in the window; a user with several values counts under each.",
);
pub const DIMENSION_ACTIVE_USERS_PREVIOUS: SeriesDef = gauge(
    "pulse_dimension_active_users_previous",
    VALUE_WINDOW,
    "Distinct users carrying the value in the same window ending yesterday.",
);
pub const DIMENSION_NEW_USERS: SeriesDef = gauge(
    "pulse_dimension_new_users",
    VALUE_WINDOW,
    "Distinct users with a signup event carrying the value in the window.",
);
pub const DIMENSION_STICKINESS_RATIO: SeriesDef = gauge(
    "pulse_dimension_stickiness_ratio",
    &["dimension", "value", "ratio"],
    "Stickiness of the users carrying the value, over complete days ending yesterday: mean DAU / MAU, mean DAU / WAU, WAU / MAU.",
);
pub const DIMENSION_SESSIONS: SeriesDef = gauge(
    "pulse_dimension_sessions",
    VALUE_WINDOW,
    "Sessions started in the window whose first event carried the value.",
);
pub const DIMENSION_SESSION_DURATION_AVG_SECONDS: SeriesDef = gauge(
    "pulse_dimension_session_duration_avg_seconds",
    VALUE_WINDOW,
    "Mean duration of the sessions started in the window whose first event carried the value.",
);
pub const DIMENSION_SESSION_DURATION_QUANTILE_SECONDS: SeriesDef = gauge(
    "pulse_dimension_session_duration_quantile_seconds",
    &["dimension", "value", "window", "q"],
    "Nearest-rank duration quantile q (0.5) of those sessions (within 0.5 %).",
);
pub const DIMENSION_SESSION_BOUNCE_RATIO: SeriesDef = gauge(
    "pulse_dimension_session_bounce_ratio",
    VALUE_WINDOW,
    "Share of those sessions that have a single event.",
);
pub const DIMENSION_SESSION_EVENTS_AVG: SeriesDef = gauge(
    "pulse_dimension_session_events_avg",
    VALUE_WINDOW,
    "Mean number of events per session of those sessions.",
);
pub const DIMENSION_OVERFLOW_EVENTS: SeriesDef = counter(
    "pulse_dimension_overflow_events_total",
    &["dimension"],
    "Events whose value came after the dimension's max_values and was pooled as __other__.",
);

impl BreakdownsState {
    /// The day of `value` of the dimension at `position`, if held.
    pub fn value_day(
        &self,
        day: crate::time::Day,
        position: usize,
        value: ValueId,
    ) -> Option<&ActivityDay> {
        self.days
            .get(day)?
            .get(position)?
            .get(usize::from(value))?
            .as_ref()
    }
}

/// Takes `theirs` into `mine`, either of which may hold no summary of the value.
fn merge_held_value(
    mine: &mut Option<ValueSummary>,
    theirs: Option<ValueSummary>,
    shape: SketchShape,
) {
    match (mine.as_mut(), theirs) {
        (_, None) => {}
        (None, theirs) => *mine = theirs,
        (Some(mine), Some(theirs)) => merge_value(mine, theirs, shape),
    }
}

/// Where value `id` of dimension `position` goes in another registry ([`crate::remap`]).
pub(crate) fn moved_value(map: &crate::remap::IdMap, position: usize, id: usize) -> usize {
    let mut ids = [crate::dimensions::NONE_ID; crate::dimensions::MAX_DIMENSIONS];
    ids[position] = id as ValueId;
    usize::from(map.dims(ids)[position])
}

impl BreakdownsSummary {
    /// Every value's windows moved to its id in another registry ([`crate::remap`]).
    pub(crate) fn remap(&mut self, map: &crate::remap::IdMap, shape: SketchShape) {
        for (position, values) in self.dimensions.iter_mut().enumerate() {
            *values = crate::remap::relocate(
                std::mem::take(values),
                |id| moved_value(map, position, id),
                Option::is_some,
                |mine, theirs| merge_held_value(mine, theirs, shape),
            );
        }
    }
}

impl BreakdownsState {
    /// Moves every value's days and session statistics to its id in another registry
    /// ([`crate::remap`]); what lands on one id is united.
    pub(crate) fn remap(&mut self, map: &crate::remap::IdMap, shape: SketchShape) {
        let moved = |position: usize, id: usize| moved_value(map, position, id);
        for (_, day) in self.days.iter_mut() {
            for (position, values) in day.iter_mut().enumerate() {
                *values = crate::remap::relocate(
                    std::mem::take(values),
                    |id| moved(position, id),
                    Option::is_some,
                    |mine, theirs| merge_day(mine, theirs, shape),
                );
            }
        }
        for (_, day) in self.session_days.iter_mut() {
            for (position, values) in day.iter_mut().enumerate() {
                *values = crate::remap::relocate(
                    std::mem::take(values),
                    |id| moved(position, id),
                    |stats| *stats != SessionStats::default(),
                    |mine, theirs| mine.merge(&theirs),
                );
            }
        }
    }
}

/// Unites two days of one value (names pooled together by a remap).
fn merge_day(mine: &mut Option<ActivityDay>, theirs: Option<ActivityDay>, shape: SketchShape) {
    let Some(theirs) = theirs else { return };
    let Some(held) = mine.take() else {
        *mine = Some(theirs);
        return;
    };
    let mut active = Some(held.active);
    crate::windows::merge_sketch(&mut active, Some(theirs.active), shape);
    let mut signups = held.signups;
    crate::windows::merge_sketch(&mut signups, theirs.signups, shape);
    *mine = Some(ActivityDay {
        active: active.expect("merged"),
        signups,
    });
}

impl Family for Breakdowns {
    type State = BreakdownsState;
    type Cache = BreakdownsCache;
    type Summary = BreakdownsSummary;
    type Section = BreakdownsSection;

    const SERIES: &'static [SeriesDef] = &[
        DIMENSION_ACTIVE_USERS,
        DIMENSION_ACTIVE_USERS_PREVIOUS,
        DIMENSION_NEW_USERS,
        DIMENSION_STICKINESS_RATIO,
        DIMENSION_SESSIONS,
        DIMENSION_SESSION_DURATION_AVG_SECONDS,
        DIMENSION_SESSION_DURATION_QUANTILE_SECONDS,
        DIMENSION_SESSION_BOUNCE_RATIO,
        DIMENSION_SESSION_EVENTS_AVG,
        DIMENSION_OVERFLOW_EVENTS,
    ];

    fn new_state(rules: &Rules) -> BreakdownsState {
        BreakdownsState {
            keys: rules.dimensions.as_slice().to_vec(),
            days: DayRing::new(rules.retention_days),
            session_days: DayRing::new(rules.retention_days),
            dropped: 0,
        }
    }

    fn restore(state: &mut BreakdownsState, rules: &Rules) {
        state.days.fit(rules.retention_days);
        state.session_days.fit(rules.retention_days);
        let keys = rules.dimensions.as_slice();
        if state.keys == keys {
            return;
        }
        let from = moved_from(&state.keys, keys);
        for (_, day) in state.days.iter_mut() {
            *day = by_key(std::mem::take(day), &from);
        }
        for (_, day) in state.session_days.iter_mut() {
            *day = by_key(std::mem::take(day), &from);
        }
        state.keys = keys.to_vec();
    }

    fn apply(
        state: &mut BreakdownsState,
        cache: &mut BreakdownsCache,
        event: &PartitionEvent,
        rules: &Rules,
    ) {
        let dimensions = state.keys.len();
        if dimensions == 0 {
            return;
        }
        cache.past.note_write(event.day);
        let Some(day) = state.days.get_or_insert_with(event.day, Vec::new) else {
            state.dropped += 1;
            return;
        };
        day.resize_with(dimensions, Vec::new);
        for (values, id) in day.iter_mut().zip(event.dims) {
            let index = usize::from(id);
            if values.len() <= index {
                values.resize_with(index + 1, || None);
            }
            let value = values[index].get_or_insert_with(|| ActivityDay::new(rules.shape));
            record_day(value, event, rules.shape);
        }
    }

    fn advance(state: &mut BreakdownsState, _: i64, _: &Rules, by_value: &mut ClosedByValue) {
        state.record_sessions(by_value);
    }

    fn close_all(state: &mut BreakdownsState, _: &Rules, by_value: &mut ClosedByValue) {
        state.record_sessions(by_value);
    }

    fn summarize(
        state: &BreakdownsState,
        cache: &mut BreakdownsCache,
        at: SummaryPoint,
        rules: &Rules,
    ) -> BreakdownsSummary {
        let days: Vec<Option<&DayValues>> = at.days().map(|d| state.days.get(d)).collect();
        let refresh = !cache.past.valid_for(at.today);
        let sessions_for = Some((at.today, state.closed_before(at)));
        let sessions_refresh = cache.sessions_for != sessions_for;
        cache.sessions_for = sessions_for;
        cache.values.resize_with(state.keys.len(), Vec::new);
        cache.sessions.resize_with(state.keys.len(), Vec::new);
        let dimensions = cache
            .values
            .iter_mut()
            .zip(&mut cache.sessions)
            .enumerate()
            .map(|(position, (past, past_sessions_of))| {
                let count = ids_held(&days, position);
                if past.len() < count {
                    past.resize_with(count, Default::default);
                }
                // A value new since they were kept had no sessions before today then.
                if past_sessions_of.len() < count {
                    past_sessions_of.resize_with(count, Default::default);
                }
                (0..count)
                    .zip(past.iter_mut().zip(past_sessions_of.iter_mut()))
                    .map(|(id, (past, kept_sessions))| {
                        let of: Vec<Option<&ActivityDay>> = days
                            .iter()
                            .map(|d| (*d)?.get(position)?.get(id)?.as_ref())
                            .collect();
                        if of.iter().all(Option::is_none) {
                            return None;
                        }
                        let [active, signups] = past;
                        let folded = fold_days(&of, [active, signups], refresh, rules.shape);
                        let of_day = |day| state.session_days.get(day)?.get(position)?.get(id);
                        if sessions_refresh {
                            *kept_sessions = past_sessions(at, of_day);
                        }
                        let sessions = with_today(kept_sessions, of_day(at.today));
                        Some(ValueSummary {
                            active: folded.active,
                            active_daily: folded.active_daily,
                            signups: folded.signups,
                            sessions,
                        })
                    })
                    .collect()
            })
            .collect();
        BreakdownsSummary { dimensions }
    }

    fn merge(into: &mut BreakdownsSummary, other: BreakdownsSummary, rules: &Rules) {
        merge_by_value(&mut into.dimensions, other.dimensions, |mine, theirs| {
            merge_held_value(mine, theirs, rules.shape)
        });
    }

    fn estimated_bytes(state: &BreakdownsState, cache: &BreakdownsCache) -> usize {
        let days = state
            .days
            .iter()
            .flat_map(|(_, day)| day.iter().flatten().flatten())
            .map(ActivityDay::estimated_bytes)
            .sum::<usize>();
        let past = cache
            .values
            .iter()
            .flatten()
            .flatten()
            .map(PastSketches::estimated_bytes)
            .sum::<usize>();
        let session_days = state
            .session_days
            .iter()
            .flat_map(|(_, day)| day.iter().flatten())
            .chain(cache.sessions.iter().flatten().flatten())
            .map(|stats| stats.durations.estimated_bytes())
            .sum::<usize>();
        days + past + session_days
    }

    fn check(state: &BreakdownsState, counts: &mut Vec<u64>) -> Result<(), String> {
        let stats = state
            .session_days
            .iter()
            .flat_map(|(_, d)| d.iter().flatten());
        counts.extend(stats.flat_map(SessionStats::counts));
        Ok(())
    }

    fn section(summaries: &[Summary], _: &Sections, cx: &SectionContext<'_>) -> BreakdownsSection {
        let mut section = BreakdownsSection::default();
        for (position, registry) in cx.router.dimensions.dimensions.iter().enumerate() {
            let values = value_ids(registry, summaries, position)
                .map(|id| {
                    let of = || value_summaries(summaries, position, id);
                    let mut kpis = value_kpis(of, cx.shape);
                    kpis.features = value_features(summaries, position, id, &kpis.active_users, cx);
                    (registry.value(id).to_owned(), kpis)
                })
                .collect();
            section.dimensions.insert(registry.name.clone(), values);
            section
                .dimension_overflow_events
                .insert(registry.name.clone(), registry.overflow_events);
        }
        section
    }

    fn series(sections: &Sections, out: &mut dyn SeriesOut) {
        let s = &sections.breakdowns;
        for (dimension, values) in &s.dimensions {
            for (value, k) in values {
                for (def, windows) in [
                    (&DIMENSION_ACTIVE_USERS, &k.active_users),
                    (&DIMENSION_ACTIVE_USERS_PREVIOUS, &k.active_users_previous),
                    (&DIMENSION_NEW_USERS, &k.new_users),
                ] {
                    for (window, v) in windows.labelled() {
                        out.sample(def, &[dimension, value, window], *v as f64);
                    }
                }
                for (window, s) in k.sessions.labelled() {
                    let labels = [dimension.as_str(), value.as_str(), window];
                    out.sample(&DIMENSION_SESSIONS, &labels, s.count as f64);
                    out.sample(
                        &DIMENSION_SESSION_DURATION_AVG_SECONDS,
                        &labels,
                        s.avg_duration_seconds,
                    );
                    out.sample(
                        &DIMENSION_SESSION_DURATION_QUANTILE_SECONDS,
                        &[dimension, value, window, "0.5"],
                        s.p50_duration_seconds,
                    );
                    out.sample(&DIMENSION_SESSION_BOUNCE_RATIO, &labels, s.bounce_rate);
                    out.sample(&DIMENSION_SESSION_EVENTS_AVG, &labels, s.events_per_session);
                }
                let r = &k.stickiness;
                for (ratio, v) in [
                    ("dau_mau", r.dau_mau),
                    ("dau_wau", r.dau_wau),
                    ("wau_mau", r.wau_mau),
                ] {
                    out.sample(&DIMENSION_STICKINESS_RATIO, &[dimension, value, ratio], v);
                }
            }
        }
        for (dimension, events) in &s.dimension_overflow_events {
            out.sample(&DIMENSION_OVERFLOW_EVENTS, &[dimension], *events as f64);
        }
    }

    fn rollups(sections: &Sections, summaries: &[Summary], out: &mut RollupOut<'_>) {
        let windows: Vec<usize> = out.windows().collect();
        let router = out.cx.router;
        for (position, registry) in router.dimensions.dimensions.iter().enumerate() {
            let Some(values) = sections.breakdowns.dimensions.get(&registry.name) else {
                continue;
            };
            for id in value_ids(registry, summaries, position) {
                let value = registry.value(id);
                let Some(kpis) = values.get(value) else {
                    continue;
                };
                let dimensions = [("dimension", registry.name.as_str()), ("value", value)];
                // The day's distinct users carrying the value, across partitions.
                let day_sketch = (out.sketches && windows.contains(&0))
                    .then(|| {
                        let days = value_summaries(summaries, position, id)
                            .filter_map(|v| v.active.current[0].as_ref());
                        day_union(out.shape, days)
                    })
                    .flatten();
                for &w in &windows {
                    // A value nobody carried in the window has no record (as for features).
                    if *kpis.active_users.get(w) == 0 {
                        continue;
                    }
                    let s = kpis.sessions.get(w);
                    // Sessions are those the sessions family rolls up, by first event's value.
                    for (metric, value, sketch) in [
                        (
                            "dimension_active_users",
                            *kpis.active_users.get(w) as f64,
                            day_sketch.as_ref(),
                        ),
                        ("dimension_new_users", *kpis.new_users.get(w) as f64, None),
                        ("dimension_sessions", s.count as f64, None),
                        (
                            "dimension_session_duration_avg_seconds",
                            s.avg_duration_seconds,
                            None,
                        ),
                        (
                            "dimension_session_duration_p50_seconds",
                            s.p50_duration_seconds,
                            None,
                        ),
                        ("dimension_bounce_rate", s.bounce_rate, None),
                        ("dimension_events_per_session", s.events_per_session, None),
                    ] {
                        out.push(RollupValue {
                            metric,
                            window: w,
                            dimensions: &dimensions,
                            value,
                            sketch,
                        });
                    }
                }
            }
        }
    }
}

impl BreakdownsState {
    /// How many sessions closed into each day before `at`'s today that a window holds.
    fn closed_before(&self, at: SummaryPoint) -> Vec<u64> {
        let days = at.days().take(WINDOWS[2]).skip(1);
        days.map(|day| {
            let first = self.session_days.get(day).and_then(|d| d.first());
            first.map_or(0, |values| values.iter().map(|s| s.count).sum())
        })
        .collect()
    }

    /// Counts the sessions the sessions family closed (and empties `closed`) on the day each
    /// started, under its first event's value in every dimension.
    fn record_sessions(&mut self, closed: &mut ClosedByValue) {
        let dimensions = self.keys.len();
        for session in closed.drain(..) {
            let Some(day) = self
                .session_days
                .get_or_insert_with(session.start_day, Vec::new)
            else {
                self.dropped += 1;
                continue;
            };
            day.resize_with(dimensions, Vec::new);
            for (values, id) in day.iter_mut().zip(session.tag) {
                let index = usize::from(id);
                if values.len() <= index {
                    values.resize_with(index + 1, SessionStats::default);
                }
                values[index].record(&session);
            }
        }
    }
}

/// Where each configured dimension (by its key) was saved, if it was: a restored state
/// follows its dimensions when the configuration adds, drops or reorders them.
pub(crate) fn moved_from(saved: &[u64], keys: &[u64]) -> Vec<Option<usize>> {
    keys.iter()
        .map(|key| saved.iter().position(|k| k == key))
        .collect()
}

/// How many value ids of the dimension at `position` some day holds: per-value vectors grow
/// on first use, so a day holds ids up to the highest it saw.
pub(crate) fn ids_held<T>(days: &[Option<&Vec<Vec<T>>>], position: usize) -> usize {
    days.iter()
        .flatten()
        .filter_map(|d| Some(d.get(position)?.len()))
        .max()
        .unwrap_or(0)
}

/// `into` takes in `other`, both per dimension position and per value id: `merge` for the
/// ids both hold, the rest as they are.
pub(crate) fn merge_by_value<T: Default>(
    into: &mut Vec<Vec<T>>,
    other: Vec<Vec<T>>,
    mut merge: impl FnMut(&mut T, T),
) {
    if into.len() < other.len() {
        into.resize_with(other.len(), Vec::new);
    }
    for (mine, theirs) in into.iter_mut().zip(other) {
        if mine.len() < theirs.len() {
            mine.resize_with(theirs.len(), T::default);
        }
        for (mine, theirs) in mine.iter_mut().zip(theirs) {
            merge(mine, theirs);
        }
    }
}

/// A day's per-dimension vectors re-ordered for the dimensions now configured: position
/// `i` takes what was saved at `from[i]`, or starts empty.
pub(crate) fn by_key<T: Default>(mut saved: Vec<T>, from: &[Option<usize>]) -> Vec<T> {
    from.iter()
        .map(|at| {
            at.and_then(|at| saved.get_mut(at).map(std::mem::take))
                .unwrap_or_default()
        })
        .collect()
}

fn merge_value(mine: &mut ValueSummary, theirs: ValueSummary, shape: SketchShape) {
    for (mine, theirs) in mine.sessions.iter_mut().zip(&theirs.sessions) {
        mine.merge(theirs);
    }
    mine.active.merge(theirs.active, shape);
    mine.signups.merge(theirs.signups, shape);
    if mine.active_daily.len() < theirs.active_daily.len() {
        mine.active_daily.resize(theirs.active_daily.len(), None);
    }
    for (mine, theirs) in mine.active_daily.iter_mut().zip(theirs.active_daily) {
        crate::windows::merge_sketch(mine, theirs, shape);
    }
}

/// The ids of a dimension a snapshot shows: those some user carried in the 31 days held
/// (a tracked value, or a pool that was used).
fn value_ids<'a>(
    registry: &'a ValueRegistry,
    summaries: &'a [Summary],
    position: usize,
) -> impl Iterator<Item = ValueId> + 'a {
    registry
        .ids()
        .filter(move |id| value_summaries(summaries, position, *id).next().is_some())
}

/// Every summary's part for one value.
fn value_summaries(
    summaries: &[Summary],
    position: usize,
    id: ValueId,
) -> impl Iterator<Item = &ValueSummary> + Clone {
    summaries.iter().filter_map(move |s| {
        s.breakdowns
            .dimensions
            .get(position)?
            .get(usize::from(id))?
            .as_ref()
    })
}

fn value_kpis<'a, I>(of: impl Fn() -> I, shape: SketchShape) -> ValueKpis
where
    I: Iterator<Item = &'a ValueSummary> + Clone,
{
    let windows = |pick: &dyn Fn(&'a ValueSummary) -> &'a [Option<DistinctSketch>; 3]| {
        Windowed::from_fn(|w| union_estimate(shape, of().filter_map(|v| pick(v)[w].as_ref())))
    };
    let active_users_previous = windows(&|v| &v.active.previous);
    let daily = of().map(|v| v.active_daily.as_slice());
    let active_users = windows(&|v| &v.active.current);
    let sessions = Windowed::from_fn(|w| {
        let mut stats = SessionStats::default();
        of().for_each(|v| stats.merge(&v.sessions[w]));
        session_kpis(&stats, *active_users.get(w))
    });
    ValueKpis {
        active_users,
        sessions,
        stickiness: ratios(shape, daily, &active_users_previous),
        active_users_previous,
        new_users: windows(&|v| &v.signups.current),
        features: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::dimensions::DimensionSettings;
    use crate::{Engine, EngineSettings, EngineState};

    const WALL: i64 = 1_900_000_000_000;
    /// 2026-03-01T00:00:00Z.
    const T0: i64 = 1_772_323_200_000;
    const MINUTE: i64 = 60_000;

    fn login(engine: &mut Engine, user: &str, ts: i64) {
        let line = format!(r#"{{"user_id":"{user}","event":"login","ts":{ts},"platform":"web"}}"#);
        engine.ingest(line.as_bytes(), None);
    }

    #[test]
    fn kept_past_sessions_follow_a_session_closing_into_yesterday() {
        let settings = EngineSettings {
            dimensions: vec![DimensionSettings {
                name: "platform".into(),
                paths: vec!["/platform".into()],
                max_values: 5,
            }],
            ..EngineSettings::default()
        };
        let mut engine = Engine::new(settings.clone(), WALL);
        login(&mut engine, "a", T0 - 5 * MINUTE);
        login(&mut engine, "b", T0 + MINUTE);
        let web = |engine: &mut Engine| {
            let snapshot = engine.snapshot();
            snapshot.kpis.breakdowns.dimensions["platform"]["web"].sessions
        };
        assert_eq!(web(&mut engine).d7.count, 0, "a's session is still open");
        // Today stays today; the watermark passes a's session, which started yesterday.
        login(&mut engine, "c", T0 + 60 * MINUTE);
        let kept = web(&mut engine);
        assert_eq!((kept.d1.count, kept.d7.count), (1, 2), "b today, and a");
        let state = EngineState::from_bytes(&engine.state().to_bytes()).unwrap();
        let mut afresh = Engine::restore(settings, WALL, state);
        assert_eq!(kept, web(&mut afresh));
    }
}
