//! A partition's state as checkpoint format 3 saved it, read (never written) so that an
//! upgrade keeps its month.
//!
//! Format 4 added, at the end of a partition's inputs, the copies of upstream records it
//! applied ([`PartitionInputs::upstream`], for `kafka.repartition`). postcard writes a
//! struct as its fields one after the other, with nothing to say one is missing, so a
//! format 3 image cannot be read with today's layout; everything else is laid out as it
//! was. A format 3 partition has applied no copy it could tell apart, so it starts with
//! none: copies made by a pulse before format 4 carry no position and are applied as they
//! always were. It reads into format 4's layout ([`PartitionStateV4`]), which reads into
//! today's.

use serde::Deserialize;

use crate::partition::{Counters, PartitionInputs};
use crate::partition_v4::{KpiStateV4, PartitionStateV4};

/// [`crate::partition::PartitionState`] in format 3.
#[derive(Debug, Deserialize)]
pub struct PartitionStateV3 {
    pub(crate) partition: u32,
    pub(crate) inputs: InputsV3,
    pub(crate) kpis: KpiStateV4,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InputsV3 {
    pub(crate) counters: Counters,
    pub(crate) max_event_ms: Option<i64>,
}

impl From<PartitionStateV3> for PartitionStateV4 {
    fn from(v3: PartitionStateV3) -> PartitionStateV4 {
        PartitionStateV4 {
            partition: v3.partition,
            inputs: PartitionInputs {
                counters: v3.inputs.counters,
                max_event_ms: v3.inputs.max_event_ms,
                upstream: Default::default(),
            },
            kpis: v3.kpis,
        }
    }
}
