use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Shape and constants of a Llama-family decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    pub max_seq_len: usize,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.n_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// Output width of the fused Q/K/V matrix: q rows, then k rows, then v rows.
    pub fn qkv_dim(&self) -> usize {
        self.hidden_size + 2 * self.kv_dim()
    }

    /// SmolLM2-135M's shape, handy for tests and benchmarks on random weights.
    pub fn smollm2_135m() -> Self {
        Self {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            n_layers: 30,
            n_heads: 9,
            n_kv_heads: 3,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            max_seq_len: 8192,
        }
    }

    /// A tiny shape for tests that write random models.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 320,
            hidden_size: 64,
            intermediate_size: 96,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_seq_len: 256,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let fail = |m: String| Err(ModelError::Config(m));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.intermediate_size == 0 {
            return fail(format!("zero dimension in {self:?}"));
        }
        if self.n_layers == 0 || self.n_heads == 0 || self.n_kv_heads == 0 {
            return fail(format!("zero layer or head count in {self:?}"));
        }
        if !self.hidden_size.is_multiple_of(self.n_heads) || !self.head_dim().is_multiple_of(2) {
            return fail(format!(
                "hidden size {} is not a multiple of {} heads with an even head size",
                self.hidden_size, self.n_heads
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return fail(format!(
                "{} heads are not a multiple of {} key/value heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !(self.rope_theta > 0.0 && self.rms_norm_eps > 0.0) {
            return fail(format!(
                "rope theta {} and RMS epsilon {} must be positive",
                self.rope_theta, self.rms_norm_eps
            ));
        }
        Ok(())
    }
}
