//! Activity: distinct active users over 1, 7 and 30 days (and the same windows ending
//! yesterday), new users (distinct users with a `signup`), and active users of the last 5
//! minutes and hour, for alerts that cannot wait for a day.
//!
//! Per partition: a day ring of two HyperLogLog sketches (everyone active that day, and
//! those who signed up) and a ring of 61 minute sketches. Windows are unions of days, the
//! previous windows the same unions one day earlier, so a user active on several days
//! counts once. Every accepted event is activity, late ones too.

use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::event::PartitionEvent;
use crate::families::{Family, Sections, Summary};
use crate::family::{RollupOut, RollupValue, Rules, SectionContext, SeriesDef, SeriesOut};
use crate::family::{WINDOW, gauge};
use crate::ring::DayRing;
use crate::sketch::{DistinctSketch, DistinctUnion, SketchShape};
use crate::time::Day;
use crate::windows::{
    PastFor, PastSketches, Previous, RECENT_MINUTES, Recent, SketchWindows, SummaryPoint, Windowed,
    merge_sketch,
};

#[derive(Debug)]
pub struct Activity;

/// Minute slots kept: the longest recent window (an hour) plus the minute in progress.
const MINUTE_SLOTS: usize = 61;

/// `Default` is the state of a family absent from an older image: empty, given its rings
/// by `restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActivityState {
    days: DayRing<ActivityDay>,
    /// Slot `minute mod len` holds that minute's bucket.
    minutes: Vec<Option<MinuteBucket>>,
    /// Writes that met a slot holding a newer day (should stay 0).
    dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityDay {
    pub active: DistinctSketch,
    pub signups: Option<DistinctSketch>,
}

/// Active users of one minute, for the recent windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MinuteBucket {
    /// Minutes since the epoch.
    minute: i64,
    active: DistinctSketch,
}

#[derive(Debug, Clone, Default)]
pub struct ActivityCache {
    past: PastFor,
    active: PastSketches,
    signups: PastSketches,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActivitySummary {
    pub active: SketchWindows,
    /// Active users of each day, by offset from today (`0..SPAN`): for stickiness.
    pub active_daily: Vec<Option<DistinctSketch>>,
    pub signups: SketchWindows,
    /// By [`RECENT_MINUTES`] position.
    pub recent: [Option<DistinctSketch>; 2],
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivitySection {
    pub active_users: Windowed<u64>,
    pub active_users_previous: Windowed<u64>,
    pub new_users: Windowed<u64>,
    pub recent_active_users: Recent<u64>,
}

pub const ACTIVE_USERS: SeriesDef = gauge(
    "pulse_active_users",
    WINDOW,
    "Distinct users with any accepted event in the window (today plus the 0, 6 or 29 days before).",
);
pub const ACTIVE_USERS_PREVIOUS: SeriesDef = gauge(
    "pulse_active_users_previous",
    WINDOW,
    "Distinct active users in the same window ending yesterday.",
);
pub const RECENT_ACTIVE_USERS: SeriesDef = gauge(
    "pulse_recent_active_users",
    WINDOW,
    "Distinct users with any accepted event in the trailing 5 minutes or hour.",
);
pub const NEW_USERS: SeriesDef = gauge(
    "pulse_new_users",
    WINDOW,
    "Distinct users with a signup event in the window.",
);

impl ActivityState {
    /// Whether `day` is held: every accepted event is activity, so this says whether the
    /// partition knows the day at all.
    pub fn holds(&self, day: Day) -> bool {
        self.days.get(day).is_some()
    }

    /// The day's sketches, if held.
    pub fn day(&self, day: Day) -> Option<&ActivityDay> {
        self.days.get(day)
    }

    fn minute(&self, minute: i64) -> Option<&DistinctSketch> {
        let slot = minute.rem_euclid(self.minutes.len() as i64) as usize;
        self.minutes[slot]
            .as_ref()
            .filter(|b| b.minute == minute)
            .map(|b| &b.active)
    }
}

impl Family for Activity {
    type State = ActivityState;
    type Cache = ActivityCache;
    type Summary = ActivitySummary;
    type Section = ActivitySection;

    const SERIES: &'static [SeriesDef] = &[
        ACTIVE_USERS,
        ACTIVE_USERS_PREVIOUS,
        RECENT_ACTIVE_USERS,
        NEW_USERS,
    ];

    fn new_state(rules: &Rules) -> ActivityState {
        ActivityState {
            days: DayRing::new(rules.retention_days),
            minutes: vec![None; MINUTE_SLOTS],
            dropped: 0,
        }
    }

    fn restore(state: &mut ActivityState, rules: &Rules) {
        state.days.fit(rules.retention_days);
        if state.minutes.len() != MINUTE_SLOTS {
            state.minutes = vec![None; MINUTE_SLOTS];
        }
    }

    fn apply(
        state: &mut ActivityState,
        cache: &mut ActivityCache,
        event: &PartitionEvent,
        rules: &Rules,
    ) {
        let shape = rules.shape;
        let minute = event.ts_ms.div_euclid(60_000);
        let slot = &mut state.minutes[minute.rem_euclid(MINUTE_SLOTS as i64) as usize];
        match slot {
            // Older than the hour the ring holds: only the day buckets need it.
            Some(bucket) if bucket.minute > minute => {}
            Some(bucket) if bucket.minute == minute => bucket.active.insert(&event.user),
            _ => {
                let mut active = DistinctSketch::new(shape);
                active.insert(&event.user);
                *slot = Some(MinuteBucket { minute, active });
            }
        }
        cache.past.note_write(event.day);
        let Some(day) = state
            .days
            .get_or_insert_with(event.day, || ActivityDay::new(shape))
        else {
            state.dropped += 1;
            return;
        };
        record_day(day, event, shape);
    }

    fn summarize(
        state: &ActivityState,
        cache: &mut ActivityCache,
        at: SummaryPoint,
        rules: &Rules,
    ) -> ActivitySummary {
        let shape = rules.shape;
        let days: Vec<Option<&ActivityDay>> = at.days().map(|d| state.days.get(d)).collect();
        let refresh = !cache.past.valid_for(at.today);
        let folded = fold_days(
            &days,
            [&mut cache.active, &mut cache.signups],
            refresh,
            shape,
        );
        let mut recent: [Option<DistinctSketch>; 2] = Default::default();
        let mut union = DistinctUnion::new(shape);
        let mut any = false;
        for age in 0..RECENT_MINUTES[1] {
            if let Some(sketch) = state.minute(at.now_minute - age as i64) {
                union.add(sketch);
                any = true;
            }
            if let Some(w) = RECENT_MINUTES.iter().position(|m| *m == age + 1) {
                recent[w] = any.then(|| union.to_sketch());
            }
        }
        ActivitySummary {
            active: folded.active,
            active_daily: folded.active_daily,
            signups: folded.signups,
            recent,
        }
    }

    fn merge(into: &mut ActivitySummary, other: ActivitySummary, rules: &Rules) {
        let shape = rules.shape;
        into.active.merge(other.active, shape);
        into.signups.merge(other.signups, shape);
        if into.active_daily.len() < other.active_daily.len() {
            into.active_daily.resize(other.active_daily.len(), None);
        }
        for (mine, theirs) in into.active_daily.iter_mut().zip(other.active_daily) {
            merge_sketch(mine, theirs, shape);
        }
        for (mine, theirs) in into.recent.iter_mut().zip(other.recent) {
            merge_sketch(mine, theirs, shape);
        }
    }

    fn estimated_bytes(state: &ActivityState, cache: &ActivityCache) -> usize {
        let days = state
            .days
            .iter()
            .map(|(_, d)| d.estimated_bytes())
            .sum::<usize>();
        let minutes = state
            .minutes
            .iter()
            .flatten()
            .map(|m| m.active.estimated_bytes())
            .sum::<usize>();
        days + minutes + cache.active.estimated_bytes() + cache.signups.estimated_bytes()
    }

    fn section(summaries: &[Summary], _: &Sections, cx: &SectionContext<'_>) -> ActivitySection {
        let shape = cx.shape;
        let windows = |pick: &dyn Fn(&Summary) -> &[Option<DistinctSketch>; 3]| {
            Windowed::from_fn(|w| {
                crate::windows::union_estimate(
                    shape,
                    summaries.iter().filter_map(|s| pick(s)[w].as_ref()),
                )
            })
        };
        let recent = |w: usize| {
            crate::windows::union_estimate(
                shape,
                summaries
                    .iter()
                    .filter_map(|s| s.activity.recent[w].as_ref()),
            )
        };
        ActivitySection {
            active_users: windows(&|s| &s.activity.active.current),
            active_users_previous: windows(&|s| &s.activity.active.previous),
            new_users: windows(&|s| &s.activity.signups.current),
            recent_active_users: Recent {
                m5: recent(0),
                h1: recent(1),
            },
        }
    }

    fn series(sections: &Sections, out: &mut dyn SeriesOut) {
        let s = &sections.activity;
        for (def, values) in [
            (&ACTIVE_USERS, &s.active_users),
            (&ACTIVE_USERS_PREVIOUS, &s.active_users_previous),
            (&NEW_USERS, &s.new_users),
        ] {
            for (window, v) in values.labelled() {
                out.sample(def, &[window], *v as f64);
            }
        }
        for (window, v) in s.recent_active_users.labelled() {
            out.sample(&RECENT_ACTIVE_USERS, &[window], *v as f64);
        }
    }

    fn rollups(sections: &Sections, summaries: &[Summary], out: &mut RollupOut<'_>) {
        let s = &sections.activity;
        // The day's distinct users, for warehouses to union over any range of days.
        let day_sketch = out.sketches.then(|| {
            let days = summaries
                .iter()
                .filter_map(|s| s.activity.active.current[0].as_ref());
            day_union(out.shape, days)
        });
        let day_sketch = day_sketch.flatten();
        for w in out.windows().collect::<Vec<_>>() {
            out.push(RollupValue {
                metric: "active_users",
                window: w,
                dimensions: &[],
                value: *s.active_users.get(w) as f64,
                sketch: day_sketch.as_ref(),
            });
            out.push(RollupValue {
                metric: "new_users",
                window: w,
                dimensions: &[],
                value: *s.new_users.get(w) as f64,
                sketch: None,
            });
        }
    }
}

/// One population's days folded into its windows: what a summary holds of it.
pub(crate) struct FoldedDays {
    pub active: SketchWindows,
    /// By offset from today (`0..SPAN`): for stickiness.
    pub active_daily: Vec<Option<DistinctSketch>>,
    pub signups: SketchWindows,
}

/// Folds the days of one population (everyone, or the users of one breakdown value), today
/// first, into its windows; `past` (active, signups) is recomputed when `refresh`, else
/// taken as it was kept.
pub(crate) fn fold_days(
    days: &[Option<&ActivityDay>],
    past: [&mut PastSketches; 2],
    refresh: bool,
    shape: SketchShape,
) -> FoldedDays {
    let active: Vec<Option<&DistinctSketch>> = days.iter().map(|d| d.map(|d| &d.active)).collect();
    let signups: Vec<Option<&DistinctSketch>> = days
        .iter()
        .map(|d| d.and_then(|d| d.signups.as_ref()))
        .collect();
    let [past_active, past_signups] = past;
    if refresh {
        *past_active = PastSketches::fold(&active, shape);
        *past_signups = PastSketches::fold(&signups, shape);
    }
    FoldedDays {
        active: SketchWindows::fold(&active, past_active, Previous::Fold, shape),
        active_daily: active.iter().map(|s| s.cloned()).collect(),
        signups: SketchWindows::fold(&signups, past_signups, Previous::Skip, shape),
    }
}

/// Records one event of `user` in its day: everyone's, or one breakdown value's.
pub(crate) fn record_day(day: &mut ActivityDay, event: &PartitionEvent, shape: SketchShape) {
    day.active.insert(&event.user);
    if event.kind == EventKind::Signup {
        day.signups
            .get_or_insert_with(|| DistinctSketch::new(shape))
            .insert(&event.user);
    }
}

impl ActivityDay {
    pub(crate) fn new(shape: SketchShape) -> ActivityDay {
        ActivityDay {
            active: DistinctSketch::new(shape),
            signups: None,
        }
    }

    pub(crate) fn estimated_bytes(&self) -> usize {
        std::iter::once(&self.active)
            .chain(self.signups.as_ref())
            .map(DistinctSketch::estimated_bytes)
            .sum()
    }
}

/// The union of some sketches, `None` if there are none.
pub(crate) fn day_union<'a>(
    shape: SketchShape,
    sketches: impl Iterator<Item = &'a DistinctSketch>,
) -> Option<DistinctSketch> {
    let mut sketches = sketches.peekable();
    sketches.peek()?;
    let mut union = DistinctUnion::new(shape);
    sketches.for_each(|s| union.add(s));
    Some(union.to_sketch())
}
