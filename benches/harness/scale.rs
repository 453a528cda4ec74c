//! Scale curves (`make bench-scale`): throughput, resident memory and accuracy of the real
//! runtime as the population, the tracked features and the shard count grow.
//!
//! Each configuration runs in a child process of this binary (`--child`), so its peak RSS
//! (`VmHWM` of `/proc/self/status`) belongs to that configuration alone. The child drives
//! `pulse run`'s [`Pipeline`] (the router on the calling thread, one OS thread per shard)
//! with JSON records it renders in memory a chunk at a time: no multi-gigabyte input files,
//! and the generator's own memory is one day's visit list (8 bytes per active user). The
//! parent computes the exact answer from the same generator, one user at a time in constant
//! memory, and compares.
//!
//! # The month
//! `users` distinct users over 30 UTC days. Each is active on its `first` day and on every
//! other day with a fixed probability (`--active-days` in the mean), one visit per active
//! day: a login, 0–3 page views and 0–2 feature uses (feature ids skewed towards the low
//! ones: `floor(F·x²)` for uniform `x`), 5–30 s apart, so a visit lasts under three
//! minutes. A tenth of the users are new: they sign up on their first day and are never
//! active before it. Every choice is a pure function of (seed, user, day), which is what
//! lets the exact count run per user; `--verify-users` first holds that count to
//! `pulse-tests`' oracle (hash sets over the full event list) on a small month.
//! A day's visits are sent in order of their start, each visit's events together: no event
//! is more than three minutes behind the newest, within the five-minute lateness, so every
//! event also joins its session exactly.
//!
//! # What the child measures
//! - events/s: only the time inside `Pipeline::ingest` and the daily snapshots (rendering
//!   JSON is excluded); the shards apply concurrently, the router's thread is the limit.
//! - snapshot times: the last day's first snapshot (after that day's events, so the shards
//!   fold their past days afresh) and the one right after it (a live service's next refresh,
//!   which reuses them).
//! - peak RSS (`VmHWM`) after the month and its final snapshot, RSS at the end of each day.
//! - bytes per open session (one extra child, `--bursts`): after a small month, new users
//!   with one event each a minute before the newest event (so no session can close), then
//!   RSS, peak RSS (`VmHWM`), open keys and the engine's estimate again; finally one event
//!   past the timeout, and RSS and the estimate once those sessions have closed. The memory
//!   claims rest on the RSS readings; the estimate is shown beside them, not instead.
//! - sketch sizes and the checkpoint image, from an exported copy of the state (taken after
//!   the RSS readings).
//!
//! # Breakdowns
//! `--dimensions platform:25,plan:25` (child only) gives every event top-level fields
//! `platform` and `plan`, each configured as a breakdown dimension whose cap is its number
//! of values; a user's value is fixed, uniform over `v0…v24`, a pure function of (seed,
//! user), so each value has its share of every day's users. The sweep leaves it empty.
//! `--feature-dimensions platform` (child only) also splits feature adoption by those
//! dimensions' values (`features = true`), and `--days 35` (child only) lengthens the month,
//! for the memory of a service that holds its whole retention of day sketches.
//! `--summaries` (child only) also reports the bytes one publish of every partition sends to
//! the global view's topic (`[summaries]`), by piece.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pulse_core::EngineSettings;
use pulse_core::dimensions::DimensionSettings;
use pulse_core::global_view::{PartitionHead, Publisher, SessionHold};
use pulse_core::ingest::Outcome;
use pulse_core::time::Day;
use pulse_ingest::Pipeline;
use pulse_tests::{OracleSettings, exact_snapshot};
use pulse_workload::{GeneratedEvent, Property, Shape, TimestampStyle, UserId};
use serde_json::{Value, json};
use support::{arg, per_second};

const DAY_MS: i64 = 86_400_000;
/// 2026-03-01T00:00:00Z, the first day of the month.
const T0: i64 = 1_772_323_200_000;
/// The sweep's month; a child's `--days` lengthens it (the memory of a service past its month).
const DAYS: i64 = 30;
/// Records rendered before they are fed (and the clock is read).
const CHUNK: usize = 1 << 16;
const MIB: f64 = 1_048_576.0;

fn main() {
    if std::env::args().any(|a| a == "--child") {
        child();
    } else {
        parent();
    }
}

/// Who is active when, and what they do: a pure function of the seed, user and day.
#[derive(Debug, Clone, Copy)]
struct Month {
    users: u32,
    features: u32,
    seed: u64,
    /// Days in the month (`DAYS` unless a child's `--days` says otherwise).
    days: i64,
    /// Probability that a user is active on a day other than its first.
    p_other_day: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Signup,
    Login,
    PageView,
    FeatureUsed(u16),
}

/// One event, before it is rendered.
#[derive(Debug, Clone, Copy)]
struct Ev {
    user: u32,
    ts_ms: i64,
    kind: Kind,
}

/// Salts that keep the per-(user, day) random choices independent.
mod salt {
    pub const FIRST: u64 = 1;
    pub const NEW: u64 = 2;
    pub const ACTIVE: u64 = 3;
    pub const START: u64 = 4;
    pub const PAGES: u64 = 5;
    pub const FEATURES: u64 = 6;
    pub const FEATURE: u64 = 7;
    pub const GAP: u64 = 16;
    /// Plus the dimension's position.
    pub const DIMENSION: u64 = 32;
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Month {
    fn new(users: u32, features: u32, active_days: f64, seed: u64, days: i64) -> Month {
        Month {
            users,
            features,
            seed,
            days,
            p_other_day: ((active_days - 1.0) / (days - 1) as f64).clamp(0.0, 1.0),
        }
    }

    fn hash(&self, salt: u64, user: u32, day: i64) -> u64 {
        splitmix(splitmix(splitmix(self.seed ^ salt) ^ u64::from(user)) ^ day as u64)
    }

    fn first_day(&self, user: u32) -> i64 {
        (self.hash(salt::FIRST, user, 0) % self.days as u64) as i64
    }

    fn is_new(&self, user: u32) -> bool {
        unit(self.hash(salt::NEW, user, 0)) < 0.1
    }

    fn active(&self, user: u32, day: i64) -> bool {
        let first = self.first_day(user);
        day == first
            || ((day > first || !self.is_new(user))
                && unit(self.hash(salt::ACTIVE, user, day)) < self.p_other_day)
    }

    /// Milliseconds into the day at which the visit starts; it ends the same day.
    fn start_offset(&self, user: u32, day: i64) -> u32 {
        (self.hash(salt::START, user, day) % (DAY_MS - 15 * 60_000) as u64) as u32
    }

    /// The features a visit uses (at most two; a repeat is allowed, as in real use).
    fn visit_features(&self, user: u32, day: i64) -> impl Iterator<Item = u16> + use<> {
        let count = self.hash(salt::FEATURES, user, day) % 3;
        let month = *self;
        (0..count).map(move |i| {
            let x = unit(month.hash(salt::FEATURE + i, user, day));
            ((x * x * f64::from(month.features)) as u32).min(month.features - 1) as u16
        })
    }

    /// The events of `user`'s visit on `day` (which must be an active day), in time order.
    fn visit(&self, user: u32, day: i64, mut emit: impl FnMut(Ev)) {
        let mut ts_ms = T0 + day * DAY_MS + i64::from(self.start_offset(user, day));
        if self.is_new(user) && day == self.first_day(user) {
            emit(Ev {
                user,
                ts_ms,
                kind: Kind::Signup,
            });
        }
        emit(Ev {
            user,
            ts_ms,
            kind: Kind::Login,
        });
        let pages = self.hash(salt::PAGES, user, day) % 4;
        let kinds = (0..pages)
            .map(|_| Kind::PageView)
            .chain(self.visit_features(user, day).map(Kind::FeatureUsed));
        for (i, kind) in kinds.enumerate() {
            ts_ms += 5_000 + (self.hash(salt::GAP + i as u64, user, day) % 25_001) as i64;
            emit(Ev { user, ts_ms, kind });
        }
    }

    /// The visits of `day` in order of their start, as `start << 32 | user`.
    fn visits(&self, day: i64, visits: &mut Vec<u64>) {
        visits.clear();
        visits.extend(
            (0..self.users)
                .filter(|u| self.active(*u, day))
                .map(|u| (u64::from(self.start_offset(u, day)) << 32) | u64::from(u)),
        );
        visits.sort_unstable();
    }
}

fn feature_name(id: u16) -> String {
    format!("f{id}")
}

/// The event as `pulse-workload` renders it: plain shape, epoch or RFC 3339 times.
fn generated(ev: &Ev) -> GeneratedEvent {
    let (name, feature) = match ev.kind {
        Kind::Signup => ("signup", None),
        Kind::Login => ("login", None),
        Kind::PageView => ("page_view", None),
        Kind::FeatureUsed(f) => ("feature_used", Some(feature_name(f))),
    };
    GeneratedEvent {
        user: UserId::Int(i64::from(ev.user)),
        name: name.to_owned(),
        ts_ms: ev.ts_ms,
        feature,
        session_id: None,
        shape: Shape::Plain,
        timestamp_style: if ev.user.is_multiple_of(2) {
            TimestampStyle::EpochMillis
        } else {
            TimestampStyle::Rfc3339Utc
        },
        seq: 0,
        outcome: None,
        properties: Vec::new(),
    }
}

/// Exact distinct counts over the windows ending on the last day (1, 7, 30 days).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exact {
    active: [u64; 3],
    new_users: [u64; 3],
    /// By feature id.
    features: Vec<[u64; 3]>,
}

/// Bit `w` set: `day` lies in window `w` (1, 7 or 30 days ending on the last day).
fn windows_of(month: &Month, day: i64) -> u8 {
    let age = month.days - 1 - day;
    u8::from(age < 1) | (u8::from(age < 7) << 1) | (u8::from(age < 30) << 2)
}

fn add_windows(counts: &mut [u64; 3], mask: u8) {
    for (w, count) in counts.iter_mut().enumerate() {
        *count += u64::from(mask >> w & 1);
    }
}

fn exact_counts(month: &Month) -> Exact {
    let mut exact = Exact {
        active: [0; 3],
        new_users: [0; 3],
        features: vec![[0; 3]; month.features as usize],
    };
    let mut used: Vec<(u16, u8)> = Vec::new();
    for user in 0..month.users {
        let mut active = 0u8;
        used.clear();
        for day in 0..month.days {
            if !month.active(user, day) {
                continue;
            }
            let mask = windows_of(month, day);
            active |= mask;
            used.extend(month.visit_features(user, day).map(|f| (f, mask)));
        }
        add_windows(&mut exact.active, active);
        if month.is_new(user) {
            add_windows(
                &mut exact.new_users,
                windows_of(month, month.first_day(user)),
            );
        }
        used.sort_unstable();
        for run in used.chunk_by(|a, b| a.0 == b.0) {
            let mask = run.iter().fold(0, |m, (_, w)| m | w);
            add_windows(&mut exact.features[usize::from(run[0].0)], mask);
        }
    }
    exact
}

/// The same figures from `pulse-tests`' oracle over the full list of events.
fn oracle_counts(month: &Month) -> Exact {
    let mut events = Vec::new();
    let mut visits = Vec::new();
    for day in 0..month.days {
        month.visits(day, &mut visits);
        for v in &visits {
            month.visit(*v as u32, day, |ev| events.push(generated(&ev)));
        }
    }
    let snapshot = exact_snapshot(&events, &OracleSettings::default());
    let windowed =
        |v: &Value| -> [u64; 3] { ["1d", "7d", "30d"].map(|w| v[w].as_u64().expect("a count")) };
    Exact {
        active: windowed(&snapshot["active_users"]),
        new_users: windowed(&snapshot["new_users"]),
        features: (0..month.features as u16)
            .map(|f| {
                let name = feature_name(f);
                snapshot["features"]
                    .get(&name)
                    .map_or([0; 3], |v| windowed(&v["active_users"]))
            })
            .collect(),
    }
}

/// A field of `/proc/self/status` in KiB (`VmHWM`: peak resident set; `VmRSS`: now).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Rendered records waiting to be fed.
#[derive(Debug, Default)]
struct Chunk {
    text: String,
    ends: Vec<usize>,
    /// Breakdown fields every record carries: (name, number of values), and the seed.
    dimensions: Vec<(String, u32)>,
    seed: u64,
}

impl Chunk {
    fn push(&mut self, ev: &Ev) {
        let mut event = generated(ev);
        for (position, (name, values)) in self.dimensions.iter().enumerate() {
            let salt = salt::DIMENSION + position as u64;
            let value =
                splitmix(splitmix(self.seed ^ salt) ^ u64::from(ev.user)) % u64::from(*values);
            event
                .properties
                .push((name.clone(), Property::Text(format!("v{value}"))));
        }
        event.write_json(&mut self.text);
        self.ends.push(self.text.len());
    }

    /// Feeds every record to the pipeline; returns how long that took.
    async fn feed(&mut self, pipeline: &mut Pipeline) -> Duration {
        let started = Instant::now();
        let mut start = 0;
        for &end in &self.ends {
            let outcome = pipeline
                .ingest(&self.text.as_bytes()[start..end], None)
                .await
                .expect("shards run");
            assert!(
                matches!(outcome, Outcome::Accepted { .. }),
                "{outcome:?}: {}",
                &self.text[start..end]
            );
            start = end;
        }
        let took = started.elapsed();
        self.text.clear();
        self.ends.clear();
        took
    }
}

/// Bytes (keys and values) of one publish of every partition's summary to the global
/// view's topic, by piece: the first publish, which sends every piece, as each interval
/// does once every partition has events in every interval and its sketches are dense.
async fn summary_publish_bytes(pipeline: &mut Pipeline) -> BTreeMap<String, usize> {
    let router = pipeline.ingestor().state().clone();
    let mut publisher = Publisher::default();
    let mut bytes = BTreeMap::new();
    let partitions = pipeline.partition_summaries().await.expect("summaries");
    for (number, inputs, summary) in partitions {
        let head = PartitionHead::new(
            &inputs,
            router.clone(),
            summary.estimated_bytes,
            SessionHold::Done,
        );
        for (key, value) in publisher.changed("events", number as i32, 1, &head, &summary) {
            let piece = key.rsplit('/').next().unwrap_or_default().to_owned();
            *bytes.entry(piece).or_default() += key.len() + value.len();
        }
    }
    bytes
}

/// One configuration in this process; prints one JSON line.
fn child() {
    let users: u32 = arg("--users", 10_000);
    let features: u32 = arg("--features", 200);
    let shards: usize = arg("--shards", 2);
    let active_days: f64 = arg("--active-days", 3.0);
    let seed: u64 = arg("--seed", 1);
    let days: i64 = arg("--days", DAYS);
    // Dimensions whose values also split feature adoption (`features = true`).
    let feature_dimensions: Vec<String> = list("--feature-dimensions", "");
    // Also the bytes one publish of every partition sends to the summaries topic.
    let summaries = std::env::args().any(|a| a == "--summaries");
    // Open sessions added after the month, cumulative ("100000,1000000"); none by default.
    let bursts: Vec<u32> = list("--bursts", "");
    let dimensions: Vec<(String, u32)> = list::<String>("--dimensions", "")
        .iter()
        .map(|spec| {
            let (name, values) = spec
                .split_once(':')
                .unwrap_or_else(|| panic!("--dimensions: {spec:?} is not NAME:VALUES"));
            (
                name.to_owned(),
                values.parse().expect("--dimensions values"),
            )
        })
        .collect();
    let month = Month::new(users, features, active_days, seed, days);
    let settings = EngineSettings {
        dimensions: dimensions
            .iter()
            .map(|(name, values)| DimensionSettings {
                name: name.clone(),
                paths: vec![format!("/{name}")],
                max_values: *values as usize,
            })
            .collect(),
        feature_dimensions: feature_dimensions.clone(),
        shards,
        // One virtual partition per worker, as `pulse replay` and `pulse demo` default to:
        // every worker has work, and state is split as finely as the workers need.
        partitions: shards,
        max_features: features as usize,
        ..EngineSettings::default()
    };
    settings.validate().expect("valid settings");
    let lg_k = settings.hll_lg_k;
    let baseline_kib = status_kib("VmRSS");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let report = runtime.block_on(async move {
        let mut pipeline =
            Pipeline::start(settings, T0 + month.days * DAY_MS, None).expect("start shards");
        let mut chunk = Chunk {
            dimensions: dimensions.clone(),
            seed,
            ..Chunk::default()
        };
        let mut visits = Vec::new();
        let (mut ingest, mut snapshots, mut events) = (Duration::ZERO, Duration::ZERO, 0u64);
        let (mut rss_by_day, mut first_of_day) = (Vec::new(), Duration::ZERO);
        let mut visits_peak = 0;
        let started = Instant::now();
        for day in 0..month.days {
            month.visits(day, &mut visits);
            visits_peak = visits_peak.max(visits.capacity());
            for v in &visits {
                month.visit(*v as u32, day, |ev| chunk.push(&ev));
                if chunk.ends.len() >= CHUNK {
                    events += chunk.ends.len() as u64;
                    ingest += chunk.feed(&mut pipeline).await;
                }
            }
            events += chunk.ends.len() as u64;
            ingest += chunk.feed(&mut pipeline).await;
            // A live service snapshots every second; one a day keeps the summaries' memory
            // in the peak, and their cost is reported apart.
            let at = Instant::now();
            pipeline.snapshot().await.expect("snapshot");
            first_of_day = at.elapsed();
            snapshots += first_of_day;
            rss_by_day.push(status_kib("VmRSS"));
            eprintln!(
                "  day {day:2}: {events} events, {}/s, RSS {:.0} MiB",
                per_second(events, ingest.as_secs_f64()),
                status_kib("VmRSS") as f64 / 1024.0
            );
        }
        // The next refresh, with no write to an earlier day in between: the shards reuse
        // their unions of past days (the first snapshot of each day recomputes them).
        let at = Instant::now();
        let snapshot = pipeline.snapshot().await.expect("snapshot");
        let last_snapshot = at.elapsed();
        let summaries_bytes = if summaries {
            summary_publish_bytes(&mut pipeline).await
        } else {
            BTreeMap::new()
        };
        let wall = started.elapsed();
        let (peak_kib, end_kib) = (status_kib("VmHWM"), status_kib("VmRSS"));

        // Open sessions: new users, one event each, a minute behind the newest event (so
        // none closes), then RSS and the engine's estimate again.
        let newest = snapshot
            .last_event_at
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(T0 + month.days * DAY_MS - 1, |t| t.as_millisecond());
        // [open keys, RSS KiB, estimate B, peak RSS KiB] at each point.
        let mut open = vec![json!([
            snapshot.state.open_session_keys,
            end_kib,
            snapshot.state.estimated_bytes,
            peak_kib
        ])];
        let mut next_user = users;
        for target in bursts {
            while next_user < users + target {
                chunk.push(&Ev {
                    user: next_user,
                    ts_ms: newest - 60_000,
                    kind: Kind::PageView,
                });
                next_user += 1;
                if chunk.ends.len() >= CHUNK {
                    chunk.feed(&mut pipeline).await;
                }
            }
            chunk.feed(&mut pipeline).await;
            let state = pipeline.snapshot().await.expect("snapshot").state;
            open.push(json!([
                state.open_session_keys,
                status_kib("VmRSS"),
                state.estimated_bytes,
                status_kib("VmHWM")
            ]));
        }

        // Sketch sizes and the checkpoint image, from a copy of the state (taken after
        // every RSS reading).
        let state = pipeline.state().await.expect("state");
        // Then the watermark passes the burst (one event past timeout and lateness): the
        // engine's estimate once those sessions have closed, and RSS, which also holds what
        // the allocator kept of the copy above.
        let closed = if open.len() > 1 {
            chunk.push(&Ev {
                user: 0,
                ts_ms: newest + 36 * 60_000,
                kind: Kind::PageView,
            });
            chunk.feed(&mut pipeline).await;
            let state = pipeline.snapshot().await.expect("snapshot").state;
            json!([
                state.open_session_keys,
                state.estimated_bytes,
                status_kib("VmRSS")
            ])
        } else {
            Value::Null
        };
        pipeline.stop();
        let dense_bytes = 1usize << lg_k;
        let mut sizes = SketchSizes::default();
        for partition in &state.partitions {
            for day in 0..month.days {
                let day = ((T0 + day * DAY_MS) / DAY_MS) as Day;
                if let Some(activity) = partition.kpis.activity.day(day) {
                    sizes.active.add(&activity.active, dense_bytes);
                }
            }
            for sketch in partition.kpis.features.sketches() {
                sizes.features.add(sketch, dense_bytes);
            }
        }
        let image_bytes = state.to_bytes().len();
        let kpis = json!({
            "active_users": snapshot.kpis.activity.active_users,
            "new_users": snapshot.kpis.activity.new_users,
            "features": snapshot.kpis.features.features.iter()
                .map(|(name, f)| (name.clone(), json!(f.active_users)))
                .collect::<BTreeMap<_, _>>(),
        });
        json!({
            "users": users, "features": features, "shards": shards, "seed": seed,
            "dimensions": dimensions, "days": month.days,
            "feature_dimensions": feature_dimensions,
            "active_days": active_days, "lg_k": lg_k,
            "events": events, "accepted": snapshot.events.accepted,
            "late_for_sessions": snapshot.events.late_for_sessions,
            "ingest_seconds": ingest.as_secs_f64(),
            "daily_snapshot_seconds": snapshots.as_secs_f64(),
            "last_snapshot_seconds": last_snapshot.as_secs_f64(),
            "first_snapshot_of_last_day_seconds": first_of_day.as_secs_f64(),
            "summary_publish_bytes": summaries_bytes,
            "wall_seconds": wall.as_secs_f64(),
            "baseline_rss_kib": baseline_kib, "peak_rss_kib": peak_kib, "end_rss_kib": end_kib,
            "rss_by_day_kib": rss_by_day,
            "visit_buffer_bytes": visits_peak * 8,
            "estimated_state_bytes": snapshot.state.estimated_bytes,
            "open_session_keys": snapshot.state.open_session_keys,
            "sessions_closed": snapshot.kpis.sessions.session_durations.count,
            "open_sessions": open,
            "after_burst_closed": closed,
            "active_sketches": sizes.active.json(),
            "feature_sketches": sizes.features.json(),
            "state_image_bytes": image_bytes,
            "kpis": kpis,
        })
    });
    println!("{report}");
}

#[derive(Debug, Default)]
struct SketchTally {
    count: u64,
    dense: u64,
    bytes: u64,
    serialized: u64,
}

impl SketchTally {
    fn add(&mut self, sketch: &pulse_core::sketch::DistinctSketch, dense_bytes: usize) {
        let bytes = sketch.estimated_bytes();
        self.count += 1;
        self.dense += u64::from(bytes >= dense_bytes);
        self.bytes += bytes as u64;
        self.serialized += sketch.to_bytes().len() as u64;
    }

    fn json(&self) -> Value {
        json!({"count": self.count, "dense": self.dense, "bytes": self.bytes, "serialized": self.serialized})
    }
}

#[derive(Debug, Default)]
struct SketchSizes {
    active: SketchTally,
    features: SketchTally,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Config {
    users: u32,
    features: u32,
    shards: usize,
}

fn list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    arg(name, default.to_owned())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: cannot parse {s:?}"))
        })
        .collect()
}

/// The sweep: every configuration in a child process, then the tables.
fn parent() {
    let users_curve: Vec<u32> = list("--users", "10000,100000,1000000,10000000");
    let features_curve: Vec<u32> = list("--features", "10,200,1000");
    let shards_curve: Vec<usize> = list("--shards", "1,2,4");
    let base_users: u32 = arg("--base-users", 1_000_000);
    let base_features: u32 = arg("--base-features", 200);
    let base_shards: usize = arg("--base-shards", 2);
    // "USERS:FEATURES:SHARDS,...": more points, e.g. the largest month with more shards.
    let extra: Vec<String> = list("--extra", "10000000:200:4");
    let active_days: f64 = arg("--active-days", 3.0);
    let seed: u64 = arg("--seed", 1);
    // Open sessions: a small month, then this many new open sessions (cumulative).
    let bursts: String = arg("--bursts", "100000,1000000".to_owned());
    let burst_month_users: u32 = arg("--burst-month-users", 100_000);
    let verify_users: u32 = arg("--verify-users", 3_000);
    let limit: u64 = arg("--timeout-secs", 1_200);

    if verify_users > 0 {
        let month = Month::new(verify_users, 50, active_days, seed, DAYS);
        let (mine, oracle) = (exact_counts(&month), oracle_counts(&month));
        assert_eq!(
            mine, oracle,
            "the per-user exact count disagrees with pulse-tests' oracle"
        );
        eprintln!(
            "exact counter agrees with the oracle ({verify_users} users, 50 features, MAU {})",
            mine.active[2]
        );
    }

    let mut configs: Vec<Config> = Vec::new();
    let mut add = |c: Config| {
        if !configs.contains(&c) {
            configs.push(c);
        }
    };
    for &users in &users_curve {
        add(Config {
            users,
            features: base_features,
            shards: base_shards,
        });
    }
    for &features in &features_curve {
        add(Config {
            users: base_users,
            features,
            shards: base_shards,
        });
    }
    for &shards in &shards_curve {
        add(Config {
            users: base_users,
            features: base_features,
            shards,
        });
    }
    for spec in &extra {
        let parts: Vec<&str> = spec.split(':').collect();
        let [u, f, s] = parts[..] else {
            panic!("--extra: {spec:?} is not USERS:FEATURES:SHARDS")
        };
        add(Config {
            users: u.parse().expect("--extra users"),
            features: f.parse().expect("--extra features"),
            shards: s.parse().expect("--extra shards"),
        });
    }
    // Small populations first: a mistake shows in seconds, not after the largest month.
    configs.sort_by_key(|c| (c.users, c.features, c.shards));

    let settings = ChildSettings {
        active_days,
        seed,
        limit,
    };
    let mut runs: Vec<(Config, Value, Errors)> = Vec::new();
    for config in configs {
        let report = settings.run(config, "");
        let month = Month::new(config.users, config.features, active_days, seed, DAYS);
        let errors = Errors::of(&report["kpis"], &exact_counts(&month));
        eprintln!(
            "   {:.1} s, peak RSS {:.0} MiB, mean error {:.2} %, max {:.2} %",
            report["wall_seconds"].as_f64().unwrap_or(0.0),
            kib(&report["peak_rss_kib"]) / 1024.0,
            100.0 * errors.mean(),
            100.0 * errors.max()
        );
        runs.push((config, report, errors));
    }
    let burst_config = Config {
        users: burst_month_users,
        features: base_features,
        shards: base_shards,
    };
    let burst =
        (!bursts.trim().is_empty()).then(|| (burst_config, settings.run(burst_config, &bursts)));
    print_tables(&runs, base_users, base_features, base_shards);
    if let Some((config, report)) = &burst {
        let plain = runs.iter().find(|(c, ..)| c == config).map(|(_, r, _)| r);
        print_open_sessions(config, report, plain);
    }
    let summary: Vec<Value> = runs
        .iter()
        .map(|(_, r, e)| {
            let mut r = r.clone();
            r.as_object_mut().map(|o| o.remove("kpis"));
            r["mean_error"] = json!(e.mean());
            r["max_error"] = json!(e.max());
            r
        })
        .collect();
    let burst = burst.map(|(_, mut r)| {
        r.as_object_mut().map(|o| o.remove("kpis"));
        r
    });
    println!("{}", json!({ "runs": summary, "open_sessions_run": burst }));
}

/// What every child shares.
#[derive(Debug, Clone, Copy)]
struct ChildSettings {
    active_days: f64,
    seed: u64,
    limit: u64,
}

impl ChildSettings {
    /// Runs one configuration in a child process under `timeout`; its JSON report.
    fn run(&self, config: Config, bursts: &str) -> Value {
        eprintln!(
            "== {} users, {} features, {} shards{}",
            config.users,
            config.features,
            config.shards,
            if bursts.is_empty() {
                String::new()
            } else {
                format!(", then {bursts} open sessions")
            }
        );
        let exe = std::env::current_exe().expect("own path");
        let output = Command::new("timeout")
            .args(["-s", "KILL", &format!("{}s", self.limit)])
            .arg(exe)
            .arg("--child")
            .args(["--users", &config.users.to_string()])
            .args(["--features", &config.features.to_string()])
            .args(["--shards", &config.shards.to_string()])
            .args(["--active-days", &self.active_days.to_string()])
            .args(["--seed", &self.seed.to_string()])
            .args(["--bursts", bursts])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("start the child");
        assert!(output.status.success(), "child failed: {}", output.status);
        serde_json::from_slice(&output.stdout).expect("child's JSON")
    }
}

fn kib(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn rel(value: f64, exact: f64) -> f64 {
    if exact == 0.0 {
        if value == 0.0 { 0.0 } else { 1.0 }
    } else {
        (value - exact).abs() / exact
    }
}

/// Relative errors of one run: DAU/WAU/MAU, new users and every feature's 1/7/30 days.
#[derive(Debug, Clone)]
struct Errors {
    exact_active: [u64; 3],
    active: [f64; 3],
    new_users: [f64; 3],
    features: Vec<f64>,
}

impl Errors {
    fn of(kpis: &Value, exact: &Exact) -> Errors {
        let windows = |v: &Value, exact: &[u64; 3]| -> [f64; 3] {
            let mut out = [0.0; 3];
            for (i, w) in ["1d", "7d", "30d"].iter().enumerate() {
                out[i] = rel(v[w].as_f64().unwrap_or(0.0), exact[i] as f64);
            }
            out
        };
        let features = exact
            .features
            .iter()
            .enumerate()
            .flat_map(|(id, counts)| windows(&kpis["features"][feature_name(id as u16)], counts))
            .collect();
        Errors {
            exact_active: exact.active,
            active: windows(&kpis["active_users"], &exact.active),
            new_users: windows(&kpis["new_users"], &exact.new_users),
            features,
        }
    }

    fn all(&self) -> impl Iterator<Item = f64> + '_ {
        self.active
            .iter()
            .chain(&self.new_users)
            .chain(&self.features)
            .copied()
    }

    fn mean(&self) -> f64 {
        let (sum, n) = self.all().fold((0.0, 0), |(s, n), e| (s + e, n + 1));
        sum / f64::from(n)
    }

    fn max(&self) -> f64 {
        self.all().fold(0.0, f64::max)
    }

    fn feature_mean(&self) -> f64 {
        self.features.iter().sum::<f64>() / self.features.len() as f64
    }

    fn feature_max(&self) -> f64 {
        self.features.iter().copied().fold(0.0, f64::max)
    }
}

fn mib(v: f64) -> String {
    format!("{:.0}", v / MIB)
}

fn print_tables(
    runs: &[(Config, Value, Errors)],
    base_users: u32,
    base_features: u32,
    base_shards: usize,
) {
    let bytes = |r: &Value, k: &str| kib(&r[k]) * 1024.0;
    let rate = |r: &Value| kib(&r["events"]) / kib(&r["ingest_seconds"]);
    println!(
        "\n| users/month | features | shards | events | events/s | snapshot ms: first of the day / next refresh | peak RSS MiB | RSS end MiB | state estimate MiB | day×feature sketches (dense) | B per feature sketch | open sessions | checkpoint MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (c, r, _) in runs {
        let sketches = &r["feature_sketches"];
        println!(
            "| {} | {} | {} | {} | {}/s | {:.0} / {:.0} | {} | {} | {} | {} ({}) | {:.0} | {} | {} |",
            c.users,
            c.features,
            c.shards,
            r["events"],
            per_second(r["events"].as_u64().unwrap_or(0), kib(&r["ingest_seconds"])),
            1000.0 * kib(&r["first_snapshot_of_last_day_seconds"]),
            1000.0 * kib(&r["last_snapshot_seconds"]),
            mib(bytes(r, "peak_rss_kib")),
            mib(bytes(r, "end_rss_kib")),
            mib(kib(&r["estimated_state_bytes"])),
            sketches["count"],
            sketches["dense"],
            kib(&sketches["bytes"]) / kib(&sketches["count"]),
            r["open_session_keys"],
            mib(kib(&r["state_image_bytes"])),
        );
    }

    println!(
        "\n| users/month | features | shards | MAU exact | DAU / WAU / MAU error | new users 1/7/30 d error | feature figures | feature mean / max error | all figures mean / max error |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (c, _, e) in runs {
        let pct = |v: &[f64; 3]| {
            v.iter()
                .map(|x| format!("{:.2}", 100.0 * x))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "| {} | {} | {} | {} | {} % | {} % | {} | {:.2} / {:.2} % | {:.2} / {:.2} % |",
            c.users,
            c.features,
            c.shards,
            e.exact_active[2],
            pct(&e.active),
            pct(&e.new_users),
            e.features.len(),
            100.0 * e.feature_mean(),
            100.0 * e.feature_max(),
            100.0 * e.mean(),
            100.0 * e.max()
        );
    }

    // Slopes along each curve, between neighbouring points.
    let curve = |name: &str, pick: &dyn Fn(&Config) -> Option<f64>| {
        let mut points: Vec<(f64, &Value)> = runs
            .iter()
            .filter_map(|(c, r, _)| pick(c).map(|x| (x, r)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in points.windows(2) {
            let ((x0, r0), (x1, r1)) = (pair[0], pair[1]);
            let d_rss = bytes(r1, "peak_rss_kib") - bytes(r0, "peak_rss_kib");
            let d_est = kib(&r1["estimated_state_bytes"]) - kib(&r0["estimated_state_bytes"]);
            let per_unit = d_rss / (x1 - x0);
            println!(
                "| {name} | {x0} → {x1} | {:+.0} MiB | {} | {:+.0} MiB | {:.2}× |",
                d_rss / MIB,
                if per_unit.abs() >= 10_240.0 {
                    format!("{:.0} KiB", per_unit / 1024.0)
                } else {
                    format!("{per_unit:.0} B")
                },
                d_est / MIB,
                rate(r1) / rate(r0),
            );
        }
    };
    println!(
        "\n| curve | from → to | Δ peak RSS | Δ peak RSS per unit | Δ state estimate | events/s ratio |"
    );
    println!("|---|---|---|---|---|---|");
    curve("users (per user)", &|c| {
        (c.features == base_features && c.shards == base_shards).then_some(f64::from(c.users))
    });
    curve("features (per feature)", &|c| {
        (c.users == base_users && c.shards == base_shards).then_some(f64::from(c.features))
    });
    curve("shards (per shard)", &|c| {
        (c.users == base_users && c.features == base_features).then_some(c.shards as f64)
    });

    let max_users = runs.iter().map(|(c, ..)| c.users).max().unwrap_or(0);
    for (c, r, _) in runs.iter().filter(|(c, ..)| c.users == max_users) {
        let by_day: Vec<String> = r["rss_by_day_kib"]
            .as_array()
            .map(|a| {
                a.iter()
                    .step_by(5)
                    .map(|v| format!("{:.0}", kib(v) / 1024.0))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "\nRSS (MiB) at the end of days 1, 6, 11, 16, 21, 26 of the {} users × {} features × {} shards month: {}",
            c.users,
            c.features,
            c.shards,
            by_day.join(", ")
        );
    }
    let worst_mean = runs.iter().map(|(_, _, e)| e.mean()).fold(0.0, f64::max);
    let worst_max = runs.iter().map(|(_, _, e)| e.max()).fold(0.0, f64::max);
    println!(
        "\nAccuracy over every run: worst mean {:.2} %, worst max {:.2} % (target mean ≤ 1 %, max ≤ 3 %).",
        100.0 * worst_mean,
        100.0 * worst_max
    );
}

/// Open sessions against RSS and the engine's own estimate; `plain` is the same month
/// without the burst (for the checkpoint's bytes per open session).
fn print_open_sessions(config: &Config, report: &Value, plain: Option<&Value>) {
    println!(
        "\nOpen sessions after a {} users × {} features × {} shards month (one event each, none can close yet):\n",
        config.users, config.features, config.shards
    );
    println!(
        "| open sessions | RSS MiB | peak RSS MiB | state estimate MiB | Δ RSS per added session | Δ estimate per added session |"
    );
    println!("|---|---|---|---|---|---|");
    let points: Vec<[f64; 4]> = report["open_sessions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    [
                        kib(&p[0]),
                        kib(&p[1]) * 1024.0,
                        kib(&p[2]),
                        kib(&p[3]) * 1024.0,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    for (i, [keys, rss, estimate, peak]) in points.iter().enumerate() {
        let step = |f: fn(&[f64; 4]) -> f64| {
            i.checked_sub(1).map_or("–".to_owned(), |j| {
                let before = &points[j];
                format!("{:.0} B", (f(&points[i]) - f(before)) / (keys - before[0]))
            })
        };
        println!(
            "| {keys} | {} | {} | {} | {} | {} |",
            mib(*rss),
            mib(*peak),
            mib(*estimate),
            step(|p| p[1]),
            step(|p| p[2]),
        );
    }
    if let Some(closed) = report["after_burst_closed"].as_array() {
        println!(
            "| {} (the watermark passed them) | {} | – | {} | | |",
            closed[0],
            mib(kib(&closed[2]) * 1024.0),
            mib(kib(&closed[1]))
        );
    }
    if let (Some(plain), Some(first), Some(last)) = (plain, points.first(), points.last()) {
        let added = last[0] - first[0];
        println!(
            "\nCheckpoint image: {} MiB with {} open sessions, {} MiB without the burst: {:.0} B per open session.",
            mib(kib(&report["state_image_bytes"])),
            last[0],
            mib(kib(&plain["state_image_bytes"])),
            (kib(&report["state_image_bytes"]) - kib(&plain["state_image_bytes"])) / added
        );
    }
}
