//! Decoding: JSON bytes → [`DecodedEvent`], in a single borrowed pass.
//!
//! The configured JSON pointers are compiled into a small trie ([`Decoder`]). The parser
//! walks the record once, descends only into objects that lie on a configured path, and
//! skips everything else without building it. That keeps decoding allocation-free for
//! ordinary events (strings borrow from the input unless they contain escapes), which
//! matters at a million events per second per core; building a `serde_json::Value` per
//! event would cost several times more.
//!
//! "First present wins" is resolved by the position of the pointer in its list; a JSON
//! `null` counts as absent. A key that repeats in one object keeps its last value, as
//! `serde_json::Value` would.

use std::borrow::Cow;
use std::fmt;

use foldhash::HashMap;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize as _, Deserializer as _};
use serde_json::value::RawValue;

use crate::dimensions::{DimValue, ValueBuffer};
use crate::event::{DecodedEvent, EventKind, Rejection};
use crate::outcome_fields::OutcomeFields;
use crate::partitioner::Partitioner;
use crate::pointer_fields::{self, MAX_EXTRA_FIELDS};
use crate::settings::EngineSettings;

/// Segment's call type that means "the name is in `/event`": a `track` call without an
/// event name has no name at all.
const SEGMENT_TRACK: &str = "track";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    User = 0,
    Event = 1,
    Time = 2,
    Feature = 3,
    SessionId = 4,
    // The outcome fields (see `crate::outcome_fields`): captured only when configured.
    NpsScore = 5,
    CsatScore = 6,
    Amount = 7,
    Currency = 8,
    Mrr = 9,
}
const FIELDS: usize = 10;

impl Field {
    /// Money is read from the number's raw text, never through an `f64`.
    fn is_raw(self) -> bool {
        matches!(self, Field::Amount | Field::Mrr)
    }
}

/// Where a pointer's value is captured: a built-in field, or an extra field
/// ([`crate::pointer_fields`]) in the slots after them.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Field(Field),
    Extra(usize),
}

impl Slot {
    fn index(self) -> u8 {
        match self {
            Slot::Field(field) => field as u8,
            Slot::Extra(position) => (FIELDS + position) as u8,
        }
    }

    fn is_raw(self) -> bool {
        matches!(self, Slot::Field(field) if field.is_raw())
    }
}

/// Capture slots: the built-in fields, then the extra pointer fields ([`crate::pointer_fields`]).
const SLOTS: usize = FIELDS + MAX_EXTRA_FIELDS;

/// A node of the pointer trie: one object key, the fields it feeds, and deeper keys.
#[derive(Debug, Clone)]
struct Node {
    key: Box<str>,
    /// (slot, priority): a [`Field`] or an extra field's slot; priority is the position of
    /// the pointer in that field's list.
    targets: Vec<(u8, u8)>,
    /// The same, for fields that take the value's raw JSON text ([`Field::is_raw`]).
    raw_targets: Vec<(u8, u8)>,
    children: Level,
}

/// The keys of one object level of the trie, looked up by length first: a level holds few
/// keys of any one length, so finding a key costs a comparison or two. (Comparing with
/// every key of the level took a tenth of decoding.)
#[derive(Debug, Clone, Default)]
struct Level {
    nodes: Vec<Node>,
    /// Indexes into `nodes` by key length; the last slot takes every longer key.
    by_len: Vec<Vec<usize>>,
}

/// Key lengths with a slot of their own in [`Level::by_len`].
const SHORT_KEYS: usize = 32;

impl Level {
    fn find(&self, key: &str) -> Option<&Node> {
        let candidates = self.by_len.get(key.len().min(SHORT_KEYS))?;
        candidates
            .iter()
            .map(|&index| &self.nodes[index])
            .find(|node| *node.key == *key)
    }

    fn find_or_insert(&mut self, key: String) -> &mut Node {
        let index = match self.nodes.iter().position(|n| *n.key == *key) {
            Some(index) => index,
            None => {
                let slot = key.len().min(SHORT_KEYS);
                if self.by_len.len() <= slot {
                    self.by_len.resize(slot + 1, Vec::new());
                }
                self.by_len[slot].push(self.nodes.len());
                self.nodes.push(Node {
                    key: key.into(),
                    targets: Vec::new(),
                    raw_targets: Vec::new(),
                    children: Level::default(),
                });
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[index]
    }
}

/// Compiled field paths and event-name tables; cheap to share across threads by cloning.
#[derive(Debug, Clone)]
pub struct Decoder {
    root: Level,
    kinds: HashMap<Box<str>, EventKind>,
    feature_events: HashMap<Box<str>, Box<str>>,
    /// For each priority of the event-name list: whether that pointer ends in `type`.
    event_from_type: Vec<bool>,
    max_record_bytes: usize,
    max_user_id_bytes: usize,
    outcomes: OutcomeFields,
    /// Configured dimensions: their pointers fill the extra slots, in this order.
    dimensions: usize,
    /// For the virtual partition of a record (see [`crate::partitioner`]); `None` with a
    /// single virtual partition (and so in `pulse run`, whose records come with theirs):
    /// there is nothing to choose, and hashing the id again would cost 1.5 % of a record.
    pub(crate) partitioner: Option<Partitioner>,
    /// Raw names and features the funnels match on (empty without funnels).
    pub(crate) tagger: crate::funnel_rules::Tagger,
}

impl Decoder {
    /// Builds the decoder; `settings` must already be validated.
    pub fn new(settings: &EngineSettings) -> Decoder {
        let mut root = Level::default();
        let fields = &settings.fields;
        for (field, paths) in [
            (Field::User, &fields.user),
            (Field::Event, &fields.event),
            (Field::Time, &fields.time),
            (Field::Feature, &fields.feature),
            (Field::SessionId, &fields.session_id),
        ] {
            for (priority, pointer) in paths.iter().enumerate().take(usize::from(u8::MAX)) {
                insert_path(&mut root, pointer, Slot::Field(field), priority as u8);
            }
        }
        for (field, paths) in OutcomeFields::paths(&settings.outcomes) {
            for (priority, pointer) in paths.iter().enumerate().take(usize::from(u8::MAX)) {
                insert_path(&mut root, pointer, Slot::Field(field), priority as u8);
            }
        }
        let dimension_paths = settings.dimensions.iter().map(|d| d.paths.as_slice());
        pointer_fields::insert_extra(dimension_paths, |slot, pointer, priority| {
            insert_path(&mut root, pointer, Slot::Extra(slot), priority);
        });
        let mut kinds = HashMap::default();
        let k = &settings.kinds;
        for (kind, names) in [
            (EventKind::Login, &k.login),
            (EventKind::PageView, &k.page_view),
            (EventKind::FeatureUsed, &k.feature_used),
            (EventKind::SessionStart, &k.session_start),
            (EventKind::SessionEnd, &k.session_end),
            (EventKind::Signup, &k.signup),
        ] {
            for name in names {
                kinds.insert(name.as_str().into(), kind);
            }
        }
        let feature_events = settings
            .feature_events
            .iter()
            .map(|(event, feature)| (event.as_str().into(), feature.as_str().into()))
            .collect();
        let event_from_type = fields.event.iter().map(|p| p.ends_with("/type")).collect();
        Decoder {
            root,
            kinds,
            feature_events,
            event_from_type,
            max_record_bytes: settings.max_record_bytes,
            max_user_id_bytes: settings.max_user_id_bytes,
            outcomes: OutcomeFields::new(&settings.outcomes),
            dimensions: settings.dimensions.len(),
            partitioner: (settings.partitions > 1).then_some(settings.partitioner),
            tagger: crate::funnel_rules::compile(
                &settings.funnels,
                settings.time_to_value.as_ref(),
                settings.allowed_lateness_ms,
            )
            .0,
        }
    }

    /// Decodes one record. Never panics; a bad record is a [`Rejection`].
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Result<DecodedEvent<'a>, Rejection> {
        let mut values = ValueBuffer::default();
        let mut event = self.decode_into(bytes, &mut values)?;
        event.dimensions = values
            .since(0)
            .iter()
            .map(|value| match value {
                DimValue::Text(text) => DimValue::Text(Cow::Owned(text.into_owned())),
                DimValue::None => DimValue::None,
                DimValue::Invalid => DimValue::Invalid,
            })
            .collect();
        Ok(event)
    }

    /// [`Decoder::decode`], the dimension values written to `values` (and none in the
    /// event) so that no event needs a `Vec` of its own; only an accepted record adds any.
    pub(crate) fn decode_into<'a>(
        &self,
        bytes: &'a [u8],
        values: &mut ValueBuffer,
    ) -> Result<DecodedEvent<'a>, Rejection> {
        if bytes.len() > self.max_record_bytes {
            return Err(Rejection::RecordTooLarge);
        }
        let mut captures = Captures::default();
        // Checking the whole record once is several times cheaper than serde_json's check of
        // every string it meets (a tenth of decoding went there), and SIMD makes it cheaper
        // still than std's check (which cost a sixth of decoding). A record that fails is
        // parsed as bytes, so invalid UTF-8 outside the configured fields is treated exactly
        // as before: skipped values are not checked.
        let is_object = match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => self.walk(serde_json::Deserializer::from_str(text), &mut captures),
            Err(_) => self.walk(serde_json::Deserializer::from_slice(bytes), &mut captures),
        }
        .map_err(|_| Rejection::NotJson)?;
        if !is_object {
            return Err(Rejection::NotObject);
        }
        // By reference: moving the capture slots would copy them whole.
        let event = self.resolve(&mut captures, values);
        captures.release();
        event
    }

    /// Walks one JSON document to its end; `Ok(false)` if it is not an object.
    fn walk<'de, R: serde_json::de::Read<'de>>(
        &self,
        mut de: serde_json::Deserializer<R>,
        captures: &mut Captures<'de>,
    ) -> serde_json::Result<bool> {
        let is_object = de.deserialize_any(RootVisitor {
            level: &self.root,
            captures,
        })?;
        de.end()?;
        Ok(is_object)
    }

    /// Borrows the captures: moving the slots per record cost more than taking from them.
    fn resolve<'a>(
        &self,
        captures: &mut Captures<'a>,
        values: &mut ValueBuffer,
    ) -> Result<DecodedEvent<'a>, Rejection> {
        let user = match captures.take(Field::User) {
            None => return Err(Rejection::MissingUser),
            Some((_, Scalar::Str(s))) if s.is_empty() => return Err(Rejection::EmptyUser),
            Some((_, Scalar::Str(s))) => s,
            Some((_, Scalar::Int(i))) => Cow::Owned(itoa::Buffer::new().format(i).to_owned()),
            Some((_, Scalar::UInt(u))) => Cow::Owned(itoa::Buffer::new().format(u).to_owned()),
            Some(_) => return Err(Rejection::InvalidUser),
        };
        if user.len() > self.max_user_id_bytes {
            return Err(Rejection::UserIdTooLong);
        }
        let name = match captures.take(Field::Event) {
            None => return Err(Rejection::MissingEventName),
            Some((priority, Scalar::Str(s))) => {
                let from_type = self.event_from_type.get(usize::from(priority)) == Some(&true);
                if s.is_empty() {
                    return Err(Rejection::InvalidEventName);
                }
                if from_type && s == SEGMENT_TRACK {
                    return Err(Rejection::MissingEventName);
                }
                s
            }
            Some(_) => return Err(Rejection::InvalidEventName),
        };
        let ts_ms = match captures.take(Field::Time) {
            None => None,
            Some((_, value)) => Some(parse_time(&value).ok_or(Rejection::InvalidTimestamp)?),
        };
        let outcome = if self.outcomes.is_off() {
            None
        } else {
            self.outcomes
                .judge(&name, |field| captures.take(field).map(|(_, value)| value))?
        };
        let kind = self
            .kinds
            .get(name.as_ref())
            .copied()
            .unwrap_or(EventKind::Other);
        let feature = if kind == EventKind::FeatureUsed {
            match captures.take(Field::Feature) {
                Some((_, Scalar::Str(s))) if !s.is_empty() => Some(s),
                _ => None,
            }
        } else {
            self.feature_events
                .get(name.as_ref())
                .map(|f| Cow::Owned(f.to_string()))
        };
        let session_id = match captures.take(Field::SessionId) {
            Some((_, Scalar::Str(s))) if !s.is_empty() => Some(s),
            Some((_, Scalar::Int(i))) => Some(Cow::Owned(i.to_string())),
            Some((_, Scalar::UInt(u))) => Some(Cow::Owned(u.to_string())),
            _ => None,
        };
        // Last: a rejected record must leave nothing in `values`.
        for slot in 0..self.dimensions {
            pointer_fields::push_dimension_value(values, captures.take_slot(FIELDS + slot));
        }
        Ok(DecodedEvent {
            user,
            kind,
            name,
            ts_ms,
            feature,
            session_id,
            outcome,
            dimensions: Vec::new(),
        })
    }
}

/// The earliest and latest instants pulse accepts: jiff's range (years -9999 to 9999), so
/// every accepted time can be turned into a calendar day.
fn in_range(ms: i64) -> Option<i64> {
    jiff::Timestamp::from_millisecond(ms).ok().map(|_| ms)
}

fn parse_time(value: &Scalar<'_>) -> Option<i64> {
    match value {
        Scalar::Str(s) => parse_rfc3339_ms(s),
        Scalar::Int(i) => in_range(*i),
        Scalar::UInt(u) => i64::try_from(*u).ok().and_then(in_range),
        Scalar::Float(f) if f.is_finite() && f.abs() < 1e15 => in_range(f.trunc() as i64),
        _ => None,
    }
}

/// An RFC 3339 time in epoch milliseconds, or `None` if it is not one.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    rfc3339_fast(text.as_bytes()).or_else(|| {
        text.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond())
    })
}

/// The common shape `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` for 1970 to 9998, parsed by
/// hand: about a quarter of decoding went to the general RFC 3339 parser. Anything else
/// (leap seconds, lower-case `t`, a space, other years, odd offsets) returns `None` and goes
/// to jiff, so the fast path never accepts what jiff would not, nor differs from it.
fn rfc3339_fast(b: &[u8]) -> Option<i64> {
    fn digits(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9998).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let end = fraction
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 || end > 9 {
            return None;
        }
        let ms = &fraction[..end.min(3)];
        millis = digits(ms)? * [100, 10, 1][ms.len() - 1];
        rest = &fraction[end..];
    }
    let offset_minutes = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let ms = ((days * 24 + hour) * 60 + minute - offset_minutes) * 60_000 + second * 1000 + millis;
    // Before the epoch truncation rules differ; leave those to jiff.
    (ms >= 0).then_some(ms)
}

fn insert_path(root: &mut Level, pointer: &str, slot: Slot, priority: u8) {
    // RFC 6901: "" is the whole document, which is never a scalar field.
    let Some(rest) = pointer.strip_prefix('/') else {
        return;
    };
    let mut current = root;
    let mut segments = rest.split('/').peekable();
    while let Some(raw) = segments.next() {
        let node = current.find_or_insert(raw.replace("~1", "/").replace("~0", "~"));
        if segments.peek().is_none() {
            let targets = if slot.is_raw() {
                &mut node.raw_targets
            } else {
                &mut node.targets
            };
            targets.push((slot.index(), priority));
            return;
        }
        current = &mut node.children;
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Only the extra fields take a boolean (as its JSON text); for the others it is unusable.
    Bool(bool),
    /// An object or array: present, but not a usable scalar.
    Unusable,
    /// The raw JSON text of a value, for the fields that read numbers exactly.
    Number(&'a str),
}

/// One slot per [`Field`]. (Sizing them by the configured fields, so that a decoder without
/// outcome tables kept five, made the walk generic over the size, and the second copy of it
/// cost more instructions per record than the five slots saved: BENCHMARKS.md, issue 17.)
#[derive(Default)]
struct Captures<'a> {
    slots: [Option<(u8, Scalar<'a>)>; SLOTS],
    /// Whether a slot may hold a string that owns memory (one that had escapes). Without,
    /// the slots are forgotten rather than dropped: dropping every slot cost more per record
    /// than filling them.
    owns_text: bool,
}

impl<'a> Captures<'a> {
    fn record(&mut self, targets: &[(u8, u8)], value: Scalar<'a>) {
        // A key nearly always feeds one field: the value moves there, copies only for more.
        let Some(((last_field, last_priority), others)) = targets.split_last() else {
            return;
        };
        for (field, priority) in others {
            self.offer(*field, *priority, || value.clone());
        }
        self.offer(*last_field, *last_priority, || value);
    }

    fn offer(&mut self, slot: u8, priority: u8, value: impl FnOnce() -> Scalar<'a>) {
        let slot = &mut self.slots[usize::from(slot)];
        // Equal priority is the same key repeated: the last one wins.
        if slot.as_ref().is_none_or(|(held, _)| priority <= *held) {
            *slot = Some((priority, value()));
        }
    }

    /// Drops the slots, or forgets them when none owns memory: nothing leaks.
    #[inline]
    fn release(self) {
        if !self.owns_text {
            std::mem::forget(self);
        }
    }

    fn take(&mut self, field: Field) -> Option<(u8, Scalar<'a>)> {
        self.take_slot(field as usize)
    }

    fn take_slot(&mut self, slot: usize) -> Option<(u8, Scalar<'a>)> {
        self.slots[slot].take()
    }
}

/// Walks the entries of an object, descending along the trie.
fn walk_object<'de, A: MapAccess<'de>>(
    mut map: A,
    level: &Level,
    captures: &mut Captures<'de>,
) -> Result<(), A::Error> {
    while let Some(found) = map.next_key_seed(KeySeed { level })? {
        match found {
            Some(node) => map.next_value_seed(ValueSeed { node, captures })?,
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

struct RootVisitor<'p, 'c, 'de> {
    level: &'p Level,
    captures: &'c mut Captures<'de>,
}

impl<'de> Visitor<'de> for RootVisitor<'_, '_, 'de> {
    /// Whether the record is an object.
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        walk_object(map, self.level, self.captures)?;
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Matches an object key against the trie level; `None` means "skip this value".
struct KeySeed<'p> {
    level: &'p Level,
}

impl<'de, 'p> DeserializeSeed<'de> for KeySeed<'p> {
    type Value = Option<&'p Node>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'p> Visitor<'de> for KeySeed<'p> {
    type Value = Option<&'p Node>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.level.find(key))
    }
}

struct ValueSeed<'p, 'c, 'de> {
    node: &'p Node,
    captures: &'c mut Captures<'de>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.node.raw_targets.is_empty() {
            return d.deserialize_any(self);
        }
        // A money pointer is never one another pointer equals or passes through (the settings
        // refuse it), so this key feeds nothing else and has no configured children.
        let raw = <&'de RawValue>::deserialize(d)?;
        let text = raw.get();
        if text != "null" {
            self.captures
                .record(&self.node.raw_targets, Scalar::Number(text));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.captures
            .record(&self.node.targets, Scalar::Str(Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.captures.owns_text = true;
        self.captures
            .record(&self.node.targets, Scalar::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.captures.record(&self.node.targets, Scalar::Int(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.captures.record(&self.node.targets, Scalar::UInt(v));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.captures.record(&self.node.targets, Scalar::Float(v));
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.captures.record(&self.node.targets, Scalar::Bool(v));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.captures.record(&self.node.targets, Scalar::Unusable);
        walk_object(map, &self.node.children, self.captures)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.captures.record(&self.node.targets, Scalar::Unusable);
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder::new(&EngineSettings::default())
    }

    fn decode(json: &str) -> Result<DecodedEvent<'_>, Rejection> {
        // Leak a decoder per call: tests only, keeps the borrow simple.
        let decoder: &'static Decoder = Box::leak(Box::new(decoder()));
        decoder.decode(json.as_bytes())
    }

    #[test]
    fn plain_event() {
        let e = decode(
            r#"{"user_id":"u1","event":"login","timestamp":"2026-03-01T10:00:00.250Z","x":[1,{"a":2}]}"#,
        )
        .unwrap();
        assert_eq!(e.user, "u1");
        assert_eq!(e.kind, EventKind::Login);
        assert_eq!(e.ts_ms, Some(1_772_359_200_250));
        assert!(
            matches!(e.user, Cow::Borrowed(_)),
            "plain strings borrow from the input"
        );
    }

    #[test]
    fn offsets_and_epoch_millis_are_the_same_instant() {
        let a = decode(r#"{"user_id":"u","event":"x","timestamp":"2026-03-01T15:30:00+05:30"}"#);
        let b = decode(r#"{"user_id":"u","event":"x","ts":1772359200000}"#);
        let c = decode(r#"{"user_id":"u","event":"x","time":1772359200000.9}"#);
        assert_eq!(a.unwrap().ts_ms, Some(1_772_359_200_000));
        assert_eq!(b.unwrap().ts_ms, Some(1_772_359_200_000));
        assert_eq!(c.unwrap().ts_ms, Some(1_772_359_200_000));
    }

    #[test]
    fn integer_user_is_its_decimal_string() {
        let e = decode(r#"{"userId":-42,"event":"x","ts":0}"#).unwrap();
        assert_eq!(e.user, "-42");
        let e = decode(r#"{"distinct_id":18446744073709551615,"event":"x","ts":0}"#).unwrap();
        assert_eq!(e.user, "18446744073709551615");
    }

    #[test]
    fn first_present_pointer_wins_and_null_is_absent() {
        let e = decode(r#"{"distinct_id":"c","userId":"b","user_id":null,"event":"x"}"#).unwrap();
        assert_eq!(e.user, "b");
    }

    #[test]
    fn repeated_key_keeps_the_last_value() {
        let e = decode(r#"{"user_id":"a","user_id":"b","event":"x"}"#).unwrap();
        assert_eq!(e.user, "b");
    }

    #[test]
    fn nested_feature_and_session_paths() {
        let e = decode(
            r#"{"distinct_id":"u","event":"feature_used","properties":{"$session_id":"s1","feature":"export","other":{"feature":"no"}}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::FeatureUsed);
        assert_eq!(e.feature.as_deref(), Some("export"));
        assert_eq!(e.session_id.as_deref(), Some("s1"));
        assert_eq!(e.ts_ms, None);
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let e = decode(r#"{"user_id":"a\"b\u00e9","event":"Page Viewed"}"#).unwrap();
        assert_eq!(e.user, "a\"bé");
        assert_eq!(e.kind, EventKind::PageView);
    }

    #[test]
    fn segment_track_takes_its_name_from_event() {
        let e = decode(r#"{"type":"track","event":"Signed Up","userId":"u"}"#).unwrap();
        assert_eq!(e.kind, EventKind::Signup);
        let e = decode(r#"{"type":"page","userId":"u"}"#).unwrap();
        assert_eq!(e.kind, EventKind::PageView);
        assert_eq!(
            decode(r#"{"type":"track","userId":"u"}"#),
            Err(Rejection::MissingEventName)
        );
    }

    #[test]
    fn feature_only_on_feature_events_or_mapped_names() {
        let e = decode(r#"{"user_id":"u","event":"login","feature":"export"}"#).unwrap();
        assert_eq!(e.feature, None);
        let mut settings = EngineSettings::default();
        settings
            .feature_events
            .insert("Report Exported".into(), "export".into());
        let decoder = Decoder::new(&settings);
        let json = br#"{"user_id":"u","event":"Report Exported"}"#;
        let e = decoder.decode(json).unwrap();
        assert_eq!(e.kind, EventKind::Other);
        assert_eq!(e.feature.as_deref(), Some("export"));
    }

    #[test]
    fn numeric_session_ids_are_text() {
        let e = decode(r#"{"user_id":"u","event":"x","session_id":1700000000000}"#).unwrap();
        assert_eq!(e.session_id.as_deref(), Some("1700000000000"));
    }

    #[test]
    fn every_rejection_reason() {
        let cases = [
            (r#"{"user_id":"u","event":"x""#, Rejection::NotJson),
            (
                r#"{"user_id":"u","event":"x"} trailing"#,
                Rejection::NotJson,
            ),
            ("", Rejection::NotJson),
            (r#"[{"user_id":"u","event":"x"}]"#, Rejection::NotObject),
            (r#""just a string""#, Rejection::NotObject),
            ("42", Rejection::NotObject),
            (r#"{"event":"x"}"#, Rejection::MissingUser),
            (r#"{"user_id":null,"event":"x"}"#, Rejection::MissingUser),
            (r#"{"user_id":"","event":"x"}"#, Rejection::EmptyUser),
            (
                r#"{"user_id":{"id":1},"event":"x"}"#,
                Rejection::InvalidUser,
            ),
            (r#"{"user_id":[1],"event":"x"}"#, Rejection::InvalidUser),
            (r#"{"user_id":true,"event":"x"}"#, Rejection::InvalidUser),
            (r#"{"user_id":1.5,"event":"x"}"#, Rejection::InvalidUser),
            (r#"{"user_id":"u"}"#, Rejection::MissingEventName),
            (r#"{"user_id":"u","event":""}"#, Rejection::InvalidEventName),
            (r#"{"user_id":"u","event":7}"#, Rejection::InvalidEventName),
            (
                r#"{"user_id":"u","event":"x","timestamp":"yesterday"}"#,
                Rejection::InvalidTimestamp,
            ),
            (
                r#"{"user_id":"u","event":"x","timestamp":"2026-03-01T10:00:00"}"#,
                Rejection::InvalidTimestamp,
            ),
            (
                r#"{"user_id":"u","event":"x","ts":1e300}"#,
                Rejection::InvalidTimestamp,
            ),
            (
                r#"{"user_id":"u","event":"x","ts":true}"#,
                Rejection::InvalidTimestamp,
            ),
            (
                r#"{"user_id":"u","event":"x","ts":9223372036854775807}"#,
                Rejection::InvalidTimestamp,
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(decode(json).map(|_| ()), Err(expected), "{json}");
        }
        // MissingTimestamp is decided by the router, which knows whether a fallback exists.
    }

    #[test]
    fn size_limits() {
        let settings = EngineSettings {
            max_record_bytes: 100,
            max_user_id_bytes: 8,
            ..EngineSettings::default()
        };
        let decoder = Decoder::new(&settings);
        let padded = format!(
            r#"{{"user_id":"u","event":"x","pad":"{}"}}"#,
            "p".repeat(100)
        );
        assert_eq!(
            decoder.decode(padded.as_bytes()).map(|_| ()),
            Err(Rejection::RecordTooLarge)
        );
        let long = br#"{"user_id":"123456789","event":"x"}"#;
        assert_eq!(
            decoder.decode(long).map(|_| ()),
            Err(Rejection::UserIdTooLong)
        );
        assert!(
            decoder
                .decode(br#"{"user_id":"12345678","event":"x"}"#)
                .is_ok()
        );
    }

    #[test]
    fn hostile_shapes_are_rejected_not_fatal() {
        let decoder = decoder();
        // 100 000 levels of nesting: values off the configured paths are skipped without
        // recursion, so this neither overflows the stack nor costs more than a scan.
        let deep = format!(
            r#"{{"user_id":"u","event":"x","p":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(decoder.decode(deep.as_bytes()).is_ok());
        let deep_root = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            decoder.decode(deep_root.as_bytes()).map(|_| ()),
            Err(Rejection::NotObject)
        );
        let deep_object = format!(
            r#"{{"user_id":"u","event":"x","properties":{}1{}}}"#,
            r#"{"properties":"#.repeat(10_000),
            "}".repeat(10_000)
        );
        // Along a configured path too: our recursion follows configured keys only, so it is
        // bounded by the deepest pointer, and the rest is skipped without recursion.
        assert!(decoder.decode(deep_object.as_bytes()).is_ok());
        let nested_user = format!(
            r#"{{"user_id":{}1{},"event":"x"}}"#,
            "[".repeat(50),
            "]".repeat(50)
        );
        assert_eq!(
            decoder.decode(nested_user.as_bytes()).map(|_| ()),
            Err(Rejection::InvalidUser)
        );
        let huge_number = br#"{"user_id":"u","event":"x","ts":1e400}"#;
        assert!(decoder.decode(huge_number).is_err());
        // Times at the edges: 1970, 9999, and a leap second (accepted as the next second's
        // neighbour by the RFC 3339 parser, or rejected — never a panic).
        for time in [
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "2016-12-31T23:59:60Z",
            "-0001-01-01T00:00:00Z",
        ] {
            let json = format!(r#"{{"user_id":"u","event":"x","timestamp":"{time}"}}"#);
            let _ = decoder.decode(json.as_bytes());
        }
        let e = decoder
            .decode(br#"{"user_id":"u","event":"x","timestamp":"1970-01-01T00:00:00Z"}"#)
            .unwrap();
        assert_eq!(e.ts_ms, Some(0));
    }

    proptest::proptest! {
        /// The hand-written RFC 3339 path agrees with jiff wherever it answers, and answers
        /// for the common shapes.
        #[test]
        fn fast_rfc3339_agrees_with_jiff(
            year in 1960i64..10_000, month in 0i64..14, day in 0i64..33, hour in 0i64..25,
            minute in 0i64..61, second in 0i64..61, fraction in proptest::option::of("[0-9]{1,10}"),
            offset in proptest::sample::select(vec!["Z", "+00:00", "+05:30", "-08:00", "+14:00", "-23:59", "+24:00", "z", "+0530", ""]),
            separator in proptest::sample::select(vec!["T", "t", " "]),
        ) {
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!("{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{fraction}{offset}");
            let slow = text.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond());
            let fast = rfc3339_fast(text.as_bytes());
            if let Some(ms) = fast {
                proptest::prop_assert_eq!(Some(ms), slow, "{}", text);
            }
            let common = (1970..=9998).contains(&year) && separator == "T" && second < 60
                && ["Z", "+00:00", "+05:30", "-08:00", "+14:00", "-23:59"].contains(&offset)
                && fraction.len() <= 10 && slow.is_some_and(|ms| ms >= 0);
            if common {
                proptest::prop_assert!(fast.is_some(), "{} should take the fast path", text);
            }
        }

        /// Whatever the bytes, decoding returns (no panic, no hang).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decoder().decode(&bytes);
        }

        /// JSON-looking noise built from the tokens the decoder cares about.
        #[test]
        fn json_like_noise_never_panics(parts in proptest::collection::vec(
            proptest::sample::select(vec!["{", "}", "[", "]", ",", ":", "\"user_id\"", "\"event\"",
                "\"ts\"", "\"timestamp\"", "\"properties\"", "\"feature\"", "1", "-1", "1e308",
                "\"2026-03-01T00:00:00Z\"", "null", "true", "\"\\u0000\"", "\"x\""]),
            0..40,
        )) {
            let _ = decoder().decode(parts.concat().as_bytes());
        }
    }

    #[test]
    fn invalid_utf8_is_not_json() {
        let decoder = decoder();
        let bytes = b"{\"user_id\":\"\xff\xfe\",\"event\":\"x\"}";
        assert_eq!(decoder.decode(bytes).map(|_| ()), Err(Rejection::NotJson));
    }

    #[test]
    fn pointer_escapes_follow_rfc_6901() {
        let mut settings = EngineSettings::default();
        settings.fields.user = vec!["/a~1b/c~0d".into()];
        let decoder = Decoder::new(&settings);
        let e = decoder
            .decode(br#"{"a/b":{"c~d":"deep"},"event":"x"}"#)
            .unwrap();
        assert_eq!(e.user, "deep");
    }
}
