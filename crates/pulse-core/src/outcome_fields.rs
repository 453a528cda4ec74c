//! Outcome fields at decode time: which configured JSON pointers the decoder captures for
//! surveys, orders and subscription changes, and what their captured values mean.
//!
//! The decoder's walk captures these fields like any other (its pointer trie, one pass);
//! this module says which pointers feed which field ([`OutcomeFields::paths`]) and turns a
//! record's captures into an [`OutcomeValue`] or a [`Rejection`] naming what is wrong. Only
//! a record whose event name is listed under `[outcomes.*]` is judged: every other record,
//! and every record while the tables are absent, costs one emptiness check.
//!
//! Amounts and MRR are captured as the raw text of their JSON number (see
//! [`crate::money::minor_units`]): serde_json's `f64` would already have rounded them.

use foldhash::HashMap;

use crate::decode::{Field, Scalar};
use crate::event::{OutcomeValue, Rejection};
use crate::money::{AmountError, Currency, minor_units};
use crate::outcome_settings::{OutcomeRules, OutcomeSettings};

/// What kind of outcome an event name announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutcomeKind {
    Nps,
    Csat,
    Order,
    Subscription,
}

/// The scales of the scores: NPS asks 0–10, CSAT 1–5.
const NPS_SCALE: std::ops::RangeInclusive<i64> = 0..=10;
const CSAT_SCALE: std::ops::RangeInclusive<i64> = 1..=5;

/// The compiled outcome tables of a decoder.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutcomeFields {
    /// Event name → outcome kind; empty while every `[outcomes.*]` table is absent.
    by_name: HashMap<Box<str>, OutcomeKind>,
    rules: OutcomeRules,
    /// The expected currency's code, compared with each order's.
    expected_currency: Option<Box<str>>,
}

impl OutcomeFields {
    /// `settings` must be validated.
    pub(crate) fn new(settings: &OutcomeSettings) -> OutcomeFields {
        let mut by_name = HashMap::default();
        let tables = [
            (OutcomeKind::Nps, settings.nps.as_ref().map(|t| &t.events)),
            (OutcomeKind::Csat, settings.csat.as_ref().map(|t| &t.events)),
            (
                OutcomeKind::Order,
                settings.revenue.as_ref().map(|t| &t.events),
            ),
            (
                OutcomeKind::Subscription,
                settings.subscription.as_ref().map(|t| &t.events),
            ),
        ];
        for (kind, names) in tables {
            for name in names.into_iter().flatten() {
                by_name.insert(name.as_str().into(), kind);
            }
        }
        let rules = settings.rules();
        OutcomeFields {
            by_name,
            rules,
            expected_currency: rules.revenue.map(|c| c.code().into()),
        }
    }

    /// Whether no `[outcomes.*]` table is configured: then no outcome field is captured.
    pub(crate) fn is_off(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The pointers each outcome field is captured from, in priority order.
    pub(crate) fn paths(settings: &OutcomeSettings) -> Vec<(Field, &Vec<String>)> {
        let mut paths = Vec::new();
        if let Some(nps) = &settings.nps {
            paths.push((Field::NpsScore, &nps.score));
        }
        if let Some(csat) = &settings.csat {
            paths.push((Field::CsatScore, &csat.score));
        }
        if let Some(revenue) = &settings.revenue {
            paths.push((Field::Amount, &revenue.amount));
            paths.push((Field::Currency, &revenue.currency));
        }
        if let Some(subscription) = &settings.subscription {
            paths.push((Field::Mrr, &subscription.mrr));
        }
        paths
    }

    /// The outcome of an event named `name`: `Ok(None)` if the name is no outcome event,
    /// else its checked value or why it is refused. `take` hands out a captured field.
    pub(crate) fn judge<'a>(
        &self,
        name: &str,
        mut take: impl FnMut(Field) -> Option<Scalar<'a>>,
    ) -> Result<Option<OutcomeValue>, Rejection> {
        let Some(kind) = self.by_name.get(name) else {
            return Ok(None);
        };
        let value = match kind {
            OutcomeKind::Nps => OutcomeValue::Nps(score(take(Field::NpsScore), NPS_SCALE)?),
            OutcomeKind::Csat => OutcomeValue::Csat(score(take(Field::CsatScore), CSAT_SCALE)?),
            OutcomeKind::Order => {
                let expected = self.expected_currency.as_deref();
                match take(Field::Currency) {
                    None => return Err(Rejection::MissingCurrency),
                    Some(Scalar::Str(code)) if Some(code.as_ref()) == expected => {}
                    Some(_) => return Err(Rejection::UnexpectedCurrency),
                }
                OutcomeValue::Order(money(take(Field::Amount), self.rules.revenue)?)
            }
            OutcomeKind::Subscription => {
                OutcomeValue::Mrr(money(take(Field::Mrr), self.rules.subscription)?)
            }
        };
        Ok(Some(value))
    }
}

fn score(
    captured: Option<Scalar<'_>>,
    scale: std::ops::RangeInclusive<i64>,
) -> Result<u8, Rejection> {
    let value = match captured {
        Some(Scalar::Int(i)) => i,
        Some(Scalar::UInt(u)) => i64::try_from(u).unwrap_or(i64::MAX),
        _ => return Err(Rejection::InvalidScore),
    };
    if !scale.contains(&value) {
        return Err(Rejection::ScoreOutOfRange);
    }
    Ok(value as u8)
}

fn money(captured: Option<Scalar<'_>>, currency: Option<Currency>) -> Result<i64, Rejection> {
    let (Some(Scalar::Number(text)), Some(currency)) = (captured, currency) else {
        return Err(Rejection::InvalidAmount);
    };
    minor_units(text, currency.exponent).map_err(|error| match error {
        AmountError::Invalid => Rejection::InvalidAmount,
        AmountError::TooPrecise => Rejection::AmountTooPrecise,
    })
}

#[cfg(test)]
mod tests {
    use crate::decode::Decoder;
    use crate::event::{OutcomeValue, Rejection};
    use crate::outcome_settings::{RevenueSettings, generator_tables};
    use crate::settings::EngineSettings;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn decoder() -> Decoder {
        let mut outcomes = generator_tables();
        // MRR in yen: no decimals at all.
        outcomes.subscription.as_mut().unwrap().currency = Some("JPY".into());
        let settings = EngineSettings {
            outcomes,
            ..EngineSettings::default()
        };
        settings.validate().unwrap();
        Decoder::new(&settings)
    }

    #[test]
    fn outcome_events_carry_their_checked_value() {
        let decoder = decoder();
        let cases: [(&str, Result<Option<OutcomeValue>, Rejection>); 19] = [
            (r#"{"user_id":"u","event":"login","score":99}"#, Ok(None)),
            (
                r#"{"user_id":"u","event":"survey_nps","score":9}"#,
                Ok(Some(OutcomeValue::Nps(9))),
            ),
            (
                r#"{"userId":"u","event":"NPS Submitted","properties":{"score":0}}"#,
                Ok(Some(OutcomeValue::Nps(0))),
            ),
            (
                r#"{"user_id":"u","event":"survey_nps","score":11}"#,
                Err(Rejection::ScoreOutOfRange),
            ),
            (
                r#"{"user_id":"u","event":"survey_nps","score":-1}"#,
                Err(Rejection::ScoreOutOfRange),
            ),
            (
                r#"{"user_id":"u","event":"survey_nps","score":"9"}"#,
                Err(Rejection::InvalidScore),
            ),
            (
                r#"{"user_id":"u","event":"survey_nps","score":8.5}"#,
                Err(Rejection::InvalidScore),
            ),
            (
                r#"{"user_id":"u","event":"survey_csat","properties":{"rating":0}}"#,
                Err(Rejection::ScoreOutOfRange),
            ),
            (
                r#"{"user_id":"u","event":"survey_csat","score":null,"properties":{"rating":4}}"#,
                Ok(Some(OutcomeValue::Csat(4))),
            ),
            (
                r#"{"user_id":"u","event":"order_completed","revenue":19.99,"currency":"USD"}"#,
                Ok(Some(OutcomeValue::Order(1999))),
            ),
            (
                r#"{"userId":"u","event":"Order Completed","properties":{"total":0.3,"currency":"USD"}}"#,
                Ok(Some(OutcomeValue::Order(30))),
            ),
            (
                r#"{"user_id":"u","event":"order_completed","revenue":19.999,"currency":"USD"}"#,
                Err(Rejection::AmountTooPrecise),
            ),
            (
                r#"{"user_id":"u","event":"order_completed","revenue":"19.99","currency":"USD"}"#,
                Err(Rejection::InvalidAmount),
            ),
            (
                r#"{"user_id":"u","event":"order_completed","revenue":5,"currency":"EUR"}"#,
                Err(Rejection::UnexpectedCurrency),
            ),
            (
                r#"{"user_id":"u","event":"order_completed","revenue":5}"#,
                Err(Rejection::MissingCurrency),
            ),
            (
                r#"{"user_id":"u","event":"order_completed","currency":"USD"}"#,
                Err(Rejection::InvalidAmount),
            ),
            (
                r#"{"user_id":"u","event":"subscription_changed","mrr":1200}"#,
                Ok(Some(OutcomeValue::Mrr(1200))),
            ),
            (
                r#"{"user_id":"u","event":"subscription_changed","mrr":12.5}"#,
                Err(Rejection::AmountTooPrecise),
            ),
            (
                r#"{"user_id":"u","event":"subscription_changed","mrr":-3}"#,
                Err(Rejection::InvalidAmount),
            ),
        ];
        for (json, expected) in cases {
            let decoded = decoder.decode(json.as_bytes()).map(|e| e.outcome);
            assert_eq!(decoded, expected, "{json}");
        }
    }

    #[test]
    fn a_money_pointer_that_another_passes_through_is_refused() {
        let mut settings = EngineSettings::default();
        settings.outcomes.revenue = Some(RevenueSettings {
            events: list(&["order"]),
            amount: list(&["/properties"]),
            currency: list(&["/currency"]),
            expected_currency: "USD".into(),
        });
        // The default feature pointer `/properties/feature` passes through the amount.
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("outcomes.revenue.amount"), "{error}");
        assert!(error.contains("/properties/feature"), "{error}");
        settings.outcomes.revenue.as_mut().unwrap().amount = list(&["/properties/total"]);
        settings.validate().unwrap();
    }
}
