//! Funnel and time-to-value configuration: the `[[funnels]]` and `[time_to_value]` tables
//! as configured, their checks, and the compiled form the hot path matches against.
//!
//! A step matches on the event's kind, its raw event name and its feature. The raw name
//! is gone once a record is prepared (a partition sees only hashes and interned ids), so
//! the decoder resolves it here, at prepare time, to a small [`StepTags`]: the position of
//! the name (and of the feature) among the names the funnels mention. With no funnel and no
//! time to value configured, the tagger holds no names and prepare skips the look-up
//! entirely, which is what keeps the hot path's cost at zero for those who use neither.

use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::settings::SettingsError;

/// At most this many funnels (each costs state per user and sketches per day).
pub const MAX_FUNNELS: usize = 20;
/// Steps of one funnel: at least two, at most ten (a step is a bit in [`StepMask`]).
pub const MIN_STEPS: usize = 2;
pub const MAX_STEPS: usize = 10;
/// The longest conversion (or time-to-value) window: the longest KPI window.
pub const MAX_WINDOW_MS: i64 = 30 * 86_400_000;

/// What one step matches, as configured: every field given must match (a step with none
/// is refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepMatch {
    /// An [`EventKind`] name (`signup`, `feature_used`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The raw event name, as the record carries it (`"Plan Upgraded"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
}

/// One configured funnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelDef {
    pub name: String,
    /// Conversion window: an attempt may advance until its entry plus this.
    pub window_ms: i64,
    pub steps: Vec<StepMatch>,
}

/// The configured time to value: the first `event` within `window_ms` after a signup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeToValueDef {
    pub event: StepMatch,
    pub window_ms: i64,
}

/// The raw-name and feature positions an event carries for funnel matching: 0 for none,
/// else the 1-based position in the tagger's lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepTags {
    pub name: u8,
    pub feature: u8,
}

/// Which steps of one funnel an event matches, bit `i` for step `i`.
pub type StepMask = u16;

/// Resolves raw event names and features to [`StepTags`] at prepare time.
#[derive(Debug, Clone, Default)]
pub struct Tagger {
    names: Vec<Box<str>>,
    features: Vec<Box<str>>,
}

impl Tagger {
    /// Whether any funnel or the time to value is configured: without, tagging is skipped.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.features.is_empty()
    }

    /// The tags of an event. The lists are short (a few names per funnel), so a scan beats
    /// hashing the name.
    pub fn tags(&self, name: &str, feature: Option<&str>) -> StepTags {
        let position = |list: &[Box<str>], text: &str| {
            list.iter()
                .position(|n| **n == *text)
                .map_or(0, |p| p as u8 + 1)
        };
        StepTags {
            name: position(&self.names, name),
            feature: feature.map_or(0, |f| position(&self.features, f)),
        }
    }
}

/// A step compiled: the kind to match and tag positions (0: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompiledStep {
    kind: Option<EventKind>,
    name: u8,
    feature: u8,
}

impl CompiledStep {
    pub fn matches(&self, kind: EventKind, tags: StepTags) -> bool {
        self.kind.is_none_or(|k| k == kind)
            && (self.name == 0 || self.name == tags.name)
            && (self.feature == 0 || self.feature == tags.feature)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFunnel {
    pub name: String,
    pub window_ms: i64,
    pub steps: Vec<CompiledStep>,
}

impl CompiledFunnel {
    /// The steps `kind` and `tags` match.
    pub fn mask(&self, kind: EventKind, tags: StepTags) -> StepMask {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, step)| step.matches(kind, tags))
            .fold(0, |mask, (i, _)| mask | (1 << i))
    }
}

/// Everything the funnels family matches against, compiled once from the settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunnelRules {
    pub funnels: Vec<CompiledFunnel>,
    /// The value event and the window of the time to value.
    pub time_to_value: Option<(CompiledStep, i64)>,
    /// Events later than this behind the watermark take no part (the sessions' lateness).
    pub lateness_ms: i64,
    /// By [`EventKind`]: what an event without tags (most events) matches, worked out once.
    /// Matching step by step cost a few hundred instructions per event with 20 funnels.
    untagged: Vec<Matched>,
}

/// What an event matches: each funnel's steps, and whether it takes part at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Matched {
    /// By funnel position; an array, not a list: one copy per event, no allocation.
    masks: [StepMask; MAX_FUNNELS],
    takes_part: bool,
}

impl FunnelRules {
    /// Whether there is anything to compute at all.
    pub fn is_empty(&self) -> bool {
        self.funnels.is_empty() && self.time_to_value.is_none()
    }

    /// The steps of each funnel (by position) that `kind` and `tags` match.
    pub fn masks(&self, kind: EventKind, tags: StepTags) -> [StepMask; MAX_FUNNELS] {
        match self.untagged.get(kind as usize) {
            Some(matched) if tags == StepTags::default() => matched.masks,
            _ => self.matched(kind, tags).masks,
        }
    }

    /// Whether an event takes part in any funnel or the time to value (a signup does).
    pub fn takes_part(&self, kind: EventKind, tags: StepTags) -> bool {
        match self.untagged.get(kind as usize) {
            Some(matched) if tags == StepTags::default() => matched.takes_part,
            _ => self.matched(kind, tags).takes_part,
        }
    }

    fn matched(&self, kind: EventKind, tags: StepTags) -> Matched {
        let mut masks = [0; MAX_FUNNELS];
        for (mask, funnel) in masks.iter_mut().zip(&self.funnels) {
            *mask = funnel.mask(kind, tags);
        }
        let value = self
            .time_to_value
            .is_some_and(|(value, _)| kind == EventKind::Signup || value.matches(kind, tags));
        Matched {
            takes_part: value || masks.iter().any(|m| *m != 0),
            masks,
        }
    }
}

/// Compiles validated definitions into the tagger the decoder uses and the rules the
/// family matches with (the two agree on the tag positions).
pub fn compile(
    funnels: &[FunnelDef],
    time_to_value: Option<&TimeToValueDef>,
    lateness_ms: i64,
) -> (Tagger, FunnelRules) {
    let mut tagger = Tagger::default();
    let mut step = |m: &StepMatch| {
        let intern = |list: &mut Vec<Box<str>>, text: &Option<String>| {
            text.as_deref().map_or(0, |text| {
                let position = list.iter().position(|n| **n == *text).unwrap_or_else(|| {
                    list.push(text.into());
                    list.len() - 1
                });
                position as u8 + 1
            })
        };
        CompiledStep {
            kind: m.kind.as_deref().and_then(kind_named),
            name: intern(&mut tagger.names, &m.event),
            feature: intern(&mut tagger.features, &m.feature),
        }
    };
    let funnels = funnels
        .iter()
        .map(|f| CompiledFunnel {
            name: f.name.clone(),
            window_ms: f.window_ms,
            steps: f.steps.iter().map(&mut step).collect(),
        })
        .collect();
    let time_to_value = time_to_value.map(|t| (step(&t.event), t.window_ms));
    let mut rules = FunnelRules {
        funnels,
        time_to_value,
        lateness_ms,
        untagged: Vec::new(),
    };
    rules.untagged = EventKind::ALL
        .iter()
        .map(|kind| rules.matched(*kind, StepTags::default()))
        .collect();
    (tagger, rules)
}

fn kind_named(name: &str) -> Option<EventKind> {
    EventKind::ALL.into_iter().find(|k| k.as_str() == name)
}

/// Checks the funnels and the time to value; errors name the key as written.
pub fn validate(
    funnels: &[FunnelDef],
    time_to_value: Option<&TimeToValueDef>,
) -> Result<(), SettingsError> {
    let invalid = |key: String, message: String| Err(SettingsError::Invalid { key, message });
    if funnels.len() > MAX_FUNNELS {
        return invalid(
            "funnels".into(),
            format!("{} funnels, at most {MAX_FUNNELS}", funnels.len()),
        );
    }
    for (i, funnel) in funnels.iter().enumerate() {
        let key = format!("funnels[{i}]");
        let name = &funnel.name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return invalid(
                format!("{key}.name"),
                format!("{name:?} must be made of a-z, 0-9 and _"),
            );
        }
        if funnels[..i].iter().any(|f| f.name == *name) {
            return invalid(format!("{key}.name"), format!("{name:?} names two funnels"));
        }
        check_window(&format!("{key}.window"), funnel.window_ms)?;
        if !(MIN_STEPS..=MAX_STEPS).contains(&funnel.steps.len()) {
            return invalid(
                format!("{key}.steps"),
                format!(
                    "{} steps, a funnel has {MIN_STEPS} to {MAX_STEPS}",
                    funnel.steps.len()
                ),
            );
        }
        for (s, step) in funnel.steps.iter().enumerate() {
            check_step(&format!("{key}.steps[{s}]"), step)?;
        }
    }
    if let Some(ttv) = time_to_value {
        check_window("time_to_value.window", ttv.window_ms)?;
        check_step("time_to_value.event", &ttv.event)?;
    }
    Ok(())
}

fn check_window(key: &str, window_ms: i64) -> Result<(), SettingsError> {
    if window_ms > 0 && window_ms <= MAX_WINDOW_MS {
        return Ok(());
    }
    Err(SettingsError::Invalid {
        key: key.to_owned(),
        message: format!("{window_ms} ms, it must be more than zero and at most 30d"),
    })
}

fn check_step(key: &str, step: &StepMatch) -> Result<(), SettingsError> {
    let invalid = |key: String, message: String| Err(SettingsError::Invalid { key, message });
    if step.kind.is_none() && step.event.is_none() && step.feature.is_none() {
        return invalid(
            key.to_owned(),
            "an empty step: give a kind, an event or a feature".into(),
        );
    }
    if let Some(kind) = &step.kind
        && kind_named(kind).is_none()
    {
        let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        return invalid(
            format!("{key}.kind"),
            format!("unknown kind {kind:?} (one of {})", known.join(", ")),
        );
    }
    for (field, text) in [("event", &step.event), ("feature", &step.feature)] {
        if text.as_deref() == Some("") {
            return invalid(format!("{key}.{field}"), "an empty name".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: Option<&str>, event: Option<&str>, feature: Option<&str>) -> StepMatch {
        StepMatch {
            kind: kind.map(Into::into),
            event: event.map(Into::into),
            feature: feature.map(Into::into),
        }
    }

    fn activation() -> FunnelDef {
        FunnelDef {
            name: "activation".into(),
            window_ms: 7 * 86_400_000,
            steps: vec![
                step(Some("signup"), None, None),
                step(Some("feature_used"), None, Some("export_csv")),
                step(None, Some("Plan Upgraded"), None),
            ],
        }
    }

    #[test]
    fn steps_match_on_kind_raw_name_and_feature() {
        let (tagger, rules) = compile(&[activation()], None, 0);
        let none = tagger.tags("signup", None);
        assert_eq!(rules.masks(EventKind::Signup, none)[0], 0b001);
        let export = tagger.tags("feature_used", Some("export_csv"));
        assert_eq!(rules.masks(EventKind::FeatureUsed, export)[0], 0b010);
        let other = tagger.tags("feature_used", Some("share"));
        assert_eq!(rules.masks(EventKind::FeatureUsed, other)[0], 0);
        let upgrade = tagger.tags("Plan Upgraded", None);
        assert_eq!(rules.masks(EventKind::Other, upgrade)[0], 0b100);
        assert!(rules.takes_part(EventKind::Signup, none));
        assert!(!rules.takes_part(EventKind::Login, tagger.tags("login", None)));
        // The table for untagged events says what matching step by step says.
        for kind in EventKind::ALL {
            let untagged = StepTags::default();
            let step_by_step = rules.funnels[0].mask(kind, untagged);
            assert_eq!(rules.masks(kind, untagged)[0], step_by_step);
            assert_eq!(rules.takes_part(kind, untagged), step_by_step != 0);
        }
        assert!(Tagger::default().is_empty() && !tagger.is_empty());
    }

    #[test]
    fn each_rule_names_its_key() {
        type Mutation = Box<dyn Fn(&mut Vec<FunnelDef>)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|f| f[0].name = "Bad-Name".into()),
                "funnels[0].name",
            ),
            (Box::new(|f| f.push(activation())), "funnels[1].name"),
            (
                Box::new(|f| f[0].window_ms = 31 * 86_400_000),
                "funnels[0].window",
            ),
            (Box::new(|f| f[0].steps.truncate(1)), "funnels[0].steps"),
            (
                Box::new(|f| f[0].steps[1] = step(None, None, None)),
                "funnels[0].steps[1]",
            ),
            (
                Box::new(|f| f[0].steps[2].kind = Some("purchase".into())),
                "funnels[0].steps[2].kind",
            ),
            (
                Box::new(|f| {
                    *f = (0..21)
                        .map(|i| FunnelDef {
                            name: format!("f{i}"),
                            ..activation()
                        })
                        .collect()
                }),
                "funnels",
            ),
        ];
        for (mutate, key) in cases {
            let mut funnels = vec![activation()];
            validate(&funnels, None).unwrap();
            mutate(&mut funnels);
            let error = validate(&funnels, None).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("{key}:")),
                "{error:?} should name {key}"
            );
        }
        let ttv = TimeToValueDef {
            event: step(Some("nope"), None, None),
            window_ms: 86_400_000,
        };
        let error = validate(&[], Some(&ttv)).unwrap_err().to_string();
        assert!(error.starts_with("time_to_value.event.kind:"), "{error}");
    }
}
