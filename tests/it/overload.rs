//! Overload: a backlog far larger than pulse's buffers. Memory stays bounded (bounded
//! channels, bounded librdkafka prefetch), `/readyz` stays up, lag is visible while it
//! catches up, and nothing is lost.

use std::time::{Duration, Instant};

use pulse_tests::kafka;

use crate::helpers::loadgen;
use crate::kafka_tests::{SERIAL, accepted, write_config_with};
use crate::process::{Pulse, metric};

/// Peak resident memory of a process, from /proc (Linux).
fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_backlog_is_absorbed_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "overload", 3).await;
    // About 100 000 events (≈ 15–20 MB of JSON), produced before pulse starts: all backlog.
    let produced = loadgen(&brokers, &topic, 1_500, 23);
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config_with(dir.path(), &brokers, &topic, "");
    let pulse = Pulse::start(&["run", "--config", &config_path, "--clock", "event-time"]);
    pulse.wait_for_status("/readyz", 200, Duration::from_secs(30));

    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut saw_lag, mut not_ready) = (false, 0);
    loop {
        let (status, metrics) = pulse.get("/metrics");
        if status == 200 {
            let lag: f64 = metrics
                .lines()
                .filter(|l| l.starts_with("pulse_consumer_lag_messages{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            saw_lag |= lag > 0.0;
        }
        not_ready += usize::from(pulse.get("/readyz").0 != 200);
        let done = pulse.snapshot().is_some_and(|s| accepted(&s) == produced);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not catch up:\n{}",
            pulse.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let peak = peak_rss_bytes(pulse.pid()).expect("/proc status");
    let (_, metrics) = pulse.get("/metrics");
    eprintln!(
        "overload: {produced} events caught up; peak RSS {} MiB; lag seen: {saw_lag}; state {} bytes",
        peak / 1024 / 1024,
        metric(&metrics, "pulse_state_bytes").unwrap_or(0.0)
    );
    assert!(
        saw_lag,
        "the backlog shows as consumer lag while pulse catches up"
    );
    assert_eq!(not_ready, 0, "/readyz stays up while catching up");
    // Generous: the backlog is 15–20 MB of JSON; buffers are bounded well below it, and the
    // state of 1 500 users is tiny. A debug build's baseline is ~30 MB.
    assert!(peak < 256 * 1024 * 1024, "peak RSS {peak} bytes");
    assert!(pulse.stop(Duration::from_secs(30)).success());
}
