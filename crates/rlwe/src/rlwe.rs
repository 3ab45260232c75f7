//! Secret-key RLWE encryption: seeded upload ciphertexts and mod-switched result ciphertexts.

use std::fmt;

use rand_chacha::ChaCha12Rng;
use rand_core::{CryptoRng, SeedableRng};

use crate::params::{CIPHERTEXT_MODULUS, MOD_SWITCH_HEADROOM_BITS, Params, RING_DEGREE};
use crate::poly::{
    add_mod_q, centred, sample_error, sample_ternary, sample_uniform, sub_mod_q,
    switch_to_power_of_two, to_residue,
};

/// The client's ternary secret s. Deliberately neither serialisable nor printable.
pub struct SecretKey {
    params: Params,
    /// NTT(s) * N^-1, so that one inverse transform of a pointwise product yields a * s.
    key_ntt_scaled: Vec<u64>,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey { .. }")
    }
}

impl Drop for SecretKey {
    /// Best-effort wipe (black_box keeps the stores from being optimised away).
    fn drop(&mut self) {
        self.key_ntt_scaled.fill(0);
        std::hint::black_box(&self.key_ntt_scaled);
    }
}

impl SecretKey {
    pub fn generate<R: CryptoRng + ?Sized>(params: &Params, rng: &mut R) -> Self {
        let mut key_ntt_scaled: Vec<u64> = sample_ternary(rng, RING_DEGREE)
            .into_iter()
            .map(|s| to_residue(i64::from(s)))
            .collect();
        params.ntt().forward(&mut key_ntt_scaled);
        params.ntt().scale_by_inverse_n(&mut key_ntt_scaled);
        Self { params: params.clone(), key_ntt_scaled }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The same secret s for parameters with another plaintext modulus: s, uploads and Galois
    /// keys do not depend on t (only q and N, which all parameter sets share), so one session
    /// key and one set of Galois keys serve stages with different t.
    pub fn with_params(&self, params: &Params) -> Self {
        Self { params: params.clone(), key_ntt_scaled: self.key_ntt_scaled.clone() }
    }

    /// s in coefficient form, as residues mod q (for Galois key generation).
    pub(crate) fn coefficients(&self) -> Vec<u64> {
        let mut s = self.key_ntt_scaled.clone();
        self.params.ntt().inverse_unscaled(&mut s);
        s
    }

    /// a * s in R_q, coefficient form in and out.
    pub(crate) fn times_secret(&self, a: &[u64]) -> Vec<u64> {
        let mut a_ntt = a.to_vec();
        self.params.ntt().forward(&mut a_ntt);
        self.times_secret_ntt(&a_ntt)
    }

    /// a * s in R_q from a in NTT form, coefficient form out.
    pub(crate) fn times_secret_ntt(&self, a_ntt: &[u64]) -> Vec<u64> {
        let ntt = self.params.ntt();
        let mut product = vec![0; RING_DEGREE];
        ntt.mul_accumulate(&mut product, a_ntt, &self.key_ntt_scaled);
        ntt.inverse_unscaled(&mut product);
        product
    }
}

/// A fresh ciphertext (a, b = -a*s + e + Delta*m) sent as (seed of a, b rounded to its top
/// `upload_bits` bits): less than half the bytes of (a, b).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadCiphertext {
    pub(crate) log2_t: u32,
    pub(crate) upload_bits: u32,
    /// Input values per ciphertext in the layout it was made for: a miner using another layout
    /// would compute garbage, so it is carried and checked.
    pub(crate) in_block: usize,
    pub(crate) seed: [u8; 32],
    /// b rounded to mod 2^upload_bits, coefficient form: every value is valid.
    pub(crate) b: Vec<u64>,
}

/// The public mask a of a seeded ciphertext, expanded with ChaCha12 (miner and client agree)
/// directly in NTT form: the NTT is a bijection of R_q, so a stays uniform (as in Kyber), and
/// neither side has to transform it. The values are in the NTT module's own (bit-reversed)
/// order, so replacing the NTT by one with another order changes what a seed means: bump the
/// wire format version then.
pub(crate) fn expand_mask_ntt(seed: &[u8; 32]) -> Vec<u64> {
    let mut a = vec![0; RING_DEGREE];
    sample_uniform(&mut ChaCha12Rng::from_seed(*seed), &mut a);
    a
}

/// Encrypts `message` as the low coefficients of a plaintext polynomial.
pub(crate) fn encrypt_coefficients<R: CryptoRng + ?Sized>(
    key: &SecretKey,
    message: &[i8],
    in_block: usize,
    rng: &mut R,
) -> UploadCiphertext {
    debug_assert!(message.len() <= in_block && in_block <= RING_DEGREE);
    let upload_bits = key.params.upload_bits();
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let b = encrypt_scaled(key, message, key.params.delta(), upload_bits, &seed, rng);
    UploadCiphertext { log2_t: key.params.log2_plaintext_modulus(), upload_bits, in_block, seed, b }
}

/// b = -a s + e + scale * m rounded to its top `upload_bits` bits, for the mask a that
/// `mask_seed` expands to: the seeded encryption of `message` (low coefficients) with an
/// explicit message scale. The errors come from `rng`; the mask seed must never be used twice
/// under one key (two b's of one mask would differ by the difference of their messages).
pub(crate) fn encrypt_scaled<R: CryptoRng + ?Sized>(
    key: &SecretKey,
    message: &[i8],
    scale: u64,
    upload_bits: u32,
    mask_seed: &[u8; 32],
    rng: &mut R,
) -> Vec<u64> {
    // A seed from the caller's generator, expanded locally: the cost of encryption does not
    // depend on how slow that generator is (an OS generator would mean a syscall per draw).
    let mut noise_seed = [0u8; 32];
    rng.fill_bytes(&mut noise_seed);
    let mut noise = ChaCha12Rng::from_seed(noise_seed);
    let a_times_s = key.times_secret_ntt(&expand_mask_ntt(mask_seed));
    let scale = scale as i64;
    a_times_s
        .iter()
        .enumerate()
        .map(|(k, &a_s)| {
            let m = message.get(k).map_or(0, |&m| i64::from(m));
            // |scale * m| < 2^61: no overflow.
            let b = sub_mod_q(
                add_mod_q(to_residue(sample_error(&mut noise)), to_residue(scale * m)),
                a_s,
            );
            switch_to_power_of_two(b, upload_bits)
        })
        .collect()
}

/// A product ciphertext switched to q' = 2^result_modulus_bits: the whole mask a', but b' only
/// at the `rows` coefficients that hold dot products.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultCiphertext {
    pub(crate) log2_t: u32,
    pub(crate) in_block: usize,
    pub(crate) out_block: usize,
    /// Residues mod q', RING_DEGREE of them.
    pub(crate) a: Vec<u64>,
    /// Residues mod q' at coefficients useful_position(in_block, r), r < rows.
    pub(crate) b: Vec<u64>,
}

/// Where the Cheetah encoding puts the dot product of output row `row` of a block.
pub(crate) fn useful_position(in_block: usize, row: usize) -> usize {
    row * in_block + in_block - 1
}

impl ResultCiphertext {
    /// Number of output rows (dot products) this ciphertext carries.
    pub fn rows(&self) -> usize {
        self.b.len()
    }

    /// Mod-switches a product ciphertext (coefficient form, mod q) down to q'.
    pub(crate) fn switch_down(
        params: &Params,
        in_block: usize,
        out_block: usize,
        rows: usize,
        a: &[u64],
        b: &[u64],
    ) -> Self {
        let bits = params.result_modulus_bits();
        Self {
            log2_t: params.log2_plaintext_modulus(),
            in_block,
            out_block,
            a: a.iter().map(|&v| switch_to_power_of_two(v, bits)).collect(),
            b: (0..rows)
                .map(|row| switch_to_power_of_two(b[useful_position(in_block, row)], bits))
                .collect(),
        }
    }
}

/// The phases b' + a' s mod q' of the useful coefficients: Delta' * m + noise.
fn phases(key: &SecretKey, ct: &ResultCiphertext) -> Vec<u64> {
    let result_modulus = 1u64 << key.params.result_modulus_bits();
    let lifted: Vec<u64> = ct.a.iter().map(|&a| to_residue(centred(a, result_modulus))).collect();
    // |a' * s| <= N * q'/2 < q/2, so the centred residue mod q is the exact integer.
    let a_times_s = key.times_secret(&lifted);
    ct.b.iter()
        .enumerate()
        .map(|(row, &b)| {
            let a_s = centred(a_times_s[useful_position(ct.in_block, row)], CIPHERTEXT_MODULUS);
            (b as i64).wrapping_add(a_s) as u64 & (result_modulus - 1)
        })
        .collect()
}

/// Decrypts the useful coefficients to centred residues mod t (no bound check).
pub(crate) fn decrypt_rows(key: &SecretKey, ct: &ResultCiphertext) -> Vec<i64> {
    let t = key.params.plaintext_modulus();
    phases(key, ct)
        .into_iter()
        .map(|phase| {
            let rounded =
                (phase + (1 << (MOD_SWITCH_HEADROOM_BITS - 1))) >> MOD_SWITCH_HEADROOM_BITS;
            centred(rounded & (t - 1), t)
        })
        .collect()
}

/// Decryption noise of each useful coefficient given the true products (for noise tests).
#[cfg(test)]
pub(crate) fn noise_rows(key: &SecretKey, ct: &ResultCiphertext, products: &[i64]) -> Vec<i64> {
    let result_modulus = 1u64 << key.params.result_modulus_bits();
    phases(key, ct)
        .into_iter()
        .zip(products)
        .map(|(phase, &m)| {
            let scaled = (m << MOD_SWITCH_HEADROOM_BITS) as u64;
            centred(phase.wrapping_sub(scaled) & (result_modulus - 1), result_modulus)
        })
        .collect()
}
