//! The float (f32) model: dequantised weights with Q/K/V and gate/up fused.

use std::path::{Path, PathBuf};

use crate::gguf::GgufFile;
use crate::{LlamaConfig, ModelError, Stage};

/// A row-major f32 matrix: `rows` outputs, `cols` inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    fn stack(parts: Vec<Matrix>) -> Matrix {
        let cols = parts[0].cols;
        let rows = parts.iter().map(|m| m.rows).sum();
        let data = parts.into_iter().flat_map(|m| m.data).collect();
        Matrix { rows, cols, data }
    }

    /// `W diag(g)`: column j scaled by `gains[j]`, so that `W (g * x) = (W diag(g)) x`.
    pub fn with_gains_folded(&self, gains: &[f32]) -> Matrix {
        let mut folded = self.clone();
        for row in folded.data.chunks_exact_mut(self.cols) {
            row.iter_mut().zip(gains).for_each(|(w, g)| *w *= g);
        }
        folded
    }
}

/// The four fused linear stages of one decoder layer.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatLayer {
    /// RMSNorm gains before attention.
    pub attn_norm: Vec<f32>,
    /// `[q; k; v]`, in GGUF's interleaved-RoPE row order.
    pub qkv: Matrix,
    pub attn_out: Matrix,
    /// RMSNorm gains before the MLP.
    pub ffn_norm: Vec<f32>,
    /// `[gate; up]`.
    pub gate_up: Matrix,
    pub down: Matrix,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FloatModel {
    pub config: LlamaConfig,
    /// `vocab x hidden` token embeddings.
    pub embedding: Matrix,
    pub layers: Vec<FloatLayer>,
    pub final_norm: Vec<f32>,
    /// The output projection; `None` when tied to the embeddings.
    pub lm_head: Option<Matrix>,
}

/// A tensor's row-major shape and its values.
pub(crate) type ShapedTensor = (Vec<usize>, Vec<f32>);

/// Where the loaders find tensors by their GGUF names (`blk.N.attn_q.weight`, ...).
/// Returns `Ok(None)` when the tensor is absent.
pub(crate) trait TensorSource {
    fn get(&mut self, name: &str) -> Result<Option<ShapedTensor>, ModelError>;
}

fn fetch(
    source: &mut dyn TensorSource,
    name: &str,
    expected: &[usize],
) -> Result<Option<Vec<f32>>, ModelError> {
    match source.get(name)? {
        None => Ok(None),
        Some((shape, _)) if shape != expected => Err(ModelError::ShapeMismatch {
            name: name.to_owned(),
            found: shape,
            expected: expected.to_vec(),
        }),
        Some((_, data)) => Ok(Some(data)),
    }
}

fn require(
    source: &mut dyn TensorSource,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    fetch(source, name, shape)?.ok_or_else(|| ModelError::MissingTensor(name.to_owned()))
}

fn matrix(
    source: &mut dyn TensorSource,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<Matrix, ModelError> {
    Ok(Matrix { rows, cols, data: require(source, name, &[rows, cols])? })
}

impl FloatModel {
    pub(crate) fn assemble(
        config: LlamaConfig,
        source: &mut dyn TensorSource,
    ) -> Result<Self, ModelError> {
        config.validate()?;
        let (h, kv, ff) = (config.hidden_size, config.kv_dim(), config.intermediate_size);
        let layers = (0..config.n_layers)
            .map(|i| {
                let name = |t: &str| format!("blk.{i}.{t}.weight");
                let mut m = |t: &str, rows, cols| matrix(source, &name(t), rows, cols);
                let qkv = Matrix::stack(vec![
                    m("attn_q", h, h)?,
                    m("attn_k", kv, h)?,
                    m("attn_v", kv, h)?,
                ]);
                let attn_out = m("attn_output", h, h)?;
                let gate_up = Matrix::stack(vec![m("ffn_gate", ff, h)?, m("ffn_up", ff, h)?]);
                let down = m("ffn_down", h, ff)?;
                let attn_norm = require(source, &name("attn_norm"), &[h])?;
                let ffn_norm = require(source, &name("ffn_norm"), &[h])?;
                Ok(FloatLayer { attn_norm, qkv, attn_out, ffn_norm, gate_up, down })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let embedding = matrix(source, "token_embd.weight", config.vocab_size, h)?;
        let final_norm = require(source, "output_norm.weight", &[h])?;
        let lm_head = fetch(source, "output.weight", &[config.vocab_size, h])?.map(|data| Matrix {
            rows: config.vocab_size,
            cols: h,
            data,
        });
        Ok(Self { config, embedding, layers, final_norm, lm_head })
    }

    /// A stage's matrix and the RMSNorm gains applied to its input (Qkv and GateUp only).
    pub fn stage(&self, layer: usize, stage: Stage) -> (&Matrix, Option<&[f32]>) {
        let l = &self.layers[layer];
        match stage {
            Stage::Qkv => (&l.qkv, Some(&l.attn_norm)),
            Stage::AttnOut => (&l.attn_out, None),
            Stage::GateUp => (&l.gate_up, Some(&l.ffn_norm)),
            Stage::Down => (&l.down, None),
        }
    }

    /// The output projection (the embeddings when tied).
    pub fn output_matrix(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embedding)
    }

    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ModelError> {
        struct Source<'a>(&'a GgufFile);
        impl TensorSource for Source<'_> {
            fn get(&mut self, name: &str) -> Result<Option<ShapedTensor>, ModelError> {
                self.0
                    .tensor_info(name)
                    .map(|info| Ok((info.shape(), self.0.tensor_f32(info)?)))
                    .transpose()
            }
        }
        Self::assemble(config_from_gguf(gguf)?, &mut Source(gguf))
    }

    pub fn load_gguf(path: &Path) -> Result<Self, ModelError> {
        Self::from_gguf(&GgufFile::read(path)?)
    }

    /// Loads `config.json` and every `*.safetensors` file of a Hugging Face model directory.
    pub fn load_hf_dir(dir: &Path) -> Result<Self, ModelError> {
        let (config, tied) = crate::hf::read_config(dir)?;
        let mut source = crate::hf::SafetensorsSource::open(dir, &config, tied)?;
        Self::assemble(config, &mut source)
    }
}

fn meta_usize(gguf: &GgufFile, key: &str) -> Result<usize, ModelError> {
    gguf.meta(key)
        .and_then(|v| v.as_u64())
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| ModelError::Gguf(format!("missing or non-integer metadata {key}")))
}

fn meta_f32(gguf: &GgufFile, key: &str) -> Result<f32, ModelError> {
    gguf.meta(key)
        .and_then(|v| v.as_f32())
        .ok_or_else(|| ModelError::Gguf(format!("missing or non-numeric metadata {key}")))
}

pub(crate) fn config_from_gguf(gguf: &GgufFile) -> Result<LlamaConfig, ModelError> {
    let arch = gguf
        .meta("general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ModelError::Gguf("missing general.architecture".into()))?;
    if arch != "llama" {
        return Err(ModelError::UnsupportedArchitecture(arch.to_owned()));
    }
    let key = |k: &str| format!("llama.{k}");
    let vocab_size = match gguf.tensor_info("token_embd.weight") {
        Some(info) => info.shape()[0],
        None => return Err(ModelError::MissingTensor("token_embd.weight".into())),
    };
    let hidden_size = meta_usize(gguf, &key("embedding_length"))?;
    let n_heads = meta_usize(gguf, &key("attention.head_count"))?;
    let head_dim = hidden_size.checked_div(n_heads).unwrap_or(0);
    if let Ok(rope_dims) = meta_usize(gguf, &key("rope.dimension_count"))
        && rope_dims != head_dim
    {
        return Err(ModelError::Config(format!(
            "partial rotary embedding ({rope_dims} of {head_dim} dimensions) is not supported"
        )));
    }
    Ok(LlamaConfig {
        vocab_size,
        hidden_size,
        intermediate_size: meta_usize(gguf, &key("feed_forward_length"))?,
        n_layers: meta_usize(gguf, &key("block_count"))?,
        n_heads,
        n_kv_heads: meta_usize(gguf, &key("attention.head_count_kv")).unwrap_or(n_heads),
        rope_theta: meta_f32(gguf, &key("rope.freq_base")).unwrap_or(10_000.0),
        rms_norm_eps: meta_f32(gguf, &key("attention.layer_norm_rms_epsilon"))?,
        max_seq_len: meta_usize(gguf, &key("context_length"))?,
    })
}

/// SHA-256 over the given files in order (hex): the content hash registered on chain.
pub fn content_hash(paths: &[PathBuf]) -> Result<String, ModelError> {
    use sha2::Digest;
    use std::io::Read;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for path in paths {
        let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        loop {
            let n = file.read(&mut buffer).map_err(|e| ModelError::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Files that make up a model: the GGUF file itself, or a Hugging Face directory's config,
/// weights and tokenizer, sorted so the hash does not depend on directory order.
pub fn model_files(path: &Path) -> Result<Vec<PathBuf>, ModelError> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| ModelError::io(path, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == "config.json" || name == "tokenizer.json" || name.ends_with(".safetensors")
        })
        .collect();
    files.sort();
    Ok(files)
}
