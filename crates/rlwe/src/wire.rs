//! Byte formats. Upload: "BU", version, log2 N, log2 t, upload bits k, in_block (u16 LE),
//! 32-byte seed, N coefficients of b rounded to k bits. Result: "BR", version, log2 N, log2 t, in_block, out_block, rows (u16 LE each),
//! then N coefficients of a' and `rows` of b' at log2 q' bits. Coefficients are packed
//! little-endian, LSB first; padding bits of the last byte must be zero.

use crate::error::RlweError;
use crate::matmul::MatrixLayout;
use crate::params::{MOD_SWITCH_HEADROOM_BITS, Params, RING_DEGREE};
use crate::rlwe::{ResultCiphertext, UploadCiphertext};

pub(crate) const FORMAT_VERSION: u8 = 1;
const UPLOAD_MAGIC: [u8; 2] = *b"BU";
const RESULT_MAGIC: [u8; 2] = *b"BR";
const UPLOAD_HEADER_BYTES: usize = 8;
const RESULT_HEADER_BYTES: usize = 11;
const SEED_BYTES: usize = 32;
const UPLOAD_WHAT: &str = "upload ciphertext";
const RESULT_WHAT: &str = "result ciphertext";

fn packed_len(count: usize, bits: u32) -> usize {
    (count * bits as usize).div_ceil(8)
}

/// Serialised size of one upload ciphertext with b at `upload_bits` per coefficient.
pub fn upload_ciphertext_bytes(upload_bits: u32) -> usize {
    UPLOAD_HEADER_BYTES + SEED_BYTES + packed_len(RING_DEGREE, upload_bits)
}

/// Serialised size of one result ciphertext carrying `rows` products at `bits` per coefficient.
pub fn result_ciphertext_bytes(bits: u32, rows: usize) -> usize {
    RESULT_HEADER_BYTES + packed_len(RING_DEGREE + rows, bits)
}

/// [`pack`] for other modules (Galois keys, packed results).
pub(crate) fn pack_values<'a>(values: impl Iterator<Item = &'a u64>, bits: u32, out: &mut Vec<u8>) {
    pack(values, bits, out);
}

/// [`unpack`] for other modules.
pub(crate) fn unpack_values(
    bytes: &[u8],
    count: usize,
    bits: u32,
    what: &'static str,
) -> Result<Vec<u64>, RlweError> {
    unpack(bytes, count, bits, what)
}

fn pack<'a>(values: impl Iterator<Item = &'a u64>, bits: u32, out: &mut Vec<u8>) {
    let mut buffer: u128 = 0;
    let mut filled = 0u32;
    for &value in values {
        buffer |= u128::from(value) << filled;
        filled += bits;
        while filled >= 8 {
            out.push(buffer as u8);
            buffer >>= 8;
            filled -= 8;
        }
    }
    if filled > 0 {
        out.push(buffer as u8);
    }
}

/// Inverse of [`pack`]; `bytes` must be exactly `packed_len(count, bits)` long.
fn unpack(
    bytes: &[u8],
    count: usize,
    bits: u32,
    what: &'static str,
) -> Result<Vec<u64>, RlweError> {
    let mask = (1u128 << bits) - 1;
    let mut values = Vec::with_capacity(count);
    let mut buffer: u128 = 0;
    let mut filled = 0u32;
    let mut input = bytes.iter();
    for _ in 0..count {
        while filled < bits {
            let byte = input.next().ok_or(RlweError::WrongByteLength {
                what,
                expected: packed_len(count, bits),
                actual: bytes.len(),
            })?;
            buffer |= u128::from(*byte) << filled;
            filled += 8;
        }
        values.push((buffer & mask) as u64);
        buffer >>= bits;
        filled -= bits;
    }
    if buffer != 0 || input.next().is_some() {
        return Err(RlweError::NonCanonicalEncoding { what });
    }
    Ok(values)
}

fn check_length(bytes: &[u8], expected: usize, what: &'static str) -> Result<(), RlweError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(RlweError::WrongByteLength { what, expected, actual: bytes.len() })
    }
}

/// Checks length, magic, version and ring degree of a header (every format of this crate
/// starts so); returns its log2 t.
pub(crate) fn read_header(
    bytes: &[u8],
    magic: [u8; 2],
    header_bytes: usize,
    what: &'static str,
) -> Result<u32, RlweError> {
    if bytes.len() < header_bytes {
        return Err(RlweError::WrongByteLength {
            what,
            expected: header_bytes,
            actual: bytes.len(),
        });
    }
    if bytes[..2] != magic
        || bytes[2] != FORMAT_VERSION
        || u32::from(bytes[3]) != RING_DEGREE.ilog2()
    {
        return Err(RlweError::BadHeader { what });
    }
    Ok(u32::from(bytes[4]))
}

fn header(magic: [u8; 2], log2_t: u32, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&[FORMAT_VERSION, RING_DEGREE.ilog2() as u8, log2_t as u8]);
    out
}

impl UploadCiphertext {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = header(UPLOAD_MAGIC, self.log2_t, upload_ciphertext_bytes(self.upload_bits));
        out.push(self.upload_bits as u8);
        // Block sizes are at most N = 2048 (checked at layout construction).
        out.extend_from_slice(&(self.in_block as u16).to_le_bytes());
        out.extend_from_slice(&self.seed);
        pack(self.b.iter(), self.upload_bits, &mut out);
        out
    }

    pub fn from_bytes(params: &Params, bytes: &[u8]) -> Result<Self, RlweError> {
        let log2_t = read_header(bytes, UPLOAD_MAGIC, UPLOAD_HEADER_BYTES, UPLOAD_WHAT)?;
        let upload_bits = u32::from(bytes[5]);
        params.check_made_for(UPLOAD_WHAT, log2_t, upload_bits)?;
        check_length(bytes, upload_ciphertext_bytes(upload_bits), UPLOAD_WHAT)?;
        let in_block = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
        if !(1..=RING_DEGREE).contains(&in_block) {
            return Err(RlweError::LayoutMismatch {
                what: UPLOAD_WHAT,
                detail: format!(
                    "input block of {in_block} values in a ring of degree {RING_DEGREE}"
                ),
            });
        }
        let (seed, packed) = bytes[UPLOAD_HEADER_BYTES..].split_at(SEED_BYTES);
        Ok(Self {
            log2_t,
            upload_bits,
            in_block,
            seed: seed.try_into().expect("split at SEED_BYTES"),
            // Every k-bit value is a valid rounded coefficient: no range to check.
            b: unpack(packed, RING_DEGREE, upload_bits, UPLOAD_WHAT)?,
        })
    }
}

impl ResultCiphertext {
    pub fn to_bytes(&self) -> Vec<u8> {
        let bits = self.log2_t + MOD_SWITCH_HEADROOM_BITS;
        let mut out = header(RESULT_MAGIC, self.log2_t, result_ciphertext_bytes(bits, self.rows()));
        for field in [self.in_block, self.out_block, self.rows()] {
            // Block sizes are at most N = 2048 (checked at layout construction).
            out.extend_from_slice(&(field as u16).to_le_bytes());
        }
        pack(self.a.iter().chain(&self.b), bits, &mut out);
        out
    }

    pub fn from_bytes(
        params: &Params,
        layout: &MatrixLayout,
        bytes: &[u8],
    ) -> Result<Self, RlweError> {
        let log2_t = read_header(bytes, RESULT_MAGIC, RESULT_HEADER_BYTES, RESULT_WHAT)?;
        // Result coefficients do not depend on the upload rounding.
        params.check_made_for(RESULT_WHAT, log2_t, params.upload_bits())?;
        let field = |index: usize| {
            usize::from(u16::from_le_bytes([bytes[5 + 2 * index], bytes[6 + 2 * index]]))
        };
        let (in_block, out_block, rows) = (field(0), field(1), field(2));
        if (in_block, out_block) != (layout.in_block(), layout.out_block())
            || rows == 0
            || rows > out_block
        {
            return Err(RlweError::LayoutMismatch {
                what: RESULT_WHAT,
                detail: format!(
                    "{rows} rows of {out_block} x {in_block} blocks, layout has {} x {} blocks",
                    layout.out_block(),
                    layout.in_block()
                ),
            });
        }
        let bits = params.result_modulus_bits();
        check_length(bytes, result_ciphertext_bytes(bits, rows), RESULT_WHAT)?;
        let mut a = unpack(&bytes[RESULT_HEADER_BYTES..], RING_DEGREE + rows, bits, RESULT_WHAT)?;
        let b = a.split_off(RING_DEGREE);
        Ok(Self { log2_t: params.log2_plaintext_modulus(), in_block, out_block, a, b })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::{EncodedMatrix, encrypt_vector};
    use crate::rlwe::SecretKey;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    struct Fixture {
        params: Params,
        layout: MatrixLayout,
        upload: Vec<u8>,
        result: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let params = Params::for_product_bound(127 * 128 * 100).unwrap();
        let key = SecretKey::generate(&params, &mut rng);
        let layout = MatrixLayout::choose(&params, 100, 40).unwrap();
        let matrix = EncodedMatrix::encode(&params, &layout, &[1; 4000]).unwrap();
        let uploads = encrypt_vector(&key, &layout, &[2; 100], &mut rng).unwrap();
        let results = matrix.apply(&uploads).unwrap();
        Fixture { upload: uploads[0].to_bytes(), result: results[0].to_bytes(), params, layout }
    }

    #[test]
    fn serialised_sizes_match_the_announced_ones() {
        let f = fixture();
        assert_eq!(f.upload.len(), upload_ciphertext_bytes(f.params.upload_bits()));
        let bits = f.params.result_modulus_bits();
        assert_eq!(f.result.len(), result_ciphertext_bytes(bits, f.layout.rows_in_block(0)));
        let upload = UploadCiphertext::from_bytes(&f.params, &f.upload).unwrap();
        assert_eq!(upload.to_bytes(), f.upload);
        let result = ResultCiphertext::from_bytes(&f.params, &f.layout, &f.result).unwrap();
        assert_eq!(result.to_bytes(), f.result);
    }

    #[test]
    fn corrupted_uploads_are_rejected_precisely() {
        let f = fixture();
        let truncated = &f.upload[..f.upload.len() - 1];
        assert!(matches!(
            UploadCiphertext::from_bytes(&f.params, truncated),
            Err(RlweError::WrongByteLength { what: UPLOAD_WHAT, .. })
        ));
        let mut bad_magic = f.upload.clone();
        bad_magic[0] = b'X';
        assert_eq!(
            UploadCiphertext::from_bytes(&f.params, &bad_magic),
            Err(RlweError::BadHeader { what: UPLOAD_WHAT })
        );
        let other = Params::for_product_bound(5).unwrap();
        assert!(matches!(
            UploadCiphertext::from_bytes(&other, &f.upload),
            Err(RlweError::WrongParameters { what: UPLOAD_WHAT, .. })
        ));
        let mut no_block = f.upload.clone();
        no_block[6..8].copy_from_slice(&[0, 0]);
        assert!(matches!(
            UploadCiphertext::from_bytes(&f.params, &no_block),
            Err(RlweError::LayoutMismatch { what: UPLOAD_WHAT, .. })
        ));
        let mut other_bits = f.upload.clone();
        other_bits[5] += 1;
        assert_eq!(
            UploadCiphertext::from_bytes(&f.params, &other_bits),
            Err(RlweError::WrongUploadBits {
                what: UPLOAD_WHAT,
                expected: f.params.upload_bits(),
                found: f.params.upload_bits() + 1
            })
        );
        for cut in [0, 3, UPLOAD_HEADER_BYTES] {
            assert!(matches!(
                UploadCiphertext::from_bytes(&f.params, &f.upload[..cut]),
                Err(RlweError::WrongByteLength { what: UPLOAD_WHAT, .. })
            ));
        }
    }

    #[test]
    fn corrupted_results_are_rejected_precisely() {
        let f = fixture();
        for cut in [0, 4, RESULT_HEADER_BYTES, f.result.len() - 1] {
            assert!(matches!(
                ResultCiphertext::from_bytes(&f.params, &f.layout, &f.result[..cut]),
                Err(RlweError::WrongByteLength { what: RESULT_WHAT, .. })
            ));
        }
        let mut extended = f.result.clone();
        extended.push(0);
        assert!(matches!(
            ResultCiphertext::from_bytes(&f.params, &f.layout, &extended),
            Err(RlweError::WrongByteLength { what: RESULT_WHAT, .. })
        ));
        let mut too_many_rows = f.result.clone();
        too_many_rows[9..11].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            ResultCiphertext::from_bytes(&f.params, &f.layout, &too_many_rows),
            Err(RlweError::LayoutMismatch { what: RESULT_WHAT, .. })
        ));
        let other_layout = MatrixLayout::with_blocks(&f.params, 100, 40, 1, 1).unwrap();
        assert!(matches!(
            ResultCiphertext::from_bytes(&f.params, &other_layout, &f.result),
            Err(RlweError::LayoutMismatch { what: RESULT_WHAT, .. })
        ));
        let mut bad_version = f.result.clone();
        bad_version[2] = 9;
        assert_eq!(
            ResultCiphertext::from_bytes(&f.params, &f.layout, &bad_version),
            Err(RlweError::BadHeader { what: RESULT_WHAT })
        );
    }

    #[test]
    fn random_bytes_never_panic_the_parsers() {
        let f = fixture();
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        for round in 0..2_000 {
            // Mutate valid encodings (so parsing gets deep) or truncate them at random.
            let mut upload = f.upload.clone();
            let mut result = f.result.clone();
            for bytes in [&mut upload, &mut result] {
                let position = rng.next_u32() as usize % bytes.len();
                bytes[position] ^= 1 << (rng.next_u32() % 8);
                if round % 3 == 0 {
                    bytes.truncate(rng.next_u32() as usize % bytes.len());
                }
            }
            // Either outcome is fine; a panic fails the test.
            let _ = UploadCiphertext::from_bytes(&f.params, &upload);
            let _ = ResultCiphertext::from_bytes(&f.params, &f.layout, &result);
        }
    }

    #[test]
    fn packing_round_trips_at_odd_widths() {
        for bits in [1u32, 7, 35, 42, 54] {
            let values: Vec<u64> = (0..37u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & ((1 << bits) - 1))
                .collect();
            let mut bytes = Vec::new();
            pack(values.iter(), bits, &mut bytes);
            assert_eq!(bytes.len(), packed_len(values.len(), bits));
            assert_eq!(unpack(&bytes, values.len(), bits, "test").unwrap(), values);
        }
    }

    #[test]
    fn non_zero_padding_is_rejected() {
        let mut bytes = Vec::new();
        pack([5u64].iter(), 3, &mut bytes);
        bytes[0] |= 0x80;
        assert_eq!(
            unpack(&bytes, 1, 3, "test"),
            Err(RlweError::NonCanonicalEncoding { what: "test" })
        );
    }
}
