//! Warehouse rollups end to end: `pulse replay --rollups` on a generated workload, loaded
//! into a real PostgreSQL with the shipped DDL and load script, must hold the replay's
//! numbers — and loading the same file again must change nothing. And `pulse run` sends
//! the same records to its Kafka topic as to its files.
//!
//! PostgreSQL comes from Debian (`scripts/ensure-postgres.sh`, run by `make deps`). Each run
//! starts a private cluster: `initdb` into a temporary directory, a unix socket in it and
//! no TCP listener, run as the `postgres` system user when the tests run as root (initdb
//! refuses root). [`Postgres`]'s `Drop` stops it, panic or not, and a watchdog stops it too
//! if this test process dies without unwinding (SIGKILL), or after ten minutes at most.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pulse_tests::{kafka, small_workload};
use serde_json::Value;

use crate::helpers::{generate, loadgen, pulse_bin};
use crate::process::Pulse;

const WALL: &str = "2030-01-01T00:00:00Z";

fn warehouse_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/warehouse")
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding initdb (Debian's layout).
fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("PostgreSQL server binaries not found: run `bash scripts/ensure-postgres.sh` (part of `make deps`)")
    })
}

fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// A throwaway PostgreSQL cluster listening on a unix socket in its own temporary directory.
struct Postgres {
    bin: PathBuf,
    /// Holds the data directory and the socket; removed after the server has stopped.
    dir: tempfile::TempDir,
    as_postgres: bool,
    /// Stops the server if this process dies without running `Drop`.
    watchdog: Option<Child>,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        let mut cluster = Postgres {
            bin,
            dir,
            as_postgres,
            watchdog: None,
        };
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster directory failed");
        }
        let data = cluster.data();
        cluster.server_command("initdb", |c| {
            c.arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]);
        });
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c full_page_writes=off",
            cluster.dir.path().display()
        );
        let log = cluster.dir.path().join("server.log");
        cluster.server_command("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-o", &options, "-w", "-t", "60", "start"]);
        });
        // Polls every half second: this process alive, the server still running, less
        // than ten minutes gone. Otherwise it stops the server itself.
        let script = r#"i=0
while [ -d "/proc/$1" ] && [ -f "$2/postmaster.pid" ] && [ "$i" -lt 1200 ]; do
    sleep 0.5; i=$((i + 1))
done
if [ -f "$2/postmaster.pid" ]; then "$3/pg_ctl" -D "$2" -m immediate -w stop >/dev/null 2>&1; fi"#;
        let mut watchdog = cluster.command("sh");
        watchdog
            .args(["-c", script, "watchdog"])
            .arg(std::process::id().to_string())
            .arg(&data)
            .arg(&cluster.bin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cluster.watchdog = Some(watchdog.spawn().unwrap());
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command run as the `postgres` user when we are root.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn server_command(&self, program: &str, args: impl FnOnce(&mut Command)) {
        let mut command = self.command(self.bin.join(program));
        args(&mut command);
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{program} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// Runs psql with `args` (and `stdin` from a file); returns its unaligned output.
    fn psql(&self, args: &[&str], stdin: Option<&Path>) -> String {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(args)
            .env_remove("PGHOST")
            .env_remove("PGDATABASE")
            .env_remove("PGUSER");
        command.stdin(match stdin {
            Some(path) => Stdio::from(File::open(path).unwrap()),
            None => Stdio::null(),
        });
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "psql {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn sql(&self, statement: &str) -> String {
        self.psql(&["-c", statement], None)
    }

    fn load(&self, ndjson: &Path) {
        let script = warehouse_dir().join("postgres/load.sql");
        self.psql(&["-f", script.to_str().unwrap()], Some(ndjson));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stopped = self
            .command(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            eprintln!("pg_ctl stop failed; the watchdog stops the server");
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            // It ends within half a second once the server is gone.
            let _ = watchdog.wait();
        }
    }
}

/// `pulse replay` on `input`; with `rollups`, also writes them there. Returns the snapshot.
fn replay(input: &Path, rollups: Option<&Path>, extra: &[&str]) -> Value {
    let mut command = Command::new(pulse_bin());
    command
        .args(["replay", "--compact", "--wall-clock", WALL, "--shards", "2"])
        .arg("--input")
        .arg(input)
        .args(extra)
        .env_remove("PULSE_CONFIG");
    if let Some(path) = rollups {
        command.arg("--rollups").arg(path);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn without_state(mut snapshot: Value) -> Value {
    snapshot.as_object_mut().unwrap().remove("state");
    snapshot
}

/// (metric, window, feature or "") → value, for the rows of one day.
fn rows_of_day(pg: &Postgres, period_start: &str) -> BTreeMap<(String, String, String), f64> {
    let text = pg.psql(
        &[
            "-F",
            "\t",
            "-c",
            &format!(
                "SELECT metric, \"window\", COALESCE(dimensions->>'feature', ''), value \
                 FROM pulse_rollups WHERE period_start = '{period_start}'::timestamptz"
            ),
        ],
        None,
    );
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let key = (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields[2].to_owned(),
            );
            (key, fields[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn replay_rollups_load_into_postgres_idempotently() {
    let (_, lines) = generate(&small_workload(17));
    let work = tempfile::tempdir().unwrap();
    let events = work.path().join("events.ndjson");
    std::fs::write(&events, lines.join("\n")).unwrap();
    let rollups = work.path().join("rollups.ndjson");

    let snapshot = without_state(replay(&events, Some(&rollups), &[]));
    assert_eq!(
        snapshot,
        without_state(replay(&events, None, &[])),
        "--rollups does not change the snapshot"
    );
    let records: Vec<Value> = std::fs::read_to_string(&rollups)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last_day = records
        .iter()
        .map(|r| r["period_start"].as_str().unwrap().to_owned())
        .max()
        .unwrap();
    let as_of = snapshot["as_of"].as_str().unwrap();
    assert!(
        last_day.starts_with(&as_of[..10]),
        "{last_day} is the day of {as_of}"
    );

    let pg = Postgres::start();
    pg.psql(
        &[
            "-f",
            warehouse_dir()
                .join("postgres/schema.sql")
                .to_str()
                .unwrap(),
        ],
        None,
    );
    pg.load(&rollups);
    let count: usize = pg
        .sql("SELECT count(*) FROM pulse_rollups")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count, records.len(), "one row per record (keys are unique)");

    let rows = rows_of_day(&pg, &last_day);
    let row = |metric: &str, window: &str, feature: &str| -> f64 {
        *rows
            .get(&(metric.to_owned(), window.to_owned(), feature.to_owned()))
            .unwrap_or_else(|| panic!("no row {metric} {window} {feature:?} for {last_day}"))
    };
    let number = |pointer: String| snapshot.pointer(&pointer).unwrap().as_f64().unwrap();
    for window in ["1d", "7d", "30d"] {
        assert_eq!(
            row("active_users", window, ""),
            number(format!("/active_users/{window}"))
        );
        assert_eq!(
            row("new_users", window, ""),
            number(format!("/new_users/{window}"))
        );
        for (metric, field) in [
            ("sessions", "count"),
            ("session_duration_avg_seconds", "avg_duration_seconds"),
            ("session_duration_p50_seconds", "p50_duration_seconds"),
            ("session_duration_p90_seconds", "p90_duration_seconds"),
            ("bounce_rate", "bounce_rate"),
            ("events_per_session", "events_per_session"),
        ] {
            assert_eq!(
                row(metric, window, ""),
                number(format!("/sessions/{window}/{field}")),
                "{metric} {window}"
            );
        }
        let features = snapshot["features"].as_object().unwrap();
        assert!(!features.is_empty());
        for (name, kpis) in features {
            let users = kpis["active_users"][window].as_f64().unwrap();
            if users == 0.0 {
                assert!(!rows.contains_key(&(
                    "feature_active_users".to_owned(),
                    window.to_owned(),
                    name.clone()
                )));
                continue;
            }
            assert_eq!(row("feature_active_users", window, name), users);
            let adoption = kpis["adoption"][window].as_f64().unwrap();
            assert_eq!(row("feature_adoption", window, name), adoption);
        }
    }
    // The replay's last day is still open; days long before it are final.
    let provisional =
        format!("SELECT bool_or(final) FROM pulse_rollups WHERE period_start = '{last_day}'");
    assert_eq!(pg.sql(&provisional).trim(), "f");
    let closed = format!(
        "SELECT bool_and(final) FROM pulse_rollups \
         WHERE period_start < timestamptz '{last_day}' - interval '3 days'"
    );
    assert_eq!(pg.sql(&closed).trim(), "t");

    // Loading the same file again changes nothing, row for row.
    let dump = "SELECT md5(string_agg(t::text, E'\\n' ORDER BY key)) FROM pulse_rollups t";
    let before = pg.sql(dump);
    pg.load(&rollups);
    assert_eq!(pg.sql(dump), before, "a second load is a no-op");

    // An older version of a record never replaces a newer one; a newer one does.
    let mut record = records
        .iter()
        .find(|r| r["metric"] == "active_users" && r["window"] == "1d")
        .unwrap()
        .clone();
    let key = record["key"].as_str().unwrap().to_owned();
    let version = |record: &mut Value, computed_at: &str, value: f64| {
        record["computed_at"] = computed_at.into();
        record["value"] = value.into();
        let path = work.path().join("one.ndjson");
        std::fs::write(&path, format!("{record}\n")).unwrap();
        pg.load(&path);
        pg.sql(&format!(
            "SELECT value FROM pulse_rollups WHERE key = '{key}'"
        ))
        .trim()
        .parse::<f64>()
        .unwrap()
    };
    let loaded = record["value"].as_f64().unwrap();
    assert_eq!(
        version(&mut record, "2000-01-01T00:00:00.000Z", 1e6),
        loaded
    );
    assert_eq!(
        version(&mut record, "2099-01-01T00:00:00.000Z", 123.0),
        123.0
    );
    assert_eq!(version(&mut record, "2098-01-01T00:00:00.000Z", 7.0), 123.0);
}

/// `pulse run` sends its rollups to the Kafka topic keyed by `key` and appends the same
/// records to its daily files; the latest version of each key holds the service's KPIs.
#[tokio::test(flavor = "multi_thread")]
async fn run_sends_rollups_to_kafka_and_files() {
    let _serial = crate::kafka_tests::SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _events_guard) = kafka::temp_topic(&brokers, "rollup-events", 2).await;
    let (rollup_topic, _rollups_guard) = kafka::temp_topic(&brokers, "rollups", 1).await;
    let produced = loadgen(&brokers, &topic, 120, 8);

    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("rollups");
    let mut properties = String::new();
    for (key, value) in kafka::test_consumer_properties() {
        properties.push_str(&format!("\"{key}\" = \"{value}\"\n"));
    }
    let config = dir.path().join("pulse.toml");
    let text = format!(
        "shards = 2\n\
         [kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
         [kafka.properties]\n{properties}\
         [http]\nrefresh_interval = \"300ms\"\n\
         [state]\ndir = \"{state}\"\n\
         [rollups]\ninterval = \"1s\"\ndir = \"{files}\"\ntopic = \"{rollup_topic}\"\n",
        group = kafka::unique_name("pulse-rollups-group"),
        state = dir.path().join("state").display(),
        files = files.display(),
    );
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();
    let pulse = Pulse::start(&["run", "--config", config, "--clock", "event-time"]);
    let snapshot = pulse.wait_for("every event applied", Duration::from_secs(90), |s| {
        s["events"]["accepted"].as_u64() == Some(produced)
    });
    // An emission after everything was applied, then the one at the stop.
    std::thread::sleep(Duration::from_millis(2500));
    let (status, log) = pulse.stop_and_log(Duration::from_secs(30));
    assert!(status.success(), "{log}");

    let mut from_files: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(&files).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        from_files.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    let records = kafka::consume_all(
        &brokers,
        &rollup_topic,
        from_files.len() + 1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        records.len(),
        from_files.len(),
        "the topic and the files carry the same records"
    );
    let from_kafka: Vec<Value> = records
        .iter()
        .map(|r| {
            let value: Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            assert_eq!(
                r.key.as_deref(),
                value["key"].as_str().map(str::as_bytes),
                "keyed by key"
            );
            value
        })
        .collect();
    let latest = |records: &[Value]| -> BTreeMap<String, Value> {
        let mut latest: BTreeMap<String, Value> = BTreeMap::new();
        for r in records {
            let key = r["key"].as_str().unwrap().to_owned();
            let newer = latest
                .get(&key)
                .is_none_or(|old| old["computed_at"].as_str() <= r["computed_at"].as_str());
            if newer {
                latest.insert(key, r.clone());
            }
        }
        latest
    };
    let (kafka_latest, file_latest) = (latest(&from_kafka), latest(&from_files));
    assert_eq!(kafka_latest, file_latest);
    let today = kafka_latest
        .values()
        .map(|r| r["period_start"].as_str().unwrap())
        .max()
        .unwrap();
    for window in ["1d", "7d", "30d"] {
        let record = &kafka_latest[&format!("active_users|{window}|{{}}|{today}")];
        assert_eq!(
            record["value"], snapshot["active_users"][window],
            "{window}"
        );
        assert_eq!(record["final"], false);
    }
}
