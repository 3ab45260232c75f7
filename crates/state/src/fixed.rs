//! Fixed-point arithmetic for the rules: ratios are `u64` with 32 fractional bits ([`ONE`] =
//! 1.0); settings use parts per billion. No floats anywhere.

use based_types::{Amount, PPB, Ppb};

/// 1.0 in Q32.32.
pub const ONE: u64 = 1 << 32;

/// `numerator / denominator` in Q32 (0 when the denominator is 0).
pub fn ratio(numerator: u128, denominator: u128) -> u64 {
    if denominator == 0 {
        return 0;
    }
    u64::try_from((numerator << 32) / denominator).unwrap_or(u64::MAX)
}

/// Product of two Q32 numbers.
pub fn mul(a: u64, b: u64) -> u64 {
    u64::try_from((u128::from(a) * u128::from(b)) >> 32).unwrap_or(u64::MAX)
}

/// `amount x ppb / 10^9`, rounded down.
pub fn mul_ppb(amount: Amount, ppb: Ppb) -> Amount {
    // ppb <= 10^9 is validated where settings are set, so the result never exceeds `amount`.
    u64::try_from(u128::from(amount) * u128::from(ppb) / u128::from(PPB)).unwrap_or(amount)
}

/// Scales values so they sum to (about) [`ONE`]; all zeros stay zeros.
pub fn normalize(values: &[u64]) -> Vec<u64> {
    let total: u128 = values.iter().map(|&v| u128::from(v)).sum();
    values.iter().map(|&v| ratio(u128::from(v), total)).collect()
}

/// Splits `total` in proportion to `weights`, exactly: the parts sum to `total`. Units left by
/// rounding down go one each to the largest remainders, ties to the lowest index. `None` when
/// every weight is zero (nobody to pay).
pub fn split_proportional(total: Amount, weights: &[u128]) -> Option<Vec<Amount>> {
    let largest = weights.iter().copied().max().unwrap_or(0);
    if largest == 0 {
        return None;
    }
    // Keep weights below 2^64 so that total x weight fits in u128.
    let shift = (128 - largest.leading_zeros()).saturating_sub(64);
    let weights: Vec<u128> = weights.iter().map(|w| w >> shift).collect();
    let sum: u128 = weights.iter().sum();
    let total_wide = u128::from(total);
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let product = total_wide * weight;
        parts.push(u64::try_from(product / sum).unwrap_or(total));
        remainders.push((product % sum, index));
    }
    let assigned: u64 = parts.iter().sum();
    let leftover = total - assigned;
    remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, index) in remainders.iter().take(usize::try_from(leftover).unwrap_or(usize::MAX)) {
        parts[index] += 1;
    }
    Some(parts)
}

const LOG2_E_Q32: u128 = 6_196_328_019;
const LN_2_Q62: u128 = 3_196_577_161_300_663_915;
const Q62_ONE: u128 = 1 << 62;

/// e^(-y) for y >= 0, both in Q32. Range reduction y log2(e) = k + f, then
/// e^(-y) = 2^-k x e^(-f ln 2) with a 20-term Taylor series at 62 fractional bits.
/// Absolute error below 2^-31 (tested against f64).
pub fn exp_neg(y: u64) -> u64 {
    let scaled = (u128::from(y) * LOG2_E_Q32) >> 32;
    let whole = scaled >> 32;
    if whole >= 40 {
        return 0;
    }
    let fraction = scaled & u128::from(ONE - 1);
    let z = (fraction * LN_2_Q62) >> 32;
    let mut term = Q62_ONE;
    let mut sum = Q62_ONE as i128;
    for n in 1..=20u128 {
        term = ((term * z) >> 62) / n;
        if n % 2 == 1 {
            sum -= term as i128;
        } else {
            sum += term as i128;
        }
    }
    let value = u128::try_from(sum).unwrap_or(0) >> 30;
    u64::try_from(value >> whole).unwrap_or(ONE)
}

/// The logistic function 1 / (1 + e^(-x)) for x in Q32 (signed), result in Q32.
pub fn sigmoid(x: i64) -> u64 {
    let magnitude = x.unsigned_abs();
    let positive = ratio(u128::from(ONE), u128::from(ONE) + u128::from(exp_neg(magnitude)));
    if x >= 0 { positive } else { ONE - positive }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn to_f64(q: u64) -> f64 {
        q as f64 / ONE as f64
    }

    #[test]
    fn sigmoid_matches_f64_within_2_pow_minus_31() {
        for step in -4000i64..=4000 {
            let x = step * (ONE as i64) / 200;
            let exact = 1.0 / (1.0 + (-(x as f64) / ONE as f64).exp());
            let error = (to_f64(sigmoid(x)) - exact).abs();
            assert!(error < 1.0 / (1u64 << 31) as f64, "x={x} error={error}");
        }
        assert_eq!(sigmoid(0), ONE / 2);
    }

    #[test]
    fn split_gives_remainders_to_largest_fractions() {
        assert_eq!(split_proportional(10, &[1, 1, 1]), Some(vec![4, 3, 3]));
        assert_eq!(split_proportional(7, &[0, 0]), None);
        assert_eq!(split_proportional(u64::MAX, &[u128::MAX, 1]), Some(vec![u64::MAX, 0]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn split_sums_exactly(total in any::<u64>(), weights in proptest::collection::vec(any::<u128>(), 1..20)) {
            if let Some(parts) = split_proportional(total, &weights) {
                prop_assert_eq!(parts.iter().map(|&p| u128::from(p)).sum::<u128>(), u128::from(total));
            }
        }
    }
}
