//! Stickiness: how often active users come back — mean DAU ÷ MAU, mean DAU ÷ WAU, and
//! WAU ÷ MAU, over complete days only (the windows ending yesterday), so the ratio does not
//! sag every morning while today is young.
//!
//! No state of its own: it reads the activity family's daily sketches and previous windows,
//! which is why it is listed after activity.

use serde::{Deserialize, Serialize};

use crate::event::PartitionEvent;
use crate::families::{Family, Sections, Summary};
use crate::family::{Rules, SectionContext, SeriesDef, SeriesOut, gauge};
use crate::sketch::{DistinctSketch, SketchShape};
use crate::windows::{SPAN, SummaryPoint, Windowed, ratio, union_estimate};

#[derive(Debug)]
pub struct Stickiness;

/// The ratios of one population (everyone, or the users of one breakdown value), from its
/// daily sketches in every summary (by offset from today) and its windows ending yesterday.
pub(crate) fn ratios<'a>(
    shape: SketchShape,
    daily: impl Iterator<Item = &'a [Option<DistinctSketch>]> + Clone,
    previous: &Windowed<u64>,
) -> StickinessRatios {
    // Complete days only: offsets 1..=7 and 1..=30 (yesterday and back).
    let daily: Vec<f64> = (0..SPAN)
        .map(|offset| {
            let days = daily.clone().filter_map(|d| d.get(offset)?.as_ref());
            union_estimate(shape, days) as f64
        })
        .collect();
    let mean = |days: usize| daily[1..=days].iter().sum::<f64>() / days as f64;
    let (week, month) = (previous.d7 as f64, previous.d30 as f64);
    StickinessRatios {
        dau_mau: ratio(mean(30), month),
        dau_wau: ratio(mean(7), week),
        wau_mau: ratio(week, month),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StickinessRatios {
    pub dau_mau: f64,
    pub dau_wau: f64,
    pub wau_mau: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StickinessSection {
    pub stickiness: StickinessRatios,
}

pub const STICKINESS_RATIO: SeriesDef = gauge(
    "pulse_stickiness_ratio",
    &["ratio"],
    "Stickiness over complete days ending yesterday: mean DAU / MAU, mean DAU / WAU, WAU / MAU.",
);

impl Family for Stickiness {
    type State = ();
    type Cache = ();
    type Summary = ();
    type Section = StickinessSection;

    const SERIES: &'static [SeriesDef] = &[STICKINESS_RATIO];

    fn new_state(_: &Rules) {}

    fn restore(_: &mut (), _: &Rules) {}

    fn apply(_: &mut (), _: &mut (), _: &PartitionEvent, _: &Rules) {}

    fn summarize(_: &(), _: &mut (), _: SummaryPoint, _: &Rules) {}

    fn merge(_: &mut (), _: (), _: &Rules) {}

    fn estimated_bytes(_: &(), _: &()) -> usize {
        0
    }

    fn section(
        summaries: &[Summary],
        earlier: &Sections,
        cx: &SectionContext<'_>,
    ) -> StickinessSection {
        let daily = summaries.iter().map(|s| s.activity.active_daily.as_slice());
        StickinessSection {
            stickiness: ratios(cx.shape, daily, &earlier.activity.active_users_previous),
        }
    }

    fn series(sections: &Sections, out: &mut dyn SeriesOut) {
        let s = &sections.stickiness.stickiness;
        out.sample(&STICKINESS_RATIO, &["dau_mau"], s.dau_mau);
        out.sample(&STICKINESS_RATIO, &["dau_wau"], s.dau_wau);
        out.sample(&STICKINESS_RATIO, &["wau_mau"], s.wau_mau);
    }
}
