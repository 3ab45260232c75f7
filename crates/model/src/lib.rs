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
    ActivationStats, FloatGenerator, Generator, LinearBackend, argmax, float_perplexity,
    perplexity_from_logits, squeezed_perplexity,
};
pub use squeeze::{
    ADAPTIVE_ALPHA, ADAPTIVE_THRESHOLD, HeadInput, LEVELS, NormGains, PlainBackend, QuantMatrix,
    SMOOTHING_ALPHA, SqueezedActivation, SqueezedModel, Stage, squeeze_activation,
};
pub use tokenizer::{ChatTokenizer, DEFAULT_SYSTEM_PROMPT};

/// A fixed public-domain English text for perplexity and benchmark prompts.
pub const EVAL_TEXT: &str = include_str!("../data/eval.txt");

/// A second public-domain English text (the opening of *Moby-Dick*, chapter 1), used only to
/// measure activation ranges for smoothing; never the evaluation text.
pub const CALIBRATION_TEXT: &str = include_str!("../data/calibration.txt");

/// Calibration tokens: 256 give the same accuracy as the whole text (785 SmolLM2 tokens) at a
/// third of the cost (one float prefill, about 5 s for SmolLM2 here).
pub const CALIBRATION_TOKENS: usize = 256;

/// A loaded model with its tokenizer, from a GGUF file or a Hugging Face directory.
pub struct LoadedModel {
    pub model: FloatModel,
    pub tokenizer: ChatTokenizer,
}

impl LoadedModel {
    /// The recommended squeezed model: [`SqueezedModel::calibrated`] on the first
    /// [`CALIBRATION_TOKENS`] tokens of [`CALIBRATION_TEXT`], sent as a user turn of the chat
    /// template. The template matters: its special tokens drive activation channels that plain
    /// prose never does, and factors calibrated on prose alone amplify those channels until a
    /// chat's first tokens lose their 8-bit resolution (SmolLM2 then misanswers the README's
    /// question).
    pub fn squeeze(&self) -> Result<SqueezedModel, ModelError> {
        let prose = self.tokenizer.encode(CALIBRATION_TEXT)?;
        let excerpt = self.tokenizer.decode(&prose[..prose.len().min(CALIBRATION_TOKENS)])?;
        let tokens = self.tokenizer.encode_chat(DEFAULT_SYSTEM_PROMPT, &excerpt)?;
        SqueezedModel::calibrated(&self.model, &tokens)
            .map_err(|e| ModelError::Calibration(e.to_string()))
    }

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
