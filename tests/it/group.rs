//! A consumer group of `pulse run` instances for the scale-out tests (`failover`,
//! `global_view`): one 12-partition topic, one shared state location, the seeded workload
//! streamed in by a rate-limited `pulse loadgen`, and what the instances' logs say about the
//! partitions each owns. The group's result is checked against `pulse replay` of the same
//! events, either from the state location once every member has stopped ([`finish`]) or
//! from the members' own `/v1/metrics`.

use std::path::Path;
use std::time::{Duration, Instant};

use pulse_tests::{WorkloadConfig, kafka};
use serde_json::Value;

use crate::helpers::{assert_success, generate, json_diff, pulse_bin, without_state};
use crate::kafka_tests::write_config_in_group;
use crate::process::Pulse;

pub const PARTITIONS: i32 = 12;
pub const USERS: u32 = 800;
pub const SEED: u64 = 91;
const END: &str = "2026-03-01T12:00:00Z";
pub const END_MS: i64 = 1_772_366_400_000;
const WALL: &str = "2030-01-01T00:00:00Z";
/// Events per second loadgen produces: the stream lasts long enough for members to crash,
/// join and leave while it flows.
const RATE: &str = "3000";
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// The bound: a crashed member's partitions are owned again within the session
/// timeout (6 s in these tests) plus 10 s.
pub const TAKE_OVER_LIMIT: Duration = SESSION_TIMEOUT.saturating_add(Duration::from_secs(10));
pub const PATIENCE: Duration = Duration::from_secs(240);

/// One test's topic, group, shared state location and the events it produces.
pub struct Group {
    dir: tempfile::TempDir,
    pub brokers: String,
    pub topic: String,
    group: String,
    /// The shared state location (a directory unless a test points it at S3).
    pub state: String,
    /// The environment of every `pulse` the test runs (an object store's endpoint, or
    /// settings the members and the replay must share).
    pub env: Vec<(String, String)>,
    pub input: String,
    members: usize,
    /// Lines after the `[state]` table's: another table (`[summaries]`, say).
    extra: String,
}

impl Group {
    /// The group's topic and workload; `extra` ends every member's configuration.
    pub async fn new(name: &str, extra: &str) -> (Group, kafka::TopicGuard) {
        let brokers = kafka::brokers();
        let (topic, guard) = kafka::temp_topic(&brokers, name, PARTITIONS).await;
        let dir = tempfile::tempdir().unwrap();
        let (_, lines) = generate(&WorkloadConfig {
            seed: SEED,
            users: USERS,
            days: 35,
            end_ms: END_MS,
            ..WorkloadConfig::default()
        });
        let input = dir.path().join("events.ndjson");
        std::fs::write(&input, lines.join("\n")).unwrap();
        let group = Group {
            state: dir.path().join("state").to_str().unwrap().to_owned(),
            input: input.to_str().unwrap().to_owned(),
            group: kafka::unique_name("pulse-failover"),
            dir,
            brokers,
            topic,
            members: 0,
            extra: extra.to_owned(),
            env: Vec::new(),
        };
        (group, guard)
    }

    /// A member with its own configuration (and rollups), on the shared state location.
    pub fn start(&mut self) -> Pulse {
        let group = self.group.clone();
        self.start_in(&group)
    }

    /// A `pulse run` of another consumer group on the same topic and state location: to
    /// the group, its claims are those of a member that claimed while out of the group.
    pub fn start_outsider(&mut self) -> Pulse {
        let group = format!("{}-outsider", self.group);
        self.start_in(&group)
    }

    fn start_in(&mut self, group: &str) -> Pulse {
        self.members += 1;
        let own = self.dir.path().join(format!("member-{}", self.members));
        std::fs::create_dir_all(&own).unwrap();
        let config = self.config_in_group(&own, group);
        let args = ["run", "--config", &config, "--clock", "event-time"];
        Pulse::start_with_env(&[&args[..], &["--state", &self.state]].concat(), &self.env)
    }

    fn config_in(&self, dir: &Path) -> String {
        self.config_in_group(dir, &self.group)
    }

    fn config_in_group(&self, dir: &Path, group: &str) -> String {
        let state = format!("checkpoint_interval = \"1s\"\n{}", self.extra);
        write_config_in_group(dir, &self.brokers, &self.topic, group, &state)
    }

    /// Produces the workload at [`RATE`] in the background.
    pub fn produce(&self) -> std::process::Child {
        std::process::Command::new(pulse_bin())
            .args([
                "loadgen",
                "--brokers",
                &self.brokers,
                "--topic",
                &self.topic,
            ])
            .args(["--users", &USERS.to_string(), "--days", "35"])
            .args(["--seed", &SEED.to_string(), "--end", END, "--rate", RATE])
            .env_remove("PULSE_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Makes the replay's input what the topic holds once `held` records are in it: the
    /// generated events, each as many times as the topic has it. A producer retrying a
    /// request the loaded broker was slow to acknowledge (loadgen is not idempotent) leaves
    /// a copy now and then, which every instance counts and the generated file lacks.
    pub async fn match_input_to_topic(&self, held: usize) {
        let records =
            kafka::consume_all(&self.brokers, &self.topic, held, Duration::from_secs(120)).await;
        assert_eq!(
            records.len(),
            held,
            "the topic holds what the instances counted"
        );
        let mut copies: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        for record in records {
            *copies
                .entry(record.payload.unwrap_or_default())
                .or_default() += 1;
        }
        let generated = std::fs::read_to_string(&self.input).unwrap();
        let mut lines = Vec::with_capacity(held);
        for line in generated.lines() {
            let count = copies.remove(line.as_bytes()).unwrap_or(0);
            assert!(count > 0, "the topic lacks a generated event: {line}");
            lines.extend(std::iter::repeat_n(line, count));
        }
        assert!(copies.is_empty(), "the topic holds events never generated");
        if lines.len() > generated.lines().count() {
            eprintln!(
                "the topic holds {} copies of generated events",
                lines.len() - generated.lines().count()
            );
        }
        std::fs::write(&self.input, lines.join("\n")).unwrap();
    }

    /// `pulse replay` of the same events, as `pulse state show` must print them.
    pub fn replayed(&self) -> Value {
        let config = self.config_in(self.dir.path());
        let output = Pulse::run_to_end_with_env(
            &[
                "replay",
                "--config",
                &config,
                "--compact",
                "--wall-clock",
                WALL,
                "--partitions",
                "12",
                "--input",
                &self.input,
            ],
            &self.env,
        );
        assert_success(&output, "pulse replay");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// What the state location holds, merged (claims nothing).
    pub fn shown(&self) -> Value {
        let config = self.config_in(self.dir.path());
        let output = Pulse::run_to_end_with_env(
            &[
                "state",
                "show",
                "--config",
                &config,
                "--compact",
                "--wall-clock",
                WALL,
                "--state-url",
                &self.state,
            ],
            &self.env,
        );
        assert_success(&output, "pulse state show");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Waits until the checkpoints hold `accepted` events; on failure, prints what the
    /// `members` said about their partitions.
    pub fn wait_for_checkpoints(&self, accepted: u64, members: &[&Pulse]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let held = self.shown()["events"]["accepted"].as_u64().unwrap_or(0);
            if held >= accepted {
                return;
            }
            if Instant::now() >= deadline {
                for (n, member) in members.iter().enumerate() {
                    eprintln!("--- member {n}: its partitions and warnings");
                    print_partition_lines(&member.log());
                }
                panic!("the checkpoints hold {held} of {accepted} events");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Waits until `member` has applied events.
pub fn applying(member: &Pulse, who: &str) {
    member.wait_for(&format!("{who} to apply events"), PATIENCE, |s| {
        s["events"]["accepted"].as_u64().unwrap_or(0) > 0
    });
}

/// The end of a test: the stream produced, every event in the checkpoints, the members
/// (those still running, and the `earlier` logs of those stopped) resumed exactly at each
/// assignment, and the group's state the replay's (of what the topic holds).
pub async fn finish(
    group: &Group,
    mut producer: std::process::Child,
    members: Vec<Pulse>,
    earlier: &[String],
) {
    assert!(producer.wait().unwrap().success());
    let mut replayed = group.replayed();
    let running: Vec<&Pulse> = members.iter().collect();
    group.wait_for_checkpoints(replayed["events"]["accepted"].as_u64().unwrap(), &running);
    let mut logs = earlier.to_vec();
    for member in members {
        let (status, log) = member.stop_and_log(Duration::from_secs(60));
        assert!(status.success(), "{log}");
        logs.push(log);
    }
    let checked: usize = logs.iter().map(|log| assert_resumed_exactly(log)).sum();
    // Every partition receives records, so each was checked at least once.
    assert!(
        checked >= PARTITIONS as usize,
        "{checked} assignments checked"
    );
    let shown = group.shown();
    let held = shown["events"]["accepted"].as_u64().unwrap();
    if held != replayed["events"]["accepted"].as_u64().unwrap() {
        group.match_input_to_topic(held as usize).await;
        replayed = group.replayed();
    }
    assert_same(&shown, &replayed, &logs);
}

/// Waits until `member` owns every partition.
pub fn owning_every_partition(member: &Pulse, who: &str) {
    let what = format!("{who} to own every partition");
    wait_until(&what, PATIENCE, &[member], || {
        owned(&member.log()).len() == PARTITIONS as usize
    });
}

/// Every member owns partitions, and together they own all of them.
pub fn spread(members: &[&Pulse]) -> bool {
    let owned: Vec<Vec<i32>> = members.iter().map(|m| owned(&m.log())).collect();
    owned.iter().all(|o| !o.is_empty())
        && owned.iter().map(Vec::len).sum::<usize>() == PARTITIONS as usize
}

/// `members` own every partition between them, `orphans` (a killed member's) included.
pub fn own_all(members: &[&Pulse], orphans: &[i32]) -> bool {
    let mut now: Vec<i32> = members.iter().flat_map(|m| owned(&m.log())).collect();
    now.sort_unstable();
    orphans.iter().all(|p| now.contains(p)) && now.len() == PARTITIONS as usize
}

/// Partitions a member took over (state loaded or started empty), in log order, with the
/// offset it resumed at (`None`: the group's offset).
pub fn taken(log: &str) -> Vec<(i32, Option<i64>)> {
    log.lines()
        .filter(|l| l.contains("Partition state loaded.") || l.contains("has no saved state"))
        .filter_map(|l| {
            Some((
                field(l, "partition")?.rsplit('/').next()?.parse().ok()?,
                field(l, "offset").and_then(|o| o.parse().ok()),
            ))
        })
        .collect()
}

/// Partitions a member gave up (revoked, lost, or dropped after a refused save), in log
/// order.
fn given_up(log: &str) -> Vec<i32> {
    log.lines()
        .filter(|l| {
            l.contains("Partition revoked;")
                || l.contains("Partition lost")
                || l.contains("dropping it here")
        })
        .filter_map(|l| field(l, "partition")?.rsplit('/').next()?.parse().ok())
        .collect()
}

/// The partitions a member owns now, by its log.
pub fn owned(log: &str) -> Vec<i32> {
    let mut owned: Vec<i32> = Vec::new();
    let mut gone = given_up(log);
    for (partition, _) in taken(log) {
        owned.push(partition);
    }
    owned.retain(|p| match gone.iter().position(|g| g == p) {
        Some(at) => {
            gone.remove(at);
            false
        }
        None => true,
    });
    owned.sort_unstable();
    owned
}

/// A `key=value` field of a text log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..].split_whitespace().next()
}

/// After each assignment, the first record applied is the one at the offset the loaded state
/// records: no gap, no duplicate. Returns how many assignments were checked.
fn assert_resumed_exactly(log: &str) -> usize {
    let firsts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("First record since the assignment."))
        .collect();
    for line in &firsts {
        assert_eq!(field(line, "offset"), field(line, "resume_at"), "{line}");
    }
    firsts.len()
}

/// Every KPI and counter equal; `state` (shards, bytes held) describes the process. On a
/// difference, prints what the members' `logs` said about their partitions.
fn assert_same(shown: &Value, replayed: &Value, logs: &[String]) {
    let differences = json_diff(
        &without_state(shown.clone()),
        &without_state(replayed.clone()),
    );
    if !differences.is_empty() {
        for (n, log) in logs.iter().enumerate() {
            eprintln!("--- member {n}: its partitions and warnings");
            print_partition_lines(log);
        }
    }
    assert!(
        differences.is_empty(),
        "the group's state differs from the replay:\n{}",
        differences.join("\n")
    );
}

fn print_partition_lines(log: &str) {
    for line in log
        .lines()
        .filter(|l| l.contains("artition") || l.contains("WARN") || l.contains("ERROR"))
    {
        eprintln!("{line}");
    }
}

/// Polls `done`; panics after `limit` with the members' logs.
pub fn wait_until(
    what: &str,
    limit: Duration,
    members: &[&Pulse],
    done: impl Fn() -> bool,
) -> Duration {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            let logs: Vec<String> = members.iter().map(|m| m.log()).collect();
            panic!(
                "{what} took longer than {limit:?}; logs:\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}
