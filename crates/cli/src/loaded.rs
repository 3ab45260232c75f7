//! A model loaded for chatting or serving: squeezed weights, tokenizer and identity.

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
    let identity = ModelIdentity::of_path(&path)?;
    let loaded = based_model::LoadedModel::load(&path)
        .with_context(|| format!("cannot load model {}", path.display()))?;
    spinner.set_message("squeezing weights to int8 (calibrating on the built-in text)");
    let squeezed = loaded.squeeze()?;
    spinner.finish_and_clear();
    tracing::info!(model = %identity, elapsed_ms = started.elapsed().as_millis() as u64, "model loaded and squeezed");
    Ok(LoadedModel { identity, float: loaded.model, squeezed, tokenizer: loaded.tokenizer })
}

pub fn print_info(arg: &str) -> Result<()> {
    let model = load(arg)?;
    let mut stage_params = Vec::new();
    for layer in 0..model.squeezed.n_layers() {
        for stage in based_zkllm::STAGES {
            stage_params.push(based_zkllm::stage_params(model.squeezed.matrix(layer, stage))?);
        }
    }
    let log2_t = stage_params.iter().map(|p| p.log2_plaintext_modulus());
    let (low, high) = (log2_t.clone().min().unwrap_or(0), log2_t.max().unwrap_or(0));
    let params = &stage_params[0];
    let c = &model.squeezed.config;
    println!("model        {}", model.identity);
    println!(
        "shape        {} layers, hidden {}, {} heads / {} kv heads, ffn {}, vocab {}",
        c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads, c.intermediate_size, c.vocab_size
    );
    println!("squeezing    int8 per-output-channel weights, 8-bit per-token activations");
    println!(
        "encryption   RLWE N = {}, q = {} ({} bits), t = 2^{low}..2^{high} by stage",
        params.ring_degree(),
        params.ciphertext_modulus(),
        64 - params.ciphertext_modulus().leading_zeros(),
    );
    println!("max product  {}", based_zkllm::product_bound(&model.squeezed));
    Ok(())
}
