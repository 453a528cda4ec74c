//! The incremental generator: a population of users whose sessions are laid out one day slot
//! at a time and handed out in arrival order.
//!
//! Design decisions:
//! - **Stateless randomness per unit.** Each user's traits come from a random stream keyed
//!   by (seed, user index), and each day slot's activity from a stream keyed by (seed, slot).
//!   So the events do not depend on how a caller slices time: `events_until(a)` followed by
//!   `events_until(b)` yields exactly what one `events_until(b)` yields.
//! - **Own PRNG.** SplitMix64 plugged into `rand`'s traits: `rand` documents its small RNGs as
//!   not reproducible across versions, and golden files built from a workload must not change
//!   under a dependency bump.
//! - **Arrival = event time + jitter in `0..=max_disorder_ms`.** Emitting in ascending
//!   arrival order gives the disorder bound for free: if `d` arrives before `e`, then
//!   `ts_d + j_d <= ts_e + j_e`, so `ts_e >= ts_d - max_disorder_ms`.
//! - **Compact pending events.** Events wait (sorted) as small `Copy` records and become
//!   `GeneratedEvent`s with owned strings only when handed out, which keeps sorting cheap.

use std::cmp::Reverse;

use rand::{Rng, RngCore};

use crate::config::{ConfigError, DAY_MS, Shape, TimestampStyle, WorkloadConfig};
use crate::event::{GeneratedEvent, Outcome, Property, UserId};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and good enough for synthetic data.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// SplitMix64's finaliser. It is a bijection on u64, which is what makes the user ids and
/// session ids derived from it unique.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// Salts that separate the random streams of different purposes under one seed.
const SALT_USER: u64 = 0x7573_6572; // "user"
const SALT_SLOT: u64 = 0x736c_6f74; // "slot"
const SALT_SESSION: u64 = 0x7365_7373; // "sess"
const SALT_ID: u64 = 0x6964_6964; // "idid"
const SALT_PLATFORM: u64 = 0x706c_6174; // "plat"
const SALT_TENANT: u64 = 0x7465_6e61; // "tena"
const SALT_OUTCOME: u64 = 0x6f75_7463; // "outc"

/// Chances that a session (not a bounce) ends with an NPS answer, a CSAT answer, an order,
/// a subscription change; and that one of those is bad.
const NPS_SHARE: f64 = 0.03;
const CSAT_SHARE: f64 = 0.03;
const ORDER_SHARE: f64 = 0.04;
const SUBSCRIPTION_SHARE: f64 = 0.02;
const BAD_OUTCOME_SHARE: f64 = 0.03;
/// Monthly plans in cents; 0 is a cancellation.
const PLANS: [i64; 5] = [0, 1_900, 4_900, 9_900, 29_900];

fn stream(seed: u64, salt: u64, index: u64) -> SplitMix64 {
    SplitMix64(mix(mix(seed ^ salt) ^ index))
}

/// Relative traffic per UTC hour: quiet nights, a morning ramp, busy working hours and a
/// long evening tail.
const HOURLY_WEIGHT: [f64; 24] = [
    2.0, 1.5, 1.0, 1.0, 1.0, 1.5, 3.0, 5.0, 8.0, 10.0, 11.0, 11.0, 10.0, 11.0, 11.0, 10.0, 9.0,
    8.0, 7.0, 6.0, 6.0, 5.0, 4.0, 3.0,
];

/// Probability that a candidate session on this weekday really happens (Monday first).
const WEEKDAY_FACTOR: [f64; 7] = [1.0, 1.0, 1.0, 1.0, 1.0, 0.6, 0.5];

/// User activity follows a Pareto law (shape ALPHA, mean 1 before the cap): most users are
/// occasional, a few are heavy. The cap keeps one user from dominating a small population.
const PARETO_ALPHA: f64 = 1.6;
const PARETO_MIN: f64 = (PARETO_ALPHA - 1.0) / PARETO_ALPHA;
const ACTIVITY_CAP: f64 = 30.0;
const DORMANT_SHARE: f64 = 0.25;
const DORMANT_FACTOR: f64 = 0.1;
/// Hard bound on sessions per user and day, whatever the configured rate.
const MAX_DAILY_SESSIONS: u32 = 48;

/// Names of "other" events, which only make a user active.
const OTHER_PLAIN: [&str; 4] = [
    "button_clicked",
    "form_submitted",
    "search_performed",
    "item_added_to_cart",
];
const OTHER_SEGMENT: [&str; 4] = [
    "Button Clicked",
    "Form Submitted",
    "Search Performed",
    "Item Added To Cart",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Login,
    PageView,
    FeatureUsed,
    SessionStart,
    SessionEnd,
    Signup,
    Other(u8),
    Outcome(Outcome),
}

/// The wire name of a kind in a shape, using each default alias of the README's Definitions somewhere.
fn name_for(kind: Kind, shape: Shape) -> &'static str {
    match (shape, kind) {
        (_, Kind::Login) => "login",
        (Shape::Plain, Kind::PageView) => "page_view",
        (Shape::PostHog, Kind::PageView) => "$pageview",
        (Shape::Segment, Kind::PageView) => "Page Viewed",
        (Shape::Segment, Kind::FeatureUsed) => "Feature Used",
        (_, Kind::FeatureUsed) => "feature_used",
        (Shape::Segment, Kind::SessionStart) => "Session Started",
        (_, Kind::SessionStart) => "session_start",
        (Shape::Segment, Kind::SessionEnd) => "Session Ended",
        (_, Kind::SessionEnd) => "session_end",
        (Shape::Segment, Kind::Signup) => "Signed Up",
        (_, Kind::Signup) => "signup",
        (Shape::Segment, Kind::Other(i)) => OTHER_SEGMENT[usize::from(i)],
        (_, Kind::Other(i)) => OTHER_PLAIN[usize::from(i)],
        (Shape::Segment, Kind::Outcome(Outcome::Nps(_))) => "NPS Submitted",
        (_, Kind::Outcome(Outcome::Nps(_))) => "survey_nps",
        (_, Kind::Outcome(Outcome::Csat(_))) => "survey_csat",
        (Shape::Segment, Kind::Outcome(Outcome::Order { .. })) => "Order Completed",
        (_, Kind::Outcome(Outcome::Order { .. })) => "order_completed",
        (_, Kind::Outcome(Outcome::Mrr { .. })) => "subscription_changed",
    }
}

/// How a user's id is written.
#[derive(Debug, Clone)]
enum IdForm {
    Text(String),
    /// Sent as a JSON integer or as its decimal string, chosen per event.
    Int(i64),
}

/// Fixed traits of one user, derived from (seed, user index) alone.
#[derive(Debug, Clone)]
struct Profile {
    /// `e^-λ` for Knuth's Poisson sampler, λ = candidate sessions per day.
    exp_neg_lambda: f64,
    /// Day slot of the user's signup; `None` for users who predate the history.
    signup_slot: Option<u64>,
    /// Bit `i` set: the user adopted `features[i]`.
    features: u64,
    id: IdForm,
}

/// An event waiting for its arrival time; turned into a `GeneratedEvent` when handed out.
#[derive(Debug, Clone, Copy)]
struct Pending {
    arrival_ms: i64,
    /// `slot << 32 | n`: unique, and a deterministic tie-break for equal arrival times.
    seq: u64,
    ts_ms: i64,
    user: u32,
    /// 0 for none, else the session's number within its slot.
    session: u32,
    kind: Kind,
    feature: Option<u8>,
    int_as_text: bool,
    shape: Shape,
    style: TimestampStyle,
}

/// Incremental generator for live use: backfill history, then keep asking for the events
/// that arrived since the last call.
///
/// The cursor starts at the beginning of the history (`end_ms - days * DAY_MS`). Each call
/// hands out, in arrival order, the events whose *arrival* instant lies between the cursor
/// and the new cursor, so events straddling a call boundary can arrive in the next call
/// with a timestamp slightly in the past, as they would in production. Generation may run
/// past `end_ms`; beyond the history the population keeps growing by the configured signup
/// rate so a long-running demo still shows new users.
#[derive(Debug, Clone)]
pub struct Generator {
    cfg: WorkloadConfig,
    start_ms: i64,
    cursor_ms: i64,
    /// Next day slot to lay out; every slot before it is in `pending` or handed out.
    next_slot: u64,
    profiles: Vec<Profile>,
    /// Sorted by descending (arrival, seq), so the next event to hand out is at the end.
    pending: Vec<Pending>,
    /// Cumulative, normalised `HOURLY_WEIGHT`.
    hour_cdf: [f64; 24],
    /// Users who sign up per day slot after the history.
    late_signups_per_slot: u64,
    /// Scratch buffer for one session, reused to avoid an allocation per session.
    scratch: Vec<(i64, Kind, Option<u8>)>,
}

impl Generator {
    pub fn new(cfg: &WorkloadConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let total: f64 = HOURLY_WEIGHT.iter().sum();
        let mut hour_cdf = [0.0; 24];
        let mut acc = 0.0;
        for (cdf, w) in hour_cdf.iter_mut().zip(HOURLY_WEIGHT) {
            acc += w / total;
            *cdf = acc;
        }
        let late_signups_per_slot = if cfg.days == 0 {
            0
        } else {
            (cfg.signup_fraction * f64::from(cfg.users) / f64::from(cfg.days)).round() as u64
        };
        Ok(Generator {
            cfg: cfg.clone(),
            start_ms: cfg.start_ms(),
            cursor_ms: cfg.start_ms(),
            next_slot: 0,
            profiles: Vec::new(),
            pending: Vec::new(),
            hour_cdf,
            late_signups_per_slot,
            scratch: Vec::new(),
        })
    }

    /// Start of the history, where the cursor begins.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// Everything that arrived before this instant has been handed out.
    pub fn cursor_ms(&self) -> i64 {
        self.cursor_ms
    }

    /// Events arriving in `[cursor, to_ms)`, in arrival order; moves the cursor to `to_ms`.
    pub fn events_until(&mut self, to_ms: i64) -> Vec<GeneratedEvent> {
        let mut out = Vec::new();
        self.advance(to_ms, Some(&mut out));
        out
    }

    /// Events arriving in `[from_ms, to_ms)`, in arrival order. Events arriving between the
    /// cursor and `from_ms` are dropped (a gap in the stream); a `from_ms` before the cursor
    /// is treated as the cursor, because what was handed out is not handed out again.
    pub fn events_in(&mut self, from_ms: i64, to_ms: i64) -> Vec<GeneratedEvent> {
        self.advance(from_ms, None);
        self.events_until(to_ms)
    }

    /// Hands out, in arrival order, every pending event whose *time* is before the cursor
    /// even though its arrival is not: the end of input. Events after the cursor stay
    /// pending, so generation can continue and the disorder bound still holds.
    pub fn flush(&mut self) -> Vec<GeneratedEvent> {
        let cursor = self.cursor_ms;
        let (due, keep): (Vec<Pending>, Vec<Pending>) =
            self.pending.iter().partition(|p| p.ts_ms < cursor);
        self.pending = keep;
        due.iter().rev().map(|p| self.materialize(p)).collect()
    }

    fn advance(&mut self, to_ms: i64, mut out: Option<&mut Vec<GeneratedEvent>>) {
        if to_ms <= self.cursor_ms {
            return;
        }
        // An event arriving before `to_ms` happened before it, in a session that started
        // before it, so laying out every slot starting before `to_ms` is enough.
        let mut grew = false;
        while self.slot_start(self.next_slot) < to_ms {
            self.lay_out_slot();
            grew = true;
        }
        if grew {
            self.pending
                .sort_unstable_by_key(|p| Reverse((p.arrival_ms, p.seq)));
        }
        while let Some(&p) = self.pending.last() {
            if p.arrival_ms >= to_ms {
                break;
            }
            self.pending.pop();
            if let Some(out) = out.as_deref_mut() {
                out.push(self.materialize(&p));
            }
        }
        self.cursor_ms = to_ms;
    }

    fn slot_start(&self, slot: u64) -> i64 {
        self.start_ms
            .saturating_add((slot as i64).saturating_mul(DAY_MS))
    }

    /// Users who exist by the end of `slot`.
    fn population(&self, slot: u64) -> u64 {
        let users = u64::from(self.cfg.users);
        let days = u64::from(self.cfg.days);
        if slot < days {
            users
        } else {
            users + (slot - days + 1) * self.late_signups_per_slot
        }
    }

    fn profile(&self, index: u64) -> Profile {
        let cfg = &self.cfg;
        let mut rng = stream(cfg.seed, SALT_USER, index);
        // Inverse-CDF Pareto sample; `1 - u` is in (0, 1], so the power is finite.
        let u: f64 = rng.random();
        let mut activity = (PARETO_MIN * (1.0 - u).powf(-1.0 / PARETO_ALPHA)).min(ACTIVITY_CAP);
        // Some users are nearly dormant, so not everyone shows up within 30 days.
        if rng.random_bool(DORMANT_SHARE) {
            activity *= DORMANT_FACTOR;
        }
        let lambda = cfg.mean_daily_sessions * activity;
        let signup_slot = if index >= u64::from(cfg.users) {
            // Grown after the history: `late_signups_per_slot` is positive here.
            Some(u64::from(cfg.days) + (index - u64::from(cfg.users)) / self.late_signups_per_slot)
        } else if cfg.days > 0 && rng.random_bool(cfg.signup_fraction) {
            Some(u64::from(rng.random_range(0..cfg.days)))
        } else {
            None
        };
        let mut features = 0u64;
        for (i, f) in cfg.features.iter().enumerate() {
            if rng.random::<f64>() < f.adoption {
                features |= 1 << i;
            }
        }
        let id = if cfg.integer_user_ids && rng.random_bool(1.0 / 3.0) {
            IdForm::Int(1_000_000 + index as i64)
        } else {
            IdForm::Text(format!("u_{:016x}", mix(mix(cfg.seed ^ SALT_ID) ^ index)))
        };
        Profile {
            exp_neg_lambda: (-lambda).exp(),
            signup_slot,
            features,
            id,
        }
    }

    /// Lays out every session that starts in the next day slot.
    fn lay_out_slot(&mut self) {
        let slot = self.next_slot;
        self.next_slot += 1;
        let slot_start = self.slot_start(slot);
        let population = self.population(slot);
        while (self.profiles.len() as u64) < population {
            let p = self.profile(self.profiles.len() as u64);
            self.profiles.push(p);
        }
        let mut rng = stream(self.cfg.seed, SALT_SLOT, slot);
        let mut ctx = SlotContext {
            slot,
            next_seq: slot << 32,
            next_session: 0,
        };
        let mut starts = Vec::new();
        for user in 0..population as usize {
            let profile = &self.profiles[user];
            if profile.signup_slot.is_some_and(|s| s > slot) {
                continue; // not signed up yet
            }
            let signup_today = profile.signup_slot == Some(slot);
            starts.clear();
            for _ in 0..poisson(&mut rng, profile.exp_neg_lambda) {
                let t = self.sample_start(&mut rng, slot_start);
                // Weekly rhythm by thinning: fewer candidate sessions survive at weekends.
                if rng.random::<f64>() < WEEKDAY_FACTOR[weekday(t)] {
                    starts.push(t);
                }
            }
            if signup_today {
                // The signup must be the user's first event, in their first session.
                if starts.is_empty() {
                    starts.push(self.sample_start(&mut rng, slot_start));
                }
                starts.sort_unstable();
            }
            for (i, &t0) in starts.iter().enumerate() {
                self.lay_out_session(&mut rng, &mut ctx, user, t0, signup_today && i == 0);
            }
        }
    }

    /// A session start inside the slot, at an hour of day drawn from the daily rhythm.
    fn sample_start(&self, rng: &mut SplitMix64, slot_start: i64) -> i64 {
        let u: f64 = rng.random();
        let hour = self.hour_cdf.iter().position(|&c| u < c).unwrap_or(23) as i64;
        let time_of_day = hour * 3_600_000 + rng.random_range(0..3_600_000i64);
        // The instant in [slot_start, slot_start + DAY) with that UTC time of day.
        slot_start + (time_of_day - slot_start.rem_euclid(DAY_MS)).rem_euclid(DAY_MS)
    }

    fn lay_out_session(
        &mut self,
        rng: &mut SplitMix64,
        ctx: &mut SlotContext,
        user: usize,
        t0: i64,
        signup: bool,
    ) {
        let features = self.profiles[user].features;
        let is_int = matches!(self.profiles[user].id, IdForm::Int(_));
        ctx.next_session += 1;
        let session = if self.cfg.session_ids && rng.random_bool(0.5) {
            ctx.next_session
        } else {
            0
        };
        let ev = &mut self.scratch;
        ev.clear();
        if !signup && rng.random_bool(0.25) {
            // A bounce: one page view and gone.
            ev.push((t0, Kind::PageView, None));
        } else {
            // Explicit markers share timestamps with neighbouring events on purpose, to
            // exercise the (ts, rank) tie ordering of the session rules.
            let explicit = rng.random_bool(0.15);
            if explicit {
                ev.push((t0, Kind::SessionStart, None));
            }
            if signup {
                ev.push((t0, Kind::Signup, None));
            }
            if signup || rng.random_bool(0.3) {
                ev.push((t0 + rng.random_range(0..2_000), Kind::Login, None));
            }
            let mut t = t0 + rng.random_range(0..3_000);
            let mut pages = 1;
            while pages < 30 && rng.random_bool(0.8) {
                pages += 1;
            }
            for page in 0..pages {
                if page > 0 {
                    t += page_gap(rng);
                }
                ev.push((t, Kind::PageView, None));
                if rng.random_bool(0.15) {
                    let other = rng.random_range(0..OTHER_PLAIN.len() as u8);
                    ev.push((t + rng.random_range(500..20_000), Kind::Other(other), None));
                }
            }
            let mut adopted = features;
            while adopted != 0 {
                let f = adopted.trailing_zeros() as u8;
                adopted &= adopted - 1;
                if rng.random_bool(0.35) {
                    ev.push((rng.random_range(t0..=t), Kind::FeatureUsed, Some(f)));
                }
            }
            if explicit {
                let last = ev.iter().map(|e| e.0).max().unwrap_or(t0);
                let end = if rng.random_bool(0.5) {
                    last
                } else {
                    last + rng.random_range(1..30_000)
                };
                ev.push((end, Kind::SessionEnd, None));
            }
        }
        let owner = Owner {
            user: user as u32,
            session,
            is_int,
        };
        for &(ts_ms, kind, feature) in ev.iter() {
            let event = pending(&self.cfg, rng, ctx.next_seq, owner, (ts_ms, kind, feature));
            self.pending.push(event);
            ctx.next_seq += 1;
        }
        if self.cfg.outcomes && ev.len() > 1 {
            self.lay_out_outcome(ctx, owner);
        }
        debug_assert!(
            ctx.slot == ctx.next_seq >> 32,
            "more than 2^32 events in a slot"
        );
    }

    /// Perhaps an outcome at the end of a session (its last event + up to a minute), drawn
    /// from a stream of its own, so that the other events do not depend on whether outcomes
    /// are generated.
    fn lay_out_outcome(&mut self, ctx: &mut SlotContext, owner: Owner) {
        let mut rng = stream(self.cfg.seed, SALT_OUTCOME, ctx.next_seq);
        let bad = rng.random_bool(BAD_OUTCOME_SHARE);
        let pick: f64 = rng.random();
        let cents = |rng: &mut SplitMix64| rng.random_range(100..50_000i64);
        let outcome = if pick < NPS_SHARE {
            // Skewed towards promoters, as products that send surveys tend to be.
            let score = [3, 6, 7, 8, 9, 9, 10, 10][rng.random_range(0..8usize)];
            Outcome::Nps(if bad { 11 } else { score })
        } else if pick < NPS_SHARE + CSAT_SHARE {
            Outcome::Csat(if bad { 0 } else { rng.random_range(1..=5) })
        } else if pick < NPS_SHARE + CSAT_SHARE + ORDER_SHARE {
            let units = cents(&mut rng);
            match (bad, rng.random_bool(0.5)) {
                (false, _) => Outcome::Order {
                    units,
                    decimals: 2,
                    currency: "USD",
                },
                (true, true) => Outcome::Order {
                    units,
                    decimals: 2,
                    currency: "EUR",
                },
                // A third decimal that is not 0: more precise than cents.
                (true, false) => Outcome::Order {
                    units: units * 10 + rng.random_range(1..10),
                    decimals: 3,
                    currency: "USD",
                },
            }
        } else if pick < NPS_SHARE + CSAT_SHARE + ORDER_SHARE + SUBSCRIPTION_SHARE {
            let plan = PLANS[rng.random_range(0..PLANS.len())];
            if bad {
                Outcome::Mrr {
                    units: plan * 10 + 5,
                    decimals: 3,
                }
            } else {
                Outcome::Mrr {
                    units: plan,
                    decimals: 2,
                }
            }
        } else {
            return;
        };
        let last = self.scratch.iter().map(|e| e.0).max().unwrap_or_default();
        let ts_ms = last + rng.random_range(0..60_000);
        let event = pending(
            &self.cfg,
            &mut rng,
            ctx.next_seq,
            owner,
            (ts_ms, Kind::Outcome(outcome), None),
        );
        self.pending.push(event);
        ctx.next_seq += 1;
    }

    fn materialize(&self, p: &Pending) -> GeneratedEvent {
        let user = match &self.profiles[p.user as usize].id {
            IdForm::Text(s) => UserId::Text(s.clone()),
            IdForm::Int(n) if p.int_as_text => UserId::Text(n.to_string()),
            IdForm::Int(n) => UserId::Int(*n),
        };
        let session_id = (p.session != 0).then(|| {
            let key = (p.seq >> 32) << 32 | u64::from(p.session);
            format!("s_{:016x}", mix(mix(self.cfg.seed ^ SALT_SESSION) ^ key))
        });
        GeneratedEvent {
            user,
            name: name_for(p.kind, p.shape).to_owned(),
            ts_ms: p.ts_ms,
            feature: p
                .feature
                .map(|f| self.cfg.features[usize::from(f)].name.clone()),
            session_id,
            shape: p.shape,
            timestamp_style: p.style,
            seq: p.seq,
            outcome: match p.kind {
                Kind::Outcome(outcome) => Some(outcome),
                _ => None,
            },
            properties: self.properties(p),
        }
    }

    /// Breakdown fields, hashed from the user and session rather than drawn from the random
    /// streams, so that turning them on changes no other part of the workload.
    fn properties(&self, p: &Pending) -> Vec<(String, Property)> {
        let mut out = Vec::new();
        let platforms = &self.cfg.platforms;
        if !platforms.is_empty() {
            // One platform per session (per user and day without a session id).
            let key = (p.seq >> 32) << 32 | u64::from(p.session);
            let h = mix(mix(mix(self.cfg.seed ^ SALT_PLATFORM) ^ key) ^ u64::from(p.user));
            match h % 100 {
                0..3 => {}
                3..5 => out.push(("platform".to_owned(), Property::Text(String::new()))),
                _ => {
                    let name = &platforms[((h >> 8) % platforms.len() as u64) as usize];
                    out.push(("platform".to_owned(), Property::Text(name.clone())));
                }
            }
        }
        if self.cfg.tenants > 0 {
            let h = mix(mix(self.cfg.seed ^ SALT_TENANT) ^ u64::from(p.user));
            let tenant = (h % u64::from(self.cfg.tenants)) as i64;
            let value = if tenant % 3 == 0 {
                Property::Int(tenant)
            } else {
                Property::Text(format!("tenant-{tenant}"))
            };
            out.push(("tenant_id".to_owned(), value));
        }
        out
    }
}

/// Whose session an event is in.
#[derive(Debug, Clone, Copy)]
struct Owner {
    user: u32,
    /// 0 for none, else the session's number within its slot.
    session: u32,
    is_int: bool,
}

/// An event of `owner` to hand out at its arrival; its shape, timestamp style, arrival
/// jitter and (for numeric ids) id form drawn from `rng`, in that order.
fn pending(
    cfg: &WorkloadConfig,
    rng: &mut SplitMix64,
    seq: u64,
    owner: Owner,
    (ts_ms, kind, feature): (i64, Kind, Option<u8>),
) -> Pending {
    let shape = cfg.shapes[rng.random_range(0..cfg.shapes.len() as u32) as usize];
    let style =
        cfg.timestamp_styles[rng.random_range(0..cfg.timestamp_styles.len() as u32) as usize];
    let jitter = if cfg.max_disorder_ms == 0 {
        0
    } else if rng.random_bool(0.85) {
        // Most events arrive within a couple of seconds...
        rng.random_range(0..=cfg.max_disorder_ms.min(2_000))
    } else {
        // ...and a few take up to the whole disorder bound.
        rng.random_range(0..=cfg.max_disorder_ms)
    };
    Pending {
        arrival_ms: ts_ms + jitter,
        seq,
        ts_ms,
        user: owner.user,
        session: owner.session,
        kind,
        feature,
        int_as_text: owner.is_int && rng.random_bool(0.5),
        shape,
        style,
    }
}

/// Per-slot counters, so sequence numbers and session ids depend only on the slot.
#[derive(Debug)]
struct SlotContext {
    slot: u64,
    next_seq: u64,
    next_session: u32,
}

/// Knuth's Poisson sampler; rates are small (a few sessions a day), so it is cheap.
fn poisson(rng: &mut SplitMix64, exp_neg_lambda: f64) -> u32 {
    let mut k = 0;
    let mut p: f64 = rng.random();
    while p > exp_neg_lambda && k < MAX_DAILY_SESSIONS {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

/// Gap between page views: seconds to minutes, skewed short; now and then an idle gap
/// longer than the 30-minute session timeout, so the engine has to split sessions itself.
fn page_gap(rng: &mut SplitMix64) -> i64 {
    if rng.random_bool(0.03) {
        rng.random_range(31 * 60_000..=90 * 60_000)
    } else {
        let u: f64 = rng.random();
        2_000 + (u * u * 298_000.0) as i64
    }
}

/// Day of week of an instant in UTC, Monday = 0 (1970-01-01 was a Thursday).
fn weekday(ts_ms: i64) -> usize {
    (ts_ms.div_euclid(DAY_MS) + 3).rem_euclid(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekday_of_known_dates() {
        assert_eq!(weekday(0), 3); // 1970-01-01, Thursday
        assert_eq!(weekday(1_772_366_400_000), 6); // 2026-03-01, Sunday
        assert_eq!(weekday(-1), 2); // 1969-12-31, Wednesday
    }

    #[test]
    fn sample_start_stays_in_slot() {
        let g = Generator::new(&WorkloadConfig::default()).unwrap();
        let mut rng = stream(1, 2, 3);
        for slot_start in [0, 1_772_366_400_000, 1_772_366_400_000 + 12_345] {
            for _ in 0..1_000 {
                let t = g.sample_start(&mut rng, slot_start);
                assert!((slot_start..slot_start + DAY_MS).contains(&t));
            }
        }
    }

    #[test]
    fn poisson_mean_is_close_to_lambda() {
        let mut rng = stream(9, 9, 9);
        let n = 20_000;
        let sum: u32 = (0..n).map(|_| poisson(&mut rng, (-2.0f64).exp())).sum();
        let mean = f64::from(sum) / f64::from(n);
        assert!((mean - 2.0).abs() < 0.05, "{mean}");
    }

    #[test]
    fn every_alias_is_used() {
        let kinds = [
            Kind::Login,
            Kind::PageView,
            Kind::FeatureUsed,
            Kind::SessionStart,
            Kind::SessionEnd,
            Kind::Signup,
        ];
        let mut names: Vec<&str> = Vec::new();
        for shape in [Shape::Plain, Shape::Segment, Shape::PostHog] {
            names.extend(kinds.iter().map(|&k| name_for(k, shape)));
        }
        for alias in [
            "login",
            "page_view",
            "$pageview",
            "Page Viewed",
            "feature_used",
            "Feature Used",
            "session_start",
            "Session Started",
            "session_end",
            "Session Ended",
            "signup",
            "Signed Up",
        ] {
            assert!(names.contains(&alias), "{alias}");
        }
    }
}
