//! Automorphisms X -> X^k (odd k) of R_q and key switching with Galois keys.
//!
//! A Galois key for k is a gadget vector of RLWE samples under s that encrypt 2^(B (i+1)) s(X^k):
//! (a_i, b_i = -a_i s + e_i + 2^(B (i+1)) s(X^k)), i < digits, with a_i expanded from a seed.
//! To switch sigma_k(ct) = (a(X^k), b(X^k)), which decrypts under s(X^k), back to s, the lowest
//! B bits of a(X^k) are rounded away (approximate gadget), the rest is cut into balanced
//! base-2^B digits d_i (|d_i| <= 2^(B-1)) and
//! (a', b') = (sum d_i a_i, b(X^k) + sum d_i b_i), so that b' + a' s equals
//! b(X^k) + a(X^k) s(X^k) minus a_low(X) s(X^k) plus sum d_i e_i. The added noise sum_i d_i e_i
//! is, given the digits, a weighted sum of independent CBD(21) coefficients: sub-Gaussian with proxy 10.5 * N * sum_i max|d_i|^2 (see
//! [`key_switch_noise_proxy`], which adds N 4^(B-1) for the rounded-away low bits). There is no special prime (q already uses the whole 54 bits the
//! 128-bit table allows at N = 2048), so the digit base B is what keeps that noise small.

use multiversion::multiversion;
use rand_chacha::ChaCha12Rng;
use rand_core::{CryptoRng, SeedableRng};
use rayon::prelude::*;

use crate::error::RlweError;
use crate::params::{
    CIPHERTEXT_MODULUS, CIPHERTEXT_MODULUS_BITS, ERROR_VARIANCE, Params, RING_DEGREE,
};
use crate::poly::{
    add_mod_q, centred, mul_accumulate_wide, reduce_wide, sample_error, sub_mod_q, to_residue,
};
use crate::rlwe::{SecretKey, expand_mask_ntt};

const Q: u64 = CIPHERTEXT_MODULUS;
const N: usize = RING_DEGREE;

/// Smallest and largest supported digit base (bits per gadget digit).
pub const MIN_DIGIT_BITS: u32 = 1;
pub const MAX_DIGIT_BITS: u32 = 27;

/// Gadget digits of a key switch with `digit_bits` = B: an approximate gadget. The lowest B
/// bits of a(X^k) are rounded away (their term a_low s(X^k) is left as noise, proxy
/// N 4^(B-1), about 1/(10.5 d) of the digits' noise) and the rest, |v| < 2^(53-B) + 1, is cut
/// into balanced base-2^B digits 2^B, 2^2B, ...: ceil(54 / B) - 1 of them.
pub fn gadget_digits(digit_bits: u32) -> usize {
    CIPHERTEXT_MODULUS_BITS.div_ceil(digit_bits) as usize - 1
}

/// Sub-Gaussian proxy (variance bound, in units of q) of the noise one key switch adds:
/// 10.5 N sum_i max|d_i|^2 (|d_i| <= 2^(B-1), the top digit at most what is left of 2^53,
/// plus one) for the key errors, plus N 4^(B-1) for the rounded-away low bits times the
/// ternary secret.
pub fn key_switch_noise_proxy(digit_bits: u32) -> f64 {
    let digits = gadget_digits(digit_bits) as u32;
    let half_base = 4f64.powi(digit_bits as i32 - 1);
    let low = half_base * f64::from(digits - 1);
    let top_bits = (CIPHERTEXT_MODULUS_BITS - 1).saturating_sub(digit_bits * digits);
    let top = (2f64.powi(top_bits as i32) + 1.0).powi(2);
    ERROR_VARIANCE * N as f64 * (low + top) + N as f64 * half_base
}

/// sigma_k on a coefficient vector mod q: X^i -> X^(i k mod 2N), negated past N.
pub(crate) fn automorphism(poly: &[u64], k: usize) -> Vec<u64> {
    debug_assert!(k % 2 == 1 && poly.len() == N);
    let mut out = vec![0u64; N];
    let two_n = 2 * N;
    for (i, &c) in poly.iter().enumerate() {
        let j = (i * k) % two_n;
        if j < N {
            out[j] = c;
        } else {
            out[j - N] = if c == 0 { 0 } else { Q - c };
        }
    }
    out
}

/// Balanced base-2^B digits of every coefficient above the lowest B bits (which are rounded
/// away): digit i (weight 2^(B (i+1))) of coefficient m at [i][m], as residues mod q.
/// Digit-major passes over all coefficients (each carrying what is left of its value), so
/// that every pass is a branch-free loop the compiler vectorises.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2"))]
pub(crate) fn decompose(poly: &[u64], digit_bits: u32) -> Vec<Vec<u64>> {
    let digits = gadget_digits(digit_bits);
    let base = 1i64 << digit_bits;
    let half = base >> 1;
    // Round away the lowest digit.
    let mut rest = vec![0i64; poly.len()];
    for (rest, &c) in rest.iter_mut().zip(poly) {
        let value = centred(c, Q);
        *rest = (value - balanced_digit(value, base, half)) >> digit_bits;
    }
    let mut out = Vec::with_capacity(digits);
    for _ in 1..digits {
        let mut digit = vec![0u64; poly.len()];
        for (value, digit) in rest.iter_mut().zip(&mut digit) {
            let d = balanced_digit(*value, base, half);
            *value = (*value - d) >> digit_bits;
            *digit = digit_residue(d);
        }
        out.push(digit);
    }
    // What is left (|value| < 2^(53 - B digits) + 1 <= 2^(B-1) + 1) is the top digit.
    out.push(rest.into_iter().map(digit_residue).collect());
    out
}

/// The balanced digit of v: its low B bits, taken in [-2^(B-1), 2^(B-1)).
#[inline(always)]
fn balanced_digit(value: i64, base: i64, half: i64) -> i64 {
    ((value + half) & (base - 1)) - half
}

#[inline(always)]
fn digit_residue(digit: i64) -> u64 {
    (digit + ((digit >> 63) & Q as i64)) as u64
}

/// The key-switching key for one automorphism k.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GaloisKey {
    k: usize,
    /// Seeds of the masks a_i (wire form).
    seeds: Vec<[u8; 32]>,
    /// b_i in coefficient form mod q (wire form).
    b: Vec<Vec<u64>>,
    /// NTT(a_i) * N^-1 and NTT(b_i) * N^-1, for the pointwise products of a key switch.
    a_ntt: Vec<Vec<u64>>,
    b_ntt: Vec<Vec<u64>>,
}

impl GaloisKey {
    fn from_parts(params: &Params, k: usize, seeds: Vec<[u8; 32]>, b: Vec<Vec<u64>>) -> Self {
        let ntt = params.ntt();
        let a_ntt = seeds
            .iter()
            .map(|seed| {
                let mut a = expand_mask_ntt(seed);
                ntt.scale_by_inverse_n(&mut a);
                a
            })
            .collect();
        let b_ntt = b
            .iter()
            .map(|b| {
                let mut b = b.clone();
                ntt.forward(&mut b);
                ntt.scale_by_inverse_n(&mut b);
                b
            })
            .collect();
        Self { k, seeds, b, a_ntt, b_ntt }
    }
}

/// Per digit NTT(a_i) N^-1 and NTT(b_i) N^-1 of one Galois key.
pub(crate) type KeyNtt<'a> = (&'a [Vec<u64>], &'a [Vec<u64>]);

/// Galois (key-switching) keys for a set of automorphisms, generated by the key holder and
/// uploaded once per session. Public material: RLWE samples under s (see the module note).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GaloisKeys {
    params: Params,
    digit_bits: u32,
    keys: Vec<GaloisKey>,
}

impl GaloisKeys {
    /// Keys for the automorphisms `exponents` (odd, in 3..2N), digits of `digit_bits` bits.
    pub fn generate<R: CryptoRng + ?Sized>(
        key: &SecretKey,
        exponents: &[usize],
        digit_bits: u32,
        rng: &mut R,
    ) -> Result<Self, RlweError> {
        check_digit_bits(digit_bits)?;
        let params = key.params().clone();
        let secret = key.coefficients();
        let digits = gadget_digits(digit_bits);
        let mut keys = Vec::with_capacity(exponents.len());
        for (index, &k) in exponents.iter().enumerate() {
            check_exponent(k)?;
            if exponents[..index].contains(&k) {
                return Err(RlweError::LayoutMismatch {
                    what: "Galois keys",
                    detail: format!("two keys for X -> X^{k}"),
                });
            }
            let rotated = automorphism(&secret, k);
            let mut seeds = Vec::with_capacity(digits);
            let mut bs = Vec::with_capacity(digits);
            for i in 0..digits {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                let mut noise_seed = [0u8; 32];
                rng.fill_bytes(&mut noise_seed);
                let mut noise = ChaCha12Rng::from_seed(noise_seed);
                let a_times_s = key.times_secret_ntt(&expand_mask_ntt(&seed));
                let gadget = ((1u128 << (digit_bits as usize * (i + 1))) % u128::from(Q)) as u64;
                let b = a_times_s
                    .iter()
                    .zip(&rotated)
                    .map(|(&a_s, &s_k)| {
                        let g_s = (u128::from(gadget) * u128::from(s_k) % u128::from(Q)) as u64;
                        let e = to_residue(sample_error(&mut noise));
                        sub_mod_q(add_mod_q(e, g_s), a_s)
                    })
                    .collect();
                seeds.push(seed);
                bs.push(b);
            }
            keys.push(GaloisKey::from_parts(&params, k, seeds, bs));
        }
        Ok(Self { params, digit_bits, keys })
    }

    pub fn digit_bits(&self) -> u32 {
        self.digit_bits
    }

    /// The automorphism exponents these keys switch.
    pub fn exponents(&self) -> Vec<usize> {
        self.keys.iter().map(|key| key.k).collect()
    }

    /// Serialised size: header + per key (k, then per digit a 32-byte seed and N 54-bit b).
    pub fn byte_len(&self) -> usize {
        galois_keys_bytes(self.keys.len(), self.digit_bits)
    }

    /// Every key as (k, (NTT(a_i) N^-1, NTT(b_i) N^-1) per digit), for key switches done
    /// directly in NTT form (crate `rhombus`).
    pub(crate) fn keys_ntt(&self) -> impl Iterator<Item = (usize, KeyNtt<'_>)> {
        self.keys.iter().map(|key| (key.k, (key.a_ntt.as_slice(), key.b_ntt.as_slice())))
    }

    fn key(&self, k: usize) -> Result<&GaloisKey, RlweError> {
        self.keys.iter().find(|key| key.k == k).ok_or_else(|| RlweError::LayoutMismatch {
            what: "Galois keys",
            detail: format!("no key for the automorphism X -> X^{k}"),
        })
    }

    /// Low level: sigma_k(ct) switched back to s, for a ciphertext (a, b) given as N residues
    /// mod q each in coefficient form (the form of a product before its mod switch).
    pub fn apply_automorphism(
        &self,
        k: usize,
        a: &[u64],
        b: &[u64],
    ) -> Result<(Vec<u64>, Vec<u64>), RlweError> {
        for part in [a, b] {
            if part.len() != N {
                return Err(RlweError::WrongLength {
                    what: "ciphertext polynomial",
                    expected: N,
                    actual: part.len(),
                });
            }
            if part.iter().any(|&v| v >= Q) {
                return Err(RlweError::NonCanonicalEncoding { what: "ciphertext polynomial" });
            }
        }
        self.apply(k, a, b)
    }

    /// [`Self::apply_automorphism`] for reduced inputs of the right length.
    pub(crate) fn apply(
        &self,
        k: usize,
        a: &[u64],
        b: &[u64],
    ) -> Result<(Vec<u64>, Vec<u64>), RlweError> {
        let key = self.key(k)?;
        let ntt = self.params.ntt();
        let mut digits = decompose(&automorphism(a, k), self.digit_bits);
        let mut wide_a = vec![0u128; N];
        let mut wide_b = vec![0u128; N];
        for ((digit, ka), kb) in digits.iter_mut().zip(&key.a_ntt).zip(&key.b_ntt) {
            ntt.forward(digit);
            mul_accumulate_wide(&mut wide_a, &mut wide_b, ka, kb, digit);
        }
        let mut new_a: Vec<u64> = wide_a.into_iter().map(reduce_wide).collect();
        let mut new_b: Vec<u64> = wide_b.into_iter().map(reduce_wide).collect();
        ntt.inverse_unscaled(&mut new_a);
        ntt.inverse_unscaled(&mut new_b);
        let rotated_b = automorphism(b, k);
        new_b.iter_mut().zip(&rotated_b).for_each(|(x, &y)| *x = add_mod_q(*x, y));
        Ok((new_a, new_b))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        out.extend_from_slice(&GALOIS_MAGIC);
        out.extend_from_slice(&[GALOIS_VERSION, RING_DEGREE.ilog2() as u8, self.digit_bits as u8]);
        out.extend_from_slice(&(self.keys.len() as u16).to_le_bytes());
        for key in &self.keys {
            out.extend_from_slice(&(key.k as u16).to_le_bytes());
            for (seed, b) in key.seeds.iter().zip(&key.b) {
                out.extend_from_slice(seed);
                crate::wire::pack_values(b.iter(), CIPHERTEXT_MODULUS_BITS, &mut out);
            }
        }
        out
    }

    /// Parses keys for `params` (strict: length, header, exponents, every b below q).
    pub fn from_bytes(params: &Params, bytes: &[u8]) -> Result<Self, RlweError> {
        const WHAT: &str = "Galois keys";
        if bytes.len() < GALOIS_HEADER_BYTES {
            return Err(RlweError::WrongByteLength {
                what: WHAT,
                expected: GALOIS_HEADER_BYTES,
                actual: bytes.len(),
            });
        }
        if bytes[..2] != GALOIS_MAGIC
            || bytes[2] != GALOIS_VERSION
            || u32::from(bytes[3]) != RING_DEGREE.ilog2()
        {
            return Err(RlweError::BadHeader { what: WHAT });
        }
        let digit_bits = u32::from(bytes[4]);
        check_digit_bits(digit_bits)?;
        let count = usize::from(u16::from_le_bytes([bytes[5], bytes[6]]));
        let expected = galois_keys_bytes(count, digit_bits);
        if bytes.len() != expected {
            return Err(RlweError::WrongByteLength { what: WHAT, expected, actual: bytes.len() });
        }
        let digit_bytes = 32 + (N * CIPHERTEXT_MODULUS_BITS as usize).div_ceil(8);
        let digits = gadget_digits(digit_bits);
        let mut rest = &bytes[GALOIS_HEADER_BYTES..];
        let mut parts = Vec::with_capacity(count);
        for _ in 0..count {
            let k = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            check_exponent(k)?;
            if parts.iter().any(|(other, _, _)| *other == k) {
                return Err(RlweError::LayoutMismatch {
                    what: WHAT,
                    detail: format!("two keys for X -> X^{k}"),
                });
            }
            rest = &rest[2..];
            let mut seeds = Vec::with_capacity(digits);
            let mut bs = Vec::with_capacity(digits);
            for _ in 0..digits {
                let (digit, tail) = rest.split_at(digit_bytes);
                rest = tail;
                seeds.push(digit[..32].try_into().expect("32-byte seed"));
                let b = crate::wire::unpack_values(&digit[32..], N, CIPHERTEXT_MODULUS_BITS, WHAT)?;
                if b.iter().any(|&v| v >= Q) {
                    return Err(RlweError::NonCanonicalEncoding { what: WHAT });
                }
                bs.push(b);
            }
            parts.push((k, seeds, bs));
        }
        let keys = parts
            .into_par_iter()
            .map(|(k, seeds, bs)| GaloisKey::from_parts(params, k, seeds, bs))
            .collect();
        Ok(Self { params: params.clone(), digit_bits, keys })
    }
}

const GALOIS_MAGIC: [u8; 2] = *b"BG";
const GALOIS_VERSION: u8 = 1;
const GALOIS_HEADER_BYTES: usize = 7;

/// Serialised size of `keys` Galois keys with `digit_bits`-bit digits.
pub fn galois_keys_bytes(keys: usize, digit_bits: u32) -> usize {
    let digit_bytes = 32 + (N * CIPHERTEXT_MODULUS_BITS as usize).div_ceil(8);
    GALOIS_HEADER_BYTES + keys * (2 + gadget_digits(digit_bits) * digit_bytes)
}

fn check_digit_bits(digit_bits: u32) -> Result<(), RlweError> {
    if (MIN_DIGIT_BITS..=MAX_DIGIT_BITS).contains(&digit_bits) {
        Ok(())
    } else {
        Err(RlweError::LayoutMismatch {
            what: "Galois keys",
            detail: format!(
                "digit base 2^{digit_bits}, supported 2^{MIN_DIGIT_BITS}..2^{MAX_DIGIT_BITS}"
            ),
        })
    }
}

fn check_exponent(k: usize) -> Result<(), RlweError> {
    if k % 2 == 1 && (3..2 * N).contains(&k) {
        Ok(())
    } else {
        Err(RlweError::LayoutMismatch {
            what: "Galois keys",
            detail: format!("automorphism exponent {k} is not odd in 3..{}", 2 * N),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poly::sample_uniform;
    use rand_chacha::ChaCha20Rng;

    /// Encrypts `m` (coefficients mod t, scaled by Delta) as a full (a, b) pair mod q.
    fn encrypt(key: &SecretKey, m: &[i64], rng: &mut ChaCha20Rng) -> (Vec<u64>, Vec<u64>) {
        let mut a = vec![0u64; N];
        sample_uniform(rng, &mut a);
        let a_s = key.times_secret(&a);
        let delta = key.params().delta() as i64;
        let b = a_s
            .iter()
            .zip(m)
            .map(|(&a_s, &m)| {
                sub_mod_q(add_mod_q(to_residue(sample_error(rng)), to_residue(delta * m)), a_s)
            })
            .collect();
        (a, b)
    }

    /// Phase b + a s centred mod q.
    fn phase(key: &SecretKey, a: &[u64], b: &[u64]) -> Vec<i64> {
        key.times_secret(a).iter().zip(b).map(|(&x, &y)| centred(add_mod_q(x, y), Q)).collect()
    }

    #[test]
    fn automorphisms_compose_and_permute_with_signs() {
        let poly: Vec<u64> = (0..N as u64).collect();
        let k = 5;
        let once = automorphism(&poly, k);
        assert_eq!(once[5], 1);
        // 5 * 500 = 2500 >= N: lands at 2500 - N with a minus sign.
        assert_eq!(once[2500 - N], Q - 500);
        // k * k^-1 = 1 mod 2N: the inverse automorphism undoes it.
        let inverse = (1..2 * N).step_by(2).find(|&j| (j * k) % (2 * N) == 1).unwrap();
        assert_eq!(automorphism(&once, inverse), poly);
    }

    #[test]
    fn gadget_decomposition_recomposes() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut poly = vec![0u64; N];
        sample_uniform(&mut rng, &mut poly);
        poly[0] = Q - 1;
        poly[1] = Q / 2;
        poly[2] = Q / 2 + 1;
        for bits in [MIN_DIGIT_BITS, 9, 10, 11, 18, MAX_DIGIT_BITS] {
            let digits = decompose(&poly, bits);
            for m in 0..N {
                let mut value = 0u128;
                for (i, digit) in digits.iter().enumerate() {
                    let g = (1u128 << (bits as usize * (i + 1))) % u128::from(Q);
                    value = (value + g * u128::from(digit[m])) % u128::from(Q);
                    assert!(centred(digit[m], Q).unsigned_abs() <= (1 << (bits - 1)) + 1);
                }
                // The recomposition misses only the rounded-away low digit.
                let missing = centred(sub_mod_q(poly[m], value as u64), Q);
                assert!(missing.unsigned_abs() <= 1 << (bits - 1), "{bits} bits: {missing}");
            }
        }
    }

    #[test]
    fn key_switch_decrypts_to_the_permuted_plaintext() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let params = Params::for_product_bound(127 * 128 * 576).unwrap();
        let key = SecretKey::generate(&params, &mut rng);
        let exponents = [3, 5, 129, 2 * N - 1];
        let keys = GaloisKeys::generate(&key, &exponents, 10, &mut rng).unwrap();
        let t = params.plaintext_modulus() as i64;
        let m: Vec<i64> = (0..N as i64).map(|i| (i * 7919 + 13) % t - t / 2).collect();
        let (a, b) = encrypt(&key, &m, &mut rng);
        let delta = params.delta() as i64;
        let proxy = key_switch_noise_proxy(10);
        for k in exponents {
            let (a2, b2) = keys.apply(k, &a, &b).unwrap();
            let expected = automorphism(&m.iter().map(|&v| to_residue(v)).collect::<Vec<_>>(), k);
            let phase = phase(&key, &a2, &b2);
            let mut largest = 0i64;
            for (p, &e) in phase.iter().zip(&expected) {
                let decoded = (p + delta / 2).div_euclid(delta);
                assert_eq!(
                    to_residue(decoded).rem_euclid(t as u64),
                    to_residue(centred(e, Q)).rem_euclid(t as u64)
                );
                largest = largest.max((p - centred(e, Q) * delta).abs());
            }
            // Fresh error (<= 21) plus the switch noise, within 8 proxy standard deviations.
            assert!((largest as f64) < 8.0 * proxy.sqrt() + 22.0, "k = {k}: {largest}");
        }
        // A key from another secret switches to garbage.
        let other = SecretKey::generate(&params, &mut rng);
        let wrong = GaloisKeys::generate(&other, &[5], 10, &mut rng).unwrap();
        let (a2, b2) = wrong.apply(5, &a, &b).unwrap();
        let expected = automorphism(&m.iter().map(|&v| to_residue(v)).collect::<Vec<_>>(), 5);
        let phase = phase(&key, &a2, &b2);
        let wrong_values = phase
            .iter()
            .zip(&expected)
            .filter(|(p, e)| ((**p - centred(**e, Q) * delta).abs()) > delta / 2)
            .count();
        assert!(wrong_values > N / 2, "{wrong_values}");
        assert!(keys.apply(7, &a, &b).is_err());
    }

    #[test]
    fn galois_keys_round_trip_and_reject_corruption() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let params = Params::for_product_bound(127 * 128 * 576).unwrap();
        let key = SecretKey::generate(&params, &mut rng);
        let keys = GaloisKeys::generate(&key, &[65, 129], 11, &mut rng).unwrap();
        let bytes = keys.to_bytes();
        assert_eq!(bytes.len(), keys.byte_len());
        assert_eq!(GaloisKeys::from_bytes(&params, &bytes).unwrap(), keys);
        assert!(GaloisKeys::from_bytes(&params, &bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(GaloisKeys::from_bytes(&params, &bad).is_err());
        let mut even = bytes.clone();
        even[GALOIS_HEADER_BYTES] = 64;
        assert!(GaloisKeys::from_bytes(&params, &even).is_err());
        let mut big = bytes.clone();
        let len = big.len();
        big[len - 7..].fill(0xff); // the last coefficient becomes 2^54 - 1 >= q
        assert!(GaloisKeys::from_bytes(&params, &big).is_err());
        assert!(GaloisKeys::generate(&key, &[4], 11, &mut rng).is_err());
        assert!(GaloisKeys::generate(&key, &[5], 0, &mut rng).is_err());
        assert!(GaloisKeys::generate(&key, &[5], MAX_DIGIT_BITS + 1, &mut rng).is_err());
        assert!(GaloisKeys::generate(&key, &[5, 7, 5], 11, &mut rng).is_err());
    }
}
