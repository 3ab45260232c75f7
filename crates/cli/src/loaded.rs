//! A model loaded for chatting or serving: squeezed weights, tokenizer and identity.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use based_model::{ChatTokenizer, FloatModel, SqueezedModel};
use based_zkllm::ModelIdentity;
use indicatif::ProgressBar;

pub struct LoadedModel {
    pub identity: ModelIdentity,
    pub float: FloatModel,
    pub squeezed: SqueezedModel,
    pub tokenizer: ChatTokenizer,
}

/// Resolves `arg` (a known name, fetched if needed, or a path), loads and squeezes it.
pub fn load(arg: &str) -> Result<LoadedModel> {
    let path = crate::fetch::resolve_model(arg)?;
    let started = Instant::now();
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("loading {}", path.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let hash = based_model::content_hash(&based_model::model_files(&path)?)?;
    let loaded = based_model::LoadedModel::load(&path)
        .with_context(|| format!("cannot load model {}", path.display()))?;
    spinner.set_message("squeezing weights to int8");
    let squeezed = SqueezedModel::from_float(&loaded.model);
    spinner.finish_and_clear();
    let name = display_name(&path);
    tracing::info!(model = %name, elapsed_ms = started.elapsed().as_millis() as u64, "model loaded and squeezed");
    let identity = ModelIdentity { name, hash: parse_hash(&hash)? };
    Ok(LoadedModel { identity, float: loaded.model, squeezed, tokenizer: loaded.tokenizer })
}

fn parse_hash(hex: &str) -> Result<[u8; 32]> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("content hash {hex} is not hex"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("content hash {hex} is not 32 bytes"))
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

pub fn print_info(arg: &str) -> Result<()> {
    let model = load(arg)?;
    let params = based_zkllm::encryption_params(&model.squeezed)?;
    let c = &model.squeezed.config;
    println!("model        {}", model.identity);
    println!(
        "shape        {} layers, hidden {}, {} heads / {} kv heads, ffn {}, vocab {}",
        c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads, c.intermediate_size, c.vocab_size
    );
    println!("squeezing    int8 per-output-channel weights, 8-bit per-token activations");
    println!(
        "encryption   RLWE N = {}, q = {} ({} bits), t = 2^{}",
        params.ring_degree(),
        params.ciphertext_modulus(),
        64 - params.ciphertext_modulus().leading_zeros(),
        params.plaintext_modulus().trailing_zeros()
    );
    println!("max product  {}", based_zkllm::product_bound(&model.squeezed));
    Ok(())
}
