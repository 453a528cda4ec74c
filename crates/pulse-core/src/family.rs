//! [`Family`]: one KPI family, declared in one module.
//!
//! A family is everything pulse computes about one kind of KPI: how an event updates it,
//! what it keeps per partition, how two partitions' contributions merge, its part of the
//! JSON snapshot, its Prometheus series and its warehouse rollup records. The engine,
//! the snapshot builder, the exporter and the rollup writer know families only through
//! this trait and the one list in [`crate::families`], so adding a family is one module
//! and one line there (the recipe is in `ARCHITECTURE.md`).
//!
//! Why a trait with associated types and a generated list, not trait objects: the state
//! of every family of a partition lives inline in one struct that serialises as a whole,
//! events reach every family with no virtual call and no allocation, and each family's
//! snapshot section is a typed struct that serialises at the snapshot's top level.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::families::{Sections, Summary};
use crate::ingest::RouterState;
use crate::partition::PartitionEvent;
use crate::sessions::SessionRules;
use crate::settings::EngineSettings;
use crate::sketch::{DistinctSketch, SketchShape};
use crate::windows::{SummaryPoint, WINDOWS};

/// What every family is given to apply and fold: derived from the settings once.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub shape: SketchShape,
    pub sessions: SessionRules,
    pub retention_days: u32,
}

impl Rules {
    pub fn of(settings: &EngineSettings) -> Rules {
        Rules {
            shape: SketchShape {
                lg_k: settings.hll_lg_k,
                width: settings.hll_width,
            },
            sessions: SessionRules {
                timeout_ms: settings.session_timeout_ms,
                max_length_ms: settings.session_max_length_ms,
                lateness_ms: settings.allowed_lateness_ms,
            },
            retention_days: settings.retention_days,
        }
    }
}

pub trait Family {
    /// Its part of a partition's state: saved in checkpoints.
    type State: Clone + std::fmt::Debug + Serialize + DeserializeOwned + Send + 'static;
    /// Kept beside the state between snapshots and never saved (unions of past days).
    type Cache: Clone + std::fmt::Debug + Default + Send + 'static;
    /// One partition's (or several partitions') contribution to a snapshot.
    type Summary: Clone + std::fmt::Debug + Default + Send + 'static;
    /// Its part of the KPI snapshot, serialised at the snapshot's top level.
    type Section: Clone
        + std::fmt::Debug
        + Default
        + PartialEq
        + Serialize
        + DeserializeOwned
        + Send
        + Sync;

    /// Its Prometheus series: names, types, labels and help.
    const SERIES: &'static [SeriesDef];

    fn new_state(rules: &Rules) -> Self::State;
    /// Makes a restored state fit the rules (rings re-slotted, indexes rebuilt).
    fn restore(state: &mut Self::State, rules: &Rules);
    fn apply(
        state: &mut Self::State,
        cache: &mut Self::Cache,
        event: &PartitionEvent,
        rules: &Rules,
    );
    /// The watermark reached `watermark_ms`: what is final may close.
    fn advance(_state: &mut Self::State, _watermark_ms: i64, _rules: &Rules) {}
    /// The end of a finite input: everything open closes.
    fn close_all(_state: &mut Self::State, _rules: &Rules) {}
    fn summarize(
        state: &Self::State,
        cache: &mut Self::Cache,
        at: SummaryPoint,
        rules: &Rules,
    ) -> Self::Summary;
    /// `into` becomes the summary of both (HLL union, exact statistics add).
    fn merge(into: &mut Self::Summary, other: Self::Summary, rules: &Rules);
    fn estimated_bytes(state: &Self::State, cache: &Self::Cache) -> usize;
    /// Refuses a restored state no stream could have produced (see
    /// [`crate::EngineState::validate`]); adds its counts to `counts`.
    fn check(_state: &Self::State, _counts: &mut Vec<u64>) -> Result<(), String> {
        Ok(())
    }

    /// Its section, from the summaries (one per worker, to be unioned) and the sections of
    /// the families listed before it (a ratio may need another family's count).
    fn section(summaries: &[Summary], earlier: &Sections, cx: &SectionContext<'_>)
    -> Self::Section;
    /// Its samples, from the snapshot's sections.
    fn series(sections: &Sections, out: &mut dyn SeriesOut);
    /// Its rollup records of one day, from that day's sections and summaries.
    fn rollups(_sections: &Sections, _summaries: &[Summary], _out: &mut RollupOut<'_>) {}
}

/// What a section may need besides the summaries.
#[derive(Debug, Clone, Copy)]
pub struct SectionContext<'a> {
    pub router: &'a RouterState,
    pub shape: SketchShape,
}

/// The Prometheus type of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    Gauge,
    Counter,
    Histogram,
}

impl SeriesKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesKind::Gauge => "gauge",
            SeriesKind::Counter => "counter",
            SeriesKind::Histogram => "histogram",
        }
    }
}

/// One exported metric: everything but its values.
#[derive(Debug, Clone, Copy)]
pub struct SeriesDef {
    pub name: &'static str,
    pub kind: SeriesKind,
    /// Label names, in the order they appear on every sample.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

pub const fn gauge(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> SeriesDef {
    SeriesDef {
        name,
        kind: SeriesKind::Gauge,
        labels,
        help,
    }
}

pub const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> SeriesDef {
    SeriesDef {
        name,
        kind: SeriesKind::Counter,
        labels,
        help,
    }
}

/// The label of a series over the 1/7/30-day windows.
pub const WINDOW: &[&str] = &["window"];

/// A histogram's buckets as the snapshot holds them: per bucket, not cumulative, one more
/// count than bounds (the last is `+Inf`).
#[derive(Debug, Clone, Copy)]
pub struct HistogramSample<'a> {
    pub bounds: &'a [f64],
    pub counts: &'a [u64],
    pub sum: f64,
}

/// Where families put their samples (the Prometheus exposition, a test's collector).
pub trait SeriesOut {
    /// A gauge or counter sample; `labels` follow the order of `def.labels`.
    fn sample(&mut self, def: &'static SeriesDef, labels: &[&str], value: f64);
    fn histogram(&mut self, def: &'static SeriesDef, histogram: HistogramSample<'_>);
}

/// One rollup value a family reports for the day being rolled up.
#[derive(Debug, Clone)]
pub struct RollupValue<'a> {
    /// The record's `metric`, e.g. `active_users`.
    pub metric: &'static str,
    /// By [`WINDOWS`] position.
    pub window: usize,
    /// E.g. `("feature", "export")`; empty for the whole product.
    pub dimensions: &'a [(&'static str, &'a str)],
    pub value: f64,
    /// The day's distinct users (the 1-day window's sketch), for warehouses to union.
    pub sketch: Option<&'a DistinctSketch>,
}

/// Collects a day's rollup values; only windows pulse holds every day of are taken.
pub struct RollupOut<'a> {
    /// Windows complete on this day, by [`WINDOWS`] position.
    pub complete: &'a [usize],
    /// Whether the 1-day distinct counts carry their sketch (`rollups.include_sketches`):
    /// a family computes the day's union only then.
    pub sketches: bool,
    pub shape: SketchShape,
    pub cx: &'a SectionContext<'a>,
    pub(crate) push: &'a mut dyn FnMut(RollupValue<'_>),
}

impl std::fmt::Debug for RollupOut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollupOut")
            .field("complete", &self.complete)
            .field("sketches", &self.sketches)
            .finish_non_exhaustive()
    }
}

impl RollupOut<'_> {
    /// Every complete window, by [`WINDOWS`] position.
    pub fn windows(&self) -> impl Iterator<Item = usize> + '_ {
        self.complete.iter().copied().filter(|w| *w < WINDOWS.len())
    }

    pub fn push(&mut self, value: RollupValue<'_>) {
        if self.complete.contains(&value.window) {
            (self.push)(value);
        }
    }
}
