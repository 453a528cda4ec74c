//! `kafka.repartition = true`: a stage in front of the consume loop that re-keys the input
//! by user, as Kafka Streams does with its repartition topics.
//!
//! Sessions (and every per-user figure) need all of a user's events in one partition; a
//! topic keyed otherwise spreads them. This stage reads the input topics in its own
//! consumer group (`<group_id>.repartition`), splits each message into its records, and
//! produces each record to the internal topic `<group_id>.by-user` keyed by its user id, in
//! the partition the configured partitioner gives that id (the one `pulse replay` and
//! `pulse loadgen` use), with the message's timestamp (an event without a time takes it).
//! The consume loop then reads the internal topic like any input. A record whose user
//! cannot be read goes through unchanged, keyed as it came, so the consume loop rejects it
//! and dead-letters it as it would have.
//!
//! # Nothing lost, nothing doubled
//!
//! Offsets of the input are committed only after every record produced before has been
//! acknowledged by the broker, so a crash loses nothing. The stage then starts again at
//! its last commit and produces the records since once more: a crash or a rebalance of the
//! stage's group *repeats* records. Each copy therefore carries where it came from (a
//! header, `copied_from`: input topic, partition, offset, and index of the record
//! in its message), and the consume loop drops a copy whose position is at or below the
//! highest one it applied from that input partition in that internal partition
//! (`pulse_core::upstream`, kept in the partition's state and checkpointed with it;
//! counted in `pulse_repartition_repeats_dropped_total`), as Kafka's idempotent producer
//! drops batches by sequence number. Records without the header (written by a pulse
//! before it) are applied as before.
//!
//! Why "at or below the highest applied" never drops a record seen for the first time:
//! take an internal partition `p`, an input partition `s`, and the first copy of the record
//! at position `x` of `s` to reach `p`; suppose a copy of a higher position `y` of `s` was
//! applied from `p` before it. That copy of `y` was produced by some stage instance `I`,
//! which started reading `s` at an offset `c` its group had committed.
//! - If `c <= x`, `I` read `x` before `y` (a lane of the merge keeps its input's order) and
//!   produced it to `p` too (the partition is a function of the record), before `y`. One
//!   idempotent producer writes one partition in the order it sends, without gaps:
//!   `enable.gapless.guarantee` turns a failed batch into a fatal error rather than let later
//!   ones through, deliveries never time out (`message.timeout.ms = 0`), and the stage stops
//!   at the first record it could not hand to the producer. So `I`'s copy of `x` is in `p`
//!   before its copy of `y`.
//! - If `c > x`, some instance committed `c` after every record it had produced below `c`
//!   was acknowledged, `x` among them; `I` started after that commit, so that copy of `x`
//!   is in `p` before anything `I` wrote.
//!
//! Either way a copy of `x` precedes the copy of `y` in `p`, and the consume loop reads `p`
//! in order: it saw `x` first, contradicting the supposition. This holds with two instances
//! writing at once — an old owner of `s` still delivering what it had sent while the new
//! one starts again from the committed offset: whichever copy of a position reaches `p`
//! first is applied, and every later one (the other instance's, or a repeat after a crash)
//! is at or below what was applied and dropped. Stale commits (lower than the newest) only
//! make more repeats. And what the consume loop applied is exactly what its checkpoint
//! holds: a restart from a checkpoint resumes with the positions saved with that state,
//! re-reads `p` from the offset saved with it, and decides every copy after it as before.
//!
//! The internal topic is created with the input's partition count; if it exists with
//! another count the stage refuses to start, because users would then hash to other
//! partitions than the state of the consume loop holds them in.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pulse_core::decode::Decoder;
use pulse_core::message::split_records;
use pulse_core::partitioner::Partitioner;
use pulse_core::upstream::UpstreamPosition;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaOptions;
use super::context::partition_names;
use super::copied_from;
use super::time_merge::TimeMerge;
use crate::topic_partition::TopicPartition;

/// Deliveries awaited before more records are produced: bounds the producer's memory.
const IN_FLIGHT: usize = 50_000;
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Records an input partition may hold in the merge before it is paused.
const MAX_WAITING: usize = 20_000;

fn one(partition: &TopicPartition) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(&partition.topic, partition.partition);
    list
}

#[derive(Debug, thiserror::Error)]
pub enum RepartitionError {
    #[error("cannot create the Kafka {what} of the repartition stage: {source}")]
    Client {
        what: &'static str,
        source: KafkaError,
    },
    #[error("cannot read the partitions of topic {topic}: {reason}")]
    Metadata { topic: String, reason: String },
    #[error(
        "the input topics have different partition counts ({counts:?}): one internal topic \
         keyed by user cannot stand for all of them"
    )]
    UnequalInputs { counts: BTreeMap<String, usize> },
    #[error(
        "the internal topic {topic} has {found} partitions and the input has {input}: users \
         would land in other partitions than their state. Delete {topic} (it holds only \
         re-keyed copies of the input) or set kafka.group_id to a new group"
    )]
    PartitionCount {
        topic: String,
        found: usize,
        input: usize,
    },
    #[error("the re-keyed records could not all be delivered ({failed} failed): {error}")]
    Delivery { failed: u64, error: String },
}

/// The internal topic a group's input is re-keyed into.
pub fn internal_topic(options: &KafkaOptions) -> String {
    format!("{}.by-user", options.group_id)
}

/// Creates the internal topic with the input's partition count if it is missing, and
/// checks its count if not; returns the options the consume loop reads it with, and the
/// partition count.
pub async fn prepare(options: &KafkaOptions) -> Result<(KafkaOptions, usize), RepartitionError> {
    let topic = internal_topic(options);
    let admin: AdminClient<DefaultClientContext> =
        options
            .client_config()
            .create()
            .map_err(|source| RepartitionError::Client {
                what: "admin client",
                source,
            })?;
    let admin = std::sync::Arc::new(admin);
    let mut counts = BTreeMap::new();
    for input in &options.topics {
        counts.insert(input.clone(), partition_count(&admin, input).await?);
    }
    let input = match counts.values().min() {
        Some(&min) if counts.values().all(|&c| c == min) => min,
        _ => return Err(RepartitionError::UnequalInputs { counts }),
    };
    let new = NewTopic::new(&topic, input as i32, TopicReplication::Fixed(1));
    let admin_options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let created = admin
        .create_topics([&new], &admin_options)
        .await
        .map_err(|e| RepartitionError::Metadata {
            topic: topic.clone(),
            reason: e.to_string(),
        })?;
    for result in created {
        match result {
            Ok(_) => tracing::info!(topic, partitions = input, "Created the internal topic."),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                let found = partition_count(&admin, &topic).await?;
                if found != input {
                    return Err(RepartitionError::PartitionCount {
                        topic,
                        found,
                        input,
                    });
                }
            }
            Err((_, code)) => {
                return Err(RepartitionError::Metadata {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    let internal = KafkaOptions {
        topics: vec![topic],
        ..options.clone()
    };
    Ok((internal, input))
}

async fn partition_count(
    admin: &std::sync::Arc<AdminClient<DefaultClientContext>>,
    topic: &str,
) -> Result<usize, RepartitionError> {
    let (admin, name) = (admin.clone(), topic.to_owned());
    let answer = tokio::task::spawn_blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(&name), METADATA_TIMEOUT)
            .map_err(|e| e.to_string())?;
        let topic = metadata.topics().first().ok_or("no such topic")?;
        match topic.error() {
            Some(error) => Err(format!("{:?}", RDKafkaErrorCode::from(error))),
            None if topic.partitions().is_empty() => Err("no partitions".to_owned()),
            None => Ok(topic.partitions().len()),
        }
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    answer.map_err(|reason| RepartitionError::Metadata {
        topic: topic.to_owned(),
        reason,
    })
}

/// Re-keys the input into the internal topic until `shutdown`; then waits for the last
/// deliveries and commits. `decoder` reads the user id and time as the consume loop will.
pub async fn run(
    options: KafkaOptions,
    decoder: Decoder,
    partitioner: Partitioner,
    partitions: usize,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RepartitionError> {
    let topic = internal_topic(&options);
    let mut config = options.client_config();
    config
        .set("group.id", format!("{}.repartition", options.group_id))
        .set("auto.offset.reset", &options.auto_offset_reset)
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false");
    if !options
        .properties
        .contains_key("partition.assignment.strategy")
    {
        config.set("partition.assignment.strategy", "cooperative-sticky");
    }
    let consumer: StreamConsumer<StageContext> = config
        .create_with_context(StageContext::default())
        .map_err(|source| RepartitionError::Client {
            what: "consumer",
            source,
        })?;
    let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| RepartitionError::Client {
            what: "subscription",
            source,
        })?;
    let mut producer_config = options.client_config();
    // Whatever the properties say: the consume loop's dropping of repeats needs each
    // internal partition to hold what one producer sent in the order sent, without a gap
    // (see the module's header).
    producer_config
        .set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set("message.timeout.ms", "0");
    let producer: FutureProducer =
        producer_config
            .create()
            .map_err(|source| RepartitionError::Client {
                what: "producer",
                source,
            })?;
    tracing::info!(from = ?options.topics, to = topic, "Re-keying the input by user.");

    let mut stage = Stage {
        topic: topic.into(),
        producer,
        in_flight: FuturesUnordered::new(),
        failed: 0,
        last_error: None,
        next: BTreeMap::new(),
        merge: TimeMerge::default(),
        paused: Vec::new(),
    };
    let rekey = |payload: &[u8], key: Option<&[u8]>, timestamp: Option<i64>, next: i64| {
        let partition_of =
            |key: Option<&[u8]>| key.map_or(0, |k| partitioner.partition_of(k, partitions as u32));
        let whole = |key: Option<&[u8]>| Pending {
            partition: partition_of(key),
            key: key.map(<[u8]>::to_vec),
            payload: Some(payload.to_vec()),
            timestamp,
            upstream: UpstreamPosition {
                offset: next - 1,
                index: 0,
            },
            next_offset: None,
        };
        let mut out: Vec<(i64, Pending)> = match split_records(payload) {
            Ok(records) => records
                .iter()
                .enumerate()
                .map(|(index, record)| {
                    let event = decoder.decode(record).ok();
                    let user = event.as_ref().map(|e| e.user.as_bytes());
                    let ts = event.as_ref().and_then(|e| e.ts_ms).or(timestamp);
                    let key = user.or(key);
                    let pending = Pending {
                        payload: Some(record.to_vec()),
                        upstream: UpstreamPosition {
                            offset: next - 1,
                            index: index as u32,
                        },
                        ..whole(key)
                    };
                    (ts.unwrap_or(i64::MIN), pending)
                })
                .collect(),
            // Not JSON: through as it came, for the consume loop to reject.
            Err(_) => vec![(timestamp.unwrap_or(i64::MIN), whole(key))],
        };
        match out.last_mut() {
            Some((_, last)) => last.next_offset = Some(next),
            // No record at all (an empty array): only its offset moves on.
            None => out.push((
                timestamp.unwrap_or(i64::MIN),
                Pending {
                    payload: None,
                    next_offset: Some(next),
                    ..whole(None)
                },
            )),
        }
        out
    };
    let mut tick = tokio::time::interval(options.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            _ = tick.tick() => stage.settle_and_commit(&consumer, CommitMode::Async).await?,
            received = consumer.recv() => {
                stage.follow_assignment(&consumer);
                match received {
                    Ok(message) => {
                        let from = TopicPartition::new(message.topic(), message.partition());
                        let pending = rekey(
                            message.payload().unwrap_or_default(),
                            message.key(),
                            message.timestamp().to_millis(),
                            message.offset() + 1,
                        );
                        for (ts, item) in pending {
                            stage.merge.push(&from, ts, item);
                        }
                        stage.hold_back(&consumer, &from);
                    }
                    Err(KafkaError::PartitionEOF(partition)) => {
                        // The error names no topic; every topic's partition of that number
                        // is at its end or holds records (which then keep it from counting).
                        for topic in &options.topics {
                            stage.merge.reached_end(&TopicPartition::new(topic.as_str(), partition));
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Kafka consume error in the repartition stage; retrying.");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                stage.release(&consumer).await?;
            }
        }
    }
    stage.settle_and_commit(&consumer, CommitMode::Sync).await?;
    tracing::info!("Repartition stage stopped: every re-keyed record delivered and committed.");
    Ok(())
}

/// Notes rebalances for the stage, which then asks for its assignment (asking on every
/// record would copy the assignment as often).
#[derive(Default)]
struct StageContext {
    changed: AtomicBool,
}

impl ClientContext for StageContext {}

impl ConsumerContext for StageContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.changed.store(true, Ordering::Release);
    }
}

/// A re-keyed record waiting for its turn.
#[derive(Debug)]
struct Pending {
    /// Its partition of the internal topic.
    partition: u32,
    key: Option<Vec<u8>>,
    /// `None` for an input message with no record: only its offset moves on.
    payload: Option<Vec<u8>>,
    timestamp: Option<i64>,
    /// Where in its input partition it came from: the consume loop drops a second copy.
    upstream: UpstreamPosition,
    /// On the last record of its message: the input offset to commit once it is delivered.
    next_offset: Option<i64>,
}

/// The producer side: records waiting for their turn, deliveries in flight, and how far
/// the input may be committed once they are acknowledged.
struct Stage {
    /// Shared so that a record under construction does not borrow the stage.
    topic: std::sync::Arc<str>,
    producer: FutureProducer,
    in_flight: FuturesUnordered<DeliveryFuture>,
    failed: u64,
    last_error: Option<String>,
    /// Next offset per input partition, of the records produced so far.
    next: BTreeMap<(String, i32), i64>,
    merge: TimeMerge<Pending>,
    /// Input partitions paused because they are too far ahead of the others.
    paused: Vec<TopicPartition>,
}

impl Stage {
    /// Takes a rebalance into account: the merge waits for new partitions, forgets
    /// revoked ones.
    fn follow_assignment(&mut self, consumer: &StreamConsumer<StageContext>) {
        if !consumer.context().changed.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Ok(list) = consumer.assignment() {
            let assigned = partition_names(&list);
            self.merge.assign(&assigned);
            self.paused.retain(|p| assigned.contains(p));
        }
    }

    /// Pauses `from` while it holds too many records for the others to catch up with:
    /// the merge's memory stays bounded.
    fn hold_back(&mut self, consumer: &StreamConsumer<StageContext>, from: &TopicPartition) {
        if self.merge.waiting(from) >= MAX_WAITING && !self.paused.contains(from) {
            if let Err(error) = consumer.pause(&one(from)) {
                tracing::warn!(%error, partition = %from, "Cannot pause an input partition.");
            }
            self.paused.push(from.clone());
        }
    }

    /// Sends every record the merge releases; stops at the first that fails.
    async fn release(
        &mut self,
        consumer: &StreamConsumer<StageContext>,
    ) -> Result<(), RepartitionError> {
        while let Some((from, item)) = self.merge.pop() {
            if let Some(payload) = &item.payload {
                self.send(&from, &item, payload).await?;
            }
            if let Some(next) = item.next_offset {
                self.next.insert((from.topic.clone(), from.partition), next);
            }
            if self.merge.waiting(&from) < MAX_WAITING / 2
                && let Some(at) = self.paused.iter().position(|p| *p == from)
            {
                self.paused.swap_remove(at);
                if let Err(error) = consumer.resume(&one(&from)) {
                    tracing::warn!(%error, partition = %from, "Cannot resume an input partition.");
                }
            }
        }
        Ok(())
    }

    /// Hands one record to the producer. After a failure nothing more is sent: a record
    /// sent after one that is missing would make the consume loop drop the missing one when
    /// it comes again (see the module's header).
    async fn send(
        &mut self,
        from: &TopicPartition,
        item: &Pending,
        payload: &[u8],
    ) -> Result<(), RepartitionError> {
        self.failed()?;
        let topic = self.topic.clone();
        let mut record = FutureRecord::to(&topic)
            .partition(item.partition as i32)
            .payload(payload)
            .headers(copied_from::header(from, item.upstream));
        if let Some(key) = &item.key {
            record = record.key(key);
        }
        if let Some(timestamp) = item.timestamp {
            record = record.timestamp(timestamp);
        }
        loop {
            if self.in_flight.len() >= IN_FLIGHT {
                self.settle_one().await;
                self.failed()?;
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.in_flight.push(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The producer's queue is full: wait for a delivery, then try again.
                    record = back;
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else {
                        self.settle_one().await;
                        self.failed()?;
                    }
                }
                Err((error, _)) => {
                    self.failed += 1;
                    self.last_error = Some(error.to_string());
                    return self.failed();
                }
            }
        }
    }

    /// The stage's error once a record could not be delivered.
    fn failed(&mut self) -> Result<(), RepartitionError> {
        match self.failed {
            0 => Ok(()),
            failed => Err(RepartitionError::Delivery {
                failed,
                error: self.last_error.clone().unwrap_or_default(),
            }),
        }
    }

    async fn settle_one(&mut self) {
        match self.in_flight.next().await {
            Some(Ok(Ok(_))) | None => {}
            Some(Ok(Err((error, _)))) => {
                self.failed += 1;
                self.last_error = Some(error.to_string());
            }
            Some(Err(_)) => {
                self.failed += 1;
                self.last_error = Some("delivery cancelled".to_owned());
            }
        }
    }

    /// Waits for every delivery; commits the input up to what they cover if none failed.
    /// A failed delivery stops the stage without committing past it: the records after
    /// the last commit are read and produced again at the next start.
    async fn settle_and_commit(
        &mut self,
        consumer: &StreamConsumer<StageContext>,
        mode: CommitMode,
    ) -> Result<(), RepartitionError> {
        while !self.in_flight.is_empty() {
            self.settle_one().await;
        }
        self.failed()?;
        let owned = consumer.assignment().ok();
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.next {
            let mine = owned
                .as_ref()
                .is_none_or(|o| o.find_partition(topic, *partition).is_some());
            if mine {
                let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
            }
        }
        if list.count() > 0
            && let Err(error) = consumer.commit(&list, mode)
        {
            tracing::warn!(%error, "Repartition stage: offset commit failed; retried at the next refresh.");
        }
        // What a rebalance took away is another member's to commit now.
        self.next.retain(|(topic, partition), _| {
            owned
                .as_ref()
                .is_none_or(|o| o.find_partition(topic, *partition).is_some())
        });
        Ok(())
    }
}
