//! Sums of pointwise products mod q in 64-bit SIMD lanes: the miner's hot loop.
//!
//! A product of two residues mod q (< 2^54) needs 108 bits: a scalar 64x64 -> 128 multiply per
//! slot, which no x86 vector unit has. Split each residue as `lo + hi 2^27` (both halves below
//! 2^27) and the product is three sums of 32x32 -> 64-bit products (`lo lo`, `lo hi + hi lo`,
//! `hi hi`), the multiply every SIMD unit has (`vpmuludq`: 4 lanes with AVX2, 8 with
//! AVX-512). Each partial product is below 2^54, so the sums stay lazy (no reduction) over
//! [`MAX_TERMS`] terms.
//!
//! The lazy sums are reduced in the same lanes by Montgomery steps with R = 2^32, which cost
//! one 32x32 multiply each because q = 1 mod 2^32 (`-q^-1 = -1 mod 2^32`): the reduction
//! divides by 2^96, so one operand of every product is stored times 2^96 mod q
//! ([`split_scaled`]: the encoded weights and the Galois keys, split once when they are made).
//!
//! Split residues are one u64: `lo` in bits 0..27, `hi` in bits 32..59, so that the vector
//! multiply reads each half from the low 32 bits of a lane (after one shift for `hi`).

use multiversion::multiversion;
use rayon::prelude::*;

use crate::params::CIPHERTEXT_MODULUS as Q;
use crate::poly::add_mod_q;

const HALF_BITS: u32 = 27;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
const LOW_32: u64 = 0xffff_ffff;
/// q = Q_HIGH 2^32 + 1.
const Q_HIGH: u64 = Q >> 32;
const _: () = assert!(Q == (Q_HIGH << 32) + 1);
/// 2^54 mod q = FOLD 2^32 - 1: how the top limb folds down.
const FOLD: u64 = 9;
const _: () = assert!((1 << 54) - Q == FOLD * (1 << 32) - 1);
/// 2^96 mod q: what [`reduce_limbs`] divides out.
const MONTGOMERY_FACTOR: u64 = ((1u128 << 96) % Q as u128) as u64;

/// Terms one lazy sum may hold: `mid` gets two partial products (< 2^54 each) per term and
/// must stay below 2^62, where [`reduce_limbs`]'s bounds hold.
pub(crate) const MAX_TERMS: usize = 127;

/// Slots per parallel task of [`block_products`].
const CHUNK: usize = 256;

/// A residue mod q in split form.
pub(crate) fn split(value: u64) -> u64 {
    debug_assert!(value < Q);
    (value & HALF_MASK) | ((value >> HALF_BITS) << 32)
}

pub(crate) fn split_all(values: &[u64]) -> Vec<u64> {
    values.iter().map(|&v| split(v)).collect()
}

/// value 2^96 mod q in split form: the operand of a product that is stored (the encoded
/// weights, the Galois keys), so that the reductions' 2^-96 cancels.
pub(crate) fn split_scaled(value: u64) -> u64 {
    split((u128::from(value) * u128::from(MONTGOMERY_FACTOR) % u128::from(Q)) as u64)
}

/// Slots of one SIMD vector (AVX-512: 8 lanes of 64 bits; AVX2 takes two): the products'
/// unit of work.
const LANES: usize = 8;

/// One block's encoded weights in the order [`block_products`] reads them: slot group
/// ([`LANES`] slots) by slot group, then accumulator, then term. The products then stream
/// them from memory front to back, once per vector, where polynomial by polynomial they were
/// read 2 KB at a time from hundreds of places (measured on gate/up's 48 x 18 products, from
/// memory, one thread: 4.0-4.7 GB/s of weights that way).
pub(crate) struct BlockWeights {
    accumulators: usize,
    terms: usize,
    values: Vec<u64>,
}

impl BlockWeights {
    /// From every accumulator's weight polynomials ([`split_scaled`], one per term, all of one
    /// length), accumulator by accumulator.
    pub(crate) fn new(polys: &[Vec<u64>], accumulators: usize) -> Self {
        assert!(
            accumulators > 0 && polys.len().is_multiple_of(accumulators),
            "terms per accumulator"
        );
        let len = polys.first().map_or(0, Vec::len);
        assert!(
            len.is_multiple_of(LANES) && polys.iter().all(|p| p.len() == len),
            "one length of slots"
        );
        let values = by_slot_group(polys.iter().map(Vec::as_slice), len);
        Self { accumulators, terms: polys.len() / accumulators, values }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.values.len() * size_of::<u64>()
    }
}

/// `polys` (each `len` values, a multiple of [`LANES`]) interleaved slot group by slot group:
/// the first group of every polynomial in order, then the second, and so on.
fn by_slot_group<'a>(polys: impl Iterator<Item = &'a [u64]> + Clone, len: usize) -> Vec<u64> {
    let mut values = Vec::with_capacity(polys.clone().count() * len);
    for group in 0..len / LANES {
        for poly in polys.clone() {
            values.extend_from_slice(&poly[group * LANES..][..LANES]);
        }
    }
    values
}

/// For every accumulator r of the block, the reduced sums over its terms t of weight (r, t)
/// times conjugate t, in each of the HALVES halves given (`conjugates[t][half]`, split): the
/// a and b parts of the accumulators, or the b parts alone. Chunks of slots run in parallel.
pub(crate) fn block_products<const HALVES: usize>(
    weights: &BlockWeights,
    conjugates: &[[&[u64]; HALVES]],
) -> Vec<[Vec<u64>; HALVES]> {
    let (accumulators, terms) = (weights.accumulators, weights.terms);
    assert_eq!(conjugates.len(), terms, "one conjugate per term");
    let len = weights.values.len() / (accumulators * terms);
    // The kernel always makes both halves: the compiler vectorises it in that shape only
    // (a one-half copy came out scalar, at 4-6 GB/s of weights against 7-20 for both), so a
    // single half is computed as the same half twice.
    let pairs: Vec<[&[u64]; 2]> =
        conjugates.iter().map(|halves| [halves[0], halves[HALVES - 1]]).collect();
    // Each chunk's sums in the order they are made (slot group, accumulator, half), so that
    // the stores go to one place in turn: accumulator by accumulator they would land 4 KB
    // apart, in the same few sets of the first-level cache as each other.
    let chunks: Vec<Vec<[[u64; LANES]; 2]>> = weights
        .values
        .par_chunks(accumulators * terms * CHUNK)
        .enumerate()
        .map(|(chunk, values)| {
            let mut out = Vec::with_capacity(values.len() / terms / LANES);
            products_of_chunk(values, &pairs, chunk * CHUNK, accumulators, &mut out);
            out
        })
        .collect();
    (0..accumulators)
        .map(|acc| {
            std::array::from_fn(|half| {
                let mut values = Vec::with_capacity(len);
                for chunk in &chunks {
                    for group in chunk.chunks_exact(accumulators) {
                        values.extend_from_slice(&group[acc][half]);
                    }
                }
                values
            })
        })
        .collect()
}

/// [`block_products`] for the slot groups of one chunk (starting at slot `start`): each
/// accumulator's lazy sums of one slot group stay in registers over all its terms, the
/// conjugates' slots in the first-level cache over all accumulators.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2"))]
fn products_of_chunk(
    weights: &[u64],
    conjugates: &[[&[u64]; 2]],
    start: usize,
    accumulators: usize,
    out: &mut Vec<[[u64; LANES]; 2]>,
) {
    let terms = conjugates.len();
    for (group, group_weights) in weights.chunks_exact(accumulators * terms * LANES).enumerate() {
        let slot = start + group * LANES;
        for acc_weights in group_weights.chunks_exact(terms * LANES) {
            out.push(slot_group_sums(terms, |t| {
                prefetch_ahead(acc_weights, t * LANES);
                let halves = [lanes_at(conjugates[t][0], slot), lanes_at(conjugates[t][1], slot)];
                (lanes_at(acc_weights, t * LANES), halves)
            }));
        }
    }
}

/// For one slot group, the reduced sums over `terms` terms of `shared * half` in each of two
/// halves, where `operands(t)` gives term t's (shared, [half 0, half 1]): lazy over
/// [`MAX_TERMS`] terms at a time, in registers. Index loops over halves and lanes: the shape
/// in which the compiler turns each lane loop into vector instructions.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn slot_group_sums(
    terms: usize,
    operands: impl Fn(usize) -> ([u64; LANES], [[u64; LANES]; 2]),
) -> [[u64; LANES]; 2] {
    let mut total = [[0u64; LANES]; 2];
    for (index, first_term) in (0..terms).step_by(MAX_TERMS).enumerate() {
        let mut lazy = [[[0u64; LANES]; 3]; 2];
        for t in first_term..terms.min(first_term + MAX_TERMS) {
            let (x, halves) = operands(t);
            for half in 0..2 {
                let y = halves[half];
                for lane in 0..LANES {
                    let (x_lo, x_hi) = (x[lane] & LOW_32, x[lane] >> 32);
                    let (y_lo, y_hi) = (y[lane] & LOW_32, y[lane] >> 32);
                    lazy[half][0][lane] += x_lo * y_lo;
                    lazy[half][1][lane] += x_lo * y_hi + x_hi * y_lo;
                    lazy[half][2][lane] += x_hi * y_hi;
                }
            }
        }
        for half in 0..2 {
            for lane in 0..LANES {
                let [low, mid, high] = &lazy[half];
                let reduced = reduce_limbs(low[lane], mid[lane], high[lane]);
                total[half][lane] =
                    if index == 0 { reduced } else { add_mod_q(total[half][lane], reduced) };
            }
        }
    }
    total
}

fn lanes_at(values: &[u64], at: usize) -> [u64; LANES] {
    values[at..][..LANES].try_into().expect("a slice of LANES values")
}

/// How far ahead of its use the weights' stream is asked for, in values.
const PREFETCH_DISTANCE: usize = 512;

/// Asks for the weights [`PREFETCH_DISTANCE`] values past `at` of the slice `values` starts,
/// kept out of the outer caches: they are read once per vector, and would otherwise push out
/// the Galois keys and conjugates that every product reuses. The hardware's own prefetch,
/// with the products' arithmetic between the loads, streamed them at 6-7 GB/s.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // A prefetch is a hint: it never faults and reads nothing into the program.
#[inline(always)]
fn prefetch_ahead(values: &[u64], at: usize) {
    use std::arch::x86_64::{_MM_HINT_NTA, _mm_prefetch};
    // SAFETY: wrapping_add computes an address without dereferencing it; a prefetch of any
    // address, even one past the allocation, has no effect on program state.
    unsafe {
        _mm_prefetch::<_MM_HINT_NTA>(values.as_ptr().wrapping_add(at + PREFETCH_DISTANCE).cast());
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_ahead(_values: &[u64], _at: usize) {}

/// A Galois key's digit polynomials (a and b parts, [`split_scaled`]) in the order
/// [`key_switch_sums`] reads them: slot group, then digit, then part. One key is one stream.
pub(crate) struct KeyLanes {
    digits: usize,
    values: Vec<u64>,
}

impl KeyLanes {
    /// From a key's digit polynomials as plain residues (they are split and scaled here).
    pub(crate) fn of_residues(a: &[Vec<u64>], b: &[Vec<u64>]) -> Self {
        let scaled = |polys: &[Vec<u64>]| -> Vec<Vec<u64>> {
            polys.iter().map(|p| p.iter().map(|&v| split_scaled(v)).collect()).collect()
        };
        Self::new(&scaled(a), &scaled(b))
    }

    fn new(a: &[Vec<u64>], b: &[Vec<u64>]) -> Self {
        let len = a.first().map_or(0, Vec::len);
        assert!(
            !a.is_empty()
                && a.len() == b.len()
                && len.is_multiple_of(LANES)
                && a.iter().chain(b).all(|p| p.len() == len),
            "a and b parts of one length for each of at least one digit"
        );
        let parts = a.iter().zip(b).flat_map(|(a, b)| [a.as_slice(), b.as_slice()]);
        Self { digits: a.len(), values: by_slot_group(parts, len) }
    }
}

/// `(sum_d digit_d key.a_d, init_b + sum_d digit_d key.b_d) mod q` pointwise: the sums of a key
/// switch, from the split gadget digits (NTT form) of what is switched; `init_b` holds plain
/// residues. Like [`block_products`], the key streams front to back and each slot group's
/// lazy sums stay in registers over all digits.
pub(crate) fn key_switch_sums(
    digits: &[Vec<u64>],
    key: &KeyLanes,
    init_b: &[u64],
) -> (Vec<u64>, Vec<u64>) {
    assert_eq!(digits.len(), key.digits, "one digit per key digit");
    let len = key.values.len() / (2 * key.digits);
    debug_assert!(digits.iter().all(|digit| digit.len() == len), "digits as long as the key");
    let (mut a, mut b) = (Vec::with_capacity(len), Vec::with_capacity(len));
    key_switch_lanes(digits, &key.values, &mut a, &mut b);
    b.iter_mut().zip(init_b).for_each(|(o, &i)| *o = add_mod_q(*o, i));
    (a, b)
}

#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2"))]
fn key_switch_lanes(digits: &[Vec<u64>], key: &[u64], out_a: &mut Vec<u64>, out_b: &mut Vec<u64>) {
    let count = digits.len();
    for (group, key_group) in key.chunks_exact(count * 2 * LANES).enumerate() {
        let slot = group * LANES;
        let [a, b] = slot_group_sums(count, |d| {
            let halves =
                [lanes_at(key_group, 2 * d * LANES), lanes_at(key_group, (2 * d + 1) * LANES)];
            (lanes_at(&digits[d], slot), halves)
        });
        out_a.extend_from_slice(&a);
        out_b.extend_from_slice(&b);
    }
}

/// x 2^-32 mod q, up to a multiple of q, for any u64 x: the result is below q + 2^32.
/// With m = -x mod 2^32, x + m q is divisible by 2^32 (q = 1 mod 2^32), and
/// (x + m q) / 2^32 = floor(x / 2^32) + [x mod 2^32 != 0] + m Q_HIGH.
#[inline(always)]
fn montgomery_step(x: u64) -> u64 {
    let low = x & LOW_32;
    let m = low.wrapping_neg() & LOW_32;
    (x >> 32) + u64::from(low != 0) + m * Q_HIGH
}

/// values <- values by mod q pointwise: `values` plain residues, `by` in [`split_scaled`]
/// form (a product of one term, reduced in the same lanes as the sums).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2"))]
pub(crate) fn multiply_in_place(values: &mut [u64], by: &[u64]) {
    for (value, &w) in values.iter_mut().zip(by) {
        let x = split(*value);
        let (x_lo, x_hi) = (x & LOW_32, x >> 32);
        let (w_lo, w_hi) = (w & LOW_32, w >> 32);
        *value = reduce_limbs(x_lo * w_lo, x_lo * w_hi + x_hi * w_lo, x_hi * w_hi);
    }
}

/// (l + m 2^27 + h 2^54) 2^-96 mod q, for limbs below 2^62. Three Montgomery steps bring
/// the limbs below 2^54 (times 2^-32), a carry pass makes them d + t 2^54 with d < 2^54, the
/// fold 2^54 = 9 2^32 - 1 turns that into (d - t) + 9 t 2^32, and two more steps remove the
/// 2^32 and reduce below 2q.
#[inline(always)]
fn reduce_limbs(low: u64, mid: u64, high: u64) -> u64 {
    let (l, m, h) = (montgomery_step(low), montgomery_step(mid), montgomery_step(high));
    let carried = m + (l >> HALF_BITS);
    let top = h + (carried >> HALF_BITS); // < 2^54 + 2^28
    let digits = (l & HALF_MASK) | ((carried & HALF_MASK) << HALF_BITS); // < 2^54
    // (digits - top) 2^-32 + 9 top = (digits + top 2^54) 2^-32 (mod q); 2q > top.
    let folded = montgomery_step(digits + 2 * Q - top) + FOLD * top;
    let r = montgomery_step(folded); // < q + 2^32 < 2q
    r.min(r.wrapping_sub(Q))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poly::sample_uniform;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn exact(init: u64, terms: &[(u64, u64)]) -> u64 {
        terms.iter().fold(u128::from(init), |acc, &(x, y)| {
            (acc + u128::from(x) * u128::from(y)) % u128::from(Q)
        }) as u64
    }

    fn uniform(rng: &mut ChaCha20Rng, len: usize) -> Vec<u64> {
        let mut v = vec![0u64; len];
        sample_uniform(rng, &mut v);
        v
    }

    #[test]
    fn key_switch_sums_are_exact_at_the_extremes_and_beyond_one_lazy_group() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let len = 304;
        // More digits than one lazy sum holds, and the largest residues in every slot of the
        // first digits and key parts (the sums' worst case).
        for count in [1, 2, 5, 27, MAX_TERMS, MAX_TERMS + 6] {
            let extreme_or_uniform = |rng: &mut ChaCha20Rng, t: usize| {
                if t < 3 { vec![Q - 1; len] } else { uniform(rng, len) }
            };
            let digits: Vec<Vec<u64>> =
                (0..count).map(|t| extreme_or_uniform(&mut rng, t)).collect();
            let key_a: Vec<Vec<u64>> =
                (0..count).map(|t| extreme_or_uniform(&mut rng, t)).collect();
            let key_b: Vec<Vec<u64>> =
                (0..count).map(|t| extreme_or_uniform(&mut rng, t)).collect();
            let key = KeyLanes::of_residues(&key_a, &key_b);
            let split_digits: Vec<Vec<u64>> = digits.iter().map(|d| split_all(d)).collect();
            let init = uniform(&mut rng, len);
            let (a, b) = key_switch_sums(&split_digits, &key, &init);
            for i in 0..len {
                let pairs = |key: &[Vec<u64>]| -> Vec<(u64, u64)> {
                    digits.iter().zip(key).map(|(d, k)| (d[i], k[i])).collect()
                };
                assert_eq!(a[i], exact(0, &pairs(&key_a)), "{count} digits, slot {i}");
                assert_eq!(b[i], exact(init[i], &pairs(&key_b)), "{count} digits, slot {i}");
            }
        }
    }

    #[test]
    fn block_products_are_exact_in_both_halves_and_in_one() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let len = 600; // three chunks, the last one short
        let accumulators = 3;
        // One term, several, and more than one lazy sum holds; the largest residues in the
        // first accumulator's first terms and conjugates (the sums' worst case).
        for terms in [1, 5, MAX_TERMS + 9] {
            let conjugates: Vec<[Vec<u64>; 2]> = (0..terms)
                .map(|t| {
                    if t < 3 {
                        [vec![Q - 1; len], vec![Q - 1; len]]
                    } else {
                        [uniform(&mut rng, len), uniform(&mut rng, len)]
                    }
                })
                .collect();
            let weights: Vec<Vec<u64>> = (0..accumulators * terms)
                .map(|k| if k < 3 { vec![Q - 1; len] } else { uniform(&mut rng, len) })
                .collect();
            let scaled: Vec<Vec<u64>> =
                weights.iter().map(|p| p.iter().map(|&v| split_scaled(v)).collect()).collect();
            let encoded = BlockWeights::new(&scaled, accumulators);
            assert_eq!(encoded.memory_bytes(), weights.len() * len * 8);
            let split: Vec<[Vec<u64>; 2]> =
                conjugates.iter().map(|[a, b]| [split_all(a), split_all(b)]).collect();
            let both: Vec<[&[u64]; 2]> =
                split.iter().map(|[a, b]| [a.as_slice(), b.as_slice()]).collect();
            let one: Vec<[&[u64]; 1]> = split.iter().map(|[a, _]| [a.as_slice()]).collect();
            let (sums_both, sums_one) =
                (block_products(&encoded, &both), block_products(&encoded, &one));
            for acc in 0..accumulators {
                let expected: [Vec<u64>; 2] = std::array::from_fn(|half| {
                    (0..len)
                        .map(|i| {
                            let pairs: Vec<(u64, u64)> = (0..terms)
                                .map(|t| (weights[acc * terms + t][i], conjugates[t][half][i]))
                                .collect();
                            exact(0, &pairs)
                        })
                        .collect()
                });
                assert_eq!(sums_one[acc], [expected[0].clone()], "{terms} terms");
                assert_eq!(sums_both[acc], expected, "{terms} terms");
            }
        }
    }

    #[test]
    fn reduction_is_exact_over_its_whole_input_range() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let max = (1u64 << 62) - 1;
        let mut values: Vec<[u64; 3]> =
            vec![[0; 3], [max; 3], [max, 0, max], [0, max, 0], [1, 1, 1]];
        values.extend(
            (0..10_000)
                .map(|_| std::array::from_fn(|_| rand_core::RngCore::next_u64(&mut rng) & max)),
        );
        let out: Vec<u64> = values.iter().map(|&[l, m, h]| reduce_limbs(l, m, h)).collect();
        let q = u128::from(Q);
        let inverse_factor = (0..96).fold(1u128, |acc, _| acc * q.div_ceil(2) % q); // 2^-96
        for (v, &r) in values.iter().zip(&out) {
            let value =
                (u128::from(v[0]) + (u128::from(v[1]) << 27) % q + (u128::from(v[2]) << 54) % q)
                    % q;
            assert_eq!(u128::from(r), value * inverse_factor % q, "{v:?}");
        }
    }

    #[test]
    fn products_in_place_are_exact_at_the_extremes() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let mut w = vec![0u64; 300];
        let mut x = vec![0u64; 300];
        sample_uniform(&mut rng, &mut w);
        sample_uniform(&mut rng, &mut x);
        w[..4].copy_from_slice(&[0, 1, Q - 1, Q / 2]);
        x[..4].copy_from_slice(&[Q - 1, Q - 1, Q - 1, Q - 2]);
        let expected: Vec<u64> = x.iter().zip(&w).map(|(&x, &w)| exact(0, &[(x, w)])).collect();
        let scaled: Vec<u64> = w.iter().map(|&w| split_scaled(w)).collect();
        multiply_in_place(&mut x, &scaled);
        assert_eq!(x, expected);
    }

    #[test]
    fn split_keeps_every_bit() {
        for value in [0, 1, HALF_MASK, HALF_MASK + 1, Q - 1, Q / 3] {
            let s = split(value);
            assert_eq!((s & LOW_32) + ((s >> 32) << HALF_BITS), value);
            assert!(s & LOW_32 < 1 << HALF_BITS && s >> 32 < 1 << HALF_BITS);
        }
    }
}
