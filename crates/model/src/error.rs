use std::path::PathBuf;

/// Everything that can go wrong while reading, checking or converting a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("GGUF: {0}")]
    Gguf(String),
    #[error("safetensors: {0}")]
    Safetensors(String),
    #[error("config: {0}")]
    Config(String),
    #[error("unsupported architecture {0:?} (only the Llama family is supported)")]
    UnsupportedArchitecture(String),
    #[error("missing tensor {0}")]
    MissingTensor(String),
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("tensor {name}: unsupported data type {dtype}")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("calibration: {0}")]
    Calibration(String),
    #[error("saved conversation state: {0}")]
    SavedState(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Failure of a [`crate::LinearBackend`]; the encrypted backend wraps its network and crypto
/// errors in it.
#[derive(Debug, thiserror::Error)]
#[error("linear backend: {0}")]
pub struct BackendError(pub Box<dyn std::error::Error + Send + Sync>);

impl BackendError {
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

impl From<String> for BackendError {
    fn from(message: String) -> Self {
        Self(message.into())
    }
}

impl From<&str> for BackendError {
    fn from(message: &str) -> Self {
        Self(message.into())
    }
}
