//! Resident memory of a real `pulse` process, measured by the kernel at its peak.
//!
//! Not pulse's own `estimated_bytes`, which is a model of the state (and, read after a
//! replay, describes the state once every session has closed): the peak resident set
//! (`ru_maxrss`, the `VmHWM` of `/proc/<pid>/status` at exit) as GNU `time` reports it for
//! its child. Two replays that differ only in how many sessions are open at once give the
//! cost of an open session, with every fixed cost (binary, threads, buffers, sketches)
//! cancelled out.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use pulse_tests::{skip, tools};
use serde_json::Value;

use crate::helpers::{assert_success, pulse_bin};

/// The claim under test: an open session costs at most this much resident memory.
/// BENCHMARKS.md ("Open sessions") measures about 190 B in a release build (the hash-table
/// slot, the events' own allocation, the deadline heap); this debug-build replay measured
/// 203–226 B over several runs (the allocator's per-thread arenas fill differently each
/// time). The bound fails a growth of about 40 % over that.
const MAX_BYTES_PER_OPEN_SESSION: u64 = 320;

/// 2026-03-01T00:00:00Z.
const SECOND_START_MS: i64 = 1_772_323_200_000;

/// `users` new users with one signup each, all within one second: no session can close
/// before the end of the input, so at its peak pulse holds `users` open sessions.
fn write_burst(path: &Path, users: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..users {
        writeln!(
            out,
            r#"{{"user_id":"new-{i}","event":"signup","ts":{}}}"#,
            SECOND_START_MS + (i % 1000) as i64
        )
        .unwrap();
    }
    out.flush().unwrap();
}

/// Replays `users` simultaneous sessions in a child pulse; returns its peak RSS in bytes
/// and its snapshot.
fn replay_peak(time: &Path, dir: &Path, users: u64) -> (u64, Value) {
    let input = dir.join(format!("burst-{users}.ndjson"));
    let report = dir.join(format!("time-{users}.txt"));
    write_burst(&input, users);
    let output = Command::new(time)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(pulse_bin())
        .args([
            "replay",
            "--compact",
            "--shards",
            "2",
            "--decode-threads",
            "2",
        ])
        .args(["--wall-clock", "2026-03-02T00:00:00Z"])
        .arg("--input")
        .arg(&input)
        .env_remove("PULSE_CONFIG")
        .output()
        .unwrap();
    assert_success(&output, &format!("pulse replay of {users} sessions"));
    let report = std::fs::read_to_string(&report).unwrap();
    let kib: u64 = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time reported {report:?}"));
    let snapshot: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        snapshot["sessions"]["1d"]["count"].as_u64(),
        Some(users),
        "one session per user, all open until the end of the input"
    );
    (kib * 1024, snapshot)
}

#[test]
fn a_million_open_sessions_cost_what_the_benchmarks_say() {
    let Some(time) = tools::find("time") else {
        skip::missing_tool(
            "GNU time",
            "Debian's time package; `make deps` installs it (scripts/ensure-build-deps.sh)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (few, many) = (100_000, 1_000_000);
    let (peak_few, _) = replay_peak(&time, dir.path(), few);
    let (peak_many, _) = replay_peak(&time, dir.path(), many);
    let per_session = peak_many.saturating_sub(peak_few) / (many - few);
    eprintln!(
        "memory: peak RSS {} MiB with {few} open sessions, {} MiB with {many}: \
         {per_session} B per added open session",
        peak_few >> 20,
        peak_many >> 20
    );
    assert!(
        peak_many > peak_few,
        "more open sessions, more memory: {peak_few} then {peak_many} bytes"
    );
    assert!(
        per_session <= MAX_BYTES_PER_OPEN_SESSION,
        "{per_session} B of resident memory per open session (peak RSS {peak_few} B with \
         {few}, {peak_many} B with {many}); the bound is {MAX_BYTES_PER_OPEN_SESSION} B"
    );
}
