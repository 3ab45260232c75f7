//! Writers of tiny random Llama models in the real on-disk formats, for tests across the
//! workspace. The same config and seed give the same weights in both formats: matrices are
//! drawn exactly representable in Q8_0, so the GGUF file and the safetensors directory load to
//! bitwise identical models.

use std::path::Path;

use crate::gguf::{GgmlType, GgufWriter, MetaValue};
use crate::hf::{hf_name, hf_to_interleaved_rows};
use crate::{ChatTokenizer, LlamaConfig, ModelError};

type Merges = Vec<(String, String)>;

/// splitmix64: tiny, deterministic on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Tensors in Hugging Face naming and layout (rotate-half RoPE rows for q/k).
struct RandomWeights {
    /// (GGUF name, row-major shape, values)
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Values of roughly `magnitude`, exactly representable in Q8_0.
fn random_matrix(rng: &mut Rng, rows: usize, cols: usize, magnitude: f32) -> Vec<f32> {
    let mut values = Vec::with_capacity(rows * cols);
    for block in 0..(rows * cols).div_ceil(32) {
        let len = 32.min(rows * cols - block * 32);
        // Q8_0-exact: an f16 block scale times integers whose largest magnitude is 127.
        let d = half::f16::from_f32(magnitude * (0.5 + rng.unit()) / 127.0).to_f32();
        let peak = (rng.next() % len as u64) as usize;
        values.extend((0..len).map(|i| {
            let q = if i == peak { 127.0 } else { (rng.unit() * 254.0 - 127.0).round() };
            d * q
        }));
    }
    values
}

fn random_weights(config: &LlamaConfig, seed: u64) -> Result<RandomWeights, ModelError> {
    config.validate()?;
    if !config.hidden_size.is_multiple_of(32) || !config.intermediate_size.is_multiple_of(32) {
        return Err(ModelError::Config(
            "random models need widths that are multiples of 32".into(),
        ));
    }
    let mut rng = Rng(seed);
    let (h, kv, ff) = (config.hidden_size, config.kv_dim(), config.intermediate_size);
    let embedding = random_matrix(&mut rng, config.vocab_size, h, 1.0);
    let mut tensors = vec![("token_embd.weight".to_owned(), vec![config.vocab_size, h], embedding)];
    let norm = |rng: &mut Rng| (0..h).map(|_| 0.8 + 0.4 * rng.unit()).collect::<Vec<f32>>();
    for layer in 0..config.n_layers {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        tensors.push((name("attn_norm"), vec![h], norm(&mut rng)));
        for (t, rows, cols) in [
            ("attn_q", h, h),
            ("attn_k", kv, h),
            ("attn_v", kv, h),
            ("attn_output", h, h),
            ("ffn_gate", ff, h),
            ("ffn_up", ff, h),
            ("ffn_down", h, ff),
        ] {
            let magnitude = 1.0 / (cols as f32).sqrt();
            tensors.push((
                name(t),
                vec![rows, cols],
                random_matrix(&mut rng, rows, cols, magnitude),
            ));
        }
        tensors.push((name("ffn_norm"), vec![h], norm(&mut rng)));
    }
    tensors.push(("output_norm.weight".to_owned(), vec![h], norm(&mut rng)));
    // An untied head: with tied embeddings the residual copy of the last token's embedding
    // dominates a random model's logits, and greedy decoding just repeats its input.
    let head = random_matrix(&mut rng, config.vocab_size, h, 1.0);
    tensors.push(("output.weight".to_owned(), vec![config.vocab_size, h], head));
    Ok(RandomWeights { tensors })
}

/// GPT-2's byte-to-character map used by byte-level BPE vocabularies.
fn byte_level_alphabet() -> Vec<String> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut next_free = 256u32;
    (0..=255u8)
        .map(|b| {
            let code = if printable(b) {
                u32::from(b)
            } else {
                next_free += 1;
                next_free - 1
            };
            char::from_u32(code).map(String::from).unwrap_or_default()
        })
        .collect()
}

const TEST_MERGES: [(&str, &str); 13] = [
    ("t", "h"),
    ("h", "e"),
    ("th", "e"),
    ("Ġ", "t"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "s"),
    ("Ġ", "w"),
    ("e", "s"),
    ("a", "n"),
];
const TEST_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Vocabulary (id = index) and merges of the test tokenizer, padded to `vocab_size`.
fn test_vocab(vocab_size: usize) -> Result<(Vec<String>, Merges), ModelError> {
    let mut tokens: Vec<String> = TEST_SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.extend(byte_level_alphabet());
    let merges: Vec<(String, String)> =
        TEST_MERGES.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    if tokens.len() > vocab_size {
        return Err(ModelError::Config(format!(
            "random models need a vocabulary of at least {}",
            tokens.len()
        )));
    }
    let padding = vocab_size - tokens.len();
    tokens.extend((0..padding).map(|i| format!("<|unused_{i}|>")));
    Ok((tokens, merges))
}

/// The tokenizer the random-model writers embed (for tests that need matching token ids).
pub fn test_tokenizer(vocab_size: usize) -> Result<ChatTokenizer, ModelError> {
    let (tokens, merges) = test_vocab(vocab_size)?;
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    ChatTokenizer::from_vocab(&refs, merges, &TEST_SPECIALS)
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), ModelError> {
    std::fs::write(path, bytes).map_err(|e| ModelError::io(path, e))
}

/// Writes a random Llama model as a GGUF file: Q8_0 matrices and embeddings, F32 norms, q/k in
/// llama.cpp's interleaved layout, and a byte-level BPE tokenizer in the metadata.
pub fn write_random_gguf(path: &Path, config: &LlamaConfig, seed: u64) -> Result<(), ModelError> {
    let weights = random_weights(config, seed)?;
    let (tokens, merges) = test_vocab(config.vocab_size)?;
    let mut w = GgufWriter::default();
    let u32_meta = |v: usize| MetaValue::U32(v as u32);
    w.meta("general.architecture", MetaValue::String("llama".into()))
        .meta("general.name", MetaValue::String(format!("random-llama-{seed}")))
        .meta("llama.block_count", u32_meta(config.n_layers))
        .meta("llama.context_length", u32_meta(config.max_seq_len))
        .meta("llama.embedding_length", u32_meta(config.hidden_size))
        .meta("llama.feed_forward_length", u32_meta(config.intermediate_size))
        .meta("llama.attention.head_count", u32_meta(config.n_heads))
        .meta("llama.attention.head_count_kv", u32_meta(config.n_kv_heads))
        .meta("llama.rope.dimension_count", u32_meta(config.head_dim()))
        .meta("llama.rope.freq_base", MetaValue::F32(config.rope_theta))
        .meta("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(config.rms_norm_eps))
        .meta("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", MetaValue::String("smollm".into()))
        .meta(
            "tokenizer.ggml.tokens",
            MetaValue::Array(tokens.iter().map(|t| MetaValue::String(t.clone())).collect()),
        )
        .meta(
            "tokenizer.ggml.token_type",
            MetaValue::Array(
                (0..tokens.len())
                    .map(|i| MetaValue::I32(if i < TEST_SPECIALS.len() { 3 } else { 1 }))
                    .collect(),
            ),
        )
        .meta(
            "tokenizer.ggml.merges",
            MetaValue::Array(
                merges.iter().map(|(a, b)| MetaValue::String(format!("{a} {b}"))).collect(),
            ),
        )
        .meta("tokenizer.ggml.eos_token_id", MetaValue::U32(2));
    for (name, shape, values) in &weights.tensors {
        if shape.len() == 1 {
            w.tensor(name, shape, GgmlType::F32, values);
            continue;
        }
        let heads = match name.rsplit('.').nth(1) {
            Some("attn_q") => Some(config.n_heads),
            Some("attn_k") => Some(config.n_kv_heads),
            _ => None,
        };
        let values =
            heads.map_or_else(|| values.clone(), |n| hf_to_interleaved_rows(values, n, shape[1]));
        w.tensor(name, shape, GgmlType::Q8_0, &values);
    }
    write(path, w.to_bytes())
}

/// Writes the same random model as a Hugging Face directory: config.json, model.safetensors
/// (F32) and tokenizer.json.
pub fn write_random_hf_dir(dir: &Path, config: &LlamaConfig, seed: u64) -> Result<(), ModelError> {
    let weights = random_weights(config, seed)?;
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let config_json = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "rope_theta": config.rope_theta,
        "rms_norm_eps": config.rms_norm_eps,
        "max_position_embeddings": config.max_seq_len,
        "tie_word_embeddings": false,
        "rope_scaling": null,
        "torch_dtype": "float32",
        "eos_token_id": 2,
    });
    write(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&config_json).unwrap_or_default(),
    )?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .tensors
        .iter()
        .map(|(name, shape, values)| {
            let hf = hf_name(name).ok_or_else(|| ModelError::MissingTensor(name.clone()))?;
            Ok((hf, shape.clone(), values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| ModelError::Safetensors(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let file =
        safetensors::serialize(views, None).map_err(|e| ModelError::Safetensors(e.to_string()))?;
    write(&dir.join("model.safetensors"), file)?;
    write(&dir.join("tokenizer.json"), test_tokenizer(config.vocab_size)?.to_json()?)
}
