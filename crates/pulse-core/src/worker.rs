//! A worker: the partitions one thread owns, and what it does with them.
//!
//! Worker `w` of `n` owns the partitions `p` with `p mod n = w` ([`owner_of`]), so a
//! partition's events always reach the same thread and its state needs no lock. The
//! single-threaded [`Engine`](crate::Engine) is one worker owning every partition; the
//! runtime in pulse-ingest runs `n` of them on their own threads. Either way the same
//! code applies events, closes sessions and summarises: a worker answers a snapshot with
//! the merge of its partitions' summaries, so the merger receives one summary per worker
//! however many partitions there are.

use crate::event::PartitionEvent;
use crate::families::{KpiState, Summary};
use crate::family::Rules;
use crate::partition::Partition;
use crate::settings::EngineSettings;
use crate::windows::SummaryPoint;

/// The worker that owns `partition` among `workers`.
pub fn owner_of(partition: usize, workers: usize) -> usize {
    partition % workers
}

#[derive(Debug, Clone)]
pub struct Worker {
    settings: EngineSettings,
    rules: Rules,
    /// Partition `p` is at `p / workers` (its owner is implied); created on first use, and
    /// boxed so that slots of partitions with no state cost a pointer.
    partitions: Vec<Option<Box<Partition>>>,
    index: usize,
    workers: usize,
}

impl Worker {
    /// Worker `index` of `settings.shards`, owning no partition state yet.
    pub fn new(settings: &EngineSettings, index: usize) -> Worker {
        Worker {
            settings: settings.clone(),
            rules: Rules::of(settings),
            partitions: Vec::new(),
            index,
            workers: settings.shards,
        }
    }

    /// Takes a saved partition state in; the caller hands each to its owner.
    pub fn restore(&mut self, partition: usize, state: KpiState) {
        debug_assert_eq!(owner_of(partition, self.workers), self.index);
        *self.slot(partition) = Some(Box::new(Partition::with_state(&self.settings, state)));
    }

    /// Gives a partition's state up (its instance no longer owns it) and empties its slot.
    pub fn take(&mut self, partition: usize) -> Option<KpiState> {
        debug_assert_eq!(owner_of(partition, self.workers), self.index);
        let slot = self.partitions.get_mut(partition / self.workers)?;
        slot.take().map(|p| p.into_state())
    }

    /// Applies events of the partitions this worker owns, then closes the sessions that are
    /// final at `watermark_ms`.
    pub fn apply(&mut self, events: &[PartitionEvent], watermark_ms: Option<i64>) {
        // A batch holds runs of one partition's events (a Kafka fetch is per partition; a
        // replay has few partitions per worker): look the partition up once per run.
        let mut run = events;
        while let Some(first) = run.first() {
            let number = first.partition;
            let end = run
                .iter()
                .position(|e| e.partition != number)
                .unwrap_or(run.len());
            let partition = self.partition(number as usize);
            run[..end].iter().for_each(|event| partition.apply(event));
            run = &run[end..];
        }
        if let Some(watermark) = watermark_ms {
            self.advance(watermark);
        }
    }

    /// Closes the sessions that are final once the watermark has reached `watermark_ms`.
    pub fn advance(&mut self, watermark_ms: i64) {
        self.owned_mut().for_each(|p| p.advance(watermark_ms));
    }

    /// Closes every open session: the end of a replay.
    pub fn close_all(&mut self) {
        self.owned_mut().for_each(Partition::close_all);
    }

    /// The merge of every owned partition's summary as of `at`.
    pub fn summarize(&mut self, at: SummaryPoint) -> Summary {
        let rules = self.rules.clone();
        let mut merged = Summary::default();
        for (_, summary) in self.summarize_each(at) {
            merged.merge(summary, &rules);
        }
        merged
    }

    /// Each owned partition's summary as of `at`, with its number: what the global view
    /// publishes partition by partition.
    pub fn summarize_each(&mut self, at: SummaryPoint) -> Vec<(usize, Summary)> {
        let (index, workers) = (self.index, self.workers);
        self.partitions
            .iter_mut()
            .enumerate()
            .filter_map(|(slot, p)| Some((slot * workers + index, p.as_mut()?.summarize(at))))
            .collect()
    }

    /// Copies of the owned partitions' states, with their partition numbers.
    pub fn export(&self) -> Vec<(usize, KpiState)> {
        self.partitions
            .iter()
            .enumerate()
            .filter_map(|(slot, p)| {
                let partition = slot * self.workers + self.index;
                Some((partition, p.as_ref()?.state().clone()))
            })
            .collect()
    }

    fn partition(&mut self, partition: usize) -> &mut Partition {
        let settings = &self.settings;
        let slot = Self::slot_of(&mut self.partitions, partition, self.workers);
        slot.get_or_insert_with(|| Box::new(Partition::new(settings)))
    }

    fn slot(&mut self, partition: usize) -> &mut Option<Box<Partition>> {
        Self::slot_of(&mut self.partitions, partition, self.workers)
    }

    fn slot_of(
        partitions: &mut Vec<Option<Box<Partition>>>,
        partition: usize,
        workers: usize,
    ) -> &mut Option<Box<Partition>> {
        let slot = partition / workers;
        if partitions.len() <= slot {
            partitions.resize_with(slot + 1, || None);
        }
        &mut partitions[slot]
    }

    fn owned_mut(&mut self) -> impl Iterator<Item = &mut Partition> {
        self.partitions.iter_mut().flatten().map(Box::as_mut)
    }
}
