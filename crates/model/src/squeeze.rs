//! Cerberus squeezing: per-output-channel symmetric int8 weights and per-token dynamic
//! activation quantisation with the whitepaper's adaptive scaling (section 5).

use crate::float::{FloatModel, Matrix};
use crate::forward::ActivationStats;
use crate::{BackendError, LlamaConfig};

/// Whitepaper section 5: threshold on a token's standard deviation.
pub const ADAPTIVE_THRESHOLD: f32 = 0.1;
/// Whitepaper section 5: scale down by alpha above the threshold, up by 1/alpha below.
pub const ADAPTIVE_ALPHA: f32 = 0.5;
/// Whitepaper section 5: quantisation levels between a token's min and max.
pub const LEVELS: u32 = 256;

/// The four linear stages of a layer, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Fused Q/K/V: rows are q, then k, then v.
    Qkv,
    AttnOut,
    /// Fused gate/up: rows are gate, then up.
    GateUp,
    Down,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Qkv, Stage::AttnOut, Stage::GateUp, Stage::Down];

    const fn index(self) -> usize {
        match self {
            Stage::Qkv => 0,
            Stage::AttnOut => 1,
            Stage::GateUp => 2,
            Stage::Down => 3,
        }
    }
}

/// Per-output-channel symmetric int8 weights: `W[r][c] ~= scales[r] * weights[r * cols + c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    pub rows: usize,
    pub cols: usize,
    /// Row-major `rows x cols`, values in -127..=127.
    pub weights: Vec<i8>,
    pub scales: Vec<f32>,
    /// Sum of each row's integer weights, to apply the activation offset after the product.
    pub row_sums: Vec<i32>,
}

impl QuantMatrix {
    pub fn quantize(m: &Matrix) -> Self {
        let mut weights = Vec::with_capacity(m.data.len());
        let mut scales = Vec::with_capacity(m.rows);
        let mut row_sums = Vec::with_capacity(m.rows);
        for row in m.data.chunks_exact(m.cols) {
            let max = row.iter().fold(0f32, |acc, w| acc.max(w.abs()));
            let scale = max / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let start = weights.len();
            weights.extend(row.iter().map(|w| (w * inverse).round().clamp(-127.0, 127.0) as i8));
            row_sums.push(weights[start..].iter().map(|&q| i32::from(q)).sum());
            scales.push(scale);
        }
        Self { rows: m.rows, cols: m.cols, weights, scales, row_sums }
    }

    /// The largest |(W_q code)_r| any code can produce: 128 times the largest row sum of |W_q|.
    /// An encrypted backend needs its plaintext modulus above twice this to stay exact.
    pub fn max_abs_product(&self) -> i64 {
        let row_bound = |row: &[i8]| row.iter().map(|&w| i64::from(w).abs()).sum::<i64>() * 128;
        self.weights.chunks_exact(self.cols.max(1)).map(row_bound).max().unwrap_or(0)
    }

    pub fn row(&self, r: usize) -> &[i8] {
        &self.weights[r * self.cols..(r + 1) * self.cols]
    }

    /// Exact `W_q code` for each input row, accumulated in i32 (at most 127 * 128 * cols, which
    /// fits for any `cols` below 132,000), computed on up to `threads` threads.
    pub fn products(&self, codes: &[Vec<i8>], threads: usize) -> Vec<Vec<i64>> {
        let per_row = |r: usize, out: &mut [i64]| {
            let w = self.row(r);
            for (o, code) in out.iter_mut().zip(codes) {
                *o = i64::from(dot_i8(w, code));
            }
        };
        // Computed row-major (one weight row against every token) so each row is read once.
        let by_row = for_each_row(
            self.rows,
            codes.len(),
            self.rows * self.cols * codes.len(),
            threads,
            per_row,
        );
        transpose(&by_row, self.rows, codes.len())
    }

    /// `y_r = scale_w_r * (scale_x * (W_q code)_r + offset_x * rowsum_r)`.
    pub fn dequantize(
        &self,
        products: &[i64],
        x: &SqueezedActivation,
    ) -> Result<Vec<f32>, BackendError> {
        if products.len() != self.rows {
            return Err(format!(
                "product row has {} values, expected {}",
                products.len(),
                self.rows
            )
            .into());
        }
        Ok(products
            .iter()
            .zip(&self.scales)
            .zip(&self.row_sums)
            .map(|((&p, &scale_w), &row_sum)| {
                scale_w * (x.scale * p as f32 + x.offset * row_sum as f32)
            })
            .collect())
    }
}

/// A token's activations as centred codes: `x[j] ~= scale * codes[j] + offset`.
#[derive(Clone, Debug, PartialEq)]
pub struct SqueezedActivation {
    pub codes: Vec<i8>,
    pub scale: f32,
    pub offset: f32,
}

/// Whitepaper section 5 on one token: sigma = std-dev of the token, S = alpha if sigma > T
/// else 1/alpha, then L = 256 levels between min and max of `S x`. The codes are returned
/// centred (level - 128) and `scale`/`offset` undo both the level mapping and S.
pub fn squeeze_activation(x: &[f32]) -> SqueezedActivation {
    let n = x.len().max(1) as f32;
    let mean = x.iter().sum::<f32>() / n;
    let sigma = (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt();
    let s = if sigma > ADAPTIVE_THRESHOLD { ADAPTIVE_ALPHA } else { 1.0 / ADAPTIVE_ALPHA };
    let (min, max) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(s * v), hi.max(s * v)));
    if x.is_empty() || max <= min {
        let value = x.first().copied().unwrap_or(0.0);
        return SqueezedActivation { codes: vec![0; x.len()], scale: 0.0, offset: value };
    }
    let half = (LEVELS / 2) as f32;
    let step = (max - min) / (LEVELS - 1) as f32;
    let codes = x
        .iter()
        .map(|&v| (((s * v - min) / step).round() - half).clamp(-half, half - 1.0) as i8)
        .collect();
    SqueezedActivation { codes, scale: step / s, offset: (min + half * step) / s }
}

/// Where the RMSNorm gains go. Either way the miner only sees codes and the product is the same
/// in exact arithmetic; the two differ in what gets quantised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormGains {
    /// The client multiplies the normalised x by the gains before squeezing (sends g * x): the
    /// gains damp the residual stream's outlier channels, so 8-bit codes lose less. The default.
    ClientSide,
    /// Folded into the matrix columns (`W diag(g)`) before quantising; the client squeezes the
    /// bare normalised x, whose outlier channels then stretch the 256 levels.
    Folded,
}

/// SmoothQuant's migration strength: `s_j = sqrt(a_j / w_j)` balances the activation and weight
/// ranges of each input channel. Chosen by the KL divergence to the float model on the
/// calibration text (0.4, 0.5, 0.6 and 0.7 measured; README).
pub const SMOOTHING_ALPHA: f32 = 0.5;

/// The LM head's input on the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadInput {
    /// Squeezed to 8-bit codes like the miner's stages (integer product).
    Squeezed,
    /// Kept in f32 and multiplied by the int8 head weights in f32: the head runs on the client,
    /// so nothing forces its input through 8 bits.
    Float,
}

/// A squeezed matrix and the gains the client applies to its input first (if any).
#[derive(Clone, Debug)]
struct SqueezedStage {
    matrix: QuantMatrix,
    input_gain: Option<Vec<f32>>,
}

impl SqueezedStage {
    fn new(m: &Matrix, gain: Option<&[f32]>, placement: NormGains) -> Self {
        match (gain, placement) {
            (Some(g), NormGains::Folded) => {
                Self { matrix: QuantMatrix::quantize(&m.with_gains_folded(g)), input_gain: None }
            }
            _ => Self { matrix: QuantMatrix::quantize(m), input_gain: gain.map(<[f32]>::to_vec) },
        }
    }
}

impl SqueezedStage {
    /// SmoothQuant on one stage: `absmax[j]` is the calibration range of the (gained) input
    /// channel j. Channels never seen active, or with all-zero weights, keep `s_j = 1`.
    fn smoothed(m: &Matrix, gain: Option<&[f32]>, absmax: &[f32], alpha: f32) -> Self {
        let mut col_max = vec![0f32; m.cols];
        for row in m.data.chunks_exact(m.cols) {
            col_max.iter_mut().zip(row).for_each(|(c, w)| *c = c.max(w.abs()));
        }
        let factors: Vec<f32> = col_max
            .iter()
            .zip(absmax)
            .map(
                |(&w, &a)| {
                    if w > 0.0 && a > 0.0 { a.powf(alpha) / w.powf(1.0 - alpha) } else { 1.0 }
                },
            )
            .collect();
        let input_gain = match gain {
            Some(g) => g.iter().zip(&factors).map(|(g, s)| g / s).collect(),
            None => factors.iter().map(|s| 1.0 / s).collect(),
        };
        let matrix = QuantMatrix::quantize(&m.with_gains_folded(&factors));
        Self { matrix, input_gain: Some(input_gain) }
    }
}

/// The squeezed model: what the miner multiplies (`matrix`) and what the client needs around it.
#[derive(Clone, Debug)]
pub struct SqueezedModel {
    pub config: LlamaConfig,
    pub norm_gains: NormGains,
    /// f32 embeddings for the client's token lookup.
    pub embedding: Matrix,
    layers: Vec<[SqueezedStage; 4]>,
    /// How the client feeds the LM head (it never leaves the client).
    pub head_input: HeadInput,
    /// The output projection, squeezed like the other matrices but computed by the client.
    head: SqueezedStage,
}

impl SqueezedModel {
    pub fn from_float(model: &FloatModel) -> Self {
        Self::from_float_with(model, NormGains::ClientSide)
    }

    pub fn from_float_with(model: &FloatModel, norm_gains: NormGains) -> Self {
        let layers = (0..model.layers.len())
            .map(|l| {
                Stage::ALL.map(|s| {
                    let (m, gain) = model.stage(l, s);
                    SqueezedStage::new(m, gain, norm_gains)
                })
            })
            .collect();
        let head = SqueezedStage::new(model.output_matrix(), Some(&model.final_norm), norm_gains);
        let embedding = model.embedding.clone();
        Self {
            config: model.config.clone(),
            norm_gains,
            embedding,
            layers,
            head,
            head_input: HeadInput::Squeezed,
        }
    }

    /// Like [`Self::from_float`] (gains client-side) with SmoothQuant-style per-input-channel
    /// smoothing: for each stage, `s_j = a_j^alpha / w_j^(1 - alpha)` from the calibration range
    /// `a_j` of input channel j and the largest |W[:, j]|; the matrix becomes `W diag(s)` before
    /// int8 quantisation and the client sends `x_j / s_j` (folded into its input gains).
    pub fn from_float_smoothed(model: &FloatModel, stats: &ActivationStats, alpha: f32) -> Self {
        let layers = (0..model.layers.len())
            .map(|l| {
                Stage::ALL.map(|s| {
                    let (m, gain) = model.stage(l, s);
                    SqueezedStage::smoothed(m, gain, stats.stage(l, s), alpha)
                })
            })
            .collect();
        Self { layers, ..Self::from_float(model) }
    }

    /// The recommended squeezing: [`Self::from_float_smoothed`] with [`SMOOTHING_ALPHA`] and
    /// statistics measured by the float model on `calibration` (tokens of a text that is not
    /// the evaluation text; [`crate::LoadedModel::squeeze`] uses [`crate::CALIBRATION_TEXT`];
    /// cut to the model's context length),
    /// and an LM head whose input the client keeps in f32 ([`HeadInput::Float`]).
    pub fn calibrated(model: &FloatModel, calibration: &[u32]) -> Result<Self, BackendError> {
        let calibration = &calibration[..calibration.len().min(model.config.max_seq_len)];
        let stats = ActivationStats::measure(model, calibration)?;
        Ok(Self {
            head_input: HeadInput::Float,
            ..Self::from_float_smoothed(model, &stats, SMOOTHING_ALPHA)
        })
    }

    /// The integer matrix the backend multiplies for `stage` of `layer`.
    pub fn matrix(&self, layer: usize, stage: Stage) -> &QuantMatrix {
        &self.layers[layer][stage.index()].matrix
    }

    /// Gains the client multiplies into a stage's normalised input before squeezing it.
    pub fn input_gain(&self, layer: usize, stage: Stage) -> Option<&[f32]> {
        self.layers[layer][stage.index()].input_gain.as_deref()
    }

    /// The LM head (SmolLM2: the tied embeddings), computed by the client, never sent out.
    pub fn lm_head(&self) -> &QuantMatrix {
        &self.head.matrix
    }

    pub(crate) fn head_gain(&self) -> Option<&[f32]> {
        self.head.input_gain.as_deref()
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }
}

/// Computes the products in plaintext straight from the squeezed matrices.
pub struct PlainBackend<'a> {
    model: &'a SqueezedModel,
    threads: usize,
}

impl<'a> PlainBackend<'a> {
    pub fn new(model: &'a SqueezedModel) -> Self {
        Self { model, threads: default_threads() }
    }

    pub fn with_threads(model: &'a SqueezedModel, threads: usize) -> Self {
        Self { model, threads: threads.max(1) }
    }
}

impl crate::LinearBackend for PlainBackend<'_> {
    fn products(
        &mut self,
        layer: usize,
        stage: Stage,
        codes: &[Vec<i8>],
    ) -> Result<Vec<Vec<i64>>, BackendError> {
        if layer >= self.model.n_layers() {
            return Err(format!("layer {layer} out of range").into());
        }
        let m = self.model.matrix(layer, stage);
        if let Some(bad) = codes.iter().find(|c| c.len() != m.cols) {
            return Err(
                format!("input row has {} codes, {stage:?} expects {}", bad.len(), m.cols).into()
            );
        }
        Ok(m.products(codes, self.threads))
    }
}

/// Two threads at most: the deployment target has two cores.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// Below this many multiply-accumulates a thread costs more than it saves.
const MIN_WORK_PER_THREAD: usize = 1_000_000;

/// Fills a `rows x width` row-major buffer by calling `fill(r, row_r)`, splitting rows over
/// threads; each row is computed by one call, so results do not depend on the thread count.
pub(crate) fn for_each_row<T: Default + Clone + Send>(
    rows: usize,
    width: usize,
    work: usize,
    threads: usize,
    fill: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::default(); rows * width];
    let threads = threads.min(work / MIN_WORK_PER_THREAD).clamp(1, rows.max(1));
    if width == 0 {
        return out;
    }
    let rows_per_thread = rows.div_ceil(threads);
    let fill_chunk = |chunk_index: usize, chunk: &mut [T]| {
        for (i, row) in chunk.chunks_exact_mut(width).enumerate() {
            fill(chunk_index * rows_per_thread + i, row);
        }
    };
    std::thread::scope(|scope| {
        let mut chunks = out.chunks_mut(rows_per_thread * width).enumerate();
        // The calling thread takes the first chunk itself: one spawn fewer per product.
        let first = chunks.next();
        for (chunk_index, chunk) in chunks {
            let fill_chunk = &fill_chunk;
            scope.spawn(move || fill_chunk(chunk_index, chunk));
        }
        if let Some((chunk_index, chunk)) = first {
            fill_chunk(chunk_index, chunk);
        }
    });
    out
}

fn transpose<T: Copy>(data: &[T], rows: usize, cols: usize) -> Vec<Vec<T>> {
    (0..cols).map(|c| (0..rows).map(|r| data[r * cols + c]).collect()).collect()
}

/// i8 dot product; the fixed-width lanes let the compiler vectorise it.
pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    const LANES: usize = 32;
    let mut acc = [0i32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: i32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// Dot product of int8 weights with an f32 vector, in the fixed order of [`dot_f32`].
pub(crate) fn dot_i8_f32(w: &[i8], x: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (w_chunks, x_chunks) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let tail: f32 =
        w_chunks.remainder().iter().zip(x_chunks.remainder()).map(|(&w, x)| f32::from(w) * x).sum();
    for (w, x) in w_chunks.zip(x_chunks) {
        for i in 0..LANES {
            acc[i] += f32::from(w[i]) * x[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// f32 dot product with a fixed summation order (eight lanes, then the tail), so results are
/// bitwise reproducible and the compiler can vectorise it.
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
