//! Lattice (RLWE) core of BasedAI's private inference: the client encrypts i8 activation
//! vectors under its secret key, the miner multiplies them by public i8 weight matrices
//! without seeing them, the client decrypts the exact integer products.
//!
//! Layers: [`ntt`]/[`poly`] arithmetic -> [`rlwe`] encryption -> [`matmul`] encoding and
//! products -> [`wire`] byte formats. See the crate README for parameters and noise analysis.

mod error;
mod matmul;
mod ntt;
mod params;
mod poly;
mod rlwe;
mod wire;

pub use error::RlweError;
pub use matmul::{EncodedMatrix, MatrixLayout, decrypt_products, encrypt_vector};
pub use params::{
    CIPHERTEXT_MODULUS, ERROR_VARIANCE, MAX_LOG2_PLAINTEXT_MODULUS, MIN_NOISE_SIGMAS,
    MOD_SWITCH_HEADROOM_BITS, Params, RING_DEGREE, SECURITY_NOTE,
};
pub use rlwe::{ResultCiphertext, SecretKey, UploadCiphertext};
pub use wire::{result_ciphertext_bytes, upload_ciphertext_bytes};
