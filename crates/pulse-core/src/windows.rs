//! KPI windows, and how a family of per-day sketches folds into them.
//!
//! A window is today plus the days before it (1, 7 or 30); its previous window ends
//! yesterday. Each partition folds its own day sketches into window unions when a snapshot
//! is taken ([`SketchWindows`]); the merge of partitions then only unions a handful of
//! sketches per family. Unions are associative, so the result equals unioning everything in
//! one place, to the last digit.
//!
//! The one decision to know: the union of the days *before* today, per window
//! ([`PastSketches`]), is kept between snapshots, so a window is the union of two sketches
//! (the past with today, or with the day just before its start for the previous window)
//! instead of a chain of up to thirty. In the usual case only today's bucket changes; any
//! write to an earlier day, or a new day, drops them. (At 10⁷ users and 200 features,
//! chaining every window at every refresh took longer than the default refresh interval.)

use serde::{Deserialize, Serialize};

use crate::sketch::{DistinctSketch, DistinctUnion, SketchShape};
use crate::time::Day;

/// One value per window, serialised under the keys `1d`, `7d`, `30d`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Windowed<T> {
    #[serde(rename = "1d")]
    pub d1: T,
    #[serde(rename = "7d")]
    pub d7: T,
    #[serde(rename = "30d")]
    pub d30: T,
}

impl<T> Windowed<T> {
    /// The value of each window from its [`WINDOWS`] position.
    pub fn from_fn(mut f: impl FnMut(usize) -> T) -> Windowed<T> {
        Windowed {
            d1: f(0),
            d7: f(1),
            d30: f(2),
        }
    }

    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Windowed<U> {
        Windowed {
            d1: f(&self.d1),
            d7: f(&self.d7),
            d30: f(&self.d30),
        }
    }

    /// The value of the window at [`WINDOWS`] position `w`.
    pub fn get(&self, w: usize) -> &T {
        match w {
            0 => &self.d1,
            1 => &self.d7,
            _ => &self.d30,
        }
    }

    /// (window label, value) pairs, for exporters.
    pub fn labelled(&self) -> [(&'static str, &T); 3] {
        [("1d", &self.d1), ("7d", &self.d7), ("30d", &self.d30)]
    }
}

/// Distinct active users over the trailing minutes, for fast alerting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Recent<T> {
    #[serde(rename = "5m")]
    pub m5: T,
    #[serde(rename = "1h")]
    pub h1: T,
}

impl<T> Recent<T> {
    /// (window label, value) pairs, for exporters.
    pub fn labelled(&self) -> [(&'static str, &T); 2] {
        [("5m", &self.m5), ("1h", &self.h1)]
    }
}

/// Lengths of the KPI windows, in days.
pub const WINDOWS: [usize; 3] = [1, 7, 30];
/// Days a summary looks at: the current 30-day window and the previous one (ending
/// yesterday).
pub const SPAN: usize = 31;
/// Lengths of the recent windows, in minutes.
pub const RECENT_MINUTES: [usize; 2] = [5, 60];

/// The instant a summary is taken at: today's day number and the current minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SummaryPoint {
    pub today: Day,
    /// Minutes since the epoch.
    pub now_minute: i64,
    /// Whether per-user families merge their users across partitions (users were found on
    /// several partitions at the last snapshot) rather than add their counts.
    pub merge_users: bool,
}

impl SummaryPoint {
    /// The days a summary reads, today first: `SPAN` of them.
    pub fn days(self) -> impl Iterator<Item = Day> {
        (0..SPAN).map(move |offset| self.today - offset as Day)
    }
}

/// Window unions of one sketch family (active users, signups or one feature).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SketchWindows {
    /// Unions over the windows ending today, by [`WINDOWS`] position.
    pub current: [Option<DistinctSketch>; 3],
    /// Unions over the windows ending yesterday, when asked for ([`Previous::Fold`]).
    pub previous: [Option<DistinctSketch>; 3],
}

/// Whether a family's windows ending yesterday are folded too. Only active users show
/// them; folding them for the others would cost as much again for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    Fold,
    Skip,
}

/// The unions of the days before today, by [`WINDOWS`] position (the one-day window has no
/// days before today), for one family.
#[derive(Debug, Clone, Default)]
pub struct PastSketches([Option<DistinctSketch>; 3]);

impl PastSketches {
    /// Chains unions from yesterday backwards; `days` are today first (see
    /// [`SummaryPoint::days`]).
    pub fn fold(days: &[Option<&DistinctSketch>], shape: SketchShape) -> PastSketches {
        let mut union = DistinctUnion::new(shape);
        let mut any = false;
        let mut before: [Option<DistinctSketch>; 3] = Default::default();
        let longest = WINDOWS[WINDOWS.len() - 1];
        for (offset, day) in days.iter().enumerate().take(longest).skip(1) {
            if let Some(sketch) = day {
                union.add(sketch);
                any = true;
            }
            // Days 1..=offset are in: that is what precedes today in a window of offset + 1.
            if let Some(w) = WINDOWS.iter().position(|w| *w == offset + 1) {
                before[w] = any.then(|| union.to_sketch());
            }
        }
        PastSketches(before)
    }

    pub fn estimated_bytes(&self) -> usize {
        self.0
            .iter()
            .flatten()
            .map(DistinctSketch::estimated_bytes)
            .sum()
    }
}

/// Kept between snapshots: whose past the sketches are (`None` when there are none).
#[derive(Debug, Clone, Default)]
pub struct PastFor {
    today: Option<Day>,
}

impl PastFor {
    /// Takes a write to `day` into account: a day before today changes the past.
    /// Returns whether the kept pasts are now void.
    pub fn note_write(&mut self, day: Day) -> bool {
        let void = self.today.is_some_and(|today| day < today);
        if void {
            self.today = None;
        }
        void
    }

    /// Whether the kept pasts were computed for `today`; if not, the caller recomputes them
    /// and this records that they now are.
    pub fn valid_for(&mut self, today: Day) -> bool {
        let valid = self.today == Some(today);
        self.today = Some(today);
        valid
    }
}

impl SketchWindows {
    /// The windows of one family: each the past before it, with today (current) or with the
    /// day just before its start (previous, the window ending yesterday). `days` are today
    /// first.
    pub fn fold(
        days: &[Option<&DistinctSketch>],
        past: &PastSketches,
        previous: Previous,
        shape: SketchShape,
    ) -> SketchWindows {
        let today = days[0];
        let mut windows = SketchWindows::default();
        for (w, length) in WINDOWS.iter().enumerate() {
            let before = past.0[w].as_ref();
            windows.current[w] = union_of(shape, [before, today]);
            if previous == Previous::Fold {
                windows.previous[w] = union_of(shape, [before, days[*length]]);
            }
        }
        windows
    }

    /// Takes `other` in: the windows of both partitions together.
    pub fn merge(&mut self, other: SketchWindows, shape: SketchShape) {
        let theirs = other.current.into_iter().chain(other.previous);
        for (mine, theirs) in self
            .current
            .iter_mut()
            .chain(&mut self.previous)
            .zip(theirs)
        {
            merge_sketch(mine, theirs, shape);
        }
    }
}

/// `mine` becomes the union of both.
pub fn merge_sketch(
    mine: &mut Option<DistinctSketch>,
    theirs: Option<DistinctSketch>,
    shape: SketchShape,
) {
    let Some(theirs) = theirs else { return };
    *mine = Some(match mine.take() {
        None => theirs,
        Some(held) => {
            let mut union = DistinctUnion::new(shape);
            union.add(&held);
            union.add(&theirs);
            union.to_sketch()
        }
    });
}

fn union_of(shape: SketchShape, sketches: [Option<&DistinctSketch>; 2]) -> Option<DistinctSketch> {
    let mut present = sketches.into_iter().flatten().peekable();
    present.peek()?;
    let mut union = DistinctUnion::new(shape);
    present.for_each(|sketch| union.add(sketch));
    Some(union.to_sketch())
}

/// The union estimate of some sketches, rounded to whole users so that ratios agree with
/// the counts shown beside them. Distinct counts always come from a union, even of one
/// sketch: the union's estimator depends only on the registers, so any split of users
/// across partitions gives the very same figure.
pub fn union_estimate<'a>(
    shape: SketchShape,
    sketches: impl Iterator<Item = &'a DistinctSketch>,
) -> u64 {
    let mut union = DistinctUnion::new(shape);
    sketches.for_each(|s| union.add(s));
    union.estimate().round() as u64
}

/// A ratio that is 0, not NaN, when nothing was measured.
pub fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}
