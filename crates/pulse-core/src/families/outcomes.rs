//! Outcomes: what engagement leads to — Net Promoter Score, customer satisfaction, revenue,
//! average revenue per (paying) user, monthly recurring revenue and its movements, and a
//! lifetime-value estimate — from the survey, order and subscription events that
//! `[outcomes.*]` names (see [`crate::outcome_settings`]). Each part is on only while its
//! table is configured; with none, the family keeps nothing and its section is absent.
//!
//! Per partition: a day ring of exact counts (answers per score, orders, revenue in minor
//! units, MRR movements) and a sketch of the day's paying users; and every subscriber's
//! latest MRR, exact per-user state like the retention bitmaps, which adds up across
//! partitions because a user's events all go to one partition.
//!
//! The decision a newcomer would question: a subscription change older than the user's
//! latest known one is ignored (it was superseded before it arrived), so each user's MRR is
//! the value of their latest change by event time, and the movements of a day add up to the
//! change of total MRR over it. That identity is what gives "MRR at the start of the last 30
//! days" for the churn rate without keeping a history of totals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{OutcomeValue, PartitionEvent};
use crate::families::{Family, Sections, Summary};
use crate::family::{RollupOut, RollupValue, Rules, SectionContext, SeriesDef, SeriesOut};
use crate::family::{WINDOW, gauge};
use crate::outcome_settings::OutcomeRules;
use crate::ring::DayRing;
use crate::sketch::DistinctSketch;
use crate::windows::{
    PastFor, PastSketches, Previous, SPAN, SketchWindows, SummaryPoint, WINDOWS, Windowed,
    merge_sketch, ratio, union_estimate,
};

#[derive(Debug)]
pub struct Outcomes;

/// NPS answers 0–10, CSAT answers 1–5 (stored from index 0).
const NPS_SCORES: usize = 11;
const CSAT_SCORES: usize = 5;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutcomesState {
    days: DayRing<OutcomeDay>,
    /// Each subscriber's latest change, by user key. A `BTreeMap` so that a checkpoint
    /// of the same state is the same bytes.
    mrr: BTreeMap<u64, LatestMrr>,
    /// Writes that met a slot holding a newer day (should stay 0).
    dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct LatestMrr {
    ts_ms: i64,
    minor: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OutcomeDay {
    figures: DayFigures,
    /// The day's paying users (distinct users with an order).
    paying: Option<DistinctSketch>,
}

/// The exact figures of one day: they add across days and partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayFigures {
    nps: [u64; NPS_SCORES],
    csat: [u64; CSAT_SCORES],
    revenue_minor: i64,
    orders: u64,
    mrr: Moves,
}

/// MRR moved on one day, in minor units, each as a positive amount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Moves {
    new: i64,
    expansion: i64,
    contraction: i64,
    churned: i64,
}

impl Moves {
    /// The movement of a user's MRR from `before` to `after`.
    fn of(before: i64, after: i64) -> Moves {
        let mut moves = Moves::default();
        match (before, after) {
            (0, after) => moves.new = after,
            (before, 0) => moves.churned = before,
            (before, after) if after > before => moves.expansion = after - before,
            (before, after) => moves.contraction = before - after,
        }
        moves
    }

    fn net_new(&self) -> i64 {
        self.new + self.expansion - self.contraction - self.churned
    }

    fn add(&mut self, other: &Moves) {
        self.new += other.new;
        self.expansion += other.expansion;
        self.contraction += other.contraction;
        self.churned += other.churned;
    }
}

impl DayFigures {
    fn add(&mut self, other: &DayFigures) {
        self.nps
            .iter_mut()
            .zip(other.nps)
            .for_each(|(a, b)| *a += b);
        self.csat
            .iter_mut()
            .zip(other.csat)
            .for_each(|(a, b)| *a += b);
        // Saturating: each order is at most `money::MAX_MINOR_UNITS`, so only thousands of
        // maximal orders in one window could reach the bound, which then holds.
        self.revenue_minor = self.revenue_minor.saturating_add(other.revenue_minor);
        self.orders += other.orders;
        self.mrr.add(&other.mrr);
    }
}

#[derive(Debug, Clone, Default)]
pub struct OutcomesCache {
    past: PastFor,
    paying: PastSketches,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutcomesSummary {
    /// What is configured: every partition runs with the same rules.
    rules: OutcomeRules,
    /// Exact figures by offset from today (`0..SPAN`).
    days: Vec<DayFigures>,
    /// Paying users over the windows ending today, by [`WINDOWS`] position.
    paying: [Option<DistinctSketch>; 3],
    mrr_total: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutcomesSection {
    /// Absent while no `[outcomes.*]` table is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<OutcomeFigures>,
}

/// `outcomes.*` of the snapshot; each part only while its table is configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutcomeFigures {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nps: Option<Windowed<NpsFigures>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csat: Option<Windowed<CsatFigures>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<Windowed<RevenueFigures>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrr: Option<MrrFigures>,
    /// ARPU over 30 days ÷ the retention family's 30-day churn: an estimate that assumes
    /// both stay as they are. 0 while churn is 0 or not yet measured over complete days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ltv_estimate_minor: Option<f64>,
    /// Whether the churn it divides by was known and measured over complete days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ltv_estimate_complete: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NpsFigures {
    pub responses: u64,
    /// Answers 9–10.
    pub promoters: u64,
    /// Answers 7–8.
    pub passives: u64,
    /// Answers 0–6.
    pub detractors: u64,
    /// (promoters − detractors) ÷ responses × 100: −100 to 100, 0 without responses.
    pub score: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CsatFigures {
    pub responses: u64,
    /// Answers 4–5.
    pub satisfied: u64,
    /// satisfied ÷ responses × 100.
    pub score: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RevenueFigures {
    pub currency: String,
    pub amount_minor: i64,
    pub orders: u64,
    /// Distinct users with an order (HyperLogLog estimate).
    pub paying_users: u64,
    /// amount ÷ active users of the window, in minor units, not rounded.
    pub arpu_minor: f64,
    /// amount ÷ paying users, in minor units, not rounded.
    pub arppu_minor: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MrrFigures {
    /// Σ over subscribers of their latest MRR.
    pub total_minor: i64,
    /// Movements summed over the days of each window.
    pub movements: Windowed<MrrMovements>,
    /// MRR churned over the last 30 complete days ÷ MRR at their start.
    pub churn_rate_30d: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MrrMovements {
    /// From 0 to more.
    pub new: i64,
    pub expansion: i64,
    /// A decrease that leaves more than 0.
    pub contraction: i64,
    /// To 0.
    pub churned: i64,
    /// new + expansion − contraction − churned.
    pub net_new: i64,
}

pub const NPS_SCORE: SeriesDef = gauge(
    "pulse_nps_score",
    WINDOW,
    "Net Promoter Score of the survey answers in the window: % promoters (9-10) minus % detractors (0-6), -100 to 100.",
);
pub const NPS_RESPONSES: SeriesDef = gauge(
    "pulse_nps_responses",
    &["window", "group"],
    "NPS survey answers in the window, by group: promoter (9-10), passive (7-8), detractor (0-6).",
);
pub const CSAT_RATIO: SeriesDef = gauge(
    "pulse_csat_ratio",
    WINDOW,
    "Share of CSAT answers in the window that are 4 or 5 (of 1-5).",
);
pub const CSAT_RESPONSES: SeriesDef = gauge(
    "pulse_csat_responses",
    WINDOW,
    "CSAT survey answers in the window.",
);
pub const REVENUE: SeriesDef = gauge(
    "pulse_revenue_minor_units",
    &["window", "currency"],
    "Revenue of the completed orders in the window, exact, in minor units of the currency (cents for USD).",
);
pub const ORDERS: SeriesDef = gauge("pulse_orders", WINDOW, "Completed orders in the window.");
pub const PAYING_USERS: SeriesDef = gauge(
    "pulse_paying_users",
    WINDOW,
    "Distinct users with a completed order in the window.",
);
pub const ARPU: SeriesDef = gauge(
    "pulse_arpu_minor_units",
    WINDOW,
    "Average revenue per active user in the window, in minor units.",
);
pub const ARPPU: SeriesDef = gauge(
    "pulse_arppu_minor_units",
    WINDOW,
    "Average revenue per paying user in the window, in minor units.",
);
pub const MRR: SeriesDef = gauge(
    "pulse_mrr_minor_units",
    &[],
    "Monthly recurring revenue: the sum of every subscriber's latest MRR, in minor units.",
);
pub const MRR_MOVEMENT: SeriesDef = gauge(
    "pulse_mrr_movement_minor_units",
    &["kind", "window"],
    "MRR movements summed over the days of the window, in minor units: new, expansion, contraction, churned, net_new.",
);
pub const MRR_CHURN: SeriesDef = gauge(
    "pulse_mrr_churn_ratio",
    &[],
    "MRR churned over the last 30 complete days divided by MRR at their start.",
);
pub const LTV: SeriesDef = gauge(
    "pulse_ltv_estimate_minor_units",
    &[],
    "Lifetime value estimate: 30-day ARPU divided by the 30-day churn (0 while churn is 0 or incomplete), in minor units.",
);

/// The lifetime value estimate, in minor units: ARPU over 30 days ÷ the 30-day churn
/// ratio — how much a user brings in before leaving, if both stay as they are. 0 while
/// churn is 0 (it would be infinite) or not measured over complete days (it would be
/// inflated by the missing churn).
pub fn ltv_estimate_minor(arpu_30d_minor: f64, churn_30d: f64, churn_complete: bool) -> f64 {
    if churn_complete && churn_30d > 0.0 {
        arpu_30d_minor / churn_30d
    } else {
        0.0
    }
}

/// The 30-day churn ratio and whether it covers complete days: the retention family's
/// `churn.30d`, listed before this family.
fn churn_30d(earlier: &Sections) -> (f64, bool) {
    let churn = &earlier.retention.churn;
    (churn.d30, churn.complete)
}

impl OutcomeDay {
    fn fresh() -> OutcomeDay {
        OutcomeDay::default()
    }
}

impl Family for Outcomes {
    type State = OutcomesState;
    type Cache = OutcomesCache;
    type Summary = OutcomesSummary;
    type Section = OutcomesSection;

    const SERIES: &'static [SeriesDef] = &[
        NPS_SCORE,
        NPS_RESPONSES,
        CSAT_RATIO,
        CSAT_RESPONSES,
        REVENUE,
        ORDERS,
        PAYING_USERS,
        ARPU,
        ARPPU,
        MRR,
        MRR_MOVEMENT,
        MRR_CHURN,
        LTV,
    ];

    fn new_state(rules: &Rules) -> OutcomesState {
        OutcomesState {
            days: DayRing::new(rules.retention_days),
            mrr: BTreeMap::new(),
            dropped: 0,
        }
    }

    fn restore(state: &mut OutcomesState, rules: &Rules) {
        state.days.fit(rules.retention_days);
    }

    fn apply(
        state: &mut OutcomesState,
        cache: &mut OutcomesCache,
        event: &PartitionEvent,
        rules: &Rules,
    ) {
        let Some(value) = event.outcome else { return };
        let moves = match value {
            OutcomeValue::Mrr(after) => {
                let latest = state.mrr.entry(event.user.key).or_insert(LatestMrr {
                    ts_ms: i64::MIN,
                    minor: 0,
                });
                if event.ts_ms < latest.ts_ms {
                    // Superseded by a later change that arrived first.
                    return;
                }
                let moves = Moves::of(latest.minor, after);
                *latest = LatestMrr {
                    ts_ms: event.ts_ms,
                    minor: after,
                };
                Some(moves)
            }
            _ => None,
        };
        let Some(day) = state.days.get_or_insert_with(event.day, OutcomeDay::fresh) else {
            state.dropped += 1;
            return;
        };
        let figures = &mut day.figures;
        match value {
            OutcomeValue::Nps(score) => figures.nps[usize::from(score)] += 1,
            OutcomeValue::Csat(score) => figures.csat[usize::from(score) - 1] += 1,
            OutcomeValue::Order(amount) => {
                figures.revenue_minor = figures.revenue_minor.saturating_add(amount);
                figures.orders += 1;
                day.paying
                    .get_or_insert_with(|| DistinctSketch::new(rules.shape))
                    .insert(&event.user);
                cache.past.note_write(event.day);
            }
            OutcomeValue::Mrr(_) => {}
        }
        if let Some(moves) = moves {
            figures.mrr.add(&moves);
        }
    }

    fn summarize(
        state: &OutcomesState,
        cache: &mut OutcomesCache,
        at: SummaryPoint,
        rules: &Rules,
    ) -> OutcomesSummary {
        if !rules.outcomes.any() {
            return OutcomesSummary::default();
        }
        let days: Vec<Option<&OutcomeDay>> = at.days().map(|d| state.days.get(d)).collect();
        let paying: Vec<Option<&DistinctSketch>> = days
            .iter()
            .map(|d| d.and_then(|d| d.paying.as_ref()))
            .collect();
        if !cache.past.valid_for(at.today) {
            cache.paying = PastSketches::fold(&paying, rules.shape);
        }
        let windows = SketchWindows::fold(&paying, &cache.paying, Previous::Skip, rules.shape);
        OutcomesSummary {
            rules: rules.outcomes,
            days: days
                .iter()
                .map(|d| d.map(|d| d.figures).unwrap_or_default())
                .collect(),
            paying: windows.current,
            mrr_total: state.mrr.values().map(|m| m.minor).sum(),
        }
    }

    fn merge(into: &mut OutcomesSummary, other: OutcomesSummary, rules: &Rules) {
        if other.rules.any() {
            into.rules = other.rules;
        }
        if into.days.len() < other.days.len() {
            into.days.resize(other.days.len(), DayFigures::default());
        }
        for (mine, theirs) in into.days.iter_mut().zip(&other.days) {
            mine.add(theirs);
        }
        for (mine, theirs) in into.paying.iter_mut().zip(other.paying) {
            merge_sketch(mine, theirs, rules.shape);
        }
        into.mrr_total += other.mrr_total;
    }

    fn estimated_bytes(state: &OutcomesState, cache: &OutcomesCache) -> usize {
        let days = state
            .days
            .iter()
            .map(|(_, d)| {
                std::mem::size_of::<OutcomeDay>()
                    + d.paying.as_ref().map_or(0, DistinctSketch::estimated_bytes)
            })
            .sum::<usize>();
        // A B-tree entry: key and value, plus about a third again of node overhead.
        let per_subscriber =
            (std::mem::size_of::<u64>() + std::mem::size_of::<LatestMrr>()) * 4 / 3;
        days + state.mrr.len() * per_subscriber + cache.paying.estimated_bytes()
    }

    fn check(state: &OutcomesState, counts: &mut Vec<u64>) -> Result<(), String> {
        for (day, d) in state.days.iter() {
            let f = &d.figures;
            let m = &f.mrr;
            if f.revenue_minor < 0
                || [m.new, m.expansion, m.contraction, m.churned]
                    .iter()
                    .any(|v| *v < 0)
            {
                return Err(format!("outcomes: negative money on day {day}"));
            }
            counts.extend(f.nps);
            counts.extend(f.csat);
            counts.push(f.orders);
        }
        if state.mrr.values().any(|m| m.minor < 0) {
            return Err("outcomes: a negative MRR".into());
        }
        counts.push(state.dropped);
        Ok(())
    }

    fn section(
        summaries: &[Summary],
        earlier: &Sections,
        cx: &SectionContext<'_>,
    ) -> OutcomesSection {
        let Some(rules) = summaries
            .iter()
            .map(|s| s.outcomes.rules)
            .find(OutcomeRules::any)
        else {
            return OutcomesSection::default();
        };
        let daily: Vec<DayFigures> = (0..SPAN)
            .map(|offset| {
                let mut day = DayFigures::default();
                for s in summaries {
                    if let Some(theirs) = s.outcomes.days.get(offset) {
                        day.add(theirs);
                    }
                }
                day
            })
            .collect();
        let sum = |days: &[DayFigures]| {
            let mut total = DayFigures::default();
            days.iter().for_each(|d| total.add(d));
            total
        };
        let windows: Windowed<DayFigures> = Windowed::from_fn(|w| sum(&daily[..WINDOWS[w]]));
        let revenue = rules.revenue.map(|currency| {
            Windowed::from_fn(|w| {
                let figures = windows.get(w);
                let paying_users = union_estimate(
                    cx.shape,
                    summaries
                        .iter()
                        .filter_map(|s| s.outcomes.paying[w].as_ref()),
                );
                let active = *earlier.activity.active_users.get(w);
                let amount = figures.revenue_minor as f64;
                RevenueFigures {
                    currency: currency.code().to_owned(),
                    amount_minor: figures.revenue_minor,
                    orders: figures.orders,
                    paying_users,
                    arpu_minor: ratio(amount, active as f64),
                    arppu_minor: ratio(amount, paying_users as f64),
                }
            })
        });
        let mrr = rules.subscription.map(|_| {
            let total_minor = summaries.iter().map(|s| s.outcomes.mrr_total).sum::<i64>();
            // The last 30 complete days: yesterday (offset 1) back to offset 30. Every change
            // since their start is in the ring, so MRR then is today's less those changes.
            let complete = sum(&daily[1..=30]);
            let since_start = sum(&daily[..=30]);
            let at_start = total_minor - since_start.mrr.net_new();
            MrrFigures {
                total_minor,
                movements: windows.map(|f| MrrMovements {
                    new: f.mrr.new,
                    expansion: f.mrr.expansion,
                    contraction: f.mrr.contraction,
                    churned: f.mrr.churned,
                    net_new: f.mrr.net_new(),
                }),
                churn_rate_30d: ratio(complete.mrr.churned as f64, at_start as f64),
            }
        });
        let ltv = revenue.as_ref().map(|revenue| {
            let (ratio_30d, complete) = churn_30d(earlier);
            (
                ltv_estimate_minor(revenue.d30.arpu_minor, ratio_30d, complete),
                complete && ratio_30d > 0.0,
            )
        });
        OutcomesSection {
            outcomes: Some(OutcomeFigures {
                nps: rules.nps.then(|| windows.map(|f| nps_of(&f.nps))),
                csat: rules.csat.then(|| windows.map(|f| csat_of(&f.csat))),
                revenue,
                mrr,
                ltv_estimate_minor: ltv.map(|(value, _)| value),
                ltv_estimate_complete: ltv.map(|(_, complete)| complete),
            }),
        }
    }

    fn series(sections: &Sections, out: &mut dyn SeriesOut) {
        let Some(o) = &sections.outcomes.outcomes else {
            return;
        };
        if let Some(nps) = &o.nps {
            for (window, f) in nps.labelled() {
                out.sample(&NPS_SCORE, &[window], f.score);
                for (group, count) in [
                    ("promoter", f.promoters),
                    ("passive", f.passives),
                    ("detractor", f.detractors),
                ] {
                    out.sample(&NPS_RESPONSES, &[window, group], count as f64);
                }
            }
        }
        if let Some(csat) = &o.csat {
            for (window, f) in csat.labelled() {
                out.sample(&CSAT_RATIO, &[window], f.score / 100.0);
                out.sample(&CSAT_RESPONSES, &[window], f.responses as f64);
            }
        }
        if let Some(revenue) = &o.revenue {
            for (window, f) in revenue.labelled() {
                out.sample(&REVENUE, &[window, &f.currency], f.amount_minor as f64);
                out.sample(&ORDERS, &[window], f.orders as f64);
                out.sample(&PAYING_USERS, &[window], f.paying_users as f64);
                out.sample(&ARPU, &[window], f.arpu_minor);
                out.sample(&ARPPU, &[window], f.arppu_minor);
            }
        }
        if let Some(mrr) = &o.mrr {
            out.sample(&MRR, &[], mrr.total_minor as f64);
            out.sample(&MRR_CHURN, &[], mrr.churn_rate_30d);
            for (window, m) in mrr.movements.labelled() {
                for (kind, value) in [
                    ("new", m.new),
                    ("expansion", m.expansion),
                    ("contraction", m.contraction),
                    ("churned", m.churned),
                    ("net_new", m.net_new),
                ] {
                    out.sample(&MRR_MOVEMENT, &[kind, window], value as f64);
                }
            }
        }
        if let Some(ltv) = o.ltv_estimate_minor {
            out.sample(&LTV, &[], ltv);
        }
    }

    /// Additive, non-negative components (rollup values are never negative): a warehouse
    /// derives the NPS, CSAT and net new MRR of any range from them.
    fn rollups(sections: &Sections, _: &[Summary], out: &mut RollupOut<'_>) {
        let Some(o) = &sections.outcomes.outcomes else {
            return;
        };
        let mut values: Vec<(&'static str, usize, f64)> = Vec::new();
        for w in out.windows() {
            if let Some(nps) = &o.nps {
                let f = nps.get(w);
                values.push(("nps_responses", w, f.responses as f64));
                values.push(("nps_promoters", w, f.promoters as f64));
                values.push(("nps_detractors", w, f.detractors as f64));
            }
            if let Some(csat) = &o.csat {
                let f = csat.get(w);
                values.push(("csat_responses", w, f.responses as f64));
                values.push(("csat_satisfied", w, f.satisfied as f64));
            }
            if let Some(revenue) = &o.revenue {
                let f = revenue.get(w);
                values.push(("revenue_minor_units", w, f.amount_minor as f64));
                values.push(("orders", w, f.orders as f64));
                values.push(("paying_users", w, f.paying_users as f64));
                values.push(("arpu_minor_units", w, f.arpu_minor));
            }
            if let Some(mrr) = &o.mrr {
                let m = mrr.movements.get(w);
                values.push(("mrr_new_minor_units", w, m.new as f64));
                values.push(("mrr_expansion_minor_units", w, m.expansion as f64));
                values.push(("mrr_contraction_minor_units", w, m.contraction as f64));
                values.push(("mrr_churned_minor_units", w, m.churned as f64));
                if w == 0 {
                    // A level, not a sum over days: the 1-day record is the day's end.
                    values.push(("mrr_minor_units", w, mrr.total_minor as f64));
                }
            }
        }
        for (metric, window, value) in values {
            out.push(RollupValue {
                metric,
                window,
                dimensions: &[],
                value,
                sketch: None,
            });
        }
    }
}

fn nps_of(answers: &[u64; NPS_SCORES]) -> NpsFigures {
    let detractors = answers[..=6].iter().sum::<u64>();
    let passives = answers[7..=8].iter().sum::<u64>();
    let promoters = answers[9..].iter().sum::<u64>();
    let responses = detractors + passives + promoters;
    NpsFigures {
        responses,
        promoters,
        passives,
        detractors,
        score: ratio(promoters as f64 - detractors as f64, responses as f64) * 100.0,
    }
}

fn csat_of(answers: &[u64; CSAT_SCORES]) -> CsatFigures {
    let responses = answers.iter().sum::<u64>();
    let satisfied = answers[3..].iter().sum::<u64>();
    CsatFigures {
        responses,
        satisfied,
        score: ratio(satisfied as f64, responses as f64) * 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::families::retention::PeriodRatios;
    use crate::money::Currency;
    use crate::settings::EngineSettings;
    use crate::sketch::UserHash;
    use crate::time::Day;

    const TODAY: Day = 20_000;

    fn rules() -> Rules {
        let mut rules = Rules::of(&EngineSettings::default());
        rules.outcomes = OutcomeRules {
            nps: true,
            csat: true,
            revenue: Currency::of("USD"),
            subscription: Currency::of("USD"),
        };
        rules
    }

    fn event(user: &str, day: Day, ts_offset_ms: i64, value: OutcomeValue) -> PartitionEvent {
        PartitionEvent {
            partition: 0,
            user: UserHash::of(user),
            session_key: 0,
            ts_ms: i64::from(day) * 86_400_000 + ts_offset_ms,
            day,
            kind: EventKind::Other,
            feature: None,
            sessionize: true,
            in_retention: true,
            in_horizon: true,
            outcome: Some(value),
            dims: Default::default(),
            tags: Default::default(),
        }
    }

    fn section_of(events: &[PartitionEvent], partitions: usize) -> OutcomeFigures {
        section_with_churn(events, partitions, PeriodRatios::default())
    }

    /// The section beside a retention family that measured `churn`.
    fn section_with_churn(
        events: &[PartitionEvent],
        partitions: usize,
        churn: PeriodRatios,
    ) -> OutcomeFigures {
        let rules = rules();
        let mut summaries = Vec::new();
        for p in 0..partitions {
            let mut state = Outcomes::new_state(&rules);
            let mut cache = OutcomesCache::default();
            for e in events
                .iter()
                .filter(|e| (e.user.key % partitions as u64) as usize == p)
            {
                Outcomes::apply(&mut state, &mut cache, e, &rules);
            }
            let at = SummaryPoint {
                today: TODAY,
                now_minute: i64::from(TODAY) * 1440,
                ..SummaryPoint::default()
            };
            let summary = Outcomes::summarize(&state, &mut cache, at, &rules);
            summaries.push(Summary {
                outcomes: summary,
                ..Summary::default()
            });
        }
        let router = crate::ingest::RouterState {
            features: crate::features::FeatureRegistry::new(1),
            max_event_ms: None,
            watermark_ms: None,
            dimensions: Default::default(),
        };
        let cx = SectionContext {
            router: &router,
            shape: rules.shape,
        };
        let mut earlier = Sections::default();
        earlier.activity.active_users = Windowed {
            d1: 4,
            d7: 8,
            d30: 10,
        };
        earlier.retention.churn = churn;
        Outcomes::section(&summaries, &earlier, &cx)
            .outcomes
            .unwrap()
    }

    #[test]
    fn scores_count_per_window() {
        let events = [
            event("a", TODAY, 0, OutcomeValue::Nps(10)),
            event("b", TODAY, 0, OutcomeValue::Nps(9)),
            event("c", TODAY, 0, OutcomeValue::Nps(7)),
            event("d", TODAY, 0, OutcomeValue::Nps(0)),
            event("e", TODAY - 3, 0, OutcomeValue::Nps(6)),
            event("a", TODAY, 0, OutcomeValue::Csat(5)),
            event("b", TODAY - 10, 0, OutcomeValue::Csat(1)),
        ];
        let o = section_of(&events, 1);
        let nps = o.nps.unwrap();
        assert_eq!(
            (
                nps.d1.responses,
                nps.d1.promoters,
                nps.d1.passives,
                nps.d1.detractors
            ),
            (4, 2, 1, 1)
        );
        assert_eq!(nps.d1.score, 25.0);
        assert_eq!((nps.d7.responses, nps.d7.detractors), (5, 2));
        let csat = o.csat.unwrap();
        assert_eq!(
            (csat.d1.score, csat.d7.responses, csat.d30.score),
            (100.0, 1, 50.0)
        );
    }

    #[test]
    fn revenue_is_exact_and_divides_by_active_and_paying_users() {
        let events = [
            event("a", TODAY, 0, OutcomeValue::Order(1999)),
            event("a", TODAY, 1, OutcomeValue::Order(1)),
            event("b", TODAY - 2, 0, OutcomeValue::Order(500)),
        ];
        for partitions in [1, 3] {
            let revenue = section_of(&events, partitions).revenue.unwrap();
            assert_eq!(revenue.d1.amount_minor, 2000);
            assert_eq!((revenue.d1.orders, revenue.d1.paying_users), (2, 1));
            assert_eq!(revenue.d1.arpu_minor, 500.0, "2000 over 4 active users");
            assert_eq!(revenue.d1.arppu_minor, 2000.0);
            assert_eq!(
                (revenue.d7.amount_minor, revenue.d7.paying_users),
                (2500, 2)
            );
            assert_eq!(revenue.d30.arpu_minor, 250.0);
            assert_eq!(revenue.d30.currency, "USD");
        }
    }

    #[test]
    fn mrr_moves_and_churns() {
        let d = |n: Day| TODAY - n;
        let events = [
            // 40 days ago (before the ring): not held, so only their latest values count.
            event("a", d(31), 0, OutcomeValue::Mrr(1000)),
            event("b", d(31), 0, OutcomeValue::Mrr(500)),
            event("a", d(10), 0, OutcomeValue::Mrr(1500)), // expansion 500
            event("b", d(5), 0, OutcomeValue::Mrr(0)),     // churned 500
            event("c", d(2), 0, OutcomeValue::Mrr(300)),   // new 300
            event("a", d(1), 0, OutcomeValue::Mrr(1200)),  // contraction 300
            event("a", d(1), -5, OutcomeValue::Mrr(9999)), // older than a's latest: ignored
            event("c", d(0), 0, OutcomeValue::Mrr(400)),   // expansion 100 today
        ];
        for partitions in [1, 2] {
            let mrr = section_of(&events, partitions).mrr.unwrap();
            assert_eq!(mrr.total_minor, 1600);
            let w7 = mrr.movements.d7;
            assert_eq!(
                (w7.new, w7.expansion, w7.contraction, w7.churned, w7.net_new),
                (300, 100, 300, 500, -400)
            );
            assert_eq!(mrr.movements.d1.net_new, 100);
            assert_eq!(mrr.movements.d30.expansion, 600);
            // Churned over days 1..=30: 500, of the 1 500 held when they began.
            assert_eq!(mrr.churn_rate_30d, 500.0 / 1500.0);
        }
    }

    #[test]
    fn lifetime_value_needs_a_complete_nonzero_churn() {
        assert_eq!(ltv_estimate_minor(1000.0, 0.05, true), 20_000.0);
        assert_eq!(ltv_estimate_minor(1000.0, 0.05, false), 0.0);
        assert_eq!(ltv_estimate_minor(1000.0, 0.0, true), 0.0);
        let order = [event("a", TODAY, 0, OutcomeValue::Order(100))];
        let o = section_of(&order, 1);
        assert_eq!(o.ltv_estimate_minor, Some(0.0), "churn not measured");
        assert_eq!(o.ltv_estimate_complete, Some(false));
        // 30-day ARPU = 100 ÷ 10 active users; the retention family's 30-day churn 0.25.
        let churn = |complete| PeriodRatios {
            complete,
            d7: 0.5,
            d30: 0.25,
        };
        let o = section_with_churn(&order, 1, churn(true));
        assert_eq!(o.ltv_estimate_minor, Some(40.0));
        assert_eq!(o.ltv_estimate_complete, Some(true));
        let o = section_with_churn(&order, 1, churn(false));
        assert_eq!(
            o.ltv_estimate_minor,
            Some(0.0),
            "churn over incomplete days"
        );
    }

    #[test]
    fn the_family_is_absent_while_unconfigured() {
        let rules = Rules::of(&EngineSettings::default());
        let mut state = Outcomes::new_state(&rules);
        let mut cache = OutcomesCache::default();
        let summary = Outcomes::summarize(&state, &mut cache, SummaryPoint::default(), &rules);
        assert!(!summary.rules.any());
        Outcomes::apply(
            &mut state,
            &mut cache,
            &PartitionEvent {
                outcome: None,
                ..event("a", TODAY, 0, OutcomeValue::Nps(1))
            },
            &rules,
        );
        assert_eq!(state.days.iter().count(), 0);
        let section = serde_json::to_value(OutcomesSection::default()).unwrap();
        assert_eq!(section, serde_json::json!({}));
    }
}
