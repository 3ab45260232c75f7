//! Coefficient-level arithmetic modulo q and the samplers for secrets, errors and masks.

use rand_core::RngCore;

use crate::params::{CIPHERTEXT_MODULUS, CIPHERTEXT_MODULUS_BITS, ERROR_ETA};

const Q: u64 = CIPHERTEXT_MODULUS;

/// Signed integer to its residue in [0, q).
pub(crate) fn to_residue(value: i64) -> u64 {
    value.rem_euclid(Q as i64) as u64
}

/// Residue in [0, modulus) to its centred representative in (-modulus/2, modulus/2].
pub(crate) fn centred(value: u64, modulus: u64) -> i64 {
    if value > modulus / 2 { value as i64 - modulus as i64 } else { value as i64 }
}

/// Branch-free (a minimum instead of a comparison), so that loops of it vectorise.
#[inline(always)]
pub(crate) fn add_mod_q(a: u64, b: u64) -> u64 {
    let sum = a + b;
    sum.min(sum.wrapping_sub(Q))
}

/// Branch-free, like [`add_mod_q`].
#[inline(always)]
pub(crate) fn sub_mod_q(a: u64, b: u64) -> u64 {
    let difference = a.wrapping_sub(b);
    difference.min(difference.wrapping_add(Q))
}

/// round(value * 2^bits / q) mod 2^bits for value in [0, q), bits <= 54: the modulus switch
/// q -> 2^bits. A float estimate (off by at most one below 2^53, a few above) is corrected
/// with exact integer arithmetic, several times cheaper than a 128-bit division.
pub(crate) fn switch_to_power_of_two(value: u64, bits: u32) -> u64 {
    let scale = (1u64 << bits) as f64 / Q as f64;
    // Truncating x + 0.5 rounds (x >= 0) without a libm call; the loops below fix the rest.
    let mut quotient = (value as f64 * scale + 0.5) as u64;
    // round(x / q) = floor((x + (q-1)/2) / q) for odd q; find that floor exactly.
    let numerator = ((value as u128) << bits) + ((Q - 1) / 2) as u128;
    let mut product = quotient as u128 * Q as u128;
    while product > numerator {
        quotient -= 1;
        product -= Q as u128;
    }
    while numerator - product >= Q as u128 {
        quotient += 1;
        product += Q as u128;
    }
    quotient & ((1u64 << bits) - 1)
}

/// round(value * q / 2^bits) for value < 2^bits <= 2^54: undoes [`switch_to_power_of_two`]
/// up to a rounding error of at most q / 2^(bits+1) + 1/2. Always below q (q > 2^53).
pub(crate) fn switch_from_power_of_two(value: u64, bits: u32) -> u64 {
    ((u128::from(value) * u128::from(Q) + (1u128 << (bits - 1))) >> bits) as u64
}

/// Products of residues summed without reduction: this many (plus one reduced residue) stay
/// below 2^115, the input range of [`reduce_wide`]. Skipping the per-product reduction makes
/// the miner's multiply-accumulate about 2.4x faster than a reducing kernel.
pub(crate) const LAZY_TERMS: usize = 127;

/// `acc_a += a * w` and `acc_b += b * w` pointwise, unreduced (one pass over the weights for
/// both halves of a ciphertext).
pub(crate) fn mul_accumulate_wide(
    acc_a: &mut [u128],
    acc_b: &mut [u128],
    a: &[u64],
    b: &[u64],
    w: &[u64],
) {
    for ((acc_a, acc_b), ((&a, &b), &w)) in
        acc_a.iter_mut().zip(acc_b.iter_mut()).zip(a.iter().zip(b).zip(w))
    {
        *acc_a += u128::from(a) * u128::from(w);
        *acc_b += u128::from(b) * u128::from(w);
    }
}

/// x mod q for x < 2^115: fold the high word with 2^64 mod q (result < 2^106), then Barrett
/// with mu = floor(2^106 / q), whose estimate falls short of the quotient by at most 2.
pub(crate) fn reduce_wide(x: u128) -> u64 {
    const FOLD: u128 = (1u128 << 64) % Q as u128;
    const MU: u128 = (1u128 << 106) / Q as u128;
    debug_assert!(x < 1 << 115);
    let folded = (x >> 64) * FOLD + u128::from(x as u64);
    let estimate = ((folded >> 52) * MU) >> 54;
    let mut reduced = (folded - estimate * Q as u128) as u64;
    for _ in 0..2 {
        if reduced >= Q {
            reduced -= Q;
        }
    }
    reduced
}

/// Uniform residues mod q by rejection sampling 54-bit draws (q > 2^53.99: rejects < 0.1%).
pub(crate) fn sample_uniform<R: RngCore + ?Sized>(rng: &mut R, out: &mut [u64]) {
    let mask = (1u64 << CIPHERTEXT_MODULUS_BITS) - 1;
    for slot in out {
        *slot = loop {
            let candidate = rng.next_u64() & mask;
            if candidate < Q {
                break candidate;
            }
        };
    }
}

/// Uniform ternary coefficients in {-1, 0, 1}, one byte per draw with rejection of 255.
pub(crate) fn sample_ternary<R: RngCore + ?Sized>(rng: &mut R, count: usize) -> Vec<i8> {
    let mut out = Vec::with_capacity(count);
    let mut bytes = [0u8; 64];
    while out.len() < count {
        rng.fill_bytes(&mut bytes);
        for &byte in bytes.iter().filter(|&&b| b < 255) {
            if out.len() == count {
                break;
            }
            out.push((byte % 3) as i8 - 1);
        }
    }
    out
}

/// Centred binomial error: popcount of eta bits minus popcount of eta bits, |e| <= eta.
pub(crate) fn sample_error<R: RngCore + ?Sized>(rng: &mut R) -> i64 {
    let eta_mask = (1u64 << ERROR_ETA) - 1;
    let bits = rng.next_u64();
    i64::from((bits & eta_mask).count_ones())
        - i64::from(((bits >> ERROR_ETA) & eta_mask).count_ones())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    #[test]
    fn modulus_switch_rounds_exactly() {
        for bits in [11u32, 25, 35, 42, 45, 53, 54] {
            for value in [0, 1, Q / 2, Q / 2 + 1, Q - 1, 12_345_678_901, Q / 3, 2 * (Q / 3) + 7] {
                let exact = (((value as u128) << bits) + (Q as u128 - 1) / 2) / Q as u128;
                let expected = (exact as u64) & ((1u64 << bits) - 1);
                assert_eq!(switch_to_power_of_two(value, bits), expected, "{value} at {bits}");
            }
        }
    }

    #[test]
    fn wide_reduction_is_exact_over_its_whole_range() {
        let q = u128::from(Q);
        let max = LAZY_TERMS as u128 * (q - 1) * (q - 1) + q - 1;
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let random = (0..10_000)
            .map(|_| (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) % (max + 1));
        for x in [0, 1, q - 1, q, q * q, max - 1, max].into_iter().chain(random) {
            assert_eq!(u128::from(reduce_wide(x)), x % q, "{x}");
        }
    }

    #[test]
    fn compression_round_trip_error_is_bounded() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut values = vec![0; 10_000];
        sample_uniform(&mut rng, &mut values);
        for bits in [30u32, 45, 54] {
            let bound = (Q >> (bits + 1)) as i64 + 1;
            for &value in values.iter().chain(&[0, Q - 1]) {
                let restored = switch_from_power_of_two(switch_to_power_of_two(value, bits), bits);
                assert!(restored < Q);
                let error = centred(sub_mod_q(restored, value), Q);
                assert!(error.abs() <= bound, "{value} at {bits}: {error}");
            }
            assert!(switch_from_power_of_two((1 << bits) - 1, bits) < Q);
        }
    }

    #[test]
    fn samplers_have_the_documented_ranges_and_variance() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let errors: Vec<i64> = (0..100_000).map(|_| sample_error(&mut rng)).collect();
        assert!(errors.iter().all(|e| e.abs() <= i64::from(ERROR_ETA)));
        let variance = errors.iter().map(|&e| (e * e) as f64).sum::<f64>() / errors.len() as f64;
        assert!((variance - 10.5).abs() < 0.3, "variance {variance}");
        let ternary = sample_ternary(&mut rng, 30_000);
        for value in -1..=1 {
            let count = ternary.iter().filter(|&&t| t == value).count();
            assert!((9_500..10_500).contains(&count), "{value}: {count}");
        }
        let mut uniform = vec![0; 4096];
        sample_uniform(&mut rng, &mut uniform);
        assert!(uniform.iter().all(|&u| u < Q));
    }
}
