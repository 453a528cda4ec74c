//! A partition's state as checkpoint format 4 saved it, read (never written) so that an
//! upgrade keeps its month and its open sessions.
//!
//! Format 5 moved sessions by value into the sessions family: its open events carry their
//! dimension values, and the breakdowns family counts the sessions that family closes instead
//! of keeping a second session table ([`crate::families::sessions`]). postcard writes a
//! struct as its fields one after the other, with nothing to say which, so the two
//! families' format 4 images cannot be read with today's layouts; every other image, and
//! the partition around them, is laid out as it was. The two tables of format 4 held the
//! same events (the breakdowns' took every event the sessions family's did, once a
//! dimension was configured): the one table takes the breakdowns' value ids key by key, and
//! a key the two disagree on (a dimension configured by a restart while its sessions were
//! open) gets `__none__`, as such a restart gives today. Formats 3 and 2 read their families
//! as format 4 does.

use serde::{Deserialize, Deserializer};

use crate::dimensions::{DimIds, MAX_DIMENSIONS, NONE_ID};
use crate::families::breakdowns::{BreakdownsState, DayValues};
use crate::families::sessions::{ClosedStats, OpenSessions, SessionsState};
use crate::families::{FamilyImage, KpiState};
use crate::partition::{PartitionInputs, PartitionState};
use crate::ring::DayRing;
use crate::session_stats::SessionStats;
use crate::sessions::SessionTable;

/// [`PartitionState`] in format 4.
#[derive(Debug, Deserialize)]
pub struct PartitionStateV4 {
    pub(crate) partition: u32,
    pub(crate) inputs: PartitionInputs,
    pub(crate) kpis: KpiStateV4,
}

/// A partition's KPI state as formats 4, 3 and 2 saved it, read into today's.
#[derive(Debug)]
pub struct KpiStateV4(pub(crate) KpiState);

/// The sessions family's state in format 4: open events without value ids.
#[derive(Deserialize)]
struct SessionsV4 {
    table: SessionTable,
    closed: ClosedStats,
}

/// The breakdowns family's state in format 4, with its own session table.
#[derive(Deserialize)]
struct BreakdownsV4 {
    keys: Vec<u64>,
    days: DayRing<DayValues>,
    sessions: SessionTable<DimIds>,
    session_days: DayRing<Vec<Vec<SessionStats>>>,
    dropped: u64,
}

impl<'de> Deserialize<'de> for KpiStateV4 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KpiStateV4, D::Error> {
        use serde::de::Error;
        let mut images = Vec::<FamilyImage>::deserialize(deserializer)?;
        let sessions: Option<SessionsV4> = take_image(&mut images, "sessions")?;
        let breakdowns: Option<BreakdownsV4> = take_image(&mut images, "breakdowns")?;
        let mut state = KpiState::from_images(images).map_err(D::Error::custom)?;
        if let Some(sessions) = sessions {
            let table = match &breakdowns {
                Some(breakdowns) if !breakdowns.keys.is_empty() => OpenSessions::ByValue {
                    keys: breakdowns.keys.clone(),
                    table: sessions
                        .table
                        .tagged_as(&breakdowns.sessions, [NONE_ID; MAX_DIMENSIONS]),
                },
                _ => OpenSessions::Plain(sessions.table),
            };
            state.sessions = SessionsState {
                table,
                closed: sessions.closed,
            };
        }
        if let Some(old) = breakdowns {
            state.breakdowns = BreakdownsState {
                keys: old.keys,
                days: old.days,
                session_days: old.session_days,
                dropped: old.dropped,
            };
        }
        Ok(KpiStateV4(state))
    }
}

/// Takes the image of `family` out of `images` and reads it, if there is one.
fn take_image<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    images: &mut Vec<FamilyImage>,
    family: &str,
) -> Result<Option<T>, E> {
    let Some(at) = images.iter().position(|image| image.family == family) else {
        return Ok(None);
    };
    let image = images.remove(at);
    postcard::from_bytes(&image.image)
        .map(Some)
        .map_err(|e| E::custom(format!("KPI family {family:?} (format 4): {e}")))
}

impl From<PartitionStateV4> for PartitionState {
    fn from(v4: PartitionStateV4) -> PartitionState {
        PartitionState {
            partition: v4.partition,
            inputs: v4.inputs,
            kpis: v4.kpis.0,
        }
    }
}
