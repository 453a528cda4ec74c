//! What a KPI family is given and gives back, besides its own types: the rules derived
//! from the settings, the context of its snapshot section, its Prometheus series
//! ([`SeriesDef`], [`SeriesOut`]) and its rollup values ([`RollupOut`]). The
//! [`Family`](crate::families::Family) trait itself sits beside the list of families.

use crate::dimensions::DimensionKeys;
use crate::ingest::RouterState;
use crate::outcome_settings::OutcomeRules;
use crate::sessions::SessionRules;
use crate::settings::{CohortMode, EngineSettings};
use crate::sketch::{DistinctSketch, SketchShape};
use crate::windows::WINDOWS;

/// What every family is given to apply and fold: derived from the settings once.
#[derive(Debug, Clone)]
pub struct Rules {
    pub shape: SketchShape,
    pub sessions: SessionRules,
    pub retention_days: u32,
    pub cohort: CohortMode,
    pub outcomes: OutcomeRules,
    pub dimensions: DimensionKeys,
    /// The dimensions that break feature adoption down: bit `p` for position `p` (see
    /// [`crate::dimensions::feature_positions`]).
    pub feature_dimensions: u8,
    /// Shared, not copied: a worker's partitions all hold the same compiled funnels.
    pub funnels: std::sync::Arc<crate::funnel_rules::FunnelRules>,
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
            cohort: settings.retention_cohort,
            outcomes: settings.outcomes.rules(),
            dimensions: DimensionKeys::of(&settings.dimensions),
            feature_dimensions: crate::dimensions::feature_positions(
                &settings.dimensions,
                &settings.feature_dimensions,
            ),
            funnels: std::sync::Arc::new(
                crate::funnel_rules::compile(
                    &settings.funnels,
                    settings.time_to_value.as_ref(),
                    settings.allowed_lateness_ms,
                )
                .1,
            ),
        }
    }
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
    series(SeriesKind::Gauge, name, labels, help)
}

pub const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> SeriesDef {
    series(SeriesKind::Counter, name, labels, help)
}

const fn series(
    kind: SeriesKind,
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> SeriesDef {
    SeriesDef {
        name,
        kind,
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
