//! Sessions: grouping a user's events into visits, exactly, despite out-of-order arrival.
//!
//! A session key (the user, or the user and a session id) keeps its not-yet-final events
//! sorted by time. Sessions are cut only when they become final: once the watermark passes
//! `last event + timeout + allowed lateness`, no event that may still arrive can join or
//! split them (the router marks anything older than `watermark − lateness` as too late for
//! sessions). Cutting only final prefixes is what makes the result equal to processing the
//! events in time order, including a late event that bridges two sessions.
//!
//! Deadlines sit in a min-heap with exactly one live entry per key (`scheduled`), so closing
//! sessions as time passes costs O(log n) per closed key, not a scan of the table. A key's
//! deadline is that of its *first* open session, never later: scheduling by the last event
//! would leave a final first session open while a later one is still growing, and the set
//! of closed sessions would then depend on how the watermark moved, not only on where it
//! is (a partitioned consumer and a replay would disagree).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use foldhash::HashMap;
use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::time::Day;

/// The rules that cut sessions, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRules {
    pub timeout_ms: i64,
    pub max_length_ms: i64,
    pub lateness_ms: i64,
}

/// One event as the session table keeps it: 16 bytes, no user id.
///
/// `tag` is what a caller wants to know of a session's first event (with dimensions
/// configured, which values it carried: 16 bytes more); `()` without, which costs neither
/// memory nor bytes in a saved image (postcard writes `()` as nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent<T = ()> {
    pub ts_ms: i64,
    pub day: Day,
    /// Order among equal times: a start comes first, an end last.
    pub rank: u8,
    pub tag: T,
}

const RANK_START: u8 = 0;
const RANK_OTHER: u8 = 1;
const RANK_END: u8 = 2;

impl SessionEvent {
    pub fn new(ts_ms: i64, day: Day, kind: EventKind) -> SessionEvent {
        SessionEvent::tagged(ts_ms, day, kind, ())
    }
}

impl<T> SessionEvent<T> {
    pub fn tagged(ts_ms: i64, day: Day, kind: EventKind, tag: T) -> SessionEvent<T> {
        let rank = match kind {
            EventKind::SessionStart => RANK_START,
            EventKind::SessionEnd => RANK_END,
            _ => RANK_OTHER,
        };
        SessionEvent {
            ts_ms,
            day,
            rank,
            tag,
        }
    }

    fn order(&self) -> (i64, u8) {
        (self.ts_ms, self.rank)
    }

    fn with_tag<U>(&self, tag: U) -> SessionEvent<U> {
        SessionEvent {
            ts_ms: self.ts_ms,
            day: self.day,
            rank: self.rank,
            tag,
        }
    }
}

/// A finished session, ready to be counted in the day it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedSession<T = ()> {
    pub start_day: Day,
    pub events: u32,
    pub duration_ms: i64,
    /// The tag of its first event.
    pub tag: T,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenKey<T> {
    /// The deadline of this key's one live heap entry.
    scheduled: i64,
    events: Vec<SessionEvent<T>>,
}

/// The open sessions of one partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionTable<T = ()> {
    open: HashMap<u64, OpenKey<T>>,
    #[serde(skip)]
    deadlines: BinaryHeap<Reverse<(i64, u64)>>,
    open_events: usize,
}

impl<T> Default for SessionTable<T> {
    fn default() -> Self {
        SessionTable {
            open: HashMap::default(),
            deadlines: BinaryHeap::new(),
            open_events: 0,
        }
    }
}

impl<T: Copy> SessionTable<T> {
    /// Adds an event of `key` (the router has checked it is not too late).
    pub fn insert(&mut self, key: u64, event: SessionEvent<T>, rules: &SessionRules) {
        let entry = self.open.entry(key).or_insert_with(|| OpenKey {
            scheduled: i64::MIN,
            events: Vec::new(),
        });
        let events = &mut entry.events;
        // Nearly always an append; otherwise insert after every event that sorts first.
        let at = events.partition_point(|e| e.order() <= event.order());
        events.insert(at, event);
        self.open_events += 1;
        if entry.scheduled == i64::MIN {
            entry.scheduled = first_session_deadline(events, rules);
            self.deadlines.push(Reverse((entry.scheduled, key)));
        } else if event.ts_ms <= entry.scheduled - rules.timeout_ms - rules.lateness_ms {
            // The event lands in (or before) the first open session and may cut it short:
            // fall back to a deadline no later than any session's, refined when it fires.
            let bound = due(events[0].ts_ms, rules);
            if bound < entry.scheduled {
                entry.scheduled = bound;
                self.deadlines.push(Reverse((bound, key)));
            }
        }
    }

    /// Closes every session that is final at `watermark_ms`.
    pub fn advance(
        &mut self,
        watermark_ms: i64,
        rules: &SessionRules,
        mut emit: impl FnMut(ClosedSession<T>),
    ) {
        while let Some(Reverse((fires_at, key))) = self.deadlines.peek().copied() {
            if fires_at >= watermark_ms {
                break;
            }
            self.deadlines.pop();
            let Some(entry) = self.open.get_mut(&key) else {
                continue;
            };
            if entry.scheduled != fires_at {
                continue; // A stale entry; the key's live one is still in the heap.
            }
            let closed = close_final_prefix(&mut entry.events, watermark_ms, rules, &mut emit);
            self.open_events -= closed;
            if entry.events.is_empty() {
                self.open.remove(&key);
            } else {
                entry.scheduled = first_session_deadline(&entry.events, rules);
                self.deadlines.push(Reverse((entry.scheduled, key)));
            }
        }
        self.release_room();
    }

    /// Closes every session (end of a replay's input).
    pub fn close_all(&mut self, rules: &SessionRules, mut emit: impl FnMut(ClosedSession<T>)) {
        for (_, mut entry) in self.open.drain() {
            close_final_prefix(&mut entry.events, i64::MAX, rules, &mut emit);
        }
        self.deadlines.clear();
        self.open_events = 0;
        self.release_room();
    }

    /// Gives memory back once the table holds less than a quarter of its room: a burst of
    /// open sessions (a launch, a backlog) must not pin its peak for the life of the
    /// process, as hash tables and heaps never shrink by themselves. Shrinking to twice
    /// what is held means at least half of it must close before the next shrink, so the
    /// rehashing costs O(1) per closed key; small tables are left alone.
    fn release_room(&mut self) {
        const KEEP: usize = 1024;
        if self.open.capacity() > KEEP && self.open.len() < self.open.capacity() / 4 {
            self.open.shrink_to(self.open.len() * 2);
        }
        if self.deadlines.capacity() > KEEP && self.deadlines.len() < self.deadlines.capacity() / 4
        {
            self.deadlines.shrink_to(self.deadlines.len() * 2);
        }
    }

    /// Session keys with at least one open event.
    pub fn open_keys(&self) -> usize {
        self.open.len()
    }

    /// What the table holds on the heap, modelled from its contents (so that a restored
    /// table reports what the saved one did). Measured against RSS by `bench-scale`: ~190
    /// bytes per open key of one event, where counting only the entries gave 80.
    pub fn estimated_bytes(&self) -> usize {
        use std::mem::size_of;
        // hashbrown keeps its buckets (a power of two, each with a control byte) at most
        // 7/8 full: between 1.14 and 2.3 buckets per key, so about two.
        const BUCKETS_PER_KEY: usize = 2;
        // A key's events are one allocation of at least four (a Vec's first growth), plus
        // the allocator's header.
        const FIRST_CAPACITY: usize = 4;
        const ALLOCATION_HEADER: usize = 16;
        let keys = self.open.len();
        let slot = BUCKETS_PER_KEY * (size_of::<(u64, OpenKey<T>)>() + 1);
        // One live deadline per key, and room for the heap to grow by half again.
        let deadline = size_of::<Reverse<(i64, u64)>>() * 3 / 2;
        let events = self.open_events.max(FIRST_CAPACITY * keys) * size_of::<SessionEvent<T>>();
        keys * (slot + deadline + ALLOCATION_HEADER) + events
    }

    /// The time of every held event: a restored table is checked against them.
    pub(crate) fn event_times(&self) -> impl Iterator<Item = i64> + '_ {
        self.open
            .values()
            .flat_map(|key| key.events.iter().map(|event| event.ts_ms))
    }

    /// Rewrites every open event's tag (a restored state whose tags mean something else now).
    pub fn map_tags(&mut self, mut f: impl FnMut(T) -> T) {
        for key in self.open.values_mut() {
            key.events
                .iter_mut()
                .for_each(|event| event.tag = f(event.tag));
        }
    }

    /// The same open sessions with every event's tag made by `f` (dimensions configured or
    /// dropped since the state was saved).
    pub fn retag<U>(self, mut f: impl FnMut(T) -> U) -> SessionTable<U> {
        self.map_keys(|_, events| events.iter().map(|e| e.with_tag(f(e.tag))).collect())
    }

    /// This table's events tagged as `tagged`'s are, key by key, where it holds the same
    /// events, and with `otherwise` where not: how the two tables of checkpoint format 4
    /// become one ([`crate::partition_v4`]).
    pub(crate) fn tagged_as<U: Copy>(
        self,
        tagged: &SessionTable<U>,
        otherwise: U,
    ) -> SessionTable<U> {
        let same_events = |mine: &[SessionEvent<T>], theirs: &[SessionEvent<U>]| {
            mine.len() == theirs.len()
                && mine
                    .iter()
                    .zip(theirs)
                    .all(|(a, b)| a.order() == b.order() && a.day == b.day)
        };
        self.map_keys(|key, events| match tagged.open.get(&key) {
            Some(theirs) if same_events(events, &theirs.events) => theirs.events.clone(),
            _ => events.iter().map(|e| e.with_tag(otherwise)).collect(),
        })
    }

    /// The same keys, each with the events `f` makes of its own; deadlines stay.
    fn map_keys<U>(
        self,
        mut f: impl FnMut(u64, &[SessionEvent<T>]) -> Vec<SessionEvent<U>>,
    ) -> SessionTable<U> {
        let open = self.open.into_iter().map(|(key, entry)| {
            let entry = OpenKey {
                scheduled: entry.scheduled,
                events: f(key, &entry.events),
            };
            (key, entry)
        });
        SessionTable {
            open: open.collect(),
            deadlines: self.deadlines,
            open_events: self.open_events,
        }
    }

    /// Rebuilds the deadline heap after deserialisation.
    pub fn restore_index(&mut self) {
        self.deadlines = self
            .open
            .iter()
            .map(|(key, e)| Reverse((e.scheduled, *key)))
            .collect();
        self.open_events = self.open.values().map(|e| e.events.len()).sum();
    }
}

/// When a session whose last event is at `last_ms` becomes final.
fn due(last_ms: i64, rules: &SessionRules) -> i64 {
    last_ms
        .saturating_add(rules.timeout_ms)
        .saturating_add(rules.lateness_ms)
}

/// When a key's first open session becomes final.
fn first_session_deadline<T>(events: &[SessionEvent<T>], rules: &SessionRules) -> i64 {
    split_sessions(events, rules)
        .next()
        .map_or(i64::MAX, |session| {
            due(events[session.end - 1].ts_ms, rules)
        })
}

/// Splits events sorted by time into sessions, as in-order processing would.
pub fn split_sessions<T>(
    events: &[SessionEvent<T>],
    rules: &SessionRules,
) -> impl Iterator<Item = Range<usize>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= events.len() {
            return None;
        }
        let mut i = start + 1;
        while i < events.len() {
            let (prev, event) = (&events[i - 1], &events[i]);
            let starts_new = prev.rank == RANK_END
                || event.rank == RANK_START
                || event.ts_ms - prev.ts_ms > rules.timeout_ms
                || event.ts_ms - events[start].ts_ms > rules.max_length_ms;
            if starts_new {
                break;
            }
            i += 1;
        }
        let session = start..i;
        start = i;
        Some(session)
    })
}

/// Emits and removes the leading sessions that are final; returns how many events went.
fn close_final_prefix<T: Copy>(
    events: &mut Vec<SessionEvent<T>>,
    watermark_ms: i64,
    rules: &SessionRules,
    emit: &mut impl FnMut(ClosedSession<T>),
) -> usize {
    let mut closed_until = 0;
    for session in split_sessions(events, rules) {
        let (first, last) = (events[session.start], events[session.end - 1]);
        if due(last.ts_ms, rules) >= watermark_ms {
            break;
        }
        emit(ClosedSession {
            start_day: first.day,
            events: session.len() as u32,
            duration_ms: last.ts_ms - first.ts_ms,
            tag: first.tag,
        });
        closed_until = session.end;
    }
    events.drain(..closed_until);
    closed_until
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: SessionRules = SessionRules {
        timeout_ms: 1_000,
        max_length_ms: 10_000,
        lateness_ms: 100,
    };

    fn ev(ts_ms: i64, kind: EventKind) -> SessionEvent {
        SessionEvent::new(ts_ms, 0, kind)
    }

    fn sessions_of(events: &[(i64, EventKind)]) -> Vec<(u32, i64)> {
        let mut table = SessionTable::default();
        for (ts, kind) in events {
            table.insert(7, ev(*ts, *kind), &RULES);
        }
        let mut out = Vec::new();
        table.close_all(&RULES, |s| out.push((s.events, s.duration_ms)));
        out
    }

    use EventKind::{Other as O, SessionEnd as End, SessionStart as Start};

    #[test]
    fn gap_equal_to_timeout_stays_in_the_session() {
        assert_eq!(sessions_of(&[(0, O), (1_000, O)]), vec![(2, 1_000)]);
        assert_eq!(sessions_of(&[(0, O), (1_001, O)]), vec![(1, 0), (1, 0)]);
    }

    #[test]
    fn markers_and_max_length() {
        assert_eq!(
            sessions_of(&[(0, O), (500, Start), (900, O)]),
            vec![(1, 0), (2, 400)]
        );
        assert_eq!(
            sessions_of(&[(0, O), (500, End), (900, O)]),
            vec![(2, 500), (1, 0)]
        );
        let steady: Vec<(i64, EventKind)> = (0..=12).map(|i| (i * 1_000, O)).collect();
        assert_eq!(sessions_of(&steady), vec![(11, 10_000), (2, 1_000)]);
    }

    #[test]
    fn equal_times_order_start_before_end() {
        // Arrival order must not matter: start < other < end at the same instant.
        assert_eq!(sessions_of(&[(5, End), (5, O), (5, Start)]), vec![(3, 0)]);
    }

    #[test]
    fn late_event_bridges_two_sessions() {
        assert_eq!(
            sessions_of(&[(0, O), (1_500, O), (800, O)]),
            vec![(3, 1_500)]
        );
    }

    #[test]
    fn sessions_close_as_the_watermark_passes() {
        let mut table = SessionTable::default();
        table.insert(1, ev(0, O), &RULES);
        table.insert(2, ev(5_000, O), &RULES);
        let mut closed = Vec::new();
        table.advance(1_100, &RULES, |s| closed.push(s)); // deadline 1_100 is not passed yet
        assert!(closed.is_empty());
        table.advance(1_101, &RULES, |s| closed.push(s));
        assert_eq!(closed.len(), 1);
        assert_eq!(table.open_keys(), 1);
        // A key that keeps extending gets one re-scheduled heap entry, not many.
        for t in [5_500, 6_000, 6_400] {
            table.insert(2, ev(t, O), &RULES);
        }
        table.advance(6_200, &RULES, |s| closed.push(s));
        assert_eq!(table.open_keys(), 1);
        table.advance(7_501, &RULES, |s| closed.push(s));
        assert_eq!(closed.len(), 2);
        assert_eq!(table.open_keys(), 0);
    }

    #[test]
    fn final_prefix_closes_while_the_key_stays_open() {
        let mut table = SessionTable::default();
        // Activity every 900 ms: max length splits at 10 s, the key never goes quiet.
        for i in 0..=20 {
            table.insert(1, ev(i * 900, O), &RULES);
        }
        let mut closed = Vec::new();
        table.advance(19_000, &RULES, |s| closed.push(s));
        // The first 10-second slice (0 ..= 9.9 s) is final; the second is still open.
        assert_eq!(
            closed,
            vec![ClosedSession {
                start_day: 0,
                events: 12,
                duration_ms: 9_900,
                tag: (),
            }]
        );
        assert_eq!(table.open_keys(), 1);
        table.advance(i64::MAX, &RULES, |s| closed.push(s));
        let total: u32 = closed.iter().map(|s| s.events).sum();
        assert_eq!(total, 21);
    }

    #[test]
    fn a_final_first_session_closes_while_a_later_one_grows() {
        let mut table = SessionTable::default();
        // Session one: 0..=500. Session two starts at 3 s and keeps growing.
        for t in [0, 500, 3_000, 3_800, 4_600] {
            table.insert(1, ev(t, O), &RULES);
        }
        let mut closed = Vec::new();
        // The first deadline (1.1 s) fires before session one is final (1.6 s): the key must
        // be rescheduled for session one, not for the growing session two (5.7 s).
        table.advance(1_200, &RULES, |s| closed.push(s));
        assert!(closed.is_empty());
        table.advance(1_601, &RULES, |s| closed.push(s));
        assert_eq!(
            closed,
            vec![ClosedSession {
                start_day: 0,
                events: 2,
                duration_ms: 500,
                tag: (),
            }]
        );
    }

    proptest::proptest! {
        /// Which sessions are closed depends only on where the watermark is, not on the
        /// steps it took to get there.
        #[test]
        fn closing_depends_only_on_the_final_watermark(
            gaps in proptest::collection::vec((0i64..2_500, 0u8..10, 0i64..100), 1..60),
            key_count in 1u64..4,
        ) {
            let kinds = |k: u8| match k { 0 => Start, 1 => End, _ => O };
            let mut ts = 0;
            let mut stepped = SessionTable::default();
            let mut once = SessionTable::default();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (i, (gap, kind, behind)) in gaps.iter().enumerate() {
                ts += gap;
                let key = i as u64 % key_count;
                stepped.insert(key, ev(ts, kinds(*kind)), &RULES);
                once.insert(key, ev(ts, kinds(*kind)), &RULES);
                // The watermark trails the newest event by less than the lateness.
                stepped.advance(ts - behind, &RULES, |s| a.push((key, s)));
            }
            stepped.advance(ts, &RULES, |s| a.push((0, s)));
            once.advance(ts, &RULES, |s| b.push((0, s)));
            let mut a: Vec<ClosedSession> = a.into_iter().map(|(_, s)| s).collect();
            let mut b: Vec<ClosedSession> = b.into_iter().map(|(_, s)| s).collect();
            a.sort_by_key(|s| (s.duration_ms, s.events));
            b.sort_by_key(|s| (s.duration_ms, s.events));
            proptest::prop_assert_eq!(a, b);
            proptest::prop_assert_eq!(stepped.open_keys(), once.open_keys());
        }
    }

    #[test]
    fn a_burst_of_sessions_gives_its_memory_back_once_closed() {
        let mut table = SessionTable::default();
        for key in 0..100_000 {
            table.insert(key, ev(key as i64 % 1_000, O), &RULES);
        }
        assert!(table.open.capacity() >= 100_000);
        let per_key = table.estimated_bytes() / 100_000;
        assert!(
            (150..250).contains(&per_key),
            "{per_key} bytes per open key"
        );
        // All but a few close: the table must not keep room for the hundred thousand.
        for key in 0..10 {
            table.insert(key, ev(50_000, O), &RULES);
        }
        let mut closed = 0;
        table.advance(10_000, &RULES, |_| closed += 1);
        assert_eq!((closed, table.open_keys()), (100_000, 10));
        assert!(table.open.capacity() <= 1024, "{}", table.open.capacity());
        assert!(
            table.deadlines.capacity() <= 1024,
            "{}",
            table.deadlines.capacity()
        );
        table.close_all(&RULES, |_| closed += 1);
        assert_eq!(table.estimated_bytes(), 0);
    }

    #[test]
    fn table_round_trips() {
        let mut table = SessionTable::default();
        table.insert(1, ev(0, O), &RULES);
        table.insert(2, ev(10, O), &RULES);
        let bytes = postcard::to_stdvec(&table).unwrap();
        let mut back: SessionTable = postcard::from_bytes(&bytes).unwrap();
        back.restore_index();
        let mut closed = 0;
        back.advance(i64::MAX, &RULES, |_| closed += 1);
        assert_eq!(closed, 2);
    }
}
