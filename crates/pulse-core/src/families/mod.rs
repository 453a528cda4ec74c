//! The KPI families: the [`Family`] trait, one module per family, and the one list that
//! registers them.
//!
//! A family is everything pulse computes about one kind of KPI: how an event updates it,
//! what it keeps per partition, how two partitions' contributions merge, its part of the
//! JSON snapshot, its Prometheus series and its warehouse rollup records. The engine, the
//! snapshot builder, the exporter and the rollup writer know families only through the
//! trait and the list, so adding one is a module and a line (the recipe is in
//! `ARCHITECTURE.md`).
//!
//! Why a trait with associated types and a generated list, not trait objects: the state of
//! every family of a partition lives inline in one struct that serialises as a whole,
//! events reach every family with no virtual call and no allocation, and each family's
//! snapshot section is a typed struct that serialises at the snapshot's top level.
//!
//! The list at the bottom is the only place that names them all: from it come a partition's KPI state
//! ([`KpiState`], one field per family, saved in checkpoints), the caches kept beside it,
//! a partition's contribution to a snapshot ([`Summary`]), the snapshot's sections
//! ([`Sections`], each family's flattened into the snapshot's top level), and the loops
//! that apply an event, close sessions, summarise, merge, build sections, export series
//! and write rollups. A family is listed after the families whose sections it reads.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::event::PartitionEvent;
use crate::family::{RollupOut, Rules, SectionContext, SeriesDef, SeriesOut};
use crate::windows::SummaryPoint;
use sessions::ClosedByValue;

pub trait Family {
    /// Its part of a partition's state: saved in checkpoints.
    /// `Default` is an empty state that [`Family::restore`] makes fit: what a family starts
    /// from when a state image written before it existed is loaded.
    type State: Clone + std::fmt::Debug + Default + Serialize + DeserializeOwned + Send + 'static;
    /// Kept beside the state between snapshots and never saved (unions of past days).
    type Cache: Clone + std::fmt::Debug + Default + Send + 'static;
    /// One partition's (or several partitions') contribution to a snapshot.
    type Summary: Clone + std::fmt::Debug + Default + Send + 'static;
    /// Its part of the KPI snapshot, serialised at the snapshot's top level.
    type Section: Clone
        + std::fmt::Debug
        + Default
        + PartialEq
        + Serialize
        + DeserializeOwned
        + Send
        + Sync;

    /// Its Prometheus series: names, types, labels and help.
    const SERIES: &'static [SeriesDef];

    fn new_state(rules: &Rules) -> Self::State;
    /// Makes a restored state fit the rules (rings re-slotted, indexes rebuilt).
    fn restore(state: &mut Self::State, rules: &Rules);
    fn apply(
        state: &mut Self::State,
        cache: &mut Self::Cache,
        event: &PartitionEvent,
        rules: &Rules,
    );
    /// An event older than the retention ([`PartitionEvent::in_retention`] false): only a
    /// family that keeps a longer history takes it; the rest ignore it, as they always did.
    fn apply_late(
        _state: &mut Self::State,
        _cache: &mut Self::Cache,
        _event: &PartitionEvent,
        _rules: &Rules,
    ) {
    }
    /// The watermark reached `watermark_ms`: what is final may close. `by_value` carries
    /// the sessions closed with their values from the sessions family to the breakdowns
    /// family, listed after it.
    fn advance(
        _state: &mut Self::State,
        _watermark_ms: i64,
        _rules: &Rules,
        _by_value: &mut ClosedByValue,
    ) {
    }
    /// The end of a finite input: everything open closes (`by_value` as for `advance`).
    fn close_all(_state: &mut Self::State, _rules: &Rules, _by_value: &mut ClosedByValue) {}
    fn summarize(
        state: &Self::State,
        cache: &mut Self::Cache,
        at: SummaryPoint,
        rules: &Rules,
    ) -> Self::Summary;
    /// `into` becomes the summary of both (HLL union, exact statistics add).
    fn merge(into: &mut Self::Summary, other: Self::Summary, rules: &Rules);
    fn estimated_bytes(state: &Self::State, cache: &Self::Cache) -> usize;
    /// Refuses a restored state no stream could have produced (see
    /// [`crate::EngineState::validate`]); adds its counts to `counts`.
    fn check(_state: &Self::State, _counts: &mut Vec<u64>) -> Result<(), String> {
        Ok(())
    }

    /// Its section, from the summaries (one per worker, to be unioned) and the sections of
    /// the families listed before it (a ratio may need another family's count).
    fn section(summaries: &[Summary], earlier: &Sections, cx: &SectionContext<'_>)
    -> Self::Section;
    /// Its samples, from the snapshot's sections.
    fn series(sections: &Sections, out: &mut dyn SeriesOut);
    /// Its rollup records of one day, from that day's sections and summaries.
    fn rollups(_sections: &Sections, _summaries: &[Summary], _out: &mut RollupOut<'_>) {}
}

pub mod activity;
pub mod breakdown_features;
pub mod breakdowns;
pub mod features;
pub mod funnels;
pub mod outcomes;
pub mod retention;
pub mod sessions;
pub mod stickiness;

/// One family's part of a partition's state, as saved: its name and its own image.
#[derive(Serialize, Deserialize)]
pub(crate) struct FamilyImage {
    pub(crate) family: String,
    #[serde(with = "serde_bytes_image")]
    pub(crate) image: Vec<u8>,
}

/// An image as one byte string (postcard's wire format for bytes), not a sequence of `u8`.
mod serde_bytes_image {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        crate::sketch::serde_bytes_compat::deserialize(d)
    }
}

macro_rules! families {
    ($($field:ident: $family:ty),+ $(,)?) => {
        /// Every family's part of one partition's state. Saved as one image per family, by
        /// name (`FamilyImage`): a family added later starts empty on an older state, and
        /// a state holding a family this build does not know is refused by name.
        #[derive(Debug, Clone)]
        pub struct KpiState {
            $(pub $field: <$family as Family>::State,)+
        }

        impl Serialize for KpiState {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::Error;
                let images = vec![$(
                    FamilyImage {
                        family: stringify!($field).into(),
                        image: postcard::to_allocvec(&self.$field).map_err(S::Error::custom)?,
                    },
                )+];
                images.serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for KpiState {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<KpiState, D::Error> {
                use serde::de::Error;
                let images = Vec::<FamilyImage>::deserialize(deserializer)?;
                KpiState::from_images(images).map_err(D::Error::custom)
            }
        }

        impl KpiState {
            /// The state of the families' images; a family without one starts empty.
            pub(crate) fn from_images(images: Vec<FamilyImage>) -> Result<KpiState, String> {
                let mut state = KpiState {
                    $($field: Default::default(),)+
                };
                let mut seen = Vec::with_capacity(images.len());
                for FamilyImage { family, image } in images {
                    if seen.contains(&family) {
                        return Err(format!("KPI family {family:?} saved twice"));
                    }
                    match family.as_str() {
                        $(stringify!($field) => {
                            state.$field = postcard::from_bytes(&image)
                                .map_err(|e| format!("KPI family {family:?}: {e}"))?;
                        })+
                        _ => {
                            return Err(format!(
                                "KPI family {family:?} is not known to this pulse: the state \
                                 was written by a newer one"
                            ))
                        }
                    }
                    seen.push(family);
                }
                Ok(state)
            }
        }

        /// What families keep between snapshots beside a partition's state (never saved).
        #[derive(Debug, Clone, Default)]
        pub struct KpiCaches {
            $(pub $field: <$family as Family>::Cache,)+
        }

        /// One partition's (or several partitions') contribution to a snapshot.
        #[derive(Debug, Clone, Default)]
        pub struct Summary {
            /// Memory held by the partitions summarised, caches included.
            pub estimated_bytes: u64,
            $(pub $field: <$family as Family>::Summary,)+
        }

        /// Every family's section of the KPI snapshot.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct Sections {
            $(#[serde(flatten)] pub $field: <$family as Family>::Section,)+
        }

        impl KpiState {
            pub fn new(rules: &Rules) -> KpiState {
                KpiState { $($field: <$family as Family>::new_state(rules),)+ }
            }

            /// Makes a restored state fit the rules.
            pub fn restore(&mut self, rules: &Rules) {
                $(<$family as Family>::restore(&mut self.$field, rules);)+
            }

            pub fn apply(&mut self, caches: &mut KpiCaches, event: &PartitionEvent, rules: &Rules) {
                if event.in_retention {
                    $(<$family as Family>::apply(&mut self.$field, &mut caches.$field, event, rules);)+
                } else {
                    $(<$family as Family>::apply_late(&mut self.$field, &mut caches.$field, event, rules);)+
                }
            }

            pub fn advance(&mut self, watermark_ms: i64, rules: &Rules) {
                let mut by_value = ClosedByValue::new();
                $(<$family as Family>::advance(&mut self.$field, watermark_ms, rules, &mut by_value);)+
            }

            pub fn close_all(&mut self, rules: &Rules) {
                let mut by_value = ClosedByValue::new();
                $(<$family as Family>::close_all(&mut self.$field, rules, &mut by_value);)+
            }

            pub fn summarize(&self, caches: &mut KpiCaches, at: SummaryPoint, rules: &Rules) -> Summary {
                Summary {
                    estimated_bytes: self.estimated_bytes(caches) as u64,
                    $($field: <$family as Family>::summarize(&self.$field, &mut caches.$field, at, rules),)+
                }
            }

            pub fn estimated_bytes(&self, caches: &KpiCaches) -> usize {
                0 $(+ <$family as Family>::estimated_bytes(&self.$field, &caches.$field))+
            }

            /// Refuses what no stream could have produced; adds every count to `counts`.
            pub fn check(&self, counts: &mut Vec<u64>) -> Result<(), String> {
                $(<$family as Family>::check(&self.$field, counts)?;)+
                Ok(())
            }
        }

        impl Summary {
            /// Takes `other` in: the summary of both partitions (or sets of partitions).
            pub fn merge(&mut self, other: Summary, rules: &Rules) {
                self.estimated_bytes += other.estimated_bytes;
                $(<$family as Family>::merge(&mut self.$field, other.$field, rules);)+
            }

            /// Each family's part as an image of its own, by name: the pieces a partition's
            /// summary is published in (see [`crate::global_view`]), so that a family whose
            /// summary did not change is not sent again.
            pub fn pieces(&self) -> Vec<(&'static str, Vec<u8>)> {
                vec![$(
                    (
                        stringify!($field),
                        postcard::to_allocvec(&self.$field).expect("writing to a Vec cannot fail"),
                    ),
                )+]
            }

            /// Takes one family's piece in, replacing that family's part; `Ok(false)` for a
            /// family this build does not know (a newer pulse published it).
            pub fn set_piece(&mut self, family: &str, image: &[u8]) -> Result<bool, postcard::Error> {
                match family {
                    $(stringify!($field) => {
                        self.$field = postcard::from_bytes(image)?;
                        Ok(true)
                    })+
                    _ => Ok(false),
                }
            }
        }

        impl Sections {
            /// Every family's section, in the order listed, from the summaries of every
            /// worker (or partition).
            pub fn build(summaries: &[Summary], cx: &SectionContext<'_>) -> Sections {
                let mut sections = Sections::default();
                $(
                    let section = <$family as Family>::section(summaries, &sections, cx);
                    sections.$field = section;
                )+
                sections
            }

            pub fn series(&self, out: &mut dyn SeriesOut) {
                $(<$family as Family>::series(self, out);)+
            }

            pub fn rollups(&self, summaries: &[Summary], out: &mut RollupOut<'_>) {
                $(<$family as Family>::rollups(self, summaries, out);)+
            }
        }

        /// Every family's name, as its state is saved under (see [`KpiState`]).
        pub const NAMES: &[&str] = &[$(stringify!($field),)+];

        /// Every family's series, in the order listed.
        pub const SERIES: &[&[SeriesDef]] = &[$(<$family as Family>::SERIES,)+];
    };
}

families! {
    activity: activity::Activity,
    sessions: sessions::Sessions,
    features: features::Features,
    stickiness: stickiness::Stickiness,
    retention: retention::Retention,
    outcomes: outcomes::Outcomes,
    breakdowns: breakdowns::Breakdowns,
    breakdown_features: breakdown_features::BreakdownFeatures,
    funnels: funnels::Funnels,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::event::EventKind;
    use crate::features::FeatureId;
    use crate::partition::Partition;
    use crate::settings::EngineSettings;
    use crate::sketch::{DistinctSketch, DistinctUnion, SketchShape, UserHash};
    use crate::time::Day;
    use crate::windows::{SPAN, SketchWindows, WINDOWS};

    #[derive(Debug, Clone)]
    enum Step {
        /// `users` users (from `first`) active `days_ago` days before today.
        Activity {
            first: u32,
            users: u32,
            days_ago: Day,
            signup: bool,
            feature: Option<u16>,
        },
        /// A snapshot, after the clock moved on by some days.
        Snapshot { days_later: Day },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u32..20_000, 1u32..3_000, 0..(SPAN as Day + 3), any::<bool>(), proptest::option::of(0u16..3))
                .prop_map(|(first, users, days_ago, signup, feature)| Step::Activity { first, users, days_ago, signup, feature }),
            2 => (0..3 as Day).prop_map(|days_later| Step::Snapshot { days_later }),
        ]
    }

    fn estimates(windows: &SketchWindows) -> Vec<Option<f64>> {
        windows
            .current
            .iter()
            .chain(&windows.previous)
            .map(|s| s.as_ref().map(DistinctSketch::estimate))
            .collect()
    }

    fn folded(summary: &Summary) -> Vec<Vec<Option<f64>>> {
        [&summary.activity.active, &summary.activity.signups]
            .into_iter()
            .chain(&summary.features.features)
            .map(estimates)
            .collect()
    }

    /// Every window unioned day by day: what the summary must equal.
    fn folded_day_by_day<'a>(
        state: &'a KpiState,
        today: Day,
        shape: SketchShape,
        features: usize,
    ) -> Vec<Vec<Option<f64>>> {
        let window =
            |pick: &dyn Fn(Day) -> Option<&'a DistinctSketch>, first: usize, length: usize| {
                let mut union = DistinctUnion::new(shape);
                let mut any = false;
                for offset in first..first + length {
                    if let Some(sketch) = pick(today - offset as Day) {
                        union.add(sketch);
                        any = true;
                    }
                }
                any.then(|| union.to_sketch().estimate())
            };
        // Previous windows for active users only (see `Previous`).
        let family = |pick: &dyn Fn(Day) -> Option<&'a DistinctSketch>, previous: bool| {
            let current = WINDOWS.iter().map(|&length| window(pick, 0, length));
            let previous = WINDOWS
                .iter()
                .map(|&length| previous.then(|| window(pick, 1, length)).flatten());
            current.chain(previous).collect::<Vec<_>>()
        };
        let activity = &state.activity;
        [
            family(&|d| activity.day(d).map(|d| &d.active), true),
            family(&|d| activity.day(d)?.signups.as_ref(), false),
        ]
        .into_iter()
        .chain(
            (0..features).map(|id| family(&|d| state.features.feature(d, id as FeatureId), false)),
        )
        .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Past unions kept between snapshots give exactly the figures of unioning every
        /// window day by day, through late writes, new features and day changes, in list, set
        /// and HLL modes alike.
        #[test]
        fn kept_past_unions_give_the_summary_folded_afresh(steps in proptest::collection::vec(step(), 1..40)) {
            let settings = EngineSettings::default();
            let shape = Rules::of(&settings).shape;
            let mut partition = Partition::new(&settings);
            let mut today: Day = 20_000;
            for step in steps {
                match step {
                    Step::Activity { first, users, days_ago, signup, feature } => {
                        let day = today - days_ago;
                        for user in first..first + users {
                            partition.apply(&PartitionEvent {
                                partition: 0,
                                user: UserHash::of(&format!("u{user}")),
                                session_key: u64::from(user),
                                ts_ms: i64::from(day) * 86_400_000,
                                day,
                                kind: if signup { EventKind::Signup } else { EventKind::Login },
                                feature,
                                sessionize: false,
                                in_retention: true,
                                in_horizon: true,
                                outcome: None,
                                dims: Default::default(),
                                tags: Default::default(),
                            });
                        }
                    }
                    Step::Snapshot { days_later } => {
                        today += days_later;
                        let at = SummaryPoint { today, now_minute: i64::from(today) * 1440, merge_users: false };
                        let kept = partition.summarize(at);
                        let afresh = partition.state().summarize_afresh(at, &settings);
                        prop_assert_eq!(folded(&kept), folded(&afresh));
                        let features = kept.features.features.len();
                        let expected = folded_day_by_day(partition.state(), today, shape, features);
                        prop_assert_eq!(folded(&kept), expected);
                    }
                }
            }
        }
    }
}
