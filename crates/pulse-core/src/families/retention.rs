//! Retention, lifecycle and churn: exact, live, from one small record per user.
//!
//! Per partition: a table from the user's hash key to its cohort day (first `signup`, or
//! first activity with `retention.cohort = "first_seen"`) and a bitmap of the days it was
//! active over the 64-day horizon ([`HORIZON_DAYS`]). Every figure is a count of users
//! over sets of days ending yesterday, so a partition's counts are exact and partitions'
//! counts add (users are disjoint by partition); ratios are taken in the section. No
//! sketch is ever intersected: HLL intersections are far too coarse for small cohorts.
//!
//! Why this layout: the table is a `HashMap` whose slot is 20 bytes (key and entry are
//! packed to 4-byte alignment) plus hashbrown's one control byte, so a user costs 21 bytes
//! at a full table and at most 48 just after the table doubled — the ≤ 48-byte budget holds
//! at every load, not only on average. The bitmap is anchored at the user's newest active
//! day, so the usual event (the user is already active today) is one lookup and a compare,
//! with no write.
//!
//! Events older than the retention of the other families but within the horizon still set
//! their day's bit ([`Family::apply_late`]); older ones are counted as
//! `events_beyond_horizon`. Counts are kept between snapshots: they read complete days
//! only, so they change only when the day turns (a recount) or an event of an earlier day
//! arrives, which changes one user: its part is taken out and put back
//! (`RetentionSummary::tally`).
//!
//! A user's cohort day is its first `signup` held; with `first_seen`, the first day of its
//! activity since it was last idle for the whole horizon. (A late event that falls into
//! such an idle stretch does not join the runs on either side of it again: the older run
//! has left the state.)
//!
//! Input not keyed by user puts one user on several partitions, and adding their counts
//! would count it once per partition. So whenever a partition recounts (the day turned,
//! or it is new), and at every snapshot while users are known to be shared
//! ([`SummaryPoint::merge_users`]), its summary carries its users instead of its counts
//! ([`UserImage`], sorted by key, built then and dropped with the summary): merging
//! summaries merges the users (days ORed, the earliest cohort day), and the section counts
//! the merged users. The merge also counts the users held by two partitions or more; the
//! caller turns `merge_users` on while there are any. Keyed input pays one sort of its
//! users per partition and day, and holds nothing more between snapshots.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::event::{EventKind, PartitionEvent};
use crate::families::{Family, Sections, Summary};
use crate::family::{
    RollupOut, RollupValue, Rules, SectionContext, SeriesDef, SeriesOut, counter, gauge,
};
use crate::settings::CohortMode;
use crate::time::{Day, date_of};
use crate::windows::{SummaryPoint, ratio};
use std::collections::BTreeSet;

#[derive(Debug)]
pub struct Retention;

/// Days a user's activity is held: today and the 63 before it (a `u64` of day bits).
pub const HORIZON_DAYS: Day = 64;
/// The N of day-N and on-or-after retention.
pub const RETENTION_DAYS: [Day; 4] = [1, 7, 14, 28];
/// Cohort days averaged per day-N figure.
const COHORT_DAYS: Day = 7;
/// Rows of the cohort table.
pub const TABLE_DAYS: Day = 28;

/// A user's hash key, stored as two halves so that a table slot aligns to 4 bytes (20, not
/// 24, bytes with its entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserKey([u32; 2]);

impl UserKey {
    fn of(key: u64) -> UserKey {
        UserKey([key as u32, (key >> 32) as u32])
    }

    fn get(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }
}

impl Hash for UserKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.get());
    }
}

/// The key is already a 64-bit hash (XXH3 of the user id): its own bits index the table.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("UserKey hashes as one u64")
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

/// One user: 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct UserDays {
    /// Bit `k`: active on `last - k` (the `u64` split in halves for the 4-byte alignment).
    bits: [u32; 2],
    /// The newest active day (days since 1970 fit `u16` until 2149).
    last: u16,
    /// The cohort day; 0 for none.
    cohort: u16,
}

impl UserDays {
    fn bits(&self) -> u64 {
        u64::from(self.bits[0]) | (u64::from(self.bits[1]) << 32)
    }

    fn set_bits(&mut self, bits: u64) {
        self.bits = [bits as u32, (bits >> 32) as u32];
    }

    /// The same user as another partition holds it: days ORed, the newest day the later
    /// one, the earliest cohort day (0 is none).
    fn union(&self, other: &UserDays) -> UserDays {
        let last = self.last.max(other.last);
        let aligned = |u: &UserDays| match last - u.last {
            gap @ 0..64 => u.bits() << gap,
            _ => 0,
        };
        let cohort = match (self.cohort, other.cohort) {
            (0, c) | (c, 0) => c,
            (a, b) => a.min(b),
        };
        let mut days = UserDays {
            bits: [0; 2],
            last,
            cohort,
        };
        days.set_bits(aligned(self) | aligned(other));
        days
    }

    /// Activity by age before `yesterday`: bit `j` is set if active on `yesterday - j`.
    fn ages(&self, yesterday: Day) -> u64 {
        let shift = i32::from(self.last) - yesterday;
        match shift {
            0.. if shift < 64 => self.bits() >> shift,
            ..0 if shift > -64 => self.bits() << -shift,
            _ => 0,
        }
    }
}

type Table = HashMap<UserKey, UserDays, BuildHasherDefault<KeyHasher>>;

/// `Default` is the empty state of a partition (or of a state image written before this
/// family existed).
#[derive(Debug, Clone, Default)]
pub struct RetentionState {
    users: Table,
    /// The earliest day any event of the partition was on: the days before it are not
    /// held, and figures reading them are incomplete.
    began: Option<Day>,
    /// The newest day seen: users idle for the whole horizon before it are dropped.
    newest: Day,
    /// No held user's last active day is before this (0: not known). While it is inside the
    /// horizon a new day drops nobody, so the table is not scanned for it.
    lowest_last: Day,
    /// Events older than the horizon: counted, not applied.
    beyond_horizon: u64,
    /// The cohort mode the table was built with; a restart with the other one starts over.
    mode: CohortMode,
}

/// The state as saved: a flat list of users.
#[derive(Serialize, Deserialize)]
struct SavedState {
    /// `(key, bits, last, cohort)` per user.
    users: Vec<(u64, u64, u16, u16)>,
    began: Option<Day>,
    newest: Day,
    beyond_horizon: u64,
    mode: CohortMode,
}

impl Serialize for RetentionState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut users: Vec<_> = self
            .users
            .iter()
            .map(|(k, u)| (k.get(), u.bits(), u.last, u.cohort))
            .collect();
        // A deterministic image: equal states save equal bytes.
        users.sort_unstable_by_key(|u| u.0);
        SavedState {
            users,
            began: self.began,
            newest: self.newest,
            beyond_horizon: self.beyond_horizon,
            mode: self.mode,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RetentionState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let saved = SavedState::deserialize(deserializer)?;
        let mut users = Table::with_capacity_and_hasher(saved.users.len(), Default::default());
        for (key, bits, last, cohort) in saved.users {
            let mut days = UserDays {
                bits: [0; 2],
                last,
                cohort,
            };
            days.set_bits(bits);
            users.insert(UserKey::of(key), days);
        }
        Ok(RetentionState {
            users,
            began: saved.began,
            newest: saved.newest,
            lowest_last: 0,
            beyond_horizon: saved.beyond_horizon,
            mode: saved.mode,
        })
    }
}

impl RetentionState {
    /// Users held.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Bytes of the table: its slots (20 bytes each) and control bytes (one each, plus a
    /// group's worth).
    fn table_bytes(&self) -> usize {
        let slots = if self.users.capacity() == 0 {
            0
        } else {
            (self.users.capacity() * 8 / 7).next_power_of_two()
        };
        slots * (size_of::<(UserKey, UserDays)>() + 1) + 16
    }

    /// Applies one event; false if it was only counted (beyond the horizon).
    fn apply(&mut self, event: &PartitionEvent, rules: &Rules) -> bool {
        let day = event.day;
        // Day 0 is the "no cohort" mark; days outside u16 (before 1970, after 2149) are
        // beyond any horizon a live stream has.
        let Some(day16) = u16::try_from(day).ok().filter(|d| *d > 0) else {
            self.beyond_horizon += 1;
            return false;
        };
        if !event.in_horizon {
            self.beyond_horizon += 1;
            return false;
        }
        let signup = event.kind == EventKind::Signup && rules.cohort == CohortMode::Signup;
        let first_seen = rules.cohort == CohortMode::FirstSeen;
        let user = self
            .users
            .entry(UserKey::of(event.user.key))
            .or_insert(UserDays {
                bits: [1, 0],
                last: day16,
                cohort: if first_seen { day16 } else { 0 },
            });
        // A user just inserted has `last = day`; every other `last` only grows.
        self.lowest_last = self.lowest_last.min(day);
        let last = i32::from(user.last);
        if day == last {
            // The usual case: already active today (bit 0 of `last` is always set).
            if !signup || (user.cohort != 0 && user.cohort <= day16) {
                return self.note_day(day);
            }
        } else if day > last {
            let gap = day - last;
            user.set_bits(if gap < 64 {
                (user.bits() << gap) | 1
            } else {
                1
            });
            user.last = day16;
            if gap >= HORIZON_DAYS && first_seen {
                // Idle for the whole horizon: a new first activity, as if dropped.
                user.cohort = day16;
            }
        } else if last - day < 64 {
            user.set_bits(user.bits() | (1 << (last - day)));
            if first_seen && day16 < user.cohort {
                user.cohort = day16;
            }
        }
        if signup && (user.cohort == 0 || day16 < user.cohort) {
            user.cohort = day16;
        }
        self.note_day(day)
    }

    /// Keeps `began` and `newest`; on a new day, drops the users idle for the horizon.
    #[inline]
    fn note_day(&mut self, day: Day) -> bool {
        // Nearly every event is on a day already seen: two compares, inline.
        if day <= self.newest && self.began.is_some_and(|b| b <= day) {
            return true;
        }
        self.note_new_day(day)
    }

    #[cold]
    fn note_new_day(&mut self, day: Day) -> bool {
        if self.began.is_none_or(|b| day < b) {
            self.began = Some(day);
        }
        if day > self.newest {
            self.newest = day;
            let oldest = day - HORIZON_DAYS;
            if self.lowest_last > oldest {
                return true;
            }
            let mut lowest = Day::MAX;
            self.users.retain(|_, u| {
                let last = i32::from(u.last);
                if last > oldest {
                    lowest = lowest.min(last);
                }
                last > oldest
            });
            self.lowest_last = lowest;
            // Below half full a slot costs over 48 bytes per user held: give memory back.
            if self.users.len() < self.users.capacity() / 2 {
                self.users.shrink_to_fit();
            }
        }
        true
    }

    /// The partition's counts as of `today`.
    fn summarize(&self, today: Day) -> RetentionSummary {
        let mut s = RetentionSummary {
            today,
            mode: self.mode,
            began: self.began,
            users: self.users.len() as u64,
            beyond_horizon: self.beyond_horizon,
            ..RetentionSummary::default()
        };
        for user in self.users.values() {
            s.tally(user, true);
        }
        s
    }
}

/// One user of a [`UserImage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct HeldUser {
    key: u64,
    days: UserDays,
    /// Partitions holding the user, and the lowest of their numbers (the engine numbers
    /// partitions below 2^16): 24 bytes a user.
    holders: u16,
    first: u16,
}

/// Some partitions' users, sorted by key, each once: what a summary carries instead of
/// counts when users may be shared between partitions. Lives only as long as a snapshot (or
/// a summary on the summaries topic).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserImage {
    users: Vec<HeldUser>,
    /// Users held by two partitions or more.
    shared: u64,
    /// The partitions holding a shared user.
    sharing: BTreeSet<u16>,
}

impl UserImage {
    /// Partition `partition`'s users.
    fn of(state: &RetentionState, partition: u32) -> UserImage {
        let partition = u16::try_from(partition).unwrap_or(u16::MAX);
        let mut users: Vec<HeldUser> = state
            .users
            .iter()
            .map(|(key, days)| HeldUser {
                key: key.get(),
                days: *days,
                holders: 1,
                first: partition,
            })
            .collect();
        users.sort_unstable_by_key(|u| u.key);
        UserImage {
            users,
            ..UserImage::default()
        }
    }

    /// The users of both, merged by key.
    fn merge(&self, other: &UserImage) -> UserImage {
        let (a, b) = (&self.users, &other.users);
        let mut merged = UserImage {
            users: Vec::with_capacity(a.len().max(b.len())),
            shared: self.shared + other.shared,
            sharing: self.sharing.union(&other.sharing).copied().collect(),
        };
        let (mut i, mut j) = (0, 0);
        loop {
            let user = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.key == y.key => {
                    // A user counts once, when it first meets a second partition.
                    match (x.holders > 1, y.holders > 1) {
                        (false, false) => merged.shared += 1,
                        (true, true) => merged.shared -= 1,
                        _ => {}
                    }
                    merged.sharing.extend([x.first, y.first]);
                    (i, j) = (i + 1, j + 1);
                    HeldUser {
                        key: x.key,
                        days: x.days.union(&y.days),
                        holders: x.holders + y.holders,
                        first: x.first.min(y.first),
                    }
                }
                (Some(x), Some(y)) if x.key < y.key => {
                    i += 1;
                    *x
                }
                (Some(x), None) => {
                    i += 1;
                    *x
                }
                (_, Some(y)) => {
                    j += 1;
                    *y
                }
                (None, None) => break,
            };
            merged.users.push(user);
        }
        merged
    }
}

/// Day-N counts over the cohort days of one N.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CohortCounts {
    /// Σ |cohort(d)|.
    pub cohort: u64,
    /// Σ |cohort(d) ∩ active(d + N)|.
    pub active: u64,
}

/// One row of the cohort table: cohort `yesterday - row`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CohortRow {
    pub size: u64,
    /// Cell `k`: active on the cohort day + k (up to yesterday).
    pub active: [u64; TABLE_DAYS as usize],
}

impl Default for CohortRow {
    fn default() -> Self {
        CohortRow {
            size: 0,
            active: [0; TABLE_DAYS as usize],
        }
    }
}

/// Users of a period by lifecycle status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub new: u64,
    pub returning: u64,
    pub resurrecting: u64,
    pub dormant: u64,
}

impl Lifecycle {
    fn tally(&mut self, now: bool, before: bool, new: bool, add: bool) {
        let new = now && new;
        count(&mut self.new, new, add);
        count(&mut self.returning, now && before && !new, add);
        count(&mut self.resurrecting, now && !before && !new, add);
        count(&mut self.dormant, before && !now, add);
    }

    fn merge(&mut self, other: &Lifecycle) {
        self.new += other.new;
        self.returning += other.returning;
        self.resurrecting += other.resurrecting;
        self.dormant += other.dormant;
    }
}

/// Counts of a period (7 or 30 days ending yesterday) against the one before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeriodCounts {
    /// |active(P)|.
    pub active: u64,
    /// |active(P′)|.
    pub active_before: u64,
    /// |active(P′) \ active(P)|.
    pub lost: u64,
    /// Users whose cohort day is in P.
    pub new: u64,
}

/// A partition's (or several partitions') counts: they add, since users are disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionSummary {
    pub today: Day,
    pub mode: CohortMode,
    pub began: Option<Day>,
    pub users: u64,
    pub beyond_horizon: u64,
    /// By [`RETENTION_DAYS`] position.
    pub day_n: [CohortCounts; 4],
    pub on_or_after: [u64; 4],
    /// Row `r`: cohort `yesterday - r`.
    pub cohorts: [CohortRow; TABLE_DAYS as usize],
    pub lifecycle_day: Lifecycle,
    pub lifecycle_week: Lifecycle,
    /// 7 days, then 30.
    pub periods: [PeriodCounts; 2],
    /// The users of the partitions that carried them instead of counts (see the module
    /// comment); the section counts them.
    pub image: Option<UserImage>,
}

/// Days `from .. from + days` before yesterday, as a mask of ages.
fn span(from: u32, days: u32) -> u64 {
    ((1u64 << days) - 1) << from
}

/// Counts one user in (`add`) or out of a count.
fn count(counter: &mut u64, on: bool, add: bool) {
    if on {
        if add {
            *counter += 1;
        } else {
            *counter -= 1;
        }
    }
}

impl RetentionSummary {
    /// Adds one user's part to the counts, or (`add` false) takes it away: a late event
    /// changes one user, so kept counts are patched rather than recounted.
    fn tally(&mut self, user: &UserDays, add: bool) {
        let y = self.today - 1;
        let ages = user.ages(y);
        let cohort = (user.cohort != 0).then(|| i32::from(user.cohort));
        let on = |age: Day| ages >> age & 1 == 1;
        if let Some(c) = cohort {
            for (i, n) in RETENTION_DAYS.iter().enumerate() {
                // Cohort days d with d + N <= y, the 7 most recent.
                let age = y - n - c;
                if (0..COHORT_DAYS).contains(&age) {
                    count(&mut self.day_n[i].cohort, true, add);
                    count(&mut self.day_n[i].active, on(age), add);
                    // Any day of [c + N, y]: ages 0..=age.
                    let since = ages & span(0, age as u32 + 1) != 0;
                    count(&mut self.on_or_after[i], since, add);
                }
            }
            let row = y - c;
            if (0..TABLE_DAYS).contains(&row) {
                let cells = &mut self.cohorts[row as usize];
                count(&mut cells.size, true, add);
                // Cell k: active on c + k, of age row - k.
                for k in 0..=row {
                    count(&mut cells.active[k as usize], on(row - k), add);
                }
            }
        }
        let new_on = |mask: u64| {
            cohort.is_some_and(|c| (0..64).contains(&(y - c)) && mask >> (y - c) & 1 == 1)
        };
        let (week, week_before) = (span(0, 7), span(7, 7));
        let (month, month_before) = (span(0, 30), span(30, 30));
        self.lifecycle_day
            .tally(on(0), on(1), new_on(span(0, 1)), add);
        self.lifecycle_week
            .tally(ages & week != 0, ages & week_before != 0, new_on(week), add);
        for (period, (current, before)) in [(week, week_before), (month, month_before)]
            .into_iter()
            .enumerate()
        {
            let (now, then) = (ages & current != 0, ages & before != 0);
            let p = &mut self.periods[period];
            count(&mut p.active, now, add);
            count(&mut p.active_before, then, add);
            count(&mut p.lost, then && !now, add);
            count(&mut p.new, new_on(current), add);
        }
    }

    /// Takes other partitions' users in: merged with these, or moved in (copied only when
    /// borrowed) when these carry none.
    fn join_users(&mut self, theirs: Option<Cow<'_, UserImage>>) {
        self.image = match (self.image.take(), theirs) {
            (Some(mine), Some(theirs)) => Some(mine.merge(&theirs)),
            (mine, theirs) => mine.or_else(|| theirs.map(Cow::into_owned)),
        };
    }

    /// Takes another partition's counts in (its users: [`RetentionSummary::join_users`]).
    fn add(&mut self, other: &RetentionSummary) {
        let into = self;
        into.today = into.today.max(other.today);
        if other.began.is_some() {
            // Every partition runs with the same rules; an empty summary has no say.
            into.mode = other.mode;
        }
        into.began = match (into.began, other.began) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        into.users += other.users;
        into.beyond_horizon += other.beyond_horizon;
        for (mine, theirs) in into.day_n.iter_mut().zip(&other.day_n) {
            mine.cohort += theirs.cohort;
            mine.active += theirs.active;
        }
        for (mine, theirs) in into.on_or_after.iter_mut().zip(&other.on_or_after) {
            *mine += theirs;
        }
        for (mine, theirs) in into.cohorts.iter_mut().zip(&other.cohorts) {
            mine.size += theirs.size;
            for (m, t) in mine.active.iter_mut().zip(&theirs.active) {
                *m += t;
            }
        }
        into.lifecycle_day.merge(&other.lifecycle_day);
        into.lifecycle_week.merge(&other.lifecycle_week);
        for (mine, theirs) in into.periods.iter_mut().zip(&other.periods) {
            mine.active += theirs.active;
            mine.active_before += theirs.active_before;
            mine.lost += theirs.lost;
            mine.new += theirs.new;
        }
    }
}

/// The counts of the last summary: valid until the day turns, and patched by events of
/// earlier days (only they can change a figure).
#[derive(Debug, Clone, Default)]
pub struct RetentionCache {
    kept: Option<RetentionSummary>,
    /// The partition's number (from its events), to name it when it shares users.
    partition: u32,
}

/// A figure by N (`"1"`, `"7"`, `"14"`, `"28"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ByN<T = f64> {
    #[serde(rename = "1")]
    pub d1: T,
    #[serde(rename = "7")]
    pub d7: T,
    #[serde(rename = "14")]
    pub d14: T,
    #[serde(rename = "28")]
    pub d28: T,
}

impl<T: Copy> ByN<T> {
    fn from_fn(mut f: impl FnMut(usize) -> T) -> ByN<T> {
        ByN {
            d1: f(0),
            d7: f(1),
            d14: f(2),
            d28: f(3),
        }
    }

    pub fn labelled(&self) -> [(&'static str, T); 4] {
        [
            ("1", self.d1),
            ("7", self.d7),
            ("14", self.d14),
            ("28", self.d28),
        ]
    }
}

/// One row of `retention.cohorts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CohortTableRow {
    /// `YYYY-MM-DD` in the configured zone.
    pub day: String,
    pub size: u64,
    /// Index k: |cohort(day) ∩ active(day + k)|, k = 0 … yesterday − day.
    pub active: Vec<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionKpis {
    /// Whether every cohort day and day read is held (and, for `first_seen`, the whole
    /// horizon is).
    pub complete: bool,
    /// `signup` or `first_seen`.
    pub cohort: String,
    pub day_n: ByN,
    pub on_or_after: ByN,
    /// Σ |cohort(d)| over the cohort days of each N: how many users a ratio stands on.
    pub cohort_users: ByN<u64>,
    /// The 28 most recent cohort days, newest last.
    pub cohorts: Vec<CohortTableRow>,
    /// Users held in the retention state.
    pub users: u64,
    /// Events older than the 64-day horizon: counted, not applied.
    pub events_beyond_horizon: u64,
    /// Users held by two partitions or more, as of the last snapshot that merged users (0
    /// for input keyed by user): sessions are split where this is not 0.
    pub users_on_several_partitions: u64,
    /// The partitions (engine numbers) holding those users.
    pub partitions_sharing_users: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecycleKpis {
    pub complete: bool,
    /// Yesterday against the day before.
    pub day: Lifecycle,
    /// The 7 days ending yesterday against the 7 before.
    pub week: Lifecycle,
}

/// Ratios over the 7 and 30 days ending yesterday.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PeriodRatios {
    pub complete: bool,
    #[serde(rename = "7d")]
    pub d7: f64,
    #[serde(rename = "30d")]
    pub d30: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionSection {
    pub retention: RetentionKpis,
    pub lifecycle: LifecycleKpis,
    /// |active(P′) \ active(P)| ÷ |active(P′)|; `churn.d30` is what lifetime value reads.
    pub churn: PeriodRatios,
    /// (|active(P)| − new in P) ÷ |active(P′)|.
    pub retention_rate: PeriodRatios,
}

pub const RETENTION_RATIO: SeriesDef = gauge(
    "pulse_retention_ratio",
    &["day", "mode"],
    "Share of the 7 most recent cohorts active on day N after (mode day_n) or on any day since (mode on_or_after).",
);
pub const RETENTION_COHORT_USERS: SeriesDef = gauge(
    "pulse_retention_cohort_users",
    &["day"],
    "Users of the 7 cohorts day-N retention averages over: what the ratio stands on.",
);
pub const LIFECYCLE_USERS: SeriesDef = gauge(
    "pulse_lifecycle_users",
    &["period", "status"],
    "Users of yesterday (period day) or the 7 days ending yesterday (week) by lifecycle status.",
);
pub const CHURN_RATIO: SeriesDef = gauge(
    "pulse_churn_ratio",
    &["period"],
    "Share of the users active in the period before (7 or 30 days) not active in the period ending yesterday.",
);
pub const RETENTION_RATE_RATIO: SeriesDef = gauge(
    "pulse_retention_rate_ratio",
    &["period"],
    "(Active users of the period ending yesterday - its new users) / active users of the period before.",
);
pub const RETENTION_COMPLETE: SeriesDef = gauge(
    "pulse_retention_complete",
    &["family"],
    "1 when every day a figure family (retention, lifecycle, churn, retention_rate) reads is held; alerts stay silent otherwise.",
);
pub const RETENTION_USERS: SeriesDef = gauge(
    "pulse_retention_users",
    &[],
    "Users held in the exact retention state (active within the 64-day horizon).",
);
pub const USERS_ON_SEVERAL_PARTITIONS: SeriesDef = gauge(
    "pulse_users_on_several_partitions",
    &[],
    "Users held by two input partitions or more: the input is not keyed by user (see kafka.repartition); sessions are split, retention stays exact.",
);
pub const RETENTION_BEYOND_HORIZON: SeriesDef = counter(
    "pulse_retention_events_beyond_horizon_total",
    &[],
    "Events older than the 64-day retention horizon: counted, not applied.",
);

impl Family for Retention {
    type State = RetentionState;
    type Cache = RetentionCache;
    type Summary = RetentionSummary;
    type Section = RetentionSection;

    const SERIES: &'static [SeriesDef] = &[
        RETENTION_RATIO,
        RETENTION_COHORT_USERS,
        LIFECYCLE_USERS,
        CHURN_RATIO,
        RETENTION_RATE_RATIO,
        RETENTION_COMPLETE,
        RETENTION_USERS,
        RETENTION_BEYOND_HORIZON,
        USERS_ON_SEVERAL_PARTITIONS,
    ];

    fn new_state(rules: &Rules) -> RetentionState {
        RetentionState {
            mode: rules.cohort,
            ..RetentionState::default()
        }
    }

    fn restore(state: &mut RetentionState, rules: &Rules) {
        if state.mode != rules.cohort {
            // Cohort days of the other mode mean something else: start over.
            *state = Retention::new_state(rules);
        }
    }

    fn apply(
        state: &mut RetentionState,
        cache: &mut RetentionCache,
        event: &PartitionEvent,
        rules: &Rules,
    ) {
        cache.partition = event.partition;
        match cache.kept.as_mut() {
            // Figures read complete days only: an event of one patches its user's part.
            Some(kept) if event.day < kept.today => {
                let key = UserKey::of(event.user.key);
                let before = state.users.get(&key).copied();
                if state.apply(event, rules) {
                    if let Some(user) = before {
                        kept.tally(&user, false);
                    }
                    if let Some(user) = state.users.get(&key) {
                        kept.tally(user, true);
                    }
                }
            }
            _ => {
                state.apply(event, rules);
            }
        }
    }

    fn apply_late(
        state: &mut RetentionState,
        cache: &mut RetentionCache,
        event: &PartitionEvent,
        rules: &Rules,
    ) {
        Retention::apply(state, cache, event, rules);
    }

    fn summarize(
        state: &RetentionState,
        cache: &mut RetentionCache,
        at: SummaryPoint,
        _: &Rules,
    ) -> RetentionSummary {
        let (summary, recounted) = match &cache.kept {
            Some(kept) if kept.today == at.today => (
                RetentionSummary {
                    users: state.users.len() as u64,
                    beyond_horizon: state.beyond_horizon,
                    began: state.began,
                    ..kept.clone()
                },
                false,
            ),
            _ => {
                let summary = state.summarize(at.today);
                cache.kept = Some(summary.clone());
                (summary, true)
            }
        };
        if !(recounted || at.merge_users) {
            return summary;
        }
        // The users instead of their counts: the section counts them once merged.
        RetentionSummary {
            today: summary.today,
            mode: summary.mode,
            began: summary.began,
            beyond_horizon: summary.beyond_horizon,
            image: Some(UserImage::of(state, cache.partition)),
            ..RetentionSummary::default()
        }
    }

    fn merge(into: &mut RetentionSummary, mut other: RetentionSummary, _: &Rules) {
        let theirs = other.image.take();
        into.add(&other);
        into.join_users(theirs.map(Cow::Owned));
    }

    fn estimated_bytes(state: &RetentionState, _: &RetentionCache) -> usize {
        state.table_bytes()
    }

    fn check(state: &RetentionState, counts: &mut Vec<u64>) -> Result<(), String> {
        for user in state.users.values() {
            // `last` is an active day, and the cohort day is one too, never after it.
            if user.bits() & 1 == 0 || user.last == 0 || user.cohort > user.last {
                return Err("retention: a user's days are inconsistent".into());
            }
        }
        counts.push(state.beyond_horizon);
        Ok(())
    }

    fn section(summaries: &[Summary], _: &Sections, _: &SectionContext<'_>) -> RetentionSection {
        let mut s = RetentionSummary::default();
        for summary in summaries {
            s.add(&summary.retention);
            s.join_users(summary.retention.image.as_ref().map(Cow::Borrowed));
        }
        let image = s.image.take().unwrap_or_default();
        s.users += image.users.len() as u64;
        for user in &image.users {
            s.tally(&user.days, true);
        }
        let y = s.today - 1;
        // A family is complete when its earliest day read is held.
        let held = |earliest: Day| s.began.is_some_and(|b| b <= earliest);
        let cohorts_held = s.mode == CohortMode::Signup || held(s.today - (HORIZON_DAYS - 1));
        let rate = |p: &PeriodCounts| {
            ratio(
                p.active.saturating_sub(p.new) as f64,
                p.active_before as f64,
            )
        };
        let churn = |p: &PeriodCounts| ratio(p.lost as f64, p.active_before as f64);
        // Before the first event there are no days to name.
        let rows = if s.began.is_some() { TABLE_DAYS } else { 0 };
        let cohorts = (0..rows)
            .rev()
            .map(|row| {
                let cells = &s.cohorts[row as usize];
                CohortTableRow {
                    day: date_of(y - row).to_string(),
                    size: cells.size,
                    active: cells.active[..=row as usize].to_vec(),
                }
            })
            .collect();
        let last_n = RETENTION_DAYS[RETENTION_DAYS.len() - 1];
        RetentionSection {
            retention: RetentionKpis {
                complete: cohorts_held && held(y - last_n - (COHORT_DAYS - 1)),
                cohort: s.mode.as_str().to_owned(),
                day_n: ByN::from_fn(|i| ratio(s.day_n[i].active as f64, s.day_n[i].cohort as f64)),
                on_or_after: ByN::from_fn(|i| {
                    ratio(s.on_or_after[i] as f64, s.day_n[i].cohort as f64)
                }),
                cohort_users: ByN::from_fn(|i| s.day_n[i].cohort),
                cohorts,
                users: s.users,
                events_beyond_horizon: s.beyond_horizon,
                users_on_several_partitions: image.shared,
                partitions_sharing_users: image.sharing.into_iter().map(u32::from).collect(),
            },
            lifecycle: LifecycleKpis {
                complete: cohorts_held && held(y - 13),
                day: s.lifecycle_day,
                week: s.lifecycle_week,
            },
            churn: PeriodRatios {
                complete: held(y - 59),
                d7: churn(&s.periods[0]),
                d30: churn(&s.periods[1]),
            },
            retention_rate: PeriodRatios {
                complete: cohorts_held && held(y - 59),
                d7: rate(&s.periods[0]),
                d30: rate(&s.periods[1]),
            },
        }
    }

    fn series(sections: &Sections, out: &mut dyn SeriesOut) {
        let s = &sections.retention;
        for (mode, by_n) in [
            ("day_n", &s.retention.day_n),
            ("on_or_after", &s.retention.on_or_after),
        ] {
            for (day, v) in by_n.labelled() {
                out.sample(&RETENTION_RATIO, &[day, mode], v);
            }
        }
        for (day, users) in s.retention.cohort_users.labelled() {
            out.sample(&RETENTION_COHORT_USERS, &[day], users as f64);
        }
        for (period, l) in [("day", &s.lifecycle.day), ("week", &s.lifecycle.week)] {
            for (status, v) in [
                ("new", l.new),
                ("returning", l.returning),
                ("resurrecting", l.resurrecting),
                ("dormant", l.dormant),
            ] {
                out.sample(&LIFECYCLE_USERS, &[period, status], v as f64);
            }
        }
        for (period, c, r) in [
            ("7d", s.churn.d7, s.retention_rate.d7),
            ("30d", s.churn.d30, s.retention_rate.d30),
        ] {
            out.sample(&CHURN_RATIO, &[period], c);
            out.sample(&RETENTION_RATE_RATIO, &[period], r);
        }
        for (family, complete) in [
            ("retention", s.retention.complete),
            ("lifecycle", s.lifecycle.complete),
            ("churn", s.churn.complete),
            ("retention_rate", s.retention_rate.complete),
        ] {
            out.sample(
                &RETENTION_COMPLETE,
                &[family],
                f64::from(u8::from(complete)),
            );
        }
        out.sample(&RETENTION_USERS, &[], s.retention.users as f64);
        out.sample(
            &RETENTION_BEYOND_HORIZON,
            &[],
            s.retention.events_beyond_horizon as f64,
        );
        out.sample(
            &USERS_ON_SEVERAL_PARTITIONS,
            &[],
            s.retention.users_on_several_partitions as f64,
        );
    }

    /// The cohort triangle, one cell per record: the rollup of day P carries the cells of
    /// day P − 1 (its yesterday, the newest complete day), one per cohort day d, with
    /// `day_offset` k = P − 1 − d, and each cohort's size in the rollup of the day after it.
    /// Every cell so appears in exactly one period, and a warehouse holding all periods holds
    /// the whole triangle; `final` is the period's.
    fn rollups(sections: &Sections, _: &[Summary], out: &mut RollupOut<'_>) {
        for row in &sections.retention.retention.cohorts {
            // A day nobody signed up on has no cells (a cohort never shrinks, so no zero is
            // needed to overwrite anything).
            if row.size == 0 {
                continue;
            }
            let k = row.active.len() - 1;
            let offset = k.to_string();
            if k == 0 {
                out.push(RollupValue {
                    metric: "retention_cohort_size",
                    window: 0,
                    dimensions: &[("cohort_day", &row.day)],
                    value: row.size as f64,
                    sketch: None,
                });
            }
            out.push(RollupValue {
                metric: "retention_cohort_active",
                window: 0,
                dimensions: &[("cohort_day", &row.day), ("day_offset", &offset)],
                value: row.active[k] as f64,
                sketch: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::EngineSettings;
    use crate::sketch::UserHash;

    const TODAY: Day = 20_500;

    fn event(user: u32, day: Day, kind: EventKind) -> PartitionEvent {
        PartitionEvent {
            partition: 0,
            user: UserHash::of(&format!("u{user}")),
            session_key: 0,
            ts_ms: i64::from(day) * 86_400_000,
            day,
            kind,
            feature: None,
            sessionize: true,
            in_retention: true,
            in_horizon: true,
            outcome: None,
            dims: Default::default(),
            tags: Default::default(),
        }
    }

    fn rules(cohort: CohortMode) -> Rules {
        Rules::of(&EngineSettings {
            retention_cohort: cohort,
            ..EngineSettings::default()
        })
    }

    fn section_of(states: &[&RetentionState], today: Day) -> RetentionSection {
        let summaries: Vec<Summary> = states
            .iter()
            .map(|state| Summary {
                retention: state.summarize(today),
                ..Summary::default()
            })
            .collect();
        let router = crate::ingest::Ingestor::new(&EngineSettings::default(), 0);
        let cx = SectionContext {
            router: router.state(),
            shape: Rules::of(&EngineSettings::default()).shape,
        };
        Retention::section(&summaries, &Sections::default(), &cx)
    }

    #[test]
    fn day_bits_follow_the_newest_day_in_any_arrival_order() {
        let rules = rules(CohortMode::Signup);
        let mut state = Retention::new_state(&rules);
        for day in [TODAY - 3, TODAY - 10, TODAY - 1, TODAY - 3, TODAY - 63] {
            state.apply(&event(1, day, EventKind::Login), &rules);
        }
        let user = state.users.values().next().unwrap();
        assert_eq!(i32::from(user.last), TODAY - 1);
        let ages = user.ages(TODAY - 1);
        assert_eq!(ages, 1 | 1 << 2 | 1 << 9 | 1 << 62);
        assert_eq!(user.ages(TODAY), ages << 1, "one day later, one age older");
        state.apply(&event(1, TODAY + 70, EventKind::Login), &rules);
        assert_eq!(state.users(), 1, "active again: held, its old days gone");
        assert_eq!(state.users.values().next().unwrap().bits(), 1);
    }

    #[test]
    fn events_beyond_the_horizon_are_counted_not_applied() {
        let rules = rules(CohortMode::Signup);
        let mut state = Retention::new_state(&rules);
        let mut old = event(1, TODAY - 64, EventKind::Signup);
        old.in_retention = false;
        old.in_horizon = false;
        let mut cache = RetentionCache::default();
        Retention::apply_late(&mut state, &mut cache, &old, &rules);
        assert_eq!((state.users(), state.beyond_horizon), (0, 1));
        old.in_horizon = true;
        Retention::apply_late(&mut state, &mut cache, &old, &rules);
        assert_eq!((state.users(), state.beyond_horizon), (1, 1));
    }

    #[test]
    fn users_idle_for_the_horizon_are_dropped() {
        let rules = rules(CohortMode::Signup);
        let mut state = Retention::new_state(&rules);
        state.apply(&event(1, TODAY - 64, EventKind::Login), &rules);
        state.apply(&event(2, TODAY - 63, EventKind::Login), &rules);
        state.apply(&event(3, TODAY, EventKind::Login), &rules);
        assert_eq!(state.users(), 2, "user 1's last day left the horizon");
        for user in 10..10_000 {
            state.apply(&event(user, TODAY, EventKind::Login), &rules);
        }
        state.apply(&event(1, TODAY + 64, EventKind::Login), &rules);
        assert_eq!(state.users(), 1);
        assert!(
            state.table_bytes() <= 48 + 21 * 4 + 16,
            "the table shrank with its users"
        );
    }

    #[test]
    fn figures_of_a_small_cohort_and_their_merge_across_partitions() {
        let rules = rules(CohortMode::Signup);
        let y = TODAY - 1;
        let (mut a, mut b) = (Retention::new_state(&rules), Retention::new_state(&rules));
        // The whole history is held: the state began 70 days ago.
        a.apply(&event(0, TODAY - 63, EventKind::Login), &rules);
        // Cohort of y - 1: users 1, 2 (a) and 3 (b); 1 and 3 came back on y.
        a.apply(&event(1, y - 1, EventKind::Signup), &rules);
        a.apply(&event(2, y - 1, EventKind::Signup), &rules);
        b.apply(&event(3, y - 1, EventKind::Signup), &rules);
        a.apply(&event(1, y, EventKind::Login), &rules);
        b.apply(&event(3, y, EventKind::PageView), &rules);
        // User 4 was active the week before and not since: churned, dormant.
        b.apply(&event(4, y - 8, EventKind::Login), &rules);
        let s = section_of(&[&a, &b], TODAY);
        assert!((s.retention.day_n.d1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.retention.on_or_after.d1, s.retention.day_n.d1);
        assert_eq!(
            s.retention.day_n.d7, 0.0,
            "no cohort yet: a zero denominator is 0"
        );
        let newest = s.retention.cohorts.last().unwrap();
        assert_eq!((newest.size, &newest.active), (0, &vec![0]));
        let row = &s.retention.cohorts[s.retention.cohorts.len() - 2];
        assert_eq!(row.day, date_of(y - 1).to_string());
        assert_eq!((row.size, &row.active), (3, &vec![3, 2]));
        assert_eq!(
            s.lifecycle.day,
            Lifecycle {
                new: 0,
                returning: 2,
                resurrecting: 0,
                dormant: 1
            }
        );
        assert_eq!(
            s.lifecycle.week,
            Lifecycle {
                new: 3,
                returning: 0,
                resurrecting: 0,
                dormant: 1
            }
        );
        assert_eq!(s.churn.d7, 1.0);
        // (3 active - 3 new) / 1 active the week before.
        assert_eq!(s.retention_rate.d7, 0.0);
        assert!(s.lifecycle.complete && s.churn.complete && s.retention.complete);
        let late = section_of(&[&b], TODAY);
        assert!(!late.lifecycle.complete, "b alone began 9 days ago");
    }

    #[test]
    fn users_spread_over_partitions_merge_to_the_figures_of_one_partition() {
        for cohort in [CohortMode::Signup, CohortMode::FirstSeen] {
            let rules = rules(cohort);
            let mut parts: Vec<RetentionState> =
                (0..3).map(|_| Retention::new_state(&rules)).collect();
            let mut caches = vec![RetentionCache::default(); 3];
            let mut whole = Retention::new_state(&rules);
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = |below: u64| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (seed >> 33) % below
            };
            // Users 0..100 stay on partition 0 (keyed); the rest land anywhere.
            for _ in 0..3_000 {
                let user = next(400) as u32;
                let p = if user < 100 { 0 } else { next(3) as usize };
                let kind = if next(6) == 0 {
                    EventKind::Signup
                } else {
                    EventKind::Login
                };
                let mut e = event(user, TODAY - next(70) as Day, kind);
                e.partition = p as u32;
                e.in_horizon = e.day > TODAY - HORIZON_DAYS;
                Retention::apply(&mut parts[p], &mut caches[p], &e, &rules);
                whole.apply(&e, &rules);
            }
            let shared = (100..400u32)
                .filter(|u| {
                    let key = UserKey::of(UserHash::of(&format!("u{u}")).key);
                    parts.iter().filter(|p| p.users.contains_key(&key)).count() > 1
                })
                .count() as u64;
            assert!(shared > 100, "{shared} users on several partitions");
            let cx_rules = Rules::of(&EngineSettings::default());
            for merge_users in [false, true] {
                // The first summaries recount (the users are carried), the next ones carry
                // them because the caller says users are shared.
                let at = SummaryPoint {
                    today: TODAY,
                    now_minute: 0,
                    merge_users,
                };
                let mut worker = Summary::default();
                for (state, cache) in parts.iter().zip(&mut caches) {
                    let summary = Summary {
                        retention: Retention::summarize(state, cache, at, &rules),
                        ..Summary::default()
                    };
                    assert!(summary.retention.image.is_some());
                    worker.merge(summary, &cx_rules);
                }
                let router = crate::ingest::Ingestor::new(&EngineSettings::default(), 0);
                let cx = SectionContext {
                    router: router.state(),
                    shape: cx_rules.shape,
                };
                let merged = Retention::section(&[worker], &Sections::default(), &cx);
                let expected = section_of(&[&whole], TODAY);
                assert_eq!(merged.retention.users_on_several_partitions, shared);
                assert_eq!(merged.retention.partitions_sharing_users, vec![0, 1, 2]);
                let without = |mut s: RetentionSection| {
                    s.retention.users_on_several_partitions = 0;
                    s.retention.partitions_sharing_users.clear();
                    s
                };
                assert_eq!(without(merged), expected, "{cohort:?}");
            }
        }
    }

    #[test]
    fn first_seen_cohorts_are_the_first_active_day_and_incomplete_until_the_horizon_is_held() {
        let rules = rules(CohortMode::FirstSeen);
        let mut state = Retention::new_state(&rules);
        state.apply(&event(1, TODAY - 2, EventKind::Login), &rules);
        state.apply(&event(1, TODAY - 5, EventKind::Login), &rules);
        assert_eq!(
            i32::from(state.users.values().next().unwrap().cohort),
            TODAY - 5
        );
        let s = section_of(&[&state], TODAY);
        assert_eq!(s.retention.cohort, "first_seen");
        assert!(!s.retention.complete && !s.lifecycle.complete);
        state.apply(&event(2, TODAY - 63, EventKind::Login), &rules);
        assert!(section_of(&[&state], TODAY).lifecycle.complete);
    }

    #[test]
    fn kept_counts_patched_by_events_of_earlier_days_equal_a_recount() {
        for cohort in [CohortMode::Signup, CohortMode::FirstSeen] {
            let rules = rules(cohort);
            let mut state = Retention::new_state(&rules);
            let mut cache = RetentionCache::default();
            // A small linear congruential generator: events of 300 users over 70 days,
            // a fifth of them signups, in no order at all.
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut next = |below: u64| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (seed >> 33) % below
            };
            for round in 0..40 {
                let today = TODAY + round / 4;
                let at = SummaryPoint {
                    today,
                    now_minute: 0,
                    ..SummaryPoint::default()
                };
                Retention::summarize(&state, &mut cache, at, &rules);
                for _ in 0..200 {
                    let day = today - next(70) as Day;
                    let kind = if next(5) == 0 {
                        EventKind::Signup
                    } else {
                        EventKind::Login
                    };
                    let mut e = event(next(300) as u32, day, kind);
                    e.in_horizon = day > today - HORIZON_DAYS;
                    Retention::apply(&mut state, &mut cache, &e, &rules);
                }
                let kept = Retention::summarize(&state, &mut cache, at, &rules);
                assert_eq!(kept, state.summarize(today), "{cohort:?}, round {round}");
            }
        }
    }

    #[test]
    fn a_saved_state_restores_equal_and_a_mode_change_starts_over() {
        let rules = rules(CohortMode::Signup);
        let mut state = Retention::new_state(&rules);
        for user in 0..100 {
            state.apply(
                &event(user, TODAY - (user as Day % 40), EventKind::Signup),
                &rules,
            );
        }
        let image = postcard::to_allocvec(&state).unwrap();
        let mut back: RetentionState = postcard::from_bytes(&image).unwrap();
        Retention::restore(&mut back, &rules);
        assert_eq!(back.summarize(TODAY), state.summarize(TODAY));
        assert_eq!(postcard::to_allocvec(&back).unwrap(), image);
        Retention::restore(&mut back, &self::rules(CohortMode::FirstSeen));
        assert_eq!(back.users(), 0);
    }

    #[test]
    fn a_state_saved_before_the_family_existed_loads_with_it_empty() {
        use crate::families::{FamilyImage, KpiCaches, KpiState};
        let rules = rules(CohortMode::Signup);
        let mut kpis = KpiState::new(&rules);
        let mut caches = KpiCaches::default();
        kpis.apply(&mut caches, &event(1, TODAY, EventKind::Signup), &rules);
        assert_eq!(kpis.retention.users(), 1);
        // The image an older pulse wrote: every family's but this one's.
        let images: Vec<FamilyImage> =
            postcard::from_bytes(&postcard::to_allocvec(&kpis).unwrap()).unwrap();
        let older: Vec<FamilyImage> = images
            .into_iter()
            .filter(|i| i.family != "retention")
            .collect();
        let mut loaded: KpiState =
            postcard::from_bytes(&postcard::to_allocvec(&older).unwrap()).unwrap();
        loaded.restore(&rules);
        assert_eq!(loaded.retention.users(), 0);
        assert!(
            loaded.activity.holds(TODAY),
            "the other families are as saved"
        );
        loaded.apply(&mut caches, &event(2, TODAY, EventKind::Login), &rules);
        assert_eq!(loaded.retention.users(), 1);
    }

    #[test]
    fn a_user_costs_at_most_48_bytes_at_every_table_size() {
        assert_eq!(size_of::<(UserKey, UserDays)>(), 20);
        assert_eq!(size_of::<HeldUser>(), 24, "a snapshot's copy of a user");
        let rules = rules(CohortMode::Signup);
        let mut state = Retention::new_state(&rules);
        let mut worst: f64 = 0.0;
        for user in 0..100_000u32 {
            state.apply(&event(user, TODAY, EventKind::Login), &rules);
            if user >= 1000 {
                worst = worst.max(state.table_bytes() as f64 / state.users() as f64);
            }
        }
        assert!(worst <= 48.5, "{worst} bytes per user");
    }
}
