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
