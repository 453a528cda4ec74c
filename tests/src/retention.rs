//! The exact model of retention, lifecycle and churn (the README's "Retention and churn"),
//! computed with sets of users per calendar day: no bitmaps, no per-user records, no
//! streaming state.
//!
//! Like [`crate::oracle`] it follows the definitions literally and shares no code with
//! pulse-core. Which events count follows arrival order, because the event-time clock does:
//! an event is *late* when its day is more than `retention_days` before the day of the
//! latest event time admitted so far (including its own), and a late event still counts
//! here when its day is one of the 64 ending that day (the horizon); older ones are only
//! counted. Late events never move the clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use jiff::{Span, Timestamp, civil::Date, tz::TimeZone};
use pulse_workload::{GeneratedEvent, UserId};
use serde_json::{Value, json};

use crate::oracle::{Kind, KindNames};

/// Days held per user: today and the 63 before it.
const HORIZON_DAYS: i64 = 64;

/// What the model needs of the engine's settings.
#[derive(Debug, Clone)]
pub struct RetentionModelSettings {
    pub timezone: TimeZone,
    pub retention_days: i64,
    /// Cohorts by first activity instead of by `signup`.
    pub first_seen: bool,
    pub kinds: KindNames,
}

fn day_of(ms: i64, tz: &TimeZone) -> Date {
    let instant = Timestamp::from_millisecond(ms).expect("event times are within jiff's range");
    tz.to_datetime(instant).date()
}

fn add(day: Date, n: i64) -> Date {
    day.checked_add(Span::new().days(n)).expect("days in range")
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// The `retention`, `lifecycle`, `churn` and `retention_rate` keys of the snapshot of
/// `events`, in arrival order. `retention.users` (a state-size gauge) is left out.
pub fn exact_retention(events: &[GeneratedEvent], settings: &RetentionModelSettings) -> Value {
    let tz = &settings.timezone;
    // Admission in arrival order.
    let mut clock: Option<i64> = None;
    let mut counted: Vec<(String, Kind, Date)> = Vec::new();
    let mut beyond_horizon = 0u64;
    for e in events {
        let day = day_of(e.ts_ms, tz);
        let now = clock.map_or(e.ts_ms, |c| c.max(e.ts_ms));
        let today = day_of(now, tz);
        let user = match &e.user {
            UserId::Text(s) => s.clone(),
            UserId::Int(n) => n.to_string(),
        };
        let kind = settings.kinds.kind_of(&e.name);
        // Only an event within the retention moves the clock; retention takes either kind
        // within its horizon (a retention longer than the horizon is allowed).
        if day >= add(today, -settings.retention_days) {
            clock = Some(now);
        }
        if day > add(today, -HORIZON_DAYS) {
            counted.push((user, kind, day));
        } else {
            beyond_horizon += 1;
        }
    }

    // active(t), and each user's days.
    let mut active: BTreeMap<Date, HashSet<&str>> = BTreeMap::new();
    let mut days_of: HashMap<&str, BTreeSet<Date>> = HashMap::new();
    let mut signup: HashMap<&str, Date> = HashMap::new();
    for (user, kind, day) in &counted {
        active.entry(*day).or_default().insert(user);
        days_of.entry(user).or_default().insert(*day);
        if *kind == Kind::Signup {
            let first = signup.entry(user).or_insert(*day);
            *first = (*first).min(*day);
        }
    }
    // The cohort day: the first signup, or the first day of the user's latest run of
    // activity (a run ends after 64 days without any).
    let cohort_of: HashMap<&str, Date> = if settings.first_seen {
        days_of
            .iter()
            .map(|(user, days)| {
                let mut start = *days.first().expect("a user has a day");
                let mut previous = start;
                for day in days {
                    if previous.until(*day).unwrap().get_days() >= HORIZON_DAYS as i32 {
                        start = *day;
                    }
                    previous = *day;
                }
                (*user, start)
            })
            .collect()
    } else {
        signup
    };
    let cohort = |d: Date| -> HashSet<&str> {
        cohort_of
            .iter()
            .filter(|(_, c)| **c == d)
            .map(|(u, _)| *u)
            .collect()
    };
    let active_on = |d: Date| active.get(&d).cloned().unwrap_or_default();
    let active_in = |first: Date, last: Date| -> HashSet<&str> {
        active
            .range(first..=last)
            .flat_map(|(_, users)| users.iter().copied())
            .collect()
    };
    let cohort_in = |first: Date, last: Date| -> HashSet<&str> {
        cohort_of
            .iter()
            .filter(|(_, c)| first <= **c && **c <= last)
            .map(|(u, _)| *u)
            .collect()
    };

    let today = clock.map_or(Date::constant(1970, 1, 1), |ms| day_of(ms, tz));
    let y = add(today, -1);
    let began = counted.iter().map(|(_, _, d)| *d).min();
    let held = |earliest: Date| began.is_some_and(|b| b <= earliest);
    let cohorts_held = !settings.first_seen || held(add(today, -(HORIZON_DAYS - 1)));

    let mut day_n = serde_json::Map::new();
    let mut on_or_after = serde_json::Map::new();
    let mut cohort_users = serde_json::Map::new();
    for n in [1, 7, 14, 28] {
        let (mut size, mut back, mut since) = (0, 0, 0);
        for offset in 0..7 {
            let d = add(y, -n - offset);
            let members = cohort(d);
            size += members.len();
            back += members.intersection(&active_on(add(d, n))).count();
            since += members.intersection(&active_in(add(d, n), y)).count();
        }
        day_n.insert(n.to_string(), json!(ratio(back, size)));
        on_or_after.insert(n.to_string(), json!(ratio(since, size)));
        cohort_users.insert(n.to_string(), json!(size));
    }
    let rows: Vec<Value> = if began.is_none() {
        Vec::new()
    } else {
        (0..28)
            .rev()
            .map(|back| {
                let d = add(y, -back);
                let members = cohort(d);
                let cells: Vec<usize> = (0..=back)
                    .map(|k| members.intersection(&active_on(add(d, k))).count())
                    .collect();
                json!({ "day": d.to_string(), "size": members.len(), "active": cells })
            })
            .collect()
    };

    // Lifecycle of a period P against P′, with `new` the users whose cohort day is in P.
    let lifecycle = |now: &HashSet<&str>, before: &HashSet<&str>, new: &HashSet<&str>| {
        let new_active: HashSet<&str> = now.intersection(new).copied().collect();
        let old = |u: &&&str| !new_active.contains(**u);
        json!({
            "new": new_active.len(),
            "returning": now.intersection(before).filter(old).count(),
            "resurrecting": now.difference(before).filter(old).count(),
            "dormant": before.difference(now).count(),
        })
    };
    let period = |len: i64| {
        let now = active_in(add(y, -(len - 1)), y);
        let before = active_in(add(y, -(2 * len - 1)), add(y, -len));
        let new = cohort_in(add(y, -(len - 1)), y);
        (now, before, new)
    };
    let (w, w_before, w_new) = period(7);
    let (m, m_before, m_new) = period(30);
    let churn = |now: &HashSet<&str>, before: &HashSet<&str>| {
        ratio(before.difference(now).count(), before.len())
    };
    let rate = |now: &HashSet<&str>, before: &HashSet<&str>, new: &HashSet<&str>| {
        ratio(now.len() - new.len(), before.len())
    };
    json!({
        "retention": {
            "complete": cohorts_held && held(add(y, -34)),
            "cohort": if settings.first_seen { "first_seen" } else { "signup" },
            "day_n": day_n,
            "on_or_after": on_or_after,
            "cohort_users": cohort_users,
            "cohorts": rows,
            "events_beyond_horizon": beyond_horizon,
        },
        "lifecycle": {
            "complete": cohorts_held && held(add(y, -13)),
            "day": lifecycle(&active_on(y), &active_on(add(y, -1)), &cohort_in(y, y)),
            "week": lifecycle(&w, &w_before, &w_new),
        },
        "churn": {
            "complete": held(add(y, -59)),
            "7d": churn(&w, &w_before),
            "30d": churn(&m, &m_before),
        },
        "retention_rate": {
            "complete": cohorts_held && held(add(y, -59)),
            "7d": rate(&w, &w_before, &w_new),
            "30d": rate(&m, &m_before, &m_new),
        },
    })
}
