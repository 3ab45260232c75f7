//! The ZK-LLM protocol: a client that holds the secret key and a miner that does not.
//!
//! The client runs the squeezed model's non-linear steps itself and sends every linear stage's
//! quantised activations encrypted under RLWE; the miner multiplies them by the public weights it
//! pre-encoded at load time and sends back encrypted integer products. Because the products are
//! exact integers, an encrypted chat is token-for-token the same as the plaintext squeezed model.

mod ahead;
pub mod client;
mod error;
pub mod masks;
pub mod miner;
pub mod relay;
pub mod wire;

use std::fmt;
use std::path::Path;

use based_model::{ModelError, QuantMatrix, SqueezedModel, Stage};
use based_rlwe::{ColumnLayout, Params, RhombusPlan};

pub use client::{EncryptedBackend, TrafficStats};
pub use error::ZkError;
pub use miner::{MinerModel, MinerWork, ServeConfig, serve, spawn_server};
use wire::{ParamsSummary, PlanChoice};

/// The linear stages of one transformer layer, in the order a forward pass meets them.
pub const STAGES: [Stage; 4] = [Stage::Qkv, Stage::AttnOut, Stage::GateUp, Stage::Down];

/// Which model a session is about: both ends must hold the same file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelIdentity {
    pub name: String,
    /// sha256 of the model file(s).
    pub hash: [u8; 32],
}

impl ModelIdentity {
    /// The identity of the model file (or Hugging Face folder) at `path`: its file name and the
    /// sha256 of its content.
    pub fn of_path(path: &Path) -> Result<ModelIdentity, ModelError> {
        let digest = based_model::content_hash(&based_model::model_files(path)?)?;
        let corrupt = || ModelError::Config(format!("content hash {digest} is not 32 hex bytes"));
        let bytes = (0..digest.len())
            .step_by(2)
            .map(|i| digest.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(corrupt)?;
        let name = path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(ModelIdentity { name, hash: bytes.try_into().map_err(|_| corrupt())? })
    }
}

/// sha256 of the int8 weights of every linear stage (layer by layer in [`STAGES`] order, each
/// with its shape): what the miner multiplies by, and so what the client's plaintext model must
/// hold for the encrypted chat to equal it. Two ends with the same model file can still differ
/// here, if they squeezed it differently (different versions of based).
pub fn weights_fingerprint(model: &SqueezedModel) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut bytes = [0u8; 4096];
    for layer in 0..model.n_layers() {
        for stage in STAGES {
            let matrix = model.matrix(layer, stage);
            hasher.update((matrix.rows as u64).to_le_bytes());
            hasher.update((matrix.cols as u64).to_le_bytes());
            for chunk in matrix.weights.chunks(bytes.len()) {
                bytes.iter_mut().zip(chunk).for_each(|(byte, &w)| *byte = w as u8);
                hasher.update(&bytes[..chunk.len()]);
            }
        }
    }
    hasher.finalize().into()
}

impl fmt::Display for ModelIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (sha256 {})", self.name, &hex(&self.hash)[..16])
    }
}

/// The largest |product| any stage of `model` can produce. The plaintext modulus must hold it
/// for the products to be exact.
pub fn product_bound(model: &SqueezedModel) -> u64 {
    (0..model.n_layers())
        .flat_map(|layer| STAGES.map(|stage| max_product(model.matrix(layer, stage))))
        .max()
        .unwrap_or(0)
}

/// The largest |product| one matrix can produce.
pub(crate) fn max_product(matrix: &QuantMatrix) -> u64 {
    matrix.max_abs_product().unsigned_abs()
}

pub(crate) fn stage_index(stage: Stage) -> usize {
    STAGES.iter().position(|s| *s == stage).expect("STAGES lists every stage")
}

/// The parameter set of one stage's product, derived by both ends from its public weights: t
/// just above the matrix's own largest product, so the noise budget is as large as it can be.
pub fn stage_params(matrix: &QuantMatrix) -> Result<Params, ZkError> {
    Ok(Params::for_weights(matrix.cols, &matrix.weights)?)
}

/// What every stage shares: the ring and the ciphertext modulus.
pub fn params_summary(params: &Params) -> ParamsSummary {
    ParamsSummary {
        ring_degree: params.ring_degree() as u32,
        ciphertext_modulus: params.ciphertext_modulus(),
    }
}

/// The miner's choices for one stage, as announced in Welcome.
pub(crate) fn plan_choice(params: &Params, plan: &RhombusPlan) -> PlanChoice {
    // Each value is below 64 (bits of a 54-bit modulus, log2 of at most N conjugates).
    let byte = |v: u32| u8::try_from(v).expect("plan parameters are below 256");
    PlanChoice {
        log2_plaintext_modulus: byte(params.log2_plaintext_modulus()),
        column_layout: match plan.column_layout() {
            ColumnLayout::Padded => 0,
            ColumnLayout::Split => 1,
        },
        log2_input_conjugates: byte(plan.log2_input_conjugates()),
        upload_bits: byte(plan.upload_bits()),
        input_digit_bits: byte(plan.input_digit_bits()),
        tree_digit_bits: byte(plan.tree_digit_bits()),
    }
}

/// Rebuilds (and validates) an announced plan for `matrix`, whose parameters are `params`.
pub(crate) fn plan_from_choice(
    params: &Params,
    matrix: &QuantMatrix,
    choice: PlanChoice,
) -> Result<RhombusPlan, ZkError> {
    if u32::from(choice.log2_plaintext_modulus) != params.log2_plaintext_modulus() {
        return Err(ZkError::ParamsMismatch(format!(
            "the miner uses t = 2^{} for a matrix whose weights give t = 2^{}",
            choice.log2_plaintext_modulus,
            params.log2_plaintext_modulus()
        )));
    }
    let layout = match choice.column_layout {
        0 => ColumnLayout::Padded,
        1 => ColumnLayout::Split,
        other => {
            return Err(ZkError::ParamsMismatch(format!(
                "the miner announces column layout {other}; this client knows 0 (padded) and 1 \
                 (split)"
            )));
        }
    };
    Ok(RhombusPlan::with_layout(
        params,
        matrix.cols,
        matrix.rows,
        layout,
        (
            u32::from(choice.log2_input_conjugates),
            u32::from(choice.upload_bits),
            u32::from(choice.input_digit_bits),
            u32::from(choice.tree_digit_bits),
        ),
    )?)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
