//! Amounts are integers of base units: 1 BASED = 1 PEPE = 10^9 base units. Bridged PEPE keeps
//! nine decimals on chain (relayers truncate Ethereum's eighteen).

use thiserror::Error;

/// An amount of BASED or PEPE in base units.
pub type Amount = u64;

pub const DECIMALS: u32 = 9;
pub const UNITS_PER_COIN: Amount = 1_000_000_000;

/// `coins` whole BASED or PEPE in base units (saturating: a constant helper for parameters).
pub const fn coins(coins: u64) -> Amount {
    coins.saturating_mul(UNITS_PER_COIN)
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AmountError {
    #[error("amount {0:?} is not a decimal number")]
    NotANumber(String),
    #[error("amount {0:?} has more than 9 decimals")]
    TooManyDecimals(String),
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

/// Renders base units as a decimal coin amount without trailing zeros, e.g. `1.5`.
pub fn format_amount(units: Amount) -> String {
    let whole = units / UNITS_PER_COIN;
    let fraction = units % UNITS_PER_COIN;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a decimal coin amount such as `12`, `0.5` or `1.000000001` into base units.
pub fn parse_amount(text: &str) -> Result<Amount, AmountError> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !all_digits(whole)
        || !all_digits(fraction)
        || (text.contains('.') && fraction.is_empty())
    {
        return Err(AmountError::NotANumber(text.to_owned()));
    }
    if fraction.len() > DECIMALS as usize {
        return Err(AmountError::TooManyDecimals(text.to_owned()));
    }
    let overflow = || AmountError::Overflow(text.to_owned());
    let whole: u64 = whole.parse().map_err(|_| overflow())?;
    let fraction_units: u64 = if fraction.is_empty() {
        0
    } else {
        let padded = format!("{fraction:0<9}");
        padded.parse().map_err(|_| overflow())?
    };
    whole
        .checked_mul(UNITS_PER_COIN)
        .and_then(|units| units.checked_add(fraction_units))
        .ok_or_else(overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(format_amount(coins(10)), "10");
        assert_eq!(format_amount(19_531_250), "0.01953125");
        assert_eq!(parse_amount("0.01953125"), Ok(19_531_250));
        assert_eq!(parse_amount("100000"), Ok(coins(100_000)));
        assert!(matches!(parse_amount("1.0000000001"), Err(AmountError::TooManyDecimals(_))));
        assert!(matches!(parse_amount("-1"), Err(AmountError::NotANumber(_))));
        assert!(matches!(parse_amount("1."), Err(AmountError::NotANumber(_))));
        assert!(matches!(parse_amount("99999999999999"), Err(AmountError::Overflow(_))));
    }
}
