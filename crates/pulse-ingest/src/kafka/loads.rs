//! Loading the state of partitions the group has just assigned here: one task per
//! partition, [`CONCURRENCY`] at a time, off the consume loop.
//!
//! Why one task each: a group that hands over several partitions at once (a member joining
//! or dying) would otherwise wait for their loads one after another, and each is a few
//! round trips to an object store plus the transfer of its state. Each partition is
//! resumed as soon as its own state is in, whatever the others do; one whose load fails is
//! tried again alone.
//!
//! A partition revoked while its load runs is cancelled. A load still waiting for its turn
//! stops without sending anything. One that has started claiming is let finish, and its
//! claim is released: stopping it mid-claim could leave a request on the wire (or a hard
//! link on a blocking thread) that creates its manifest *after* the revocation, above the
//! claim of the member the group gives the partition to next, whose saves would then be
//! refused. Waiting costs the rebalance at most one claim, as a final checkpoint does.

use std::sync::Arc;

use foldhash::HashMap;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::state_store::{CONCURRENCY, StateStore, StateStoreError, Taken};
use crate::topic_partition::TopicPartition;

/// A partition claimed and loaded, and where it starts.
#[derive(Debug)]
pub(super) struct Loaded {
    pub key: TopicPartition,
    pub taken: Option<Taken>,
    /// The group's committed offset, or the end `auto.offset.reset` names, for a partition
    /// whose state records none.
    pub fallback: Option<i64>,
}

/// Where the group says a partition starts (a blocking broker lookup, run off the runtime).
pub(super) type Fallback = Arc<dyn Fn(&TopicPartition) -> Option<i64> + Send + Sync>;

/// A load under way, and how to tell it that its partition was revoked.
struct Loading {
    task: JoinHandle<Result<Option<Loaded>, StateStoreError>>,
    revoked: watch::Sender<bool>,
}

/// The loads under way.
pub(super) struct Loads {
    permits: Arc<Semaphore>,
    running: HashMap<TopicPartition, Loading>,
}

impl Default for Loads {
    fn default() -> Loads {
        Loads {
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
            running: HashMap::default(),
        }
    }
}

impl Loads {
    /// Starts claiming and loading `key` (unless it is loading already).
    pub(super) fn start(&mut self, store: &StateStore, key: TopicPartition, fallback: Fallback) {
        if self.running.contains_key(&key) {
            return;
        }
        let (store, permits, at) = (store.clone(), self.permits.clone(), key.clone());
        let (revoked, mut revocation) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _permit = tokio::select! {
                permit = permits.acquire_owned() => permit.expect("never closed"),
                _ = revocation.wait_for(|revoked| *revoked) => return Ok(None),
            };
            // Not cut short from here on: see the module documentation.
            let taken = store.claim(&at).await?;
            if *revocation.borrow() {
                return Ok(None);
            }
            let fallback = match taken.as_ref().and_then(|t| t.offset) {
                Some(_) => None,
                None => {
                    let at = at.clone();
                    tokio::task::spawn_blocking(move || fallback(&at))
                        .await
                        .unwrap_or_default()
                }
            };
            Ok(Some(Loaded {
                key: at,
                taken,
                fallback,
            }))
        });
        self.running.insert(key, Loading { task, revoked });
    }

    /// Ends the load of a revoked partition (at once if it has not started claiming, else
    /// once its claim is in) and releases whatever it claimed; `false` if `key` was not
    /// loading. Nothing of it is installed.
    pub(super) async fn cancel(&mut self, store: &StateStore, key: &TopicPartition) -> bool {
        let Some(loading) = self.running.remove(key) else {
            return false;
        };
        loading.revoked.send_replace(true);
        let _ = loading.task.await;
        store.release(key);
        true
    }

    /// The loads that have ended since the last call, each with its partition: `None` for
    /// one that failed (logged here), for the caller to start again.
    pub(super) async fn finished(&mut self) -> Vec<(TopicPartition, Option<Loaded>)> {
        let done: Vec<TopicPartition> = self
            .running
            .iter()
            .filter(|(_, loading)| loading.task.is_finished())
            .map(|(key, _)| key.clone())
            .collect();
        let mut finished = Vec::with_capacity(done.len());
        for key in done {
            let loading = self.running.remove(&key).expect("listed above");
            let loaded = match loading.task.await {
                Ok(Ok(loaded)) => loaded,
                Ok(Err(error)) => {
                    tracing::warn!(%error, partition = %key, "Cannot load the assigned partition's state; trying again.");
                    None
                }
                Err(error) => {
                    tracing::error!(%error, partition = %key, "A partition load crashed; trying again.");
                    None
                }
            };
            finished.push((key, loaded));
        }
        finished
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use object_store::ObjectStore;
    use pulse_core::{Engine, EngineSettings};

    use super::*;
    use crate::partition_numbers::PartitionNumbers;
    use crate::state_store::decorated::Decorated;
    use crate::state_store::watched::{self, Watched};
    use crate::state_store::{Offsets, TopicSizes};

    const PARTITIONS: i32 = 4;

    fn keys() -> Vec<TopicPartition> {
        (0..PARTITIONS)
            .map(|p| TopicPartition::new("events", p))
            .collect()
    }

    fn no_fallback() -> Fallback {
        Arc::new(|_| None)
    }

    /// A store whose partitions a previous owner saved at offset 10 + partition.
    async fn saved(objects: &Arc<Decorated<Watched>>) {
        let settings = EngineSettings {
            partitions: PARTITIONS as usize,
            ..EngineSettings::default()
        };
        let engine = Engine::new(settings, 1_900_000_000_000);
        let offsets: Offsets = keys()
            .into_iter()
            .map(|key| {
                let next = 10 + i64::from(key.partition);
                (key, next)
            })
            .collect();
        let sizes: TopicSizes = [("events".to_owned(), PARTITIONS as u32)].into();
        StateStore::over(objects.clone())
            .save(
                engine.state(),
                &PartitionNumbers::from_keys(keys()),
                &offsets,
                &sizes,
                1,
            )
            .await
            .unwrap();
    }

    /// Every load, once all have ended (the runtime is this test's only thread: yielding
    /// lets the loads run).
    async fn all_finished(loads: &mut Loads) -> Vec<(TopicPartition, Option<Loaded>)> {
        let mut finished = Vec::new();
        while !loads.running.is_empty() {
            tokio::task::yield_now().await;
            finished.extend(loads.finished().await);
        }
        finished.sort_by(|a, b| a.0.cmp(&b.0));
        finished
    }

    #[tokio::test]
    async fn partitions_assigned_together_load_at_once_and_each_at_its_offset() {
        let objects = watched::store();
        saved(&objects).await;
        objects.around().count_reads_from_now();
        let store = StateStore::over(objects.clone());
        let mut loads = Loads::default();
        for key in keys() {
            loads.start(&store, key, no_fallback());
        }
        let finished = all_finished(&mut loads).await;
        // Overlapping reads: a load one after another never has two under way.
        assert!(
            objects.around().most_reading() > 1,
            "the loads ran one after another"
        );
        assert!(objects.around().most_reading() <= CONCURRENCY);
        for ((key, result), expected) in finished.into_iter().zip(keys()) {
            assert_eq!(key, expected);
            let loaded = result.expect("loaded");
            let taken = loaded.taken.expect("saved");
            assert_eq!(taken.offset, Some(10 + i64::from(key.partition)));
            assert_eq!(store.epoch(&key), Some(taken.epoch));
        }
    }

    /// The gap: a partition revoked while its load runs. The load ends without a
    /// result and holds no claim, and nothing of it lands after the revocation: the member
    /// the group gave the partition to next owns it, its saves are not refused.
    #[tokio::test]
    async fn a_partition_revoked_while_loading_leaves_the_new_owner_its_claim() {
        let objects = watched::store();
        saved(&objects).await;
        let here = StateStore::over(objects.clone());
        let key = TopicPartition::new("events", 1);
        // The store is slow to answer: the claim is under way when the revocation comes.
        objects.around().answer(false);
        let mut loads = Loads::default();
        loads.start(&here, key.clone(), no_fallback());
        while objects.around().holding() == 0 {
            tokio::task::yield_now().await;
        }
        let answer_later = async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            objects.around().answer(true);
        };
        let (cancelled, ()) = tokio::join!(loads.cancel(&here, &key), answer_later);
        assert!(cancelled);
        assert!(!loads.cancel(&here, &key).await, "cancelled once");
        assert_eq!(here.epoch(&key), None, "no claim kept");
        assert!(loads.finished().await.is_empty(), "no result to install");

        // The member the group gave the partition to: it claims above the revoked load's
        // claim (which had landed before the revocation ended), and its saves stand.
        let next = StateStore::over(objects.clone());
        let taken = next.claim(&key).await.unwrap().expect("saved");
        assert_eq!((taken.offset, taken.epoch), (Some(11), 3));
        let offsets: Offsets = [(key.clone(), 99)].into();
        let state = pulse_core::EngineState {
            router: taken.router,
            partitions: taken.state.into_iter().collect(),
        };
        let numbers = PartitionNumbers::from_keys([key.clone()]);
        next.save(state, &numbers, &offsets, &TopicSizes::new(), 2)
            .await
            .expect("the new owner's save is not refused");
        let shown = StateStore::over(objects).inspect().await.unwrap().unwrap();
        assert_eq!(shown.offsets.get(&key), Some(&99));
    }

    /// A load revoked while it waits for its turn sends nothing at all.
    #[tokio::test]
    async fn a_partition_revoked_before_its_load_began_writes_nothing() {
        let objects = watched::store();
        saved(&objects).await;
        let listed = |objects: Arc<Decorated<Watched>>| async move {
            let listed: Vec<_> = objects
                .list(None)
                .map(|m| m.unwrap().location)
                .collect()
                .await;
            listed
        };
        let before = listed(objects.clone()).await;
        let here = StateStore::over(objects.clone());
        let key = TopicPartition::new("events", 1);
        // Every turn taken: by the loads of the partitions assigned before this one.
        let mut loads = Loads {
            permits: Arc::new(Semaphore::new(0)),
            running: HashMap::default(),
        };
        loads.start(&here, key.clone(), no_fallback());
        tokio::task::yield_now().await;
        assert!(loads.cancel(&here, &key).await);
        assert_eq!(listed(objects).await, before, "nothing written");
        assert_eq!(here.epoch(&key), None);
    }
}
