//! Hugging Face model directories: `config.json` plus `*.safetensors` (F32, F16 or BF16).

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::float::{ShapedTensor, TensorSource};
use crate::{LlamaConfig, ModelError};

#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    rope_theta: Option<f32>,
    rms_norm_eps: f32,
    max_position_embeddings: usize,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    head_dim: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: bool,
}

/// Parses `config.json` into the shape and whether the output projection is tied to the
/// embeddings; rejects anything but a plain Llama decoder.
pub(crate) fn read_config(dir: &Path) -> Result<(LlamaConfig, bool), ModelError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    let hf: HfConfig = serde_json::from_str(&text)
        .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
    let is_llama = hf.model_type.as_deref() == Some("llama")
        || hf.architectures.iter().any(|a| a == "LlamaForCausalLM");
    if !is_llama {
        let name = hf.architectures.first().cloned().or(hf.model_type).unwrap_or_default();
        return Err(ModelError::UnsupportedArchitecture(name));
    }
    if hf.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ModelError::Config("rope_scaling is not supported".into()));
    }
    if hf.head_dim.is_some_and(|d| d * hf.num_attention_heads != hf.hidden_size) {
        return Err(ModelError::Config("head_dim * heads must equal hidden_size".into()));
    }
    let config = LlamaConfig {
        vocab_size: hf.vocab_size,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        n_layers: hf.num_hidden_layers,
        n_heads: hf.num_attention_heads,
        n_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        rope_theta: hf.rope_theta.unwrap_or(10_000.0),
        rms_norm_eps: hf.rms_norm_eps,
        max_seq_len: hf.max_position_embeddings,
    };
    config.validate()?;
    Ok((config, hf.tie_word_embeddings))
}

/// The Hugging Face name of a tensor given its GGUF name.
pub(crate) fn hf_name(gguf_name: &str) -> Option<String> {
    let fixed = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_owned());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let part = match rest.strip_suffix(".weight")? {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{part}.weight"))
}

/// Reorders the rows of a Q or K projection between Hugging Face's rotate-half RoPE layout
/// (pairs `(i, i + d/2)`) and GGUF's interleaved layout (pairs `(2i, 2i + 1)`), exactly as
/// llama.cpp's converter does, so that one RoPE implementation serves both formats.
pub(crate) fn hf_to_interleaved_rows(data: &[f32], n_heads: usize, cols: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let head_dim = rows / n_heads;
    let half = head_dim / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_heads {
        for j in 0..half {
            for k in 0..2 {
                let src = h * head_dim + k * half + j;
                out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

pub(crate) struct SafetensorsSource {
    files: Vec<(std::path::PathBuf, Vec<u8>)>,
    /// Tensor name -> index into `files`.
    index: HashMap<String, usize>,
    n_heads: usize,
    n_kv_heads: usize,
    tied: bool,
}

impl SafetensorsSource {
    pub(crate) fn open(dir: &Path, config: &LlamaConfig, tied: bool) -> Result<Self, ModelError> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::io(dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(ModelError::Safetensors(format!("no *.safetensors in {}", dir.display())));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in paths {
            let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
            let tensors = SafeTensors::deserialize(&bytes)
                .map_err(|e| ModelError::Safetensors(format!("{}: {e}", path.display())))?;
            for name in tensors.names() {
                index.insert(name.to_owned(), files.len());
            }
            files.push((path, bytes));
        }
        // The loader treats an absent output projection as tied, which is only right when the
        // config says so.
        if !tied && !index.contains_key("lm_head.weight") {
            return Err(ModelError::MissingTensor("lm_head.weight".into()));
        }
        Ok(Self { files, index, n_heads: config.n_heads, n_kv_heads: config.n_kv_heads, tied })
    }
}

impl TensorSource for SafetensorsSource {
    fn get(&mut self, name: &str) -> Result<Option<ShapedTensor>, ModelError> {
        if self.tied && name == "output.weight" {
            return Ok(None);
        }
        let Some(hf) = hf_name(name) else { return Ok(None) };
        let Some(&file) = self.index.get(&hf) else { return Ok(None) };
        let (path, bytes) = &self.files[file];
        let view = SafeTensors::deserialize(bytes)
            .and_then(|t| t.tensor(&hf))
            .map_err(|e| ModelError::Safetensors(format!("{}: {hf}: {e}", path.display())))?;
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => {
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::UnsupportedDtype { name: hf, dtype: format!("{other:?}") });
            }
        };
        let shape = view.shape().to_vec();
        let heads = if name.ends_with("attn_q.weight") {
            Some(self.n_heads)
        } else if name.ends_with("attn_k.weight") {
            Some(self.n_kv_heads)
        } else {
            None
        };
        let data = match heads {
            Some(n) if shape.len() == 2 && n > 0 && shape[0] % (2 * n) == 0 => {
                hf_to_interleaved_rows(&data, n, shape[1])
            }
            _ => data,
        };
        Ok(Some((shape, data)))
    }
}
