//! End-to-end throughput: the Kafka ceiling (a bare rdkafka consumer) vs `pulse run`.
//!
//! Starts a private tansu broker (memory storage) on a free loopback port, fills a topic
//! with `pulse loadgen` (fixed `--end`, so runs repeat), then reads the whole topic twice:
//! once with a bare `BaseConsumer` that touches every payload byte and stops after the
//! last record (the ceiling: what any consumer on this broker and machine can do), once
//! with `pulse run --clock event-time` polled through `/v1/metrics` until every event is
//! accepted (or rejected). Prints a Markdown table row and a JSON line.
//!
//! Both readers fetch from the same broker on the same 2 cores, so the ratio is what
//! matters. Each figure is reported twice: from the start (the ceiling's `assign`; pulse's
//! process start, which includes the consumer-group join, about `session.timeout.ms / 2` on
//! tansu) and from the first record to the last (steady state); the steady figures are
//! compared with each other, the from-start ones with each other.
//!
//! Then, with the backlog consumed, single events measure freshness: produce → counted by
//! `/v1/metrics` (`--probes`, 20 by default; `--refresh-ms` sets pulse's
//! `http.refresh_interval`, 100 ms by default so that the throughput poll is fine-grained;
//! `--refresh-ms 1000` measures freshness at pulse's default).
//!
//! With `KAFKA_BROKERS` set, the harness uses that broker instead (Apache Kafka, Redpanda…)
//! and a topic of its own, `bench-events-<unix time>`, left behind for the operator to
//! delete: the ceiling is then that broker's.
//!
//! Both readers' CPU time from their first record to their last is measured per thread
//! (from `/proc`), with the private broker's: on a broker that is the bottleneck, as tansu is
//! here, the share of that time pulse's busiest thread was busy says how much faster a
//! broker pulse could follow before one of its threads becomes the limit.
//!
//! `--instances N` (1 by default) runs `pulse run` as N members of one consumer group on
//! one shared state directory, with the global view on (`[summaries]`, published every
//! 200 ms), as a scaled-out deployment runs: the figures are then the group's, its CPU the
//! sum of the members' (per event, the cost of scaling out), and the end is the first
//! member whose global view counts every event. Freshness is probed with one member only.
//!
//! Every process runs under `timeout -s KILL`, so nothing outlives the harness for long.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use support::{
    Guard, arg, free_port, http_get, per_second, pulse_bin, repo_root, thread_cpu_between,
    thread_cpu_seconds, wait_for_port,
};

/// The topic of this run: fixed on the private broker, fresh on an external one.
static TOPIC: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// How `pulse run` runs, and how freshness is probed once the backlog is consumed.
struct Probing {
    /// Members of the consumer group.
    instances: usize,
    /// pulse's `http.refresh_interval`, in milliseconds.
    refresh_ms: u64,
    probes: usize,
}

/// CPU time per thread of a reader and in total of the broker, at one moment.
struct CpuReading {
    reader: BTreeMap<u32, (String, f64)>,
    broker: Option<f64>,
}

impl CpuReading {
    /// `reader_pids`: the reader's processes (several for a group of `pulse run`).
    fn now(reader_pids: &[u32], broker_pid: Option<u32>) -> CpuReading {
        CpuReading {
            reader: reader_pids
                .iter()
                .flat_map(|&pid| thread_cpu_seconds(pid))
                .collect(),
            broker: broker_pid.map(|pid| thread_cpu_seconds(pid).values().map(|(_, s)| s).sum()),
        }
    }
}

/// CPU used between two readings: by the reader (all threads), by its busiest thread, by
/// the broker.
struct CpuUsed {
    reader_seconds: f64,
    busiest_thread: String,
    busiest_seconds: f64,
    broker_seconds: Option<f64>,
}

impl CpuUsed {
    fn between(start: &CpuReading, end: &CpuReading) -> CpuUsed {
        let threads = thread_cpu_between(&start.reader, &end.reader);
        let (busiest_thread, busiest_seconds) = threads.first().cloned().unwrap_or_default();
        CpuUsed {
            reader_seconds: threads.iter().map(|(_, s)| s).sum(),
            busiest_thread,
            busiest_seconds,
            broker_seconds: end.broker.zip(start.broker).map(|(e, s)| e - s),
        }
    }

    /// A Markdown row: CPU over `seconds` of reading `records`.
    fn row(&self, reader: &str, records: u64, seconds: f64) -> String {
        format!(
            "| {reader} | {:.2} s | {:.2} µs | {} {:.2} s, **{:.0} %** of {seconds:.2} s | {} |",
            self.reader_seconds,
            1e6 * self.reader_seconds / records as f64,
            self.busiest_thread,
            self.busiest_seconds,
            100.0 * self.busiest_seconds / seconds,
            self.broker_seconds
                .map_or("–".to_owned(), |b| format!("{b:.2} s")),
        )
    }

    fn json(&self, seconds: f64) -> serde_json::Value {
        serde_json::json!({
            "reader_cpu_seconds": self.reader_seconds,
            "busiest_thread": self.busiest_thread,
            "busiest_thread_cpu_seconds": self.busiest_seconds,
            "busiest_thread_share": self.busiest_seconds / seconds,
            "broker_cpu_seconds": self.broker_seconds,
        })
    }
}

fn topic() -> &'static str {
    TOPIC.get().expect("set at start")
}

fn main() {
    let events: u64 = arg("--events", 1_000_000);
    let users: u32 = arg("--users", 16_000);
    let partitions: i32 = arg("--partitions", 3);
    let limit = Duration::from_secs(arg("--timeout-secs", 1500));
    let deadline = Instant::now() + limit;
    let probing = Probing {
        instances: arg("--instances", 1),
        refresh_ms: arg("--refresh-ms", 100),
        probes: arg("--probes", 20),
    };

    let pulse = pulse_bin();
    let work = tempfile::tempdir().expect("temp dir");
    let external = std::env::var("KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.trim().is_empty());
    let (brokers, mut broker) = match external {
        Some(brokers) => {
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            TOPIC.get_or_init(|| format!("bench-events-{unix}"));
            eprintln!("KAFKA_BROKERS={brokers}: topic {}", topic());
            (brokers, None)
        }
        None => {
            TOPIC.get_or_init(|| "bench-events".to_owned());
            let (brokers, guard) = start_tansu(limit, work.path());
            eprintln!("tansu on {brokers}");
            (brokers, Some(guard))
        }
    };
    eprintln!("producing {events} events ({users} users, 30 days)");

    // 1. Fill the topic.
    let started = Instant::now();
    let status = std::process::Command::new("timeout")
        .args(["-s", "KILL", &format!("{}s", remaining(deadline))])
        .arg(&pulse)
        .args(["loadgen", "--brokers", &brokers, "--topic", topic()])
        .args(["--partitions", &partitions.to_string()])
        .args(["--users", &users.to_string(), "--days", "30"])
        .args(["--events", &events.to_string()])
        .args(["--end", "2026-03-01T12:00:00Z", "--log-level", "warn"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run pulse loadgen");
    assert!(status.success(), "pulse loadgen failed: {status}");
    let produce_s = started.elapsed().as_secs_f64();
    // tansu (0.x, memory storage) reports a high watermark below the last offset (it
    // seems to give the last batch's base offset), so the readers stop on the count of
    // records loadgen had acknowledged instead; the watermarks are printed for reference.
    let watermarks = high_watermarks(&brokers, partitions);
    eprintln!("high watermarks sum to {watermarks}; loadgen acknowledged {events}");
    let total = events;
    eprintln!(
        "produced {total} records in {produce_s:.1} s ({}/s)",
        per_second(total, produce_s)
    );

    let broker_pid = broker.as_ref().map(|b| b.child.id());

    // 2. The ceiling.
    let (ceiling_s, ceiling_first_s, ceiling_bytes, checksum, ceiling_cpu) =
        bare_consumer(&brokers, partitions, total, broker_pid, deadline);
    eprintln!(
        "bare consumer: {total} records, {ceiling_bytes} bytes in {ceiling_s:.2} s ({}/s, checksum {checksum})",
        per_second(total, ceiling_s)
    );

    // 3. pulse run.
    let (pulse_total_s, pulse_steady_s, steady_events, accepted, rejected, mut fresh, pulse_cpu) =
        pulse_run(
            &pulse,
            &brokers,
            total,
            work.path(),
            &probing,
            broker_pid,
            deadline,
        );
    if let Some(broker) = broker.as_mut() {
        broker.terminate(Duration::from_secs(5));
    }

    fresh.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        fresh
            .get(((q * fresh.len() as f64).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    eprintln!(
        "freshness over {} probes: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        fresh.len(),
        pick(0.5),
        pick(0.9),
        pick(1.0)
    );
    let ceiling_rate = total as f64 / ceiling_s;
    // Like pulse's steady figure: from the first record to the last.
    let ceiling_steady_rate = (total - 1) as f64 / (ceiling_s - ceiling_first_s);
    let steady_rate = steady_events as f64 / pulse_steady_s;
    let total_rate = total as f64 / pulse_total_s;
    println!(
        "| {total} | {:.0} B | {produce_s:.1} s | {ceiling_s:.2} s ({}/s; steady {}/s) | {pulse_total_s:.2} s ({}/s) | {pulse_steady_s:.2} s ({}/s) | **{:.0} %** | {:.0} % |",
        ceiling_bytes as f64 / total as f64,
        per_second(total, ceiling_s),
        per_second(total - 1, ceiling_s - ceiling_first_s),
        per_second(total, pulse_total_s),
        per_second(steady_events, pulse_steady_s),
        100.0 * steady_rate / ceiling_steady_rate,
        100.0 * total_rate / ceiling_rate,
    );
    let ceiling_steady_s = ceiling_s - ceiling_first_s;
    println!();
    println!("| reader | CPU, first record to last | per record | busiest thread | broker CPU |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        ceiling_cpu.row("ceiling", total - 1, ceiling_steady_s)
    );
    println!(
        "{}",
        pulse_cpu.row("pulse run", steady_events, pulse_steady_s)
    );
    println!(
        "{}",
        serde_json::json!({
            "events": total, "accepted": accepted, "rejected": rejected,
            "produce_seconds": produce_s, "ceiling_seconds": ceiling_s,
            "ceiling_events_per_second": ceiling_rate,
            "ceiling_first_record_seconds": ceiling_first_s,
            "ceiling_steady_events_per_second": ceiling_steady_rate,
            "pulse_seconds_from_start": pulse_total_s,
            "pulse_events_per_second_from_start": total_rate,
            "pulse_steady_seconds": pulse_steady_s, "pulse_steady_events": steady_events,
            "pulse_steady_events_per_second": steady_rate,
            "ratio_steady": steady_rate / ceiling_steady_rate, "ratio_from_start": total_rate / ceiling_rate,
            "freshness_ms": fresh, "freshness_p50_ms": pick(0.5), "freshness_p90_ms": pick(0.9),
            "freshness_max_ms": pick(1.0),
            "ceiling_cpu": ceiling_cpu.json(ceiling_steady_s),
            "pulse_cpu": pulse_cpu.json(pulse_steady_s),
        })
    );
}

/// A private tansu broker (memory storage) on a free loopback port.
fn start_tansu(limit: Duration, work: &Path) -> (String, Guard) {
    let tansu = repo_root().join(".tools/tansu");
    assert!(tansu.exists(), "run `bash scripts/ensure-tansu.sh` first");
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let guard = Guard::spawn(
        "tansu",
        limit,
        &tansu,
        &[
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ],
        &work.join("tansu.log"),
    );
    wait_for_port(port, Duration::from_secs(30));
    (format!("127.0.0.1:{port}"), guard)
}

fn remaining(deadline: Instant) -> u64 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_secs()
        .max(1)
}

fn consumer(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("create consumer")
}

/// Sum of the high watermarks of every partition (for reference, see the caller).
fn high_watermarks(brokers: &str, partitions: i32) -> u64 {
    let c = consumer(brokers, "bench-watermarks");
    (0..partitions)
        .map(|p| {
            let (low, high) = c
                .fetch_watermarks(topic(), p, Duration::from_secs(10))
                .expect("watermarks");
            eprintln!("partition {p}: watermarks {low}..{high}");
            high as u64
        })
        .sum()
}

/// Reads every partition from the beginning until `total` records are read, folding every
/// payload byte into a checksum so nothing can be optimised away. Returns (seconds from
/// assign to the last record, seconds to the first record, bytes, checksum, CPU from the
/// first record to the last).
fn bare_consumer(
    brokers: &str,
    partitions: i32,
    total: u64,
    broker_pid: Option<u32>,
    deadline: Instant,
) -> (f64, f64, u64, u64, CpuUsed) {
    let c = consumer(brokers, "bench-ceiling");
    let started = Instant::now();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic(), p, Offset::Beginning)
            .expect("add partition");
    }
    c.assign(&assignment).expect("assign");
    let (mut bytes, mut checksum, mut records, mut first) = (0u64, 0u64, 0u64, 0.0);
    let mut cpu_at_first = None;
    while records < total {
        assert!(
            Instant::now() < deadline,
            "bare consumer: time limit reached"
        );
        let Some(result) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.expect("consume");
        if records == 0 {
            first = started.elapsed().as_secs_f64();
            cpu_at_first = Some(CpuReading::now(&[std::process::id()], broker_pid));
        }
        records += 1;
        if let Some(payload) = message.payload() {
            bytes += payload.len() as u64;
            checksum = payload.iter().fold(checksum, |acc, &b| {
                acc.wrapping_mul(31).wrapping_add(b as u64)
            });
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuUsed::between(
        &cpu_at_first.expect("read records"),
        &CpuReading::now(&[std::process::id()], broker_pid),
    );
    eprintln!("bare consumer read {records} records");
    (seconds, first, bytes, checksum, cpu)
}

/// Runs `pulse run` (`instances` members of one group) until a member's `/v1/metrics`
/// counts `total` records; returns (seconds from start, steady seconds, events in the
/// steady part, accepted, rejected, freshness probes, CPU of every member in the steady
/// part).
fn pulse_run(
    pulse: &Path,
    brokers: &str,
    total: u64,
    work: &Path,
    probing: &Probing,
    broker_pid: Option<u32>,
    deadline: Instant,
) -> (f64, f64, u64, u64, u64, Vec<f64>, CpuUsed) {
    let topic = topic();
    let refresh = format!("{}ms", probing.refresh_ms);
    // One member needs no global view; several publish theirs, as a scaled-out group does.
    let instances = probing.instances;
    let summaries = if instances > 1 {
        "[summaries]\nenabled = true\ntopic = \"bench-summaries\"\npublish_interval = \"200ms\"\n"
    } else {
        ""
    };
    let started = Instant::now();
    let mut members: Vec<(u16, Guard, std::path::PathBuf)> = (0..instances)
        .map(|member| {
            let http = free_port();
            let config = work.join(format!("pulse-{member}.toml"));
            std::fs::write(
                &config,
                format!(
                    r#"shards = 2
[kafka]
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "bench-pulse"
dead_letters = false
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
[http]
listen = "127.0.0.1:{http}"
refresh_interval = "{refresh}"
[state]
dir = "{}"
[rollups]
enabled = false
{summaries}"#,
                    work.join("state").display()
                ),
            )
            .expect("write config");
            let log = work.join(format!("pulse-{member}.log"));
            let config_arg = config.to_string_lossy().into_owned();
            let child = Guard::spawn(
                "pulse run",
                Duration::from_secs(remaining(deadline)),
                pulse,
                &[
                    "run",
                    "--config",
                    &config_arg,
                    "--clock",
                    "event-time",
                    "--log-level",
                    "warn",
                ],
                &log,
            );
            (http, child, log)
        })
        .collect();
    let logs = |members: &[(u16, Guard, std::path::PathBuf)]| -> String {
        members
            .iter()
            .map(|(_, _, log)| std::fs::read_to_string(log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let pids = |members: &[(u16, Guard, std::path::PathBuf)]| -> Vec<u32> {
        members
            .iter()
            .map(|(_, child, _)| child.child.id())
            .collect()
    };
    let mut first: Option<(Instant, u64, CpuReading)> = None;
    let (http, accepted, rejected) = 'poll: loop {
        assert!(
            Instant::now() < deadline,
            "pulse run: time limit reached; logs: {}",
            logs(&members)
        );
        for (_, child, _) in &mut members {
            if let Ok(Some(status)) = child.child.try_wait() {
                panic!("pulse run exited early ({status})");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        for (http, _, _) in &members {
            let Some(body) = http_get(*http, "/v1/metrics") else {
                continue;
            };
            let Ok(snapshot) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let accepted = snapshot["events"]["accepted"].as_u64().unwrap_or(0);
            let rejected = snapshot["events"]["rejected"].as_u64().unwrap_or(0);
            let seen = accepted + rejected;
            if seen > 0 && first.is_none() {
                let cpu = CpuReading::now(&pids(&members), broker_pid);
                first = Some((Instant::now(), seen, cpu));
            }
            if seen >= total {
                break 'poll (*http, accepted, rejected);
            }
        }
    };
    let end = Instant::now();
    let (first_at, first_seen, cpu_at_first) = first.expect("saw events");
    let cpu = CpuUsed::between(&cpu_at_first, &CpuReading::now(&pids(&members), broker_pid));
    let fresh = freshness(brokers, http, accepted + rejected, probing, deadline);
    for (_, child, _) in &mut members {
        let stopped = child.terminate(Duration::from_secs(40));
        eprintln!("pulse run stopped cleanly: {stopped}");
    }
    eprintln!("accepted {accepted}, rejected {rejected}");
    (
        (end - started).as_secs_f64(),
        (end - first_at).as_secs_f64(),
        total - first_seen,
        accepted,
        rejected,
        fresh,
        cpu,
    )
}

/// Freshness, once the backlog is consumed: produce one event at a time (a new user, a
/// second after the history) and time how long until `/v1/metrics` counts it. Includes
/// the producer's delivery, pulse's fetch and the snapshot refresh (`refresh_interval`).
/// Returns milliseconds per probe.
fn freshness(
    brokers: &str,
    http: u16,
    mut seen: u64,
    probing: &Probing,
    deadline: Instant,
) -> Vec<f64> {
    let probes = probing.probes;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .expect("create producer");
    let mut samples = Vec::with_capacity(probes);
    for i in 0..probes {
        let payload = format!(
            r#"{{"user_id":"fresh-{i}","event":"page_view","timestamp":"2026-03-01T12:00:{:02}.000Z"}}"#,
            i + 1
        );
        let key = format!("fresh-{i}");
        let sent = Instant::now();
        producer
            .send(BaseRecord::to(topic()).key(&key).payload(&payload))
            .map_err(|(e, _)| e)
            .expect("produce probe");
        let _ = producer.flush(Duration::from_secs(5));
        loop {
            if Instant::now() > deadline || sent.elapsed() > Duration::from_secs(30) {
                eprintln!("freshness probe {i}: not seen within 30 s");
                return samples;
            }
            let count = http_get(http, "/v1/metrics")
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                .map(|v| {
                    v["events"]["accepted"].as_u64().unwrap_or(0)
                        + v["events"]["rejected"].as_u64().unwrap_or(0)
                })
                .unwrap_or(0);
            if count > seen {
                seen = count;
                samples.push(sent.elapsed().as_secs_f64() * 1e3);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // A probe is seen just after a refresh tick; wait a fraction of the interval that
        // differs from probe to probe (the golden-ratio sequence spreads them evenly), so
        // the probes sample every phase of the tick, not one.
        let fraction = (i as f64 * 0.618_034).fract();
        std::thread::sleep(Duration::from_millis(
            (fraction * probing.refresh_ms as f64) as u64,
        ));
    }
    samples
}
