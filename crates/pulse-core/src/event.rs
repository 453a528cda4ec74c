//! The event model: what a decoded record is, what kind it is, why one was rejected, and
//! what a partition receives of an accepted one.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::dimensions::{DimIds, DimValue};
use crate::features::FeatureId;
use crate::funnel_rules::StepTags;
use crate::sketch::UserHash;
use crate::time::Day;

/// What an event means for the KPIs. Every kind makes its user active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    Login,
    PageView,
    FeatureUsed,
    SessionStart,
    SessionEnd,
    Signup,
    Other,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Login,
        EventKind::PageView,
        EventKind::FeatureUsed,
        EventKind::SessionStart,
        EventKind::SessionEnd,
        EventKind::Signup,
        EventKind::Other,
    ];

    /// Stable lowercase name, used as a metric label and JSON key.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Login => "login",
            EventKind::PageView => "page_view",
            EventKind::FeatureUsed => "feature_used",
            EventKind::SessionStart => "session_start",
            EventKind::SessionEnd => "session_end",
            EventKind::Signup => "signup",
            EventKind::Other => "other",
        }
    }
}

/// Why a record was not accepted. Each reason is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Rejection {
    /// Not valid JSON (including invalid UTF-8 inside strings).
    NotJson,
    /// Valid JSON, but not an object.
    NotObject,
    MissingUser,
    /// The user field is an empty string.
    EmptyUser,
    /// The user field is not a string or an integer (object, array, bool, fraction).
    InvalidUser,
    MissingEventName,
    /// The event name is not a non-empty string.
    InvalidEventName,
    /// No time in the record, and no fallback (a Kafka message timestamp) either.
    MissingTimestamp,
    /// A time that is neither RFC 3339 nor epoch milliseconds in range.
    InvalidTimestamp,
    /// Longer than the configured record limit: not even parsed.
    RecordTooLarge,
    /// A user id longer than the configured limit (ids are hashed, but a megabyte "id" is
    /// a bug upstream, not a user).
    UserIdTooLong,
    /// An outcome event (`[outcomes.nps]` / `[outcomes.csat]`) whose score is missing or
    /// not an integer.
    InvalidScore,
    /// A score outside its scale (NPS 0–10, CSAT 1–5).
    ScoreOutOfRange,
    /// An order or subscription event whose amount or MRR is missing, not a JSON number,
    /// negative, or too large.
    InvalidAmount,
    /// An amount with more decimals than its currency has (`19.999` USD).
    AmountTooPrecise,
    /// An order without a currency.
    MissingCurrency,
    /// An order in another currency than `outcomes.revenue.expected_currency`.
    UnexpectedCurrency,
}

impl Rejection {
    pub const ALL: [Rejection; 17] = [
        Rejection::NotJson,
        Rejection::NotObject,
        Rejection::MissingUser,
        Rejection::EmptyUser,
        Rejection::InvalidUser,
        Rejection::MissingEventName,
        Rejection::InvalidEventName,
        Rejection::MissingTimestamp,
        Rejection::InvalidTimestamp,
        Rejection::RecordTooLarge,
        Rejection::UserIdTooLong,
        Rejection::InvalidScore,
        Rejection::ScoreOutOfRange,
        Rejection::InvalidAmount,
        Rejection::AmountTooPrecise,
        Rejection::MissingCurrency,
        Rejection::UnexpectedCurrency,
    ];

    /// Stable snake_case name, used as a metric label, a JSON key and a dead-letter header.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::NotJson => "not_json",
            Rejection::NotObject => "not_object",
            Rejection::MissingUser => "missing_user",
            Rejection::EmptyUser => "empty_user",
            Rejection::InvalidUser => "invalid_user",
            Rejection::MissingEventName => "missing_event_name",
            Rejection::InvalidEventName => "invalid_event_name",
            Rejection::MissingTimestamp => "missing_timestamp",
            Rejection::InvalidTimestamp => "invalid_timestamp",
            Rejection::RecordTooLarge => "record_too_large",
            Rejection::UserIdTooLong => "user_id_too_long",
            Rejection::InvalidScore => "invalid_score",
            Rejection::ScoreOutOfRange => "score_out_of_range",
            Rejection::InvalidAmount => "invalid_amount",
            Rejection::AmountTooPrecise => "amount_too_precise",
            Rejection::MissingCurrency => "missing_currency",
            Rejection::UnexpectedCurrency => "unexpected_currency",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One accepted record, borrowing from the input bytes where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedEvent<'a> {
    /// The user id as text: an integer id is rendered in decimal, so `42` and `"42"` are
    /// one user.
    pub user: Cow<'a, str>,
    pub kind: EventKind,
    pub name: Cow<'a, str>,
    /// Event time in epoch milliseconds; `None` when the record has no time field.
    pub ts_ms: Option<i64>,
    /// The feature this event uses, for `FeatureUsed` events and mapped event names.
    pub feature: Option<Cow<'a, str>>,
    pub session_id: Option<Cow<'a, str>>,
    /// What an outcome event (survey, order, subscription change) measured; `None` for
    /// every other event and whenever the outcomes family is off.
    pub outcome: Option<OutcomeValue>,
    /// The value of each configured dimension, by position (empty on the hot path, which
    /// keeps them in a [`crate::dimensions::ValueBuffer`]: see [`crate::prepare`]).
    pub dimensions: Vec<DimValue<'a>>,
}

/// The measurement an outcome event carries, already checked against its configuration
/// (see `outcome_fields`). Money is in integer minor units of the configured
/// currency, never floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeValue {
    /// An NPS answer, 0–10.
    Nps(u8),
    /// A CSAT answer, 1–5.
    Csat(u8),
    /// A completed order's amount.
    Order(i64),
    /// A user's MRR after a subscription change.
    Mrr(i64),
}

/// An accepted event, reduced to what a partition needs: no user id, only its hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionEvent {
    /// The partition number it belongs to.
    pub partition: u32,
    pub user: UserHash,
    pub session_key: u64,
    pub ts_ms: i64,
    pub day: Day,
    pub kind: EventKind,
    pub feature: Option<FeatureId>,
    /// False when the event arrived later than the allowed lateness: it still counts as
    /// activity, but can no longer join a session exactly.
    pub sessionize: bool,
    /// False when the event is older than the retention: only families that keep a longer
    /// history see it ([`Family::apply_late`](crate::families::Family::apply_late)).
    pub in_retention: bool,
    /// Whether its day is within the retention family's horizon
    /// ([`HORIZON_DAYS`](crate::families::retention::HORIZON_DAYS)); one that is not is only
    /// counted.
    pub in_horizon: bool,
    /// What an outcome event measured (see [`DecodedEvent::outcome`]).
    pub outcome: Option<OutcomeValue>,
    /// The id of its value in each configured dimension (see [`crate::dimensions`]).
    pub dims: DimIds,
    /// Its raw name and feature as positions among those the funnels name.
    pub tags: StepTags,
}
