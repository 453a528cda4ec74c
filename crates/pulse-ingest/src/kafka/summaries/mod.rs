//! The global view across instances, over Kafka: every instance publishes the summaries
//! of the partitions it owns to a compacted topic (`summaries.topic`, `pulse.summaries` by
//! default) and reads the whole topic back, so that each serves the KPIs of every
//! partition, not only of its own.
//!
//! The records and their merge are pulse-core's ([`pulse_core::global_view`]): one per
//! partition and piece (a family's summary, or the partition's head), keyed
//! `<topic>/<partition>/<piece>`, carrying the owner epoch of the state store, and sent
//! only when the piece changed. Here: the producer ([`publish`]), the reader task
//! ([`read`]), and [`GlobalView`], which the consume loop asks for each snapshot.
//!
//! "Owned" is the consumer's assignment of the moment, asked on every snapshot, so the set
//! may change with rebalances: an owned partition counts from this instance's state;
//! every other from the topic, or from this instance's state until the topic has it (a
//! partition just revoked keeps counting until its new owner publishes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulse_core::KpiSnapshot;
use pulse_core::global_view::{LocalPartition, PartitionHead, Publisher, RemoteView, SessionHold};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio::task::JoinHandle;

use super::KafkaOptions;
use super::admin::ensure_topics_with;
use crate::partition_numbers::PartitionNumbers;
use crate::periodic::Periodic;
use crate::pipeline::Pipeline;
use crate::topic_partition::TopicPartition;
use crate::workers::WorkerStopped;

mod publish;
mod read;

/// Where summaries go and how often (`[summaries]` in pulse.toml).
#[derive(Debug, Clone)]
pub struct SummaryOptions {
    pub topic: String,
    pub publish_interval: Duration,
}

/// The largest piece the topic takes: a family's summary of one partition holds a sketch
/// per window and feature (16 KiB each in HLL mode at lg_k 14), which passes Kafka's
/// default 1 MB at a few dozen features with high counts.
const MAX_RECORD_BYTES: &str = "67108864";

/// This instance's side of the global view. Created by the consume loop when `[summaries]`
/// is on; dropping it stops the reader task (a publish in flight finishes or is cut off
/// with the runtime, like a crash).
pub struct GlobalView {
    publisher: Publisher,
    producer: FutureProducer,
    options: SummaryOptions,
    /// A publish in flight; it returns the keys that were not delivered.
    job: Periodic<Vec<String>>,
    /// Filled by the reader task.
    remote: Arc<Mutex<RemoteView>>,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for GlobalView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalView")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for GlobalView {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl GlobalView {
    /// Creates the topic if it is missing (compacted: the latest record per key is what
    /// matters), the producer, and the reader task.
    pub async fn start(
        kafka: &KafkaOptions,
        options: SummaryOptions,
    ) -> Result<GlobalView, KafkaError> {
        ensure_topics_with(
            kafka,
            std::slice::from_ref(&options.topic),
            1,
            &[
                ("cleanup.policy", "compact"),
                ("max.message.bytes", MAX_RECORD_BYTES),
            ],
        )
        .await;
        let remote = Arc::new(Mutex::new(RemoteView::default()));
        let reader = read::spawn(kafka, &options.topic, remote.clone())?;
        Ok(GlobalView {
            publisher: Publisher::default(),
            producer: publish::producer(kafka, MAX_RECORD_BYTES)?,
            job: Periodic::new(options.publish_interval),
            options,
            remote,
            reader,
        })
    }

    /// What the other members said last of how far their partitions let the session
    /// watermark go (this member's own partitions included; the caller knows them better).
    pub fn remote_holds(&self) -> Vec<(TopicPartition, SessionHold)> {
        let remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        remote
            .holds()
            .map(|(topic, partition, hold)| (TopicPartition::new(topic, partition), hold))
            .collect()
    }

    /// The snapshot of every partition: this instance's `owned` ones from its state, the
    /// others from the topic. Publishes the owned ones' changed pieces when a publish is
    /// due (or `now`, at a clean stop), under the owner epoch and with the session hold
    /// `claim_of` gives each.
    pub async fn snapshot(
        &mut self,
        pipeline: &mut Pipeline,
        numbers: &PartitionNumbers,
        owned: &[TopicPartition],
        claim_of: impl Fn(&TopicPartition) -> (u64, SessionHold),
        now: bool,
    ) -> Result<KpiSnapshot, WorkerStopped> {
        if let Some(finished) = self.job.poll().await {
            self.forget_undelivered(finished);
        }
        // Summaries are folded at this instance's clock, and on the event-time clock that
        // is the newest event it has seen: its own partitions' newest may be behind the
        // stream's, and a summary folded there would keep counting windows the stream has
        // left (the trailing minutes; a day, past midnight), in this instance's view and in
        // every other's. The other publishers' clocks raise it to the stream's.
        let newest = self
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .newest_event_ms();
        if let Some(newest) = newest {
            pipeline.observe_newest_event(newest);
        }
        let local: Vec<LocalPartition> = pipeline
            .partition_summaries()
            .await?
            .into_iter()
            .filter_map(|(number, inputs, summary)| {
                let key = numbers.key_of(number)?;
                Some(LocalPartition {
                    topic: key.topic.clone(),
                    partition: key.partition,
                    inputs,
                    summary,
                })
            })
            .collect();
        let is_owned = |topic: &str, partition: i32| owned.iter().any(|k| k.is(topic, partition));
        if now && let Some(finished) = self.job.wait().await {
            self.forget_undelivered(finished);
        }
        if now || self.job.due() {
            let router = pipeline.ingestor().state();
            let records: Vec<_> = local
                .iter()
                .filter(|l| is_owned(&l.topic, l.partition))
                .flat_map(|l| {
                    let (epoch, hold) =
                        claim_of(&TopicPartition::new(l.topic.as_str(), l.partition));
                    let head = PartitionHead::new(
                        &l.inputs,
                        router.clone(),
                        l.summary.estimated_bytes,
                        hold,
                    );
                    self.publisher
                        .changed(&l.topic, l.partition, epoch, &head, &l.summary)
                })
                .collect();
            self.job.start(publish::send(
                self.producer.clone(),
                self.options.topic.clone(),
                records,
            ));
            if now && let Some(finished) = self.job.wait().await {
                self.forget_undelivered(finished);
            }
        }
        let combined = {
            let remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            remote.combine(
                local,
                pipeline.ingestor().state(),
                pipeline.sketch_shape(),
                is_owned,
            )
        };
        Ok(pipeline.build_snapshot(&combined.router, &combined.counters, &combined.summaries))
    }

    fn forget_undelivered(&mut self, finished: Result<Vec<String>, tokio::task::JoinError>) {
        match finished {
            Ok(undelivered) => undelivered.iter().for_each(|k| self.publisher.forget(k)),
            Err(error) => {
                // What it sent is unknown: send everything again.
                tracing::error!(%error, "The summary publisher crashed.");
                self.publisher = Publisher::default();
            }
        }
    }
}
