//! Funnels and time to value: the conversion funnels configured under `[[funnels]]` and the
//! time from signup to the first value event (`[time_to_value]`), live from the stream.
//!
//! The rule (README "Funnels"): per user, events in time order; every event matching step 1
//! starts an attempt with deadline entry + window; for each step the most recent attempt
//! that reached it is kept, and an event matching step i+1 advances the attempt kept for
//! step i if it is within the deadline (an attempt advances at most one step per event,
//! and never twice from the same step). An attempt belongs to the day of its entry.
//!
//! Per partition: per user, the kept attempts of each funnel entered — O(steps), dropped
//! once none can advance — and a day ring, by entry day, of an HLL of the users who reached each step,
//! the exact count of conversions and duration histograms (the sessions' 0.5 % log
//! histogram, nearest rank). Time to value keeps each user's signups of the last 30 days
//! with the time of the first value event after each; its figures are exact and add across
//! partitions because a user lives in one partition.
//!
//! The decision a newcomer would question: matching events are not applied on arrival but
//! held until the watermark says no earlier event of the stream can still come (the
//! allowed lateness, as sessions), then applied in time order. The rule is about time
//! order, and an event arriving a minute late may well be the step that an attempt needed
//! first; holding them makes the answer the same for any arrival order within the
//! lateness, on any number of partitions. The figures therefore trail the newest events
//! by the allowed lateness (the end of a replay applies everything).

use std::collections::{BTreeMap, HashMap, VecDeque};

use foldhash::fast::FixedState;

use serde::{Deserialize, Serialize};

use crate::event::{EventKind, PartitionEvent};
use crate::families::sessions::ClosedByValue;
use crate::families::{Family, Sections, Summary};
use crate::family::{RollupOut, RollupValue, Rules, SectionContext, SeriesDef, SeriesOut};
use crate::family::{WINDOW, counter, gauge};
use crate::funnel_rules::{FunnelRules, StepTags};
use crate::histogram::DurationHistogram;
use crate::ring::DayRing;
use crate::settings::HllWidth;
use crate::sketch::{DistinctSketch, DistinctUnion, SketchShape, UserHash};
use crate::time::Day;
use crate::windows::{SummaryPoint, WINDOWS, Windowed, merge_sketch, ratio, union_estimate};

#[derive(Debug)]
pub struct Funnels;

/// `Default` is the state of a family absent from an older image: empty, given its ring by
/// `restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FunnelsState {
    /// Matching events not yet final, in (time, arrival) order (see the module header).
    /// Events come nearly in order, so an arrival is placed from the back in a step or two.
    pending: VecDeque<Pending>,
    /// Arrivals so far: equal times are applied in arrival order.
    arrivals: u64,
    /// By user key: one look-up per event whatever the number of funnels (a map keyed by
    /// user and funnel cost a search per funnel; it was most of the family's time).
    users: HashMap<u64, UserFunnels, FixedState>,
    days: DayRing<FunnelDay>,
    /// The newest time applied: no later event applied can be earlier.
    applied_ms: i64,
    /// The day expiry last ran for.
    expired_day: Day,
    /// Matching events later than the allowed lateness: counted, not applied.
    late: u64,
    /// Advances whose entry day had left the ring (should stay 0).
    dropped: u64,
    /// The funnels (name and number of steps) the state was built for: a restored state
    /// built for other funnels starts afresh (see `restore`).
    shape: Vec<(String, usize)>,
}

/// What one user has in progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserFunnels {
    /// The funnels entered (by position), each with the attempt kept for each step.
    attempts: Vec<(u8, Box<[Option<Kept>]>)>,
    /// Signups of the last 30 days, in time order (time to value).
    signups: Vec<Signup>,
}

/// A matching event waiting to become final.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    ts_ms: i64,
    arrival: u64,
    key: u64,
    user: OneUser,
    day: Day,
    kind: EventKind,
    tags: StepTags,
}

/// A user's HLL coupon, which DataSketches neither exposes nor rebuilds from bytes: it is
/// saved as a sketch of that one user, and a restored one joins day sketches by union.
#[derive(Debug, Clone)]
enum OneUser {
    Hash(UserHash),
    /// Boxed: rare, and it keeps a waiting event small.
    Restored(Box<DistinctSketch>),
}

/// Lists only one coupon, whatever `lg_k`; the largest keeps a union at its size.
const ONE_USER_SHAPE: SketchShape = SketchShape {
    lg_k: 21,
    width: HllWidth::Hll8,
};

impl OneUser {
    fn sketch(&self) -> DistinctSketch {
        match self {
            OneUser::Hash(user) => {
                let mut sketch = DistinctSketch::new(ONE_USER_SHAPE);
                sketch.insert(user);
                sketch
            }
            OneUser::Restored(sketch) => (**sketch).clone(),
        }
    }

    fn insert_into(&self, into: &mut DistinctSketch, shape: SketchShape) {
        match self {
            OneUser::Hash(user) => into.insert(user),
            OneUser::Restored(one) => {
                let mut union = DistinctUnion::new(shape);
                union.add(into);
                union.add(one);
                *into = union.to_sketch();
            }
        }
    }
}

impl Serialize for OneUser {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.sketch().serialize(s)
    }
}

impl<'de> Deserialize<'de> for OneUser {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OneUser, D::Error> {
        DistinctSketch::deserialize(d).map(|sketch| OneUser::Restored(Box::new(sketch)))
    }
}

/// The attempt kept for a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Kept {
    entry_ms: i64,
    entry_day: Day,
    /// When it reached this step.
    reached_ms: i64,
    /// Whether it went on from this step (it advances from a step once).
    advanced: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Signup {
    at_ms: i64,
    day: Day,
    /// The first value event within the window after it.
    value_ms: Option<i64>,
}

/// One entry day: per funnel, what its attempts reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FunnelDay {
    funnels: Vec<StepStats>,
}

/// The attempts of one funnel entered on one day (or in one window, summed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Users who reached each step.
    pub users: Vec<Option<DistinctSketch>>,
    pub completions: u64,
    /// Entry → last step, of every conversion.
    pub to_convert: DurationHistogram,
    /// Step i → step i+1, of every advance to step i+1.
    pub steps: Vec<DurationHistogram>,
}

impl StepStats {
    fn new(steps: usize) -> StepStats {
        StepStats {
            users: vec![None; steps],
            completions: 0,
            to_convert: DurationHistogram::default(),
            steps: vec![DurationHistogram::default(); steps - 1],
        }
    }

    fn merge(&mut self, other: &StepStats, shape: SketchShape) {
        if self.users.len() < other.users.len() {
            *self = StepStats::new(other.users.len());
        }
        for (mine, theirs) in self.users.iter_mut().zip(&other.users) {
            merge_sketch(mine, theirs.clone(), shape);
        }
        self.completions += other.completions;
        self.to_convert.merge(&other.to_convert);
        for (mine, theirs) in self.steps.iter_mut().zip(&other.steps) {
            mine.merge(theirs);
        }
    }
}

/// The time to value of the users who signed up in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueStats {
    pub signups: u64,
    pub activated: u64,
    pub durations: DurationHistogram,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FunnelsSummary {
    /// The funnels' names, in configured order (empty without funnels).
    pub names: Vec<String>,
    /// By funnel, by [`WINDOWS`] position.
    pub funnels: Vec<[StepStats; 3]>,
    /// By [`WINDOWS`] position; `None` without a time to value.
    pub time_to_value: Option<[ValueStats; 3]>,
    pub late: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50_seconds: f64,
    pub p90_seconds: f64,
}

/// One funnel over one window of entry days.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunnelKpis {
    /// Distinct users with an attempt entered in the window that reached each step.
    pub users: Vec<u64>,
    pub conversion: f64,
    pub step_conversion: Vec<f64>,
    pub completions: u64,
    pub time_to_convert: Quantiles,
    /// Median time from step i to step i+1.
    pub step_seconds_p50: Vec<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeToValueKpis {
    pub signups: u64,
    pub activated: u64,
    pub rate: f64,
    pub p50_seconds: f64,
    pub p90_seconds: f64,
}

/// Absent from the snapshot when nothing is configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunnelsSection {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub funnels: BTreeMap<String, Windowed<FunnelKpis>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_value: Option<Windowed<TimeToValueKpis>>,
    /// Matching events too late to take part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funnel_late_events: Option<u64>,
}

const FUNNEL_WINDOW: &[&str] = &["funnel", "window"];

pub const FUNNEL_USERS: SeriesDef = gauge(
    "pulse_funnel_users",
    &["funnel", "step", "window"],
    "Distinct users with an attempt entered in the window that reached the step (1-based).",
);
pub const FUNNEL_CONVERSION_RATIO: SeriesDef = gauge(
    "pulse_funnel_conversion_ratio",
    FUNNEL_WINDOW,
    "Users who reached the last step over users who entered, of attempts entered in the window.",
);
pub const FUNNEL_COMPLETIONS: SeriesDef = gauge(
    "pulse_funnel_completions",
    FUNNEL_WINDOW,
    "Conversions (attempts taken to the last step) of attempts entered in the window.",
);
pub const FUNNEL_TIME_TO_CONVERT_SECONDS: SeriesDef = gauge(
    "pulse_funnel_time_to_convert_seconds",
    &["funnel", "window", "q"],
    "Nearest-rank quantile q of entry → last step over the conversions (within 0.5 %).",
);
pub const TIME_TO_VALUE_SECONDS: SeriesDef = gauge(
    "pulse_time_to_value_seconds",
    &["window", "q"],
    "Nearest-rank quantile q of signup → first value event of the activated users (within 0.5 %).",
);
pub const ACTIVATION_RATIO: SeriesDef = gauge(
    "pulse_activation_ratio",
    WINDOW,
    "Users who signed up in the window and reached the value event in time, over those who signed up.",
);
pub const FUNNEL_LATE_EVENTS: SeriesDef = counter(
    "pulse_funnel_late_events_total",
    &[],
    "Events matching a funnel step that came later than the allowed lateness and took no part.",
);

impl FunnelsState {
    /// Applies the pending events before `before_ms` (all of them for `None`), in time order.
    fn apply_final(&mut self, before_ms: Option<i64>, rules: &Rules) {
        while let Some(next) = self.pending.front() {
            if before_ms.is_some_and(|before| next.ts_ms >= before) {
                break;
            }
            let Some(event) = self.pending.pop_front() else {
                break;
            };
            self.apply_one(&event, rules);
        }
    }

    fn apply_one(&mut self, event: &Pending, rules: &Rules) {
        let funnels = &rules.funnels;
        self.applied_ms = self.applied_ms.max(event.ts_ms);
        if event.day > self.expired_day {
            self.expire(event.day, funnels);
        }
        let ts = event.ts_ms;
        let is_signup = event.kind == EventKind::Signup && funnels.time_to_value.is_some();
        let masks = funnels.masks(event.kind, event.tags);
        // A user gets a record on entering a funnel or signing up only: later steps alone
        // advance nothing.
        let user = match self.users.get_mut(&event.key) {
            Some(user) => user,
            None if is_signup || masks.iter().any(|m| m & 1 != 0) => {
                self.users.entry(event.key).or_default()
            }
            None => return,
        };
        for ((f, funnel), &mask) in funnels.funnels.iter().enumerate().zip(&masks) {
            if mask == 0 {
                continue;
            }
            let n = funnel.steps.len();
            let kept = match user.attempts.iter().position(|(g, _)| usize::from(*g) == f) {
                Some(at) => &mut user.attempts[at].1,
                None if mask & 1 != 0 => {
                    // Exactly: a first push would reserve four (memory per user).
                    user.attempts.reserve_exact(1);
                    user.attempts
                        .push((f as u8, vec![None; n].into_boxed_slice()));
                    &mut user.attempts.last_mut().expect("just pushed").1
                }
                None => continue,
            };
            // Last step first: an attempt this event advances goes no further on it.
            for i in (1..n).rev() {
                let Some(from) = kept[i - 1] else { continue };
                if mask & (1 << i) == 0 || from.advanced || ts > from.entry_ms + funnel.window_ms {
                    continue;
                }
                if let Some(k) = kept[i - 1].as_mut() {
                    k.advanced = true;
                }
                kept[i] = Some(Kept {
                    reached_ms: ts,
                    advanced: false,
                    ..from
                });
                let Some(stats) = day_stats(&mut self.days, from.entry_day, f, n) else {
                    self.dropped += 1;
                    continue;
                };
                insert(&mut stats.users[i], &event.user, rules.shape);
                stats.steps[i - 1].record(ts - from.reached_ms);
                if i == n - 1 {
                    stats.completions += 1;
                    stats.to_convert.record(ts - from.entry_ms);
                }
            }
            // Advancing comes before starting, at the same time.
            if mask & 1 != 0 {
                kept[0] = Some(Kept {
                    entry_ms: ts,
                    entry_day: event.day,
                    reached_ms: ts,
                    advanced: false,
                });
                match day_stats(&mut self.days, event.day, f, n) {
                    Some(stats) => insert(&mut stats.users[0], &event.user, rules.shape),
                    None => self.dropped += 1,
                }
            }
        }
        if let Some((value, window_ms)) = funnels.time_to_value {
            if value.matches(event.kind, event.tags) {
                for signup in user.signups.iter_mut() {
                    if signup.value_ms.is_none() && ts <= signup.at_ms + window_ms {
                        signup.value_ms = Some(ts);
                    }
                }
            }
            if is_signup {
                user.signups.push(Signup {
                    at_ms: ts,
                    day: event.day,
                    value_ms: None,
                });
            }
        }
    }

    /// Drops what can no longer change a figure: attempts past every deadline (no event
    /// applied later is earlier than `applied_ms`) and signups older than every window.
    /// Runs once per day of event time.
    fn expire(&mut self, day: Day, funnels: &FunnelRules) {
        self.expired_day = day;
        let now = self.applied_ms;
        let oldest = day - (WINDOWS[2] as Day - 1);
        self.users.retain(|_, user| {
            user.attempts.retain(|(f, kept)| {
                let window = funnels
                    .funnels
                    .get(usize::from(*f))
                    .map_or(0, |f| f.window_ms);
                kept.iter().flatten().any(|k| k.entry_ms + window >= now)
            });
            user.signups.retain(|s| s.day >= oldest);
            !(user.attempts.is_empty() && user.signups.is_empty())
        });
    }

    /// Time to value over the windows ending `today`, from each user's first signup in it.
    fn value_stats(&self, today: Day) -> [ValueStats; 3] {
        let mut stats: [ValueStats; 3] = Default::default();
        for signups in self.users.values().map(|u| &u.signups) {
            for (w, length) in WINDOWS.iter().enumerate() {
                let first = today - (*length as Day - 1);
                let Some(signup) = signups.iter().find(|s| (first..=today).contains(&s.day)) else {
                    continue;
                };
                let stats = &mut stats[w];
                stats.signups += 1;
                if let Some(value_ms) = signup.value_ms {
                    stats.activated += 1;
                    stats.durations.record(value_ms - signup.at_ms);
                }
            }
        }
        stats
    }
}

/// The stats of funnel `f` (of `steps` steps) for the attempts entered on `day`.
fn day_stats(
    days: &mut DayRing<FunnelDay>,
    day: Day,
    f: usize,
    steps: usize,
) -> Option<&mut StepStats> {
    let entry = days.get_or_insert_with(day, FunnelDay::default)?;
    if entry.funnels.len() <= f {
        entry.funnels.resize_with(f + 1, StepStats::default);
    }
    let stats = &mut entry.funnels[f];
    if stats.users.len() != steps {
        *stats = StepStats::new(steps);
    }
    Some(stats)
}

fn insert(sketch: &mut Option<DistinctSketch>, user: &OneUser, shape: SketchShape) {
    user.insert_into(
        sketch.get_or_insert_with(|| DistinctSketch::new(shape)),
        shape,
    );
}

fn funnel_shape(rules: &FunnelRules) -> Vec<(String, usize)> {
    rules
        .funnels
        .iter()
        .map(|f| (f.name.clone(), f.steps.len()))
        .collect()
}

impl Family for Funnels {
    type State = FunnelsState;
    type Cache = ();
    type Summary = FunnelsSummary;
    type Section = FunnelsSection;

    const SERIES: &'static [SeriesDef] = &[
        FUNNEL_USERS,
        FUNNEL_CONVERSION_RATIO,
        FUNNEL_COMPLETIONS,
        FUNNEL_TIME_TO_CONVERT_SECONDS,
        TIME_TO_VALUE_SECONDS,
        ACTIVATION_RATIO,
        FUNNEL_LATE_EVENTS,
    ];

    fn new_state(rules: &Rules) -> FunnelsState {
        FunnelsState {
            days: DayRing::new(rules.retention_days),
            shape: funnel_shape(&rules.funnels),
            ..FunnelsState::default()
        }
    }

    fn restore(state: &mut FunnelsState, rules: &Rules) {
        let shape = funnel_shape(&rules.funnels);
        if state.shape != shape {
            // Funnels renamed, reordered or re-stepped: their attempts and days would be
            // read as another funnel's. The signups (time to value) do not depend on them.
            state.users.values_mut().for_each(|u| u.attempts.clear());
            state.days = DayRing::new(rules.retention_days);
            state.shape = shape;
        }
        state.days.fit(rules.retention_days);
    }

    fn apply(state: &mut FunnelsState, _: &mut (), event: &PartitionEvent, rules: &Rules) {
        let funnels = &rules.funnels;
        // Nothing configured, or nothing it matches: the common case costs a comparison.
        if funnels.is_empty() || !funnels.takes_part(event.kind, event.tags) {
            return;
        }
        if !event.sessionize {
            state.late += 1;
            return;
        }
        state.arrivals += 1;
        let pending = Pending {
            ts_ms: event.ts_ms,
            arrival: state.arrivals,
            key: event.user.key,
            user: OneUser::Hash(event.user),
            day: event.day,
            kind: event.kind,
            tags: event.tags,
        };
        // Arrival order is increasing: only the time decides the place, nearly always the end.
        let later = state
            .pending
            .iter()
            .rev()
            .take_while(|p| p.ts_ms > pending.ts_ms)
            .count();
        if later == 0 {
            state.pending.push_back(pending);
        } else {
            state.pending.insert(state.pending.len() - later, pending);
        }
    }

    fn advance(state: &mut FunnelsState, watermark_ms: i64, rules: &Rules, _: &mut ClosedByValue) {
        // An event accepted from now on is at least this late (the router's rule).
        let final_before = watermark_ms.saturating_sub(rules.funnels.lateness_ms);
        state.apply_final(Some(final_before), rules);
    }

    fn close_all(state: &mut FunnelsState, rules: &Rules, _: &mut ClosedByValue) {
        state.apply_final(None, rules);
    }

    fn summarize(
        state: &FunnelsState,
        _: &mut (),
        at: SummaryPoint,
        rules: &Rules,
    ) -> FunnelsSummary {
        let shape = rules.shape;
        let funnels = rules
            .funnels
            .funnels
            .iter()
            .enumerate()
            .map(|(f, funnel)| {
                let mut windows: [StepStats; 3] =
                    std::array::from_fn(|_| StepStats::new(funnel.steps.len()));
                let mut running = StepStats::new(funnel.steps.len());
                for (offset, day) in at.days().take(WINDOWS[2]).enumerate() {
                    if let Some(stats) = state.days.get(day).and_then(|d| d.funnels.get(f)) {
                        running.merge(stats, shape);
                    }
                    if let Some(w) = WINDOWS.iter().position(|w| *w == offset + 1) {
                        windows[w] = running.clone();
                    }
                }
                windows
            })
            .collect();
        FunnelsSummary {
            names: rules
                .funnels
                .funnels
                .iter()
                .map(|f| f.name.clone())
                .collect(),
            funnels,
            time_to_value: rules
                .funnels
                .time_to_value
                .map(|_| state.value_stats(at.today)),
            late: state.late,
        }
    }

    fn merge(into: &mut FunnelsSummary, other: FunnelsSummary, rules: &Rules) {
        Self::merge_summary(into, &other, rules.shape);
    }

    fn estimated_bytes(state: &FunnelsState, _: &()) -> usize {
        // A map slot, the user's two lists and what they hold.
        let users = state
            .users
            .values()
            .map(|u| {
                let kept = u.attempts.iter().map(|(_, k)| k.len()).sum::<usize>();
                std::mem::size_of::<(u64, UserFunnels)>()
                    + u.attempts.len() * std::mem::size_of::<(u8, Box<[Option<Kept>]>)>()
                    + kept * std::mem::size_of::<Option<Kept>>()
                    + u.signups.len() * std::mem::size_of::<Signup>()
            })
            .sum::<usize>();
        let sketches = state
            .days
            .iter()
            .flat_map(|(_, d)| &d.funnels)
            .flat_map(|s| s.users.iter().flatten())
            .map(DistinctSketch::estimated_bytes)
            .sum::<usize>();
        users + sketches + state.pending.len() * std::mem::size_of::<Pending>()
    }

    fn check(state: &FunnelsState, counts: &mut Vec<u64>) -> Result<(), String> {
        let accepted_time = |ms: i64| jiff::Timestamp::from_millisecond(ms).is_ok();
        let kept_times = state.users.values().flat_map(|u| {
            u.attempts
                .iter()
                .flat_map(|(_, kept)| kept.iter().flatten())
        });
        let signup_times = state.users.values().flat_map(|u| {
            u.signups
                .iter()
                .flat_map(|s| std::iter::once(s.at_ms).chain(s.value_ms))
        });
        // Deadlines are these times plus a window: out of range they would overflow.
        if !state.pending.iter().all(|p| accepted_time(p.ts_ms))
            || !kept_times
                .flat_map(|k| [k.entry_ms, k.reached_ms])
                .chain(signup_times)
                .all(accepted_time)
        {
            return Err(
                "a funnel attempt or signup holds an event time pulse never accepts".to_owned(),
            );
        }
        for (_, day) in state.days.iter() {
            for stats in &day.funnels {
                counts.push(stats.completions);
                counts.extend(stats.to_convert.counts());
                counts.extend(stats.steps.iter().flat_map(DurationHistogram::counts));
            }
        }
        counts.extend([state.late, state.arrivals]);
        Ok(())
    }

    fn section(summaries: &[Summary], _: &Sections, cx: &SectionContext<'_>) -> FunnelsSection {
        let mut total = FunnelsSummary::default();
        for summary in summaries {
            Self::merge_summary(&mut total, &summary.funnels, cx.shape);
        }
        let funnels = total
            .names
            .iter()
            .zip(&total.funnels)
            .map(|(name, windows)| {
                let kpis = Windowed::from_fn(|w| funnel_kpis(&windows[w], cx.shape));
                (name.clone(), kpis)
            })
            .collect();
        let time_to_value = total.time_to_value.as_ref().map(|windows| {
            Windowed::from_fn(|w| {
                let s = &windows[w];
                TimeToValueKpis {
                    signups: s.signups,
                    activated: s.activated,
                    rate: ratio(s.activated as f64, s.signups as f64),
                    p50_seconds: s.durations.quantile_ms(0.5) / 1000.0,
                    p90_seconds: s.durations.quantile_ms(0.9) / 1000.0,
                }
            })
        });
        let configured = !total.names.is_empty() || time_to_value.is_some();
        FunnelsSection {
            funnels,
            time_to_value,
            funnel_late_events: configured.then_some(total.late),
        }
    }

    fn series(sections: &Sections, out: &mut dyn SeriesOut) {
        let s = &sections.funnels;
        for (name, windows) in &s.funnels {
            for (window, k) in windows.labelled() {
                for (step, users) in k.users.iter().enumerate() {
                    let step = (step + 1).to_string();
                    out.sample(&FUNNEL_USERS, &[name, &step, window], *users as f64);
                }
                out.sample(&FUNNEL_CONVERSION_RATIO, &[name, window], k.conversion);
                out.sample(&FUNNEL_COMPLETIONS, &[name, window], k.completions as f64);
                let q = &k.time_to_convert;
                for (label, value) in [("0.5", q.p50_seconds), ("0.9", q.p90_seconds)] {
                    out.sample(
                        &FUNNEL_TIME_TO_CONVERT_SECONDS,
                        &[name, window, label],
                        value,
                    );
                }
            }
        }
        if let Some(ttv) = &s.time_to_value {
            for (window, k) in ttv.labelled() {
                out.sample(&ACTIVATION_RATIO, &[window], k.rate);
                for (label, value) in [("0.5", k.p50_seconds), ("0.9", k.p90_seconds)] {
                    out.sample(&TIME_TO_VALUE_SECONDS, &[window, label], value);
                }
            }
        }
        if let Some(late) = s.funnel_late_events {
            out.sample(&FUNNEL_LATE_EVENTS, &[], late as f64);
        }
    }

    fn rollups(sections: &Sections, _: &[Summary], out: &mut RollupOut<'_>) {
        let s = &sections.funnels;
        for w in out.windows().collect::<Vec<_>>() {
            for (name, windows) in &s.funnels {
                let k = windows.get(w);
                for (step, users) in k.users.iter().enumerate() {
                    let step = (step + 1).to_string();
                    out.push(RollupValue {
                        metric: "funnel_users",
                        window: w,
                        dimensions: &[("funnel", name), ("step", &step)],
                        value: *users as f64,
                        sketch: None,
                    });
                }
                for (metric, value) in [
                    ("funnel_conversion", k.conversion),
                    ("funnel_completions", k.completions as f64),
                    (
                        "funnel_time_to_convert_p50_seconds",
                        k.time_to_convert.p50_seconds,
                    ),
                ] {
                    out.push(RollupValue {
                        metric,
                        window: w,
                        dimensions: &[("funnel", name)],
                        value,
                        sketch: None,
                    });
                }
            }
            if let Some(ttv) = &s.time_to_value {
                let k = ttv.get(w);
                for (metric, value) in [
                    ("time_to_value_signups", k.signups as f64),
                    ("time_to_value_activated", k.activated as f64),
                    ("time_to_value_p50_seconds", k.p50_seconds),
                ] {
                    out.push(RollupValue {
                        metric,
                        window: w,
                        dimensions: &[],
                        value,
                        sketch: None,
                    });
                }
            }
        }
    }
}

impl Funnels {
    /// `into` takes in a copy of `other` (sections see summaries by reference).
    fn merge_summary(into: &mut FunnelsSummary, other: &FunnelsSummary, shape: SketchShape) {
        if into.names.is_empty() && into.time_to_value.is_none() {
            *into = other.clone();
            return;
        }
        for (mine, theirs) in into.funnels.iter_mut().zip(&other.funnels) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.merge(t, shape);
            }
        }
        if let (Some(mine), Some(theirs)) = (&mut into.time_to_value, &other.time_to_value) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.signups += t.signups;
                m.activated += t.activated;
                m.durations.merge(&t.durations);
            }
        }
        into.late += other.late;
    }
}

fn funnel_kpis(stats: &StepStats, shape: SketchShape) -> FunnelKpis {
    let users: Vec<u64> = stats
        .users
        .iter()
        .map(|s| union_estimate(shape, s.iter()))
        .collect();
    let first = users.first().copied().unwrap_or(0) as f64;
    let last = users.last().copied().unwrap_or(0) as f64;
    FunnelKpis {
        conversion: ratio(last, first),
        step_conversion: users
            .windows(2)
            .map(|pair| ratio(pair[1] as f64, pair[0] as f64))
            .collect(),
        users,
        completions: stats.completions,
        time_to_convert: Quantiles {
            p50_seconds: stats.to_convert.quantile_ms(0.5) / 1000.0,
            p90_seconds: stats.to_convert.quantile_ms(0.9) / 1000.0,
        },
        step_seconds_p50: stats
            .steps
            .iter()
            .map(|h| h.quantile_ms(0.5) / 1000.0)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::funnel_rules::{FunnelDef, StepMatch, TimeToValueDef};
    use crate::{Engine, EngineSettings, EngineState};

    const T0: i64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z
    const MIN: i64 = 60_000;

    fn kind(kind: &str) -> StepMatch {
        StepMatch {
            kind: Some(kind.into()),
            ..StepMatch::default()
        }
    }

    fn settings() -> EngineSettings {
        EngineSettings {
            funnels: vec![FunnelDef {
                name: "f".into(),
                window_ms: 60 * MIN,
                steps: vec![kind("login"), kind("page_view"), kind("page_view")],
            }],
            time_to_value: Some(TimeToValueDef {
                event: kind("page_view"),
                window_ms: 30 * MIN,
            }),
            ..EngineSettings::default()
        }
    }

    fn line(user: &str, event: &str, minute: i64) -> String {
        format!(
            r#"{{"user_id":"{user}","event":"{event}","ts":{}}}"#,
            T0 + minute * MIN
        )
    }

    fn feed(engine: &mut Engine, lines: &[String]) {
        for line in lines {
            engine.ingest(line.as_bytes(), None);
        }
    }

    #[test]
    fn one_step_per_event_deadlines_and_repeated_entries() {
        let mut engine = Engine::new(settings(), T0 + 86_400_000);
        feed(
            &mut engine,
            &[
                // u: one page view cannot take an attempt two steps; two conversions.
                line("u", "login", 0),
                line("u", "page_view", 1),
                line("u", "page_view", 2),
                line("u", "login", 10),
                line("u", "page_view", 11),
                line("u", "page_view", 12),
                // v: the second page view is past the deadline.
                line("v", "login", 20),
                line("v", "page_view", 25),
                line("v", "page_view", 81),
                // w: signs up; its value event comes too late for the window.
                line("w", "signup", 90),
                line("w", "page_view", 121),
            ],
        );
        engine.close_all_sessions();
        let snapshot = engine.snapshot();
        let funnel = &snapshot.kpis.funnels.funnels["f"].d1;
        assert_eq!(funnel.users, [2, 2, 1]);
        assert_eq!(funnel.completions, 2);
        assert_eq!(funnel.step_conversion, [1.0, 0.5]);
        let ttv = snapshot.kpis.funnels.time_to_value.as_ref().unwrap();
        assert_eq!((ttv.d1.signups, ttv.d1.activated), (1, 0));
    }

    #[test]
    fn a_checkpoint_keeps_what_was_still_waiting_for_the_watermark() {
        let lines = [
            line("u", "login", 0),
            line("u", "page_view", 1),
            line("u", "page_view", 2),
        ];
        let mut straight = Engine::new(settings(), T0 + 86_400_000);
        feed(&mut straight, &lines);
        straight.close_all_sessions();
        let mut first = Engine::new(settings(), T0 + 86_400_000);
        feed(&mut first, &lines[..2]);
        // Both events are within the lateness of the newest: neither is applied yet.
        let state = EngineState::from_bytes(&first.state().to_bytes()).unwrap();
        let mut resumed = Engine::restore(settings(), T0 + 86_400_000, state);
        feed(&mut resumed, &lines[2..]);
        resumed.close_all_sessions();
        let funnels = |e: &mut Engine| e.snapshot().kpis.funnels;
        assert_eq!(funnels(&mut resumed), funnels(&mut straight));
        assert_eq!(funnels(&mut straight).funnels["f"].d1.users, [1, 1, 1]);
    }

    #[test]
    fn a_restored_signup_time_no_stream_could_reach_makes_an_image_corrupt() {
        let mut engine = Engine::new(settings(), T0 + 86_400_000);
        feed(&mut engine, &[line("w", "signup", 0)]);
        engine.close_all_sessions();
        let mut state = engine.state();
        assert!(EngineState::from_bytes(&state.to_bytes()).is_ok());
        let funnels = &mut state.partitions[0].kpis.funnels;
        let user = funnels.users.values_mut().next().expect("w signed up");
        user.signups[0].at_ms = i64::MAX - 1;
        assert!(matches!(
            EngineState::from_bytes(&state.to_bytes()),
            Err(crate::StateError::Corrupt(_))
        ));
    }

    #[test]
    fn events_later_than_the_lateness_take_no_part_and_are_counted() {
        let mut engine = Engine::new(settings(), T0 + 86_400_000);
        feed(
            &mut engine,
            &[
                line("u", "login", 10),
                line("u", "page_view", 11),
                line("u", "login", 0),
                line("u", "search_performed", 1),
            ],
        );
        engine.close_all_sessions();
        let section = engine.snapshot().kpis.funnels;
        assert_eq!(section.funnel_late_events, Some(1), "only matching events");
        assert_eq!(section.funnels["f"].d1.users, [1, 1, 0]);
    }
}
