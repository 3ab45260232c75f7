//! Output packing: the result ciphertexts of one stage, each with `out_block` useful
//! coefficients at stride `in_block` = s (a power of two), are combined into ciphertexts whose
//! every coefficient is useful, with the automorphism tree of Chen-Dai-Kim-Song (ACNS 2021,
//! `PackLWEs`, here on whole RLWE ciphertexts):
//!
//! pack(cts) = pack(even) + X^h pack(odd) + KS_k(pack(even) - X^h pack(odd)),
//! h = s / len(cts), k = N/h + 1.
//!
//! sigma_k fixes the even multiples of h and negates the odd ones, so the garbage of both
//! halves at odd multiples of h cancels and their useful coefficients double. After
//! L = log2 s levels, result ct j of a group of s holds its row r at coefficient r*s + j.
//! The factor 2^L = s multiplies message and product noise alike; it is removed by multiplying
//! every input by s^-1 mod q beforehand (q is odd: this is exact, and the product noise is not
//! amplified). Only the key-switch noise grows: see [`Params::packed_worst_case_noise_sigmas`].
//! Then the packed ciphertext is switched to q'' = t 2^h, h = [`Params::packed_headroom_bits`]
//! (10 for SmolLM2: two bits more than unpacked results, for wider gadget digits).

use rayon::prelude::*;

use crate::error::RlweError;
use crate::galois::GaloisKeys;
use crate::matmul::{EncodedMatrix, MatrixLayout};
use crate::params::{
    CIPHERTEXT_MODULUS, MAX_PACKED_HEADROOM_BITS, MIN_NOISE_SIGMAS, Params, RING_DEGREE,
};
use crate::poly::{add_mod_q, centred, sub_mod_q, switch_to_power_of_two, to_residue};
use crate::rlwe::{SecretKey, UploadCiphertext};

const Q: u64 = CIPHERTEXT_MODULUS;
const N: usize = RING_DEGREE;

type Ct = (Vec<u64>, Vec<u64>);

/// The automorphism exponents packing at stride `in_block` needs: N 2^l / in_block + 1 for
/// l = 1..=log2(in_block). Fails unless in_block is a power of two >= 2.
pub fn packing_exponents(in_block: usize) -> Result<Vec<usize>, RlweError> {
    if !in_block.is_power_of_two() || !(2..=N).contains(&in_block) {
        return Err(RlweError::LayoutMismatch {
            what: "packing",
            detail: format!("input block {in_block} is not a power of two in 2..={N}"),
        });
    }
    let levels = in_block.trailing_zeros();
    Ok((1..=levels).map(|l| (N << l) / in_block + 1).collect())
}

/// The widest gadget digit (fewest digits, smallest Galois keys, fastest key switch) that keeps
/// the worst-case packed result of `layout` at the required margin; `None` if none does.
pub fn packing_digit_bits(params: &Params, layout: &MatrixLayout) -> Option<u32> {
    (crate::galois::MIN_DIGIT_BITS..=crate::galois::MAX_DIGIT_BITS).rev().find(|&bits| {
        params.packed_worst_case_noise_sigmas(layout.out_block(), layout.in_block(), bits)
            >= MIN_NOISE_SIGMAS
    })
}

/// Packed result ciphertexts per input vector.
pub fn packed_cts(layout: &MatrixLayout) -> usize {
    layout.download_cts().div_ceil(layout.in_block())
}

/// Key switches the miner performs to pack one input vector's results (one per non-empty
/// node of each group's tree: sum over levels l of min(cts in the group, s / 2^l)).
pub fn packing_key_switches(layout: &MatrixLayout) -> usize {
    let s = layout.in_block();
    let levels = s.trailing_zeros();
    (0..packed_cts(layout))
        .map(|g| {
            let in_group = (layout.download_cts() - g * s).min(s);
            (1..=levels).map(|l| in_group.min(s >> l)).sum::<usize>()
        })
        .sum()
}

/// (coefficient, output row) of every product packed ciphertext `group` carries, by coefficient.
fn group_positions(layout: &MatrixLayout, group: usize) -> Vec<(usize, usize)> {
    let s = layout.in_block();
    let mut positions = Vec::new();
    for position in 0..N {
        let (r, j) = (position / s, position % s);
        let block = group * s + j;
        if block < layout.download_cts() && r < layout.rows_in_block(block) {
            positions.push((position, block * layout.out_block() + r));
        }
    }
    positions
}

/// Bytes miner -> client per input vector with packing.
pub fn packed_download_bytes(layout: &MatrixLayout, params: &Params) -> usize {
    (0..packed_cts(layout))
        .map(|g| {
            packed_ciphertext_bytes(
                params.packed_result_modulus_bits(),
                group_positions(layout, g).len(),
            )
        })
        .sum()
}

/// A packed result switched to q': the whole mask a', b' at the `rows` coefficients that carry
/// products (in increasing order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedCiphertext {
    log2_t: u32,
    in_block: usize,
    out_block: usize,
    a: Vec<u64>,
    b: Vec<u64>,
}

impl PackedCiphertext {
    pub fn rows(&self) -> usize {
        self.b.len()
    }
}

fn monomial_shift(poly: &[u64], shift: usize) -> Vec<u64> {
    // poly * X^shift, 0 <= shift < N (negacyclic).
    let mut out = vec![0u64; N];
    for (i, &c) in poly.iter().enumerate() {
        let j = i + shift;
        if j < N {
            out[j] = c;
        } else {
            out[j - N] = if c == 0 { 0 } else { Q - c };
        }
    }
    out
}

fn shift_ct(ct: &Ct, shift: usize) -> Ct {
    (monomial_shift(&ct.0, shift), monomial_shift(&ct.1, shift))
}

fn add(x: &[u64], y: &[u64]) -> Vec<u64> {
    x.iter().zip(y).map(|(&x, &y)| add_mod_q(x, y)).collect()
}

fn sub(x: &[u64], y: &[u64]) -> Vec<u64> {
    x.iter().zip(y).map(|(&x, &y)| sub_mod_q(x, y)).collect()
}

/// ct * s^-1 * X^-(s-1): useful coefficients moved from r*s + s - 1 to r*s, scaled so that the
/// L doublings of the tree restore them.
fn prepare(ct: &Ct, s: usize) -> Ct {
    let inverse = Q - (Q - 1) / s as u64; // s^-1 mod q (q = 1 mod 2^32)
    let scale = |poly: &[u64]| -> Vec<u64> {
        let scaled: Vec<u64> = poly
            .iter()
            .map(|&c| (u128::from(c) * u128::from(inverse) % u128::from(Q)) as u64)
            .collect();
        // X^-(s-1) = -X^(N-s+1).
        let shifted = monomial_shift(&scaled, N - (s - 1));
        shifted.into_iter().map(|c| if c == 0 { 0 } else { Q - c }).collect()
    };
    (scale(&ct.0), scale(&ct.1))
}

fn pack_tree(keys: &GaloisKeys, nodes: Vec<Option<Ct>>, s: usize) -> Result<Option<Ct>, RlweError> {
    let len = nodes.len();
    if len == 1 {
        return Ok(nodes.into_iter().next().expect("one node"));
    }
    let (mut even, mut odd) = (Vec::with_capacity(len / 2), Vec::with_capacity(len / 2));
    for (i, node) in nodes.into_iter().enumerate() {
        if i % 2 == 0 { even.push(node) } else { odd.push(node) }
    }
    let (even, odd) = rayon::join(|| pack_tree(keys, even, s), || pack_tree(keys, odd, s));
    let (even, odd) = (even?, odd?);
    let h = s / len;
    let k = N / h + 1;
    Ok(match (even, odd) {
        (None, None) => None,
        (Some(e), None) => {
            let (a, b) = keys.apply(k, &e.0, &e.1)?;
            Some((add(&e.0, &a), add(&e.1, &b)))
        }
        (None, Some(o)) => {
            let (a, b) = keys.apply(k, &o.0, &o.1)?;
            Some(shift_ct(&(add(&o.0, &a), add(&o.1, &b)), h))
        }
        (Some(e), Some(o)) => {
            let shifted = shift_ct(&o, h);
            let difference = (sub(&e.0, &shifted.0), sub(&e.1, &shifted.1));
            let (a, b) = keys.apply(k, &difference.0, &difference.1)?;
            Some((add(&add(&e.0, &shifted.0), &a), add(&add(&e.1, &shifted.1), &b)))
        }
    })
}

/// Packs the product ciphertexts (mod q, coefficient form) of one stage and switches them down.
pub(crate) fn pack_results(
    params: &Params,
    layout: &MatrixLayout,
    results: Vec<Ct>,
    keys: &GaloisKeys,
) -> Result<Vec<PackedCiphertext>, RlweError> {
    let s = layout.in_block();
    let needed = packing_exponents(s)?;
    let have = keys.exponents();
    if let Some(k) = needed.iter().find(|k| !have.contains(k)) {
        return Err(RlweError::LayoutMismatch {
            what: "Galois keys",
            detail: format!("no key for the automorphism X -> X^{k}"),
        });
    }
    let sigmas = params.packed_worst_case_noise_sigmas(layout.out_block(), s, keys.digit_bits());
    if sigmas < MIN_NOISE_SIGMAS {
        return Err(RlweError::NoiseBudgetExceeded { sigmas, required: MIN_NOISE_SIGMAS });
    }
    let prepared: Vec<Ct> = results.par_iter().map(|ct| prepare(ct, s)).collect();
    let mut groups: Vec<Vec<Option<Ct>>> = Vec::new();
    let mut iter = prepared.into_iter();
    for _ in 0..packed_cts(layout) {
        groups.push((0..s).map(|_| iter.next()).collect());
    }
    let bits = params.packed_result_modulus_bits();
    groups
        .into_par_iter()
        .enumerate()
        .map(|(group, nodes)| {
            let (a, b) = pack_tree(keys, nodes, s)?.expect("every group has a ciphertext");
            Ok(PackedCiphertext {
                log2_t: params.log2_plaintext_modulus(),
                in_block: s,
                out_block: layout.out_block(),
                a: a.iter().map(|&v| switch_to_power_of_two(v, bits)).collect(),
                b: group_positions(layout, group)
                    .iter()
                    .map(|&(p, _)| switch_to_power_of_two(b[p], bits))
                    .collect(),
            })
        })
        .collect()
}

impl EncodedMatrix {
    /// W x for one encrypted input vector, packed: [`packed_cts`] ciphertexts instead of
    /// [`MatrixLayout::download_cts`]. The layout's in_block must be a power of two and `keys`
    /// must hold [`packing_exponents`] at a digit base within the noise budget.
    pub fn apply_packed(
        &self,
        inputs: &[UploadCiphertext],
        keys: &GaloisKeys,
    ) -> Result<Vec<PackedCiphertext>, RlweError> {
        packing_exponents(self.layout().in_block())?;
        let raw = self.raw_products(inputs)?;
        pack_results(self.params(), self.layout(), raw, keys)
    }
}

/// Client: decrypts packed results into the n_out products W x, range-checked like
/// [`crate::decrypt_products`] (a wrong key, wrong Galois keys or a made-up result fail).
pub fn decrypt_packed(
    key: &SecretKey,
    layout: &MatrixLayout,
    results: &[PackedCiphertext],
    max_abs_product: u64,
) -> Result<Vec<i64>, RlweError> {
    let params = key.params();
    layout.check_params("matrix layout", params)?;
    if results.len() != packed_cts(layout) {
        return Err(RlweError::WrongLength {
            what: "packed result ciphertexts",
            expected: packed_cts(layout),
            actual: results.len(),
        });
    }
    let bound = max_abs_product.min(params.product_bound());
    let t = params.plaintext_modulus();
    let result_modulus = 1u64 << params.packed_result_modulus_bits();
    let headroom = params.packed_headroom_bits();
    let mut products = vec![0i64; layout.n_out()];
    for (group, ct) in results.iter().enumerate() {
        let positions = group_positions(layout, group);
        if ct.log2_t != params.log2_plaintext_modulus()
            || (ct.in_block, ct.out_block, ct.rows())
                != (layout.in_block(), layout.out_block(), positions.len())
        {
            return Err(RlweError::LayoutMismatch {
                what: "packed result ciphertext",
                detail: format!(
                    "group {group}: {} rows of {} x {} blocks, layout expects {} rows of {} x {}",
                    ct.rows(),
                    ct.out_block,
                    ct.in_block,
                    positions.len(),
                    layout.out_block(),
                    layout.in_block()
                ),
            });
        }
        let lifted: Vec<u64> =
            ct.a.iter().map(|&a| to_residue(centred(a, result_modulus))).collect();
        let a_times_s = key.times_secret(&lifted);
        for (&(position, row), &b) in positions.iter().zip(&ct.b) {
            let a_s = centred(a_times_s[position], Q);
            let phase = (b as i64).wrapping_add(a_s) as u64 & (result_modulus - 1);
            let rounded = (phase + (1 << (headroom - 1))) >> headroom;
            let value = centred(rounded & (t - 1), t);
            if value.unsigned_abs() > bound {
                return Err(RlweError::ResultOutOfBound { index: row, value, bound });
            }
            products[row] = value;
        }
    }
    Ok(products)
}

const PACKED_MAGIC: [u8; 2] = *b"BP";
const PACKED_VERSION: u8 = 1;
const PACKED_HEADER_BYTES: usize = 11;
const PACKED_WHAT: &str = "packed result ciphertext";

/// Serialised size of a packed result with `rows` products at `bits` per coefficient.
pub fn packed_ciphertext_bytes(bits: u32, rows: usize) -> usize {
    PACKED_HEADER_BYTES + ((N + rows) * bits as usize).div_ceil(8)
}

impl PackedCiphertext {
    /// "BP", version 1, log2 N, log2 t, in_block, out_block, rows (u16 LE), a' (N values),
    /// b' (rows values), at log2 q' bits each.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bits = self.log2_t + MAX_PACKED_HEADROOM_BITS.min(42 - self.log2_t);
        let mut out = Vec::with_capacity(packed_ciphertext_bytes(bits, self.rows()));
        out.extend_from_slice(&PACKED_MAGIC);
        out.extend_from_slice(&[PACKED_VERSION, N.ilog2() as u8, self.log2_t as u8]);
        for field in [self.in_block, self.out_block, self.rows()] {
            out.extend_from_slice(&(field as u16).to_le_bytes());
        }
        crate::wire::pack_values(self.a.iter().chain(&self.b), bits, &mut out);
        out
    }

    pub fn from_bytes(
        params: &Params,
        layout: &MatrixLayout,
        bytes: &[u8],
    ) -> Result<Self, RlweError> {
        if bytes.len() < PACKED_HEADER_BYTES {
            return Err(RlweError::WrongByteLength {
                what: PACKED_WHAT,
                expected: PACKED_HEADER_BYTES,
                actual: bytes.len(),
            });
        }
        if bytes[..2] != PACKED_MAGIC
            || bytes[2] != PACKED_VERSION
            || u32::from(bytes[3]) != N.ilog2()
        {
            return Err(RlweError::BadHeader { what: PACKED_WHAT });
        }
        let log2_t = u32::from(bytes[4]);
        params.check_made_for(PACKED_WHAT, log2_t, params.upload_bits())?;
        let field =
            |i: usize| usize::from(u16::from_le_bytes([bytes[5 + 2 * i], bytes[6 + 2 * i]]));
        let (in_block, out_block, rows) = (field(0), field(1), field(2));
        if (in_block, out_block) != (layout.in_block(), layout.out_block()) || rows == 0 || rows > N
        {
            return Err(RlweError::LayoutMismatch {
                what: PACKED_WHAT,
                detail: format!(
                    "{rows} rows of {out_block} x {in_block} blocks, layout has {} x {}",
                    layout.out_block(),
                    layout.in_block()
                ),
            });
        }
        let bits = params.packed_result_modulus_bits();
        let expected = packed_ciphertext_bytes(bits, rows);
        if bytes.len() != expected {
            return Err(RlweError::WrongByteLength {
                what: PACKED_WHAT,
                expected,
                actual: bytes.len(),
            });
        }
        let mut a =
            crate::wire::unpack_values(&bytes[PACKED_HEADER_BYTES..], N + rows, bits, PACKED_WHAT)?;
        let b = a.split_off(N);
        Ok(Self { log2_t, in_block, out_block, a, b })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::encrypt_vector;
    use crate::matmul::tests::{plain_products, random_i8};
    use crate::params::{MAX_ABS_INPUT, MAX_ABS_WEIGHT};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    fn packed_shape(n_out: usize, n_in: usize, in_block: usize, extreme: bool) {
        let mut rng = ChaCha20Rng::seed_from_u64((n_out * 7 + n_in) as u64);
        let params =
            Params::for_product_bound(MAX_ABS_WEIGHT * MAX_ABS_INPUT * n_in as u64).unwrap();
        let out_block = (N / in_block).min(n_out).min(params.max_out_block());
        let layout = MatrixLayout::with_blocks(&params, n_in, n_out, in_block, out_block).unwrap();
        let key = SecretKey::generate(&params, &mut rng);
        let bits = packing_digit_bits(&params, &layout).unwrap();
        let keys =
            GaloisKeys::generate(&key, &packing_exponents(in_block).unwrap(), bits, &mut rng)
                .unwrap();
        let keys = GaloisKeys::from_bytes(&params, &keys.to_bytes()).unwrap();
        let weights: Vec<i8> = if extreme {
            (0..n_out * n_in).map(|_| if rng.next_u32() % 2 == 0 { 127 } else { -127 }).collect()
        } else {
            random_i8(&mut rng, n_out * n_in, -127)
        };
        let matrix = EncodedMatrix::encode(&params, &layout, &weights).unwrap();
        let x = if extreme { vec![i8::MIN; n_in] } else { random_i8(&mut rng, n_in, i8::MIN) };
        let uploads = encrypt_vector(&key, &layout, &x, &mut rng).unwrap();
        let packed = matrix.apply_packed(&uploads, &keys).unwrap();
        assert_eq!(packed.len(), packed_cts(&layout));
        let received: Vec<PackedCiphertext> = packed
            .iter()
            .map(|ct| PackedCiphertext::from_bytes(&params, &layout, &ct.to_bytes()).unwrap())
            .collect();
        assert_eq!(
            received.iter().map(|ct| ct.to_bytes().len()).sum::<usize>(),
            packed_download_bytes(&layout, &params)
        );
        let products = decrypt_packed(&key, &layout, &received, params.product_bound()).unwrap();
        assert_eq!(products, plain_products(&weights, &x), "{n_out} x {n_in} at {in_block}");
        // Galois keys of another secret: the range check fails.
        let other = SecretKey::generate(&params, &mut rng);
        let wrong =
            GaloisKeys::generate(&other, &packing_exponents(in_block).unwrap(), bits, &mut rng)
                .unwrap();
        let garbage = matrix.apply_packed(&uploads, &wrong).unwrap();
        assert!(matches!(
            decrypt_packed(&key, &layout, &garbage, params.product_bound()),
            Err(RlweError::ResultOutOfBound { .. })
        ));
    }

    /// The measured noise of packed results (weights all +-127, worst for the product term)
    /// stays within the model of `Params::packed_worst_case_noise_sigmas`.
    #[test]
    fn measured_packed_noise_matches_the_model() {
        for (n_out, n_in, in_block) in [(960, 576, 64), (576, 1536, 64), (512, 576, 256)] {
            let mut rng = ChaCha20Rng::seed_from_u64(77);
            let params =
                Params::for_product_bound(MAX_ABS_WEIGHT * MAX_ABS_INPUT * n_in as u64).unwrap();
            let out_block = (N / in_block).min(params.max_out_block());
            let layout =
                MatrixLayout::with_blocks(&params, n_in, n_out, in_block, out_block).unwrap();
            let key = SecretKey::generate(&params, &mut rng);
            let bits = packing_digit_bits(&params, &layout).unwrap();
            let exponents = packing_exponents(in_block).unwrap();
            let keys = GaloisKeys::generate(&key, &exponents, bits, &mut rng).unwrap();
            let weights: Vec<i8> = (0..n_out * n_in)
                .map(|_| if rng.next_u32() % 2 == 0 { 127 } else { -127 })
                .collect();
            let matrix = EncodedMatrix::encode(&params, &layout, &weights).unwrap();
            let x = random_i8(&mut rng, n_in, i8::MIN);
            let uploads = encrypt_vector(&key, &layout, &x, &mut rng).unwrap();
            let packed = matrix.apply_packed(&uploads, &keys).unwrap();
            let products = plain_products(&weights, &x);
            let result_modulus = 1u64 << params.packed_result_modulus_bits();
            let headroom = params.packed_headroom_bits();
            let mut noise = Vec::new();
            for (group, ct) in packed.iter().enumerate() {
                let lifted: Vec<u64> =
                    ct.a.iter().map(|&a| to_residue(centred(a, result_modulus))).collect();
                let a_s = key.times_secret(&lifted);
                for (&(p, row), &b) in group_positions(&layout, group).iter().zip(&ct.b) {
                    let phase = (b as i64).wrapping_add(centred(a_s[p], Q)) as u64;
                    let scaled = (products[row] << headroom) as u64;
                    noise.push(centred(
                        phase.wrapping_sub(scaled) & (result_modulus - 1),
                        result_modulus,
                    ));
                }
            }
            let std =
                (noise.iter().map(|&e| (e * e) as f64).sum::<f64>() / noise.len() as f64).sqrt();
            let budget = f64::from((1u32 << (headroom - 1)) - 1);
            let model_std =
                budget / params.packed_worst_case_noise_sigmas(out_block, in_block, bits);
            let largest = noise.iter().map(|e| e.unsigned_abs()).max().unwrap();
            println!(
                "{n_out} x {n_in} at {in_block}: digits 2^{bits}, std {std:.1}, model {model_std:.1}, largest {largest}"
            );
            assert!(std <= model_std, "{n_out} x {n_in}: std {std}, model {model_std}");
            assert!((largest as f64) < 6.0 * model_std, "{n_out} x {n_in}: largest {largest}");
        }
    }

    #[test]
    fn packed_qkv_960_by_576_is_exact() {
        packed_shape(960, 576, 64, false);
    }

    #[test]
    fn packed_o_576_by_576_is_exact() {
        packed_shape(576, 576, 64, false);
    }

    #[test]
    fn packed_gate_up_3072_by_576_is_exact() {
        packed_shape(3072, 576, 64, false);
    }

    #[test]
    fn packed_down_576_by_1536_is_exact() {
        packed_shape(576, 1536, 64, false);
    }

    #[test]
    fn packed_worst_magnitudes_and_other_strides_are_exact() {
        packed_shape(200, 576, 64, true);
        packed_shape(100, 300, 16, false);
        packed_shape(40, 1000, 256, false);
    }

    #[test]
    fn packing_needs_a_power_of_two_block_and_its_keys() {
        assert!(packing_exponents(48).is_err());
        assert_eq!(packing_exponents(4).unwrap(), vec![N / 2 + 1, N + 1]);
    }
}
