//! Cheetah-style coefficient encoding of matrix-vector products (USENIX Security 2022).
//!
//! Inputs are cut into blocks of `in_block` values, each encrypted as sum_k x_k X^k. Outputs are
//! cut into blocks of `out_block` rows; weight block (i, j) is encoded as
//! sum_{r,k} W[r][k] X^(r*in_block + in_block - 1 - k), so coefficient r*in_block + in_block - 1
//! of the product is the dot product of row r with the input block. Because
//! in_block * out_block <= N, the highest degree reached is < N + in_block - 1 and the
//! negacyclic wrap lands strictly below in_block - 1, the lowest useful position.

use rand_core::CryptoRng;
use rayon::prelude::*;

use crate::error::RlweError;
use crate::params::{MAX_ABS_INPUT, MIN_NOISE_SIGMAS, Params, RING_DEGREE};
use crate::poly::{
    LAZY_TERMS, mul_accumulate_wide, reduce_wide, switch_from_power_of_two, to_residue,
};
use crate::rlwe::{
    ResultCiphertext, SecretKey, UploadCiphertext, decrypt_rows, encrypt_coefficients,
    expand_mask_ntt,
};
use crate::wire::{result_ciphertext_bytes, upload_ciphertext_bytes};

/// Input vectors multiplied together per task in a batch: their accumulators (2 x 16 KiB each)
/// stay in the L2 cache while each weight block is read once for all of them.
const VECTORS_PER_TASK: usize = 8;

/// Input vectors of a batch are expanded and transformed (32 KiB per upload ciphertext) in
/// chunks of at most this many bytes, so a long prefill cannot exhaust the miner's memory.
const TRANSFORMED_INPUTS_BUDGET_BYTES: usize = 64 << 20;

/// A product ciphertext (a, b) mod q in coefficient form, before the mod switch.
pub(crate) type RawCiphertext = (Vec<u64>, Vec<u64>);

/// How an n_out x n_in product is cut into ciphertexts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixLayout {
    n_in: usize,
    n_out: usize,
    in_block: usize,
    out_block: usize,
    log2_t: u32,
    upload_bits: u32,
    result_bits: u32,
}

impl MatrixLayout {
    /// The block sizes that minimise bytes on the wire (uploads plus downloads) for one input
    /// vector; ties go to fewer ciphertext products.
    pub fn choose(params: &Params, n_in: usize, n_out: usize) -> Result<Self, RlweError> {
        if n_in == 0 || n_out == 0 {
            return Err(RlweError::EmptyMatrix { n_out, n_in });
        }
        let mut best: Option<(usize, usize, Self)> = None;
        for uploads in 1..=n_in {
            let in_block = n_in.div_ceil(uploads);
            if in_block > RING_DEGREE || n_in.div_ceil(in_block) != uploads {
                continue;
            }
            let widest = n_out.min(RING_DEGREE / in_block).min(params.max_out_block());
            // Same ciphertext count with evenly filled blocks.
            let out_block = n_out.div_ceil(n_out.div_ceil(widest));
            let layout = Self::with_blocks(params, n_in, n_out, in_block, out_block)?;
            let cost = (
                layout.upload_bytes() + layout.download_bytes(),
                layout.upload_cts() * layout.download_cts(),
            );
            if best.as_ref().is_none_or(|(bytes, products, _)| cost < (*bytes, *products)) {
                best = Some((cost.0, cost.1, layout));
            }
        }
        Ok(best.expect("uploads = n_in (one input per block) always yields a layout").2)
    }

    /// A layout with explicit block sizes (in_block * out_block <= N and out_block within the
    /// noise budget of `params`).
    pub fn with_blocks(
        params: &Params,
        n_in: usize,
        n_out: usize,
        in_block: usize,
        out_block: usize,
    ) -> Result<Self, RlweError> {
        if n_in == 0 || n_out == 0 {
            return Err(RlweError::EmptyMatrix { n_out, n_in });
        }
        let fits_ring = in_block >= 1
            && out_block >= 1
            && in_block <= n_in
            && out_block <= n_out
            && in_block * out_block <= RING_DEGREE;
        if !fits_ring || out_block > params.max_out_block() {
            return Err(RlweError::LayoutMismatch {
                what: "block sizes",
                detail: format!(
                    "{out_block} x {in_block} blocks for a {n_out} x {n_in} matrix, ring degree \
                     {RING_DEGREE}, at most {} rows per result",
                    params.max_out_block()
                ),
            });
        }
        Ok(Self {
            n_in,
            n_out,
            in_block,
            out_block,
            log2_t: params.log2_plaintext_modulus(),
            upload_bits: params.upload_bits(),
            result_bits: params.result_modulus_bits(),
        })
    }

    pub fn n_in(&self) -> usize {
        self.n_in
    }

    pub fn n_out(&self) -> usize {
        self.n_out
    }

    pub fn in_block(&self) -> usize {
        self.in_block
    }

    pub fn out_block(&self) -> usize {
        self.out_block
    }

    /// Upload ciphertexts per input vector.
    pub fn upload_cts(&self) -> usize {
        self.n_in.div_ceil(self.in_block)
    }

    /// Result ciphertexts per input vector.
    pub fn download_cts(&self) -> usize {
        self.n_out.div_ceil(self.out_block)
    }

    /// Output rows carried by result ciphertext `block` (the last one may be short).
    pub fn rows_in_block(&self, block: usize) -> usize {
        self.out_block.min(self.n_out.saturating_sub(block * self.out_block))
    }

    /// Bytes sent client -> miner per input vector.
    pub fn upload_bytes(&self) -> usize {
        self.upload_cts() * upload_ciphertext_bytes(self.upload_bits)
    }

    /// Bytes sent miner -> client per input vector.
    pub fn download_bytes(&self) -> usize {
        (0..self.download_cts())
            .map(|block| result_ciphertext_bytes(self.result_bits, self.rows_in_block(block)))
            .sum()
    }

    pub(crate) fn check_params(
        &self,
        what: &'static str,
        params: &Params,
    ) -> Result<(), RlweError> {
        params.check_made_for(what, self.log2_t, self.upload_bits)
    }
}

/// A public weight matrix pre-encoded in NTT form (once, at model load) for one layout.
pub struct EncodedMatrix {
    params: Params,
    layout: MatrixLayout,
    /// Block (out i, in j) at [(i * upload_cts + j) * N ..][..N]: NTT of the centred weight
    /// polynomial times N^-1, so products need no normalisation pass.
    blocks: Vec<u64>,
}

/// An upload ciphertext with its mask expanded, both halves in NTT form.
struct TransformedInput {
    a: Vec<u64>,
    b: Vec<u64>,
}

impl EncodedMatrix {
    /// Encodes `weights` (n_out x n_in, row major). Fails if a row could push a product beyond
    /// the bound of `params` or if an output block would exceed the noise budget.
    pub fn encode(
        params: &Params,
        layout: &MatrixLayout,
        weights_row_major: &[i8],
    ) -> Result<Self, RlweError> {
        layout.check_params("matrix layout", params)?;
        let (n_in, n_out) = (layout.n_in, layout.n_out);
        if weights_row_major.len() != n_in * n_out {
            return Err(RlweError::WrongLength {
                what: "weights",
                expected: n_in * n_out,
                actual: weights_row_major.len(),
            });
        }
        let rows: Vec<&[i8]> = weights_row_major.chunks_exact(n_in).collect();
        for (row, weights) in rows.iter().enumerate() {
            let row_bound =
                weights.iter().map(|&w| u64::from(w.unsigned_abs())).sum::<u64>() * MAX_ABS_INPUT;
            if row_bound > params.product_bound() {
                return Err(RlweError::WeightsExceedBound {
                    row,
                    row_bound,
                    bound: params.product_bound(),
                });
            }
        }
        for block in rows.chunks(layout.out_block) {
            let energy: f64 =
                block.iter().flat_map(|r| r.iter()).map(|&w| f64::from(w).powi(2)).sum();
            let sigmas = params.noise_sigmas(energy);
            if sigmas < MIN_NOISE_SIGMAS {
                return Err(RlweError::NoiseBudgetExceeded { sigmas, required: MIN_NOISE_SIGMAS });
            }
        }
        let uploads = layout.upload_cts();
        let mut blocks = vec![0u64; layout.download_cts() * uploads * RING_DEGREE];
        blocks.par_chunks_mut(RING_DEGREE).enumerate().for_each(|(index, poly)| {
            let (out_index, in_index) = (index / uploads, index % uploads);
            let row_range =
                out_index * layout.out_block..n_out.min((out_index + 1) * layout.out_block);
            let col_start = in_index * layout.in_block;
            let col_end = n_in.min(col_start + layout.in_block);
            for (local_row, row) in rows[row_range].iter().enumerate() {
                for (local_col, &w) in row[col_start..col_end].iter().enumerate() {
                    let degree = local_row * layout.in_block + layout.in_block - 1 - local_col;
                    poly[degree] = to_residue(i64::from(w));
                }
            }
            params.ntt().forward(poly);
            params.ntt().scale_by_inverse_n(poly);
        });
        Ok(Self { params: params.clone(), layout: layout.clone(), blocks })
    }

    pub fn layout(&self) -> &MatrixLayout {
        &self.layout
    }

    /// Resident size of the encoded weights.
    pub fn memory_bytes(&self) -> usize {
        self.blocks.len() * size_of::<u64>()
    }

    /// W x for one encrypted input vector: one result ciphertext per output block.
    pub fn apply(&self, inputs: &[UploadCiphertext]) -> Result<Vec<ResultCiphertext>, RlweError> {
        let mut results = self.apply_slices(&[inputs])?;
        Ok(results.pop().unwrap_or_default())
    }

    /// W x for many input vectors (prefill tokens, many users) in parallel; the weights are
    /// streamed once per output block for all vectors.
    pub fn apply_batch(
        &self,
        inputs: &[Vec<UploadCiphertext>],
    ) -> Result<Vec<Vec<ResultCiphertext>>, RlweError> {
        let slices: Vec<&[UploadCiphertext]> = inputs.iter().map(Vec::as_slice).collect();
        self.apply_slices(&slices)
    }

    fn apply_slices(
        &self,
        vectors: &[&[UploadCiphertext]],
    ) -> Result<Vec<Vec<ResultCiphertext>>, RlweError> {
        for inputs in vectors {
            self.check_inputs(inputs)?;
        }
        let transformed_bytes = self.layout.upload_cts() * 2 * RING_DEGREE * size_of::<u64>();
        let in_flight = (TRANSFORMED_INPUTS_BUDGET_BYTES / transformed_bytes).max(VECTORS_PER_TASK);
        let mut results = Vec::with_capacity(vectors.len());
        for chunk in vectors.chunks(in_flight) {
            results.extend(self.apply_in_memory(chunk));
        }
        Ok(results)
    }

    /// [`Self::apply_slices`] for checked inputs whose transforms all fit in memory at once.
    fn apply_in_memory(&self, vectors: &[&[UploadCiphertext]]) -> Vec<Vec<ResultCiphertext>> {
        let uploads = self.layout.upload_cts();
        let transformed: Vec<TransformedInput> = vectors
            .par_iter()
            .flat_map_iter(|inputs| inputs.iter())
            .map(|ct| self.transform(ct))
            .collect();
        let downloads = self.layout.download_cts();
        let count = vectors.len();
        let groups = count.div_ceil(VECTORS_PER_TASK);
        // Output-block-major order: consecutive tasks share a row of weight blocks.
        let per_task: Vec<Vec<ResultCiphertext>> = (0..downloads * groups)
            .into_par_iter()
            .map(|task| {
                let (out_index, group) = (task / groups, task % groups);
                let first = group * VECTORS_PER_TASK;
                let group_inputs =
                    &transformed[first * uploads..count.min(first + VECTORS_PER_TASK) * uploads];
                self.output_block(group_inputs, out_index)
            })
            .collect();
        let mut results: Vec<Vec<ResultCiphertext>> =
            (0..count).map(|_| Vec::with_capacity(downloads)).collect();
        for (task, cts) in per_task.into_iter().enumerate() {
            let first = (task % groups) * VECTORS_PER_TASK;
            for (offset, ct) in cts.into_iter().enumerate() {
                results[first + offset].push(ct);
            }
        }
        results
    }

    fn check_inputs(&self, inputs: &[UploadCiphertext]) -> Result<(), RlweError> {
        if inputs.len() != self.layout.upload_cts() {
            return Err(RlweError::WrongLength {
                what: "upload ciphertexts per input vector",
                expected: self.layout.upload_cts(),
                actual: inputs.len(),
            });
        }
        for ct in inputs {
            self.params.check_made_for("upload ciphertext", ct.log2_t, ct.upload_bits)?;
            if ct.in_block != self.layout.in_block {
                return Err(RlweError::LayoutMismatch {
                    what: "upload ciphertext",
                    detail: format!(
                        "made for input blocks of {}, the matrix uses {}",
                        ct.in_block, self.layout.in_block
                    ),
                });
            }
        }
        Ok(())
    }

    fn transform(&self, ct: &UploadCiphertext) -> TransformedInput {
        let ntt = self.params.ntt();
        let mut b: Vec<u64> =
            ct.b.iter().map(|&b| switch_from_power_of_two(b, ct.upload_bits)).collect();
        ntt.forward(&mut b);
        TransformedInput { a: expand_mask_ntt(&ct.seed), b }
    }

    /// Result ciphertext `out_index` for each vector of `inputs` (upload_cts transformed
    /// inputs per vector, vector after vector). Each weight block is loaded once for the whole
    /// group while its accumulators stay in cache: a small GEMM rather than repeated GEMVs.
    fn output_block(&self, inputs: &[TransformedInput], out_index: usize) -> Vec<ResultCiphertext> {
        self.output_block_raw(inputs, out_index)
            .into_iter()
            .map(|(acc_a, acc_b)| {
                ResultCiphertext::switch_down(
                    &self.params,
                    self.layout.in_block,
                    self.layout.out_block,
                    self.layout.rows_in_block(out_index),
                    &acc_a,
                    &acc_b,
                )
            })
            .collect()
    }

    /// Product ciphertexts (a, b) mod q in coefficient form, before the mod switch, for one
    /// input vector: one per output block (for output packing, [`crate::packing`]).
    pub(crate) fn raw_products(
        &self,
        inputs: &[UploadCiphertext],
    ) -> Result<Vec<RawCiphertext>, RlweError> {
        self.check_inputs(inputs)?;
        let transformed: Vec<TransformedInput> =
            inputs.par_iter().map(|ct| self.transform(ct)).collect();
        Ok((0..self.layout.download_cts())
            .into_par_iter()
            .map(|out_index| {
                self.output_block_raw(&transformed, out_index).pop().expect("one vector")
            })
            .collect())
    }

    pub(crate) fn params(&self) -> &Params {
        &self.params
    }

    /// [`Self::output_block`] before the mod switch: (a, b) mod q, coefficient form.
    fn output_block_raw(
        &self,
        inputs: &[TransformedInput],
        out_index: usize,
    ) -> Vec<RawCiphertext> {
        let ntt = self.params.ntt();
        let uploads = self.layout.upload_cts();
        let vectors = inputs.len() / uploads;
        let mut wide_a = vec![0u128; vectors * RING_DEGREE];
        let mut wide_b = vec![0u128; vectors * RING_DEGREE];
        let weight_row = &self.blocks[out_index * uploads * RING_DEGREE..][..uploads * RING_DEGREE];
        let weight_blocks: Vec<&[u64]> = weight_row.chunks_exact(RING_DEGREE).collect();
        for (chunk_index, chunk) in weight_blocks.chunks(LAZY_TERMS).enumerate() {
            if chunk_index > 0 {
                wide_a
                    .iter_mut()
                    .chain(wide_b.iter_mut())
                    .for_each(|x| *x = u128::from(reduce_wide(*x)));
            }
            for (offset, weights) in chunk.iter().enumerate() {
                let in_index = chunk_index * LAZY_TERMS + offset;
                let accumulators =
                    wide_a.chunks_exact_mut(RING_DEGREE).zip(wide_b.chunks_exact_mut(RING_DEGREE));
                for (vector, (acc_a, acc_b)) in accumulators.enumerate() {
                    let input = &inputs[vector * uploads + in_index];
                    mul_accumulate_wide(acc_a, acc_b, &input.a, &input.b, weights);
                }
            }
        }
        let mut acc_a: Vec<u64> = wide_a.into_iter().map(reduce_wide).collect();
        let mut acc_b: Vec<u64> = wide_b.into_iter().map(reduce_wide).collect();
        acc_a
            .chunks_exact_mut(RING_DEGREE)
            .zip(acc_b.chunks_exact_mut(RING_DEGREE))
            .map(|(acc_a, acc_b)| {
                ntt.inverse_unscaled(acc_a);
                ntt.inverse_unscaled(acc_b);
                (acc_a.to_vec(), acc_b.to_vec())
            })
            .collect()
    }
}

/// Client: encrypts an input vector of length n_in block by block.
pub fn encrypt_vector<R: CryptoRng + ?Sized>(
    key: &SecretKey,
    layout: &MatrixLayout,
    x: &[i8],
    rng: &mut R,
) -> Result<Vec<UploadCiphertext>, RlweError> {
    layout.check_params("matrix layout", key.params())?;
    if x.len() != layout.n_in {
        return Err(RlweError::WrongLength {
            what: "input vector",
            expected: layout.n_in,
            actual: x.len(),
        });
    }
    Ok(x.chunks(layout.in_block)
        .map(|block| encrypt_coefficients(key, block, layout.in_block, rng))
        .collect())
}

/// Client: decrypts the n_out dot products W x and checks each against `max_abs_product`
/// (the matrix's largest row |W_r|_1 times 128; values above the parameters' product bound are
/// capped to it). An honest miner always passes; a garbage result passes with probability
/// (2 * bound + 1) / t <= 1/2 per value (see [`Params::for_product_bound`]), so a wrong key or a
/// made-up result is reported as [`RlweError::ResultOutOfBound`].
pub fn decrypt_products(
    key: &SecretKey,
    layout: &MatrixLayout,
    results: &[ResultCiphertext],
    max_abs_product: u64,
) -> Result<Vec<i64>, RlweError> {
    let params = key.params();
    layout.check_params("matrix layout", params)?;
    if results.len() != layout.download_cts() {
        return Err(RlweError::WrongLength {
            what: "result ciphertexts",
            expected: layout.download_cts(),
            actual: results.len(),
        });
    }
    let bound = max_abs_product.min(params.product_bound());
    let mut products = Vec::with_capacity(layout.n_out);
    for (block, ct) in results.iter().enumerate() {
        if ct.log2_t != layout.log2_t {
            return Err(RlweError::WrongParameters {
                what: "result ciphertext",
                expected: layout.log2_t,
                found: ct.log2_t,
            });
        }
        let expected_rows = layout.rows_in_block(block);
        if (ct.in_block, ct.out_block, ct.rows())
            != (layout.in_block, layout.out_block, expected_rows)
        {
            return Err(RlweError::LayoutMismatch {
                what: "result ciphertext",
                detail: format!(
                    "block {block} has {} rows of {} x {} blocks, layout expects {expected_rows} rows of {} x {}",
                    ct.rows(),
                    ct.out_block,
                    ct.in_block,
                    layout.out_block,
                    layout.in_block
                ),
            });
        }
        for value in decrypt_rows(key, ct) {
            if value.unsigned_abs() > bound {
                return Err(RlweError::ResultOutOfBound { index: products.len(), value, bound });
            }
            products.push(value);
        }
    }
    Ok(products)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::params::MAX_ABS_WEIGHT;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    pub(crate) fn random_i8(rng: &mut ChaCha20Rng, len: usize, low: i8) -> Vec<i8> {
        (0..len).map(|_| (rng.next_u32() as u8 as i8).max(low)).collect()
    }

    pub(crate) fn plain_products(weights: &[i8], x: &[i8]) -> Vec<i64> {
        weights
            .chunks_exact(x.len())
            .map(|row| row.iter().zip(x).map(|(&w, &v)| i64::from(w) * i64::from(v)).sum())
            .collect()
    }

    /// max_r |W_r|_1 * 128, the bound the client checks.
    fn row_bound(weights: &[i8], n_in: usize) -> u64 {
        let l1 = |row: &[i8]| row.iter().map(|w| u64::from(w.unsigned_abs())).sum::<u64>();
        weights.chunks_exact(n_in).map(l1).max().unwrap_or(0) * MAX_ABS_INPUT
    }

    fn i8_bound(n_in: usize) -> u64 {
        MAX_ABS_WEIGHT * MAX_ABS_INPUT * n_in as u64
    }

    /// Encrypts, multiplies (through the wire formats) and decrypts each of `inputs`.
    fn encrypted_products(
        params: &Params,
        n_out: usize,
        weights: &[i8],
        inputs: &[Vec<i8>],
    ) -> Vec<Vec<i64>> {
        let layout = MatrixLayout::choose(params, inputs[0].len(), n_out).unwrap();
        encrypted_products_with(params, &layout, weights, inputs)
    }

    fn encrypted_products_with(
        params: &Params,
        layout: &MatrixLayout,
        weights: &[i8],
        inputs: &[Vec<i8>],
    ) -> Vec<Vec<i64>> {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let key = SecretKey::generate(params, &mut rng);
        let matrix = EncodedMatrix::encode(params, layout, weights).unwrap();
        let uploads: Vec<Vec<UploadCiphertext>> = inputs
            .iter()
            .map(|x| {
                encrypt_vector(&key, layout, x, &mut rng)
                    .unwrap()
                    .iter()
                    .map(|ct| UploadCiphertext::from_bytes(params, &ct.to_bytes()).unwrap())
                    .collect()
            })
            .collect();
        matrix
            .apply_batch(&uploads)
            .unwrap()
            .iter()
            .map(|results| {
                let received: Vec<ResultCiphertext> = results
                    .iter()
                    .map(|ct| ResultCiphertext::from_bytes(params, layout, &ct.to_bytes()).unwrap())
                    .collect();
                decrypt_products(&key, layout, &received, row_bound(weights, layout.n_in()))
                    .unwrap()
            })
            .collect()
    }

    fn check_shape(n_out: usize, n_in: usize) {
        let mut rng = ChaCha20Rng::seed_from_u64((n_out * 100_000 + n_in) as u64);
        let params = Params::for_product_bound(i8_bound(n_in)).unwrap();
        let weights = random_i8(&mut rng, n_out * n_in, -127);
        let inputs = vec![
            random_i8(&mut rng, n_in, i8::MIN),
            vec![i8::MIN; n_in],
            (0..n_in).map(|k| if k % 2 == 0 { i8::MAX } else { i8::MIN }).collect(),
        ];
        let decrypted = encrypted_products(&params, n_out, &weights, &inputs);
        for (x, products) in inputs.iter().zip(&decrypted) {
            assert_eq!(products, &plain_products(&weights, x), "{n_out} x {n_in}");
        }
    }

    #[test]
    fn smollm2_attention_shape_is_exact() {
        check_shape(576, 576);
    }

    #[test]
    fn smollm2_fused_qkv_shape_is_exact() {
        check_shape(960, 576);
    }

    #[test]
    fn smollm2_fused_gate_up_shape_is_exact() {
        check_shape(3072, 576);
    }

    #[test]
    fn smollm2_down_shape_is_exact() {
        check_shape(576, 1536);
    }

    #[test]
    fn wide_2048_by_8192_is_exact() {
        check_shape(2048, 8192);
    }

    #[test]
    fn worst_case_magnitudes_at_the_widest_input_are_exact() {
        let (n_out, n_in) = (96, 8192);
        let params = Params::for_product_bound(i8_bound(n_in)).unwrap();
        // Rows of +-127 meet inputs of -128 (extreme products) and alternating signs.
        let weights: Vec<i8> = (0..n_out * n_in)
            .map(|i| if (i / n_in) % 3 == 0 || i % 2 == 0 { 127 } else { -127 })
            .collect();
        let inputs = vec![
            vec![i8::MIN; n_in],
            (0..n_in).map(|k| if k % 2 == 0 { i8::MIN } else { 127 }).collect(),
        ];
        let decrypted = encrypted_products(&params, n_out, &weights, &inputs);
        let extreme = plain_products(&weights, &inputs[0]);
        assert!(extreme.iter().any(|p| p.unsigned_abs() == params.product_bound()));
        for (x, products) in inputs.iter().zip(&decrypted) {
            assert_eq!(products, &plain_products(&weights, x));
        }
    }

    #[test]
    fn tiny_and_ragged_shapes_are_exact() {
        for (n_out, n_in) in [(1, 1), (3, 5), (7, 2049), (2049, 3)] {
            let mut rng = ChaCha20Rng::seed_from_u64(n_in as u64);
            let params = Params::for_product_bound(i8_bound(n_in)).unwrap();
            let weights = random_i8(&mut rng, n_out * n_in, -127);
            let x = random_i8(&mut rng, n_in, i8::MIN);
            let decrypted = encrypted_products(&params, n_out, &weights, std::slice::from_ref(&x));
            assert_eq!(decrypted[0], plain_products(&weights, &x), "{n_out} x {n_in}");
        }
    }

    #[test]
    fn batches_larger_than_a_task_group_keep_their_order() {
        let (n_out, n_in) = (300, 700);
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let params = Params::for_product_bound(i8_bound(n_in)).unwrap();
        let weights = random_i8(&mut rng, n_out * n_in, -127);
        let inputs: Vec<Vec<i8>> =
            (0..2 * VECTORS_PER_TASK + 3).map(|_| random_i8(&mut rng, n_in, i8::MIN)).collect();
        let decrypted = encrypted_products(&params, n_out, &weights, &inputs);
        for (x, products) in inputs.iter().zip(&decrypted) {
            assert_eq!(products, &plain_products(&weights, x));
        }
    }

    #[test]
    fn more_input_blocks_than_lazy_terms_and_vectors_than_fit_in_memory_are_exact() {
        let (n_out, n_in) = (9, 2 * LAZY_TERMS + 5);
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let params = Params::for_product_bound(i8_bound(n_in)).unwrap();
        let layout = MatrixLayout::with_blocks(&params, n_in, n_out, 1, n_out).unwrap();
        let in_flight = TRANSFORMED_INPUTS_BUDGET_BYTES / (n_in * 2 * RING_DEGREE * 8);
        assert!(in_flight <= VECTORS_PER_TASK, "the batch below must span two chunks");
        let weights = random_i8(&mut rng, n_out * n_in, -127);
        let mut inputs = vec![vec![i8::MIN; n_in]];
        inputs.extend((0..VECTORS_PER_TASK + 1).map(|_| random_i8(&mut rng, n_in, i8::MIN)));
        let decrypted = encrypted_products_with(&params, &layout, &weights, &inputs);
        for (x, products) in inputs.iter().zip(&decrypted) {
            assert_eq!(products, &plain_products(&weights, x));
        }
    }

    #[test]
    fn miner_and_client_types_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Params>();
        shareable::<SecretKey>();
        shareable::<MatrixLayout>();
        shareable::<EncodedMatrix>();
        shareable::<UploadCiphertext>();
        shareable::<ResultCiphertext>();
    }

    #[test]
    fn layout_blocks_fit_the_ring_and_minimise_bytes() {
        let params = Params::for_product_bound(i8_bound(576)).unwrap();
        let layout = MatrixLayout::choose(&params, 576, 576).unwrap();
        assert!(layout.in_block() * layout.out_block() <= RING_DEGREE);
        let total = layout.upload_bytes() + layout.download_bytes();
        for in_block in [1, 8, 32, 64, 576] {
            let out_block = (RING_DEGREE / in_block).min(576).min(params.max_out_block());
            let other = MatrixLayout::with_blocks(&params, 576, 576, in_block, out_block).unwrap();
            assert!(total <= other.upload_bytes() + other.download_bytes());
        }
        assert!(MatrixLayout::with_blocks(&params, 576, 576, 64, 33).is_err());
        assert!(matches!(MatrixLayout::choose(&params, 0, 5), Err(RlweError::EmptyMatrix { .. })));
    }

    struct Session {
        params: Params,
        key: SecretKey,
        layout: MatrixLayout,
        matrix: EncodedMatrix,
        weights: Vec<i8>,
        x: Vec<i8>,
        uploads: Vec<UploadCiphertext>,
    }

    fn session(n_out: usize, n_in: usize) -> Session {
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let params = Params::for_product_bound(i8_bound(n_in)).unwrap();
        let key = SecretKey::generate(&params, &mut rng);
        let layout = MatrixLayout::choose(&params, n_in, n_out).unwrap();
        let weights = random_i8(&mut rng, n_out * n_in, -127);
        let matrix = EncodedMatrix::encode(&params, &layout, &weights).unwrap();
        let x = random_i8(&mut rng, n_in, i8::MIN);
        let uploads = encrypt_vector(&key, &layout, &x, &mut rng).unwrap();
        Session { params, key, layout, matrix, weights, x, uploads }
    }

    /// The measured noise stays within the sub-Gaussian model of `Params::noise_sigmas`
    /// (whose rounding proxy assumes every secret coefficient nonzero: std 13.1; a uniform
    /// ternary secret gives about 10.7).
    #[test]
    fn measured_noise_matches_the_model() {
        for (n_out, n_in) in [(576, 576), (256, 8192)] {
            let mut rng = ChaCha20Rng::seed_from_u64(21);
            let params = Params::for_product_bound(i8_bound(n_in)).unwrap();
            let key = SecretKey::generate(&params, &mut rng);
            let layout = MatrixLayout::choose(&params, n_in, n_out).unwrap();
            let weights: Vec<i8> = (0..n_out * n_in)
                .map(|_| if rng.next_u32() % 2 == 0 { 127 } else { -127 })
                .collect();
            let matrix = EncodedMatrix::encode(&params, &layout, &weights).unwrap();
            let x = random_i8(&mut rng, n_in, i8::MIN);
            let results =
                matrix.apply(&encrypt_vector(&key, &layout, &x, &mut rng).unwrap()).unwrap();
            let products = plain_products(&weights, &x);
            let noise: Vec<i64> = results
                .iter()
                .zip(products.chunks(layout.out_block()))
                .flat_map(|(ct, block)| crate::rlwe::noise_rows(&key, ct, block))
                .collect();
            let std =
                (noise.iter().map(|&e| (e * e) as f64).sum::<f64>() / noise.len() as f64).sqrt();
            let model_std = 127.0 / params.worst_case_noise_sigmas(layout.out_block());
            let largest = noise.iter().map(|e| e.unsigned_abs()).max().unwrap();
            assert!(
                (8.0..=model_std).contains(&std),
                "{n_out} x {n_in}: std {std}, model {model_std}"
            );
            assert!((largest as f64) < 6.0 * model_std, "{n_out} x {n_in}: largest {largest}");
        }
    }

    #[test]
    fn a_wrong_secret_key_fails_the_range_check() {
        let s = session(576, 576);
        let results = s.matrix.apply(&s.uploads).unwrap();
        assert_eq!(
            decrypt_products(&s.key, &s.layout, &results, row_bound(&s.weights, s.x.len()))
                .unwrap(),
            plain_products(&s.weights, &s.x)
        );
        let other_key = SecretKey::generate(&s.params, &mut ChaCha20Rng::seed_from_u64(1234));
        assert!(matches!(
            decrypt_products(&other_key, &s.layout, &results, row_bound(&s.weights, s.x.len())),
            Err(RlweError::ResultOutOfBound { .. })
        ));
    }

    #[test]
    fn garbage_results_fail_the_range_check() {
        let s = session(576, 576);
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mask = (1u64 << s.params.result_modulus_bits()) - 1;
        let mut results = s.matrix.apply(&s.uploads).unwrap();
        for ct in &mut results {
            ct.a.iter_mut().chain(ct.b.iter_mut()).for_each(|v| *v = rng.next_u64() & mask);
        }
        assert!(matches!(
            decrypt_products(&s.key, &s.layout, &results, row_bound(&s.weights, s.x.len())),
            Err(RlweError::ResultOutOfBound { .. })
        ));
        // A flipped high bit of one mask coefficient shifts many products by a multiple of Delta'.
        let mut results = s.matrix.apply(&s.uploads).unwrap();
        results[0].a[17] ^= 1 << (s.params.result_modulus_bits() - 2);
        assert!(matches!(
            decrypt_products(&s.key, &s.layout, &results, row_bound(&s.weights, s.x.len())),
            Err(RlweError::ResultOutOfBound { .. })
        ));
    }

    #[test]
    fn mismatched_inputs_are_rejected() {
        let s = session(64, 300);
        let mut other_layout_uploads = s.uploads.clone();
        other_layout_uploads[0].in_block += 1;
        assert!(matches!(
            s.matrix.apply(&other_layout_uploads),
            Err(RlweError::LayoutMismatch { what: "upload ciphertext", .. })
        ));
        assert!(matches!(
            s.matrix.apply(&s.uploads[1..]),
            Err(RlweError::WrongLength { what: "upload ciphertexts per input vector", .. })
        ));
        assert!(matches!(
            encrypt_vector(&s.key, &s.layout, &s.x[1..], &mut ChaCha20Rng::seed_from_u64(0)),
            Err(RlweError::WrongLength { what: "input vector", .. })
        ));
        assert!(matches!(
            EncodedMatrix::encode(&s.params, &s.layout, &s.weights[1..]),
            Err(RlweError::WrongLength { what: "weights", .. })
        ));
        let results = s.matrix.apply(&s.uploads).unwrap();
        assert!(matches!(
            decrypt_products(&s.key, &s.layout, &results[1..], u64::MAX),
            Err(RlweError::WrongLength { what: "result ciphertexts", .. })
        ));
        let other_params = Params::for_product_bound(i8_bound(4096)).unwrap();
        let other_layout = MatrixLayout::choose(&other_params, 300, 64).unwrap();
        assert!(matches!(
            EncodedMatrix::encode(&s.params, &other_layout, &s.weights),
            Err(RlweError::WrongParameters { .. })
        ));
        let narrow = Params::for_product_bound(1000).unwrap();
        let narrow_layout = MatrixLayout::choose(&narrow, 300, 64).unwrap();
        assert!(matches!(
            EncodedMatrix::encode(&narrow, &narrow_layout, &s.weights),
            Err(RlweError::WeightsExceedBound { .. })
        ));
    }
}
