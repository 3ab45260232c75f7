//! Lattice (RLWE) core of BasedAI's private inference: the client encrypts i8 activation
//! vectors under its secret key, the miner multiplies them by public i8 weight matrices
//! without seeing them, the client decrypts the exact integer products.
//!
//! Layers: [`ntt`]/[`poly`] arithmetic -> [`rlwe`] encryption -> [`matmul`] encoding and
//! products -> `wire` byte formats. See the crate README for parameters and noise analysis.
//!
//! ```
//! use based_rlwe::*;
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let (n_out, n_in) = (3, 4);
//! let weights: Vec<i8> = vec![1, -2, 3, 127, 0, 5, -127, 2, 9, 9, 9, 9]; // n_out x n_in
//! let x: Vec<i8> = vec![-128, 7, 0, 127];
//! let params = Params::for_product_bound(127 * 128 * n_in as u64)?;
//! let layout = MatrixLayout::choose(&params, n_in, n_out)?;
//! // Miner, once per model: encode the public weights.
//! let matrix = EncodedMatrix::encode(&params, &layout, &weights)?;
//! // Client: encrypt and send.
//! let mut rng = ChaCha20Rng::seed_from_u64(1); // real clients: an OS-seeded generator
//! let key = SecretKey::generate(&params, &mut rng);
//! let upload: Vec<Vec<u8>> =
//!     encrypt_vector(&key, &layout, &x, &mut rng)?.iter().map(|ct| ct.to_bytes()).collect();
//! // Miner: parse, multiply, send back.
//! let inputs = upload.iter().map(|b| UploadCiphertext::from_bytes(&params, b)).collect::<Result<Vec<_>, _>>()?;
//! let download: Vec<Vec<u8>> = matrix.apply(&inputs)?.iter().map(|ct| ct.to_bytes()).collect();
//! // Client: parse, decrypt, check against the matrix's bound.
//! let results = download
//!     .iter()
//!     .map(|b| ResultCiphertext::from_bytes(&params, &layout, b))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let products = decrypt_products(&key, &layout, &results, params.product_bound())?;
//! assert_eq!(products, vec![-128 - 14 + 127 * 127, 35 + 254, 9 * (-128 + 7 + 127)]);
//! # Ok::<(), RlweError>(())
//! ```

mod error;
mod galois;
mod lanes;
mod matmul;
mod ntt;
mod packing;
mod params;
mod poly;
mod rhombus;
mod rlwe;
mod wire;

pub use error::RlweError;
pub use galois::{
    GaloisKeys, MAX_DIGIT_BITS, MIN_DIGIT_BITS, gadget_digits, galois_keys_bytes,
    key_switch_noise_proxy,
};
pub use matmul::{EncodedMatrix, MatrixLayout, decrypt_products, encrypt_vector};
pub use packing::{
    PackedCiphertext, decrypt_packed, packed_ciphertext_bytes, packed_cts, packed_download_bytes,
    packing_digit_bits, packing_exponents, packing_key_switches,
};
pub use params::{
    CIPHERTEXT_MODULUS, ERROR_VARIANCE, MAX_LOG2_PLAINTEXT_MODULUS, MAX_PACKED_HEADROOM_BITS,
    MIN_NOISE_SIGMAS, MOD_SWITCH_HEADROOM_BITS, Params, RING_DEGREE, SECURITY_NOTE,
};
pub use rhombus::{
    ColumnLayout, RhombusKeys, RhombusMatrix, RhombusPlan, RhombusPrecomputed, RhombusResult,
    RhombusUpload, rhombus_decrypt, rhombus_encrypt, rhombus_encrypt_with_masks,
    rhombus_result_bytes, rhombus_upload_bytes, rhombus_worst_case_noise_sigmas,
};
pub use rlwe::{ResultCiphertext, SecretKey, UploadCiphertext};
pub use wire::{result_ciphertext_bytes, upload_ciphertext_bytes};
