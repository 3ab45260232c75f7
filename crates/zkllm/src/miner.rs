//! The miner: serves a model's linear stages on ciphertexts it cannot read.
//!
//! Nothing in this module ever sees a secret key: it only knows the public parameters, the public
//! weights (pre-encoded as plaintext polynomials once, at load), the Galois keys a client
//! publishes for its session and the ciphertexts it is sent.

use std::io::{BufReader, BufWriter};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use based_model::{QuantMatrix, SqueezedModel, Stage};
use based_rlwe::{
    GaloisKeys, Params, RhombusKeys, RhombusMatrix, RhombusPlan, RhombusPrecomputed, RhombusResult,
    RhombusUpload,
};
use rayon::prelude::*;

use crate::ahead::{Ahead, Budget};
use crate::error::ZkError;
use crate::masks::{MAX_UPLOAD_INDEX, upload_mask_seeds};
use crate::wire::{self, CiphertextBatch, Message, PROTOCOL_VERSION, PlanChoice, WireError};
use crate::{
    ModelIdentity, STAGES, params_summary, plan_choice, plan_from_choice, stage_index,
    stage_params, weights_fingerprint,
};

/// How a miner serves its sessions.
#[derive(Clone, Copy, Debug)]
pub struct ServeConfig {
    /// Memory each session may fill with the masks' share of its next uploads, computed ahead
    /// while the miner waits (`crate::ahead`); 0 turns the work ahead off.
    pub precompute_bytes: usize,
    /// Memory all sessions together may fill so.
    pub precompute_total_bytes: usize,
    /// A session that sends nothing for this long is closed, and its keys and shares freed.
    pub idle_timeout: Duration,
}

impl Default for ServeConfig {
    /// 512 MiB per session (about 140 tokens ahead for SmolLM2-135M, 3.7 MB per token), 4 GiB
    /// in all, sessions idle for 15 minutes closed.
    fn default() -> Self {
        Self {
            precompute_bytes: 512 << 20,
            precompute_total_bytes: 4 << 30,
            idle_timeout: Duration::from_secs(15 * 60),
        }
    }
}

impl ServeConfig {
    /// The default, without any work ahead.
    pub fn on_request() -> Self {
        Self { precompute_bytes: 0, ..Self::default() }
    }
}

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
    /// [`crate::weights_fingerprint`] of the encoded weights.
    weights_hash: [u8; 32],
    layers: Vec<Vec<EncodedStage>>,
    /// The model's context length: the most uploads per stage one conversation can use.
    context_tokens: usize,
}

struct EncodedStage {
    params: Params,
    matrix: RhombusMatrix,
}

impl MinerModel {
    /// Encodes every linear stage of `model`, layers in parallel, each with the plan its own
    /// weights allow (choosing the plans is about two thirds of the time: `based bench zkllm`
    /// measured 18.7 s, and 6.1 s with saved plans, for SmolLM2-135M on two cores);
    /// `on_matrix` is told after each matrix (for a progress bar), with the number done and
    /// the total.
    pub fn prepare(
        model: &SqueezedModel,
        identity: ModelIdentity,
        on_matrix: impl Fn(usize, usize) + Sync,
    ) -> Result<Self, ZkError> {
        let weights_hash = weights_fingerprint(model);
        Self::encode_stages(model, identity, weights_hash, on_matrix, |_, params, weights| {
            Ok(RhombusPlan::choose(params, weights.cols, weights.rows, &weights.weights)?)
        })
    }

    /// [`Self::prepare`] with the plans of an earlier preparation of the same model
    /// ([`Self::plan_record`]'s bytes) instead of choosing them again. A record of another
    /// model or protocol version, or a damaged one, is refused; every plan it gives is still
    /// checked against these weights' noise margin when its matrix is encoded, so a record
    /// can make the miner slower but never make a product decrypt wrongly.
    pub fn prepare_with_plan_record(
        model: &SqueezedModel,
        identity: ModelIdentity,
        record: &[u8],
        on_matrix: impl Fn(usize, usize) + Sync,
    ) -> Result<Self, ZkError> {
        let weights_hash = weights_fingerprint(model);
        let plans = parse_plan_record(record, &identity, &weights_hash, model.n_layers())?;
        Self::encode_stages(model, identity, weights_hash, on_matrix, |index, params, weights| {
            plan_from_choice(params, weights, plans[index])
        })
    }

    /// The plans of every stage as bytes, for [`Self::prepare_with_plan_record`]: the Welcome
    /// message this miner sends to each client.
    pub fn plan_record(&self) -> Vec<u8> {
        let mut record = Vec::new();
        wire::write_message(&mut record, &self.welcome()).expect("a Welcome fits in a frame");
        record
    }

    fn encode_stages(
        model: &SqueezedModel,
        identity: ModelIdentity,
        weights_hash: [u8; 32],
        on_matrix: impl Fn(usize, usize) + Sync,
        plan_for: impl Fn(usize, &Params, &QuantMatrix) -> Result<RhombusPlan, ZkError> + Sync,
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
                        let plan =
                            plan_for(layer * STAGES.len() + stage_index(stage), &params, weights)?;
                        let matrix = RhombusMatrix::encode(&params, &plan, &weights.weights)?;
                        on_matrix(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                        Ok(EncodedStage { params, matrix })
                    })
                    .collect::<Result<Vec<_>, ZkError>>()
            })
            .collect::<Result<Vec<_>, ZkError>>()?;
        Ok(Self { identity, weights_hash, layers, context_tokens: model.config.max_seq_len })
    }

    fn welcome(&self) -> Message {
        Message::Welcome {
            version: PROTOCOL_VERSION,
            model_hash: self.identity.hash,
            weights_hash: self.weights_hash,
            model_name: self.identity.name.clone(),
            layers: self.layers.len() as u32,
            params: params_summary(self.shared_params()),
            plans: self.plan_choices(),
        }
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

    /// Bytes the masks' shares of one token take, over all stages (what working ahead by one
    /// token costs in memory).
    pub fn precomputed_bytes_per_token(&self) -> usize {
        self.layers.iter().flatten().map(|stage| stage.matrix.plan().precomputed_bytes()).sum()
    }

    /// Bytes held by the encoded weights: the miner's memory cost of the model.
    pub fn encoded_bytes(&self) -> usize {
        self.layers.iter().flatten().map(|stage| stage.matrix.memory_bytes()).sum()
    }

    /// Every stage's plan, layer by layer in `STAGES` order, as Welcome announces them.
    pub fn plan_choices(&self) -> Vec<PlanChoice> {
        self.layers.iter().flatten().map(|s| plan_choice(&s.params, s.matrix.plan())).collect()
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn context_tokens(&self) -> usize {
        self.context_tokens
    }

    /// Stage `index` of the model, counting layer by layer in `STAGES` order.
    pub(crate) fn stage_matrix(&self, index: usize) -> &RhombusMatrix {
        &self.layers[index / STAGES.len()][index % STAGES.len()].matrix
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

    /// Parses a request's uploads (one per vector) against the stage's plan, and checks that
    /// vector i's masks are the session's upload `first_mask + i` of the stage.
    fn decode_inputs(
        &self,
        layer: u32,
        stage: Stage,
        first_mask: u64,
        mask_seed: &[u8; 32],
        inputs: &CiphertextBatch,
    ) -> Result<Vec<RhombusUpload>, ZkError> {
        let plan = self.stage(layer, stage)?.plan();
        let end = first_mask.saturating_add(inputs.len() as u64);
        if end > MAX_UPLOAD_INDEX {
            return Err(ZkError::MaskIndexTooLarge {
                layer,
                stage,
                index: end - 1,
                limit: MAX_UPLOAD_INDEX,
            });
        }
        (first_mask..)
            .zip(inputs)
            .map(|(index, vector)| {
                let [upload] = vector.as_slice() else {
                    return Err(ZkError::WrongCiphertextCount {
                        what: format!("layer {layer} {stage:?}"),
                        expected: 1,
                        got: vector.len(),
                    });
                };
                let upload = RhombusUpload::from_bytes(plan, upload)?;
                let expected = upload_mask_seeds(mask_seed, layer, stage, index, plan.upload_cts());
                if upload.mask_seeds() != expected {
                    return Err(ZkError::MaskMismatch { layer, stage, index });
                }
                Ok(upload)
            })
            .collect()
    }

    /// Multiplies every input vector by the stage's weights with the session's keys: from its
    /// precomputed share where there is one, in full otherwise (the same results either way).
    fn multiply(
        &self,
        layer: u32,
        stage: Stage,
        inputs: &[RhombusUpload],
        shares: &[Option<RhombusPrecomputed>],
        keys: &RhombusKeys,
    ) -> Result<Vec<Vec<RhombusResult>>, ZkError> {
        let matrix = self.stage(layer, stage)?;
        inputs
            .par_iter()
            .zip(shares)
            .map(|(upload, share)| match share {
                Some(share) => Ok(matrix.apply_precomputed(upload, share)?),
                None => Ok(matrix.apply(upload, keys)?),
            })
            .collect()
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
pub fn serve(
    listener: TcpListener,
    model: Arc<MinerModel>,
    config: ServeConfig,
) -> std::io::Result<()> {
    let used = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let model = Arc::clone(&model);
        let budget = Budget {
            session_bytes: config.precompute_bytes,
            total_bytes: config.precompute_total_bytes,
            used: Arc::clone(&used),
        };
        std::thread::spawn(move || {
            let peer = stream.peer_addr().ok();
            match serve_session(stream, model, config.idle_timeout, budget) {
                Ok(stats) => tracing::info!(
                    ?peer,
                    requests = stats.requests,
                    precomputed_uploads = stats.precomputed,
                    uploads = stats.uploads,
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
pub fn spawn_server(
    addr: &str,
    model: Arc<MinerModel>,
    config: ServeConfig,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::spawn(move || serve(listener, model, config));
    Ok(bound)
}

#[derive(Default)]
struct SessionStats {
    requests: u64,
    /// Uploads answered from their precomputed share, of all uploads.
    precomputed: u64,
    uploads: u64,
    bytes_in: usize,
    bytes_out: usize,
}

fn serve_session(
    stream: TcpStream,
    model: Arc<MinerModel>,
    idle_timeout: Duration,
    budget: Budget,
) -> Result<SessionStats, ZkError> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(idle_timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    let mut stats = SessionStats::default();
    let result = run_session(&mut reader, &mut writer, model, budget, &mut stats);
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
    model: Arc<MinerModel>,
    budget: Budget,
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
    stats.bytes_out += wire::write_message(writer, &model.welcome())?;
    let (keys, n) = wire::read_message(reader)?;
    stats.bytes_in += n;
    let (keys, mask_seed) = match keys {
        Message::Keys { mask_seed, input, tree } => {
            (Arc::new(model.decode_keys(input, &tree)?), mask_seed)
        }
        Message::Bye => return Ok(()),
        other => return Err(ZkError::UnexpectedMessage { expected: "Keys", got: other.kind() }),
    };
    let ahead = Ahead::start(Arc::clone(&model), Arc::clone(&keys), mask_seed, budget);
    loop {
        let (message, n) = wire::read_message(reader)?;
        stats.bytes_in += n;
        match message {
            Message::Products { request_id, layer, stage, first_mask, inputs } => {
                let started = Instant::now();
                let vectors = inputs.len();
                let decoded = model.decode_inputs(layer, stage, first_mask, &mask_seed, &inputs)?;
                let shares = ahead.take(layer, stage, first_mask, decoded.len())?;
                let precomputed = shares.iter().filter(|share| share.is_some()).count();
                let products = model.multiply(layer, stage, &decoded, &shares, &keys)?;
                let outputs = products
                    .iter()
                    .map(|vector| vector.iter().map(RhombusResult::to_bytes).collect())
                    .collect();
                tracing::debug!(
                    request_id,
                    layer,
                    ?stage,
                    vectors,
                    precomputed,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "products"
                );
                stats.bytes_out +=
                    wire::write_message(writer, &Message::Results { request_id, outputs })?;
                stats.requests += 1;
                stats.uploads += vectors as u64;
                stats.precomputed += precomputed as u64;
            }
            Message::Readiness => {
                let tokens_ahead = ahead.tokens_ahead();
                stats.bytes_out += wire::write_message(writer, &Message::Ready { tokens_ahead })?;
            }
            Message::Bye => return Ok(()),
            other => {
                return Err(ZkError::UnexpectedMessage {
                    expected: "Products, Readiness or Bye",
                    got: other.kind(),
                });
            }
        }
    }
}

/// The plans of [`MinerModel::plan_record`], checked to be this protocol's, for this model
/// squeezed the same way and for all of its stages.
fn parse_plan_record(
    record: &[u8],
    identity: &ModelIdentity,
    weights: &[u8; 32],
    layers: usize,
) -> Result<Vec<PlanChoice>, ZkError> {
    let mut rest = record;
    let (message, _) = wire::read_message(&mut rest)?;
    let Message::Welcome { version, model_hash, weights_hash, plans, .. } = message else {
        return Err(ZkError::SavedPlans(format!("holds a {} message", message.kind())));
    };
    if version != PROTOCOL_VERSION {
        return Err(ZkError::SavedPlans(format!(
            "was made for protocol version {version} (this miner speaks {PROTOCOL_VERSION})"
        )));
    }
    if model_hash != identity.hash {
        return Err(ZkError::SavedPlans(format!(
            "was made for model sha256 {}, not {identity}",
            &crate::hex(&model_hash)[..16]
        )));
    }
    if weights_hash != *weights {
        return Err(ZkError::SavedPlans("was made for other int8 weights of this model".into()));
    }
    let expected = layers * STAGES.len();
    if plans.len() != expected || !rest.is_empty() {
        return Err(ZkError::SavedPlans(format!(
            "has {} plans and {} bytes after them, for a model of {expected} stages",
            plans.len(),
            rest.len()
        )));
    }
    Ok(plans)
}
