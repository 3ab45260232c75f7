//! Parameter set and its noise analysis (README "Noise analysis" derives every formula here).

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::error::RlweError;
use crate::ntt::Ntt;

/// Ring degree N of R_q = Z_q[X]/(X^N+1).
pub const RING_DEGREE: usize = 2048;

/// q = 4194295 * 2^32 + 1, the largest prime below 2^54 that is 1 mod 2^32. Being 1 mod every
/// power-of-two t up to 2^32 makes Delta = (q-1)/t exact, so the scaled plaintext error
/// (q mod t) * m / q that floor(q/t) would add vanishes; 1 mod 2N makes it NTT-friendly.
pub const CIPHERTEXT_MODULUS: u64 = 0x003f_fff7_0000_0001;

/// Bits of [`CIPHERTEXT_MODULUS`], the width of a packed upload coefficient.
pub const CIPHERTEXT_MODULUS_BITS: u32 = 54;

/// Largest supported log2 t: q = 1 mod 2^32 only up to here, and decryption lifts a'*s
/// exactly through q, which needs N * q' < q.
pub const MAX_LOG2_PLAINTEXT_MODULUS: u32 = 32;

/// Results are switched to q' = t * 2^8: 2^7 - 1 = 127 of room for the switch's rounding
/// noise, 8 * sqrt((N+1)/12) ~ 105 for any ternary secret, plus the scaled-down product noise.
pub const MOD_SWITCH_HEADROOM_BITS: u32 = 8;

/// Packed results (crate `packing`) are switched to q'' = t * 2^h with h up to this. The
/// mod switch's rounding noise (std <= 13.1 in units of q'') does not grow with h, the
/// key-switch noise does (x2 per bit, in units of q''), as does the budget 2^(h-1): with two
/// more bits than unpacked results the rounding no longer eats most of the budget and the key
/// switches can use one more bit per gadget digit (4 digits instead of 5 at s = 64; more bits
/// gain nothing). Capped by N q'' < q (decryption lifts a'' s exactly): h <= 42 - log2 t.
pub const MAX_PACKED_HEADROOM_BITS: u32 = 10;

/// Uploads send b rounded to this many top bits at most (b is uniform mod q, so the rounding
/// error is a uniform extra error on the upload; it is not multiplied by the secret).
pub const MAX_UPLOAD_BITS: u32 = CIPHERTEXT_MODULUS_BITS;

/// Uploads are rounded as coarsely as still lets a result ciphertext carry this many rows of
/// the worst weights under the bound (chosen layouts use 19-84 rows for i8 shapes up to 8192).
pub const UPLOAD_ROUNDING_TARGET_ROWS: usize = 256;

/// Error distribution: centred binomial with eta = 21 (variance 10.5, sigma 3.24 >= 3.19).
pub const ERROR_ETA: u32 = 21;
pub const ERROR_VARIANCE: f64 = ERROR_ETA as f64 / 2.0;

/// Required margin in standard deviations of the (sub-Gaussian) decryption noise. The tail
/// bound 2 exp(-k^2/2) gives a failure probability below 2^-45 per coefficient at k = 8.
pub const MIN_NOISE_SIGMAS: f64 = 8.0;

/// Largest |weight| the i8 per-channel weights use; bounds sum w^2 by 127 * |W_r|_1.
pub const MAX_ABS_WEIGHT: u64 = 127;

/// Largest |activation| of an i8 input.
pub const MAX_ABS_INPUT: u64 = 128;

/// Why these parameters are at least 128-bit secure.
pub const SECURITY_NOTE: &str = "RLWE with N = 2048, one 54-bit prime q = 4194295*2^32+1 \
(log2 q < 54), uniform ternary secret, centred binomial error (eta = 21, sigma = 3.24): inside \
the HomomorphicEncryption.org standard (2018) table for 128-bit classical security (N = 2048 \
allows log2 q <= 54 for ternary secrets and error sigma ~ 3.2). Secret-key encryption only; the \
public mask a is expanded from a fresh 32-byte seed with ChaCha12 (the rand crate's StdRng; the \
best known attacks reach 7 rounds). Results are mod-switched to a smaller modulus after the \
product; they are only ever decrypted by the key holder.";

fn shared_ntt() -> Arc<Ntt> {
    static NTT: OnceLock<Arc<Ntt>> = OnceLock::new();
    NTT.get_or_init(|| {
        Arc::new(
            Ntt::new(RING_DEGREE, CIPHERTEXT_MODULUS)
                .expect("CIPHERTEXT_MODULUS is an NTT-friendly prime (checked by a test)"),
        )
    })
    .clone()
}

/// A parameter set: ring, ciphertext modulus q, plaintext modulus t, result modulus q'.
#[derive(Clone)]
pub struct Params {
    log2_t: u32,
    upload_bits: u32,
    product_bound: u64,
    max_out_block: usize,
    ntt: Arc<Ntt>,
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("n", &RING_DEGREE)
            .field("q", &CIPHERTEXT_MODULUS)
            .field("log2_t", &self.log2_t)
            .field("upload_bits", &self.upload_bits)
            .field("log2_result_modulus", &self.result_modulus_bits())
            .field("product_bound", &self.product_bound)
            .field("max_out_block", &self.max_out_block)
            .finish()
    }
}

impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        self.log2_t == other.log2_t
            && self.upload_bits == other.upload_bits
            && self.product_bound == other.product_bound
    }
}

impl Eq for Params {}

impl Params {
    /// Parameters for products W x whose every entry satisfies |(W x)_r| <= `max_abs_result`
    /// (for i8 weights and inputs: max_r |W_r|_1 * 128).
    ///
    /// t is the smallest power of two >= 2 * (2 * bound + 1): one bit more than exact
    /// decryption needs, so that a garbage result lands inside [-bound, bound] with probability
    /// at most 1/2 per coefficient and [`crate::decrypt_products`] rejects it. Fails when the
    /// noise budget cannot hold even one output row per ciphertext at this bound.
    pub fn for_product_bound(max_abs_result: u64) -> Result<Self, RlweError> {
        let too_large = RlweError::ProductBoundTooLarge {
            bound: max_abs_result,
            max_log2_t: MAX_LOG2_PLAINTEXT_MODULUS,
        };
        let needed = max_abs_result
            .checked_mul(4)
            .and_then(|v| v.checked_add(2))
            .ok_or(too_large.clone())?;
        let log2_t = needed.next_power_of_two().ilog2();
        if log2_t > MAX_LOG2_PLAINTEXT_MODULUS {
            return Err(too_large);
        }
        let mut params = Self {
            log2_t,
            upload_bits: MAX_UPLOAD_BITS,
            product_bound: max_abs_result,
            max_out_block: 0,
            ntt: shared_ntt(),
        };
        let target_rows = UPLOAD_ROUNDING_TARGET_ROWS.min(RING_DEGREE);
        // Fewer upload bits only add noise: take the fewest that keep the target rows exact.
        params.upload_bits = (params.result_modulus_bits()..MAX_UPLOAD_BITS)
            .find(|&bits| {
                let candidate = Self { upload_bits: bits, ..params.clone() };
                candidate.worst_case_noise_sigmas(target_rows) >= MIN_NOISE_SIGMAS
            })
            .unwrap_or(MAX_UPLOAD_BITS);
        let fits = |rows: usize| params.worst_case_noise_sigmas(rows) >= MIN_NOISE_SIGMAS;
        if !fits(1) {
            return Err(RlweError::NoiseBudgetExceeded {
                sigmas: params.worst_case_noise_sigmas(1),
                required: MIN_NOISE_SIGMAS,
            });
        }
        // Noise grows monotonically with the rows per ciphertext: binary search the largest.
        let (mut fitting, mut failing) = (1usize, RING_DEGREE + 1);
        while failing - fitting > 1 {
            let mid = (fitting + failing) / 2;
            if fits(mid) { fitting = mid } else { failing = mid }
        }
        params.max_out_block = fitting;
        Ok(params)
    }

    /// Parameters sized for one weight matrix (n_in columns, row major) and i8 inputs: the
    /// product bound is the matrix's own max_r |W_r|_1 * 128 instead of the i8 worst case
    /// 127 * 128 * n_in. Real weights sit far below the worst case (SmolLM2: 0.32 of it), so t
    /// is smaller and Delta = (q-1)/t larger: the noise budget grows by the square of that
    /// factor (crate README, "Rhombus"). Client and miner derive the same t from the public
    /// weights.
    pub fn for_weights(n_in: usize, weights_row_major: &[i8]) -> Result<Self, RlweError> {
        if n_in == 0 || weights_row_major.is_empty() {
            return Err(RlweError::EmptyMatrix { n_out: weights_row_major.len(), n_in });
        }
        if !weights_row_major.len().is_multiple_of(n_in) {
            return Err(RlweError::WrongLength {
                what: "weights",
                expected: weights_row_major.len().div_ceil(n_in) * n_in,
                actual: weights_row_major.len(),
            });
        }
        let l1 = |row: &[i8]| row.iter().map(|&w| u64::from(w.unsigned_abs())).sum::<u64>();
        let largest = weights_row_major.chunks_exact(n_in).map(l1).max().unwrap_or(0);
        Self::for_product_bound(largest * MAX_ABS_INPUT)
    }

    pub fn ring_degree(&self) -> usize {
        RING_DEGREE
    }

    pub fn ciphertext_modulus(&self) -> u64 {
        CIPHERTEXT_MODULUS
    }

    pub fn plaintext_modulus(&self) -> u64 {
        1 << self.log2_t
    }

    pub fn log2_plaintext_modulus(&self) -> u32 {
        self.log2_t
    }

    /// Headroom bits h of packed results: q'' = t * 2^h (see [`MAX_PACKED_HEADROOM_BITS`]).
    pub fn packed_headroom_bits(&self) -> u32 {
        MAX_PACKED_HEADROOM_BITS.min(42 - self.log2_t)
    }

    /// log2 q'' of packed results.
    pub fn packed_result_modulus_bits(&self) -> u32 {
        self.log2_t + self.packed_headroom_bits()
    }

    /// log2 q': results travel modulo q' = t * 2^MOD_SWITCH_HEADROOM_BITS, packed at this width.
    pub fn result_modulus_bits(&self) -> u32 {
        self.log2_t + MOD_SWITCH_HEADROOM_BITS
    }

    /// Bits per coefficient of an upload's b (b rounded from mod q to mod 2^upload_bits).
    pub fn upload_bits(&self) -> u32 {
        self.upload_bits
    }

    pub fn product_bound(&self) -> u64 {
        self.product_bound
    }

    /// The most output rows one result ciphertext may carry while every weight matrix within
    /// the product bound still decrypts exactly (checked at [`MIN_NOISE_SIGMAS`]).
    pub fn max_out_block(&self) -> usize {
        self.max_out_block
    }

    /// Decryption noise margin, in standard deviations, of a result ciphertext carrying
    /// `out_block` rows of the worst weights the product bound allows (exact decryption
    /// needs at least [`MIN_NOISE_SIGMAS`]).
    pub fn worst_case_noise_sigmas(&self, out_block: usize) -> f64 {
        self.noise_sigmas(out_block as f64 * self.worst_row_energy())
    }

    pub fn security_note() -> &'static str {
        SECURITY_NOTE
    }

    /// Delta = (q - 1) / t, exact because q = 1 mod t.
    pub(crate) fn delta(&self) -> u64 {
        (CIPHERTEXT_MODULUS - 1) >> self.log2_t
    }

    /// Checks that something made for (2^log2_t, upload_bits) belongs to these parameters.
    pub(crate) fn check_made_for(
        &self,
        what: &'static str,
        log2_t: u32,
        upload_bits: u32,
    ) -> Result<(), RlweError> {
        if log2_t != self.log2_t {
            return Err(RlweError::WrongParameters { what, expected: self.log2_t, found: log2_t });
        }
        if upload_bits != self.upload_bits {
            return Err(RlweError::WrongUploadBits {
                what,
                expected: self.upload_bits,
                found: upload_bits,
            });
        }
        Ok(())
    }

    pub(crate) fn ntt(&self) -> &Ntt {
        &self.ntt
    }

    /// sum_k W[r][k]^2 <= max|w| * |W_r|_1 <= (127/128) * bound for every row inside the bound.
    pub(crate) fn worst_row_energy(&self) -> f64 {
        (MAX_ABS_WEIGHT as f64 / MAX_ABS_INPUT as f64) * self.product_bound as f64
    }

    /// Margin, in standard deviations, of a useful result coefficient whose weights have
    /// `weight_energy` = sum of the squares of all weights of its output block (every weight of
    /// the block meets every error coefficient once in the negacyclic product).
    ///
    /// In units of q': the upload error scaled down, energy times
    /// (q'/q)^2 var(e) + (q'/2^upload_bits)^2 / 12 (fresh error plus the uniform rounding of the
    /// compressed upload), plus the mod switch rounding r_b + sum_i r_a,i s_i, sub-Gaussian with proxy (N + 1)/12 whatever the
    /// ternary secret; decryption is exact while the total stays below Delta'/2 = 2^(h-1),
    /// minus 1 for the deterministic 2^h * m / q term.
    pub(crate) fn noise_sigmas(&self, weight_energy: f64) -> f64 {
        self.noise_sigmas_with(weight_energy, 0.0, MOD_SWITCH_HEADROOM_BITS)
    }

    /// Worst-case margin of a packed result (crate `packing`): the product noise of
    /// `out_block` rows of the worst weights, plus the key-switch noise of packing
    /// ciphertexts whose useful coefficients sit at stride `in_block` (a power of two, log2 =
    /// L levels of the tree) with gadget digits of `digit_bits` bits. The noise a key switch
    /// adds at level l is doubled by each of the L - l levels above it, so the proxy is
    /// key_switch_noise_proxy(B) * (4^L - 1) / 3 in units of q; the product noise itself is not
    /// amplified (the inputs are multiplied by in_block^-1 mod q first).
    pub fn packed_worst_case_noise_sigmas(
        &self,
        out_block: usize,
        in_block: usize,
        digit_bits: u32,
    ) -> f64 {
        let levels = in_block.trailing_zeros() as i32;
        let packing =
            crate::galois::key_switch_noise_proxy(digit_bits) * (4f64.powi(levels) - 1.0) / 3.0;
        self.noise_sigmas_with(
            out_block as f64 * self.worst_row_energy(),
            packing,
            self.packed_headroom_bits(),
        )
    }

    /// Margin of a Rhombus result (crate `rhombus`), in standard deviations, in units of
    /// q'' = t 2^packed_headroom_bits. The three miner-side noise sources, in units of q:
    ///
    /// * `fresh_energy`: sum of the squares of the integers that multiply the upload's error
    ///   coefficients (each meets one: g0^2 times the energy of the rows of one accumulator
    ///   congruent mod g0, see the crate README), times var(e) plus the upload rounding;
    /// * `input_key_switch_energy`: sum over the g0 - 1 input conjugates of |omega'_j|^2, the
    ///   squared norms of the twisted weight polynomials that multiply each conjugate's
    ///   key-switch noise (proxy [`crate::key_switch_noise_proxy`]`(input_digit_bits)` per
    ///   coefficient, the coefficients treated as independent: the standard heuristic);
    /// * the output tree: `tree_levels` merges on a row's longest path to the root, one key
    ///   switch each, each one's noise doubled by the merges above it: proxy
    ///   key_switch_noise_proxy(tree_digit_bits) (4^L - 1) / 3 (the nodes with one side
    ///   empty pass their content up unchanged and add nothing).
    ///
    /// Plus the rounding of the switch to q'', (N + 1)/12.
    #[allow(clippy::too_many_arguments)]
    pub fn rhombus_noise_sigmas(
        &self,
        upload_bits: u32,
        fresh_energy: f64,
        input_key_switch_energy: f64,
        input_digit_bits: u32,
        tree_levels: u32,
        tree_digit_bits: u32,
    ) -> f64 {
        let input = if input_key_switch_energy > 0.0 {
            crate::galois::key_switch_noise_proxy(input_digit_bits) * input_key_switch_energy
        } else {
            0.0
        };
        let tree = crate::galois::key_switch_noise_proxy(tree_digit_bits)
            * (4f64.powi(tree_levels as i32) - 1.0)
            / 3.0;
        self.noise_sigmas_general(
            fresh_energy,
            input + tree,
            self.packed_headroom_bits(),
            upload_bits,
        )
    }

    /// [`Self::noise_sigmas`] with `extra` more variance proxy in units of q (before the switch).
    fn noise_sigmas_with(&self, weight_energy: f64, extra: f64, headroom_bits: u32) -> f64 {
        self.noise_sigmas_general(weight_energy, extra, headroom_bits, self.upload_bits)
    }

    fn noise_sigmas_general(
        &self,
        weight_energy: f64,
        extra: f64,
        headroom_bits: u32,
        upload_bits: u32,
    ) -> f64 {
        let result_modulus = 2f64.powi((self.log2_t + headroom_bits) as i32);
        let scale = result_modulus / CIPHERTEXT_MODULUS as f64;
        let upload_rounding = (result_modulus / 2f64.powi(upload_bits as i32)).powi(2) / 12.0;
        // The miner's decompression rounds to an integer too: 1/12 more in units of q.
        let fresh = (scale * scale * (ERROR_VARIANCE + 1.0 / 12.0) + upload_rounding)
            * weight_energy
            + scale * scale * extra;
        // A rounding error uniform on [-1/2, 1/2] is strictly sub-Gaussian: proxy = variance = 1/12.
        let rounding = (RING_DEGREE as f64 + 1.0) / 12.0;
        let budget = 2f64.powi(headroom_bits as i32 - 1) - 1.0;
        budget / (fresh + rounding).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_is_the_documented_ntt_friendly_prime() {
        assert_eq!(CIPHERTEXT_MODULUS, 4_194_295 * (1u64 << 32) + 1);
        assert_eq!(64 - CIPHERTEXT_MODULUS.leading_zeros(), CIPHERTEXT_MODULUS_BITS);
        assert_eq!(CIPHERTEXT_MODULUS % (2 * RING_DEGREE as u64), 1);
        assert!(Ntt::new(RING_DEGREE, CIPHERTEXT_MODULUS).is_some());
    }

    #[test]
    fn plaintext_modulus_has_a_guard_bit() {
        let params = Params::for_product_bound(1000).unwrap();
        assert_eq!(params.plaintext_modulus(), 4096);
        let params = Params::for_product_bound(1023).unwrap();
        assert_eq!(params.plaintext_modulus(), 4096);
        let params = Params::for_product_bound(1024).unwrap();
        assert_eq!(params.plaintext_modulus(), 8192);
    }

    #[test]
    fn widest_i8_products_fit_with_useful_blocks() {
        let bound = MAX_ABS_WEIGHT * MAX_ABS_INPUT * 8192;
        let params = Params::for_product_bound(bound).unwrap();
        assert_eq!(params.log2_plaintext_modulus(), 29);
        assert!(params.max_out_block() >= 256, "{params:?}");
    }

    #[test]
    fn too_large_bounds_are_rejected() {
        assert!(matches!(
            Params::for_product_bound(1 << 31),
            Err(RlweError::ProductBoundTooLarge { .. })
        ));
        assert!(matches!(
            Params::for_product_bound(u64::MAX),
            Err(RlweError::ProductBoundTooLarge { .. })
        ));
    }
}
