//! The plaintext peer of the benchmark: candle's `quantized_llama` on the same model, with every
//! tensor converted to f32 first (built only with `--features peer-candle`: candle is a large
//! build that the tests do not need).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use based_model::gguf::{GgmlType, GgufFile, GgufWriter};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;

/// Greedy-decodes `count` tokens after `prompt` with candle on CPU; returns decode tokens/s and
/// the tokens, so the caller can check they agree with its own float reference.
pub fn decode(gguf_path: &Path, prompt: &[u32], count: usize) -> Result<(f64, Vec<u32>)> {
    let f32_copy = tempfile::NamedTempFile::new()?;
    write_f32_copy(gguf_path, f32_copy.path())?;
    let mut file = std::fs::File::open(f32_copy.path())?;
    let content = gguf_file::Content::read(&mut file).context("candle cannot read the GGUF")?;
    let device = Device::Cpu;
    let mut model = ModelWeights::from_gguf(content, &mut file, &device)?;
    let next = |logits: Tensor| -> Result<u32> { Ok(logits.squeeze(0)?.argmax(0)?.to_scalar()?) };
    let mut token = next(model.forward(&Tensor::new(prompt, &device)?.unsqueeze(0)?, 0)?)?;
    let mut tokens = vec![token];
    let started = Instant::now();
    for i in 0..count {
        let input = Tensor::new(&[token], &device)?.unsqueeze(0)?;
        token = next(model.forward(&input, prompt.len() + i)?)?;
        tokens.push(token);
    }
    let tokens_per_second = count as f64 / started.elapsed().as_secs_f64();
    tokens.pop();
    Ok((tokens_per_second, tokens))
}

/// Rewrites the model with every tensor dequantised to F32, metadata unchanged.
fn write_f32_copy(source: &Path, target: &Path) -> Result<()> {
    let gguf = GgufFile::read(source)?;
    let mut writer = GgufWriter::default();
    for (key, value) in &gguf.metadata {
        writer.meta(key, value.clone());
    }
    for info in &gguf.tensors {
        let shape: Vec<usize> = info.dims.iter().rev().copied().collect();
        writer.tensor(&info.name, &shape, GgmlType::F32, &gguf.tensor_f32(info)?);
    }
    std::fs::write(target, writer.to_bytes())?;
    Ok(())
}
