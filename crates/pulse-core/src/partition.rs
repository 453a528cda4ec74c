//! One input partition: the unit of state, checkpoint and hand-over.
//!
//! A [`PartitionState`] holds everything derived from one partition of the input: what the
//! router counted of it ([`PartitionInputs`]) and its KPI state ([`KpiState`]: each KPI
//! family's part, see [`crate::families`]). It saves and restores on its own, and
//! partitions combine: their summaries merge ([`Summary::merge`]), because HLL union is
//! lossless and exact statistics add, so the global view is the merge of every partition,
//! however they are spread over threads or machines.
//!
//! A [`Partition`] is the live form, owned by one worker thread, no locks.

use serde::{Deserialize, Serialize};

use crate::event::{EventKind, PartitionEvent, Rejection};
use crate::families::{KpiCaches, KpiState, Summary};
use crate::family::Rules;
use crate::settings::EngineSettings;
use crate::time::Day;
use crate::upstream::AppliedUpstream;
use crate::windows::SummaryPoint;

/// Counters of one partition, exact; the stream's are their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub accepted: u64,
    /// Indexed like [`Rejection::ALL`].
    pub rejected: [u64; Rejection::ALL.len()],
    pub late: u64,
    pub future: u64,
    /// Applied to the windows, but too late (past the allowed lateness) to join a session.
    pub late_for_sessions: u64,
    /// Indexed like [`EventKind::ALL`].
    pub by_kind: [u64; EventKind::ALL.len()],
    /// `feature_used` events that named no feature.
    pub feature_missing: u64,
}

impl Counters {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    pub fn reject(&mut self, reason: Rejection) {
        self.rejected[reason as usize] += 1;
    }

    pub fn add(&mut self, other: &Counters) {
        self.accepted += other.accepted;
        for (mine, theirs) in self.rejected.iter_mut().zip(&other.rejected) {
            *mine += theirs;
        }
        self.late += other.late;
        self.future += other.future;
        self.late_for_sessions += other.late_for_sessions;
        for (mine, theirs) in self.by_kind.iter_mut().zip(&other.by_kind) {
            *mine += theirs;
        }
        self.feature_missing += other.feature_missing;
    }

    /// Every count, for checking a restored state.
    pub(crate) fn all(&self) -> impl Iterator<Item = u64> + '_ {
        [
            self.accepted,
            self.late,
            self.future,
            self.late_for_sessions,
            self.feature_missing,
        ]
        .into_iter()
        .chain(self.rejected)
        .chain(self.by_kind)
    }
}

/// What the router knows of one input partition: part of that partition's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInputs {
    pub counters: Counters,
    /// The newest accepted event time of the partition.
    pub max_event_ms: Option<i64>,
    /// Of a partition filled by copying (`kafka.repartition`): the copies applied, by where
    /// they came from, so that a second copy of a record is dropped.
    pub upstream: AppliedUpstream,
}

/// The counters of some partitions, added up.
pub fn total_counters<'a>(inputs: impl IntoIterator<Item = &'a PartitionInputs>) -> Counters {
    let mut total = Counters::default();
    inputs.into_iter().for_each(|i| total.add(&i.counters));
    total
}

/// Everything one partition knows: what a checkpoint stores per partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionState {
    /// Its number: the Kafka partition, or the virtual one of a replay.
    pub partition: u32,
    pub inputs: PartitionInputs,
    pub kpis: KpiState,
}

/// A partition's KPI state, the caches kept beside it, and the rules it runs with.
#[derive(Debug, Clone)]
pub struct Partition {
    state: KpiState,
    caches: KpiCaches,
    rules: Rules,
}

impl Partition {
    pub fn new(settings: &EngineSettings) -> Partition {
        let rules = Rules::of(settings);
        Partition {
            state: KpiState::new(&rules),
            caches: KpiCaches::default(),
            rules,
        }
    }

    /// Resumes a partition from saved state (indexes rebuilt, rings fitted to the
    /// retention).
    pub fn with_state(settings: &EngineSettings, mut state: KpiState) -> Partition {
        let rules = Rules::of(settings);
        state.restore(&rules);
        Partition {
            state,
            caches: KpiCaches::default(),
            rules,
        }
    }

    pub fn apply(&mut self, event: &PartitionEvent) {
        self.state.apply(&mut self.caches, event, &self.rules);
    }

    /// Closes the sessions that are final once the watermark has reached `watermark_ms`.
    pub fn advance(&mut self, watermark_ms: i64) {
        self.state.advance(watermark_ms, &self.rules);
    }

    /// Closes every open session: the end of a replay.
    pub fn close_all(&mut self) {
        self.state.close_all(&self.rules);
    }

    /// This partition's contribution to a snapshot as of `at`, reusing the unions of past
    /// days kept since the last one when they are still valid.
    pub fn summarize(&mut self, at: SummaryPoint) -> Summary {
        self.state.summarize(&mut self.caches, at, &self.rules)
    }

    pub fn state(&self) -> &KpiState {
        &self.state
    }

    pub fn into_state(self) -> KpiState {
        self.state
    }
}

impl KpiState {
    /// The state of a partition that has seen nothing.
    pub fn empty(settings: &EngineSettings) -> KpiState {
        KpiState::new(&Rules::of(settings))
    }

    /// Folds this state as of `at` afresh, with no kept unions (a rollup's past day, a
    /// test's reference).
    pub fn summarize_afresh(&self, at: SummaryPoint, settings: &EngineSettings) -> Summary {
        self.summarize(&mut KpiCaches::default(), at, &Rules::of(settings))
    }

    /// Whether the partition holds `day` (every accepted event is activity, so this says
    /// whether it knows the day at all).
    pub fn holds_day(&self, day: Day) -> bool {
        self.activity.holds(day)
    }
}
