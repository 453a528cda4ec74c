//! Every metric pulse exports, and the collector that builds them at scrape time.
//!
//! [`all`] is every metric's name, type, labels and help: each KPI family's series (declared
//! in its module in `pulse_core::families`) and pulse's own ([`SERVICE`]). The collector's
//! descriptors come from it, and the tests check every rendered family against it.
//!
//! # Why a custom collector instead of registered `GaugeVec`s and `CounterVec`s
//! The snapshot already holds every number, cumulative counters included. Registered
//! counters can only be incremented, so mirroring a snapshot into them means diffing
//! against the previous one (and guessing what a decrease after a restart means); vectors
//! keep every label set ever seen, so a feature or partition that disappears from the
//! snapshot would linger on `/metrics` unless each vector is reset in step. Building the
//! metric families from the latest snapshot and status on every scrape avoids both:
//! counters are real `counter`s whose values *are* the snapshot's, a label set exists
//! exactly as long as it is in the snapshot, and a scrape always sees one consistent
//! snapshot rather than a half-applied update. The cost is rebuilding every sample per
//! scrape: about 1.4 ms (release build, `process_*` included) at the 200-feature cap.
//!
//! # Why `q`, not `quantile`
//! `pulse_session_duration_quantile_seconds` is a gauge: its quantiles are per calendar
//! window, not a Prometheus summary. `quantile` is reserved for summaries (`promtool check
//! metrics` rejects it elsewhere, and tools treat it specially), so the label is `q`.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use pulse_core::KpiSnapshot;

use crate::published::Published;
use crate::{BuildInfo, ExportError, IngestStatus};

use pulse_core::family::{HistogramSample, SeriesOut, counter, gauge};
pub use pulse_core::family::{SeriesDef as Def, SeriesKind as Kind};

fn proto_type(kind: Kind) -> MetricType {
    match kind {
        Kind::Gauge => MetricType::GAUGE,
        Kind::Counter => MetricType::COUNTER,
        Kind::Histogram => MetricType::HISTOGRAM,
    }
}

pub const SESSIONS_OPEN: Def = gauge(
    "pulse_sessions_open",
    &[],
    "Session keys (user, or user and session id) with a session not yet closed.",
);
pub const EVENTS_TOTAL: Def = counter("pulse_events_total", &["kind"], "Accepted events by kind.");
pub const EVENTS_REJECTED_TOTAL: Def = counter(
    "pulse_events_rejected_total",
    &["reason"],
    "Records rejected as bad data, by reason.",
);
pub const EVENTS_LATE_TOTAL: Def = counter(
    "pulse_events_late_total",
    &[],
    "Events older than the retention, not applied.",
);
pub const EVENTS_FUTURE_TOTAL: Def = counter(
    "pulse_events_future_total",
    &[],
    "Events too far past the wall clock, not applied.",
);
pub const EVENTS_LATE_FOR_SESSIONS_TOTAL: Def = counter(
    "pulse_events_late_for_sessions_total",
    &[],
    "Events that arrived after their session closed; counted as activity, not in sessions.",
);
pub const FEATURE_OVERFLOW_EVENTS_TOTAL: Def = counter(
    "pulse_feature_overflow_events_total",
    &[],
    "Feature events pooled into __other__ because the feature cap was reached.",
);
pub const CONSUMER_LAG_MESSAGES: Def = gauge(
    "pulse_consumer_lag_messages",
    &["topic", "partition"],
    "Messages between the partition's high watermark and the next offset to consume.",
);
pub const COMMITTED_OFFSET: Def = gauge(
    "pulse_committed_offset",
    &["topic", "partition"],
    "Next offset this instance reads from the partition (Kafka's committed offset follows durable checkpoints).",
);
pub const LAST_EVENT_TIMESTAMP_SECONDS: Def = gauge(
    "pulse_last_event_timestamp_seconds",
    &[],
    "Unix time of the latest accepted event.",
);
pub const STATE_BYTES: Def = gauge(
    "pulse_state_bytes",
    &[],
    "Estimated memory held by the partitions' states.",
);
pub const TRACKED_FEATURES: Def = gauge(
    "pulse_tracked_features",
    &[],
    "Feature names tracked on their own (at most features.max_tracked).",
);
pub const BROKER_UP: Def = gauge(
    "pulse_broker_up",
    &[],
    "1 when connected to the Kafka brokers (always 1 for file and demo sources), else 0.",
);
pub const READY: Def = gauge(
    "pulse_ready",
    &[],
    "1 when pulse serves meaningful numbers (as /readyz), else 0.",
);
pub const DEAD_LETTERS_TOTAL: Def = counter(
    "pulse_dead_letters_total",
    &[],
    "Bad records written to the dead-letter topic.",
);
pub const DEAD_LETTER_ERRORS_TOTAL: Def = counter(
    "pulse_dead_letter_errors_total",
    &[],
    "Bad records that could not be written to the dead-letter topic.",
);
pub const REPARTITION_REPEATS_DROPPED_TOTAL: Def = counter(
    "pulse_repartition_repeats_dropped_total",
    &[],
    "Records the repartition stage produced again after a crash or a rebalance, recognised by their input position and dropped.",
);
pub const CHECKPOINTS_TOTAL: Def = counter(
    "pulse_checkpoints_total",
    &[],
    "State checkpoints written durably since start.",
);
pub const CHECKPOINT_FAILURES_TOTAL: Def = counter(
    "pulse_checkpoint_failures_total",
    &[],
    "State checkpoints that could not be written (disk full, read-only, ...); the previous one stays usable.",
);
pub const LAST_CHECKPOINT_TIMESTAMP_SECONDS: Def = gauge(
    "pulse_last_checkpoint_timestamp_seconds",
    &[],
    "Unix time the latest durable checkpoint was taken.",
);
pub const CHECKPOINT_BYTES: Def = gauge(
    "pulse_checkpoint_bytes",
    &[],
    "Size of the latest checkpoint file.",
);
pub const CHECKPOINT_PAUSE_SECONDS: Def = gauge(
    "pulse_checkpoint_pause_seconds",
    &[],
    "How long ingestion stood still while the latest checkpoint copied the state.",
);
pub const CHECKPOINT_WRITE_SECONDS: Def = gauge(
    "pulse_checkpoint_write_seconds",
    &[],
    "How long encoding, writing and syncing the latest checkpoint took (off the ingest path).",
);
pub const SNAPSHOT_TIMESTAMP_SECONDS: Def = gauge(
    "pulse_snapshot_timestamp_seconds",
    &[],
    "Unix time the latest snapshot describes (wall clock when live, latest event in replay).",
);
pub const SNAPSHOT_DURATION_SECONDS: Def = gauge(
    "pulse_snapshot_duration_seconds",
    &[],
    "How long the latest snapshot took (the workers apply no events meanwhile); alert when it nears http.refresh_interval.",
);
pub const BUILD_INFO: Def = gauge(
    "pulse_build_info",
    &["version", "git_commit"],
    "Always 1; the labels name the running build.",
);

/// pulse's own metrics besides the KPI families' (counters of the stream, the state, the
/// source and the service), grouped as in the README.
pub const SERVICE: &[Def] = &[
    SESSIONS_OPEN,
    EVENTS_TOTAL,
    EVENTS_REJECTED_TOTAL,
    EVENTS_LATE_TOTAL,
    EVENTS_FUTURE_TOTAL,
    EVENTS_LATE_FOR_SESSIONS_TOTAL,
    FEATURE_OVERFLOW_EVENTS_TOTAL,
    CONSUMER_LAG_MESSAGES,
    COMMITTED_OFFSET,
    LAST_EVENT_TIMESTAMP_SECONDS,
    STATE_BYTES,
    TRACKED_FEATURES,
    BROKER_UP,
    READY,
    DEAD_LETTERS_TOTAL,
    DEAD_LETTER_ERRORS_TOTAL,
    REPARTITION_REPEATS_DROPPED_TOTAL,
    CHECKPOINTS_TOTAL,
    CHECKPOINT_FAILURES_TOTAL,
    LAST_CHECKPOINT_TIMESTAMP_SECONDS,
    CHECKPOINT_BYTES,
    CHECKPOINT_PAUSE_SECONDS,
    CHECKPOINT_WRITE_SECONDS,
    SNAPSHOT_TIMESTAMP_SECONDS,
    SNAPSHOT_DURATION_SECONDS,
    BUILD_INFO,
];

/// Every metric pulse exports besides `process_*`: each KPI family's series (the one list
/// in `pulse_core::families`), then pulse's own. The registry sorts the exposition by name.
pub fn all() -> impl Iterator<Item = &'static Def> {
    pulse_core::families::SERIES
        .iter()
        .flat_map(|family| family.iter())
        .chain(SERVICE)
}

/// The registry's view of the latest snapshot and status. Created once by
/// [`crate::Exporter::new`]; it holds no values of its own.
pub(crate) struct KpiCollector {
    published: Arc<Published>,
    /// Built from [`all`] up front, so a bad name fails `Exporter::new`, not a scrape.
    descs: Vec<Desc>,
}

impl KpiCollector {
    pub(crate) fn new(published: Arc<Published>) -> Result<KpiCollector, ExportError> {
        let descs = all()
            .map(|def| {
                let labels = def.labels.iter().map(|l| (*l).to_owned()).collect();
                Desc::new(
                    def.name.to_owned(),
                    def.help.to_owned(),
                    labels,
                    HashMap::new(),
                )
                .map_err(|source| ExportError::InvalidMetric {
                    name: def.name,
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(KpiCollector { published, descs })
    }
}

impl Collector for KpiCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (snapshot, status) = self.published.latest();
        families(&self.published.build, snapshot.as_deref(), &status)
    }
}

/// Every pulse metric family for one snapshot (`None` before the first publish: then the
/// KPI families are absent rather than 0, so "no data yet" is not mistaken for "no users")
/// and one ingest status. Families without samples are dropped by the registry.
pub(crate) fn families(
    build: &BuildInfo,
    snapshot: Option<&KpiSnapshot>,
    status: &IngestStatus,
) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(64);
    if let Some(s) = snapshot {
        kpi_families(s, &mut out);
    }

    let mut lag = Family::new(&CONSUMER_LAG_MESSAGES);
    let mut committed = Family::new(&COMMITTED_OFFSET);
    for p in &status.partitions {
        let partition = p.partition.to_string();
        let labels = [p.topic.as_str(), partition.as_str()];
        if let Some(v) = p.lag {
            lag.sample(&labels, v as f64);
        }
        if let Some(v) = p.committed_offset {
            committed.sample(&labels, v as f64);
        }
    }
    out.extend([lag.done(), committed.done()]);

    // The status is the live source; the snapshot's event time covers sources that do
    // not report one (replay, tests).
    let last_event_seconds = status
        .last_event_unix_ms
        .map(|ms| ms as f64 / 1000.0)
        .or_else(|| snapshot.and_then(|s| unix_seconds(s.last_event_at.as_deref()?)));
    out.push(Family::single_opt(
        &LAST_EVENT_TIMESTAMP_SECONDS,
        last_event_seconds,
    ));
    out.push(Family::single(&BROKER_UP, flag(status.broker_up)));
    out.push(Family::single(&READY, flag(status.ready)));
    out.push(Family::single(
        &DEAD_LETTERS_TOTAL,
        status.dead_letters_total as f64,
    ));
    out.push(Family::single(
        &DEAD_LETTER_ERRORS_TOTAL,
        status.dead_letter_errors_total as f64,
    ));
    out.push(Family::single(
        &REPARTITION_REPEATS_DROPPED_TOTAL,
        status.repeats_dropped_total as f64,
    ));
    // Absent without a state directory: no checkpoint is expected, so none is "missing".
    if let Some(c) = &status.checkpoint {
        out.push(Family::single(&CHECKPOINTS_TOTAL, c.written_total as f64));
        out.push(Family::single(
            &CHECKPOINT_FAILURES_TOTAL,
            c.failed_total as f64,
        ));
        out.push(Family::single_opt(
            &LAST_CHECKPOINT_TIMESTAMP_SECONDS,
            c.last_success_unix_ms.map(|ms| ms as f64 / 1000.0),
        ));
        out.push(Family::single(&CHECKPOINT_BYTES, c.last_bytes as f64));
        out.push(Family::single(
            &CHECKPOINT_PAUSE_SECONDS,
            c.last_pause_seconds,
        ));
        out.push(Family::single(
            &CHECKPOINT_WRITE_SECONDS,
            c.last_write_seconds,
        ));
    }
    out.push(Family::single_opt(
        &SNAPSHOT_DURATION_SECONDS,
        status.snapshot_seconds,
    ));
    let mut info = Family::new(&BUILD_INFO);
    info.sample(&[&build.version, &build.git_commit], 1.0);
    out.push(info.done());
    out
}

fn kpi_families(s: &KpiSnapshot, out: &mut Vec<MetricFamily>) {
    let mut families = Families::default();
    s.kpis.series(&mut families);
    out.extend(families.done());
    out.push(Family::single(
        &SESSIONS_OPEN,
        s.state.open_session_keys as f64,
    ));

    let e = &s.events;
    for (def, by) in [
        (&EVENTS_TOTAL, &e.by_kind),
        (&EVENTS_REJECTED_TOTAL, &e.rejected_by_reason),
    ] {
        let mut f = Family::new(def);
        for (label, v) in by {
            f.sample(&[label], *v as f64);
        }
        out.push(f.done());
    }
    for (def, v) in [
        (&EVENTS_LATE_TOTAL, e.late),
        (&EVENTS_FUTURE_TOTAL, e.future),
        (&EVENTS_LATE_FOR_SESSIONS_TOTAL, e.late_for_sessions),
        (&FEATURE_OVERFLOW_EVENTS_TOTAL, e.feature_overflow),
        (&STATE_BYTES, s.state.estimated_bytes),
        (&TRACKED_FEATURES, s.state.tracked_features),
    ] {
        out.push(Family::single(def, v as f64));
    }
    out.push(Family::single_opt(
        &SNAPSHOT_TIMESTAMP_SECONDS,
        s.as_of.as_deref().and_then(unix_seconds),
    ));
}

/// The families' samples, gathered into one metric family per series, in the order the
/// series first appear.
#[derive(Default)]
struct Families {
    filled: Vec<Family>,
}

impl Families {
    fn family(&mut self, def: &'static Def) -> &mut Family {
        match self
            .filled
            .iter()
            .position(|f| std::ptr::eq(f.def, def) || f.def.name == def.name)
        {
            Some(at) => &mut self.filled[at],
            None => {
                self.filled.push(Family::new(def));
                self.filled.last_mut().expect("just pushed")
            }
        }
    }

    fn done(self) -> impl Iterator<Item = MetricFamily> {
        self.filled.into_iter().map(Family::done)
    }
}

impl SeriesOut for Families {
    fn sample(&mut self, def: &'static Def, labels: &[&str], value: f64) {
        self.family(def).sample(labels, value);
    }

    /// Prometheus buckets are cumulative and end with `+Inf` equal to the count; the
    /// snapshot's are per bucket. A histogram that does not have one count per bound plus
    /// `+Inf` is left out: a wrong histogram would corrupt every `histogram_quantile` over
    /// it, a missing one only leaves a gap.
    fn histogram(&mut self, def: &'static Def, h: HistogramSample<'_>) {
        let family = self.family(def);
        let bounds_ok =
            h.bounds.iter().all(|b| b.is_finite()) && h.bounds.windows(2).all(|w| w[0] < w[1]);
        if !bounds_ok || h.counts.len() != h.bounds.len() + 1 {
            return;
        }
        let mut histogram = proto::Histogram::default();
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(h.bounds.len());
        for (bound, n) in h.bounds.iter().zip(h.counts) {
            cumulative += n;
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(cumulative);
            buckets.push(bucket);
        }
        // `+Inf` is written by the encoder from the sample count; taking that from the
        // buckets (not from a separate count) keeps the series monotonic across buckets.
        cumulative += h.counts.last().copied().unwrap_or(0);
        histogram.set_bucket(buckets);
        histogram.set_sample_count(cumulative);
        histogram.set_sample_sum(h.sum);
        let mut metric = proto::Metric::default();
        metric.set_histogram(histogram);
        family.mf.mut_metric().push(metric);
    }
}

/// One metric family being filled.
struct Family {
    def: &'static Def,
    mf: MetricFamily,
}

impl Family {
    fn new(def: &'static Def) -> Family {
        let mut mf = MetricFamily::default();
        mf.set_name(def.name.to_owned());
        mf.set_help(def.help.to_owned());
        mf.set_field_type(proto_type(def.kind));
        Family { def, mf }
    }

    /// A family of one unlabelled sample.
    fn single(def: &'static Def, value: f64) -> MetricFamily {
        Family::single_opt(def, Some(value))
    }

    /// A family of one unlabelled sample, or none when the value is unknown.
    fn single_opt(def: &'static Def, value: Option<f64>) -> MetricFamily {
        let mut f = Family::new(def);
        if let Some(v) = value {
            f.sample(&[], v);
        }
        f.done()
    }

    /// Adds a gauge or counter sample; `values` follow the order of `def.labels`.
    fn sample(&mut self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.def.labels.len(), "{}", self.def.name);
        debug_assert_ne!(self.def.kind, Kind::Histogram, "{}", self.def.name);
        // Rust prints infinities as `inf`, which is not valid exposition; the core never
        // produces non-finite numbers, so skipping one only guards the format.
        if !value.is_finite() {
            return;
        }
        let labels = self
            .def
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut pair = proto::LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect();
        let mut metric = proto::Metric::from_label(labels);
        match self.def.kind {
            Kind::Gauge => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            }
            Kind::Counter => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            }
            // Histograms are built whole by `Families::histogram`.
            Kind::Histogram => return,
        }
        self.mf.mut_metric().push(metric);
    }

    fn done(self) -> MetricFamily {
        self.mf
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// Seconds since the Unix epoch of an RFC 3339 time, as the snapshot writes them.
fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let ts: jiff::Timestamp = rfc3339.parse().ok()?;
    Some(ts.as_millisecond() as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use pulse_core::families::Sections;
    use pulse_core::families::activity::ActivitySection;
    use pulse_core::families::breakdowns::{BreakdownsSection, ValueKpis};
    use pulse_core::families::features::FeaturesSection;
    use pulse_core::families::funnels::{FunnelKpis, FunnelsSection};
    use pulse_core::families::outcomes::{OutcomeFigures, OutcomesSection, RevenueFigures};
    use pulse_core::families::retention::{
        ByN, Lifecycle, LifecycleKpis, PeriodRatios, RetentionKpis, RetentionSection,
    };
    use pulse_core::families::sessions::SessionsSection;
    use pulse_core::families::stickiness::StickinessSection;
    use pulse_core::snapshot::{
        EventCounts, FeatureKpis, Recent, SessionDurations, SessionKpis, StateInfo,
        StickinessRatios, Windowed,
    };

    use super::*;
    use crate::{Exporter, PartitionStatus};

    fn build() -> BuildInfo {
        BuildInfo {
            version: "0.1.0".into(),
            git_commit: "abc1234".into(),
        }
    }

    fn windowed<T: Copy>(d1: T, d7: T, d30: T) -> Windowed<T> {
        Windowed { d1, d7, d30 }
    }

    fn feature(users: Windowed<u64>, adoption: Windowed<f64>) -> FeatureKpis {
        FeatureKpis {
            active_users: users,
            adoption,
        }
    }

    /// A snapshot with a distinct value in every field, so a swapped field shows.
    fn sample_snapshot() -> KpiSnapshot {
        let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        let sessions = |count, avg| SessionKpis {
            count,
            avg_duration_seconds: avg,
            p50_duration_seconds: 30.0,
            p90_duration_seconds: 1506.25,
            bounce_rate: 0.5,
            events_per_session: 2.0,
            sessions_per_user: 1.25,
        };
        KpiSnapshot {
            as_of: Some("2026-03-10T12:00:00.000Z".into()),
            timezone: "UTC".into(),
            last_event_at: Some("2026-03-10T11:59:30.500Z".into()),
            events: EventCounts {
                accepted: 16,
                rejected: 3,
                rejected_by_reason: counts(&[("not_json", 1), ("missing_user", 2)]),
                late: 11,
                future: 12,
                late_for_sessions: 13,
                by_kind: counts(&[("login", 7), ("page_view", 9)]),
                feature_overflow: 14,
                feature_missing: 15,
            },
            kpis: Sections {
                activity: ActivitySection {
                    active_users: windowed(3, 4, 5),
                    active_users_previous: windowed(1, 2, 4),
                    new_users: windowed(1, 2, 3),
                    recent_active_users: Recent { m5: 2, h1: 3 },
                },
                stickiness: StickinessSection {
                    stickiness: StickinessRatios {
                        dau_mau: 0.0333,
                        dau_wau: 0.1429,
                        wau_mau: 0.5,
                    },
                },
                sessions: SessionsSection {
                    sessions: windowed(sessions(4, 382.5), sessions(6, 400.0), sessions(8, 410.0)),
                    session_durations: SessionDurations {
                        bounds_seconds: vec![1.0, 10.0, 60.0],
                        counts: vec![2, 3, 0, 1],
                        sum_seconds: 150.5,
                        count: 6,
                    },
                },
                features: FeaturesSection {
                    features: [
                        (
                            "search",
                            feature(windowed(1, 1, 2), windowed(0.25, 0.25, 0.4)),
                        ),
                        (
                            "export",
                            feature(windowed(2, 2, 2), windowed(0.5, 0.5, 0.4)),
                        ),
                        (
                            "__other__",
                            feature(windowed(0, 1, 1), windowed(0.0, 0.25, 0.2)),
                        ),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                },
                retention: RetentionSection {
                    retention: RetentionKpis {
                        complete: true,
                        cohort: "signup".into(),
                        day_n: ByN {
                            d1: 0.41,
                            d7: 0.27,
                            d14: 0.2,
                            d28: 0.15,
                        },
                        on_or_after: ByN {
                            d1: 0.42,
                            d7: 0.33,
                            d14: 0.3,
                            d28: 0.25,
                        },
                        cohort_users: ByN {
                            d1: 31,
                            d7: 32,
                            d14: 33,
                            d28: 34,
                        },
                        cohorts: Vec::new(),
                        users: 18,
                        events_beyond_horizon: 19,
                        users_on_several_partitions: 7,
                        partitions_sharing_users: vec![0, 2],
                    },
                    lifecycle: LifecycleKpis {
                        complete: false,
                        day: Lifecycle {
                            new: 21,
                            returning: 22,
                            resurrecting: 23,
                            dormant: 24,
                        },
                        week: Lifecycle {
                            new: 25,
                            returning: 26,
                            resurrecting: 27,
                            dormant: 28,
                        },
                    },
                    churn: PeriodRatios {
                        complete: true,
                        d7: 0.07,
                        d30: 0.31,
                    },
                    retention_rate: PeriodRatios {
                        complete: true,
                        d7: 0.71,
                        d30: 0.62,
                    },
                },
                outcomes: OutcomesSection {
                    outcomes: Some(OutcomeFigures {
                        nps: Some(Default::default()),
                        csat: Some(Default::default()),
                        revenue: Some(Windowed::from_fn(|_| RevenueFigures {
                            currency: "USD".into(),
                            amount_minor: 12_345,
                            orders: 3,
                            paying_users: 2,
                            arpu_minor: 1_234.5,
                            arppu_minor: 6_172.5,
                        })),
                        mrr: Some(Default::default()),
                        ltv_estimate_minor: Some(0.0),
                        ltv_estimate_complete: Some(false),
                    }),
                },
                breakdowns: BreakdownsSection {
                    dimensions: [(
                        "platform".to_owned(),
                        [
                            ("ios".to_owned(), breakdown_value(windowed(2, 3, 4), 0.25)),
                            (
                                "__other__".to_owned(),
                                breakdown_value(windowed(1, 1, 2), 0.5),
                            ),
                        ]
                        .into(),
                    )]
                    .into(),
                    dimension_overflow_events: [("platform".to_owned(), 18)].into(),
                },
                breakdown_features: Default::default(),
                funnels: FunnelsSection {
                    funnels: [(
                        "activation".to_owned(),
                        Windowed::from_fn(|_| FunnelKpis {
                            users: vec![120, 48, 9],
                            conversion: 0.075,
                            step_conversion: vec![0.4, 0.1875],
                            completions: 10,
                            step_seconds_p50: vec![3_650.1, 70_120.8],
                            ..FunnelKpis::default()
                        }),
                    )]
                    .into(),
                    time_to_value: Some(Default::default()),
                    funnel_late_events: Some(2),
                },
            },
            state: StateInfo {
                shards: 2,
                estimated_bytes: 1234,
                open_session_keys: 17,
                tracked_features: 2,
            },
        }
    }

    fn breakdown_value(active_users: Windowed<u64>, dau_mau: f64) -> ValueKpis {
        let sessions = |count| SessionKpis {
            count,
            avg_duration_seconds: 120.0,
            p50_duration_seconds: 60.0,
            p90_duration_seconds: 600.0,
            bounce_rate: 0.25,
            events_per_session: 3.0,
            sessions_per_user: 1.5,
        };
        ValueKpis {
            sessions: windowed(sessions(5), sessions(7), sessions(9)),
            active_users,
            active_users_previous: active_users.map(|n| n + 1),
            new_users: active_users.map(|n| n / 2),
            stickiness: StickinessRatios {
                dau_mau,
                dau_wau: 0.5,
                wau_mau: 0.75,
            },
            features: [(
                "alerts".to_owned(),
                feature(active_users.map(|n| n / 2), windowed(0.5, 0.25, 0.2)),
            )]
            .into(),
        }
    }

    fn sample_status() -> IngestStatus {
        IngestStatus {
            broker_up: true,
            ready: true,
            not_ready_reason: None,
            partitions: vec![
                PartitionStatus {
                    topic: "events".into(),
                    partition: 0,
                    lag: Some(42),
                    committed_offset: Some(1000),
                },
                PartitionStatus {
                    topic: "events".into(),
                    partition: 1,
                    lag: None,
                    committed_offset: None,
                },
            ],
            dead_letters_total: 5,
            dead_letter_errors_total: 1,
            repeats_dropped_total: 7,
            last_event_unix_ms: Some(1_773_143_999_000),
            checkpoint: Some(pulse_core::status::CheckpointStatus {
                written_total: 12,
                failed_total: 1,
                last_success_unix_ms: Some(1_773_143_990_000),
                last_bytes: 4096,
                last_pause_seconds: 0.002,
                last_write_seconds: 0.03,
            }),
            snapshot_seconds: Some(0.22),
        }
    }

    fn exporter_with(snapshot: KpiSnapshot, status: IngestStatus) -> Exporter {
        let exporter = Exporter::new(build()).expect("exporter");
        exporter.publish(snapshot);
        exporter.set_status(status);
        exporter
    }

    /// A strict reader of the text format: `# HELP` and `# TYPE` once per family, before
    /// its samples, every sample `series value`.
    #[derive(Debug, Default)]
    struct Exposition {
        help: HashMap<String, String>,
        types: HashMap<String, String>,
        /// `name{labels}` exactly as rendered, to its value.
        samples: BTreeMap<String, f64>,
    }

    impl Exposition {
        fn parse(text: &str) -> Exposition {
            let mut e = Exposition::default();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# HELP ") {
                    let (name, help) = rest.split_once(' ').expect("HELP has text");
                    assert!(e.help.insert(name.into(), help.into()).is_none(), "{line}");
                } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
                    assert!(e.types.insert(name.into(), kind.into()).is_none(), "{line}");
                } else {
                    let (series, value) = line.rsplit_once(' ').expect("sample line");
                    let name = series.split('{').next().unwrap();
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .filter_map(|s| name.strip_suffix(s))
                        .find(|f| e.types.get(*f).map(String::as_str) == Some("histogram"))
                        .unwrap_or(name);
                    assert!(e.types.contains_key(family), "TYPE before sample: {line}");
                    let value = match value {
                        "+Inf" => f64::INFINITY,
                        "-Inf" => f64::NEG_INFINITY,
                        v => v.parse().unwrap_or_else(|_| panic!("value in {line}")),
                    };
                    assert!(e.samples.insert(series.into(), value).is_none(), "{line}");
                }
            }
            e
        }

        fn value(&self, series: &str) -> f64 {
            *self
                .samples
                .get(series)
                .unwrap_or_else(|| panic!("no sample {series}"))
        }

        /// The samples of family `name` (a histogram's `_bucket`, `_sum` and `_count`).
        fn family(&self, name: &str) -> Vec<&str> {
            self.samples
                .keys()
                .filter(|series| {
                    let metric = series.split('{').next().unwrap_or_default();
                    metric == name
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| metric.strip_suffix(s) == Some(name))
                })
                .map(String::as_str)
                .collect()
        }

        fn has_family(&self, name: &str) -> bool {
            !self.family(name).is_empty()
        }
    }

    /// Label names of a rendered series, in order (values never contain `="` unescaped).
    fn label_names(series: &str) -> Vec<&str> {
        let Some((_, labels)) = series.split_once('{') else {
            return vec![];
        };
        labels
            .split("\",")
            .filter_map(|pair| pair.split_once("=\"").map(|(name, _)| name))
            .collect()
    }

    fn render(exporter: &Exporter) -> Exposition {
        Exposition::parse(&exporter.render_prometheus())
    }

    #[test]
    fn kpis_come_from_the_snapshot() {
        let e = render(&exporter_with(sample_snapshot(), sample_status()));
        let cases = [
            (r#"pulse_active_users{window="1d"}"#, 3.0),
            (r#"pulse_active_users{window="30d"}"#, 5.0),
            (r#"pulse_active_users_previous{window="7d"}"#, 2.0),
            (r#"pulse_new_users{window="30d"}"#, 3.0),
            (r#"pulse_recent_active_users{window="5m"}"#, 2.0),
            (r#"pulse_recent_active_users{window="1h"}"#, 3.0),
            (r#"pulse_stickiness_ratio{ratio="dau_wau"}"#, 0.1429),
            (r#"pulse_sessions{window="7d"}"#, 6.0),
            (r#"pulse_session_duration_avg_seconds{window="1d"}"#, 382.5),
            (
                r#"pulse_session_duration_quantile_seconds{window="1d",q="0.9"}"#,
                1506.25,
            ),
            (
                r#"pulse_session_duration_quantile_seconds{window="30d",q="0.5"}"#,
                30.0,
            ),
            (r#"pulse_session_bounce_ratio{window="1d"}"#, 0.5),
            (r#"pulse_sessions_per_user{window="1d"}"#, 1.25),
            (r#"pulse_session_events_avg{window="1d"}"#, 2.0),
            ("pulse_sessions_open", 17.0),
            (
                r#"pulse_feature_active_users{feature="export",window="1d"}"#,
                2.0,
            ),
            (
                r#"pulse_feature_adoption_ratio{feature="search",window="30d"}"#,
                0.4,
            ),
            (
                r#"pulse_feature_active_users{feature="__other__",window="7d"}"#,
                1.0,
            ),
            (
                r#"pulse_dimension_active_users{dimension="platform",value="ios",window="7d"}"#,
                3.0,
            ),
            (
                r#"pulse_dimension_active_users_previous{dimension="platform",value="__other__",window="30d"}"#,
                3.0,
            ),
            (
                r#"pulse_dimension_new_users{dimension="platform",value="ios",window="30d"}"#,
                2.0,
            ),
            (
                r#"pulse_dimension_stickiness_ratio{dimension="platform",value="__other__",ratio="dau_mau"}"#,
                0.5,
            ),
            (
                r#"pulse_dimension_overflow_events_total{dimension="platform"}"#,
                18.0,
            ),
            (
                r#"pulse_dimension_sessions{dimension="platform",value="ios",window="7d"}"#,
                7.0,
            ),
            (
                r#"pulse_dimension_session_duration_quantile_seconds{dimension="platform",value="ios",window="1d",q="0.5"}"#,
                60.0,
            ),
            (
                r#"pulse_dimension_session_bounce_ratio{dimension="platform",value="__other__",window="30d"}"#,
                0.25,
            ),
            (
                r#"pulse_dimension_feature_active_users{dimension="platform",value="ios",feature="alerts",window="30d"}"#,
                2.0,
            ),
            (
                r#"pulse_dimension_feature_adoption_ratio{dimension="platform",value="__other__",feature="alerts",window="7d"}"#,
                0.25,
            ),
            (r#"pulse_events_total{kind="page_view"}"#, 9.0),
            (r#"pulse_events_rejected_total{reason="missing_user"}"#, 2.0),
            (r#"pulse_retention_ratio{day="7",mode="day_n"}"#, 0.27),
            (
                r#"pulse_retention_ratio{day="28",mode="on_or_after"}"#,
                0.25,
            ),
            (r#"pulse_retention_cohort_users{day="14"}"#, 33.0),
            (
                r#"pulse_lifecycle_users{period="day",status="resurrecting"}"#,
                23.0,
            ),
            (
                r#"pulse_lifecycle_users{period="week",status="dormant"}"#,
                28.0,
            ),
            (r#"pulse_churn_ratio{period="30d"}"#, 0.31),
            (r#"pulse_retention_rate_ratio{period="7d"}"#, 0.71),
            (r#"pulse_retention_complete{family="lifecycle"}"#, 0.0),
            (r#"pulse_retention_complete{family="churn"}"#, 1.0),
            ("pulse_retention_users", 18.0),
            ("pulse_retention_events_beyond_horizon_total", 19.0),
            ("pulse_users_on_several_partitions", 7.0),
            ("pulse_events_late_total", 11.0),
            ("pulse_events_future_total", 12.0),
            ("pulse_events_late_for_sessions_total", 13.0),
            ("pulse_feature_overflow_events_total", 14.0),
            ("pulse_state_bytes", 1234.0),
            ("pulse_tracked_features", 2.0),
            ("pulse_snapshot_timestamp_seconds", 1_773_144_000.0),
            (
                r#"pulse_build_info{version="0.1.0",git_commit="abc1234"}"#,
                1.0,
            ),
        ];
        for (series, expected) in cases {
            assert_eq!(e.value(series), expected, "{series}");
        }
    }

    #[test]
    fn status_metrics_come_from_the_status() {
        let e = render(&exporter_with(sample_snapshot(), sample_status()));
        assert_eq!(e.value("pulse_broker_up"), 1.0);
        assert_eq!(e.value("pulse_ready"), 1.0);
        assert_eq!(e.value("pulse_dead_letters_total"), 5.0);
        assert_eq!(e.value("pulse_checkpoints_total"), 12.0);
        assert_eq!(e.value("pulse_checkpoint_failures_total"), 1.0);
        assert_eq!(
            e.value("pulse_last_checkpoint_timestamp_seconds"),
            1_773_143_990.0
        );
        assert_eq!(e.value("pulse_dead_letter_errors_total"), 1.0);
        assert_eq!(e.value("pulse_repartition_repeats_dropped_total"), 7.0);
        assert_eq!(e.value("pulse_snapshot_duration_seconds"), 0.22);
        assert_eq!(
            e.value(r#"pulse_consumer_lag_messages{topic="events",partition="0"}"#),
            42.0
        );
        assert_eq!(
            e.value(r#"pulse_committed_offset{topic="events",partition="0"}"#),
            1000.0
        );
        // Unknown lag is absent, not 0 (which would read as "caught up").
        assert!(!e.samples.keys().any(|s| s.contains(r#"partition="1""#)));
        // The status's event time wins over the snapshot's.
        assert_eq!(
            e.value("pulse_last_event_timestamp_seconds"),
            1_773_143_999.0
        );

        let status = IngestStatus {
            last_event_unix_ms: None,
            ..sample_status()
        };
        let e = render(&exporter_with(sample_snapshot(), status));
        assert_eq!(
            e.value("pulse_last_event_timestamp_seconds"),
            1_773_143_970.5
        );
    }

    #[test]
    fn every_family_has_help_type_and_the_declared_labels() {
        let e = render(&exporter_with(sample_snapshot(), sample_status()));
        for def in all() {
            let series = e.family(def.name);
            assert!(!series.is_empty(), "{} missing", def.name);
            for s in series {
                let mut names = label_names(s);
                if def.kind == Kind::Histogram && s.contains("_bucket{") {
                    assert_eq!(names.pop(), Some("le"), "{s}");
                }
                assert_eq!(names, def.labels, "{s}");
            }
            assert_eq!(e.help.get(def.name).map(String::as_str), Some(def.help));
            assert_eq!(
                e.types.get(def.name).map(String::as_str),
                Some(def.kind.as_str())
            );
            // Counters are named `_total`, and only counters are.
            assert_eq!(
                def.kind == Kind::Counter,
                def.name.ends_with("_total"),
                "{}",
                def.name
            );
        }
        for name in e.types.keys() {
            assert!(e.help.contains_key(name), "{name} has no HELP");
        }
        for (name, kind) in [
            ("pulse_events_total", "counter"),
            ("pulse_events_rejected_total", "counter"),
            ("pulse_dead_letters_total", "counter"),
            ("pulse_active_users", "gauge"),
            ("pulse_session_duration_seconds", "histogram"),
        ] {
            assert_eq!(e.types[name], kind, "{name}");
        }
    }

    #[test]
    fn process_metrics_are_exported() {
        let e = render(&exporter_with(sample_snapshot(), sample_status()));
        if cfg!(target_os = "linux") {
            assert_eq!(e.types["process_cpu_seconds_total"], "counter");
            assert!(e.value("process_resident_memory_bytes") > 0.0);
        }
    }

    #[test]
    fn duration_histogram_is_cumulative_and_ends_at_the_count() {
        let e = render(&exporter_with(sample_snapshot(), sample_status()));
        let bucket = |le: &str| {
            e.value(&format!(
                r#"pulse_session_duration_seconds_bucket{{le="{le}"}}"#
            ))
        };
        assert_eq!(bucket("1"), 2.0);
        assert_eq!(bucket("10"), 5.0);
        assert_eq!(bucket("60"), 5.0);
        assert_eq!(bucket("+Inf"), 6.0);
        assert_eq!(e.value("pulse_session_duration_seconds_count"), 6.0);
        assert_eq!(e.value("pulse_session_duration_seconds_sum"), 150.5);
        let buckets: Vec<f64> = e
            .samples
            .iter()
            .filter(|(k, _)| k.starts_with("pulse_session_duration_seconds_bucket"))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(buckets.len(), 4);
    }

    #[test]
    fn a_malformed_histogram_is_left_out_not_rendered_wrong() {
        let mut snapshot = sample_snapshot();
        snapshot.kpis.sessions.session_durations.counts.pop();
        let e = render(&exporter_with(snapshot, sample_status()));
        assert!(!e.has_family("pulse_session_duration_seconds"));
        assert!(!e.types.contains_key("pulse_session_duration_seconds"));
        assert_eq!(e.value(r#"pulse_active_users{window="1d"}"#), 3.0);
    }

    #[test]
    fn removed_features_and_partitions_disappear() {
        let exporter = exporter_with(sample_snapshot(), sample_status());
        assert!(exporter.render_prometheus().contains(r#"feature="export""#));

        let mut snapshot = sample_snapshot();
        snapshot.kpis.features.features.remove("export");
        exporter.publish(snapshot);
        exporter.set_status(IngestStatus {
            partitions: vec![],
            ..sample_status()
        });
        let text = exporter.render_prometheus();
        assert!(!text.contains(r#"feature="export""#), "{text}");
        assert!(text.contains(r#"feature="search""#));
        assert!(!text.contains("pulse_consumer_lag_messages"));
        assert!(!text.contains("pulse_committed_offset"));
    }

    #[test]
    fn before_the_first_publish_only_status_and_build_are_exported() {
        let exporter = Exporter::new(build()).expect("exporter");
        assert!(exporter.snapshot_json().is_none());
        let e = render(&exporter);
        assert!(!e.has_family("pulse_active_users"));
        assert!(!e.has_family("pulse_events_total"));
        assert!(!e.has_family("pulse_last_event_timestamp_seconds"));
        assert_eq!(e.value("pulse_ready"), 0.0);
        assert_eq!(e.value("pulse_broker_up"), 0.0);
        assert_eq!(e.value("pulse_dead_letters_total"), 0.0);
        assert_eq!(
            e.value(r#"pulse_build_info{version="0.1.0",git_commit="abc1234"}"#),
            1.0
        );
    }

    #[test]
    fn snapshot_json_is_the_published_snapshot() {
        let exporter = exporter_with(sample_snapshot(), sample_status());
        let json = exporter.snapshot_json().expect("published");
        assert_eq!(json["active_users"]["7d"], 4);
        assert_eq!(json["recent_active_users"]["5m"], 2);
        let back: KpiSnapshot = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, sample_snapshot());
    }

    #[test]
    fn label_values_are_escaped() {
        let mut snapshot = sample_snapshot();
        let kpis = snapshot.kpis.features.features["search"].clone();
        snapshot
            .kpis
            .features
            .features
            .insert("say \"hi\"\\\n".into(), kpis);
        let text = exporter_with(snapshot, sample_status()).render_prometheus();
        assert!(text.contains(r#"feature="say \"hi\"\\\n""#), "{text}");
    }

    /// The exposition passes Prometheus' own parser and linter (`promtool check metrics`),
    /// with both a full snapshot and none at all.
    #[test]
    fn promtool_accepts_the_exposition_without_lint_complaints() {
        let Ok(promtool) = which_promtool() else {
            panic!(
                "promtool is not on PATH; run scripts/ensure-promtool.sh (make test does) \
                 to install it"
            );
        };
        let full = exporter_with(sample_snapshot(), sample_status());
        let empty = Exporter::new(build()).expect("exporter");
        for (case, exporter) in [("full", full), ("before first publish", empty)] {
            let text = exporter.render_prometheus();
            let mut child = Command::new(&promtool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start promtool");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write to promtool");
            let out = child.wait_with_output().expect("promtool output");
            let complaints = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && complaints.trim().is_empty(),
                "promtool check metrics ({case}): {}\n{complaints}\n--- exposition ---\n{text}",
                out.status
            );
        }
    }

    fn which_promtool() -> Result<std::path::PathBuf, ()> {
        let path = std::env::var_os("PATH").ok_or(())?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
            .ok_or(())
    }
}
