//! Seeded, deterministic synthetic product-usage events for pulse's tests, benchmarks and
//! demos (`pulse demo`, `pulse loadgen`).
//!
//! This crate owns *what realistic input looks like*: a population of users with power-law
//! activity, daily and weekly rhythms, sessions of page views with gaps of seconds to
//! minutes, explicit session markers, logins, signups on a user's first day, feature usage
//! by per-feature adoption, bounces and unrecognised "other" events, rendered in the three
//! wire shapes and three timestamp styles the engine decodes. It must stay pure: no I/O, no
//! threads, no clock; the caller says which instants to generate, and the same config
//! always yields the same events.
//!
//! Events come out in *arrival* order, which differs from event-time order by less than
//! [`WorkloadConfig::max_disorder_ms`]: every event's `ts_ms` is at least the largest
//! `ts_ms` handed out before it minus that bound. The engine is exact within a 5-minute
//! disorder bound, so the exact model in `pulse-tests` can be compared with it.
//!
//! Layout: [`config`] (what to generate, validation), [`event`] (the event and its JSON),
//! [`generator`] (the incremental generator; the design decisions are explained there), and,
//! with the `kafka` feature, `producer`: the one edge that does I/O, `pulse loadgen`'s
//! Kafka producer, kept beside the workload it sends rather than with pulse's consumer.

pub mod config;
pub mod event;
pub mod generator;
#[cfg(feature = "kafka")]
pub mod producer;

pub use config::{
    ConfigError, DAY_MS, FeatureSpec, MAX_DISORDER_LIMIT_MS, Shape, TimestampStyle, WorkloadConfig,
};
pub use event::{GeneratedEvent, Outcome, Property, UserId};
pub use generator::Generator;

/// The whole history `[end_ms - days * DAY_MS, end_ms]`, in arrival order.
///
/// # Panics
/// If the config is invalid; call [`WorkloadConfig::validate`] first for a typed error.
/// (Generated workloads come from code and tests, where a bad config is a bug.)
pub fn generate(cfg: &WorkloadConfig) -> Vec<GeneratedEvent> {
    let mut generator = match Generator::new(cfg) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let mut events = generator.events_until(cfg.end_ms + 1);
    events.extend(generator.flush());
    events
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::Value;

    use super::*;

    fn small(seed: u64) -> WorkloadConfig {
        WorkloadConfig {
            seed,
            users: 300,
            days: 10,
            ..WorkloadConfig::default()
        }
    }

    /// The disorder invariant: each event is at most `bound` older than the newest one
    /// handed out before it.
    fn assert_disorder_within(events: &[GeneratedEvent], bound: i64) {
        let mut max_seen = i64::MIN;
        for (i, e) in events.iter().enumerate() {
            assert!(
                e.ts_ms >= max_seen.saturating_sub(bound),
                "event {i} at {} is more than {bound} ms older than {max_seen}",
                e.ts_ms
            );
            max_seen = max_seen.max(e.ts_ms);
        }
    }

    #[test]
    fn same_seed_same_events() {
        let a = generate(&small(1));
        let b = generate(&small(1));
        assert!(a.len() > 1_000, "{}", a.len());
        assert_eq!(a, b);
    }

    #[test]
    fn different_seeds_differ() {
        let a = generate(&small(1));
        let b = generate(&small(2));
        assert_ne!(a, b);
        let users = |ev: &[GeneratedEvent]| -> HashSet<String> {
            ev.iter().map(|e| e.user.to_string()).collect()
        };
        assert_ne!(users(&a), users(&b));
    }

    #[test]
    fn times_stay_in_history_and_disorder_is_bounded() {
        let cfg = WorkloadConfig::default();
        let events = generate(&cfg);
        assert!(events.len() > 100_000, "{}", events.len());
        assert!(
            events
                .iter()
                .all(|e| (cfg.start_ms()..=cfg.end_ms).contains(&e.ts_ms))
        );
        assert_disorder_within(&events, cfg.max_disorder_ms);
        // Disorder is real, not just allowed: some events arrive after a later one.
        let mut max_seen = i64::MIN;
        let mut late = 0;
        for e in &events {
            late += usize::from(e.ts_ms < max_seen);
            max_seen = max_seen.max(e.ts_ms);
        }
        assert!(late > events.len() / 100, "{late}");
    }

    #[test]
    fn zero_disorder_means_time_order() {
        let cfg = WorkloadConfig {
            max_disorder_ms: 0,
            ..small(3)
        };
        let events = generate(&cfg);
        assert!(events.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    }

    #[test]
    fn slicing_time_does_not_change_the_stream() {
        let cfg = small(4);
        let whole = generate(&cfg);
        let mut g = Generator::new(&cfg).unwrap();
        let mut sliced = Vec::new();
        // Uneven slices, from tiny (live ticks) to multi-day (backfill).
        let mut t = cfg.start_ms();
        for step in [1, 999, 3 * DAY_MS, 60_000, 1_000, DAY_MS + 7]
            .iter()
            .cycle()
        {
            let next = (t + step).min(cfg.end_ms + 1);
            let slice = g.events_until(next);
            assert!(slice.iter().all(|e| e.ts_ms < next));
            sliced.extend(slice);
            t = next;
            if t == cfg.end_ms + 1 {
                break;
            }
        }
        sliced.extend(g.flush());
        assert_eq!(sliced, whole);
    }

    #[test]
    fn live_generation_continues_after_the_history() {
        let cfg = small(5);
        let mut g = Generator::new(&cfg).unwrap();
        let mut all = g.events_until(cfg.end_ms);
        assert_eq!(g.cursor_ms(), cfg.end_ms);
        for tick in 0..3 {
            let from = cfg.end_ms + tick * DAY_MS;
            all.extend(g.events_in(from, from + DAY_MS));
        }
        assert!(all.iter().any(|e| e.ts_ms > cfg.end_ms + DAY_MS));
        assert_disorder_within(&all, cfg.max_disorder_ms);
        // The population grows by the signup rate after the history.
        let signups_after = all
            .iter()
            .filter(|e| e.ts_ms > cfg.end_ms && (e.name == "signup" || e.name == "Signed Up"))
            .count();
        assert!(signups_after > 0);
        // A skipped gap yields nothing from inside it.
        let gap_end = g.cursor_ms() + DAY_MS;
        let after_gap = g.events_in(gap_end, gap_end + 60 * 60_000);
        assert!(
            after_gap
                .iter()
                .all(|e| e.ts_ms >= gap_end - cfg.max_disorder_ms)
        );
    }

    #[test]
    fn every_shape_and_timestamp_style_appears() {
        let cfg = small(6);
        let events = generate(&cfg);
        for shape in &cfg.shapes {
            assert!(events.iter().any(|e| e.shape == *shape), "{shape:?}");
        }
        for style in &cfg.timestamp_styles {
            assert!(
                events.iter().any(|e| e.timestamp_style == *style),
                "{style:?}"
            );
        }
        assert!(events.iter().any(|e| matches!(e.user, UserId::Int(_))));
        assert!(events.iter().any(|e| e.session_id.is_some()));
        assert!(events.iter().any(|e| e.session_id.is_none()));
        for name in [
            "page_view",
            "$pageview",
            "Page Viewed",
            "login",
            "feature_used",
            "Feature Used",
            "session_start",
            "Session Started",
            "session_end",
            "Session Ended",
            "signup",
            "Signed Up",
            "button_clicked",
            "Button Clicked",
        ] {
            assert!(events.iter().any(|e| e.name == name), "{name}");
        }
    }

    #[test]
    fn integer_users_are_also_sent_as_decimal_strings() {
        let events = generate(&small(7));
        let ints: HashSet<i64> = events
            .iter()
            .filter_map(|e| match e.user {
                UserId::Int(n) => Some(n),
                UserId::Text(_) => None,
            })
            .collect();
        let texts: HashSet<&str> = events
            .iter()
            .filter_map(|e| match &e.user {
                UserId::Text(s) => Some(s.as_str()),
                UserId::Int(_) => None,
            })
            .collect();
        assert!(ints.iter().any(|n| texts.contains(n.to_string().as_str())));
    }

    #[test]
    fn realistic_rhythms_and_signups() {
        let cfg = WorkloadConfig::default();
        let events = generate(&cfg);
        // Daily rhythm: working hours are busier than the night (UTC).
        let hour = |e: &GeneratedEvent| e.ts_ms.rem_euclid(DAY_MS) / 3_600_000;
        let day = events
            .iter()
            .filter(|e| (10..16).contains(&hour(e)))
            .count();
        let night = events.iter().filter(|e| (1..7).contains(&hour(e))).count();
        assert!(day > 3 * night, "{day} vs {night}");
        // Weekly rhythm: weekend days are quieter than weekdays on average.
        let mut per_weekday = [0usize; 7];
        for e in &events {
            per_weekday[(e.ts_ms.div_euclid(DAY_MS) + 3).rem_euclid(7) as usize] += 1;
        }
        let weekday_avg = per_weekday[..5].iter().sum::<usize>() / 5;
        assert!(per_weekday[5] < weekday_avg && per_weekday[6] < weekday_avg);
        // Each user signs up at most once, and nothing of theirs comes before the signup.
        let mut first_seen: HashMap<String, i64> = HashMap::new();
        let mut signup_at: HashMap<String, i64> = HashMap::new();
        for e in &events {
            let u = e.user.to_string();
            let first = first_seen.entry(u.clone()).or_insert(e.ts_ms);
            *first = (*first).min(e.ts_ms);
            if e.name == "signup" || e.name == "Signed Up" {
                assert!(signup_at.insert(u, e.ts_ms).is_none());
            }
        }
        assert!(signup_at.len() > 100, "{}", signup_at.len());
        for (u, t) in &signup_at {
            assert_eq!(first_seen[u], *t, "{u}");
        }
        // Power law: the busiest 10% of users send a large share of the events.
        let mut per_user: HashMap<String, usize> = HashMap::new();
        for e in &events {
            *per_user.entry(e.user.to_string()).or_default() += 1;
        }
        let mut counts: Vec<usize> = per_user.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: usize = counts[..counts.len() / 10].iter().sum();
        assert!(top * 3 > events.len(), "{top} of {}", events.len());
    }

    #[test]
    fn json_parses_and_carries_the_fields() {
        let cfg = small(8);
        let events = generate(&cfg);
        let mut seen_shapes = HashSet::new();
        for e in &events {
            let v: Value = serde_json::from_str(&e.to_json()).unwrap();
            let first = |paths: &[&str]| paths.iter().find_map(|p| v.pointer(p)).cloned();
            // The engine's field paths, first present wins.
            let user = first(&["/user_id", "/userId", "/distinct_id"]).unwrap();
            match &e.user {
                UserId::Int(n) => assert_eq!(user.as_i64(), Some(*n)),
                UserId::Text(s) => assert_eq!(user.as_str(), Some(s.as_str())),
            }
            let name = first(&["/event", "/type"]).unwrap();
            assert_eq!(name.as_str(), Some(e.name.as_str()));
            let time = first(&["/timestamp", "/ts", "/time"]).unwrap();
            let ts = match e.timestamp_style {
                TimestampStyle::EpochMillis => time.as_i64().unwrap(),
                TimestampStyle::Rfc3339Utc => {
                    let s = time.as_str().unwrap();
                    assert!(s.ends_with('Z') && s.len() == 24, "{s}");
                    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
                }
                TimestampStyle::Rfc3339Offset { .. } => {
                    let s = time.as_str().unwrap();
                    assert!(!s.ends_with('Z') && s.len() == 29, "{s}");
                    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
                }
            };
            assert_eq!(ts, e.ts_ms);
            let feature = first(&["/feature", "/properties/feature"]);
            assert_eq!(
                feature.as_ref().and_then(Value::as_str),
                e.feature.as_deref()
            );
            let session = first(&["/session_id", "/properties/$session_id"]);
            assert_eq!(
                session.as_ref().and_then(Value::as_str),
                e.session_id.as_deref()
            );
            match e.shape {
                Shape::Plain => assert!(v.get("user_id").is_some()),
                Shape::Segment => {
                    assert_eq!(v["type"], "track");
                    assert!(v["messageId"].is_string());
                    assert!(v["properties"].is_object());
                }
                Shape::PostHog => assert!(v.get("distinct_id").is_some()),
            }
            seen_shapes.insert(e.shape);
        }
        assert_eq!(seen_shapes.len(), 3);
    }

    #[test]
    fn features_follow_adoption() {
        let events = generate(&WorkloadConfig::default());
        let users_of = |f: &str| -> usize {
            events
                .iter()
                .filter(|e| e.feature.as_deref() == Some(f))
                .map(|e| e.user.to_string())
                .collect::<HashSet<_>>()
                .len()
        };
        assert!(users_of("search") > 3 * users_of("export"));
        assert!(users_of("export") > 0);
        // Only feature events carry a feature.
        assert!(
            events
                .iter()
                .filter(|e| e.feature.is_some())
                .all(|e| e.name == "feature_used" || e.name == "Feature Used")
        );
    }

    #[test]
    fn empty_population_generates_nothing() {
        let cfg = WorkloadConfig {
            users: 0,
            ..small(9)
        };
        assert!(generate(&cfg).is_empty());
    }

    /// `cargo test --release -p pulse-workload -- --ignored --nocapture throughput`
    #[test]
    #[ignore = "timing; run in release"]
    fn throughput() {
        let cfg = WorkloadConfig {
            users: 20_000,
            ..WorkloadConfig::default()
        };
        let start = std::time::Instant::now();
        let events = generate(&cfg);
        let secs = start.elapsed().as_secs_f64();
        let mut buf = String::new();
        let start = std::time::Instant::now();
        for e in &events {
            buf.clear();
            e.write_json(&mut buf);
        }
        let json_secs = start.elapsed().as_secs_f64();
        println!(
            "{} events in {secs:.3} s = {:.2} M events/s; JSON {:.2} M events/s",
            events.len(),
            events.len() as f64 / secs / 1e6,
            events.len() as f64 / json_secs / 1e6,
        );
    }
}
