//! pulse vs the do-it-yourself alternative (Redis HyperLogLogs), and both vs the exact answer.
//!
//! Generates a realistic workload with `pulse-workload` (fixed seed), writes it as NDJSON,
//! and computes the distinct-user KPIs three ways:
//!
//! - **exact**: `pulse-tests`' oracle (`exact_snapshot`, hash sets), untimed;
//! - **pulse**: `target/release/pulse replay --input FILE --shards 2 --compact` (wall time of
//!   the process: read, decode, sketches, sessions, every KPI);
//! - **Redis**: a private `redis-server` (no persistence) fed by a consumer that reads the
//!   same file, decodes each line and pipelines `PFADD dau:<day> user` plus, for feature
//!   events, `PFADD feat:<feature>:<day> user`, then answers 1/7/30-day windows with
//!   `PFMERGE` + `PFCOUNT`. Wall time from opening the file to the last answer.
//!
//! By default the Redis consumer decodes with pulse's own decoder (`pulse_core::decode::Decoder`),
//! so it parses the three JSON shapes and timestamp forms exactly as pulse does and the
//! comparison isolates the counting back end (the best case for Redis). `--decoder serde`
//! decodes as a team would by hand: `serde_json::Value`, the same field pointers, `jiff` for
//! RFC 3339 times.
//! It writes on one thread and counts replies on another, so Redis is never waiting on a
//! round trip. Days are UTC calendar days, as in pulse's default configuration.
//!
//! Prints Markdown tables (throughput, and relative error of DAU/WAU/MAU and every feature's
//! 1d/7d/30d active users) and a JSON line.

mod support;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pulse_core::EngineSettings;
use pulse_core::decode::Decoder;
use pulse_tests::{OracleSettings, exact_snapshot};
use pulse_workload::{WorkloadConfig, generate};
use serde_json::Value;
use support::{Guard, arg, free_port, own_cpu_seconds, per_second, pulse_bin, wait_for_port};

const DAY_MS: i64 = 86_400_000;
const WINDOWS: [(&str, i64); 3] = [("1d", 1), ("7d", 7), ("30d", 30)];

fn main() {
    let users: u32 = arg("--users", 100_000);
    let days: u32 = arg("--days", 30);
    let seed: u64 = arg("--seed", 1);
    let sessions: f64 = arg("--sessions", WorkloadConfig::default().mean_daily_sessions);
    let with_redis: bool = arg("--redis", true);
    let serde_decoder = arg("--decoder", "pulse".to_owned()) == "serde";
    let limit = Duration::from_secs(arg("--timeout-secs", 900));

    let work = tempfile::tempdir().expect("temp dir");
    let input = work.path().join("events.ndjson");
    let config = WorkloadConfig {
        users,
        days,
        seed,
        mean_daily_sessions: sessions,
        ..WorkloadConfig::default()
    };
    let events = generate(&config);
    {
        let mut out = BufWriter::new(std::fs::File::create(&input).expect("create input"));
        let mut line = String::new();
        for event in &events {
            line.clear();
            event.write_json(&mut line);
            line.push('\n');
            out.write_all(line.as_bytes()).expect("write input");
        }
        // On disk before anything is timed: the kernel's write-back of 870 MB would
        // otherwise take CPU from whichever run it happens to fall in.
        out.into_inner()
            .expect("flush input")
            .sync_all()
            .expect("sync input");
    }
    let bytes = std::fs::metadata(&input).expect("input").len();
    let count = events.len() as u64;
    eprintln!("{count} events, {bytes} bytes, {users} users over {days} days (seed {seed})");

    let exact = exact_snapshot(&events, &OracleSettings::default());
    drop(events);
    let features: Vec<String> = exact["features"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();

    // pulse replay, as a process.
    let started = Instant::now();
    // GNU time reports the peak RSS and CPU time of pulse (its child, `timeout`, is tiny).
    let rss_file = work.path().join("replay.rss");
    let output = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M %U %S", "-o"])
        .arg(&rss_file)
        .args(["timeout", "-s", "KILL", &format!("{}s", limit.as_secs())])
        .arg(pulse_bin())
        .args([
            "replay",
            "--shards",
            "2",
            "--compact",
            "--log-level",
            "warn",
        ])
        .arg("--input")
        .arg(&input)
        .output()
        .expect("run pulse replay");
    let pulse_s = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "pulse replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pulse: Value = serde_json::from_slice(&output.stdout).expect("replay JSON");
    let measured: Vec<f64> = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| t.trim().lines().last().map(str::to_owned))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let rss_kib = measured.first().copied().unwrap_or(0.0) as u64;
    let pulse_cpu_s: f64 = measured.iter().skip(1).sum();
    eprintln!(
        "pulse replay: {pulse_s:.2} s ({}/s)",
        per_second(count, pulse_s)
    );

    let redis = with_redis.then(|| run_redis(&input, &features, work.path(), limit, serde_decoder));

    // Tables.
    let mut rows = vec![];
    for (w, _) in WINDOWS {
        let label = match w {
            "1d" => "DAU",
            "7d" => "WAU",
            _ => "MAU",
        };
        rows.push((
            label.to_owned(),
            vec!["active_users".to_owned(), w.to_owned()],
        ));
    }
    for f in &features {
        for (w, _) in WINDOWS {
            rows.push((
                format!("{f} {w}"),
                vec![
                    "features".to_owned(),
                    f.clone(),
                    "active_users".to_owned(),
                    w.to_owned(),
                ],
            ));
        }
    }
    let get = |v: &Value, path: &[String]| -> f64 {
        path.iter()
            .fold(v, |v, k| &v[k.as_str()])
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    println!(
        "\n{count} events ({:.0} B/event), {users} users, {days} days, seed {seed}, mean_daily_sessions {sessions}\n",
        bytes as f64 / count as f64
    );
    println!("| figure | exact | pulse | pulse error | Redis | Redis error |");
    println!("|---|---|---|---|---|---|");
    let (mut pulse_err, mut redis_err) = (vec![], vec![]);
    for (label, path) in &rows {
        let e = get(&exact, path);
        let p = get(&pulse, path);
        let pe = rel(p, e);
        pulse_err.push(pe);
        let (r, re) = match &redis {
            Some(r) => {
                let value = r.counts.get(label).copied().unwrap_or(f64::NAN);
                let err = rel(value, e);
                redis_err.push(err);
                (format!("{value}"), format!("{:.2} %", 100.0 * err))
            }
            None => ("–".to_owned(), "–".to_owned()),
        };
        println!("| {label} | {e} | {p} | {:.2} % | {r} | {re} |", 100.0 * pe);
    }
    let summary = |errs: &[f64]| -> (f64, f64) {
        if errs.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        let mean = errs.iter().sum::<f64>() / errs.len() as f64;
        let max = errs.iter().copied().fold(0.0, f64::max);
        (mean, max)
    };
    let (pm, px) = summary(&pulse_err);
    let (rm, rx) = summary(&redis_err);
    println!("\n| | events/s | time | mean rel. error | max rel. error |\n|---|---|---|---|---|");
    println!(
        "| pulse replay (2 shards, peak RSS {:.1} MiB) | {}/s | {pulse_s:.2} s | {:.2} % | {:.2} % |",
        rss_kib as f64 / 1024.0,
        per_second(count, pulse_s),
        100.0 * pm,
        100.0 * px
    );
    if let Some(r) = &redis {
        println!(
            "| Redis PFADD (pipelined, {} decoder) | {}/s | {:.2} s (ingest {:.2} s, queries {:.3} s) | {:.2} % | {:.2} % |",
            if serde_decoder {
                "serde_json::Value"
            } else {
                "pulse's"
            },
            per_second(count, r.seconds),
            r.seconds,
            r.ingest_seconds,
            r.seconds - r.ingest_seconds,
            100.0 * rm,
            100.0 * rx
        );
        println!(
            "\npulse is **{:.1}×** faster; Redis used_memory {:.1} MiB after ingest",
            r.seconds / pulse_s,
            r.used_memory as f64 / 1_048_576.0
        );
        let redis_cpu_s = r.consumer_cpu_seconds + r.server_cpu_seconds;
        println!(
            "CPU time (user + system): pulse {pulse_cpu_s:.2} s; Redis {redis_cpu_s:.2} s \
             (consumer {:.2} s, redis-server {:.2} s): pulse uses {:.1}× less",
            r.consumer_cpu_seconds,
            r.server_cpu_seconds,
            redis_cpu_s / pulse_cpu_s
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "events": count, "bytes": bytes, "users": users, "days": days, "seed": seed,
            "mean_daily_sessions": sessions, "redis_decoder": if serde_decoder { "serde" } else { "pulse" },
            "pulse_seconds": pulse_s, "pulse_cpu_seconds": pulse_cpu_s, "pulse_peak_rss_kib": rss_kib, "pulse_mean_error": pm, "pulse_max_error": px,
            "redis_seconds": redis.as_ref().map(|r| r.seconds),
            "redis_ingest_seconds": redis.as_ref().map(|r| r.ingest_seconds),
            "redis_consumer_cpu_seconds": redis.as_ref().map(|r| r.consumer_cpu_seconds),
            "redis_server_cpu_seconds": redis.as_ref().map(|r| r.server_cpu_seconds),
            "redis_mean_error": redis.as_ref().map(|_| rm),
            "redis_max_error": redis.as_ref().map(|_| rx),
            "redis_used_memory_bytes": redis.as_ref().map(|r| r.used_memory),
            "figures": rows.len(),
        })
    );
}

fn rel(value: f64, exact: f64) -> f64 {
    if exact == 0.0 {
        if value == 0.0 { 0.0 } else { 1.0 }
    } else {
        (value - exact).abs() / exact
    }
}

#[derive(Debug)]
struct RedisResult {
    seconds: f64,
    ingest_seconds: f64,
    counts: BTreeMap<String, f64>,
    used_memory: u64,
    /// CPU time of the consumer (this process, both threads) and of `redis-server`, from
    /// the start of ingestion to the last answer.
    consumer_cpu_seconds: f64,
    server_cpu_seconds: f64,
}

/// A section of `INFO` as `key:value` lines.
fn info(conn: &mut BufReader<TcpStream>, section: &[u8]) -> String {
    let mut request = Vec::new();
    command(&mut request, &[b"INFO", section]);
    conn.get_mut().write_all(&request).expect("write INFO");
    let header = read_line(conn);
    let len: usize = header[1..].parse().expect("bulk length");
    let mut body = vec![0u8; len + 2];
    conn.read_exact(&mut body).expect("INFO body");
    String::from_utf8_lossy(&body).into_owned()
}

fn info_field(info: &str, key: &str) -> Option<f64> {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Appends one RESP command.
fn command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
}

/// What the DIY consumer needs from one line: user, event time, feature (if any).
fn decode_serde(line: &[u8]) -> Option<(String, i64, Option<String>)> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let first = |pointers: &[&str]| pointers.iter().find_map(|p| v.pointer(p)).cloned();
    let user = match first(&["/user_id", "/userId", "/distinct_id"])? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let ts = match first(&["/timestamp", "/ts", "/time"])? {
        Value::String(s) => s.parse::<jiff::Timestamp>().ok()?.as_millisecond(),
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    let name = v.pointer("/event").and_then(Value::as_str).unwrap_or("");
    let feature = if name == "feature_used" || name == "Feature Used" {
        first(&["/feature", "/properties/feature"]).and_then(|f| f.as_str().map(str::to_owned))
    } else {
        None
    };
    Some((user, ts, feature))
}

fn run_redis(
    input: &Path,
    features: &[String],
    work: &Path,
    limit: Duration,
    serde_decoder: bool,
) -> RedisResult {
    let port = free_port();
    let port_arg = port.to_string();
    let dir = work.to_string_lossy().into_owned();
    let _server = Guard::spawn(
        "redis-server",
        limit,
        Path::new("redis-server"),
        &[
            "--port",
            &port_arg,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir,
        ],
        &work.join("redis.log"),
    );
    wait_for_port(port, Duration::from_secs(20));
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect redis");
    stream.set_nodelay(true).ok();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");

    // Replies are counted on another thread while this one writes.
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let reader = {
        let mut stream = stream.try_clone().expect("clone stream");
        let expected = Arc::clone(&expected);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let (mut lines, mut at_start, mut errors) = (0u64, true, 0u64);
            while lines < expected.load(Ordering::Acquire) {
                let n = stream.read(&mut buf).expect("read redis replies");
                assert!(n > 0, "redis closed the connection");
                for &b in &buf[..n] {
                    if at_start && b == b'-' {
                        errors += 1;
                    }
                    at_start = b == b'\n';
                    lines += u64::from(at_start);
                }
            }
            assert_eq!(errors, 0, "redis answered with errors");
            stream
        })
    };

    let decoder = Decoder::new(&EngineSettings::default());
    let started = Instant::now();
    let cpu_at_start = own_cpu_seconds();
    let mut file = BufReader::with_capacity(1 << 20, std::fs::File::open(input).expect("open"));
    let mut writer = &stream;
    let (mut line, mut out) = (Vec::new(), Vec::with_capacity(1 << 20));
    let (mut sent, mut max_ts) = (0u64, i64::MIN);
    loop {
        line.clear();
        if file.read_until(b'\n', &mut line).expect("read input") == 0 {
            break;
        }
        let (user, ts, feature) = if serde_decoder {
            match decode_serde(line.trim_ascii_end()) {
                Some((user, ts, feature)) => (Cow::Owned(user), ts, feature.map(Cow::Owned)),
                None => continue,
            }
        } else {
            let Ok(event) = decoder.decode(line.trim_ascii_end()) else {
                continue;
            };
            let Some(ts) = event.ts_ms else { continue };
            (event.user, ts, event.feature)
        };
        max_ts = max_ts.max(ts);
        let day = ts.div_euclid(DAY_MS);
        let user = user.as_bytes();
        command(&mut out, &[b"PFADD", format!("dau:{day}").as_bytes(), user]);
        sent += 1;
        if let Some(feature) = &feature {
            command(
                &mut out,
                &[b"PFADD", format!("feat:{feature}:{day}").as_bytes(), user],
            );
            sent += 1;
        }
        if out.len() >= 1 << 16 {
            writer.write_all(&out).expect("write redis");
            out.clear();
        }
    }
    // A closing PING, written after `expected` is set: the reader may already have
    // counted every PFADD reply and be blocked in `read`; the PONG wakes it.
    expected.store(sent + 1, Ordering::Release);
    command(&mut out, &[b"PING"]);
    writer.write_all(&out).expect("write redis");
    let stream = reader.join().expect("reader thread");
    let ingest_seconds = started.elapsed().as_secs_f64();

    // Windows ending on the day of the latest event.
    let mut conn = BufReader::new(stream);
    let today = max_ts.div_euclid(DAY_MS);
    let mut counts = BTreeMap::new();
    let window = |conn: &mut BufReader<TcpStream>, prefix: &str, len: i64| -> f64 {
        let keys: Vec<String> = (today - len + 1..=today)
            .map(|d| format!("{prefix}{d}"))
            .collect();
        let mut out = Vec::new();
        let mut merge: Vec<&[u8]> = vec![b"PFMERGE", b"window"];
        merge.extend(keys.iter().map(|k| k.as_bytes()));
        command(&mut out, &merge);
        command(&mut out, &[b"PFCOUNT", b"window"]);
        command(&mut out, &[b"DEL", b"window"]);
        conn.get_mut().write_all(&out).expect("write query");
        let merged = read_line(conn);
        assert_eq!(merged, "+OK", "PFMERGE");
        let count = read_line(conn);
        read_line(conn);
        count
            .strip_prefix(':')
            .and_then(|c| c.parse().ok())
            .expect("PFCOUNT reply")
    };
    for (w, len) in WINDOWS {
        let label = match w {
            "1d" => "DAU",
            "7d" => "WAU",
            _ => "MAU",
        };
        counts.insert(label.to_owned(), window(&mut conn, "dau:", len));
        for f in features {
            counts.insert(
                format!("{f} {w}"),
                window(&mut conn, &format!("feat:{f}:"), len),
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let consumer_cpu_seconds = own_cpu_seconds() - cpu_at_start;

    let used_memory = info_field(&info(&mut conn, b"memory"), "used_memory").unwrap_or(0.0) as u64;
    // The server did nothing but this run (it started idle, a moment before).
    let cpu = info(&mut conn, b"cpu");
    let server_cpu_seconds = info_field(&cpu, "used_cpu_user").unwrap_or(0.0)
        + info_field(&cpu, "used_cpu_sys").unwrap_or(0.0);
    eprintln!("redis: {sent} PFADDs, ingest {ingest_seconds:.2} s, total {seconds:.2} s");
    RedisResult {
        seconds,
        ingest_seconds,
        counts,
        used_memory,
        consumer_cpu_seconds,
        server_cpu_seconds,
    }
}

fn read_line(conn: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    conn.read_line(&mut line).expect("read reply");
    line.trim_end().to_owned()
}
