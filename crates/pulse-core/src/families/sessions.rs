//! Sessions: how many visits started in each window, how long they lasted (mean and
//! nearest-rank quantiles), how many bounced (one event), events per visit and visits per
//! active user; plus a lifetime histogram of every session's duration.
//!
//! Per partition: the open-session table ([`crate::sessions`], exact despite out-of-order
//! arrival), a day ring of statistics of the sessions that started that day, and the
//! lifetime histogram. Statistics add, so every figure is exact across partitions; the
//! quantiles come from a mergeable log histogram (0.5 % relative accuracy). A session
//! counts once it is final, on the day it started.
//!
//! With breakdown dimensions configured, the table's events also carry their value ids, and
//! each closed session goes on to the breakdowns family ([`ClosedByValue`]), which counts it
//! under its first event's values: one table for both, where the breakdowns family used to
//! keep a second one (the cost of which was most of what two dimensions added to an event).
//! Without dimensions the events stay untagged, 16 bytes, and nothing is handed on.

use serde::{Deserialize, Serialize};

use crate::dimensions::{DimIds, MAX_DIMENSIONS, NONE_ID};
use crate::event::PartitionEvent;
use crate::families::{Family, Sections, Summary};
use crate::family::{
    HistogramSample, RollupOut, RollupValue, Rules, SectionContext, SeriesDef, SeriesKind,
    SeriesOut, WINDOW, gauge,
};
use crate::ring::DayRing;
use crate::session_stats::{LifetimeSessions, SESSION_BUCKETS_SECONDS, SessionStats};
use crate::sessions::{ClosedSession, SessionEvent, SessionRules, SessionTable};
use crate::windows::{SummaryPoint, WINDOWS, Windowed, ratio};

#[derive(Debug)]
pub struct Sessions;

/// `Default` is the state of a family absent from an older image: empty, given its rings
/// by `restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionsState {
    pub(crate) table: OpenSessions,
    pub(crate) closed: ClosedStats,
}

/// The open sessions of a partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OpenSessions {
    /// No dimension configured: untagged events.
    Plain(SessionTable),
    /// Each event tagged with its value ids, by position among the dimensions whose keys
    /// ([`crate::dimensions::DimensionKeys`]) are `keys`: a restore under reordered
    /// dimensions moves the ids with them.
    ByValue {
        keys: Vec<u64>,
        table: SessionTable<DimIds>,
    },
}

impl Default for OpenSessions {
    fn default() -> Self {
        OpenSessions::Plain(SessionTable::default())
    }
}

/// What the sessions family keeps of closed sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ClosedStats {
    /// Statistics of the closed sessions that started on each day.
    days: DayRing<SessionStats>,
    lifetime: LifetimeSessions,
    /// Sessions that closed after their start day left the ring (should stay 0).
    dropped: u64,
}

/// Sessions closed with their first event's value ids, handed by the sessions family to the
/// breakdowns family (listed after it) as the families close sessions in turn; empty
/// without dimensions.
pub type ClosedByValue = Vec<ClosedSession<DimIds>>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionsSummary {
    /// Over the windows ending today, by [`WINDOWS`] position.
    pub windows: [SessionStats; 3],
    pub lifetime: LifetimeSessions,
    pub open_session_keys: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionKpis {
    pub count: u64,
    pub avg_duration_seconds: f64,
    pub p50_duration_seconds: f64,
    pub p90_duration_seconds: f64,
    pub bounce_rate: f64,
    pub events_per_session: f64,
    pub sessions_per_user: f64,
}

/// Every session closed since the state began, by duration (a Prometheus histogram).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionDurations {
    /// Upper bounds of the buckets; `counts` has one more entry, for `+Inf`.
    pub bounds_seconds: Vec<f64>,
    /// Sessions per bucket, not cumulative.
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionsSection {
    pub sessions: Windowed<SessionKpis>,
    pub session_durations: SessionDurations,
}

pub const SESSIONS: SeriesDef = gauge("pulse_sessions", WINDOW, "Sessions started in the window.");
pub const SESSION_DURATION_AVG_SECONDS: SeriesDef = gauge(
    "pulse_session_duration_avg_seconds",
    WINDOW,
    "Mean duration of the sessions started in the window.",
);
pub const SESSION_DURATION_QUANTILE_SECONDS: SeriesDef = gauge(
    "pulse_session_duration_quantile_seconds",
    &["window", "q"],
    "Nearest-rank duration quantile q of the sessions started in the window (within 0.5 %).",
);
pub const SESSION_BOUNCE_RATIO: SeriesDef = gauge(
    "pulse_session_bounce_ratio",
    WINDOW,
    "Share of the sessions started in the window that have a single event.",
);
pub const SESSIONS_PER_USER: SeriesDef = gauge(
    "pulse_sessions_per_user",
    WINDOW,
    "Sessions started in the window per active user of the window.",
);
pub const SESSION_EVENTS_AVG: SeriesDef = gauge(
    "pulse_session_events_avg",
    WINDOW,
    "Mean number of events per session started in the window.",
);
pub const SESSION_DURATION_SECONDS: SeriesDef = SeriesDef {
    name: "pulse_session_duration_seconds",
    kind: SeriesKind::Histogram,
    labels: &[],
    help: "Durations of the sessions closed since the state began.",
};

impl ClosedStats {
    /// Counts a closed session on the day it started and in the lifetime histogram.
    fn record<T>(&mut self, session: &ClosedSession<T>) {
        self.lifetime.record(session.duration_ms);
        match self
            .days
            .get_or_insert_with(session.start_day, SessionStats::default)
        {
            Some(stats) => stats.record(session),
            None => self.dropped += 1,
        }
    }
}

impl SessionsState {
    /// Closes what is final at `watermark_ms` (everything if `None`: the end of a replay's
    /// input); sessions with values go on in `by_value` as well.
    fn close(
        &mut self,
        watermark_ms: Option<i64>,
        rules: &SessionRules,
        by_value: &mut ClosedByValue,
    ) {
        let SessionsState { table, closed } = self;
        match table {
            OpenSessions::Plain(table) => {
                close_table(table, watermark_ms, rules, |session| {
                    closed.record(&session)
                });
            }
            OpenSessions::ByValue { table, .. } => {
                close_table(table, watermark_ms, rules, |session| {
                    closed.record(&session);
                    by_value.push(session);
                });
            }
        }
    }

    /// Moves the open sessions' value ids to their ids in another registry
    /// ([`crate::remap`]).
    pub(crate) fn remap(&mut self, map: &crate::remap::IdMap) {
        if let OpenSessions::ByValue { table, .. } = &mut self.table {
            table.map_tags(|ids| map.dims(ids));
        }
    }

    pub fn open_session_keys(&self) -> usize {
        self.table.open_keys()
    }
}

fn close_table<T: Copy>(
    table: &mut SessionTable<T>,
    watermark_ms: Option<i64>,
    rules: &SessionRules,
    emit: impl FnMut(ClosedSession<T>),
) {
    match watermark_ms {
        Some(watermark_ms) => table.advance(watermark_ms, rules, emit),
        None => table.close_all(rules, emit),
    }
}

impl OpenSessions {
    /// Fits the table to the dimensions configured now (their `keys`): events open since
    /// before a dimension was configured carry `__none__` for it (their value was never
    /// read), and dropped dimensions take their ids with them.
    fn fit(&mut self, keys: &[u64]) {
        let untagged = [NONE_ID; MAX_DIMENSIONS];
        *self = match std::mem::take(self) {
            OpenSessions::Plain(table) if keys.is_empty() => OpenSessions::Plain(table),
            OpenSessions::Plain(table) => OpenSessions::ByValue {
                keys: keys.to_vec(),
                table: table.retag(|()| untagged),
            },
            OpenSessions::ByValue { table, .. } if keys.is_empty() => {
                OpenSessions::Plain(table.retag(|_| ()))
            }
            OpenSessions::ByValue {
                keys: saved,
                mut table,
            } => {
                if saved != keys {
                    let from = super::breakdowns::moved_from(&saved, keys);
                    table.map_tags(|ids| {
                        let mut moved = untagged;
                        for (to, at) in moved.iter_mut().zip(&from) {
                            *to = at.map_or(NONE_ID, |at| ids[at]);
                        }
                        moved
                    });
                }
                OpenSessions::ByValue {
                    keys: keys.to_vec(),
                    table,
                }
            }
        };
    }

    fn restore_index(&mut self) {
        match self {
            OpenSessions::Plain(table) => table.restore_index(),
            OpenSessions::ByValue { table, .. } => table.restore_index(),
        }
    }

    fn open_keys(&self) -> usize {
        match self {
            OpenSessions::Plain(table) => table.open_keys(),
            OpenSessions::ByValue { table, .. } => table.open_keys(),
        }
    }

    fn estimated_bytes(&self) -> usize {
        match self {
            OpenSessions::Plain(table) => table.estimated_bytes(),
            OpenSessions::ByValue { table, .. } => table.estimated_bytes(),
        }
    }

    /// Whether every open event's time passes `accepted`.
    fn all_times(&self, accepted: impl Fn(i64) -> bool) -> bool {
        match self {
            OpenSessions::Plain(table) => table.event_times().all(accepted),
            OpenSessions::ByValue { table, .. } => table.event_times().all(accepted),
        }
    }
}

impl Family for Sessions {
    type State = SessionsState;
    type Cache = ();
    type Summary = SessionsSummary;
    type Section = SessionsSection;

    const SERIES: &'static [SeriesDef] = &[
        SESSIONS,
        SESSION_DURATION_AVG_SECONDS,
        SESSION_DURATION_QUANTILE_SECONDS,
        SESSION_BOUNCE_RATIO,
        SESSIONS_PER_USER,
        SESSION_EVENTS_AVG,
        SESSION_DURATION_SECONDS,
    ];

    fn new_state(rules: &Rules) -> SessionsState {
        let mut table = OpenSessions::default();
        table.fit(rules.dimensions.as_slice());
        SessionsState {
            table,
            closed: ClosedStats {
                days: DayRing::new(rules.retention_days),
                lifetime: LifetimeSessions::default(),
                dropped: 0,
            },
        }
    }

    fn restore(state: &mut SessionsState, rules: &Rules) {
        state.table.fit(rules.dimensions.as_slice());
        state.table.restore_index();
        state.closed.days.fit(rules.retention_days);
        state
            .closed
            .lifetime
            .counts
            .resize(SESSION_BUCKETS_SECONDS.len() + 1, 0);
    }

    fn apply(state: &mut SessionsState, _: &mut (), event: &PartitionEvent, rules: &Rules) {
        // Too late to join a session exactly: it counted as activity, not here.
        if !event.sessionize {
            return;
        }
        let (key, rules) = (event.session_key, &rules.sessions);
        match &mut state.table {
            OpenSessions::Plain(table) => {
                table.insert(
                    key,
                    SessionEvent::new(event.ts_ms, event.day, event.kind),
                    rules,
                );
            }
            OpenSessions::ByValue { table, .. } => {
                let tagged = SessionEvent::tagged(event.ts_ms, event.day, event.kind, event.dims);
                table.insert(key, tagged, rules);
            }
        }
    }

    fn advance(
        state: &mut SessionsState,
        watermark_ms: i64,
        rules: &Rules,
        by_value: &mut ClosedByValue,
    ) {
        state.close(Some(watermark_ms), &rules.sessions, by_value);
    }

    fn close_all(state: &mut SessionsState, rules: &Rules, by_value: &mut ClosedByValue) {
        state.close(None, &rules.sessions, by_value);
    }

    fn summarize(
        state: &SessionsState,
        _: &mut (),
        at: SummaryPoint,
        _: &Rules,
    ) -> SessionsSummary {
        SessionsSummary {
            windows: session_windows(at, |day| state.closed.days.get(day)),
            lifetime: state.closed.lifetime.clone(),
            open_session_keys: state.table.open_keys() as u64,
        }
    }

    fn merge(into: &mut SessionsSummary, other: SessionsSummary, _: &Rules) {
        for (mine, theirs) in into.windows.iter_mut().zip(&other.windows) {
            mine.merge(theirs);
        }
        into.lifetime.merge(&other.lifetime);
        into.open_session_keys += other.open_session_keys;
    }

    fn estimated_bytes(state: &SessionsState, _: &()) -> usize {
        state
            .closed
            .days
            .iter()
            .map(|(_, stats)| stats.durations.estimated_bytes())
            .sum::<usize>()
            + state.table.estimated_bytes()
    }

    fn check(state: &SessionsState, counts: &mut Vec<u64>) -> Result<(), String> {
        let accepted_time = |ms: i64| jiff::Timestamp::from_millisecond(ms).is_ok();
        if !state.table.all_times(accepted_time) {
            return Err("an open session holds an event time pulse never accepts".to_owned());
        }
        let closed = &state.closed;
        counts.extend(closed.days.iter().flat_map(|(_, stats)| stats.counts()));
        counts.extend(closed.lifetime.counts.iter().copied());
        counts.extend([closed.lifetime.sum_ms, closed.lifetime.count]);
        Ok(())
    }

    fn section(
        summaries: &[Summary],
        earlier: &Sections,
        _: &SectionContext<'_>,
    ) -> SessionsSection {
        let mut windows: [SessionStats; 3] = Default::default();
        let mut lifetime = LifetimeSessions::default();
        for summary in summaries {
            for (total, part) in windows.iter_mut().zip(&summary.sessions.windows) {
                total.merge(part);
            }
            lifetime.merge(&summary.sessions.lifetime);
        }
        let active = &earlier.activity.active_users;
        SessionsSection {
            sessions: Windowed::from_fn(|w| session_kpis(&windows[w], *active.get(w))),
            session_durations: SessionDurations {
                bounds_seconds: SESSION_BUCKETS_SECONDS.to_vec(),
                counts: lifetime.counts,
                sum_seconds: lifetime.sum_ms as f64 / 1000.0,
                count: lifetime.count,
            },
        }
    }

    fn series(sections: &Sections, out: &mut dyn SeriesOut) {
        let s = &sections.sessions;
        for (window, k) in s.sessions.labelled() {
            out.sample(&SESSIONS, &[window], k.count as f64);
            out.sample(
                &SESSION_DURATION_AVG_SECONDS,
                &[window],
                k.avg_duration_seconds,
            );
            out.sample(
                &SESSION_DURATION_QUANTILE_SECONDS,
                &[window, "0.5"],
                k.p50_duration_seconds,
            );
            out.sample(
                &SESSION_DURATION_QUANTILE_SECONDS,
                &[window, "0.9"],
                k.p90_duration_seconds,
            );
            out.sample(&SESSION_BOUNCE_RATIO, &[window], k.bounce_rate);
            out.sample(&SESSIONS_PER_USER, &[window], k.sessions_per_user);
            out.sample(&SESSION_EVENTS_AVG, &[window], k.events_per_session);
        }
        let h = &s.session_durations;
        out.histogram(
            &SESSION_DURATION_SECONDS,
            HistogramSample {
                bounds: &h.bounds_seconds,
                counts: &h.counts,
                sum: h.sum_seconds,
            },
        );
    }

    fn rollups(sections: &Sections, _: &[Summary], out: &mut RollupOut<'_>) {
        for w in out.windows().collect::<Vec<_>>() {
            let s = sections.sessions.sessions.get(w);
            for (metric, value) in [
                ("sessions", s.count as f64),
                ("session_duration_avg_seconds", s.avg_duration_seconds),
                ("session_duration_p50_seconds", s.p50_duration_seconds),
                ("session_duration_p90_seconds", s.p90_duration_seconds),
                ("bounce_rate", s.bounce_rate),
                ("events_per_session", s.events_per_session),
            ] {
                out.push(RollupValue {
                    metric,
                    window: w,
                    dimensions: &[],
                    value,
                    sketch: None,
                });
            }
        }
    }
}

/// The statistics of the sessions started in each window ending today, by [`WINDOWS`]
/// position, from each day's (everyone's, or one breakdown value's).
pub(crate) fn session_windows<'a>(
    at: SummaryPoint,
    day: impl Fn(crate::time::Day) -> Option<&'a SessionStats>,
) -> [SessionStats; 3] {
    with_today(&past_sessions(at, &day), day(at.today))
}

/// The statistics of the sessions started on the days before today in each window ending
/// today, by [`WINDOWS`] position (the 1-day window has none): what a refresh on the same
/// day may reuse, as long as no session closed into one of those days.
pub(crate) fn past_sessions<'a>(
    at: SummaryPoint,
    day: impl Fn(crate::time::Day) -> Option<&'a SessionStats>,
) -> [SessionStats; 3] {
    let mut windows: [SessionStats; 3] = Default::default();
    let mut running = SessionStats::default();
    for (offset, d) in at.days().take(WINDOWS[2]).enumerate().skip(1) {
        if let Some(stats) = day(d) {
            running.merge(stats);
        }
        if let Some(w) = WINDOWS.iter().position(|w| *w == offset + 1) {
            windows[w] = running.clone();
        }
    }
    windows
}

/// Each window's statistics: the days before today in it ([`past_sessions`]) with today's.
pub(crate) fn with_today(
    past: &[SessionStats; 3],
    today: Option<&SessionStats>,
) -> [SessionStats; 3] {
    std::array::from_fn(|w| {
        let mut stats = past[w].clone();
        if let Some(today) = today {
            stats.merge(today);
        }
        stats
    })
}

pub(crate) fn session_kpis(stats: &SessionStats, active_users: u64) -> SessionKpis {
    let count = stats.count as f64;
    SessionKpis {
        count: stats.count,
        avg_duration_seconds: ratio(stats.duration_ms_sum as f64, count) / 1000.0,
        p50_duration_seconds: stats.durations.quantile_ms(0.5) / 1000.0,
        p90_duration_seconds: stats.durations.quantile_ms(0.9) / 1000.0,
        bounce_rate: ratio(stats.bounces as f64, count),
        events_per_session: ratio(stats.events as f64, count),
        sessions_per_user: ratio(count, active_users as f64),
    }
}

#[cfg(test)]
mod tests {
    use crate::{EngineState, StateError};

    #[test]
    fn session_counts_no_stream_could_reach_make_an_image_corrupt() {
        // The fuzzer's find: a duration histogram near 2^64 overflowed the snapshot's count.
        let mut state = crate::engine::one_login().state();
        assert!(EngineState::from_bytes(&state.to_bytes()).is_ok());
        let lifetime = &mut state.partitions[0].kpis.sessions.closed.lifetime;
        lifetime.counts[0] = u64::MAX - 1;
        lifetime.count = 2;
        assert!(matches!(
            EngineState::from_bytes(&state.to_bytes()),
            Err(StateError::Corrupt(_))
        ));
    }
}
