//! The miner: serves a model's linear stages on ciphertexts it cannot read.
//!
//! Nothing in this module ever sees a secret key: it only knows the public parameters, the public
//! weights (pre-encoded as plaintext polynomials once, at load), the Galois keys a client
//! publishes for its session and the ciphertexts it is sent.

use std::io::{BufReader, BufWriter};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use based_model::{SqueezedModel, Stage};
use based_rlwe::{
    GaloisKeys, Params, RhombusKeys, RhombusMatrix, RhombusPlan, RhombusResult, RhombusUpload,
};
use rayon::prelude::*;

use crate::error::ZkError;
use crate::wire::{self, CiphertextBatch, Message, PROTOCOL_VERSION, PlanChoice, WireError};
use crate::{ModelIdentity, STAGES, params_summary, plan_choice, stage_index, stage_params};

/// Ciphertext operations per generated token (one vector through every stage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinerWork {
    /// Ciphertext x plaintext products.
    pub products: usize,
    /// Hoisted key switches of the input conjugates.
    pub input_key_switches: usize,
    /// Key switches of the packing trees.
    pub tree_key_switches: usize,
}

/// A model prepared for serving: every weight matrix encoded once for the ciphertext products,
/// each with the plan (split point, digit bases) its own weights allow.
pub struct MinerModel {
    identity: ModelIdentity,
    layers: Vec<Vec<EncodedStage>>,
}

struct EncodedStage {
    params: Params,
    matrix: RhombusMatrix,
}

impl MinerModel {
    /// Encodes every linear stage of `model`, layers in parallel; `on_matrix` is told after
    /// each matrix (for a progress bar), with the number done and the total.
    pub fn prepare(
        model: &SqueezedModel,
        identity: ModelIdentity,
        on_matrix: impl Fn(usize, usize) + Sync,
    ) -> Result<Self, ZkError> {
        let total = model.n_layers() * STAGES.len();
        let done = AtomicUsize::new(0);
        // Choosing a plan is mostly sequential work on one matrix: layers side by side keep
        // every core busy.
        let layers = (0..model.n_layers())
            .into_par_iter()
            .map(|layer| {
                STAGES
                    .iter()
                    .map(|&stage| {
                        let weights = model.matrix(layer, stage);
                        let params = stage_params(weights)?;
                        let plan = RhombusPlan::choose(
                            &params,
                            weights.cols,
                            weights.rows,
                            &weights.weights,
                        )?;
                        let matrix = RhombusMatrix::encode(&params, &plan, &weights.weights)?;
                        on_matrix(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                        Ok(EncodedStage { params, matrix })
                    })
                    .collect::<Result<Vec<_>, ZkError>>()
            })
            .collect::<Result<Vec<_>, ZkError>>()?;
        Ok(Self { identity, layers })
    }

    /// The ciphertext operations one generated token costs the miner, over all stages.
    pub fn work_per_token(&self) -> MinerWork {
        let mut work = MinerWork::default();
        for stage in self.layers.iter().flatten() {
            let plan = stage.matrix.plan();
            let (input, tree) = plan.key_switches();
            work.products += plan.products();
            work.input_key_switches += input;
            work.tree_key_switches += tree;
        }
        work
    }

    /// Bytes held by the encoded weights: the miner's memory cost of the model.
    pub fn encoded_bytes(&self) -> usize {
        self.layers.iter().flatten().map(|stage| stage.matrix.memory_bytes()).sum()
    }

    /// Every stage's plan, layer by layer in `STAGES` order, as Welcome announces them.
    pub fn plan_choices(&self) -> Vec<PlanChoice> {
        self.layers.iter().flatten().map(|s| plan_choice(&s.params, s.matrix.plan())).collect()
    }

    /// The ring and modulus every stage shares (t differs by stage).
    fn shared_params(&self) -> &Params {
        &self.layers[0][0].params
    }

    fn stage(&self, layer: u32, stage: Stage) -> Result<&RhombusMatrix, ZkError> {
        let stages = self
            .layers
            .get(layer as usize)
            .ok_or(ZkError::NoSuchLayer { layer, layers: self.layers.len() })?;
        Ok(&stages[stage_index(stage)].matrix)
    }

    /// Parses a request's uploads (one per vector) against the stage's plan.
    fn decode_inputs(
        &self,
        layer: u32,
        stage: Stage,
        inputs: &CiphertextBatch,
    ) -> Result<Vec<RhombusUpload>, ZkError> {
        let plan = self.stage(layer, stage)?.plan();
        inputs
            .iter()
            .map(|vector| match vector.as_slice() {
                [upload] => Ok(RhombusUpload::from_bytes(plan, upload)?),
                _ => Err(ZkError::WrongCiphertextCount {
                    what: format!("layer {layer} {stage:?}"),
                    expected: 1,
                    got: vector.len(),
                }),
            })
            .collect()
    }

    /// Multiplies every input vector by the stage's weights with the session's keys.
    fn multiply(
        &self,
        layer: u32,
        stage: Stage,
        inputs: &[RhombusUpload],
        keys: &RhombusKeys,
    ) -> Result<Vec<Vec<RhombusResult>>, ZkError> {
        Ok(self.stage(layer, stage)?.apply_batch(inputs, keys)?)
    }

    fn decode_keys(&self, input: Option<Vec<u8>>, tree: &[u8]) -> Result<RhombusKeys, ZkError> {
        let params = self.shared_params();
        let input = input.map(|bytes| GaloisKeys::from_bytes(params, &bytes)).transpose()?;
        Ok(RhombusKeys::from_parts(input, GaloisKeys::from_bytes(params, tree)?))
    }
}

/// Accepts clients until the listener fails; every connection gets its own thread, so a client
/// that misbehaves or vanishes costs only its own session. Sessions share the cores through
/// rayon's pool: each product is parallel inside, whoever asks.
pub fn serve(listener: TcpListener, model: Arc<MinerModel>) -> std::io::Result<()> {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let model = Arc::clone(&model);
        std::thread::spawn(move || {
            let peer = stream.peer_addr().ok();
            match serve_session(stream, &model) {
                Ok(stats) => tracing::info!(
                    ?peer,
                    requests = stats.requests,
                    bytes_in = stats.bytes_in,
                    bytes_out = stats.bytes_out,
                    "session ended"
                ),
                Err(error) => tracing::warn!(?peer, %error, "session aborted"),
            }
        });
    }
    Ok(())
}

/// Binds `addr` and serves in a background thread; returns the bound address (useful with port 0).
pub fn spawn_server(addr: &str, model: Arc<MinerModel>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::spawn(move || serve(listener, model));
    Ok(bound)
}

#[derive(Default)]
struct SessionStats {
    requests: u64,
    bytes_in: usize,
    bytes_out: usize,
}

fn serve_session(stream: TcpStream, model: &MinerModel) -> Result<SessionStats, ZkError> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    let mut stats = SessionStats::default();
    let result = run_session(&mut reader, &mut writer, model, &mut stats);
    if let Err(error) = &result
        && !matches!(error, ZkError::Io(_) | ZkError::Wire(WireError::Closed | WireError::Io(_)))
    {
        // Best effort: the peer may already be gone, and the error is logged either way.
        let _ = wire::write_message(&mut writer, &Message::Error { message: error.to_string() });
    }
    result.map(|()| stats)
}

fn run_session(
    reader: &mut BufReader<TcpStream>,
    writer: &mut BufWriter<TcpStream>,
    model: &MinerModel,
    stats: &mut SessionStats,
) -> Result<(), ZkError> {
    let (hello, n) = wire::read_message(reader)?;
    stats.bytes_in += n;
    let Message::Hello { version, model_hash } = hello else {
        return Err(ZkError::UnexpectedMessage { expected: "Hello", got: hello.kind() });
    };
    if version != PROTOCOL_VERSION {
        return Err(ZkError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: version });
    }
    if model_hash != model.identity.hash {
        return Err(ZkError::ModelMismatch {
            served: model.identity.to_string(),
            expected: format!("sha256 {}", &crate::hex(&model_hash)[..16]),
        });
    }
    stats.bytes_out += wire::write_message(
        writer,
        &Message::Welcome {
            version: PROTOCOL_VERSION,
            model_hash: model.identity.hash,
            model_name: model.identity.name.clone(),
            layers: model.layers.len() as u32,
            params: params_summary(model.shared_params()),
            plans: model.plan_choices(),
        },
    )?;
    let (keys, n) = wire::read_message(reader)?;
    stats.bytes_in += n;
    let keys = match keys {
        Message::Keys { input, tree } => model.decode_keys(input, &tree)?,
        Message::Bye => return Ok(()),
        other => return Err(ZkError::UnexpectedMessage { expected: "Keys", got: other.kind() }),
    };
    loop {
        let (message, n) = wire::read_message(reader)?;
        stats.bytes_in += n;
        match message {
            Message::Products { request_id, layer, stage, inputs } => {
                let started = Instant::now();
                let vectors = inputs.len();
                let decoded = model.decode_inputs(layer, stage, &inputs)?;
                let products = model.multiply(layer, stage, &decoded, &keys)?;
                let outputs = products
                    .iter()
                    .map(|vector| vector.iter().map(RhombusResult::to_bytes).collect())
                    .collect();
                tracing::debug!(
                    request_id,
                    layer,
                    ?stage,
                    vectors,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "products"
                );
                stats.bytes_out +=
                    wire::write_message(writer, &Message::Results { request_id, outputs })?;
                stats.requests += 1;
            }
            Message::Bye => return Ok(()),
            other => {
                return Err(ZkError::UnexpectedMessage {
                    expected: "Products or Bye",
                    got: other.kind(),
                });
            }
        }
    }
}
