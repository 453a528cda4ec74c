//! The `[outcomes.*]` tables of `pulse.toml`: which events are surveys, orders and
//! subscription changes, and where their score, amount, currency and MRR are.
//!
//! Every table is optional and an absent one switches its part of the outcomes family off,
//! so a pulse without outcome events pays nothing for them: no pointer is added to the
//! decoder and no event name is looked up. Checked once ([`OutcomeSettings::validate`]),
//! each error naming the key as written; the checked form the engine runs with is
//! [`OutcomeRules`] (plain `Copy` data, given to every family with the other rules).

use serde::{Deserialize, Serialize};

use crate::money::Currency;
use crate::settings::{SettingsError, each_name_once};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nps: Option<ScoreSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csat: Option<ScoreSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<RevenueSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionSettings>,
}

/// `[outcomes.nps]` (scores 0–10) or `[outcomes.csat]` (scores 1–5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreSettings {
    pub events: Vec<String>,
    /// JSON pointers tried in order; the first present wins.
    pub score: Vec<String>,
}

/// `[outcomes.revenue]`: completed orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevenueSettings {
    pub events: Vec<String>,
    pub amount: Vec<String>,
    pub currency: Vec<String>,
    /// The one ISO 4217 currency counted; an order in any other is refused.
    pub expected_currency: String,
}

/// `[outcomes.subscription]`: a user's MRR after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettings {
    pub events: Vec<String>,
    pub mrr: Vec<String>,
    /// The ISO 4217 currency of the MRR values; `outcomes.revenue.expected_currency` when
    /// absent (one of the two is required: it says how many decimals an MRR may have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// What the engine needs of the outcome settings, once checked: which parts are on, and
/// in which currency money is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutcomeRules {
    pub nps: bool,
    pub csat: bool,
    pub revenue: Option<Currency>,
    pub subscription: Option<Currency>,
}

impl OutcomeRules {
    pub fn any(&self) -> bool {
        self.nps || self.csat || self.revenue.is_some() || self.subscription.is_some()
    }
}

impl OutcomeSettings {
    /// The checked rules; call after [`OutcomeSettings::validate`] (an unknown currency is
    /// then impossible).
    pub fn rules(&self) -> OutcomeRules {
        OutcomeRules {
            nps: self.nps.is_some(),
            csat: self.csat.is_some(),
            revenue: self
                .revenue
                .as_ref()
                .and_then(|r| Currency::of(&r.expected_currency)),
            subscription: self.subscription_currency().and_then(Currency::of),
        }
    }

    fn subscription_currency(&self) -> Option<&str> {
        let subscription = self.subscription.as_ref()?;
        subscription
            .currency
            .as_deref()
            .or(self.revenue.as_ref().map(|r| r.expected_currency.as_str()))
    }

    /// The event names of each configured table, with the key that lists them.
    pub(crate) fn event_lists(&self) -> Vec<(&'static str, &Vec<String>)> {
        let mut lists = Vec::new();
        if let Some(nps) = &self.nps {
            lists.push(("outcomes.nps.events", &nps.events));
        }
        if let Some(csat) = &self.csat {
            lists.push(("outcomes.csat.events", &csat.events));
        }
        if let Some(revenue) = &self.revenue {
            lists.push(("outcomes.revenue.events", &revenue.events));
        }
        if let Some(subscription) = &self.subscription {
            lists.push(("outcomes.subscription.events", &subscription.events));
        }
        lists
    }

    /// Checks every rule; errors name the key as written in `pulse.toml`.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let lists = self.event_lists();
        if let Some((key, _)) = lists
            .iter()
            .find(|(_, names)| names.is_empty() || names.iter().any(String::is_empty))
        {
            return Err(SettingsError::NoEvents { key });
        }
        each_name_once(lists)?;
        let mut pointers: Vec<(&'static str, &Vec<String>)> = Vec::new();
        if let Some(nps) = &self.nps {
            pointers.push(("outcomes.nps.score", &nps.score));
        }
        if let Some(csat) = &self.csat {
            pointers.push(("outcomes.csat.score", &csat.score));
        }
        if let Some(revenue) = &self.revenue {
            pointers.push(("outcomes.revenue.amount", &revenue.amount));
            pointers.push(("outcomes.revenue.currency", &revenue.currency));
            currency(
                "outcomes.revenue.expected_currency",
                &revenue.expected_currency,
            )?;
        }
        if let Some(subscription) = &self.subscription {
            pointers.push(("outcomes.subscription.mrr", &subscription.mrr));
            match self.subscription_currency() {
                Some(code) => currency("outcomes.subscription.currency", code)?,
                None => {
                    return Err(SettingsError::NoCurrency {
                        key: "outcomes.subscription.currency",
                    });
                }
            }
        }
        self.check_money_pointers(std::iter::empty())?;
        for (key, paths) in pointers {
            if paths.is_empty() {
                return Err(SettingsError::NoPointers { key });
            }
            if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
                return Err(SettingsError::BadPointer {
                    key,
                    pointer: bad.clone(),
                });
            }
        }
        Ok(())
    }
}

impl OutcomeSettings {
    /// The pointers read as money, with their keys.
    fn money_pointers(&self) -> Vec<(&'static str, &String)> {
        let amounts = self.revenue.iter().flat_map(|r| &r.amount);
        let mrr = self.subscription.iter().flat_map(|s| &s.mrr);
        amounts
            .map(|p| ("outcomes.revenue.amount", p))
            .chain(mrr.map(|p| ("outcomes.subscription.mrr", p)))
            .collect()
    }

    /// The other pointers the decoder follows (scores, currency).
    fn other_pointers(&self) -> impl Iterator<Item = &String> {
        let scores = [&self.nps, &self.csat]
            .into_iter()
            .flatten()
            .flat_map(|t| &t.score);
        scores.chain(self.revenue.iter().flat_map(|r| &r.currency))
    }

    /// Refuses a money pointer that one of `others` (or of the outcome tables) equals or
    /// passes through: money is read as the raw text of one JSON number, which the decoder
    /// takes whole, without walking into it for other fields.
    pub(crate) fn check_money_pointers<'a>(
        &'a self,
        others: impl Iterator<Item = &'a String>,
    ) -> Result<(), SettingsError> {
        let money = self.money_pointers();
        for other in others.chain(self.other_pointers()) {
            let overlap = money.iter().find(|(_, pointer)| {
                other == *pointer || other.starts_with(&format!("{pointer}/"))
            });
            if let Some((key, pointer)) = overlap {
                return Err(SettingsError::PointerOverlap {
                    key,
                    pointer: (*pointer).clone(),
                    other: other.clone(),
                });
            }
        }
        Ok(())
    }
}

fn currency(key: &'static str, code: &str) -> Result<(), SettingsError> {
    match Currency::of(code) {
        Some(_) => Ok(()),
        None => Err(SettingsError::UnknownCurrency {
            key,
            code: code.to_owned(),
        }),
    }
}

/// The tables of the workload generator's outcome events (those `pulse demo` runs with,
/// `crates/pulse/demo-outcomes.toml`), for tests.
#[cfg(test)]
pub(crate) fn generator_tables() -> OutcomeSettings {
    let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
    OutcomeSettings {
        nps: Some(ScoreSettings {
            events: list(&["survey_nps", "NPS Submitted"]),
            score: list(&["/score", "/properties/score"]),
        }),
        csat: Some(ScoreSettings {
            events: list(&["survey_csat"]),
            score: list(&["/score", "/properties/rating"]),
        }),
        revenue: Some(RevenueSettings {
            events: list(&["order_completed", "Order Completed"]),
            amount: list(&["/revenue", "/properties/revenue", "/properties/total"]),
            currency: list(&["/currency", "/properties/currency"]),
            expected_currency: "USD".into(),
        }),
        subscription: Some(SubscriptionSettings {
            events: list(&["subscription_changed"]),
            mrr: list(&["/mrr", "/properties/mrr"]),
            currency: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_tables_are_off_and_valid() {
        let off = OutcomeSettings::default();
        off.validate().unwrap();
        assert!(!off.rules().any());
        let on = generator_tables();
        on.validate().unwrap();
        let rules = on.rules();
        assert_eq!(
            rules.subscription, rules.revenue,
            "MRR in the revenue currency"
        );
        assert_eq!(rules.revenue.map(|c| c.exponent), Some(2));
    }

    #[test]
    fn each_rule_names_its_key() {
        type Mutation = Box<dyn Fn(&mut OutcomeSettings)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|s| s.nps.as_mut().unwrap().events.clear()),
                "outcomes.nps.events",
            ),
            (
                Box::new(|s| s.csat.as_mut().unwrap().score = vec!["score".into()]),
                "outcomes.csat.score",
            ),
            (
                Box::new(|s| s.revenue.as_mut().unwrap().expected_currency = "usd".into()),
                "outcomes.revenue.expected_currency",
            ),
            (
                Box::new(|s| s.revenue.as_mut().unwrap().amount.clear()),
                "outcomes.revenue.amount",
            ),
            (
                Box::new(|s| {
                    s.revenue = None;
                }),
                "outcomes.subscription.currency",
            ),
            (
                Box::new(|s| s.subscription.as_mut().unwrap().currency = Some("XAU".into())),
                "outcomes.subscription.currency",
            ),
            (
                Box::new(|s| {
                    s.csat.as_mut().unwrap().events = vec!["survey_nps".into()];
                }),
                "outcomes.csat.events",
            ),
            (
                Box::new(|s| s.revenue.as_mut().unwrap().currency = vec!["/revenue/code".into()]),
                "outcomes.revenue.amount",
            ),
        ];
        for (mutate, key) in cases {
            let mut settings = generator_tables();
            mutate(&mut settings);
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error:?} should name {key}");
        }
    }
}
