//! The Llama forward pass. Only the four linear stages per layer leave this file (through
//! [`LinearBackend`]); embedding lookup, RMSNorm, RoPE, attention over the KV cache, SiLU,
//! residuals and the LM head run here, single-threaded in a fixed order (the LM head's integer
//! product may use threads: integer sums are exact), so identical products give bitwise
//! identical logits.

use sha2::{Digest, Sha256};

use crate::float::{FloatModel, Matrix};
use crate::squeeze::{
    self, HeadInput, QuantMatrix, SqueezedModel, Stage, dot_f32, dot_i8_f32, squeeze_activation,
};
use crate::{BackendError, LlamaConfig, ModelError};

/// Computes the exact integer products of the squeezed weights with the client's codes.
pub trait LinearBackend {
    /// Exact integer products W_q(layer, stage) * code for each input row (one row per token),
    /// each result row has the stage's output width.
    fn products(
        &mut self,
        layer: usize,
        stage: Stage,
        codes: &[Vec<i8>],
    ) -> Result<Vec<Vec<i64>>, BackendError>;
}

/// The model-specific parts of the forward pass: float or squeezed linear stages and LM head.
trait Stages {
    fn config(&self) -> &LlamaConfig;
    fn embedding(&self) -> &Matrix;
    /// `xs` are RMS-normalised without their gains for Qkv and GateUp; the stage applies them.
    fn linear(
        &mut self,
        layer: usize,
        stage: Stage,
        xs: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>, BackendError>;
    /// Logits of each final-normalised (ungained) row.
    fn logits(&self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, BackendError>;
}

struct SqueezedStages<'a> {
    model: &'a SqueezedModel,
    backend: &'a mut dyn LinearBackend,
    threads: usize,
}

impl Stages for SqueezedStages<'_> {
    fn config(&self) -> &LlamaConfig {
        &self.model.config
    }

    fn embedding(&self) -> &Matrix {
        &self.model.embedding
    }

    fn linear(
        &mut self,
        layer: usize,
        stage: Stage,
        xs: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let gain = self.model.input_gain(layer, stage);
        let matrix = self.model.matrix(layer, stage);
        squeezed_linear(matrix, gain, xs, |codes| {
            let products = self.backend.products(layer, stage, codes)?;
            if products.len() != codes.len() {
                let (got, sent) = (products.len(), codes.len());
                return Err(format!(
                    "{stage:?} of layer {layer}: {got} result rows for {sent} inputs"
                )
                .into());
            }
            Ok(products)
        })
    }

    fn logits(&self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, BackendError> {
        let head = self.model.lm_head();
        if self.model.head_input == HeadInput::Float {
            let gained: Vec<_> = xs.iter().map(|x| apply_gain(x, self.model.head_gain())).collect();
            // Each logit is one fixed-order dot product: bitwise the same for any thread count.
            let by_row = squeeze::for_each_row(
                head.rows,
                gained.len(),
                head.rows * head.cols * gained.len(),
                self.threads,
                |r, out: &mut [f32]| {
                    let (w, scale) = (head.row(r), head.scales[r]);
                    out.iter_mut().zip(&gained).for_each(|(o, x)| *o = scale * dot_i8_f32(w, x));
                },
            );
            let n = gained.len();
            return Ok((0..n)
                .map(|t| (0..head.rows).map(|r| by_row[r * n + t]).collect())
                .collect());
        }
        squeezed_linear(head, self.model.head_gain(), xs, |codes| {
            Ok(head.products(codes, self.threads))
        })
    }
}

/// Applies the gains, squeezes each row, lets `multiply` compute the integer products and
/// dequantises them.
fn squeezed_linear(
    matrix: &QuantMatrix,
    gain: Option<&[f32]>,
    xs: &[Vec<f32>],
    multiply: impl FnOnce(&[Vec<i8>]) -> Result<Vec<Vec<i64>>, BackendError>,
) -> Result<Vec<Vec<f32>>, BackendError> {
    let squeezed: Vec<_> = xs.iter().map(|x| squeeze_activation(&apply_gain(x, gain))).collect();
    let codes: Vec<Vec<i8>> = squeezed.iter().map(|s| s.codes.clone()).collect();
    let products = multiply(&codes)?;
    products.iter().zip(&squeezed).map(|(p, s)| matrix.dequantize(p, s)).collect()
}

struct FloatStages<'a> {
    model: &'a FloatModel,
    threads: usize,
}

fn float_product(m: &Matrix, xs: &[Vec<f32>], threads: usize) -> Vec<Vec<f32>> {
    let by_row = squeeze::for_each_row(
        m.rows,
        xs.len(),
        m.rows * m.cols * xs.len(),
        threads,
        |r, out: &mut [f32]| {
            let w = m.row(r);
            out.iter_mut().zip(xs).for_each(|(o, x)| *o = dot_f32(w, x));
        },
    );
    (0..xs.len()).map(|t| (0..m.rows).map(|r| by_row[r * xs.len() + t]).collect()).collect()
}

impl Stages for FloatStages<'_> {
    fn config(&self) -> &LlamaConfig {
        &self.model.config
    }

    fn embedding(&self) -> &Matrix {
        &self.model.embedding
    }

    fn linear(
        &mut self,
        layer: usize,
        stage: Stage,
        xs: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let (m, gain) = self.model.stage(layer, stage);
        let gained: Vec<_> = xs.iter().map(|x| apply_gain(x, gain)).collect();
        Ok(float_product(m, &gained, self.threads))
    }

    fn logits(&self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, BackendError> {
        let gained: Vec<_> =
            xs.iter().map(|x| apply_gain(x, Some(&self.model.final_norm))).collect();
        Ok(float_product(self.model.output_matrix(), &gained, self.threads))
    }
}

/// The float model's stages, recording the largest |x_j| each stage's input channel reaches
/// (after the client-side gains, i.e. exactly what the squeezed model would quantise).
struct RecordingStages<'a> {
    inner: FloatStages<'a>,
    /// Per layer, per stage (in [`Stage::ALL`] order): per input channel max |x_j|.
    absmax: Vec<[Vec<f32>; 4]>,
}

fn record_absmax(acc: &mut Vec<f32>, xs: &[Vec<f32>]) {
    for x in xs {
        if acc.len() < x.len() {
            acc.resize(x.len(), 0.0);
        }
        acc.iter_mut().zip(x).for_each(|(a, v)| *a = a.max(v.abs()));
    }
}

impl Stages for RecordingStages<'_> {
    fn config(&self) -> &LlamaConfig {
        self.inner.config()
    }

    fn embedding(&self) -> &Matrix {
        self.inner.embedding()
    }

    fn linear(
        &mut self,
        layer: usize,
        stage: Stage,
        xs: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let (_, gain) = self.inner.model.stage(layer, stage);
        let gained: Vec<_> = xs.iter().map(|x| apply_gain(x, gain)).collect();
        let index = Stage::ALL.iter().position(|&s| s == stage).unwrap_or(0);
        record_absmax(&mut self.absmax[layer][index], &gained);
        self.inner.linear(layer, stage, xs)
    }

    fn logits(&self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.inner.logits(xs)
    }
}

/// Per-input-channel activation ranges of every linear stage, measured with the float model on
/// a calibration text: what SmoothQuant-style smoothing factors are computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationStats {
    /// Per layer, per stage (in [`Stage::ALL`] order): max |x_j| per input channel.
    pub absmax: Vec<[Vec<f32>; 4]>,
}

impl ActivationStats {
    /// Runs the float model over `tokens` (one prefill) and records every stage input's
    /// per-channel max |x_j|.
    pub fn measure(model: &FloatModel, tokens: &[u32]) -> Result<Self, BackendError> {
        let inner = FloatStages { model, threads: squeeze::default_threads() };
        let layers = model.layers.len();
        let mut stages = RecordingStages {
            inner,
            absmax: vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; layers],
        };
        KvCache::new(&model.config).forward(&mut stages, tokens, false)?;
        Ok(Self { absmax: stages.absmax })
    }

    pub fn stage(&self, layer: usize, stage: Stage) -> &[f32] {
        let index = Stage::ALL.iter().position(|&s| s == stage).unwrap_or(0);
        &self.absmax[layer][index]
    }
}

/// KV cache and position of one conversation.
#[derive(Clone, Debug)]
struct KvCache {
    /// Per layer, per position: the RoPE'd key and the value (`kv_dim` each).
    keys: Vec<Vec<Vec<f32>>>,
    values: Vec<Vec<Vec<f32>>>,
    inverse_frequencies: Vec<f32>,
}

impl KvCache {
    fn new(config: &LlamaConfig) -> Self {
        let head_dim = config.head_dim();
        let inverse_frequencies = (0..head_dim / 2)
            .map(|i| config.rope_theta.powf(-2.0 * i as f32 / head_dim as f32))
            .collect();
        Self {
            keys: vec![Vec::new(); config.n_layers],
            values: vec![Vec::new(); config.n_layers],
            inverse_frequencies,
        }
    }

    fn position(&self) -> usize {
        self.keys[0].len()
    }

    /// Interleaved RoPE (pairs `2i, 2i+1`), the GGUF layout both loaders produce.
    fn rope(&self, v: &mut [f32], position: usize) {
        let head_dim = self.inverse_frequencies.len() * 2;
        for head in v.chunks_exact_mut(head_dim) {
            for (pair, &freq) in head.chunks_exact_mut(2).zip(&self.inverse_frequencies) {
                let (sin, cos) = (position as f32 * freq).sin_cos();
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos - b * sin;
                pair[1] = a * sin + b * cos;
            }
        }
    }

    /// Causal grouped-query attention of one query over the first `visible` cached positions.
    fn attend(&self, config: &LlamaConfig, layer: usize, q: &[f32], visible: usize) -> Vec<f32> {
        let head_dim = config.head_dim();
        let group = config.n_heads / config.n_kv_heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut out = vec![0f32; config.hidden_size];
        for (head, (q, o)) in
            q.chunks_exact(head_dim).zip(out.chunks_exact_mut(head_dim)).enumerate()
        {
            let kv = (head / group) * head_dim..(head / group + 1) * head_dim;
            let scores: Vec<f32> = self.keys[layer][..visible]
                .iter()
                .map(|k| dot_f32(q, &k[kv.clone()]) * scale)
                .collect();
            for (w, v) in softmax(&scores).iter().zip(&self.values[layer][..visible]) {
                o.iter_mut().zip(&v[kv.clone()]).for_each(|(o, v)| *o += w * v);
            }
        }
        out
    }

    /// Runs `tokens` through the model, extending the cache; returns the logits of every token
    /// when `all_logits`, else of the last one only. On error the cache is rolled back, so the
    /// caller may retry (e.g. after a network failure inside the backend).
    fn forward(
        &mut self,
        stages: &mut dyn Stages,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let start = self.position();
        let result = self.extend(stages, tokens, all_logits);
        if result.is_err() {
            self.keys.iter_mut().chain(&mut self.values).for_each(|rows| rows.truncate(start));
        }
        result
    }

    fn extend(
        &mut self,
        stages: &mut dyn Stages,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let config = stages.config().clone();
        let start = self.position();
        if tokens.is_empty() {
            return Err("no tokens to process".into());
        }
        if start + tokens.len() > config.max_seq_len {
            return Err(format!(
                "context of {} tokens exceeds the model's {}",
                start + tokens.len(),
                config.max_seq_len
            )
            .into());
        }
        let mut xs = tokens
            .iter()
            .map(|&t| match usize::try_from(t).ok().filter(|&t| t < config.vocab_size) {
                Some(t) => Ok(stages.embedding().row(t).to_vec()),
                None => Err(BackendError::from(format!("token id {t} outside the vocabulary"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (h, kv) = (config.hidden_size, config.kv_dim());
        let eps = config.rms_norm_eps;
        for layer in 0..config.n_layers {
            let normed: Vec<_> = xs.iter().map(|x| rms_norm(x, eps)).collect();
            let qkv = stages.linear(layer, Stage::Qkv, &normed)?;
            let mut queries = Vec::with_capacity(tokens.len());
            for (t, row) in qkv.into_iter().enumerate() {
                let (mut q, mut k, v) =
                    (row[..h].to_vec(), row[h..h + kv].to_vec(), row[h + kv..].to_vec());
                self.rope(&mut q, start + t);
                self.rope(&mut k, start + t);
                queries.push(q);
                self.keys[layer].push(k);
                self.values[layer].push(v);
            }
            let attended: Vec<Vec<f32>> = queries
                .iter()
                .enumerate()
                .map(|(t, q)| self.attend(&config, layer, q, start + t + 1))
                .collect();
            let attn_out = stages.linear(layer, Stage::AttnOut, &attended)?;
            add_rows(&mut xs, &attn_out);
            let normed: Vec<_> = xs.iter().map(|x| rms_norm(x, eps)).collect();
            let gate_up = stages.linear(layer, Stage::GateUp, &normed)?;
            let ff = config.intermediate_size;
            let activated: Vec<Vec<f32>> = gate_up
                .iter()
                .map(|gu| {
                    gu[..ff]
                        .iter()
                        .zip(&gu[ff..])
                        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                        .collect()
                })
                .collect();
            let down = stages.linear(layer, Stage::Down, &activated)?;
            add_rows(&mut xs, &down);
        }
        let wanted = if all_logits { &xs[..] } else { &xs[xs.len() - 1..] };
        let normed: Vec<_> = wanted.iter().map(|x| rms_norm(x, eps)).collect();
        stages.logits(&normed)
    }
}

fn apply_gain(x: &[f32], gain: Option<&[f32]>) -> Vec<f32> {
    match gain {
        Some(g) => x.iter().zip(g).map(|(v, g)| v * g).collect(),
        None => x.to_vec(),
    }
}

fn rms_norm(x: &[f32], eps: f32) -> Vec<f32> {
    let mean_square = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inverse = 1.0 / (mean_square + eps).sqrt();
    x.iter().map(|v| v * inverse).collect()
}

fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

fn add_rows(xs: &mut [Vec<f32>], deltas: &[Vec<f32>]) {
    for (x, d) in xs.iter_mut().zip(deltas) {
        x.iter_mut().zip(d).for_each(|(x, d)| *x += d);
    }
}

/// Index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding shared by both generators: feeds `prompt`, then each argmax token, until a
/// stop token (not emitted to `on_token`, but returned) or `max_new` tokens.
fn greedy(
    prompt: &[u32],
    max_new: usize,
    stop_tokens: &[u32],
    mut prefill: impl FnMut(&[u32]) -> Result<Vec<f32>, BackendError>,
    on_token: &mut dyn FnMut(u32),
) -> Result<Vec<u32>, BackendError> {
    let mut generated = Vec::new();
    let mut logits = prefill(prompt)?;
    while generated.len() < max_new {
        let token = argmax(&logits);
        generated.push(token);
        if stop_tokens.contains(&token) {
            break;
        }
        on_token(token);
        if generated.len() < max_new {
            logits = prefill(&[token])?;
        }
    }
    Ok(generated)
}

/// One conversation with the squeezed model: KV cache and position, linear products delegated
/// to a [`LinearBackend`].
pub struct Generator<'m> {
    model: &'m SqueezedModel,
    cache: KvCache,
    threads: usize,
}

impl<'m> Generator<'m> {
    pub fn new(model: &'m SqueezedModel) -> Self {
        Self { model, cache: KvCache::new(&model.config), threads: squeeze::default_threads() }
    }

    /// Tokens processed so far.
    pub fn position(&self) -> usize {
        self.cache.position()
    }

    fn run(
        &mut self,
        tokens: &[u32],
        backend: &mut dyn LinearBackend,
        all: bool,
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let mut stages = SqueezedStages { model: self.model, backend, threads: self.threads };
        self.cache.forward(&mut stages, tokens, all)
    }

    /// Processes all `tokens` with one `products` call per layer and stage; returns the logits
    /// of the last token.
    pub fn prefill(
        &mut self,
        tokens: &[u32],
        backend: &mut dyn LinearBackend,
    ) -> Result<Vec<f32>, BackendError> {
        Ok(self.run(tokens, backend, false)?.remove(0))
    }

    /// Like [`Self::prefill`] but returns the logits of every token (for perplexity).
    pub fn prefill_all(
        &mut self,
        tokens: &[u32],
        backend: &mut dyn LinearBackend,
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        self.run(tokens, backend, true)
    }

    pub fn step(
        &mut self,
        token: u32,
        backend: &mut dyn LinearBackend,
    ) -> Result<Vec<f32>, BackendError> {
        self.prefill(&[token], backend)
    }

    /// Greedy generation; returns the generated tokens including a final stop token, calling
    /// `on_token` for each non-stop token as it is produced.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_new: usize,
        stop_tokens: &[u32],
        backend: &mut dyn LinearBackend,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Vec<u32>, BackendError> {
        greedy(prompt, max_new, stop_tokens, |t| self.prefill(t, backend), on_token)
    }
}

/// Leads every saved conversation state (`Generator::saved_state`), with its format version.
const SAVED_STATE_MAGIC: [u8; 4] = *b"BKV1";

impl<'m> Generator<'m> {
    /// The conversation so far, to resume it later without recomputing it (a chat's system
    /// prompt, say): `tokens` (what was processed, checked against the position) and every
    /// layer's keys and values, bit for bit. Layout: "BKV1", layers, kv_dim, positions (u32
    /// LE), the token ids (u32 LE), then per layer per position the key, then the value (f32
    /// LE), then the SHA-256 of all that (a damaged file must not pass for a conversation).
    pub fn saved_state(&self, tokens: &[u32]) -> Result<Vec<u8>, ModelError> {
        let positions = self.position();
        if tokens.len() != positions {
            return Err(ModelError::SavedState(format!(
                "{} tokens given for a conversation at position {positions}",
                tokens.len()
            )));
        }
        let config = &self.model.config;
        let mut out = SAVED_STATE_MAGIC.to_vec();
        for n in [config.n_layers, config.kv_dim(), positions] {
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        tokens.iter().for_each(|t| out.extend_from_slice(&t.to_le_bytes()));
        for (keys, values) in self.cache.keys.iter().zip(&self.cache.values) {
            for row in keys.iter().chain(values) {
                row.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        Ok(out)
    }

    /// Resumes a conversation from [`Self::saved_state`]'s bytes, made for a model of this
    /// shape; returns the generator and the tokens it has processed. Strict: a wrong header,
    /// shape or length is an error, never a half-restored cache.
    pub fn resume(
        model: &'m SqueezedModel,
        bytes: &[u8],
    ) -> Result<(Generator<'m>, Vec<u32>), ModelError> {
        let corrupt = |why: String| ModelError::SavedState(why);
        let word = |i: usize| -> Result<u32, ModelError> {
            let at = 4 + 4 * i;
            let raw = bytes.get(at..at + 4).ok_or_else(|| corrupt("truncated header".into()))?;
            Ok(u32::from_le_bytes(raw.try_into().expect("4 bytes")))
        };
        if bytes.get(..4) != Some(&SAVED_STATE_MAGIC[..]) {
            return Err(corrupt("not a saved conversation state (bad magic)".into()));
        }
        let Some((bytes, digest)) = bytes.split_last_chunk::<32>() else {
            return Err(corrupt("truncated header".into()));
        };
        if Sha256::digest(bytes).as_slice() != digest {
            return Err(corrupt("checksum mismatch: the file is damaged".into()));
        }
        let config = &model.config;
        let (layers, kv_dim, positions) = (word(0)? as usize, word(1)? as usize, word(2)? as usize);
        if layers != config.n_layers || kv_dim != config.kv_dim() {
            return Err(corrupt(format!(
                "saved for {layers} layers of kv_dim {kv_dim}, the model has {} of {}",
                config.n_layers,
                config.kv_dim()
            )));
        }
        if positions > config.max_seq_len {
            return Err(corrupt(format!("{positions} positions exceed the model's context")));
        }
        let body = &bytes[16..];
        let expected = 4 * (positions + 2 * layers * positions * kv_dim);
        if body.len() != expected {
            return Err(corrupt(format!(
                "{} bytes after the header, expected {expected}",
                body.len()
            )));
        }
        let (ids, floats) = body.split_at(4 * positions);
        let tokens =
            ids.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4"))).collect();
        let mut rows = floats.chunks_exact(4 * kv_dim).map(|row| {
            row.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect()
        });
        let mut generator = Generator::new(model);
        for layer in 0..layers {
            generator.cache.keys[layer] = rows.by_ref().take(positions).collect();
            generator.cache.values[layer] = rows.by_ref().take(positions).collect();
        }
        Ok((generator, tokens))
    }
}

/// One conversation with the float reference model.
pub struct FloatGenerator<'m> {
    model: &'m FloatModel,
    cache: KvCache,
    threads: usize,
}

impl<'m> FloatGenerator<'m> {
    pub fn new(model: &'m FloatModel) -> Self {
        Self { model, cache: KvCache::new(&model.config), threads: squeeze::default_threads() }
    }

    fn run(&mut self, tokens: &[u32], all: bool) -> Result<Vec<Vec<f32>>, BackendError> {
        let mut stages = FloatStages { model: self.model, threads: self.threads };
        self.cache.forward(&mut stages, tokens, all)
    }

    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        Ok(self.run(tokens, false)?.remove(0))
    }

    pub fn prefill_all(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.run(tokens, true)
    }

    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_new: usize,
        stop_tokens: &[u32],
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Vec<u32>, BackendError> {
        greedy(prompt, max_new, stop_tokens, |t| self.prefill(t), on_token)
    }
}

/// exp(mean negative log-likelihood of each token given the ones before it).
pub fn perplexity_from_logits(logits: &[Vec<f32>], tokens: &[u32]) -> f64 {
    let mut nll = 0f64;
    let mut count = 0usize;
    for (row, &next) in logits.iter().zip(&tokens[1..]) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let log_sum =
            row.iter().map(|&v| f64::from(v - max).exp()).sum::<f64>().ln() + f64::from(max);
        nll += log_sum - f64::from(row[next as usize]);
        count += 1;
    }
    (nll / count.max(1) as f64).exp()
}

pub fn float_perplexity(model: &FloatModel, tokens: &[u32]) -> Result<f64, BackendError> {
    let logits = FloatGenerator::new(model).prefill_all(tokens)?;
    Ok(perplexity_from_logits(&logits, tokens))
}

pub fn squeezed_perplexity(
    model: &SqueezedModel,
    tokens: &[u32],
    backend: &mut dyn LinearBackend,
) -> Result<f64, BackendError> {
    let logits = Generator::new(model).prefill_all(tokens, backend)?;
    Ok(perplexity_from_logits(&logits, tokens))
}
