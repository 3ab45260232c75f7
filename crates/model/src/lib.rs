//! BasedAI's model crate: Llama-family models from GGUF or Hugging Face files, their tokenizer,
//! Cerberus squeezing (int8 weights, per-token dynamic activation quantisation) and a plaintext
//! forward pass whose linear products go through a pluggable [`LinearBackend`] — the seam where
//! the encrypted backend plugs in.

mod config;
mod error;
mod float;
mod forward;
pub mod gguf;
mod hf;
mod squeeze;
pub mod testutil;
mod tokenizer;

pub use config::LlamaConfig;
pub use error::{BackendError, ModelError};
pub use float::{FloatLayer, FloatModel, Matrix, content_hash, model_files};
pub use forward::{
    FloatGenerator, Generator, LinearBackend, argmax, float_perplexity, perplexity_from_logits,
    squeezed_perplexity,
};
pub use squeeze::{
    ADAPTIVE_ALPHA, ADAPTIVE_THRESHOLD, LEVELS, NormGains, PlainBackend, QuantMatrix,
    SqueezedActivation, SqueezedModel, Stage, squeeze_activation,
};
pub use tokenizer::{ChatTokenizer, DEFAULT_SYSTEM_PROMPT};

/// A fixed public-domain English text for perplexity and benchmark prompts.
pub const EVAL_TEXT: &str = include_str!("../data/eval.txt");

/// A loaded model with its tokenizer, from a GGUF file or a Hugging Face directory.
pub struct LoadedModel {
    pub model: FloatModel,
    pub tokenizer: ChatTokenizer,
}

impl LoadedModel {
    /// Loads `path`: a directory is read as a Hugging Face layout (config.json, *.safetensors,
    /// tokenizer.json), a file as GGUF.
    pub fn load(path: &std::path::Path) -> Result<Self, ModelError> {
        if path.is_dir() {
            Ok(Self {
                model: FloatModel::load_hf_dir(path)?,
                tokenizer: ChatTokenizer::from_file(&path.join("tokenizer.json"))?,
            })
        } else {
            let gguf = gguf::GgufFile::read(path)?;
            Ok(Self {
                model: FloatModel::from_gguf(&gguf)?,
                tokenizer: ChatTokenizer::from_gguf(&gguf)?,
            })
        }
    }
}
