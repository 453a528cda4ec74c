//! Overload: more events than pulse's buffers hold, either waiting when it starts (a
//! backlog) or produced while it runs as fast as a producer can. Memory stays bounded
//! (bounded channels, bounded librdkafka prefetch), `/readyz` stays up, lag is visible
//! while it catches up, and nothing is lost.

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

/// What an overloaded pulse showed until it had applied every event.
struct Watched {
    max_lag: f64,
    not_ready: usize,
    peak_rss: u64,
}

/// Polls `/metrics` and `/readyz` until `produced()` (known once production ends) events
/// are applied.
fn watch_until_applied(pulse: &Pulse, produced: impl Fn() -> Option<u64>) -> Watched {
    let deadline = Instant::now() + Duration::from_secs(240);
    let (mut max_lag, mut not_ready) = (0.0_f64, 0);
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
        not_ready += usize::from(pulse.get("/readyz").0 != 200);
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
        not_ready,
        peak_rss: peak_rss_bytes(pulse.pid()).expect("/proc status"),
    }
}

fn assert_bounded_and_ready(what: &str, produced: u64, watched: &Watched, pulse: &Pulse) {
    let (_, metrics) = pulse.get("/metrics");
    eprintln!(
        "overload ({what}): {produced} events applied; peak RSS {} MiB; largest lag seen {}; \
         state {} bytes",
        watched.peak_rss / 1024 / 1024,
        watched.max_lag,
        metric(&metrics, "pulse_state_bytes").unwrap_or(0.0)
    );
    assert!(
        watched.max_lag > 0.0,
        "the unread events show as consumer lag while pulse catches up"
    );
    assert_eq!(watched.not_ready, 0, "/readyz stays up while catching up");
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
    pulse.wait_for("the partition assignment", Duration::from_secs(30), |_| {
        pulse.log().contains("Partitions assigned.")
    });

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
