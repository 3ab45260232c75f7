use based_model::{BackendError, Stage};
use based_rlwe::RlweError;

use crate::wire::WireError;

/// Everything that can go wrong between a client and a miner, worded for the person reading it.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    #[error(transparent)]
    Wire(#[from] WireError),
    // Not marked as the source: the message already includes it, and error reporters that
    // print the whole chain would say it twice.
    #[error("connection error: {0}")]
    Io(std::io::Error),
    #[error("ciphertext rejected: {0}")]
    Crypto(#[from] RlweError),
    #[error("protocol version {theirs} is not supported (this side speaks {ours})")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("the miner serves model {served}, the client expects model {expected}")]
    ModelMismatch { served: String, expected: String },
    #[error(
        "the miner multiplies by other int8 weights than the client's (fingerprints {theirs} \
         and {ours}): the two ends squeezed the model differently, as different versions of \
         based may; run the same version on both"
    )]
    WeightsMismatch { ours: String, theirs: String },
    #[error("the miner's encryption parameters differ from the client's: {0}")]
    ParamsMismatch(String),
    #[error("layer {layer} does not exist (the model has {layers})")]
    NoSuchLayer { layer: u32, layers: usize },
    #[error("expected {expected} ciphertexts per vector for {what}, got {got}")]
    WrongCiphertextCount { what: String, expected: usize, got: usize },
    #[error("unexpected message: expected {expected}, got {got}")]
    UnexpectedMessage { expected: &'static str, got: &'static str },
    #[error("answer to request {got} arrived while waiting for request {expected}")]
    WrongRequestId { expected: u32, got: u32 },
    #[error(
        "layer {layer} {stage:?}: mask index {index} was already used (the next is {next}); a \
         mask used twice would reveal the difference of two inputs"
    )]
    MaskReused { layer: u32, stage: Stage, index: u64, next: u64 },
    #[error(
        "layer {layer} {stage:?}: mask index {index} is beyond the protocol's limit of \
         {limit} uploads per stage"
    )]
    MaskIndexTooLarge { layer: u32, stage: Stage, index: u64, limit: u64 },
    #[error(
        "layer {layer} {stage:?}: upload {index}'s masks are not the ones the session's mask \
         seed gives"
    )]
    MaskMismatch { layer: u32, stage: Stage, index: u64 },
    #[error("saved plans refused: the record {0}")]
    SavedPlans(String),
    #[error("the miner reported an error: {0}")]
    Remote(String),
}

impl From<std::io::Error> for ZkError {
    fn from(error: std::io::Error) -> Self {
        ZkError::Io(error)
    }
}

impl From<ZkError> for BackendError {
    fn from(error: ZkError) -> Self {
        BackendError::new(error.to_string())
    }
}
