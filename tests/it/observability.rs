//! The monitoring that ships with pulse (`deploy/prometheus`, `deploy/grafana`), checked with
//! the real tools: `promtool` validates the configuration and runs the rules' unit tests, and
//! a real Prometheus scrapes `pulse demo`, evaluates every rule and answers every dashboard
//! query. Grafana itself is not run (not packaged for Debian 12): the dashboard is checked by
//! its structure and by running its queries the way Grafana would.
//!
//! Why the live Prometheus gets a backfilled "last week": many of the rules and panels
//! compare with `offset 7d`, which a Prometheus started a second ago cannot answer. Before
//! it starts, `promtool tsdb create-blocks-from openmetrics` writes one scrape of the demo,
//! as it would have looked 7 days ago, into its storage. Today's and last week's users are
//! made to differ (last week had 1000 more), so the three active-user alerts must go
//! pending on real pulse output, and every other alert must stay quiet: that checks the
//! label matching of the guards (`and ignoring (...)`), which synthetic unit-test series
//! cannot.
//!
//! Needs `promtool` and `prometheus` on PATH (Debian's `prometheus` package, installed by
//! `scripts/ensure-promtool.sh`, which `make test` runs). Every process started here is
//! killed when its guard drops, also when an assertion fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::process::{Pulse, http_get};

/// README metrics pulse only exports with Kafka or a state directory, neither of which
/// `pulse demo` has: they cannot be ingested from it, so
/// `prometheus_ingests_the_kafka_and_checkpoint_metrics_of_pulse_run` checks them against
/// `pulse run` instead.
const NOT_IN_DEMO: &[&str] = &[
    // One series per assigned partition: only `pulse run` has partitions.
    "pulse_consumer_lag_messages",
    "pulse_committed_offset",
    // Only with a state directory (`pulse run`): no checkpoint, no checkpoint metrics.
    "pulse_checkpoints_total",
    "pulse_checkpoint_failures_total",
    "pulse_last_checkpoint_timestamp_seconds",
    "pulse_checkpoint_bytes",
    "pulse_checkpoint_pause_seconds",
    "pulse_checkpoint_write_seconds",
];

/// Dashboard panels that show nothing in `pulse demo`, by title; their queries must still
/// parse and succeed there, and must return data against `pulse run`
/// (`prometheus_ingests_the_kafka_and_checkpoint_metrics_of_pulse_run`).
const EMPTY_IN_DEMO: &[&str] = &[
    // A ratio over the last 5 minutes of records read, absent without traffic: the demo's
    // 300 users send about one event a minute.
    "Reject ratio",
    // Consumer lag exists only for Kafka partitions (`pulse run`).
    "Consumer lag",
    "Consumer lag by partition",
    // Checkpoints exist only with a state directory (`pulse run`).
    "Checkpoint age",
    "Checkpoint pause and write time",
    "Checkpoints written and failed",
];

/// The alerts the backfilled "last week" (1000 more active users) must make pending, sorted.
const EXPECTED_LIVE_ALERTS: &[&str] = &[
    "PulseActiveUsers1hBelowLastWeek",
    "PulseActiveUsers5mBelowLastWeek",
    "PulseDailyActiveUsersBelowLastWeek",
];

const WEEK_SECONDS: u64 = 7 * 24 * 3600;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

fn deploy(path: &str) -> PathBuf {
    repo_root().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `name` from PATH, or a failure that says how to install it.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: run `scripts/ensure-promtool.sh` (it installs Debian's \
                 prometheus package; `make test` runs it)"
            )
        })
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs promtool; fails with its whole output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let output = Command::new(tool("promtool"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("running promtool");
    let text = output_text(&output);
    assert!(
        output.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

fn rule_names(file: &str, kind: &str) -> Vec<String> {
    read(&deploy(&format!("prometheus/{file}")))
        .lines()
        .filter_map(|line| line.trim().strip_prefix(&format!("- {kind}: ")))
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    // Rule paths in prometheus.yml are relative to it, so it is checked where it is.
    let config = promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    assert!(config.contains("2 rule files found"), "{config}");
    let rules = promtool(&[
        "check",
        "rules",
        "deploy/prometheus/recording-rules.yml",
        "deploy/prometheus/alert-rules.yml",
    ]);
    let recording = rule_names("recording-rules.yml", "record").len();
    let alerts = rule_names("alert-rules.yml", "alert").len();
    assert!(
        rules.contains(&format!("SUCCESS: {recording} rules found"))
            && rules.contains(&format!("SUCCESS: {alerts} rules found")),
        "expected {recording} recording and {alerts} alerting rules:\n{rules}"
    );

    let mut tests: Vec<String> = std::fs::read_dir(deploy("prometheus/tests"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yml"))
        .map(|path| {
            path.strip_prefix(repo_root())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    tests.sort();
    assert!(
        !tests.is_empty(),
        "no rule unit tests in deploy/prometheus/tests"
    );
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    promtool(&args);

    // Every alert has at least one unit test.
    let tested: String = tests.iter().map(|t| read(&repo_root().join(t))).collect();
    for alert in rule_names("alert-rules.yml", "alert") {
        assert!(
            tested.contains(&format!("alertname: {alert},"))
                || tested.contains(&format!("alertname: {alert}\n")),
            "{alert} has no unit test in deploy/prometheus/tests"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The dashboard, without Grafana.

fn dashboard() -> Value {
    serde_json::from_str(&read(&deploy("grafana/dashboards/pulse.json")))
        .expect("pulse.json is JSON")
}

/// Every panel, those inside collapsed rows included, rows excluded.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

/// The PromQL of every panel target: (panel title, expression).
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or_default().into()))
        })
        .collect()
}

/// The metric names pulse exports: the quoted `pulse_…` names of pulse-export's list.
fn exported_metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for def in pulse_export::metrics::all() {
        names.insert(def.name.to_owned());
        // A histogram is exposed as these three series.
        if def.kind == pulse_export::metrics::Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{}{suffix}", def.name));
            }
        }
    }
    names
}

/// Identifiers in `text` that name a pulse metric or recording rule (`pulse_…`, `pulse:…`).
fn pulse_identifiers(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .map(|word| word.trim_end_matches(':'))
        .filter(|word| word.len() > 6 && (word.starts_with("pulse_") || word.starts_with("pulse:")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn dashboard_and_rules_are_well_formed() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(
        variable("feature")["definition"],
        "label_values(pulse_feature_adoption_ratio, feature)"
    );
    // Dimensions are configured, not fixed: one variable picks the dimension, one its values.
    assert_eq!(
        variable("dimension")["definition"],
        "label_values(pulse_dimension_active_users, dimension)"
    );
    assert_eq!(
        variable("value")["definition"],
        "label_values(pulse_dimension_active_users{dimension=\"$dimension\"}, value)"
    );

    let rows: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(
        rows,
        [
            "Engagement overview",
            "Sessions",
            "Feature adoption",
            "Ingestion health",
            "Retention and churn",
            "Outcomes",
            "Breakdowns",
            "Funnels"
        ]
    );

    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if !ids.insert(panel["id"].as_u64()) {
            problems.push(format!("{title}: duplicate id"));
        }
        if panel["description"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{title}: no description"));
        }
        if panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{title}: no unit"));
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("{title}: datasource is not ${{datasource}}"));
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!("{title}: no query"));
        }
        for target in targets {
            if target["expr"].as_str().is_none_or(str::is_empty)
                || target["datasource"]["uid"] != "${datasource}"
            {
                problems.push(format!("{title}: target {} incomplete", target["refId"]));
            }
        }
    }
    for title in EMPTY_IN_DEMO {
        if !panel_queries(&dashboard).iter().any(|(t, _)| t == title) {
            problems.push(format!(
                "EMPTY_IN_DEMO names a panel that does not exist: {title}"
            ));
        }
    }

    // Every pulse metric the rules and the dashboard name exists (this catches typos in the
    // queries that cannot be run against `pulse demo`: lag, checkpoints), and every
    // recording rule they name is defined.
    let metrics = exported_metric_names();
    let recorded: BTreeSet<String> = rule_names("recording-rules.yml", "record")
        .into_iter()
        .collect();
    for file in [
        deploy("prometheus/recording-rules.yml"),
        deploy("prometheus/alert-rules.yml"),
        deploy("grafana/dashboards/pulse.json"),
    ] {
        for name in pulse_identifiers(&read(&file)) {
            let known = if name.contains(':') {
                recorded.contains(&name)
            } else {
                metrics.contains(&name)
            };
            if !known {
                problems.push(format!("{}: unknown name {name}", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The provisioning points Grafana at the dashboards and at Prometheus.
    let provider = read(&deploy("grafana/provisioning/dashboards/pulse.yml"));
    assert!(
        provider.contains("path: /var/lib/grafana/dashboards"),
        "{provider}"
    );
    let datasource = read(&deploy("grafana/provisioning/datasources/prometheus.yml"));
    assert!(datasource.contains("type: prometheus"), "{datasource}");
}

// ---------------------------------------------------------------------------------------
// A real Prometheus against `pulse demo`.

/// A running Prometheus on a free loopback port; killed when dropped.
struct Prometheus {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(config: &Path, storage: &Path, log: PathBuf) -> Prometheus {
        // Bind-and-release: another process could take the port in between, but then
        // Prometheus exits at once and `wait_ready` says so with its log.
        let address = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .to_string();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("prometheus log file"))
            .spawn()
            .expect("starting prometheus");
        let mut prometheus = Prometheus {
            child,
            address,
            log,
        };
        prometheus.wait_ready(Duration::from_secs(30));
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            if http_get(&self.address, "/-/ready").is_ok_and(|(status, _)| status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("prometheus not ready within {timeout:?}:\n{}", self.log());
    }

    /// GET an API path; the `data` of a successful answer, or the error.
    fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) =
            http_get(&self.address, path).map_err(|e| format!("GET {path}: {e}"))?;
        let value: Value =
            serde_json::from_str(&body).map_err(|e| format!("GET {path}: {status} {e}: {body}"))?;
        if value["status"] == "success" {
            Ok(value["data"].clone())
        } else {
            Err(format!("GET {path}: {status} {body}"))
        }
    }

    /// An instant query at the current time: its result vector.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The metric names of the README's metrics table: (name, is a histogram). `process_*`
/// stays as written.
fn readme_metrics() -> Vec<(String, bool)> {
    let readme = read(&repo_root().join("README.md"));
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with("| metric | type |"));
    lines.next().expect("the README has a metrics table");
    let mut names = Vec::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let histogram = cells.get(2) == Some(&"histogram");
        for name in cells[1].split('`').skip(1).step_by(2) {
            names.push((name.to_owned(), histogram));
        }
    }
    assert!(
        names.len() > 20,
        "README metrics table not found: {names:?}"
    );
    names
}

/// One scrape of the demo as an OpenMetrics file for `promtool tsdb create-blocks-from`:
/// the same sample every 15 s from 7 days and 15 minutes ago to 7 days ago plus 10
/// minutes, with the labels the scrape adds. Last week had 1000 more active users today
/// and in the trailing 5 minutes and hour.
fn last_week(exposition: &str, instance: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut samples = Vec::new();
    for line in exposition.lines().filter(|l| l.starts_with("pulse_")) {
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let mut value: f64 = value.parse().expect("a number");
        if series == "pulse_active_users{window=\"1d\"}"
            || series.starts_with("pulse_recent_active_users{")
        {
            value += 1000.0;
        }
        let target = format!("instance=\"{instance}\",job=\"pulse\"");
        let series = match series.split_once('{') {
            Some((name, labels)) => format!("{name}{{{target},{labels}"),
            None => format!("{series}{{{target}}}"),
        };
        samples.push((series, value));
    }
    let mut out = String::new();
    let start = now - WEEK_SECONDS - 15 * 60;
    for t in (start..now - WEEK_SECONDS + 10 * 60).step_by(15) {
        for (series, value) in &samples {
            let _ = writeln!(out, "{series} {value} {t}");
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The shipped prometheus.yml for this test: rule files by absolute path, the demo as the
/// only target, every second, no Alertmanager (nothing listens; alerts are read from the
/// API). Each edit must find its text, so a changed file fails here rather than silently
/// testing something else.
fn test_config(demo: &str) -> String {
    let shipped = read(&deploy("prometheus/prometheus.yml"));
    let (before, after) = shipped
        .split_once("\nalerting:\n")
        .expect("an alerting section");
    let (_alerting, scrape) = after
        .split_once("\nscrape_configs:\n")
        .expect("scrape_configs after alerting");
    let mut config = format!("{before}\nscrape_configs:\n{scrape}");
    let rules = deploy("prometheus");
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
        (
            "evaluation_interval: 15s",
            "evaluation_interval: 1s".to_owned(),
        ),
        (
            "- recording-rules.yml",
            format!("- {}", rules.join("recording-rules.yml").display()),
        ),
        (
            "- alert-rules.yml",
            format!("- {}", rules.join("alert-rules.yml").display()),
        ),
        (
            "targets: [\"pulse:9464\"]",
            format!("targets: [\"{demo}\"]"),
        ),
    ] {
        assert!(
            config.contains(from),
            "prometheus.yml no longer has `{from}`"
        );
        config = config.replace(from, &to);
    }
    config
}

/// A dashboard query as Grafana would send it, for one feature and one dimension with
/// every value ("All", whose regex is `.+`).
fn grafana_expr(expr: &str, feature: &str, dimension: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("${feature}", feature)
        .replace("$feature", feature)
        .replace("$dimension", dimension)
        .replace("$value", ".+")
}

/// Polls `check` until it returns Ok, or panics with its last error and both logs.
fn eventually<T>(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(error) if Instant::now() >= deadline => {
                panic!("{what}, not within {timeout:?}:\n{error}\n{}", context())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

#[test]
fn prometheus_scrapes_the_demo_evaluates_every_rule_and_answers_every_panel() {
    let dir = tempfile::tempdir().unwrap();
    let pulse = Pulse::start(&["demo", "--users", "300"]);
    pulse.wait_for_status("/readyz", 200, Duration::from_secs(60));
    pulse.wait_for("a populated month", Duration::from_secs(30), |s| {
        s["active_users"]["30d"].as_u64().unwrap_or(0) > 100
            && s["features"].as_object().is_some_and(|f| !f.is_empty())
    });

    let (status, exposition) = pulse.get("/metrics");
    assert_eq!(status, 200, "{exposition}");
    let backfill = dir.path().join("last-week.om");
    std::fs::write(&backfill, last_week(&exposition, &pulse.address)).unwrap();
    let storage = dir.path().join("data");
    promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        backfill.to_str().unwrap(),
        storage.to_str().unwrap(),
    ]);
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, test_config(&pulse.address)).unwrap();
    let prometheus = Prometheus::start(&config, &storage, dir.path().join("prometheus.log"));
    let context = || {
        format!(
            "prometheus log:\n{}\npulse log:\n{}",
            prometheus.log(),
            pulse.log()
        )
    };

    // Scraped, and every rule evaluated at least once.
    eventually("the demo scraped", Duration::from_secs(30), context, || {
        let up = prometheus.query("up{job=\"pulse\"} == 1")?;
        if up.is_empty() {
            return Err("up{job=\"pulse\"} is not 1".into());
        }
        Ok(())
    });
    let recording = rule_names("recording-rules.yml", "record");
    let alerting = rule_names("alert-rules.yml", "alert");
    let rules = eventually(
        "every rule evaluated",
        Duration::from_secs(30),
        context,
        || {
            let data = prometheus.api("/api/v1/rules")?;
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let pending: Vec<&str> = rules
                .iter()
                .filter(|r| r["health"] == "unknown")
                .filter_map(|r| r["name"].as_str())
                .collect();
            if rules.len() != recording.len() + alerting.len() || !pending.is_empty() {
                return Err(format!(
                    "{} rules loaded, {} expected; not evaluated yet: {pending:?}",
                    rules.len(),
                    recording.len() + alerting.len()
                ));
            }
            Ok(rules)
        },
    );
    let unhealthy: Vec<String> = rules
        .iter()
        .filter(|r| r["health"] != "ok" || r["lastError"].as_str().is_some_and(|e| !e.is_empty()))
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    assert!(
        unhealthy.is_empty(),
        "rules failing:\n{}",
        unhealthy.join("\n")
    );
    let loaded: BTreeSet<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    for name in recording.iter().chain(&alerting) {
        assert!(loaded.contains(name.as_str()), "{name} not loaded");
    }

    // Every metric of the README's table is ingested.
    let ingested: BTreeSet<String> = prometheus
        .api("/api/v1/label/__name__/values")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut missing = Vec::new();
    for (name, histogram) in readme_metrics() {
        if NOT_IN_DEMO.contains(&name.as_str()) {
            continue;
        }
        let present = if let Some(prefix) = name.strip_suffix('*') {
            ingested.iter().any(|n| n.starts_with(prefix))
        } else if histogram {
            ["_bucket", "_sum", "_count"]
                .iter()
                .all(|s| ingested.contains(&format!("{name}{s}")))
        } else {
            ingested.contains(&name)
        };
        if !present {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "not ingested: {missing:?}\n{}",
        context()
    );

    // The backfilled week makes exactly the three active-user alerts pending; every guard
    // matches real series, and nothing else fires on a healthy demo.
    eventually(
        "the active-user alerts",
        Duration::from_secs(20),
        context,
        || {
            let data = prometheus.api("/api/v1/alerts")?;
            let active: BTreeMap<String, String> = data["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let name = a["labels"]["alertname"].as_str().unwrap_or_default();
                    (
                        name.to_owned(),
                        a["state"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let names: Vec<&str> = active.keys().map(String::as_str).collect();
            if names == EXPECTED_LIVE_ALERTS {
                Ok(())
            } else {
                Err(format!(
                    "active alerts: {active:?}, expected {EXPECTED_LIVE_ALERTS:?}"
                ))
            }
        },
    );

    // Every dashboard query parses, and returns data unless its panel is empty in a demo.
    let dashboard = dashboard();
    let features = prometheus
        .api("/api/v1/label/feature/values?match[]=pulse_feature_adoption_ratio")
        .unwrap();
    let feature = features[0]
        .as_str()
        .expect("label_values(pulse_feature_adoption_ratio, feature) is empty")
        .to_owned();
    let dimensions = prometheus
        .api("/api/v1/label/dimension/values?match[]=pulse_dimension_active_users")
        .unwrap();
    let dimension = dimensions[0]
        .as_str()
        .expect("label_values(pulse_dimension_active_users, dimension) is empty")
        .to_owned();
    let queries = panel_queries(&dashboard);
    eventually(
        "every panel's data",
        Duration::from_secs(20),
        context,
        || {
            let mut problems = Vec::new();
            for (title, expr) in &queries {
                let expr = grafana_expr(expr, &feature, &dimension);
                match prometheus.query(&expr) {
                    Err(error) => problems.push(format!("{title}: {expr}: {error}")),
                    Ok(result) if result.is_empty() && !EMPTY_IN_DEMO.contains(&title.as_str()) => {
                        problems.push(format!("{title}: {expr}: no data"))
                    }
                    Ok(_) => {}
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("\n"))
            }
        },
    );
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = annotation["expr"].as_str() {
            prometheus
                .query(expr)
                .unwrap_or_else(|e| panic!("annotation {}: {e}", annotation["name"]));
        }
    }

    drop(prometheus);
    assert!(pulse.stop(Duration::from_secs(30)).success());
}

/// The metrics `pulse demo` cannot have (partitions, checkpoints), from a real Prometheus
/// scraping `pulse run` on a real broker with a state directory.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_ingests_the_kafka_and_checkpoint_metrics_of_pulse_run() {
    use pulse_tests::kafka;

    let _serial = crate::kafka_tests::SERIAL.lock().await;
    let brokers = kafka::brokers();
    let (topic, _guard) = kafka::temp_topic(&brokers, "observability", 2).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records = (0..50).map(|i| {
        let line = format!(
            r#"{{"user_id":"u{i}","event":"login","ts":{}}}"#,
            now_ms - i * 1_000
        );
        (Some(format!("u{i}")), line.into_bytes())
    });
    kafka::produce(&brokers, &topic, records).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = crate::kafka_tests::write_config_with(
        dir.path(),
        &brokers,
        &topic,
        "checkpoint_interval = \"300ms\"\n",
    );
    let pulse = Pulse::start(&["run", "--config", &config_path]);
    pulse.wait_for(
        "the events and a checkpoint",
        Duration::from_secs(60),
        |s| s["events"]["accepted"] == 50,
    );
    pulse.wait_for_status("/readyz", 200, Duration::from_secs(30));

    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, test_config(&pulse.address)).unwrap();
    let storage = dir.path().join("data");
    let prometheus = Prometheus::start(&config, &storage, dir.path().join("prometheus.log"));
    let context = || {
        format!(
            "prometheus log:\n{}\npulse log:\n{}",
            prometheus.log(),
            pulse.log()
        )
    };
    eventually(
        "the Kafka and checkpoint series",
        Duration::from_secs(30),
        context,
        || {
            let missing: Vec<&str> = NOT_IN_DEMO
                .iter()
                .copied()
                .filter(|name| {
                    prometheus
                        .query(name)
                        .map_or(true, |series| series.is_empty())
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not ingested yet: {missing:?}"))
            }
        },
    );
    assert!(pulse.stop(Duration::from_secs(30)).success());
}
