//! The deployment files under `deploy/` (see deploy/README.md): the container image, the
//! compose trial, the Kubernetes manifests and the systemd unit agree with each other, with
//! pulse's configuration, and with the files they point at.
//!
//! Nothing here needs a Docker engine, a cluster or a running systemd. The structural checks
//! run everywhere, and so do the real validators — `docker compose config` (or Debian's
//! `docker-compose`), `kubectl kustomize`, `promtool check rules`, `systemd-analyze verify`
//! and `security`, `hadolint` — which `make deps` installs (`scripts/ensure-deploy-tools.sh`,
//! `deploy/docker/ensure-compose.sh`, `scripts/ensure-promtool.sh`). Where one is missing
//! the test reports the skip through `pulse_tests::skip` (listed at the end of `make test`),
//! and under `CI=true` fails instead. Every configuration a deployment runs with is put
//! through the real `pulse check-config` with the environment that deployment sets, because
//! that is where a mismatch (a port, a state directory, an unknown `PULSE_*` key) would
//! otherwise only show in production.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pulse_tests::{skip, tools};
use serde_yaml::Value;

use crate::helpers::{assert_success, pulse_bin};
use crate::process::Pulse;

// ---------------------------------------------------------------------------------------
// Reading the files

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn parse_yaml(text: &str, what: &str) -> Value {
    let mut value: Value =
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{what}: bad merge key: {e}"));
    value
}

/// The documents of a YAML file. The multi-document files here are written with `---` at
/// the start of a line, which cannot occur inside an (indented) block scalar.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        let doc = parse_yaml(current, &path.display().to_string());
        if !doc.is_null() {
            docs.push(doc);
        }
        current.clear();
    };
    for line in text.lines() {
        if line.trim_end() == "---" {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}

fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{} should hold one document", path.display());
    docs.remove(0)
}

/// The value at `a/b/0/c` (keys and sequence indexes); panics naming the path if absent.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    try_at(value, path).unwrap_or_else(|| panic!("{path} missing in\n{value:?}"))
}

fn try_at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('/')
        .try_fold(value, |v, key| match key.parse::<usize>() {
            Ok(i) if v.is_sequence() => v.get(i),
            _ => v.get(key),
        })
}

/// A scalar as text (compose and Kubernetes write numbers and strings interchangeably).
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

fn seq(value: &Value) -> &Vec<Value> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("expected a list, found {value:?}"))
}

fn texts(value: &Value) -> Vec<String> {
    seq(value).iter().map(text).collect()
}

/// Seconds in a duration as pulse, compose and systemd write them: `30s`, `1m 30s`, `1day`,
/// or a bare number of seconds.
fn seconds(duration: &str) -> f64 {
    let mut total = 0.0;
    let mut rest = duration.trim();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {duration:?}"));
        rest = &rest[digits..];
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..letters] {
            "ms" | "msec" => 0.001,
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            other => panic!("unknown unit {other:?} in {duration:?}"),
        };
        total += number * unit;
        rest = rest[letters..].trim_start();
    }
    total
}

/// The validator `tool` (`.tools/bin` first, then PATH), or a reported skip naming the
/// script that installs it (a failure under `CI=true`).
fn validator(tool: &str, installed_by: &str) -> Option<PathBuf> {
    let found = tools::find(tool);
    if found.is_none() {
        skip::missing_tool(tool, &format!("`make deps` installs it: {installed_by}"));
    }
    found
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

// ---------------------------------------------------------------------------------------
// pulse check-config

/// The effective settings `pulse check-config` prints (TOML, secrets masked).
struct Effective(String);

impl Effective {
    /// The value of `key` in `[table]` ("" for the top level), quotes removed.
    fn get(&self, table: &str, key: &str) -> String {
        let mut current = String::new();
        for line in self.0.lines() {
            if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = header.to_owned();
            } else if current == table
                && let Some((k, v)) = line.split_once(" = ")
                && k.trim() == key
            {
                return v.trim().trim_matches('"').to_owned();
            }
        }
        panic!("[{table}] {key} not in the effective settings:\n{}", self.0)
    }

    fn listen_port(&self) -> u16 {
        let listen = self.get("http", "listen");
        listen.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn shutdown_seconds(&self) -> f64 {
        seconds(&self.get("state", "shutdown_timeout"))
    }
}

/// `pulse check-config --config FILE` with exactly `env` set of pulse's variables (none
/// inherited from the test's own environment); asserts it accepts the configuration.
fn check_config(config: &Path, env: &[(String, String)]) -> Effective {
    let mut command = Command::new(pulse_bin());
    command.arg("check-config").arg("--config").arg(config);
    for (name, _) in std::env::vars() {
        if name.starts_with("PULSE_") || name == "KAFKA_BROKERS" || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let output = run(&mut command);
    assert_success(
        &output,
        &format!(
            "pulse check-config --config {} with {env:?}",
            config.display()
        ),
    );
    Effective(String::from_utf8(output.stdout).unwrap())
}

// ---------------------------------------------------------------------------------------
// The Dockerfile

#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// Instructions by stage (one list per FROM), comments dropped, continuations joined.
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    let mut current = String::new();
    for line in read(&repo().join("deploy/docker/Dockerfile")).lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (keyword, args) = current.split_once(char::is_whitespace).unwrap();
        let instruction = Instruction {
            keyword: keyword.to_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        // ARGs before the first FROM belong to no stage.
        if let Some(stage) = stages.last_mut() {
            stage.push(instruction);
        }
        current.clear();
    }
    stages
}

fn runtime_stage() -> Vec<Instruction> {
    dockerfile_stages().pop().expect("a FROM")
}

fn one<'a>(stage: &'a [Instruction], keyword: &str) -> &'a str {
    let found: Vec<_> = stage.iter().filter(|i| i.keyword == keyword).collect();
    assert_eq!(found.len(), 1, "one {keyword} in the runtime stage");
    &found[0].args
}

/// `COPY` lines that take files from the build context: (sources, destination).
fn context_copies() -> Vec<(Vec<String>, String)> {
    dockerfile_stages()
        .iter()
        .flatten()
        .filter(|i| i.keyword == "COPY" && !i.args.contains("--from="))
        .map(|i| {
            let mut words: Vec<String> = i
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .map(str::to_owned)
                .collect();
            let dest = words.pop().unwrap();
            (words, dest)
        })
        .collect()
}

/// The repository file the image holds at `dest`.
fn image_file(dest: &str) -> PathBuf {
    let (sources, _) = context_copies()
        .into_iter()
        .find(|(_, d)| d == dest)
        .unwrap_or_else(|| panic!("no COPY puts a file at {dest}"));
    repo().join(&sources[0])
}

/// ARG defaults of the runtime stage substituted into `text` (`${NAME}`).
fn expand_args(stage: &[Instruction], text: &str) -> String {
    let mut out = text.to_owned();
    for arg in stage.iter().filter(|i| i.keyword == "ARG") {
        if let Some((name, default)) = arg.args.split_once('=') {
            out = out.replace(&format!("${{{name}}}"), default.trim_matches('"'));
        }
    }
    out
}

/// The image's `USER` as (uid, gid).
fn image_user() -> (u32, u32) {
    let stage = runtime_stage();
    let user = expand_args(&stage, one(&stage, "USER"));
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    (
        uid.parse().expect("a numeric uid (runAsNonRoot checks it)"),
        gid.parse().expect("a numeric gid"),
    )
}

fn json_words(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{args} is not exec (JSON) form: {e}"))
}

#[test]
fn dockerfile_copies_files_that_exist_and_the_context_admits() {
    let ignore = read(&repo().join("deploy/docker/Dockerfile.dockerignore"));
    let admitted: BTreeSet<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        "the ignore file starts from nothing"
    );
    let copies = context_copies();
    assert!(!copies.is_empty());
    for (sources, dest) in &copies {
        for source in sources {
            let source = source.trim_end_matches('/');
            assert!(
                repo().join(source).exists(),
                "COPY {source} {dest}: {source} does not exist"
            );
            assert!(
                admitted.contains(source),
                "COPY {source}: Dockerfile.dockerignore leaves it out of the context"
            );
        }
    }
    let builder = &dockerfile_stages()[0];
    assert!(
        builder
            .iter()
            .any(|i| i.keyword == "RUN"
                && i.args.contains("cargo build --release -p pulse --locked")),
        "the builder runs cargo build --release -p pulse --locked"
    );
    if let Some(hadolint) = validator("hadolint", "scripts/ensure-deploy-tools.sh") {
        let output = run(Command::new(hadolint).arg(repo().join("deploy/docker/Dockerfile")));
        assert_success(&output, "hadolint deploy/docker/Dockerfile");
    }
}

#[test]
fn image_runs_pulse_as_a_non_root_user_with_a_config_that_fits_it() {
    let stage = runtime_stage();
    let (uid, gid) = image_user();
    assert!(uid != 0 && gid != 0, "the image must not run as root");
    assert_eq!(json_words(one(&stage, "ENTRYPOINT")), ["pulse"]);
    let cmd = json_words(one(&stage, "CMD"));
    assert_eq!(cmd, ["run", "--config", "/etc/pulse/pulse.toml"]);
    let volume = json_words(one(&stage, "VOLUME"));
    let expose: u16 = one(&stage, "EXPOSE").parse().unwrap();

    // The configuration baked in at the CMD's --config path, as the image runs it.
    let effective = check_config(&image_file(&cmd[2]), &[]);
    let listen = effective.get("http", "listen");
    assert_eq!(
        listen,
        format!("0.0.0.0:{expose}"),
        "in a container pulse must listen on every interface, on the EXPOSEd port"
    );
    assert_eq!(
        volume,
        [effective.get("state", "dir")],
        "state.dir is the VOLUME"
    );

    // HEALTHCHECK runs the script the image installs, against /healthz.
    let healthcheck = one(&stage, "HEALTHCHECK");
    let test = json_words(&healthcheck[healthcheck.find('[').unwrap()..]);
    assert_eq!(test, ["pulse-healthcheck", "/healthz"]);
    assert_eq!(
        image_file("/usr/local/bin/pulse-healthcheck"),
        repo().join("deploy/docker/healthcheck.sh")
    );
}

/// The runtime stage installs the Debian packages of every shared library pulse links
/// (checked on the build host's own binary, where dpkg can say which package has which
/// library; the image is the same Debian release as CI).
#[test]
fn runtime_image_installs_every_library_pulse_links() {
    if validator("ldd", "Debian's libc-bin, on every Debian host").is_none()
        || validator("dpkg", "every Debian host has it").is_none()
    {
        return;
    }
    let stage = runtime_stage();
    let install = stage
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("apt-get install"))
        .expect("the runtime stage installs packages");
    let after = install.args.split("apt-get install").nth(1).unwrap();
    let mut packages: BTreeSet<String> = after
        .split("&&")
        .next()
        .unwrap()
        .split_whitespace()
        .filter(|w| !w.starts_with('-'))
        .map(str::to_owned)
        .collect();
    // Essential in every Debian image, debian:bookworm-slim included.
    packages.extend(["libc6".to_owned(), "libgcc-s1".to_owned()]);

    let ldd = run(Command::new("ldd").arg(pulse_bin()));
    assert_success(&ldd, "ldd pulse");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some(path) = line
            .split("=>")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        else {
            continue; // the vDSO and the loader itself
        };
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        let owner = run(Command::new("dpkg").arg("-S").arg(format!("*/{name}")));
        assert_success(&owner, &format!("dpkg -S */{name}"));
        let owners: BTreeSet<String> = String::from_utf8_lossy(&owner.stdout)
            .lines()
            .filter_map(|l| l.split(':').next())
            .map(str::to_owned)
            .collect();
        assert!(
            owners.iter().any(|p| packages.contains(p)),
            "pulse links {name} (from {owners:?}) but the runtime image installs only {packages:?}"
        );
    }
}

/// The HEALTHCHECK script against a real pulse: 200 passes, anything else fails.
#[test]
fn healthcheck_script_reports_what_pulse_serves() {
    let script = repo().join("deploy/docker/healthcheck.sh");
    let pulse = Pulse::start(&["demo", "--users", "50"]);
    pulse.wait_for_status("/readyz", 200, Duration::from_secs(60));
    let port = pulse.address.rsplit(':').next().unwrap().to_owned();
    let check = |env: (&str, String), path: &str| {
        run(Command::new("bash")
            .arg(&script)
            .arg(path)
            .env_remove("PULSE_HEALTHCHECK_ADDR")
            .env_remove("PULSE_HTTP__LISTEN")
            .env(env.0, env.1))
        .status
        .success()
    };
    // As in the container: the address comes from PULSE_HTTP__LISTEN, wildcard → loopback.
    assert!(check(
        ("PULSE_HTTP__LISTEN", format!("0.0.0.0:{port}")),
        "/healthz"
    ));
    assert!(check(
        ("PULSE_HEALTHCHECK_ADDR", pulse.address.clone()),
        "/readyz"
    ));
    assert!(!check(
        ("PULSE_HEALTHCHECK_ADDR", pulse.address.clone()),
        "/nothing-here"
    ));
    let address = pulse.address.clone();
    assert!(pulse.stop(Duration::from_secs(30)).success());
    assert!(!check(("PULSE_HEALTHCHECK_ADDR", address), "/healthz"));
}

// ---------------------------------------------------------------------------------------
// compose.yml

fn compose_dir() -> PathBuf {
    repo().join("deploy/docker")
}

fn compose() -> Value {
    yaml(&compose_dir().join("compose.yml"))
}

fn environment(service: &Value) -> Vec<(String, String)> {
    let Some(env) = service.get("environment") else {
        return Vec::new();
    };
    env.as_mapping()
        .expect("environment as a map")
        .iter()
        .map(|(k, v)| (text(k), text(v)))
        .collect()
}

/// The value of `name` in `service`'s environment (as [`environment`] lists it).
fn env_var(env: &[(String, String)], service: &str, name: &str) -> String {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{service}'s environment lacks {name}"))
}

/// (source, target) of a service's volumes in short syntax.
fn volumes(service: &Value) -> Vec<(String, String)> {
    service.get("volumes").map_or_else(Vec::new, |list| {
        texts(list)
            .iter()
            .map(|v| {
                let mut parts = v.split(':');
                (
                    parts.next().unwrap().to_owned(),
                    parts.next().expect("source:target").to_owned(),
                )
            })
            .collect()
    })
}

fn command_words(service: &Value) -> Vec<String> {
    texts(at(service, "command"))
}

#[test]
fn compose_references_files_that_exist_and_publishes_only_on_loopback() {
    let compose = compose();
    let services = at(&compose, "services").as_mapping().unwrap();
    let declared: BTreeSet<String> = compose
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().map(text).collect())
        .unwrap_or_default();
    for (name, service) in services {
        let name = text(name);
        if let Some(build) = service.get("build") {
            let context = compose_dir().join(text(at(build, "context")));
            let dockerfile = context.join(text(at(build, "dockerfile")));
            assert!(
                dockerfile.is_file(),
                "{name}: {} missing",
                dockerfile.display()
            );
            assert_eq!(
                dockerfile.canonicalize().unwrap(),
                repo()
                    .join("deploy/docker/Dockerfile")
                    .canonicalize()
                    .unwrap()
            );
            assert_eq!(
                context.canonicalize().unwrap(),
                repo().canonicalize().unwrap()
            );
        }
        for (source, target) in volumes(service) {
            if source.starts_with('.') || source.starts_with('/') {
                let path = compose_dir().join(&source);
                assert!(
                    path.exists(),
                    "{name} mounts {source} at {target}, but {} does not exist",
                    path.display()
                );
            } else {
                assert!(
                    declared.contains(&source),
                    "{name}: volume {source} not declared"
                );
            }
        }
        for port in service.get("ports").map(texts).unwrap_or_default() {
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond loopback"
            );
        }
        if let Some(depends) = service.get("depends_on") {
            for (other, how) in depends.as_mapping().expect("depends_on with conditions") {
                let other_service = at(&compose, &format!("services/{}", text(other)));
                if text(at(how, "condition")) == "service_healthy" {
                    // The pulse image has a HEALTHCHECK too, but say it where it is relied on.
                    assert!(
                        other_service.get("healthcheck").is_some(),
                        "{name} waits for {} to be healthy, which has no healthcheck",
                        text(other)
                    );
                }
            }
        }
    }
    // Prometheus loads its rule files relative to prometheus.yml: all three land together.
    let prometheus = at(&compose, "services/prometheus");
    let targets: BTreeSet<String> = volumes(prometheus).into_iter().map(|(_, t)| t).collect();
    for file in ["prometheus.yml", "recording-rules.yml", "alert-rules.yml"] {
        assert!(
            targets.contains(&format!("/etc/prometheus/{file}")),
            "{file} not mounted"
        );
    }
}

#[test]
fn compose_runs_pulse_against_its_kafka_with_a_valid_config() {
    let compose = compose();
    let services: BTreeSet<String> = at(&compose, "services")
        .as_mapping()
        .unwrap()
        .keys()
        .map(text)
        .collect();
    for required in [
        "kafka",
        "pulse",
        "loadgen",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(services.contains(required), "service {required} missing");
    }
    let pulse = at(&compose, "services/pulse");
    let env = environment(pulse);
    let var = |name: &str| env_var(&env, "pulse", name);
    assert_eq!(var("KAFKA_BROKERS"), "kafka:9092");
    assert_eq!(var("PULSE_HTTP__LISTEN"), "0.0.0.0:9464");

    // The image's configuration with the environment compose adds.
    let command = command_words(pulse);
    let config = &command[command.iter().position(|w| w == "--config").unwrap() + 1];
    let effective = check_config(&image_file(config), &env);
    assert_eq!(effective.get("kafka", "brokers"), "kafka:9092");

    // Kafka advertises the address pulse is given.
    let kafka = environment(at(&compose, "services/kafka"));
    let advertised = &kafka
        .iter()
        .find(|(k, _)| k == "KAFKA_ADVERTISED_LISTENERS")
        .unwrap()
        .1;
    assert!(advertised.contains("://kafka:9092"), "{advertised}");
    assert!(
        kafka
            .iter()
            .any(|(k, v)| k == "KAFKA_PROCESS_ROLES" && v == "broker,controller")
    );

    // loadgen writes the topic pulse reads.
    let loadgen = command_words(at(&compose, "services/loadgen"));
    assert_eq!(
        loadgen,
        [
            "loadgen",
            "--brokers",
            "kafka:9092",
            "--topic",
            "events",
            "--rate",
            "200",
            "--events",
            "100000000"
        ]
    );
    assert_eq!(effective.get("kafka", "topics"), r#"["events"]"#);

    // The port, the healthcheck and the state volume fit the effective configuration.
    let port = effective.listen_port();
    assert!(texts(at(pulse, "ports")).contains(&format!("127.0.0.1:{port}:{port}")));
    let healthcheck = texts(at(pulse, "healthcheck/test"));
    assert!(
        healthcheck.contains(&"/healthz".to_owned()),
        "{healthcheck:?}"
    );
    assert!(
        volumes(pulse)
            .iter()
            .any(|(_, target)| *target == effective.get("state", "dir")),
        "pulse's state directory is a volume"
    );
    let grace = seconds(&text(at(pulse, "stop_grace_period")));
    assert!(
        grace > effective.shutdown_seconds(),
        "stop_grace_period {grace}s must exceed state.shutdown_timeout"
    );
}

/// Grafana's provisioning (written alongside deploy/prometheus) must find what compose
/// mounts: the dashboards at a mounted path, Prometheus under its service name.
#[test]
fn grafana_provisioning_points_at_what_compose_mounts() {
    let compose = compose();
    let grafana = at(&compose, "services/grafana");
    let targets: Vec<String> = volumes(grafana).into_iter().map(|(_, t)| t).collect();
    let provisioning = repo().join("deploy/grafana/provisioning");
    let files = |sub: &str| -> Vec<PathBuf> {
        std::fs::read_dir(provisioning.join(sub))
            .map(|dir| {
                dir.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (providers, datasources) = (files("dashboards"), files("datasources"));
    // The provisioning exists since the dashboard step: an empty directory is a loss.
    assert!(
        !providers.is_empty() && !datasources.is_empty(),
        "deploy/grafana/provisioning lacks its dashboards or datasources files"
    );
    for file in providers {
        for provider in seq(at(&yaml(&file), "providers")) {
            let path = text(at(provider, "options/path"));
            assert!(
                targets.iter().any(|t| path.starts_with(t.as_str())),
                "{}: dashboards at {path}, but compose mounts {targets:?}",
                file.display()
            );
        }
    }
    for file in datasources {
        for source in seq(at(&yaml(&file), "datasources")) {
            if text(at(source, "type")) == "prometheus" {
                let url = text(at(source, "url"));
                assert_eq!(url, "http://prometheus:9090", "{}", file.display());
            }
        }
    }
}

/// `docker compose config` where the compose plugin is installed, else Debian's
/// `docker-compose` (v1), else a reported skip (a failure under `CI=true`).
#[test]
fn compose_file_validates_with_docker_compose() {
    validate_compose(&[]);
}

/// `docker compose config` on compose.yml with the `overrides` (files of deploy/docker).
fn validate_compose(overrides: &[&str]) {
    let file = compose_dir().join("compose.yml");
    let plugin = tools::find("docker").is_some()
        && run(Command::new("docker").args(["compose", "version"]))
            .status
            .success();
    if plugin {
        let mut command = Command::new("docker");
        command.args(["compose", "-f"]).arg(&file);
        for name in overrides {
            command.arg("-f").arg(compose_dir().join(name));
        }
        let output = run(command.args(["config", "-q"]));
        assert_success(&output, "docker compose config");
    } else if tools::find("docker-compose").is_some() {
        // v1 predates the top-level `name:`; everything else is checked as written, from a
        // copy beside the original so that relative paths resolve alike.
        let text: String = read(&file)
            .lines()
            .filter(|l| !l.starts_with("name:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let copy = tempfile::Builder::new()
            .prefix(".compose-check-")
            .suffix(".yml")
            .tempfile_in(compose_dir())
            .unwrap();
        std::fs::write(copy.path(), text).unwrap();
        let mut command = Command::new("docker-compose");
        command.arg("-f").arg(copy.path());
        for name in overrides {
            command.arg("-f").arg(compose_dir().join(name));
        }
        let output = run(command.args(["config", "-q"]).current_dir(compose_dir()));
        assert_success(&output, "docker-compose config");
    } else {
        skip::missing_tool(
            "docker-compose",
            "neither `docker compose` nor `docker-compose` runs; `make deps` installs the \
             latter (deploy/docker/ensure-compose.sh); structure checked only",
        );
    }
}

/// A container's environment, each variable from a Secret given `secret` as its value
/// (and required optional, so that the pod starts without the Secret).
fn container_env(container: &Value, secret: &str) -> Vec<(String, String)> {
    container
        .get("env")
        .map(|list| {
            seq(list)
                .iter()
                .map(|e| {
                    let value = match e.get("value") {
                        Some(v) => text(v),
                        None => {
                            assert_eq!(
                                at(e, "valueFrom/secretKeyRef/optional"),
                                &Value::Bool(true),
                                "the pod starts without the Secret"
                            );
                            secret.to_owned()
                        }
                    };
                    (text(at(e, "name")), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The scale-out overlay: N replicas rolling one at a time, no volume claim (state in
/// object storage), the global view on, and a disruption budget over the same pods.
#[test]
fn kubernetes_scale_out_overlay_runs_replicas_on_object_storage_with_a_budget() {
    let Some(kubectl) = validator("kubectl", "scripts/ensure-deploy-tools.sh") else {
        return;
    };
    let output = run(Command::new(kubectl)
        .arg("kustomize")
        .arg(repo().join("deploy/k8s-scale-out")));
    assert_success(&output, "kubectl kustomize deploy/k8s-scale-out");
    let built = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(built.path(), &output.stdout).unwrap();
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for doc in yaml_docs(built.path()) {
        by_kind.entry(text(at(&doc, "kind"))).or_default().push(doc);
    }
    assert!(
        !by_kind.contains_key("PersistentVolumeClaim"),
        "no pod keeps state of its own"
    );
    let deployment = &by_kind["Deployment"][0];
    let spec = at(deployment, "spec");
    let replicas: u64 = text(at(spec, "replicas")).parse().unwrap();
    assert!(replicas > 1, "{replicas} replicas");
    assert_eq!(text(at(spec, "strategy/type")), "RollingUpdate");
    let pod = at(spec, "template/spec");
    assert!(
        seq(at(pod, "volumes"))
            .iter()
            .all(|v| v.get("persistentVolumeClaim").is_none()),
        "a volume claim is still mounted"
    );
    let budget = &by_kind["PodDisruptionBudget"][0];
    assert!(labels_match(
        at(budget, "spec/selector/matchLabels"),
        at(spec, "template/metadata/labels")
    ));
    let unavailable: u64 = text(at(budget, "spec/maxUnavailable")).parse().unwrap();
    assert!(unavailable < replicas, "the budget keeps a pod serving");

    let container = &seq(at(pod, "containers"))[0];
    let args = texts(at(container, "args"));
    let config_path = &args[args.iter().position(|a| a == "--config").unwrap() + 1];
    let key = config_path.rsplit('/').next().unwrap();
    let config_map = &by_kind["ConfigMap"][0];
    let scratch = tempfile::tempdir().unwrap();
    let config_file = scratch.path().join(key);
    std::fs::write(&config_file, text(at(config_map, &format!("data/{key}")))).unwrap();
    let effective = check_config(&config_file, &container_env(container, "from-a-secret"));
    assert!(effective.get("state", "url").starts_with("s3://"));
    assert_eq!(effective.get("summaries", "enabled"), "true");
}

/// The scale-out override: three pulse instances of one group, state in its S3 server,
/// the global view on, each on its own loopback port, all scraped.
#[test]
fn compose_scale_out_runs_three_instances_on_s3_with_the_global_view() {
    let base = compose();
    let scale_out = yaml(&compose_dir().join("compose.scale-out.yml"));
    let services = at(&scale_out, "services");
    for required in ["s3", "s3-init"] {
        assert!(
            services.get(required).is_some(),
            "service {required} missing"
        );
    }
    let mut ports = BTreeSet::new();
    for name in ["pulse", "pulse-2", "pulse-3"] {
        let service = at(services, name);
        let env = environment(service);
        let var = |key: &str| env_var(&env, name, key);
        assert!(var("PULSE_STATE__URL").starts_with("s3://"), "{name}");
        assert_eq!(var("AWS_ENDPOINT"), "http://s3:9000", "{name}");
        // The configuration it runs with accepts the environment and turns the view on.
        let command = command_words(service);
        let config = &command[command.iter().position(|w| w == "--config").unwrap() + 1];
        let effective = check_config(&image_file(config), &env);
        assert_eq!(effective.get("summaries", "enabled"), "true", "{name}");
        assert_eq!(effective.get("state", "url"), var("PULSE_STATE__URL"));
        // Published on loopback only, each on its own port (compose.yml's for `pulse`).
        let published = service
            .get("ports")
            .or_else(|| at(&base, "services/pulse").get("ports"))
            .map(texts)
            .unwrap_or_else(|| panic!("{name} publishes no port"));
        for port in published {
            assert!(port.starts_with("127.0.0.1:"), "{name}: {port}");
            assert!(ports.insert(port.clone()), "{name} reuses {port}");
        }
    }
    // Prometheus scrapes the three, with the rules of the single-instance file.
    let scraping = yaml(&repo().join("deploy/prometheus/prometheus-scale-out.yml"));
    let mut single = yaml(&repo().join("deploy/prometheus/prometheus.yml"));
    let targets = texts(at(&scraping, "scrape_configs/0/static_configs/0/targets"));
    assert_eq!(targets, ["pulse:9464", "pulse-2:9464", "pulse-3:9464"]);
    single["scrape_configs"][0]["static_configs"][0]["targets"] =
        scraping["scrape_configs"][0]["static_configs"][0]["targets"].clone();
    assert_eq!(
        scraping, single,
        "the two Prometheus files differ only by targets"
    );
    let mounted = volumes(at(services, "prometheus"));
    assert!(mounted.iter().any(|(source, target)| {
        source.ends_with("prometheus-scale-out.yml") && target == "/etc/prometheus/prometheus.yml"
    }));
    validate_compose(&["compose.scale-out.yml"]);
}

// ---------------------------------------------------------------------------------------
// Kubernetes

fn k8s(file: &str) -> PathBuf {
    repo().join("deploy/k8s").join(file)
}

fn kustomize_resources() -> Vec<String> {
    texts(at(&yaml(&k8s("kustomization.yaml")), "resources"))
}

/// Every object of the kustomization, by kind.
fn objects() -> BTreeMap<String, Vec<Value>> {
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for file in kustomize_resources() {
        for doc in yaml_docs(&k8s(&file)) {
            by_kind.entry(text(at(&doc, "kind"))).or_default().push(doc);
        }
    }
    by_kind
}

fn object(kind: &str) -> Value {
    let mut all = objects().remove(kind).unwrap_or_default();
    assert_eq!(all.len(), 1, "one {kind}");
    all.remove(0)
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kustomization_lists_manifests_that_exist_and_build() {
    let resources = kustomize_resources();
    for file in &resources {
        assert!(
            k8s(file).is_file(),
            "kustomization.yaml lists {file}, which does not exist"
        );
        for doc in yaml_docs(&k8s(file)) {
            for key in ["apiVersion", "kind", "metadata/name"] {
                at(&doc, key);
            }
        }
    }
    let kinds: BTreeSet<String> = objects().into_keys().collect();
    for kind in [
        "Namespace",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "PodMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(kind), "no {kind} in the kustomization");
    }
    if let Some(kubectl) = validator("kubectl", "scripts/ensure-deploy-tools.sh") {
        let output = run(Command::new(kubectl)
            .arg("kustomize")
            .arg(repo().join("deploy/k8s")));
        assert_success(&output, "kubectl kustomize deploy/k8s");
        let built = String::from_utf8(output.stdout).unwrap();
        for kind in &kinds {
            assert!(
                built.contains(&format!("kind: {kind}\n")),
                "{kind} not in the build"
            );
        }
        assert!(built.contains("namespace: pulse"));
    }
}

#[test]
fn kubernetes_pod_fits_its_config_probes_and_volume() {
    let deployment = object("Deployment");
    let spec = at(&deployment, "spec");
    let pod = at(spec, "template/spec");
    let pod_labels = at(spec, "template/metadata/labels");
    assert!(labels_match(at(spec, "selector/matchLabels"), pod_labels));
    assert_eq!(
        text(at(spec, "replicas")),
        "1",
        "one consumer-group member for now"
    );
    assert_eq!(
        text(at(spec, "strategy/type")),
        "Recreate",
        "the state volume is RWO"
    );
    // Service links would inject PULSE_SERVICE_HOST & co., unknown keys to pulse.
    assert_eq!(at(pod, "enableServiceLinks"), &Value::Bool(false));
    let containers = seq(at(pod, "containers"));
    assert_eq!(containers.len(), 1);
    let container = &containers[0];

    // The configuration: the ConfigMap's pulse.toml at the --config path, with the env.
    let args = texts(at(container, "args"));
    let config_path = &args[args.iter().position(|a| a == "--config").unwrap() + 1];
    let mounts = seq(at(container, "volumeMounts"));
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|m| text(at(m, "name")) == volume)
            .map(|m| text(at(m, "mountPath")))
            .unwrap_or_else(|| panic!("volume {volume} not mounted"))
    };
    let volume = |name: &str| {
        seq(at(pod, "volumes"))
            .iter()
            .find(|v| text(at(v, "name")) == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    let config_map = object("ConfigMap");
    let config_volume = seq(at(pod, "volumes"))
        .iter()
        .find(|v| v.get("configMap").is_some())
        .expect("the config volume");
    assert_eq!(
        at(config_volume, "configMap/name"),
        at(&config_map, "metadata/name")
    );
    let (dir, key) = config_path.rsplit_once('/').unwrap();
    assert_eq!(mount_of(&text(at(config_volume, "name"))), dir);
    let toml = text(at(&config_map, &format!("data/{key}")));
    let scratch = tempfile::tempdir().unwrap();
    let config_file = scratch.path().join(key);
    std::fs::write(&config_file, toml).unwrap();

    const SECRET: &str = "value-from-a-secret";
    let env = container_env(container, SECRET);
    let effective = check_config(&config_file, &env);
    assert!(
        !effective.0.contains(SECRET),
        "a secret shows in check-config"
    );

    // Probes on the port pulse listens on.
    let listen = effective.get("http", "listen");
    assert!(
        listen.starts_with("0.0.0.0:"),
        "probes come from outside the pod: {listen}"
    );
    let ports = seq(at(container, "ports"));
    let http = ports
        .iter()
        .find(|p| text(at(p, "name")) == "http")
        .expect("a port named http");
    assert_eq!(
        text(at(http, "containerPort")),
        effective.listen_port().to_string()
    );
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = at(container, &format!("{probe}/httpGet"));
        assert_eq!(text(at(get, "path")), path, "{probe}");
        assert_eq!(text(at(get, "port")), "http", "{probe}");
    }
    let grace: f64 = text(at(pod, "terminationGracePeriodSeconds"))
        .parse()
        .unwrap();
    assert!(
        grace > effective.shutdown_seconds(),
        "terminationGracePeriodSeconds {grace} must exceed state.shutdown_timeout"
    );

    // The state directory is the claim, ReadWriteOnce.
    let state_volume = seq(at(pod, "volumes"))
        .iter()
        .find(|v| v.get("persistentVolumeClaim").is_some())
        .expect("a PVC volume");
    assert_eq!(
        mount_of(&text(at(state_volume, "name"))),
        effective.get("state", "dir")
    );
    let pvc = object("PersistentVolumeClaim");
    assert_eq!(
        at(state_volume, "persistentVolumeClaim/claimName"),
        at(&pvc, "metadata/name")
    );
    assert_eq!(texts(at(&pvc, "spec/accessModes")), ["ReadWriteOnce"]);
    let tmp = volume("tmp");
    assert!(tmp.get("emptyDir").is_some());

    // Non-root as the image's user, nothing writable but the volumes, no capabilities.
    let (uid, gid) = image_user();
    assert_eq!(text(at(pod, "securityContext/runAsUser")), uid.to_string());
    assert_eq!(text(at(pod, "securityContext/fsGroup")), gid.to_string());
    assert_eq!(at(pod, "securityContext/runAsNonRoot"), &Value::Bool(true));
    let security = at(container, "securityContext");
    assert_eq!(at(security, "readOnlyRootFilesystem"), &Value::Bool(true));
    assert_eq!(
        at(security, "allowPrivilegeEscalation"),
        &Value::Bool(false)
    );
    assert_eq!(texts(at(security, "capabilities/drop")), ["ALL"]);
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            at(container, &format!("resources/{kind}/{resource}"));
        }
    }

    // The Service and the PodMonitor find this pod on its http port, and the PodMonitor's
    // job label is the `job` the alert rules select.
    let service = object("Service");
    assert!(labels_match(at(&service, "spec/selector"), pod_labels));
    let service_port = &seq(at(&service, "spec/ports"))[0];
    assert_eq!(text(at(service_port, "name")), "http");
    assert_eq!(text(at(service_port, "targetPort")), "http");
    let monitor = object("PodMonitor");
    assert!(labels_match(
        at(&monitor, "spec/selector/matchLabels"),
        pod_labels
    ));
    let endpoint = &seq(at(&monitor, "spec/podMetricsEndpoints"))[0];
    assert_eq!(text(at(endpoint, "port")), "http");
    assert_eq!(text(at(endpoint, "path")), "/metrics");
    let job_label = text(at(&monitor, "spec/jobLabel"));
    let job = text(
        pod_labels
            .get(job_label.as_str())
            .unwrap_or_else(|| panic!("the pod has no label {job_label}")),
    );
    for rules in ["alert-rules.yml", "recording-rules.yml"] {
        let content = read(&repo().join("deploy/prometheus").join(rules));
        for selected in content.split("job=\"").skip(1) {
            let selected = selected.split('"').next().unwrap();
            assert_eq!(selected, job, "{rules} selects job=\"{selected}\"");
        }
    }
}

#[test]
fn prometheusrule_is_generated_from_the_rule_files() {
    let output = run(Command::new("bash")
        .arg(k8s("generate-prometheusrule.sh"))
        .arg("--stdout"));
    assert_success(&output, "generate-prometheusrule.sh");
    let generated = String::from_utf8(output.stdout).unwrap();
    let checked_in = read(&k8s("prometheusrule.yaml"));
    if generated != checked_in {
        let line = generated
            .lines()
            .zip(checked_in.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| generated.lines().count().min(checked_in.lines().count()));
        panic!(
            "deploy/k8s/prometheusrule.yaml is stale (first difference at line {}): run \
             bash deploy/k8s/generate-prometheusrule.sh",
            line + 1
        );
    }
    let docs = yaml_docs(&k8s("prometheusrule.yaml"));
    let sources = ["recording-rules.yml", "alert-rules.yml"];
    assert_eq!(docs.len(), sources.len());
    let scratch = tempfile::tempdir().unwrap();
    let promtool = validator("promtool", "scripts/ensure-promtool.sh");
    for (doc, source) in docs.iter().zip(sources) {
        assert_eq!(text(at(doc, "kind")), "PrometheusRule");
        let original = yaml(&repo().join("deploy/prometheus").join(source));
        assert_eq!(
            at(doc, "spec/groups"),
            at(&original, "groups"),
            "the groups of {source} changed on the way"
        );
        if let Some(promtool) = &promtool {
            let file = scratch.path().join(source);
            let mut rules = serde_yaml::Mapping::new();
            rules.insert("groups".into(), at(doc, "spec/groups").clone());
            std::fs::write(&file, serde_yaml::to_string(&rules).unwrap()).unwrap();
            let check = run(Command::new(promtool).arg("check").arg("rules").arg(&file));
            assert_success(
                &check,
                &format!("promtool check rules ({source} as generated)"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// systemd

/// `[Section] Key=Value` lines of a unit: (section, key) → values in order.
fn unit(path: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read(path).lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            out.entry((section.clone(), key.to_owned()))
                .or_default()
                .push(value.to_owned());
        }
    }
    out
}

#[test]
fn systemd_unit_is_hardened_fits_the_config_and_verifies() {
    let path = repo().join("deploy/systemd/pulse.service");
    let unit = unit(&path);
    let get = |key: &str| -> String {
        let values = unit
            .get(&("Service".to_owned(), key.to_owned()))
            .unwrap_or_else(|| panic!("[Service] {key}= missing"));
        values.last().unwrap().clone()
    };
    for (key, want) in [
        ("User", "pulse"),
        ("StateDirectory", "pulse"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ReadWritePaths", "/var/lib/pulse"),
    ] {
        assert_eq!(get(key), want, "[Service] {key}");
    }
    assert!(get("LimitNOFILE").parse::<u64>().unwrap() >= 4096);
    let exec = get("ExecStart");
    assert_eq!(
        exec,
        "/usr/local/bin/pulse run --config /etc/pulse/pulse.toml"
    );

    // deploy/README.md installs deploy/pulse.toml as /etc/pulse/pulse.toml and the unit as
    // /etc/systemd/system/pulse.service: both sources exist, and that config fits the unit.
    let readme = read(&repo().join("deploy/README.md"));
    for (source, installed) in [
        ("deploy/pulse.toml", "/etc/pulse/pulse.toml"),
        (
            "deploy/systemd/pulse.service",
            "/etc/systemd/system/pulse.service",
        ),
    ] {
        assert!(repo().join(source).is_file(), "{source} missing");
        assert!(
            readme.contains(&format!("{source} {installed}")),
            "deploy/README.md does not install {source} as {installed}"
        );
    }
    let effective = check_config(&repo().join("deploy/pulse.toml"), &[]);
    assert_eq!(
        effective.get("state", "dir"),
        format!("/var/lib/{}", get("StateDirectory")),
        "state.dir is the unit's StateDirectory"
    );
    let stop = seconds(&get("TimeoutStopSec"));
    assert!(
        stop > effective.shutdown_seconds(),
        "TimeoutStopSec {stop}s must exceed state.shutdown_timeout"
    );

    let Some(analyze) = validator(
        "systemd-analyze",
        "Debian's systemd package, through scripts/ensure-deploy-tools.sh",
    ) else {
        return;
    };
    // verify wants ExecStart to exist: the same unit, started from the pulse just built.
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("pulse.service");
    let unit_text = read(&path).replace(
        "ExecStart=/usr/local/bin/pulse ",
        &format!("ExecStart={} ", pulse_bin().display()),
    );
    std::fs::write(&copy, unit_text).unwrap();
    let verify = run(Command::new(&analyze).arg("verify").arg(&copy));
    assert_success(&verify, "systemd-analyze verify pulse.service");
    assert!(
        verify.stderr.is_empty(),
        "systemd-analyze verify warns:\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // The exposure score, 0 (locked down) to 10 (unrestricted); threshold is on a 0-100
    // scale. About 1.3 today: 3.0 leaves room for a newer systemd's extra checks.
    let security = run(Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=30"])
        .arg(&copy));
    let stderr = String::from_utf8_lossy(&security.stderr);
    if stderr.contains("unrecognized option") || stderr.contains("Unknown option") {
        // Debian bookworm's systemd 252 has it; an older one is a set-up CI must not have.
        skip::missing_tool(
            "systemd-analyze security --offline",
            "this systemd-analyze predates it (systemd 252, Debian bookworm, has it)",
        );
    } else {
        assert_success(
            &security,
            "systemd-analyze security --offline=yes --threshold=30",
        );
    }
}

// ---------------------------------------------------------------------------------------
// deploy/README.md

/// Every `deploy/...` path the guide names exists (the rest of its table is relative to
/// deploy/ and checked the same way).
#[test]
fn deploy_guide_names_files_that_exist() {
    let readme = read(&repo().join("deploy/README.md"));
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "/._-".contains(c);
    let mut named = BTreeSet::new();
    for word in readme.split(|c: char| !is_path_char(c)) {
        let word = word.trim_end_matches(['.', '/']);
        if let Some(rest) = word.strip_prefix("deploy/") {
            named.insert(rest.to_owned());
        }
    }
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let cell = line[3..].split('`').next().unwrap();
        if !cell.contains(' ') && !cell.starts_with("http") {
            named.insert(cell.trim_end_matches('/').to_owned());
        }
    }
    assert!(named.len() > 10, "{named:?}");
    for rest in named {
        // `*-rules.yml` and friends are patterns, not files.
        if rest.contains('*') || rest.is_empty() {
            continue;
        }
        assert!(
            repo().join("deploy").join(&rest).exists(),
            "deploy/README.md names deploy/{rest}, which does not exist"
        );
    }
}
