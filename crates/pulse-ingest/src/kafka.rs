//! Kafka: the consumer-group source, the dead-letter producer, and `pulse loadgen`.
//!
//! Offsets are never auto-committed: the loop records, per partition, the next offset whose
//! records have been routed, and commits it only after a [`Pipeline::snapshot`] barrier has
//! proved those records applied (and, at a clean stop, after the state holding them is
//! saved). A record the decoder rejects goes to the dead-letter topic with headers saying
//! why and where it came from; its delivery is awaited before the offset behind it is
//! committed, so a dead letter is never lost either. Each instance keeps its own position
//! per partition; a partition a rebalance hands (back) to it starts there, so that its
//! state never misses nor repeats a record whatever other group members did meanwhile.
//! Broker health comes from a metadata probe and lag from librdkafka's statistics; neither
//! ever blocks the consume loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashSet};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pulse_core::Rejection;
use pulse_core::ingest::Outcome;
use pulse_core::message::split_records;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::demo::wall_ms;
use pulse_core::status::{IngestStatus, PartitionStatus};

use crate::checkpointer::Checkpointer;
use crate::pipeline::{Pipeline, Sink};
use crate::rollups::RollupWriter;
use crate::shards::ShardStopped;
use crate::state_store::{Offsets, StateStoreError};

/// Everything the Kafka source needs, already validated by the binary.
#[derive(Clone)]
pub struct KafkaOptions {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    pub auto_offset_reset: String,
    /// Dead-letter topic name template (`{topic}` is replaced), or `None` to disable.
    pub dead_letter_topic: Option<String>,
    /// Passed to librdkafka as they are (TLS, SASL, tuning); they win over pulse's defaults.
    pub properties: BTreeMap<String, String>,
    pub refresh: Duration,
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Properties may hold SASL passwords: only their names are shown.
        f.debug_struct("KafkaOptions")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaOptions {
    fn dead_letter_topic_for(&self, topic: &str) -> Option<String> {
        self.dead_letter_topic
            .as_ref()
            .map(|t| t.replace("{topic}", topic))
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("cannot create the Kafka {what}: {source}")]
    Client {
        what: &'static str,
        source: KafkaError,
    },
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        source: KafkaError,
    },
    #[error(transparent)]
    Shards(#[from] ShardStopped),
    #[error(transparent)]
    State(#[from] StateStoreError),
}

/// Lag and errors reported by librdkafka's callbacks.
#[derive(Default)]
struct Shared {
    /// (topic, partition) → high watermark, from the statistics callback.
    high_watermarks: HashMap<(String, i32), i64>,
    last_error: Option<String>,
    /// Every partition of the subscribed topics, from the broker probe's metadata.
    topic_partitions: Vec<(String, i32)>,
    /// Partitions assigned by a rebalance since the consume loop last looked.
    newly_assigned: Vec<(String, i32)>,
    /// Ends of partitions the consume loop doubts, for the broker probe to check.
    ends_to_check: Vec<EndCheck>,
    /// Ends the broker confirmed: the partition and the doubt the check answered.
    confirmed_ends: Vec<((String, i32), Instant)>,
}

/// A partition's end that is in doubt since records arrived elsewhere: confirmed if the
/// broker's high watermark, asked after `doubted_since`, is not beyond `position`.
#[derive(Clone)]
struct EndCheck {
    partition: (String, i32),
    position: i64,
    doubted_since: Instant,
}

struct PulseContext {
    shared: Arc<Mutex<Shared>>,
    /// Set by every assignment and revocation, so that the loop need not lock per record.
    assignment_changed: AtomicBool,
    /// Per partition, the next offset after the records this instance has routed: where a
    /// partition assigned (again) starts. librdkafka would start it at the group's
    /// committed offset, which is behind (offsets are committed with checkpoints only) or
    /// ahead (another group member read on meanwhile).
    positions: Mutex<Offsets>,
    /// `auto.offset.reset = latest`: a partition without a committed offset starts at its end.
    from_end: bool,
}

/// For the broker lookups inside a rebalance.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

impl PulseContext {
    fn positions(&self) -> Offsets {
        self.positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where each of `assigned` starts: this instance's position if it has one, else the
    /// group's committed offset, else the end `auto.offset.reset` names. The last two are
    /// resolved to numbers now and kept as positions: a partition taken away before its
    /// first record must come back here, not where another member left it.
    fn starting_positions(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &[(String, i32)],
    ) -> Offsets {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let unknown: Vec<&(String, i32)> = assigned
            .iter()
            .filter(|p| !positions.contains_key(*p))
            .collect();
        if unknown.is_empty() {
            return positions.clone();
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &unknown {
            list.add_partition(topic, *partition);
        }
        let committed = consumer.committed_offsets(list, LOOKUP_TIMEOUT);
        if let Err(error) = &committed {
            tracing::warn!(%error, "Cannot read the group's committed offsets.");
        }
        for (topic, partition) in unknown {
            let committed = committed
                .as_ref()
                .ok()
                .and_then(|list| list.find_partition(topic, *partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            let start = committed.or_else(|| {
                consumer
                    .fetch_watermarks(topic, *partition, LOOKUP_TIMEOUT)
                    .map(|(low, high)| if self.from_end { high } else { low })
                    .inspect_err(|error| tracing::warn!(%error, topic, partition, "Cannot read the partition's offsets; librdkafka picks the start."))
                    .ok()
            });
            if let Some(start) = start {
                positions.insert((topic.clone(), *partition), start);
            }
        }
        positions.clone()
    }

    /// Moves the position past the record at `offset`; `false` if this instance has applied
    /// that record already. Whatever makes librdkafka deliver a partition again from an
    /// older offset (an offset reset after the broker lost data, say), no record is applied
    /// twice.
    fn claim(&self, partition: &(String, i32), offset: i64) -> bool {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by reference: the key is cloned only for a partition's first record.
        match positions.get_mut(partition) {
            Some(next) if offset < *next => false,
            Some(next) => {
                *next = offset + 1;
                true
            }
            None => {
                positions.insert(partition.clone(), offset + 1);
                true
            }
        }
    }

    /// `None` if the assignment is unchanged since the last call, else the partitions
    /// assigned since then (none if partitions were only revoked).
    fn take_assignment_change(&self) -> Option<Vec<(String, i32)>> {
        if !self.assignment_changed.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        Some(std::mem::take(&mut shared.newly_assigned))
    }
}

impl ClientContext for PulseContext {
    fn stats(&self, statistics: Statistics) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.hi_offset >= 0 {
                    shared
                        .high_watermarks
                        .insert((topic.clone(), partition), p.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            return; // Reaching the end of a partition is news for the consume loop, not an error.
        }
        tracing::warn!(%error, reason, "Kafka client error.");
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        // "All brokers are down" follows the error that took each one down (a refused
        // connection, a failed TLS handshake or SASL login): that one stays the reason.
        let summary = matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown));
        if summary && shared.last_error.is_some() {
            return;
        }
        shared.last_error = Some(format!("{error}: {reason}"));
    }
}

fn partition_names(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ConsumerContext for PulseContext {
    /// librdkafka's default handling (eager or cooperative), except that partitions this
    /// instance has read before start at its own positions. Runs inside `recv()`; the
    /// consume loop learns of the change before it handles the next record. A revocation
    /// must reach the session watermark at once: a partition still counted as ours and read
    /// to its end would let the watermark pass records it has not read yet.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        error: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let names = partition_names(partitions);
        let applied = match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positions = self.starting_positions(consumer, &names);
                for (topic, partition) in &names {
                    if let Some(&next) = positions.get(&(topic.clone(), *partition))
                        && let Err(error) =
                            partitions.set_partition_offset(topic, *partition, Offset::Offset(next))
                    {
                        tracing::warn!(%error, topic, partition, "Cannot start the partition at this instance's position.");
                    }
                }
                tracing::info!(partitions = ?names, "Partitions assigned.");
                let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                shared.newly_assigned.extend(names);
                drop(shared);
                if cooperative {
                    consumer.incremental_assign(partitions)
                } else {
                    consumer.assign(partitions)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = ?names, "Partitions revoked.");
                if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                let code = RDKafkaErrorCode::from(other);
                tracing::warn!(error = %code, "Rebalance failed; giving up the assignment.");
                consumer.unassign()
            }
        };
        if let Err(error) = applied {
            tracing::warn!(%error, "Cannot apply the partition assignment.");
        }
        self.assignment_changed.store(true, Ordering::Release);
    }
}

/// Dead letters in flight and their outcome.
struct DeadLetters {
    producer: FutureProducer,
    in_flight: FuturesUnordered<DeliveryFuture>,
    delivered: u64,
    failed: u64,
    /// The longest record a dead letter carries whole; see [`DeadLetters::payload_limit`].
    payload_limit: usize,
}

impl DeadLetters {
    /// A dead letter must fit the producer's `message.max.bytes` (librdkafka's default,
    /// 1 000 000, is also below a Kafka broker's default limit), less room for the key,
    /// headers and framing. A longer record (a 10 MB message rejected as too large) is cut
    /// to its start, with a `pulse.truncated` header giving its full length: refused
    /// whole, it would be no dead letter at all.
    fn payload_limit(properties: &BTreeMap<String, String>) -> usize {
        const LIBRDKAFKA_DEFAULT: usize = 1_000_000;
        const ROOM_FOR_HEADERS: usize = 16 * 1024;
        properties
            .get("message.max.bytes")
            .and_then(|value| value.parse().ok())
            .unwrap_or(LIBRDKAFKA_DEFAULT)
            .saturating_sub(ROOM_FOR_HEADERS)
    }

    fn send(
        &mut self,
        topic: &str,
        record: &[u8],
        key: Option<&[u8]>,
        reason: Rejection,
        origin: &Origin<'_>,
        index: Option<usize>,
    ) {
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let index = index.map(|i| i.to_string());
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "pulse.reason",
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: "pulse.source.topic",
                value: Some(origin.topic),
            })
            .insert(Header {
                key: "pulse.source.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "pulse.source.offset",
                value: Some(offset.as_str()),
            });
        if let Some(index) = &index {
            headers = headers.insert(Header {
                key: "pulse.record.index",
                value: Some(index.as_str()),
            });
        }
        let kept = record.len().min(
            self.payload_limit
                .saturating_sub(key.map_or(0, <[u8]>::len)),
        );
        if kept < record.len() {
            headers = headers.insert(Header {
                key: "pulse.truncated",
                value: Some(record.len().to_string().as_str()),
            });
        }
        let mut message = FutureRecord::to(topic)
            .payload(&record[..kept])
            .headers(headers);
        if let Some(key) = key {
            message = message.key(key);
        }
        match self.producer.send_result(message) {
            Ok(delivery) => self.in_flight.push(delivery),
            Err((error, _)) => {
                self.failed += 1;
                tracing::warn!(%error, topic, "Could not queue a dead letter.");
            }
        }
    }

    /// Waits for every dead letter sent so far, so the offsets behind them can be committed.
    async fn settle(&mut self) {
        while let Some(result) = self.in_flight.next().await {
            match result {
                Ok(Ok(_)) => self.delivered += 1,
                Ok(Err((error, _))) => {
                    self.failed += 1;
                    tracing::warn!(%error, "A dead letter was not delivered.");
                }
                Err(_) => self.failed += 1,
            }
        }
    }
}

struct Origin<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

/// Creates the topics if they do not exist (best effort: a broker may forbid it).
pub async fn ensure_topics(options: &KafkaOptions, topics: &[String], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = match options.client_config().create() {
        Ok(admin) => admin,
        Err(error) => return tracing::warn!(%error, "Cannot create a Kafka admin client."),
    };
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let admin_options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    match admin.create_topics(&new, &admin_options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(topic) => tracing::info!(topic, "Created topic."),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => tracing::warn!(topic, %code, "Cannot create topic."),
                }
            }
        }
        Err(error) => tracing::warn!(%error, "Cannot create topics."),
    }
}

/// Durable state for the Kafka source: where checkpoints go, and the offsets of the one the
/// pipeline was restored from.
#[derive(Debug)]
pub struct Durability {
    pub checkpointer: Checkpointer,
    /// Next offset per partition in the restored checkpoint; these win over the group's
    /// committed offsets.
    pub restored: Offsets,
}

/// Where each partition must resume, and whether its first record has been checked.
///
/// A partition resumes where *this instance* stopped applying it: after a restore, the
/// checkpoint's offset; after a rebalance gave it back, the position it had when it was
/// taken away. The assignment asks librdkafka to start there ([`PulseContext::rebalance`]);
/// the first record of each assignment is checked all the same: a record past the position
/// seeks back once (and, if the records between are gone from Kafka, is applied with a
/// warning). Records before it are skipped by [`PulseContext::claim`].
#[derive(Default)]
struct Resume {
    resume_at: Offsets,
    checked: HashSet<(String, i32)>,
    sought: HashSet<(String, i32)>,
}

enum Placement {
    Apply,
    /// Past the position (the group committed more than this instance applied): seek back
    /// and skip it.
    SeekBack(i64),
}

impl Resume {
    /// A (re)assigned partition must continue at `position`.
    fn rearm(&mut self, partition: (String, i32), position: i64) {
        self.checked.remove(&partition);
        self.sought.remove(&partition);
        self.resume_at.insert(partition, position);
    }

    fn place(&mut self, key: &(String, i32), offset: i64) -> Placement {
        if self.checked.contains(key) {
            return Placement::Apply;
        }
        let Some(&resume_at) = self.resume_at.get(key) else {
            self.checked.insert(key.clone());
            return Placement::Apply;
        };
        // Records before the position are [`PulseContext::claim`]'s to skip.
        if offset <= resume_at || self.sought.contains(key) {
            if offset > resume_at {
                tracing::warn!(
                    topic = key.0,
                    partition = key.1,
                    resume_at,
                    offset,
                    "Records between the checkpoint and this offset are no longer in Kafka."
                );
            }
            self.checked.insert(key.clone());
            Placement::Apply
        } else {
            self.sought.insert(key.clone());
            Placement::SeekBack(resume_at)
        }
    }
}

/// Consumes until `shutdown`, publishing a snapshot every refresh and, with `durability`,
/// writing checkpoints (and, with `rollups`, warehouse rollups). At a clean stop: a last
/// snapshot, a last checkpoint, the offsets committed, a last rollup.
pub async fn run(
    pipeline: &mut Pipeline,
    options: &KafkaOptions,
    mut durability: Option<Durability>,
    mut rollups: Option<RollupWriter>,
    sink: &dyn Sink,
    shutdown: impl Future<Output = ()>,
) -> Result<(), KafkaSourceError> {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mut consumer_config = options.client_config();
    for (key, value) in [
        ("group.id", options.group_id.as_str()),
        ("auto.offset.reset", options.auto_offset_reset.as_str()),
        ("enable.partition.eof", "true"),
    ] {
        consumer_config.set(key, value);
    }
    // pulse's defaults, unless the operator set them.
    for (key, value) in [
        ("statistics.interval.ms", "2000"),
        ("queued.max.messages.kbytes", "16384"),
    ] {
        if !options.properties.contains_key(key) {
            consumer_config.set(key, value);
        }
    }
    // Never auto-commit, whatever the properties say: offsets follow applied state.
    consumer_config.set("enable.auto.commit", "false");
    let consumer: StreamConsumer<PulseContext> = consumer_config
        .create_with_context(PulseContext {
            shared: shared.clone(),
            assignment_changed: AtomicBool::new(false),
            positions: Mutex::new(
                durability
                    .as_ref()
                    .map(|d| d.restored.clone())
                    .unwrap_or_default(),
            ),
            from_end: options.auto_offset_reset == "latest",
        })
        .map_err(|source| KafkaSourceError::Client {
            what: "consumer",
            source,
        })?;
    let consumer = Arc::new(consumer);
    let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| KafkaSourceError::Subscribe {
            topics: options.topics.clone(),
            source,
        })?;

    let mut dead_letters = match options.dead_letter_topic {
        Some(_) => {
            let letters: Vec<String> = options
                .topics
                .iter()
                .filter_map(|t| options.dead_letter_topic_for(t))
                .collect();
            // In the background: with the broker away at start, creating them would hold
            // up consuming (and readiness) for the admin timeout. Dead letters sent before
            // the topic exists wait in the producer's queue.
            let admin_options = options.clone();
            tokio::spawn(async move { ensure_topics(&admin_options, &letters, 1).await });
            let producer: FutureProducer =
                options
                    .client_config()
                    .create()
                    .map_err(|source| KafkaSourceError::Client {
                        what: "dead-letter producer",
                        source,
                    })?;
            Some(DeadLetters {
                producer,
                in_flight: FuturesUnordered::new(),
                delivered: 0,
                failed: 0,
                payload_limit: DeadLetters::payload_limit(&options.properties),
            })
        }
        None => None,
    };
    if let Some(rollups) = rollups.as_mut() {
        rollups
            .connect(options)
            .await
            .map_err(|source| KafkaSourceError::Client {
                what: "rollup producer",
                source,
            })?;
    }
    tracing::info!(brokers = %options.brokers, topics = ?options.topics, group = %options.group_id, "Consuming.");

    let broker_up = Arc::new(AtomicBool::new(false));
    let probe = tokio::spawn(probe_broker(
        consumer.clone(),
        broker_up.clone(),
        shared.clone(),
        options.topics.clone(),
    ));
    let mut resume = Resume::default();
    let mut watermarks = PartitionWatermarks::default();
    let mut was_caught_up = false;
    pipeline.use_source_watermark();
    let mut tick = tokio::time::interval(options.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);

    let result: Result<(), KafkaSourceError> = async {
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = tick.tick() => {
                    follow_rebalance(&consumer, &shared, &mut resume, &mut watermarks);
                    watermarks.refresh_assignment(&consumer, &shared);
                    // Positions move only as this loop routes records (and at rebalances, inside
                    // recv()): one copy serves the whole tick.
                    let positions = consumer.context().positions();
                    watermarks.exchange_end_checks(&shared, &positions, broker_up.load(Ordering::Relaxed));
                    // Caught up: every partition is ours and has reported its end.
                    let caught_up = watermarks.caught_up();
                    if caught_up != was_caught_up {
                        was_caught_up = caught_up;
                        if caught_up {
                            tracing::info!(partitions = watermarks.assigned.len(), "Caught up with every assigned partition.");
                        } else {
                            tracing::debug!("Reading a backlog.");
                        }
                    }
                    pipeline.advance_clock(wall_ms(), caught_up);
                    let snapshot = pipeline.snapshot().await?;
                    if let Some(letters) = dead_letters.as_mut() {
                        letters.settle().await;
                    }
                    match durability.as_mut() {
                        Some(durable) => {
                            if let Some(written) = durable.checkpointer.poll().await {
                                commit(&consumer, &written, CommitMode::Async);
                            }
                            if durable.checkpointer.due() {
                                let started = Instant::now();
                                let state = pipeline.state().await?;
                                durable.checkpointer.start(state, positions.clone(), started.elapsed());
                            }
                        }
                        None => commit(&consumer, &positions, CommitMode::Async),
                    }
                    if let Some(rollups) = rollups.as_mut() {
                        rollups.tick(pipeline).await?;
                    }
                    let mut status = status(&shared, &broker_up, &positions, &watermarks.assigned, dead_letters.as_ref());
                    status.checkpoint = durability.as_ref().map(|d| d.checkpointer.status().clone());
                    status.snapshot_seconds = pipeline.last_snapshot_seconds();
                    sink.publish(snapshot, status);
                }
                received = consumer.recv() => {
                    follow_rebalance(&consumer, &shared, &mut resume, &mut watermarks);
                    match received {
                        Ok(message) => {
                            let origin = Origin {
                                topic: message.topic(),
                                partition: message.partition(),
                                offset: message.offset(),
                            };
                            // The one copy of the topic's name per record: every lookup
                            // below borrows it.
                            let key = (origin.topic.to_owned(), origin.partition);
                            match resume.place(&key, origin.offset) {
                                Placement::Apply => {}
                                Placement::SeekBack(to) => {
                                    tracing::info!(topic = origin.topic, partition = origin.partition, offset = to, "Seeking back to this instance's position.");
                                    if let Err(error) = consumer.seek(origin.topic, origin.partition, Offset::Offset(to), Duration::from_secs(10)) {
                                        tracing::warn!(%error, "Seek failed; retrying on the next record.");
                                        resume.sought.remove(&key);
                                    }
                                    continue;
                                }
                            }
                            if !consumer.context().claim(&key, origin.offset) {
                                tracing::debug!(topic = origin.topic, partition = origin.partition, offset = origin.offset, "Skipping a record applied before.");
                                continue;
                            }
                            let fallback = message.timestamp().to_millis();
                            let payload = message.payload().unwrap_or_default();
                            let dead_letter = dead_letters.as_mut().map(|letters| (letters, options));
                            let newest = route_message(pipeline, payload, message.key(), fallback, &origin, dead_letter);
                            if !watermarks.is_assigned(&key) {
                                watermarks.refresh_assignment(&consumer, &shared);
                            }
                            watermarks.observe(&key, newest);
                            if let Some(watermark) = watermarks.combined() {
                                pipeline.advance_watermark(watermark);
                            }
                        }
                        Err(KafkaError::PartitionEOF(partition)) => {
                            // The error names no topic; with one topic per partition number
                            // ambiguity only arises for several topics, where all must agree.
                            for topic in &options.topics {
                                watermarks.reached_end((topic.clone(), partition));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "Kafka consume error; retrying.");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    pipeline.send_full_batches().await?;
                }
            }
        }
        Ok(())
    }
    .await;
    probe.abort();
    result?;

    tracing::info!("Stopping: draining shards and committing.");
    let snapshot = pipeline.snapshot().await?;
    if let Some(letters) = dead_letters.as_mut() {
        letters.settle().await;
    }
    match durability.as_mut() {
        Some(durable) => {
            let state = pipeline.state().await?;
            match durable
                .checkpointer
                .save_now(state, consumer.context().positions())
                .await
            {
                Some(written) => {
                    commit(&consumer, &written, CommitMode::Sync);
                    tracing::info!("State saved and offsets committed.");
                }
                None => {
                    tracing::error!("The last checkpoint failed; offsets stay at the previous one.")
                }
            }
        }
        None => commit(&consumer, &consumer.context().positions(), CommitMode::Sync),
    }
    if let Some(rollups) = rollups.as_mut() {
        rollups.finish(pipeline).await?;
    }
    let mut status = status(
        &shared,
        &broker_up,
        &consumer.context().positions(),
        &watermarks.assigned,
        dead_letters.as_ref(),
    );
    status.checkpoint = durability.as_ref().map(|d| d.checkpointer.status().clone());
    status.snapshot_seconds = pipeline.last_snapshot_seconds();
    sink.publish(snapshot, status);
    Ok(())
}

/// Takes a rebalance that happened inside `recv()` into account, before anything reads the
/// assignment: either branch of the consume loop may run first after it.
fn follow_rebalance(
    consumer: &StreamConsumer<PulseContext>,
    shared: &Mutex<Shared>,
    resume: &mut Resume,
    watermarks: &mut PartitionWatermarks,
) {
    let Some(assigned) = consumer.context().take_assignment_change() else {
        return;
    };
    let positions = consumer.context().positions();
    for partition in assigned {
        // An end-of-partition from an earlier assignment must not mark it read (nor
        // caught up), which would let the session watermark pass its unread records.
        watermarks.forget_end(&partition);
        if let Some(&position) = positions.get(&partition) {
            resume.rearm(partition, position);
        }
    }
    watermarks.refresh_assignment(consumer, shared);
}

/// The session watermark of a consumer: each assigned partition is as far as its newest
/// event, and the stream only as far as its slowest partition that still has data to read.
/// Partitions are consumed in batches, so one may run hours ahead of another during a
/// backfill; the largest event time would then mark the other's events too late.
///
/// A partition read to its end stops holding the watermark back, or an idle partition would
/// stop sessions from closing. But its end is only news until records arrive elsewhere: a
/// burst produced to every partition at once reaches them one fetch after another (later
/// still after a broker restart, or from a slower broker), and the first to deliver would
/// otherwise carry the watermark past the others' part of the burst. So an end counts only
/// if nothing arrived elsewhere since it was reached, or once the broker confirms it: its
/// high watermark, asked after the doubt began, is not beyond this consumer's position.
/// Offsets that never reach the consumer as records (transaction markers) keep the high
/// watermark ahead; such an end counts after [`END_FALLBACK`] with the broker reachable.
#[derive(Default)]
struct PartitionWatermarks {
    /// Every partition of the subscribed topics (empty until the first metadata answer).
    all: Vec<(String, i32)>,
    assigned: Vec<(String, i32)>,
    newest: HashMap<(String, i32), i64>,
    /// Partitions at their end: `None` while it is certain, else since when it is doubted.
    at_end: HashMap<(String, i32), Option<Instant>>,
    /// Partitions at their end that nothing has arrived after yet (usually empty).
    quiet_ends: Vec<(String, i32)>,
}

/// How long a doubted end waits for the broker's confirmation before it counts anyway,
/// counted while the broker is reachable. Only partitions whose high watermark stays ahead
/// of every record need it; sessions there close that much later after a burst.
const END_FALLBACK: Duration = Duration::from_secs(30);

impl PartitionWatermarks {
    fn refresh_assignment(
        &mut self,
        consumer: &StreamConsumer<PulseContext>,
        shared: &Mutex<Shared>,
    ) {
        if let Ok(list) = consumer.assignment() {
            self.assigned = partition_names(&list);
        }
        let known = shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .topic_partitions
            .clone();
        if !known.is_empty() {
            self.all = known;
        }
    }

    /// Records arrived from `partition`, the newest accepted event among them at `newest`.
    fn observe(&mut self, partition: &(String, i32), newest: Option<i64>) {
        self.at_end.remove(partition);
        if !self.quiet_ends.is_empty() {
            let now = Instant::now();
            for other in self.quiet_ends.drain(..) {
                if let Some(doubted) = self.at_end.get_mut(&other) {
                    doubted.get_or_insert(now);
                }
            }
        }
        if let Some(ts) = newest {
            match self.newest.get_mut(partition) {
                Some(held) => *held = (*held).max(ts),
                None => {
                    self.newest.insert(partition.clone(), ts);
                }
            }
        }
    }

    fn reached_end(&mut self, partition: (String, i32)) {
        self.at_end.insert(partition.clone(), None);
        self.quiet_ends.push(partition);
    }

    /// An end reached under an earlier assignment says nothing about this one.
    fn forget_end(&mut self, partition: &(String, i32)) {
        self.at_end.remove(partition);
    }

    /// The doubted ends for the broker to check, at the positions this consumer has reached.
    fn ends_to_check(&self, positions: &Offsets) -> Vec<EndCheck> {
        self.at_end
            .iter()
            .filter_map(|(partition, doubted)| {
                Some(EndCheck {
                    partition: partition.clone(),
                    position: *positions.get(partition)?,
                    doubted_since: (*doubted)?,
                })
            })
            .collect()
    }

    /// The broker confirmed `partition`'s end, asked about the doubt that began at `since`
    /// (an answer about an older doubt says nothing about a newer one).
    fn confirm_end(&mut self, partition: &(String, i32), since: Instant) {
        if let Some(doubted) = self.at_end.get_mut(partition)
            && *doubted == Some(since)
        {
            *doubted = None;
        }
    }

    /// While the broker is away nothing can arrive, which says nothing about what it holds:
    /// the fallback for doubted ends starts again.
    fn broker_unreachable(&mut self, now: Instant) {
        for doubted in self.at_end.values_mut().flatten() {
            *doubted = now;
        }
    }

    /// Hands the doubted ends to the broker probe and takes in what it confirmed.
    fn exchange_end_checks(
        &mut self,
        shared: &Mutex<Shared>,
        positions: &Offsets,
        reachable: bool,
    ) {
        let confirmed = {
            let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
            shared.ends_to_check = self.ends_to_check(positions);
            std::mem::take(&mut shared.confirmed_ends)
        };
        for (partition, since) in confirmed {
            self.confirm_end(&partition, since);
        }
        if !reachable {
            self.broker_unreachable(Instant::now());
        }
    }

    fn partitions(&self) -> &[(String, i32)] {
        if self.all.is_empty() {
            &self.assigned
        } else {
            &self.all
        }
    }

    /// Runs for each partition on every record (through [`Self::combined`]): the partition
    /// number, which tells most partitions apart, is compared before the topic's name.
    fn is_assigned(&self, (topic, partition): &(String, i32)) -> bool {
        self.assigned
            .iter()
            .any(|(t, p)| p == partition && t == topic)
    }

    fn done(&self, partition: &(String, i32)) -> bool {
        self.is_assigned(partition)
            && self
                .at_end
                .get(partition)
                .is_some_and(|doubted| doubted.is_none_or(|since| since.elapsed() >= END_FALLBACK))
    }

    /// The minimum over the partitions still being read. `None` (hold) while one of them
    /// has not delivered an event yet, or is not assigned to this consumer: after a crash
    /// or during a rebalance a partition may arrive later with older events, which a
    /// watermark that had run ahead would count as too late for sessions.
    fn combined(&self) -> Option<i64> {
        let mut reading = self
            .partitions()
            .iter()
            .filter(|p| !self.done(p))
            .peekable();
        reading.peek()?;
        reading
            .map(|p| {
                self.is_assigned(p)
                    .then(|| self.newest.get(p).copied())
                    .flatten()
            })
            .try_fold(i64::MAX, |min, ts| ts.map(|t| min.min(t)))
    }

    /// Every partition of the topics is assigned here and read to its end.
    fn caught_up(&self) -> bool {
        let partitions = self.partitions();
        !partitions.is_empty() && partitions.iter().all(|p| self.done(p))
    }
}

/// Routes a message's records; returns the newest accepted event time among them. A
/// rejected record goes to the dead-letter topic, if there is one (named only then).
fn route_message(
    pipeline: &mut Pipeline,
    payload: &[u8],
    key: Option<&[u8]>,
    fallback: Option<i64>,
    origin: &Origin<'_>,
    mut dead_letter: Option<(&mut DeadLetters, &KafkaOptions)>,
) -> Option<i64> {
    let mut reject = |record: &[u8], reason: Rejection, index: Option<usize>| {
        if let Some((letters, options)) = dead_letter.as_mut()
            && let Some(topic) = options.dead_letter_topic_for(origin.topic)
        {
            letters.send(&topic, record, key, reason, origin, index);
        }
    };
    let mut newest: Option<i64> = None;
    match split_records(payload) {
        Ok(records) => {
            let many = records.iter().nth(1).is_some();
            for (index, record) in records.iter().enumerate() {
                match pipeline.route(record, fallback) {
                    Outcome::Accepted { event, .. } => {
                        newest = Some(newest.map_or(event.ts_ms, |n| n.max(event.ts_ms)));
                    }
                    Outcome::Rejected(reason) => reject(record, reason, many.then_some(index)),
                    Outcome::Late | Outcome::Future => {}
                }
            }
        }
        Err(reason) => {
            pipeline.count_rejection(reason);
            reject(payload, reason, None);
        }
    }
    newest
}

/// Commits the offsets of the partitions assigned here. Another group member owns the
/// rest, and this instance's older position would rewind the group's offset for it.
fn commit(consumer: &StreamConsumer<PulseContext>, offsets: &Offsets, mode: CommitMode) {
    let owned: Option<HashSet<(String, i32)>> = consumer
        .assignment()
        .ok()
        .map(|list| partition_names(&list).into_iter().collect());
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        if owned
            .as_ref()
            .is_some_and(|owned| !owned.contains(&(topic.clone(), *partition)))
        {
            continue;
        }
        if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(%error, topic, partition, "Cannot build the commit list.");
        }
    }
    if list.count() == 0 {
        return;
    }
    if let Err(error) = consumer.commit(&list, mode) {
        tracing::warn!(%error, "Offset commit failed; it will be retried at the next refresh.");
    }
}

fn status(
    shared: &Mutex<Shared>,
    broker_up: &AtomicBool,
    positions: &Offsets,
    assigned: &[(String, i32)],
    dead_letters: Option<&DeadLetters>,
) -> IngestStatus {
    let shared = shared.lock().unwrap_or_else(|e| e.into_inner());
    let up = broker_up.load(Ordering::Relaxed);
    // Only partitions read here: another member reports the lag of the rest.
    let partitions = positions
        .iter()
        .filter(|(partition, _)| assigned.contains(partition))
        .map(|((topic, partition), next)| PartitionStatus {
            topic: topic.clone(),
            partition: *partition,
            lag: shared
                .high_watermarks
                .get(&(topic.clone(), *partition))
                .map(|hi| (hi - next).max(0)),
            committed_offset: Some(*next),
        })
        .collect();
    IngestStatus {
        broker_up: up,
        ready: up,
        not_ready_reason: (!up).then(|| {
            shared
                .last_error
                .clone()
                .unwrap_or_else(|| "Kafka brokers are not reachable".to_owned())
        }),
        partitions,
        dead_letters_total: dead_letters.map_or(0, |d| d.delivered),
        dead_letter_errors_total: dead_letters.map_or(0, |d| d.failed),
        ..IngestStatus::default()
    }
}

/// How long the probe waits for each answer from the broker.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the brokers for metadata every second; the answer (or its absence within the
/// timeout) is the broker-up signal behind `/readyz`, and it says which partitions the
/// subscribed topics have. It also checks the partition ends the consume loop doubts.
async fn probe_broker(
    consumer: Arc<StreamConsumer<PulseContext>>,
    up: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    topics: Vec<String>,
) {
    loop {
        let client = consumer.clone();
        let wanted = topics.clone();
        let checks = shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ends_to_check
            .clone();
        let answer = tokio::task::spawn_blocking(move || {
            let metadata = client.fetch_metadata(None, PROBE_TIMEOUT).ok()?;
            let all: Vec<(String, i32)> = metadata
                .topics()
                .iter()
                .filter(|t| wanted.iter().any(|w| w == t.name()))
                .flat_map(|t| t.partitions().iter().map(|p| (t.name().to_owned(), p.id())))
                .collect();
            let confirmed: Vec<((String, i32), Instant)> = checks
                .into_iter()
                .filter(|check| {
                    let (topic, partition) = &check.partition;
                    client
                        .fetch_watermarks(topic, *partition, PROBE_TIMEOUT)
                        .is_ok_and(|(_, high)| high <= check.position)
                })
                .map(|check| (check.partition, check.doubted_since))
                .collect();
            Some((all, confirmed))
        })
        .await
        .ok()
        .flatten();
        let reachable = answer.is_some();
        if let Some((all, confirmed)) = answer {
            let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
            if !all.is_empty() {
                shared.topic_partitions = all;
            }
            shared.confirmed_ends.extend(confirmed);
        }
        let was = up.swap(reachable, Ordering::Relaxed);
        if was != reachable {
            if reachable {
                tracing::info!("Kafka brokers reachable.");
            } else {
                tracing::warn!("Kafka brokers unreachable; not ready until they return.");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What `pulse loadgen` produces.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    pub kafka: KafkaOptions,
    pub topic: String,
    /// Partitions to create the topic with, if it does not exist.
    pub partitions: i32,
    /// Events per second; `None` is as fast as the broker takes them.
    pub rate: Option<u64>,
    /// Stop after this many events; `None` produces the history and then stops.
    pub events: Option<u64>,
    pub workload: pulse_workload::WorkloadConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("cannot create the Kafka producer: {0}")]
    Producer(KafkaError),
    #[error("{failed} of {sent} events were not delivered; first error: {first}")]
    Delivery {
        failed: u64,
        sent: u64,
        first: String,
    },
    #[error("invalid workload: {0}")]
    Workload(#[from] pulse_workload::ConfigError),
}

/// Produces the synthetic workload (history, then live events if more are asked for),
/// keyed by user so that each user's events stay in one partition. Returns the count.
pub async fn loadgen(
    options: &LoadgenOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, LoadgenError> {
    const IN_FLIGHT: usize = 20_000;
    ensure_topics(
        &options.kafka,
        std::slice::from_ref(&options.topic),
        options.partitions,
    )
    .await;
    let mut config = options.kafka.client_config();
    for (key, value) in [("linger.ms", "20"), ("compression.type", "lz4")] {
        if !options.kafka.properties.contains_key(key) {
            config.set(key, value);
        }
    }
    let producer: FutureProducer = config.create().map_err(LoadgenError::Producer)?;
    let mut generator = pulse_workload::Generator::new(&options.workload)?;
    let history_end = options.workload.end_ms;
    let mut history = generator.events_until(history_end + 1);
    history.extend(generator.flush());
    let started = Instant::now();
    let (mut sent, mut failed, mut first_error) = (0u64, 0u64, None::<String>);
    let mut in_flight = FuturesUnordered::new();
    let mut line = String::new();
    let mut live_cursor = history_end + 1;
    let mut pending = history.into_iter();
    tokio::pin!(shutdown);
    loop {
        if options.events.is_some_and(|limit| sent >= limit) {
            break;
        }
        let event = match pending.next() {
            Some(event) => event,
            None if options.events.is_none() => break,
            None => {
                // History exhausted: keep generating as time passes.
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                let now = wall_ms().max(live_cursor + 1);
                pending = generator.events_until(now).into_iter();
                live_cursor = now;
                continue;
            }
        };
        if let Some(rate) = options.rate {
            let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        line.clear();
        event.write_json(&mut line);
        let key = event.user.to_string();
        let record = FutureRecord::to(&options.topic).key(&key).payload(&line);
        match producer.send_result(record) {
            Ok(delivery) => in_flight.push(delivery),
            Err((error, _)) => {
                failed += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
        }
        sent += 1;
        while in_flight.len() >= IN_FLIGHT {
            tally(in_flight.next().await, &mut failed, &mut first_error);
        }
        if sent.is_multiple_of(100_000) {
            tracing::info!(
                sent,
                per_second = (sent as f64 / started.elapsed().as_secs_f64()).round(),
                "Producing."
            );
        }
    }
    while let Some(result) = in_flight.next().await {
        tally(Some(result), &mut failed, &mut first_error);
    }
    tracing::info!(sent, failed, seconds = started.elapsed().as_secs_f64(), topic = %options.topic, "Loadgen finished.");
    match first_error {
        Some(first) => Err(LoadgenError::Delivery {
            failed,
            sent,
            first,
        }),
        None => Ok(sent),
    }
}

type Delivery = Result<
    Result<
        rdkafka::producer::future_producer::Delivery,
        (KafkaError, rdkafka::message::OwnedMessage),
    >,
    futures::channel::oneshot::Canceled,
>;

fn tally(result: Option<Delivery>, failed: &mut u64, first_error: &mut Option<String>) {
    let error = match result {
        Some(Ok(Ok(_))) | None => return,
        Some(Ok(Err((error, _)))) => error.to_string(),
        Some(Err(_)) => "delivery cancelled".to_owned(),
    };
    *failed += 1;
    first_error.get_or_insert(error);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(n: i32) -> (String, i32) {
        ("events".to_owned(), n)
    }

    /// Three assigned partitions, each with events up to `newest[n]` and read to its end.
    fn caught_up_at(newest: [i64; 3]) -> PartitionWatermarks {
        let mut watermarks = PartitionWatermarks {
            assigned: (0..3).map(partition).collect(),
            ..PartitionWatermarks::default()
        };
        for (n, ts) in newest.into_iter().enumerate() {
            watermarks.observe(&partition(n as i32), Some(ts));
        }
        for n in 0..3 {
            watermarks.reached_end(partition(n));
        }
        watermarks
    }

    fn positions(at: i64) -> Offsets {
        (0..3).map(|n| (partition(n), at)).collect()
    }

    #[test]
    fn ends_reached_with_nothing_arriving_since_let_the_watermark_follow_the_reading_partition() {
        let mut watermarks = caught_up_at([10, 20, 30]);
        assert!(watermarks.caught_up());
        assert_eq!(watermarks.combined(), None, "nothing left to read");
        assert!(watermarks.ends_to_check(&positions(5)).is_empty());
        // Records after the others' ends: they are doubted, not passed.
        watermarks.observe(&partition(0), Some(100));
        assert!(!watermarks.caught_up());
        assert_eq!(
            watermarks.combined(),
            Some(20),
            "held at the slowest doubted end"
        );
    }

    #[test]
    fn a_doubted_end_counts_once_the_broker_confirms_that_very_doubt() {
        let mut watermarks = caught_up_at([10, 20, 30]);
        watermarks.observe(&partition(0), Some(100));
        let checks = watermarks.ends_to_check(&positions(7));
        let mut asked: Vec<(i32, i64)> =
            checks.iter().map(|c| (c.partition.1, c.position)).collect();
        asked.sort();
        assert_eq!(asked, [(1, 7), (2, 7)]);
        let since = checks[0].doubted_since;

        // An answer about an older doubt changes nothing.
        watermarks.confirm_end(&partition(1), since - Duration::from_millis(1));
        assert_eq!(watermarks.combined(), Some(20));

        watermarks.confirm_end(&partition(1), since);
        assert_eq!(watermarks.combined(), Some(30));
        watermarks.confirm_end(&partition(2), since);
        assert_eq!(
            watermarks.combined(),
            Some(100),
            "only partition 0 is being read"
        );
        watermarks.reached_end(partition(0));
        assert!(watermarks.caught_up());
    }

    #[test]
    fn a_partition_delivering_again_is_read_not_doubted() {
        let mut watermarks = caught_up_at([10, 20, 30]);
        watermarks.observe(&partition(0), Some(100));
        watermarks.observe(&partition(1), Some(90));
        let doubted: Vec<i32> = watermarks
            .ends_to_check(&positions(7))
            .iter()
            .map(|c| c.partition.1)
            .collect();
        assert_eq!(doubted, [2]);
        assert_eq!(watermarks.combined(), Some(30));
    }

    #[test]
    fn while_the_broker_is_away_a_doubt_starts_again_and_old_answers_do_not_apply() {
        let mut watermarks = caught_up_at([10, 20, 30]);
        watermarks.observe(&partition(0), Some(100));
        let before = watermarks.ends_to_check(&positions(7))[0].clone();
        let later = before.doubted_since + Duration::from_secs(5);
        watermarks.broker_unreachable(later);
        let after = watermarks.ends_to_check(&positions(7));
        assert!(after.iter().all(|c| c.doubted_since == later));
        watermarks.confirm_end(&before.partition, before.doubted_since);
        assert_eq!(watermarks.combined(), Some(20), "still doubted");
    }

    #[test]
    fn an_unassigned_or_silent_partition_holds_the_watermark() {
        let mut watermarks = PartitionWatermarks {
            all: (0..3).map(partition).collect(),
            assigned: vec![partition(0), partition(1)],
            ..PartitionWatermarks::default()
        };
        watermarks.observe(&partition(0), Some(100));
        assert_eq!(watermarks.combined(), None, "partition 1 has not delivered");
        watermarks.observe(&partition(1), Some(50));
        assert_eq!(watermarks.combined(), None, "partition 2 is not ours");
        watermarks.assigned.push(partition(2));
        watermarks.reached_end(partition(2));
        assert_eq!(watermarks.combined(), Some(50));
    }
}
