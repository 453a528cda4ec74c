//! Overload: more events than pulse's buffers hold, either waiting when it starts (a
//! backlog) or produced while it runs as fast as a producer can. Memory stays bounded
//! (bounded channels, bounded librdkafka prefetch), `/readyz` stays up, lag is visible
//! while it catches up, and nothing is lost.
//!
//! "Ready throughout" means no sustained unreadiness: on two cores shared with builds, one
//! `/readyz` poll of a fully loaded debug build can go unanswered without pulse having said
//! anything, so a single miss is tolerated; several in a row, or misses on more than a tenth
//! of the polls, are not ([`Readiness`]).

use std::time::{Duration, Instant};

use pulse_tests::kafka;

use crate::helpers::loadgen;
use crate::kafka_tests::{SERIAL, accepted, write_config_with};
use crate::process::{Pulse, metric};

/// Users of the workload: about 107 000 events, 15–20 MB of JSON.
const USERS: u32 = 1_500;

/// Peak resident memory of a process, from /proc (Linux).
fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Consecutive failed `/readyz` polls that count as pulse being not ready, not as a poll
/// lost to a busy machine.
const SUSTAINED: usize = 3;

/// `/readyz` polls: how many, how many failed (not 200, or no answer), the longest run.
#[derive(Debug, Default)]
struct Readiness {
    polls: usize,
    misses: usize,
    run: usize,
    longest_run: usize,
}

impl Readiness {
    fn record(&mut self, ready: bool) {
        self.polls += 1;
        if ready {
            self.run = 0;
        } else {
            self.misses += 1;
            self.run += 1;
            self.longest_run = self.longest_run.max(self.run);
        }
    }

    /// Ready throughout, allowing isolated misses: none of [`SUSTAINED`] polls in a row, and
    /// (after the first) misses on at most a tenth of the polls.
    fn verdict(&self) -> Result<(), String> {
        if self.longest_run >= SUSTAINED {
            return Err(format!(
                "/readyz failed {} polls in a row ({self:?})",
                self.longest_run
            ));
        }
        if self.misses > 1 && self.misses * 10 > self.polls {
            return Err(format!(
                "/readyz failed {} of {} polls ({self:?})",
                self.misses, self.polls
            ));
        }
        Ok(())
    }
}

/// What an overloaded pulse showed until it had applied every event.
struct Watched {
    max_lag: f64,
    readiness: Readiness,
    peak_rss: u64,
}

/// Polls `/metrics` and `/readyz` until `produced()` (known once production ends) events
/// are applied.
fn watch_until_applied(pulse: &Pulse, produced: impl Fn() -> Option<u64>) -> Watched {
    let deadline = Instant::now() + Duration::from_secs(240);
    let (mut max_lag, mut readiness) = (0.0_f64, Readiness::default());
    loop {
        let (status, metrics) = pulse.get("/metrics");
        if status == 200 {
            let lag: f64 = metrics
                .lines()
                .filter(|l| l.starts_with("pulse_consumer_lag_messages{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            max_lag = max_lag.max(lag);
        }
        readiness.record(pulse.get("/readyz").0 == 200);
        let applied = pulse.snapshot().map(|s| accepted(&s));
        if produced().is_some_and(|n| applied == Some(n)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not catch up:\n{}",
            pulse.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    Watched {
        max_lag,
        readiness,
        peak_rss: peak_rss_bytes(pulse.pid()).expect("/proc status"),
    }
}

fn assert_bounded_and_ready(what: &str, produced: u64, watched: &Watched, pulse: &Pulse) {
    let (_, metrics) = pulse.get("/metrics");
    eprintln!(
        "overload ({what}): {produced} events applied; peak RSS {} MiB; largest lag seen {}; \
         state {} bytes; readiness {:?}",
        watched.peak_rss / 1024 / 1024,
        watched.max_lag,
        metric(&metrics, "pulse_state_bytes").unwrap_or(0.0),
        watched.readiness
    );
    assert!(
        watched.max_lag > 0.0,
        "the unread events show as consumer lag while pulse catches up"
    );
    if let Err(why) = watched.readiness.verdict() {
        panic!("/readyz stays up while catching up: {why}");
    }
    // Generous: the workload is 15–20 MB of JSON; buffers are bounded well below it, and the
    // state of 1 500 users is tiny. A debug build's baseline is ~30 MB.
    assert!(
        watched.peak_rss < 256 * 1024 * 1024,
        "peak RSS {} bytes",
        watched.peak_rss
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_backlog_is_absorbed_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "overload", 3).await;
    // Everything produced before pulse starts: all backlog.
    let produced = loadgen(&brokers, &topic, USERS, 23);
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config_with(dir.path(), &brokers, &topic, "");
    let pulse = Pulse::start(&["run", "--config", &config_path, "--clock", "event-time"]);
    pulse.wait_for_status("/readyz", 200, Duration::from_secs(30));

    let watched = watch_until_applied(&pulse, || Some(produced));
    assert_bounded_and_ready("backlog", produced, &watched, &pulse);
    assert!(pulse.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn production_faster_than_pulse_applies_is_absorbed_and_caught_up() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "overload-live", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config_with(dir.path(), &brokers, &topic, "");
    let pulse = Pulse::start(&["run", "--config", &config_path, "--clock", "event-time"]);
    pulse.wait_for_status("/readyz", 200, Duration::from_secs(30));
    // Wait for the group join, so that the events meet a consumer that is already reading.
    pulse.wait_for(
        "the partition assignment",
        kafka::GROUP_JOIN_TIMEOUT,
        // With a state location the line goes on: "Partitions assigned; loading their state."
        |_| pulse.log().contains("Partitions assigned"),
    );

    // `pulse loadgen` produces without pause, pipelined (hundreds of thousands per second
    // in a release build), faster than pulse applies them in this debug build.
    let produced = std::sync::Arc::new(std::sync::OnceLock::new());
    let producer = {
        let (brokers, topic, produced) = (brokers.clone(), topic.clone(), produced.clone());
        std::thread::spawn(move || produced.set(loadgen(&brokers, &topic, USERS, 29)))
    };
    let watched = watch_until_applied(&pulse, || produced.get().copied());
    producer.join().unwrap().unwrap();
    let produced = *produced.get().unwrap();
    assert_bounded_and_ready("while producing", produced, &watched, &pulse);
    assert!(pulse.stop(Duration::from_secs(30)).success());
}

/// One lost poll is a busy machine; a run of them, or a pulse that flaps, is not ready.
#[test]
fn readiness_tolerates_one_miss_but_not_sustained_or_repeated_unreadiness() {
    let polls = |pattern: &str| {
        let mut readiness = Readiness::default();
        pattern.chars().for_each(|c| readiness.record(c == '+'));
        readiness.verdict()
    };
    assert_eq!(polls("++++++++++"), Ok(()));
    assert_eq!(polls("+++-++++++"), Ok(()), "a single miss");
    assert_eq!(polls("-"), Ok(()), "a single miss, even as the only poll");
    assert!(polls("+++---++++").is_err(), "three in a row");
    assert!(polls("+-+++-++++").is_err(), "two of ten: flapping");
    assert_eq!(
        polls("+-+++++++++++++++++++-++"),
        Ok(()),
        "two of 24, apart"
    );
}
