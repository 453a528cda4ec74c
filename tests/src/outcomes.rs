//! The exact model of the outcome KPIs (README, "Outcomes"): NPS, CSAT, revenue, ARPU,
//! MRR and its movements, computed literally from the events with sums, hash sets and
//! per-user histories, no sketches and no ring of days.
//!
//! It models the configuration the tests and the demo give pulse (the generator's event
//! names and keys, revenue and MRR in USD): see [`MODEL_TOML`]. Like the rest of the
//! model it shares no code with pulse-core: amounts are judged from the generator's own
//! (units, decimals) pair, not by parsing text.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::civil::Date;
use pulse_workload::{GeneratedEvent, Outcome};
use serde_json::{Value, json};

/// The `[outcomes.*]` tables this model follows, for the engine under test: those
/// `pulse demo` runs with (tables relative to `[outcomes]`).
pub const MODEL_TOML: &str = include_str!("../../crates/pulse/demo-outcomes.toml");

/// Decimals of USD, the currency of [`MODEL_TOML`].
const CENTS: u8 = 2;

/// Why the outcome rules refuse `event`, or `None` if they accept it.
pub fn refusal(event: &GeneratedEvent) -> Option<&'static str> {
    match event.outcome? {
        Outcome::Nps(score) if !(0..=10).contains(&score) => Some("score_out_of_range"),
        Outcome::Csat(score) if !(1..=5).contains(&score) => Some("score_out_of_range"),
        Outcome::Order { currency, .. } if currency != "USD" => Some("unexpected_currency"),
        Outcome::Order {
            units, decimals, ..
        }
        | Outcome::Mrr { units, decimals } => cents(units, decimals)
            .is_none()
            .then_some("amount_too_precise"),
        _ => None,
    }
}

/// `units` × 10^−`decimals` in cents, if it is a whole number of cents.
fn cents(units: i64, decimals: u8) -> Option<i64> {
    if decimals <= CENTS {
        return Some(units * 10i64.pow(u32::from(CENTS - decimals)));
    }
    let excess = 10i64.pow(u32::from(decimals - CENTS));
    (units % excess == 0).then(|| units / excess)
}

/// One admitted outcome event, reduced to what the definitions use.
#[derive(Debug)]
pub struct OutcomeFact {
    pub user: usize,
    pub ts_ms: i64,
    pub day: Date,
    pub outcome: Outcome,
}

/// A window's days: `first..=last`.
#[derive(Debug, Clone, Copy)]
pub struct DayRange {
    pub first: Date,
    pub last: Date,
}

impl DayRange {
    fn contains(self, day: Date) -> bool {
        (self.first..=self.last).contains(&day)
    }
}

/// The `outcomes` object of the snapshot. `facts` are in arrival order (it matters only
/// for MRR: a change older than the user's latest applied one is ignored); `windows` are
/// the 1/7/30-day windows ending today with their labels, `active` the distinct active
/// users of each, and `complete_30` the 30 complete days ending yesterday.
pub fn section(
    facts: &[OutcomeFact],
    windows: &[(&str, DayRange)],
    active: &[usize],
    complete_30: DayRange,
) -> Value {
    let mut nps = serde_json::Map::new();
    let mut csat = serde_json::Map::new();
    let mut revenue = serde_json::Map::new();
    let mut movements = serde_json::Map::new();
    let changes = mrr_changes(facts);
    for (&(key, window), &active) in windows.iter().zip(active) {
        let in_window = || facts.iter().filter(move |f| window.contains(f.day));
        let scores = |pick: fn(&Outcome) -> Option<i8>| -> Vec<i8> {
            in_window().filter_map(|f| pick(&f.outcome)).collect()
        };
        let answers = scores(|o| match o {
            Outcome::Nps(s) => Some(*s),
            _ => None,
        });
        let promoters = answers.iter().filter(|s| **s >= 9).count();
        let detractors = answers.iter().filter(|s| **s <= 6).count();
        nps.insert(
            key.into(),
            json!({
                "responses": answers.len(),
                "promoters": promoters,
                "passives": answers.len() - promoters - detractors,
                "detractors": detractors,
                "score": ratio(promoters as f64 - detractors as f64, answers.len() as f64) * 100.0,
            }),
        );
        let answers = scores(|o| match o {
            Outcome::Csat(s) => Some(*s),
            _ => None,
        });
        let satisfied = answers.iter().filter(|s| **s >= 4).count();
        csat.insert(
            key.into(),
            json!({
                "responses": answers.len(),
                "satisfied": satisfied,
                "score": ratio(satisfied as f64, answers.len() as f64) * 100.0,
            }),
        );
        let orders: Vec<(usize, i64)> = in_window()
            .filter_map(|f| match f.outcome {
                Outcome::Order {
                    units, decimals, ..
                } => Some((f.user, cents(units, decimals).expect("admitted"))),
                _ => None,
            })
            .collect();
        let amount: i64 = orders.iter().map(|(_, c)| c).sum();
        let paying = orders.iter().map(|(u, _)| u).collect::<HashSet<_>>().len();
        let arpu = ratio(amount as f64, active as f64);
        revenue.insert(
            key.into(),
            json!({
                "currency": "USD",
                "amount_minor": amount,
                "orders": orders.len(),
                "paying_users": paying,
                "arpu_minor": arpu,
                "arppu_minor": ratio(amount as f64, paying as f64),
            }),
        );
        let mut moved = BTreeMap::from([
            ("new", 0),
            ("expansion", 0),
            ("contraction", 0),
            ("churned", 0),
        ]);
        for change in changes.iter().filter(|c| window.contains(c.day)) {
            let (kind, amount) = change.movement();
            *moved.get_mut(kind).expect("a movement kind") += amount;
        }
        let net_new = moved["new"] + moved["expansion"] - moved["contraction"] - moved["churned"];
        let mut moved = json!(moved);
        moved["net_new"] = json!(net_new);
        movements.insert(key.into(), moved);
    }
    // Each user's MRR is their latest applied change; at a day's start, their latest
    // applied change of an earlier day.
    let mrr_before = |day: Option<Date>| -> i64 {
        let mut latest: HashMap<usize, i64> = HashMap::new();
        for c in changes.iter().filter(|c| day.is_none_or(|d| c.day < d)) {
            latest.insert(c.user, c.after);
        }
        latest.values().sum()
    };
    let churned_30: i64 = changes
        .iter()
        .filter(|c| complete_30.contains(c.day) && c.after == 0)
        .map(|c| c.before)
        .sum();
    json!({
        "nps": nps,
        "csat": csat,
        "revenue": revenue,
        "mrr": {
            "total_minor": mrr_before(None),
            "movements": movements,
            "churn_rate_30d": ratio(churned_30 as f64, mrr_before(Some(complete_30.first)) as f64),
        },
        // The 30-day churn needs 60 days held, more than these workloads span: 0, incomplete
        // (the arithmetic with a measured churn is tested in the family itself).
        "ltv_estimate_minor": 0.0,
        "ltv_estimate_complete": false,
    })
}

/// An applied MRR change: a user's value before and after it.
struct Change {
    user: usize,
    day: Date,
    before: i64,
    after: i64,
}

impl Change {
    /// Its kind and amount, as the README defines them.
    fn movement(&self) -> (&'static str, i64) {
        match (self.before, self.after) {
            (0, after) => ("new", after),
            (before, 0) => ("churned", before),
            (before, after) if after > before => ("expansion", after - before),
            (before, after) => ("contraction", before - after),
        }
    }
}

/// Every user's changes in arrival order, less those older than the user's latest applied
/// one when they arrive.
fn mrr_changes(facts: &[OutcomeFact]) -> Vec<Change> {
    let mut latest: HashMap<usize, (i64, i64)> = HashMap::new();
    let mut changes = Vec::new();
    for f in facts {
        let Outcome::Mrr { units, decimals } = f.outcome else {
            continue;
        };
        let after = cents(units, decimals).expect("admitted");
        let (ts_ms, before) = latest.get(&f.user).copied().unwrap_or((i64::MIN, 0));
        if f.ts_ms < ts_ms {
            continue;
        }
        latest.insert(f.user, (f.ts_ms, after));
        changes.push(Change {
            user: f.user,
            day: f.day,
            before,
            after,
        });
    }
    changes
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}
