//! Money as pulse counts it: integer minor units of one ISO 4217 currency.
//!
//! Amounts are read from the JSON number's own text ([`minor_units`]), never through an
//! `f64`: `0.1 + 0.2` is not `0.3` in binary floating point, and a revenue figure that is
//! off by a cent after a million orders is wrong, not approximate. A number that needs more
//! decimals than the currency has (`19.999` USD) is refused rather than rounded: nothing is
//! guessed. The exponent of each currency comes from the `iso_currency` crate, which tracks
//! the ISO 4217 list, so pulse keeps no table of its own.

use serde::{Deserialize, Serialize};

/// The largest amount one record may carry, in minor units (10¹⁵: ten trillion dollars).
/// Sums of many such amounts stay far inside `i64`; anything larger is a bug upstream.
pub const MAX_MINOR_UNITS: i64 = 1_000_000_000_000_000;

/// An ISO 4217 currency with a minor unit: its code and how many decimals it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency {
    code: [u8; 3],
    /// Decimals of the minor unit: 2 for USD, 0 for JPY, 3 for KWD.
    pub exponent: u8,
}

impl Currency {
    /// The currency of an ISO 4217 code (upper case, as the standard writes it); `None` for
    /// an unknown code or one without a minor unit (gold, special drawing rights).
    pub fn of(code: &str) -> Option<Currency> {
        let iso = iso_currency::Currency::from_code(code)?;
        let exponent = u8::try_from(iso.exponent()?).ok()?;
        let code = code.as_bytes().try_into().ok()?;
        Some(Currency { code, exponent })
    }

    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).expect("built from a &str")
    }
}

/// Why a number is not an amount of the currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountError {
    /// Not a JSON number, negative, or beyond [`MAX_MINOR_UNITS`].
    Invalid,
    /// More decimals than the currency has.
    TooPrecise,
}

/// The exact amount, in minor units with `exponent` decimals, of a JSON number written as
/// `text` (its raw text: `19.99`, `20`, `1.5e1`, `19.990`). Trailing zeros are exact, so
/// `19.990` is 1 999 cents; `19.999` is [`AmountError::TooPrecise`] for two decimals.
pub fn minor_units(text: &str, exponent: u8) -> Result<i64, AmountError> {
    let (mantissa, power) = text
        .split_once(['e', 'E'])
        .map_or((text, Some(0)), |(m, e)| (m, e.parse::<i32>().ok()));
    let power = power.ok_or(AmountError::Invalid)?;
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let plain_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    // JSON's grammar: no sign but `-` (refused: an amount is never negative), digits before
    // a point, and at least one after it.
    if whole.is_empty()
        || !plain_digits(whole)
        || !plain_digits(fraction)
        || (mantissa.contains('.') && fraction.is_empty())
    {
        return Err(AmountError::Invalid);
    }
    let digits = whole.bytes().chain(fraction.bytes());
    // The number is digits × 10^shift minor units.
    let shift = i64::from(power) + i64::from(exponent) - fraction.len() as i64;
    let mut value: i64 = 0;
    let significant: Vec<u8> = digits.map(|b| b - b'0').collect();
    let kept = if shift >= 0 {
        significant.len()
    } else {
        let cut = significant
            .len()
            .saturating_sub(shift.unsigned_abs() as usize);
        if significant[cut..].iter().any(|d| *d != 0) {
            return Err(AmountError::TooPrecise);
        }
        cut
    };
    for digit in &significant[..kept] {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(*digit)))
            .filter(|v| *v <= MAX_MINOR_UNITS)
            .ok_or(AmountError::Invalid)?;
    }
    for _ in 0..shift.max(0) {
        if value == 0 {
            break;
        }
        value = value
            .checked_mul(10)
            .filter(|v| *v <= MAX_MINOR_UNITS)
            .ok_or(AmountError::Invalid)?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_come_from_iso_4217() {
        assert_eq!(Currency::of("USD").map(|c| c.exponent), Some(2));
        assert_eq!(Currency::of("JPY").map(|c| c.exponent), Some(0));
        assert_eq!(Currency::of("KWD").map(|c| c.exponent), Some(3));
        assert_eq!(Currency::of("USD").unwrap().code(), "USD");
        assert_eq!(Currency::of("XAU"), None, "gold has no minor unit");
        assert_eq!(Currency::of("usd"), None);
        assert_eq!(Currency::of("ZZZ"), None);
    }

    #[test]
    fn amounts_are_exact() {
        let cases = [
            ("19.99", 2, Ok(1999)),
            ("0.1", 2, Ok(10)),
            ("20", 2, Ok(2000)),
            ("19.990", 2, Ok(1999)),
            ("1.5e1", 2, Ok(1500)),
            ("1999E-2", 2, Ok(1999)),
            ("0", 2, Ok(0)),
            ("0.000", 0, Ok(0)),
            ("1200", 0, Ok(1200)),
            ("12.5", 0, Err(AmountError::TooPrecise)),
            ("19.999", 2, Err(AmountError::TooPrecise)),
            ("0.001", 2, Err(AmountError::TooPrecise)),
            ("1.2345", 3, Err(AmountError::TooPrecise)),
            ("-5", 2, Err(AmountError::Invalid)),
            ("\"5\"", 2, Err(AmountError::Invalid)),
            ("1.", 2, Err(AmountError::Invalid)),
            (".5", 2, Err(AmountError::Invalid)),
            ("", 2, Err(AmountError::Invalid)),
            ("1e400", 2, Err(AmountError::Invalid)),
            ("10000000000000", 2, Ok(1_000_000_000_000_000)),
            ("10000000000000.01", 2, Err(AmountError::Invalid)),
            ("0e999999", 2, Ok(0)),
        ];
        for (text, exponent, expected) in cases {
            assert_eq!(minor_units(text, exponent), expected, "{text}");
        }
    }

    proptest::proptest! {
        /// Any amount written with at most the currency's decimals reads back to its units.
        #[test]
        fn written_cents_read_back(units in 0i64..MAX_MINOR_UNITS, exponent in 0u8..4) {
            let scale = 10i64.pow(u32::from(exponent));
            let text = if exponent == 0 {
                units.to_string()
            } else {
                format!("{}.{:0width$}", units / scale, units % scale, width = usize::from(exponent))
            };
            proptest::prop_assert_eq!(minor_units(&text, exponent), Ok(units));
        }
    }
}
