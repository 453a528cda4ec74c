//! The exact model of funnels and time to value (README "Funnels"), by brute force.
//!
//! It sees the whole input at once. Which events take part follows arrival order (an event
//! more than the allowed lateness behind the latest earlier one is left out and counted);
//! everything else follows time order per user, arrival order breaking ties. Distinct
//! users come from enumerating every attempt on its own — each step-1 event starts one,
//! and it advances one step at the first later event matching its next step within its
//! deadline — and taking, per user and window, the furthest step of any attempt entered
//! in the window. Completions and durations follow the kept-attempt rule, written here over
//! the enumerated attempts (the attempt kept for a step is an index into them) rather than
//! as the engine's per-step records, so the two are independent statements of one rule.
//! Days are UTC days; the windows end on the day of the latest event taking part.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::oracle::{Kind, KindNames};

const DAY_MS: i64 = 86_400_000;
/// The windows of the snapshot, in days, with their keys.
const WINDOWS: [(&str, i64); 3] = [("1d", 1), ("7d", 7), ("30d", 30)];

/// One record as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelEvent {
    pub user: String,
    pub name: String,
    pub feature: Option<String>,
    pub ts_ms: i64,
}

impl FunnelEvent {
    pub fn line(&self) -> String {
        let mut record = json!({ "user_id": self.user, "event": self.name, "ts": self.ts_ms });
        if let Some(feature) = &self.feature {
            record["feature"] = json!(feature);
        }
        record.to_string()
    }
}

/// A step: every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    pub kind: Option<Kind>,
    pub event: Option<String>,
    pub feature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Funnel {
    pub name: String,
    pub window_ms: i64,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct FunnelModel {
    pub funnels: Vec<Funnel>,
    /// The value event and its window.
    pub time_to_value: Option<(Step, i64)>,
    pub lateness_ms: i64,
    pub kinds: KindNames,
}

/// An event that takes part, reduced to what matching needs.
struct Taken<'a> {
    ts_ms: i64,
    kind: Kind,
    event: &'a FunnelEvent,
}

impl Step {
    fn matches(&self, taken: &Taken<'_>) -> bool {
        // A feature belongs to feature_used events only (README "Definitions").
        let feature = (taken.kind == Kind::FeatureUsed)
            .then_some(taken.event.feature.as_ref())
            .flatten();
        self.kind.is_none_or(|k| k == taken.kind)
            && self.event.as_ref().is_none_or(|e| *e == taken.event.name)
            && (self.feature.is_none() || self.feature.as_ref() == feature)
    }
}

/// One attempt: its entry and the time it reached each step (`reached[0]` is the entry).
struct Attempt {
    entry_day: i64,
    reached: Vec<i64>,
}

impl FunnelModel {
    /// The snapshot's `funnels`, `time_to_value` and `funnel_late_events`.
    pub fn snapshot(&self, events: &[FunnelEvent]) -> Value {
        let mut late = 0;
        let mut newest: Option<i64> = None;
        let mut by_user: BTreeMap<&str, Vec<Taken<'_>>> = BTreeMap::new();
        for event in events {
            let taken = Taken {
                ts_ms: event.ts_ms,
                kind: self.kinds.kind_of(&event.name),
                event,
            };
            let on_time = newest.is_none_or(|n| event.ts_ms >= n - self.lateness_ms);
            newest = Some(newest.map_or(event.ts_ms, |n| n.max(event.ts_ms)));
            if !on_time {
                late += u64::from(self.takes_part(&taken));
                continue;
            }
            by_user.entry(&event.user).or_default().push(taken);
        }
        let today = newest.unwrap_or(0).div_euclid(DAY_MS);
        for list in by_user.values_mut() {
            // A stable sort: arrival order among equal times.
            list.sort_by_key(|t| t.ts_ms);
        }
        let mut funnels = serde_json::Map::new();
        for funnel in &self.funnels {
            funnels.insert(funnel.name.clone(), self.funnel(funnel, &by_user, today));
        }
        let mut out = json!({ "funnel_late_events": late });
        if !funnels.is_empty() {
            out["funnels"] = Value::Object(funnels);
        }
        if let Some((value, window_ms)) = &self.time_to_value {
            out["time_to_value"] = time_to_value(value, *window_ms, &by_user, today);
        }
        out
    }

    fn takes_part(&self, taken: &Taken<'_>) -> bool {
        self.funnels
            .iter()
            .any(|f| f.steps.iter().any(|s| s.matches(taken)))
            || self
                .time_to_value
                .as_ref()
                .is_some_and(|(v, _)| taken.kind == Kind::Signup || v.matches(taken))
    }

    fn funnel(
        &self,
        funnel: &Funnel,
        by_user: &BTreeMap<&str, Vec<Taken<'_>>>,
        today: i64,
    ) -> Value {
        let n = funnel.steps.len();
        // Per window: users reaching each step, conversions' durations, step durations.
        let mut users = vec![vec![BTreeSet::new(); n]; WINDOWS.len()];
        let mut to_convert = vec![Vec::new(); WINDOWS.len()];
        let mut step_durations = vec![vec![Vec::new(); n - 1]; WINDOWS.len()];
        let in_window = |day: i64, length: i64| day > today - length && day <= today;
        for (user, events) in by_user {
            for attempt in brute_force(funnel, events) {
                for (w, (_, length)) in WINDOWS.iter().enumerate() {
                    if in_window(attempt.entry_day, *length) {
                        // It reached steps 1 … reached.len().
                        for reached in users[w].iter_mut().take(attempt.reached.len()) {
                            reached.insert(*user);
                        }
                    }
                }
            }
            for (attempt, step) in kept_rule_advances(funnel, events) {
                for (w, (_, length)) in WINDOWS.iter().enumerate() {
                    if in_window(attempt.entry_day, *length) {
                        let took = attempt.reached[step] - attempt.reached[step - 1];
                        step_durations[w][step - 1].push(took);
                        if step == n - 1 {
                            to_convert[w].push(attempt.reached[step] - attempt.reached[0]);
                        }
                    }
                }
            }
        }
        let mut windows = serde_json::Map::new();
        for (w, (key, _)) in WINDOWS.iter().enumerate() {
            let counts: Vec<u64> = users[w].iter().map(|s| s.len() as u64).collect();
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            windows.insert(
                (*key).to_owned(),
                json!({
                    "users": counts,
                    "conversion": ratio(counts[n - 1], counts[0]),
                    "step_conversion": counts.windows(2).map(|p| ratio(p[1], p[0])).collect::<Vec<_>>(),
                    "completions": to_convert[w].len(),
                    "time_to_convert": {
                        "p50_seconds": nearest_rank(&to_convert[w], 0.5),
                        "p90_seconds": nearest_rank(&to_convert[w], 0.9),
                    },
                    "step_seconds_p50": step_durations[w].iter().map(|d| nearest_rank(d, 0.5)).collect::<Vec<_>>(),
                }),
            );
        }
        Value::Object(windows)
    }
}

/// Every attempt of one user, each on its own.
fn brute_force(funnel: &Funnel, events: &[Taken<'_>]) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    for (start, entry) in events.iter().enumerate() {
        if !funnel.steps[0].matches(entry) {
            continue;
        }
        let mut reached = vec![entry.ts_ms];
        for later in &events[start + 1..] {
            if reached.len() < funnel.steps.len()
                && later.ts_ms <= entry.ts_ms + funnel.window_ms
                && funnel.steps[reached.len()].matches(later)
            {
                reached.push(later.ts_ms);
            }
        }
        attempts.push(Attempt {
            entry_day: entry.ts_ms.div_euclid(DAY_MS),
            reached,
        });
    }
    attempts
}

/// The kept-attempt rule over one user's events: every advance, as (the attempt as it
/// stands after all events, the step it advanced to).
fn kept_rule_advances(funnel: &Funnel, events: &[Taken<'_>]) -> Vec<(std::rc::Rc<Attempt>, usize)> {
    let n = funnel.steps.len();
    // The attempts started, with the time each reached its steps so far.
    let mut attempts: Vec<(i64, Vec<i64>)> = Vec::new();
    // Per step, the index of the attempt kept for it.
    let mut kept: Vec<Option<usize>> = vec![None; n];
    let mut advances: Vec<(usize, usize)> = Vec::new();
    for event in events {
        // Last step first: one event moves an attempt one step at most.
        for step in (1..n).rev() {
            let Some(a) = kept[step - 1] else { continue };
            let (entry_ms, reached) = &attempts[a];
            // Kept for step−1 and not yet past it, within its deadline.
            if reached.len() == step
                && event.ts_ms <= entry_ms + funnel.window_ms
                && funnel.steps[step].matches(event)
            {
                attempts[a].1.push(event.ts_ms);
                advances.push((a, step));
                kept[step] = Some(a);
            }
        }
        if funnel.steps[0].matches(event) {
            attempts.push((event.ts_ms, vec![event.ts_ms]));
            kept[0] = Some(attempts.len() - 1);
        }
    }
    let attempts: Vec<std::rc::Rc<Attempt>> = attempts
        .into_iter()
        .map(|(entry_ms, reached)| {
            std::rc::Rc::new(Attempt {
                entry_day: entry_ms.div_euclid(DAY_MS),
                reached,
            })
        })
        .collect();
    advances
        .into_iter()
        .map(|(a, step)| (attempts[a].clone(), step))
        .collect()
}

/// Per window: the users with a signup in it; activated if a value event follows their
/// first signup in it within the window.
fn time_to_value(
    value: &Step,
    window_ms: i64,
    by_user: &BTreeMap<&str, Vec<Taken<'_>>>,
    today: i64,
) -> Value {
    let mut out = serde_json::Map::new();
    for (key, length) in WINDOWS {
        let (mut signups, mut durations) = (0u64, Vec::new());
        for events in by_user.values() {
            let first = events.iter().position(|e| {
                let day = e.ts_ms.div_euclid(DAY_MS);
                e.kind == Kind::Signup && day > today - length && day <= today
            });
            let Some(first) = first else { continue };
            signups += 1;
            let at = events[first].ts_ms;
            if let Some(hit) = events[first + 1..]
                .iter()
                .find(|e| value.matches(e) && e.ts_ms <= at + window_ms)
            {
                durations.push(hit.ts_ms - at);
            }
        }
        let activated = durations.len() as u64;
        out.insert(
            key.to_owned(),
            json!({
                "signups": signups,
                "activated": activated,
                "rate": if signups == 0 { 0.0 } else { activated as f64 / signups as f64 },
                "p50_seconds": nearest_rank(&durations, 0.5),
                "p90_seconds": nearest_rank(&durations, 0.9),
            }),
        );
    }
    Value::Object(out)
}

/// The value at 1-based rank ⌈q·n⌉, in seconds; 0 for none.
fn nearest_rank(durations_ms: &[i64], q: f64) -> f64 {
    if durations_ms.is_empty() {
        return 0.0;
    }
    let mut sorted = durations_ms.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}
