use thiserror::Error;

/// Everything that can go wrong in this crate. Wire input never panics: it ends up here.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RlweError {
    #[error("product bound {bound} needs a plaintext modulus above 2^{max_log2_t}")]
    ProductBoundTooLarge { bound: u64, max_log2_t: u32 },
    #[error(
        "noise budget exceeded: {sigmas:.1} standard deviations of margin, {required:.1} required"
    )]
    NoiseBudgetExceeded { sigmas: f64, required: f64 },
    #[error("matrix dimensions must be positive, got {n_out} x {n_in}")]
    EmptyMatrix { n_out: usize, n_in: usize },
    #[error("{what}: expected length {expected}, got {actual}")]
    WrongLength { what: &'static str, expected: usize, actual: usize },
    #[error("weight row {row} has |W|_1 * 128 = {row_bound}, above the product bound {bound}")]
    WeightsExceedBound { row: usize, row_bound: u64, bound: u64 },
    #[error("{what}: truncated or overlong, expected {expected} bytes, got {actual}")]
    WrongByteLength { what: &'static str, expected: usize, actual: usize },
    #[error("{what}: non-zero padding bits")]
    NonCanonicalEncoding { what: &'static str },
    #[error("{what}: bad magic, format version or ring degree")]
    BadHeader { what: &'static str },
    #[error("{what}: made for plaintext modulus 2^{found}, these parameters use 2^{expected}")]
    WrongParameters { what: &'static str, expected: u32, found: u32 },
    #[error("{what}: uploads packed at {found} bits, these parameters use {expected}")]
    WrongUploadBits { what: &'static str, expected: u32, found: u32 },
    #[error("{what}: layout mismatch ({detail})")]
    LayoutMismatch { what: &'static str, detail: String },
    #[error(
        "decrypted product {index} is {value}, beyond the bound {bound}: wrong key or a corrupted result"
    )]
    ResultOutOfBound { index: usize, value: i64, bound: u64 },
}
