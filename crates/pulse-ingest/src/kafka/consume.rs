//! The consume loop of `pulse run`: records in, snapshots, checkpoints and commits out.
//!
//! Offsets are never auto-committed: the loop records, per partition, the next offset whose
//! records have been routed, and commits it only after a [`Pipeline::snapshot`] barrier has
//! proved those records applied (and, with checkpoints, once the state holding them is
//! durable). With a state store, partition state follows the group (`ownership`): a
//! partition starts at the offset of the state loaded for it. Without one, each instance
//! keeps its own position per partition and a partition a rebalance hands (back) to it
//! starts there, so that its state never misses nor repeats a record whatever other group
//! members did meanwhile.
//!
//! A record re-keyed by the repartition stage says where it was copied from
//! (`copied_from`); a copy at or below the highest position the partition has applied from
//! that input partition is a repeat of the stage's (after a crash or a rebalance of its
//! group) and is dropped before routing, counted, never applied (why that is sound:
//! [`super::repartition`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use pulse_core::Rejection;
use pulse_core::ingest::Outcome;
use pulse_core::message::split_records;
use pulse_core::status::{IngestStatus, PartitionStatus};
use rdkafka::Offset;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;

use super::KafkaOptions;
use super::admin::{ensure_topics, rollup_producer};
use super::commits::commit;
use super::context::{PulseContext, Shared, partition_names};
use super::copied_from;
use super::dead_letters::{DeadLetters, Origin};
use super::keying::SharedUsersWarning;
use super::ownership::Ownership;
use super::probe::probe_broker;
use super::resume::{Placement, Resume};
use super::summaries::GlobalView;
use super::watermarks::{PartitionWatermarks, PublishedHolds};
use crate::checkpointer::Checkpointer;
use crate::clock::wall_ms;
use crate::partition_numbers::PartitionNumbers;
use crate::pipeline::{Pipeline, Sink};
use crate::rollups::RollupWriter;
use crate::state_store::{Offsets, StateStoreError, TopicSizes};
use crate::topic_partition::TopicPartition;
use crate::workers::WorkerStopped;

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
    Shards(#[from] WorkerStopped),
    #[error(transparent)]
    State(#[from] StateStoreError),
    #[error(
        "topic {topic} had {saved} partitions when its state was saved and has {now} now: users \
         hash to other partitions after such a change, so state kept by partition cannot carry \
         over. Rebuild the state for {now} partitions from a copy of the events with `pulse \
         replay --input FILE --partitions {now} --save-state URL`, or pass --reset-state to \
         start empty"
    )]
    PartitionCountChanged { topic: String, saved: u32, now: u32 },
}

/// Durable state for the Kafka source: where checkpoints go (and partitions are loaded
/// from, as the group assigns them).
#[derive(Debug)]
pub struct Durability {
    pub checkpointer: Checkpointer,
    /// Each topic's partition count: as its first loaded partition was saved, or as the
    /// broker first listed it.
    pub sizes: TopicSizes,
}

impl Durability {
    /// Refuses a partition saved under another partition count of its topic than the one
    /// this group reads (or, before the broker has said, than the others loaded).
    pub(super) fn check_saved_size(
        &mut self,
        key: &TopicPartition,
        saved: Option<u32>,
    ) -> Result<(), KafkaSourceError> {
        let Some(saved) = saved else {
            return Ok(());
        };
        match self.sizes.get(&key.topic) {
            Some(&now) if now != saved => Err(KafkaSourceError::PartitionCountChanged {
                topic: key.topic.clone(),
                saved,
                now,
            }),
            Some(_) => Ok(()),
            None => {
                self.sizes.insert(key.topic.clone(), saved);
                self.checkpointer.set_topic_sizes(self.sizes.clone());
                Ok(())
            }
        }
    }

    /// Checks the topics' partition counts (`known`, as the broker lists them) against
    /// those the state was saved (or started) under, and saves them with the checkpoints to
    /// come. A changed count is fatal: the same user now lands in another partition.
    fn follow_topic_sizes(&mut self, known: &[TopicPartition]) -> Result<(), KafkaSourceError> {
        let mut now = TopicSizes::new();
        for key in known {
            *now.entry(key.topic.clone()).or_default() += 1;
        }
        for (topic, &count) in &now {
            match self.sizes.get(topic) {
                Some(&saved) if saved != count => {
                    return Err(KafkaSourceError::PartitionCountChanged {
                        topic: topic.clone(),
                        saved,
                        now: count,
                    });
                }
                Some(_) => {}
                None => {
                    self.sizes.insert(topic.clone(), count);
                    self.checkpointer.set_topic_sizes(self.sizes.clone());
                }
            }
        }
        Ok(())
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
    // pulse's defaults, unless the operator set them. Cooperative-sticky: a member joining
    // or leaving moves only the partitions that must move, and the others keep being read
    // (and keep their state) through the rebalance, instead of the whole group stopping.
    for (key, value) in [
        ("statistics.interval.ms", "2000"),
        ("queued.max.messages.kbytes", "16384"),
        ("partition.assignment.strategy", "cooperative-sticky"),
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
            positions: Mutex::default(),
            from_end: options.auto_offset_reset == "latest",
            follows_group: durability.is_some(),
            stopping: AtomicBool::new(false),
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
    if let Some(rollups) = rollups.as_mut()
        && let Some(topic) = rollups.topic()
    {
        let producer =
            rollup_producer(options, topic)
                .await
                .map_err(|source| KafkaSourceError::Client {
                    what: "rollup producer",
                    source,
                })?;
        rollups.send_to(producer);
    }
    let mut global = match &options.summaries {
        Some(summaries) => Some(
            GlobalView::start(options, summaries.clone())
                .await
                .map_err(|source| KafkaSourceError::Client {
                    what: "summaries producer or reader",
                    source,
                })?,
        ),
        None => None,
    };
    tracing::info!(brokers = %options.brokers, topics = ?options.topics, group = %options.group_id, "Consuming.");

    let broker_up = Arc::new(AtomicBool::new(false));
    let probe = tokio::spawn(probe_broker(
        consumer.clone(),
        broker_up.clone(),
        shared.clone(),
        options.topics.clone(),
    ));
    let mut resume = Resume::default();
    let mut ownership = durability
        .is_some()
        .then(|| Ownership::new(session_timeout(&consumer_config)));
    let mut watermarks = PartitionWatermarks::default();
    let mut holds = PublishedHolds::default();
    let mut was_caught_up = false;
    let mut shared_users = SharedUsersWarning::default();
    // Copies the repartition stage produced again, dropped (since start).
    let mut repeats_dropped: u64 = 0;
    // Which Kafka partition each of the pipeline's partition numbers is, in order of first
    // sight (an assignment, or a first record).
    let mut numbers = PartitionNumbers::default();
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
                    if let (Some(owner), Some(durable)) = (ownership.as_mut(), durability.as_mut()) {
                        owner.follow(&consumer, &shared, pipeline, &mut numbers, durable, &mut resume, &mut watermarks).await?;
                    }
                    refresh_assignment(&mut watermarks, &consumer, &shared);
                    if let Some(durable) = durability.as_mut() {
                        let known = shared.lock().unwrap_or_else(|e| e.into_inner()).topic_partitions.clone();
                        durable.follow_topic_sizes(&known)?;
                    }
                    // Positions move only as this loop routes records (and at rebalances, inside
                    // recv()): one copy serves the whole tick.
                    let positions = consumer.context().positions();
                    exchange_end_checks(&mut watermarks, &shared, &positions, broker_up.load(Ordering::Relaxed));
                    // The other members' partitions count as far as they say (summaries),
                    // which moves the watermark even when nothing arrives here.
                    if let Some(view) = global.as_ref() {
                        watermarks.set_remote_holds(view.remote_holds());
                        if let Some(watermark) = watermarks.combined() {
                            pipeline.advance_watermark(watermark);
                        }
                    }
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
                    let snapshot = snapshot(pipeline, global.as_mut(), &numbers, &watermarks, &holds, durability.as_ref(), false).await?;
                    shared_users.observe(&snapshot, &numbers);
                    if let Some(letters) = dead_letters.as_mut() {
                        letters.settle().await;
                    }
                    match durability.as_mut() {
                        Some(durable) => {
                            if let Some(written) = durable.checkpointer.poll().await {
                                holds.checkpoint_durable();
                                commit(&consumer, &written, CommitMode::Async);
                            }
                            // A refused save: alone, another instance took the state over and
                            // this one must stop; in a group, those partitions are dropped.
                            let lost = durable.checkpointer.take_lost();
                            match ownership.as_mut() {
                                None => if let Some(lost) = lost {
                                    return Err(lost.into());
                                },
                                Some(owner) => {
                                    let store = durable.checkpointer.store().clone();
                                    for key in store.take_refused() {
                                        owner.drop_fenced(&consumer, pipeline, &mut numbers, &store, &mut watermarks, &key).await?;
                                    }
                                }
                            }
                            if durable.checkpointer.due() {
                                let started = Instant::now();
                                let state = pipeline.state().await?;
                                let offsets = ownership.as_ref().map_or_else(|| positions.clone(), |o| o.owned_offsets(&positions));
                                holds.checkpoint_taken(&watermarks, offsets.keys());
                                durable.checkpointer.start(state, numbers.clone(), offsets, started.elapsed());
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
                    status.repeats_dropped_total = repeats_dropped;
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
                            let key = TopicPartition::new(origin.topic, origin.partition);
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
                            // A partition dropped after a refused save: its buffered records
                            // are the new owner's to apply.
                            if ownership.as_ref().is_some_and(|o| !o.owns(&key)) {
                                continue;
                            }
                            if !consumer.context().claim(&key, origin.offset) {
                                tracing::debug!(topic = origin.topic, partition = origin.partition, offset = origin.offset, "Skipping a record applied before.");
                                continue;
                            }
                            let number = numbers.number_of(&key);
                            if let Some(upstream) = copied_from::read(message.headers())
                                && !pipeline.first_copy(number, upstream)
                            {
                                repeats_dropped += 1;
                                continue;
                            }
                            let fallback = message.timestamp().to_millis();
                            let payload = message.payload().unwrap_or_default();
                            let dead_letter = dead_letters.as_mut().map(|letters| (letters, options));
                            let newest = route_message(pipeline, number, payload, message.key(), fallback, &origin, dead_letter);
                            if !watermarks.is_assigned(&key) {
                                refresh_assignment(&mut watermarks, &consumer, &shared);
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
                                let key = TopicPartition::new(topic.as_str(), partition);
                                // Of a partition dropped after a refused save (queued before
                                // its pause): its end is no longer this member's to reach.
                                if ownership.as_ref().is_some_and(|o| !o.owns(&key)) {
                                    continue;
                                }
                                watermarks.reached_end(key);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "Kafka consume error; retrying.");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    pipeline.send_full_batches().await?;
                    if let (Some(owner), Some(durable)) = (ownership.as_mut(), durability.as_mut()) {
                        owner.follow(&consumer, &shared, pipeline, &mut numbers, durable, &mut resume, &mut watermarks).await?;
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    consumer.context().stopping.store(true, Ordering::Release);
    probe.abort();
    result?;

    tracing::info!("Stopping: draining the workers and committing.");
    let snapshot = snapshot(
        pipeline,
        global.as_mut(),
        &numbers,
        &watermarks,
        &holds,
        durability.as_ref(),
        true,
    )
    .await?;
    if let Some(letters) = dead_letters.as_mut() {
        letters.settle().await;
    }
    match durability.as_mut() {
        Some(durable) => {
            let state = pipeline.state().await?;
            let positions = consumer.context().positions();
            let offsets = ownership
                .as_ref()
                .map_or_else(|| positions.clone(), |o| o.owned_offsets(&positions));
            match durable
                .checkpointer
                .save_now(state, numbers.clone(), offsets)
                .await
            {
                Some(written) => {
                    commit(&consumer, &written, CommitMode::Sync);
                    tracing::info!("State saved and offsets committed.");
                }
                None => {
                    tracing::error!(
                        "The last checkpoint failed; offsets stay at the previous one."
                    );
                    if let Some(lost) = durable.checkpointer.take_lost() {
                        return Err(lost.into());
                    }
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
    status.repeats_dropped_total = repeats_dropped;
    sink.publish(snapshot, status);
    Ok(())
}

/// The snapshot to serve: of every partition with a global view (published to it when
/// due, or `last` at a clean stop), of this instance's partitions without.
async fn snapshot(
    pipeline: &mut Pipeline,
    global: Option<&mut GlobalView>,
    numbers: &PartitionNumbers,
    watermarks: &PartitionWatermarks,
    holds: &PublishedHolds,
    durability: Option<&Durability>,
    last: bool,
) -> Result<pulse_core::KpiSnapshot, WorkerStopped> {
    match global {
        // Before a partition's first checkpoint its epoch is 0: any owner's claim is newer.
        Some(view) => {
            let claim_of = |key: &TopicPartition| {
                let epoch = durability
                    .and_then(|d| d.checkpointer.epoch(key))
                    .unwrap_or(0);
                (epoch, holds.of(watermarks, key, durability.is_some()))
            };
            view.snapshot(pipeline, numbers, &watermarks.assigned, claim_of, last)
                .await
        }
        None => pipeline.snapshot().await,
    }
}

/// The consumer's `session.timeout.ms` (librdkafka's default, 45 s, unless set).
fn session_timeout(config: &rdkafka::ClientConfig) -> Duration {
    let millis = config
        .get("session.timeout.ms")
        .and_then(|value| value.parse().ok())
        .unwrap_or(45_000);
    Duration::from_millis(millis)
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
    refresh_assignment(watermarks, consumer, shared);
}

/// Tells the watermarks what is assigned here and what partitions the topics have.
fn refresh_assignment(
    watermarks: &mut PartitionWatermarks,
    consumer: &StreamConsumer<PulseContext>,
    shared: &Mutex<Shared>,
) {
    let assigned = consumer
        .assignment()
        .ok()
        .map(|list| partition_names(&list));
    let all = shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .topic_partitions
        .clone();
    watermarks.set_assignment(assigned, all);
}

/// Hands the doubted ends to the broker probe and takes in what it confirmed.
fn exchange_end_checks(
    watermarks: &mut PartitionWatermarks,
    shared: &Mutex<Shared>,
    positions: &Offsets,
    reachable: bool,
) {
    let confirmed = {
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.ends_to_check = watermarks.ends_to_check(positions);
        std::mem::take(&mut shared.confirmed_ends)
    };
    for (partition, since) in confirmed {
        watermarks.confirm_end(&partition, since);
    }
    if !reachable {
        watermarks.broker_unreachable(Instant::now());
    }
}

/// Routes a message's records; returns the newest accepted event time among them. A
/// rejected record goes to the dead-letter topic, if there is one (named only then).
fn route_message(
    pipeline: &mut Pipeline,
    partition: usize,
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
                match pipeline.route(record, fallback, Some(partition)) {
                    Outcome::Accepted { event, .. } => {
                        newest = Some(newest.map_or(event.ts_ms, |n| n.max(event.ts_ms)));
                    }
                    Outcome::Rejected(reason) => reject(record, reason, many.then_some(index)),
                    Outcome::Late { .. } | Outcome::Future => {}
                }
            }
        }
        Err(reason) => {
            pipeline.count_rejection(reason, Some(partition));
            reject(payload, reason, None);
        }
    }
    newest
}

fn status(
    shared: &Mutex<Shared>,
    broker_up: &AtomicBool,
    positions: &Offsets,
    assigned: &[TopicPartition],
    dead_letters: Option<&DeadLetters>,
) -> IngestStatus {
    let shared = shared.lock().unwrap_or_else(|e| e.into_inner());
    let up = broker_up.load(Ordering::Relaxed);
    // Only partitions read here: another member reports the lag of the rest.
    let partitions = positions
        .iter()
        .filter(|(partition, _)| assigned.contains(partition))
        .map(|(at, next)| PartitionStatus {
            topic: at.topic.clone(),
            partition: at.partition,
            lag: shared.high_watermarks.get(at).map(|hi| (hi - next).max(0)),
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
