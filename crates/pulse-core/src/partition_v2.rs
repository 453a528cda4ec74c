//! A partition's state as checkpoint format 2 saved it, read (never written) so that an
//! upgrade keeps its month.
//!
//! Format 3 added the outcome rejection reasons to a partition's counters
//! ([`Counters::rejected`]), which postcard writes as a tuple of fixed length, so a format 2
//! image cannot be read with today's layout; everything else is laid out as it was. The
//! reasons format 2 knew are the first of [`Rejection::ALL`], in the same order; the others
//! start at 0. It reads into format 3's layout ([`PartitionStateV3`]), which reads into
//! today's.

use serde::Deserialize;

use crate::event::{EventKind, Rejection};
use crate::partition::Counters;
use crate::partition_v3::{InputsV3, PartitionStateV3};
use crate::partition_v4::KpiStateV4;

/// The rejection reasons format 2 counted.
const REASONS_V2: usize = 11;

/// [`crate::partition::PartitionState`] in format 2.
#[derive(Debug, Deserialize)]
pub struct PartitionStateV2 {
    partition: u32,
    inputs: InputsV2,
    kpis: KpiStateV4,
}

#[derive(Debug, Deserialize)]
struct InputsV2 {
    counters: CountersV2,
    max_event_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct CountersV2 {
    accepted: u64,
    rejected: [u64; REASONS_V2],
    late: u64,
    future: u64,
    late_for_sessions: u64,
    by_kind: [u64; EventKind::ALL.len()],
    feature_missing: u64,
}

impl From<PartitionStateV2> for PartitionStateV3 {
    fn from(v2: PartitionStateV2) -> PartitionStateV3 {
        let c = v2.inputs.counters;
        let mut rejected = [0; Rejection::ALL.len()];
        rejected[..REASONS_V2].copy_from_slice(&c.rejected);
        PartitionStateV3 {
            partition: v2.partition,
            inputs: InputsV3 {
                counters: Counters {
                    accepted: c.accepted,
                    rejected,
                    late: c.late,
                    future: c.future,
                    late_for_sessions: c.late_for_sessions,
                    by_kind: c.by_kind,
                    feature_missing: c.feature_missing,
                },
                max_event_ms: v2.inputs.max_event_ms,
            },
            kpis: v2.kpis,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reasons_of_format_2_keep_their_places() {
        assert_eq!(Rejection::ALL[REASONS_V2 - 1], Rejection::UserIdTooLong);
        assert_eq!(Rejection::ALL[REASONS_V2], Rejection::InvalidScore);
    }
}
