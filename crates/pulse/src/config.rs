//! Configuration: `default.toml` (compiled in) ← the user's file ← `PULSE_…` environment.
//!
//! The layers are merged by figment into a [`RawConfig`] that mirrors the file one to one
//! (with `deny_unknown_fields`, so a typo is an error, not a silently ignored key). It is
//! then checked once into pulse-core's [`EngineSettings`]; nothing downstream re-reads the
//! raw values.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use figment::Figment;
use figment::Source;
use figment::providers::{Format, Serialized, Toml};
use pulse_core::EngineSettings;
use pulse_core::dimensions::DimensionSettings;
use pulse_core::funnel_rules::{FunnelDef, StepMatch, TimeToValueDef};
use pulse_core::outcome_settings::OutcomeSettings;
use pulse_core::partitioner::Partitioner;
use pulse_core::settings::{ClockMode, CohortMode, FieldPaths, HllWidth, KindNames, time_zone};
use serde::{Deserialize, Serialize};

/// The documented defaults, also the base layer of every configuration.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// The `[outcomes.*]` tables of `pulse demo` when the configuration sets none: those of
/// the built-in generator's surveys, orders and subscription changes.
const DEMO_OUTCOMES_TOML: &str = include_str!("../demo-outcomes.toml");
/// The funnels of `pulse demo` when the configuration has none, so that the demo shows them.
const DEMO_FUNNELS_TOML: &str = include_str!("../demo-funnels.toml");

/// `PULSE_…` variables that belong to the command line, not to the configuration.
const COMMAND_LINE_VARIABLES: [&str; 1] = ["PULSE_CONFIG"];

/// The top-level keys and tables of the configuration, from the shipped defaults.
fn top_level_keys() -> &'static std::collections::BTreeSet<String> {
    static KEYS: std::sync::OnceLock<std::collections::BTreeSet<String>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let table: toml::Table = DEFAULT_TOML.parse().expect("default.toml is valid TOML");
        table.keys().cloned().collect()
    })
}

/// The conventional variable for Kafka bootstrap servers, honoured as `kafka.brokers`.
const KAFKA_BROKERS: &str = "KAFKA_BROKERS";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub timezone: String,
    pub shards: usize,
    pub partitions: usize,
    pub partitioner: Partitioner,
    #[serde(with = "human_duration")]
    pub allowed_lateness: Duration,
    pub retention_days: u32,
    #[serde(with = "human_duration")]
    pub max_future_skew: Duration,
    pub limits: RawLimits,
    pub hll: RawHll,
    pub sessions: RawSessions,
    pub features: RawFeatures,
    pub retention: RawRetention,
    /// Breakdown dimensions by name (`[dimensions.<name>]`), in name order.
    pub dimensions: BTreeMap<String, RawDimension>,
    pub fields: FieldPaths,
    pub events: KindNames,
    #[serde(default)]
    pub outcomes: OutcomeSettings,
    pub kafka: RawKafka,
    pub http: RawHttp,
    pub state: RawState,
    pub rollups: RawRollups,
    pub summaries: RawSummaries,
    pub demo: RawDemo,
    /// Absent from the defaults: none unless configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub funnels: Vec<RawFunnel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_value: Option<RawTimeToValue>,
}

/// One `[[funnels]]` entry (checked in pulse-core's `funnel_rules`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFunnel {
    pub name: String,
    #[serde(with = "human_duration")]
    pub window: Duration,
    pub steps: Vec<StepMatch>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeToValue {
    pub event: StepMatch,
    #[serde(with = "human_duration")]
    pub window: Duration,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    pub auto_offset_reset: String,
    pub dead_letters: bool,
    pub dead_letter_topic: String,
    /// Re-key the input by user into `<group_id>.by-user` and consume that (see
    /// `pulse_ingest::kafka::repartition`).
    pub repartition: bool,
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are read from files (a mounted Kubernetes
    /// Secret, a Docker secret): property name → path. The value is the file's content
    /// without its trailing newline; it is always masked.
    pub secret_files: BTreeMap<String, String>,
}

/// Property names whose values are secrets: masked in output, never logged.
const SECRET_MARKERS: [&str; 3] = ["password", "secret", "key"];

impl RawKafka {
    /// Reads every `secret_files` entry into `properties`. A property set both ways is an
    /// error rather than a silent choice.
    fn read_secret_files(&mut self) -> Result<()> {
        for (property, path) in &self.secret_files {
            if self.properties.contains_key(property) {
                bail!(
                    "kafka property {property:?} is set both in [kafka.properties] and in \
                     [kafka.secret_files]; keep one"
                );
            }
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read kafka.secret_files.{property:?} from {path}")
            })?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            self.properties.insert(property.clone(), value.to_owned());
        }
        Ok(())
    }

    /// The properties with secret values replaced, for `check-config` and logs.
    pub fn masked_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let secret = self.secret_files.contains_key(k)
                    || SECRET_MARKERS.iter().any(|m| k.to_lowercase().contains(m));
                (
                    k.clone(),
                    if secret {
                        "********".to_owned()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    }
}

impl std::fmt::Debug for RawKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawKafka")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("properties", &self.masked_properties())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: String,
    #[serde(with = "human_duration")]
    pub refresh_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub dir: String,
    /// `file:///…`, `s3://bucket/prefix`, `gs://…`, `az://…`; wins over `dir` when set.
    pub url: String,
    #[serde(with = "human_duration")]
    pub checkpoint_interval: Duration,
    pub keep: usize,
    #[serde(with = "human_duration")]
    pub shutdown_timeout: Duration,
    /// How long one request to the state store may go unanswered, retries included.
    #[serde(with = "human_duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollups {
    pub enabled: bool,
    #[serde(with = "human_duration")]
    pub interval: Duration,
    pub dir: String,
    pub topic: String,
    pub include_sketches: bool,
}

/// `[summaries]`: the global view across instances (see `pulse_ingest::kafka::summaries`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSummaries {
    pub enabled: bool,
    pub topic: String,
    #[serde(with = "human_duration")]
    pub publish_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    pub users: u32,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_record_size: bytesize::ByteSize,
    pub max_user_id_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHll {
    pub lg_k: u8,
    pub width: RawHllWidth,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawHllWidth {
    Hll4,
    Hll6,
    Hll8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    #[serde(with = "human_duration")]
    pub timeout: Duration,
    #[serde(with = "human_duration")]
    pub max_length: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatures {
    pub max_tracked: usize,
    pub events: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub cohort: CohortMode,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDimension {
    /// JSON pointers, first present wins.
    pub paths: Vec<String>,
    /// Values with series of their own; later ones pool in "__other__".
    #[serde(default = "RawDimension::default_max_values")]
    pub max_values: usize,
    /// Feature adoption broken down by its values too (at most two dimensions).
    #[serde(default)]
    pub features: bool,
}

impl RawDimension {
    fn default_max_values() -> usize {
        25
    }

    /// What `pulse demo` breaks its numbers down by when the configuration names no
    /// dimension: the platform its generator writes, feature adoption included.
    pub fn demo_platform() -> (String, RawDimension) {
        let paths = ["/platform", "/properties/$os", "/context/os/name"];
        let dimension = RawDimension {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            max_values: RawDimension::default_max_values(),
            features: true,
        };
        ("platform".to_owned(), dimension)
    }
}

/// A configuration error in the user's words: the key as written in the file or named by
/// the variable (figment would say `default.kafka.brokrs`, after its profile), and where it
/// was set.
fn describe(error: figment::Error, variables: &BTreeMap<String, String>) -> String {
    let lines: Vec<String> = error
        .into_iter()
        .map(|error| {
            let key = error.path.join(".");
            let origin = match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                Some(Source::File(path)) => Some(format!("in {}", path.display())),
                _ => variables
                    .iter()
                    .filter(|(set, _)| key == **set || key.starts_with(&format!("{set}.")))
                    .map(|(_, variable)| format!("set by {variable}"))
                    .next(),
            };
            match (key.is_empty(), origin) {
                (true, Some(origin)) => format!("{} ({origin})", error.kind),
                (true, None) => error.kind.to_string(),
                (false, Some(origin)) => format!("{key}: {} ({origin})", error.kind),
                (false, None) => format!("{key}: {}", error.kind),
            }
        })
        .collect();
    format!("invalid configuration: {}", lines.join("; "))
}

/// Loads the layers. `env` is the process environment in production and a fixed list in
/// tests, so tests never depend on the machine's variables.
/// The process environment, read at the edge and passed on: to the configuration and to the
/// state store (object storage credentials).
pub fn environment() -> Vec<(String, String)> {
    std::env::vars().collect()
}

pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<RawConfig> {
    let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
    if let Some(path) = file {
        if !path.is_file() {
            bail!(
                "config file {} does not exist or is not a file",
                path.display()
            );
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    // The variables are passed in (not read by figment from the process) so that tests
    // are independent of the machine's environment. Which variable set which key is kept to
    // name it in an error.
    let mut variables: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("PULSE_") else {
            continue;
        };
        if COMMAND_LINE_VARIABLES.contains(&name.as_str()) || rest.is_empty() {
            continue;
        }
        let librdkafka_table = [
            ("KAFKA__PROPERTIES__", "properties"),
            ("KAFKA__SECRET_FILES__", "secret_files"),
        ]
        .into_iter()
        .find_map(|(prefix, table)| Some((rest.strip_prefix(prefix)?, table)));
        if let Some((property, table)) = librdkafka_table {
            // librdkafka names have dots, which variables cannot: SASL_PASSWORD → sasl.password.
            let name = property.to_lowercase().replace('_', ".");
            let entries = BTreeMap::from([(name, value.clone())]);
            let nested = BTreeMap::from([("kafka", BTreeMap::from([(table, entries)]))]);
            figment = figment.merge(Serialized::defaults(nested));
            continue;
        }
        let key = rest.to_lowercase().replace("__", ".");
        let table = key.split('.').next().unwrap_or_default();
        if !top_level_keys().contains(table) {
            // Not ours: e.g. the PULSE_SERVICE_HOST / PULSE_PORT_… variables Kubernetes
            // injects for a Service named "pulse". A typo inside a known table still fails.
            tracing::warn!(variable = %name, "Ignoring an environment variable that is not a pulse setting.");
            continue;
        }
        let value: figment::value::Value =
            value.parse().expect("parsing an env value is infallible");
        figment = figment.merge(Serialized::default(&key, value));
        variables.insert(key, name.clone());
    }
    if let Some((_, brokers)) = env.iter().find(|(name, _)| name == KAFKA_BROKERS) {
        figment = figment.merge(Serialized::default("kafka.brokers", brokers));
        variables.insert("kafka.brokers".to_owned(), KAFKA_BROKERS.to_owned());
    }
    let mut raw: RawConfig = figment
        .extract()
        .map_err(|error| anyhow!(describe(error, &variables)))?;
    raw.kafka.read_secret_files()?;
    Ok(raw)
}

impl RawConfig {
    /// The demo shows outcome KPIs out of the box: without `[outcomes.*]` tables of the
    /// user's, it takes those that match its generator.
    pub fn use_demo_outcomes(&mut self) {
        if self.outcomes == OutcomeSettings::default() {
            self.outcomes =
                toml::from_str(DEMO_OUTCOMES_TOML).expect("demo-outcomes.toml is valid");
        }
    }

    /// Gives a configuration without funnels or time to value the demo's sample ones.
    pub fn use_demo_funnels(&mut self) {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Sample {
            funnels: Vec<RawFunnel>,
            time_to_value: RawTimeToValue,
        }
        if self.funnels.is_empty() && self.time_to_value.is_none() {
            let sample: Sample =
                toml::from_str(DEMO_FUNNELS_TOML).expect("demo-funnels.toml is valid");
            self.funnels = sample.funnels;
            self.time_to_value = Some(sample.time_to_value);
        }
    }

    /// Checks the configuration and turns it into engine settings.
    pub fn engine_settings(&self) -> Result<EngineSettings> {
        let shards = if self.shards == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.shards
        };
        let settings = EngineSettings {
            timezone: time_zone(&self.timezone).context("timezone")?,
            clock: ClockMode::EventTime,
            shards,
            // As many virtual partitions as workers, unless asked: every worker has work.
            partitions: if self.partitions == 0 {
                shards
            } else {
                self.partitions
            },
            partitioner: self.partitioner,
            hll_lg_k: self.hll.lg_k,
            hll_width: match self.hll.width {
                RawHllWidth::Hll4 => HllWidth::Hll4,
                RawHllWidth::Hll6 => HllWidth::Hll6,
                RawHllWidth::Hll8 => HllWidth::Hll8,
            },
            session_timeout_ms: millis(self.sessions.timeout),
            session_max_length_ms: millis(self.sessions.max_length),
            allowed_lateness_ms: millis(self.allowed_lateness),
            retention_days: self.retention_days,
            retention_cohort: self.retention.cohort,
            max_future_skew_ms: millis(self.max_future_skew),
            max_features: self.features.max_tracked,
            fields: self.fields.clone(),
            kinds: self.events.clone(),
            feature_events: self.features.events.clone(),
            max_record_bytes: usize::try_from(self.limits.max_record_size.as_u64())
                .unwrap_or(usize::MAX),
            max_user_id_bytes: self.limits.max_user_id_bytes,
            outcomes: self.outcomes.clone(),
            dimensions: self
                .dimensions
                .iter()
                .map(|(name, d)| DimensionSettings {
                    name: name.clone(),
                    paths: d.paths.clone(),
                    max_values: d.max_values,
                })
                .collect(),
            feature_dimensions: self
                .dimensions
                .iter()
                .filter(|(_, d)| d.features)
                .map(|(name, _)| name.clone())
                .collect(),
            funnels: self
                .funnels
                .iter()
                .map(|f| FunnelDef {
                    name: f.name.clone(),
                    window_ms: millis(f.window),
                    steps: f.steps.clone(),
                })
                .collect(),
            time_to_value: self.time_to_value.as_ref().map(|t| TimeToValueDef {
                event: t.event.clone(),
                window_ms: millis(t.window),
            }),
        };
        settings.validate().context("invalid configuration")?;
        Ok(settings)
    }
}

impl RawConfig {
    /// Where `run` keeps its state: `state.url` when set (it wins over `state.dir`, whose
    /// default stays in force for everyone who never set a URL), else `state.dir`, else
    /// nowhere.
    pub fn state_location(&self) -> Option<String> {
        [&self.state.url, &self.state.dir]
            .into_iter()
            .find(|location| !location.is_empty())
            .cloned()
    }

    /// Checks the service sections (Kafka, HTTP, state) that `run` and `demo` use.
    pub fn validate_service(&self) -> Result<std::net::SocketAddr> {
        if self.kafka.topics.is_empty() || self.kafka.topics.iter().any(String::is_empty) {
            bail!("kafka.topics must list at least one non-empty topic name");
        }
        if self.kafka.brokers.trim().is_empty() {
            bail!("kafka.brokers is empty (set it, or the KAFKA_BROKERS environment variable)");
        }
        if !["earliest", "latest"].contains(&self.kafka.auto_offset_reset.as_str()) {
            bail!(
                "kafka.auto_offset_reset = {:?}: expected \"earliest\" or \"latest\"",
                self.kafka.auto_offset_reset
            );
        }
        if self
            .kafka
            .properties
            .get("enable.auto.commit")
            .is_some_and(|v| v == "true")
        {
            bail!(
                "kafka.properties: enable.auto.commit must stay false: pulse commits offsets only after applying their events"
            );
        }
        if self.http.refresh_interval < Duration::from_millis(100) {
            bail!("http.refresh_interval must be at least 100ms");
        }
        if self.state.keep == 0 {
            bail!("state.keep must be at least 1");
        }
        if self.state.checkpoint_interval < Duration::from_millis(100) {
            bail!("state.checkpoint_interval must be at least 100ms");
        }
        if self.state.timeout < Duration::from_millis(100) {
            bail!("state.timeout must be at least 100ms");
        }
        if self.rollups.interval < Duration::from_secs(1) {
            bail!("rollups.interval must be at least 1s");
        }
        let topic_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        for (key, topic) in [
            ("rollups.topic", &self.rollups.topic),
            ("summaries.topic", &self.summaries.topic),
        ] {
            if topic.len() > 249 || !topic.chars().all(topic_char) {
                bail!(
                    "{key} = {topic:?} is not a Kafka topic name (letters, digits, '.', '_', '-')"
                );
            }
        }
        if self.summaries.enabled && self.summaries.topic.is_empty() {
            bail!("summaries.topic is empty while summaries.enabled = true");
        }
        if self.summaries.publish_interval < Duration::from_millis(100) {
            bail!("summaries.publish_interval must be at least 100ms");
        }
        if self.demo.users == 0 {
            bail!("demo.users must be at least 1");
        }
        self.http.listen.parse().with_context(|| {
            format!(
                "http.listen = {:?} is not an address like 127.0.0.1:9464",
                self.http.listen
            )
        })
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Durations as humans write them: "30m", "1h 30m", "250ms".
mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"30m\": {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn shipped_defaults_equal_the_engine_defaults() {
        let raw = load(None, &[]).unwrap();
        let mut settings = raw.engine_settings().unwrap();
        let defaults = EngineSettings::default();
        settings.shards = defaults.shards;
        settings.partitions = defaults.partitions;
        assert_eq!(format!("{settings:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn the_demo_shows_outcomes_unless_configured_otherwise() {
        let mut raw = load(None, &[]).unwrap();
        assert_eq!(raw.outcomes, OutcomeSettings::default(), "off by default");
        raw.use_demo_outcomes();
        let rules = raw.engine_settings().unwrap().outcomes.rules();
        assert!(rules.nps && rules.csat && rules.revenue.is_some() && rules.subscription.is_some());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulse.toml");
        std::fs::write(
            &path,
            "[outcomes.nps]\nevents = [\"nps\"]\nscore = [\"/nps\"]\n",
        )
        .unwrap();
        let mut raw = load(Some(&path), &[]).unwrap();
        raw.use_demo_outcomes();
        let rules = raw.engine_settings().unwrap().outcomes.rules();
        assert!(
            rules.nps && !rules.csat,
            "the user's tables are kept as they are"
        );
    }

    #[test]
    fn file_then_environment_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulse.toml");
        std::fs::write(
            &path,
            "timezone = \"Europe/Berlin\"\n[sessions]\ntimeout = \"45m\"\n",
        )
        .unwrap();
        let raw = load(Some(&path), &env(&[("PULSE_SESSIONS__TIMEOUT", "10m")])).unwrap();
        let settings = raw.engine_settings().unwrap();
        assert_eq!(raw.timezone, "Europe/Berlin");
        assert_eq!(settings.session_timeout_ms, 600_000);
        assert_eq!(
            settings.session_max_length_ms, 86_400_000,
            "untouched keys keep defaults"
        );
    }

    #[test]
    fn dimensions_are_read_by_name_with_a_default_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulse.toml");
        let text = "[dimensions.tenant]\npaths = [\"/tenant_id\", \"/context/groupId\"]\n\
                    max_values = 500\n[dimensions.platform]\npaths = [\"/platform\"]\n";
        std::fs::write(&path, text).unwrap();
        let settings = load(Some(&path), &[]).unwrap().engine_settings().unwrap();
        let got: Vec<(&str, usize, usize)> = settings
            .dimensions
            .iter()
            .map(|d| (d.name.as_str(), d.paths.len(), d.max_values))
            .collect();
        assert_eq!(got, [("platform", 1, 25), ("tenant", 2, 500)]);
        assert!(settings.feature_dimensions.is_empty(), "off by default");
        assert!(
            load(None, &[]).unwrap().dimensions.is_empty(),
            "none by default"
        );
    }

    #[test]
    fn the_shipped_deployment_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/pulse.toml");
        let raw = load(Some(&path), &[]).unwrap();
        raw.engine_settings().unwrap();
        assert_eq!(raw.validate_service().unwrap().port(), 9464);
        assert!(!raw.engine_settings().unwrap().funnels.is_empty());
    }

    #[test]
    fn the_demo_funnels_are_valid_and_only_fill_a_configuration_without_funnels() {
        let mut raw = load(None, &[]).unwrap();
        raw.use_demo_funnels();
        let settings = raw.engine_settings().unwrap();
        assert_eq!(settings.funnels.len(), 2);
        assert!(settings.time_to_value.is_some());
        raw.funnels.truncate(1);
        raw.time_to_value = None;
        raw.use_demo_funnels();
        assert_eq!(raw.funnels.len(), 1, "configured funnels are kept");
    }

    #[test]
    fn kafka_brokers_variable_and_secret_masking() {
        let raw = load(
            None,
            &env(&[
                ("KAFKA_BROKERS", "k1:9092,k2:9092"),
                ("PULSE_KAFKA__PROPERTIES__SASL_PASSWORD", "hunter2"),
            ]),
        )
        .unwrap();
        assert_eq!(raw.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(raw.kafka.properties["sasl.password"], "hunter2");
        assert_eq!(raw.kafka.masked_properties()["sasl.password"], "********");
        assert!(!format!("{raw:?}").contains("hunter2"));
        raw.validate_service().unwrap();
    }

    #[test]
    fn secrets_from_files_are_read_trimmed_and_masked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("sasl-password");
        std::fs::write(&secret, "s3cr3t-from-file\n").unwrap();
        let config = dir.path().join("pulse.toml");
        std::fs::write(
            &config,
            format!(
                "[kafka.secret_files]\n\"ssl.certificate.pem\" = \"{}\"\n",
                secret.display()
            ),
        )
        .unwrap();
        let variable = [(
            "PULSE_KAFKA__SECRET_FILES__SASL_PASSWORD",
            secret.to_str().unwrap(),
        )];
        let raw = load(Some(&config), &env(&variable)).unwrap();
        assert_eq!(raw.kafka.properties["sasl.password"], "s3cr3t-from-file");
        // Masked even though its name does not look secret.
        assert_eq!(
            raw.kafka.properties["ssl.certificate.pem"],
            "s3cr3t-from-file"
        );
        assert_eq!(
            raw.kafka.masked_properties()["ssl.certificate.pem"],
            "********"
        );
        assert!(!format!("{raw:?}").contains("s3cr3t"));

        let missing = [(
            "PULSE_KAFKA__SECRET_FILES__SASL_PASSWORD",
            "/nonexistent/pulse-secret",
        )];
        let message = format!("{:#}", load(None, &env(&missing)).unwrap_err());
        assert!(message.contains("/nonexistent/pulse-secret"), "{message}");
        let both = [
            (
                "PULSE_KAFKA__SECRET_FILES__SASL_PASSWORD",
                secret.to_str().unwrap(),
            ),
            ("PULSE_KAFKA__PROPERTIES__SASL_PASSWORD", "inline"),
        ];
        let message = format!("{:#}", load(None, &env(&both)).unwrap_err());
        assert!(message.contains("sasl.password"), "{message}");
    }

    #[test]
    fn foreign_variables_are_ignored_but_typos_in_our_tables_are_not() {
        let kubernetes = env(&[
            ("PULSE_SERVICE_HOST", "10.0.0.1"),
            ("PULSE_PORT", "tcp://10.0.0.1:9464"),
            ("PULSE_PORT_9464_TCP_ADDR", "10.0.0.1"),
        ]);
        load(None, &kubernetes).unwrap().validate_service().unwrap();
        let typo = load(None, &env(&[("PULSE_KAFKA__BROKRS", "x:9092")]));
        assert!(format!("{:#}", typo.unwrap_err()).contains("brokrs"));
    }

    #[test]
    fn summaries_settings_are_checked_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulse.toml");
        for (text, key) in [
            (
                "[summaries]\nenabled = true\ntopic = \"\"\n",
                "summaries.topic",
            ),
            ("[summaries]\ntopic = \"a/b\"\n", "summaries.topic"),
            (
                "[summaries]\npublish_interval = \"10ms\"\n",
                "summaries.publish_interval",
            ),
            ("[summaries]\nenable = true\n", "enable"),
        ] {
            std::fs::write(&path, text).unwrap();
            let result = load(Some(&path), &[]).and_then(|raw| raw.validate_service());
            let message = format!("{:#}", result.unwrap_err());
            assert!(message.contains(key), "{message:?} should mention {key}");
        }
        std::fs::write(&path, "[summaries]\nenabled = true\n").unwrap();
        let raw = load(Some(&path), &[]).unwrap();
        raw.validate_service().unwrap();
        assert_eq!(
            raw.summaries.topic, "pulse.summaries",
            "the documented default"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulse.toml");
        let cases = [
            ("timezon = \"UTC\"\n", "timezon"),
            ("[sessions]\ntimeout = \"soon\"\n", "timeout"),
            ("retention_days = 3\n", "retention_days"),
            ("timezone = \"Mars/Base\"\n", "Mars/Base"),
            ("[retention]\ncohort = \"signups\"\n", "retention.cohort"),
            (
                "[outcomes.revenue]\nevents = [\"order\"]\namount = [\"/revenue\"]\ncurrency = [\"/currency\"]\nexpected_currency = \"Dollars\"\n",
                "outcomes.revenue.expected_currency",
            ),
            (
                "[outcomes.nps]\nevents = [\"survey\"]\nscore = [\"score\"]\n",
                "outcomes.nps.score",
            ),
            (
                "[outcomes.csat]\nevents = [\"survey\"]\nscores = [\"/score\"]\n",
                "scores",
            ),
            ("[dimensions.platform]\npath = [\"/p\"]\n", "path"),
            (
                "[dimensions.platform]\npaths = [\"p\"]\n",
                "dimensions.platform",
            ),
            (
                "[dimensions.tenant]\npaths = [\"/t\"]\nmax_values = 0\n",
                "dimensions.tenant",
            ),
            (
                "[dimensions.a]\npaths = [\"/a\"]\nfeatures = true\n\
                 [dimensions.b]\npaths = [\"/b\"]\nfeatures = true\n\
                 [dimensions.c]\npaths = [\"/c\"]\nfeatures = true\n",
                "dimensions.a,b,c: features = true on 3 dimensions, at most 2",
            ),
        ];
        for (text, key) in cases {
            std::fs::write(&path, text).unwrap();
            let result = load(Some(&path), &[]).and_then(|raw| raw.engine_settings());
            let message = format!("{:#}", result.unwrap_err());
            assert!(message.contains(key), "{message:?} should mention {key}");
        }
        let funnel = |steps: &str, window: &str| {
            format!("[[funnels]]\nname = \"a\"\nwindow = \"{window}\"\nsteps = [{steps}]\n")
        };
        for (text, key) in [
            (
                funnel("{ kind = \"signup\" }, { kind = \"purchase\" }", "7d"),
                "funnels[0].steps[1].kind",
            ),
            (funnel("{ kind = \"signup\" }", "7d"), "funnels[0].steps"),
            (
                funnel("{ kind = \"signup\" }, { event = \"Paid\" }", "31d"),
                "funnels[0].window",
            ),
            (
                funnel("{ kind = \"signup\" }, { colour = \"red\" }", "7d"),
                "colour",
            ),
            (
                "[time_to_value]\nevent = {}\nwindow = \"14d\"\n".to_owned(),
                "time_to_value.event",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let result = load(Some(&path), &[]).and_then(|raw| raw.engine_settings());
            let message = format!("{:#}", result.unwrap_err());
            assert!(message.contains(key), "{message:?} should mention {key}");
        }
        std::fs::write(&path, "[rollups]\ninterval = \"10ms\"\n").unwrap();
        let error = load(Some(&path), &[])
            .unwrap()
            .validate_service()
            .unwrap_err();
        assert!(format!("{error:#}").contains("rollups.interval"));
        std::fs::write(&path, "[http]\nlisten = \"nowhere\"\n").unwrap();
        let error = load(Some(&path), &[])
            .unwrap()
            .validate_service()
            .unwrap_err();
        assert!(format!("{error:#}").contains("http.listen"));
        let missing = load(Some(&dir.path().join("nope.toml")), &[]).unwrap_err();
        assert!(missing.to_string().contains("nope.toml"));
    }
}
