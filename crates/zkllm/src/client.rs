//! The client: holds the secret key, encrypts each linear stage's input, decrypts the products.
//!
//! It implements `based_model::LinearBackend`, so the squeezed model's own forward pass runs
//! unchanged on top of it: the only difference from a plaintext run is where the integer products
//! come from.

use std::io::{BufReader, BufWriter};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use based_model::{BackendError, LinearBackend, SqueezedModel, Stage};
use based_rlwe::{
    RhombusKeys, RhombusPlan, RhombusResult, SecretKey, rhombus_decrypt, rhombus_encrypt_with_masks,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rayon::prelude::*;

use crate::error::ZkError;
use crate::masks::upload_mask_seeds;
use crate::wire::{self, Message, PROTOCOL_VERSION, PlanChoice, WireError};
use crate::{
    ModelIdentity, STAGES, hex, max_product, params_summary, plan_from_choice, stage_index,
    stage_params, weights_fingerprint,
};

/// What one chat has cost on the wire and in the client's own cryptography.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrafficStats {
    pub rounds: u64,
    /// Every byte sent, the session's Galois keys included.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// The Galois keys, sent once per session (part of `bytes_up`).
    pub key_bytes: u64,
    /// Client CPU time spent encrypting and decrypting.
    pub client_crypto: Duration,
    /// Time from sending a request to having its answer: network plus the miner's work.
    pub waiting: Duration,
}

impl std::ops::AddAssign for TrafficStats {
    fn add_assign(&mut self, other: Self) {
        self.rounds += other.rounds;
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
        self.key_bytes += other.key_bytes;
        self.client_crypto += other.client_crypto;
        self.waiting += other.waiting;
    }
}

/// What was spent between two snapshots of one session's stats.
impl std::ops::Sub for TrafficStats {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            rounds: self.rounds - earlier.rounds,
            bytes_up: self.bytes_up - earlier.bytes_up,
            bytes_down: self.bytes_down - earlier.bytes_down,
            key_bytes: self.key_bytes - earlier.key_bytes,
            client_crypto: self.client_crypto - earlier.client_crypto,
            waiting: self.waiting - earlier.waiting,
        }
    }
}

impl ZkError {
    /// The session is gone (the miner closed it, or the connection broke), not refused: a new
    /// session can take over, since the conversation's state is the client's own.
    pub fn is_lost_session(&self) -> bool {
        match self {
            ZkError::Io(_) | ZkError::Wire(WireError::Closed | WireError::Io(_)) => true,
            ZkError::Remote(message) => *message == WireError::Idle.to_string(),
            _ => false,
        }
    }
}

/// The per-stage facts the client needs: the miner's plan, the session's secret under the
/// stage's parameters, and how large an honest product can be (anything larger proves the
/// miner's answer corrupt).
struct StagePlan {
    plan: RhombusPlan,
    key: SecretKey,
    bound: u64,
    /// The mask index of the stage's next upload (`crate::masks`): it only grows.
    next_mask: u64,
}

pub struct EncryptedBackend {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    plans: Vec<Vec<StagePlan>>,
    rng: ChaCha20Rng,
    mask_seed: [u8; 32],
    next_request: u32,
    pub stats: TrafficStats,
}

impl EncryptedBackend {
    /// Connects to a miner, checks it serves the same model with the same parameters, makes a
    /// fresh secret key for this session and publishes the Galois keys the miner's plans need.
    pub fn connect(
        addr: impl ToSocketAddrs,
        model: &SqueezedModel,
        identity: &ModelIdentity,
    ) -> Result<Self, ZkError> {
        let shared = stage_params(model.matrix(0, STAGES[0]))?;
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = BufWriter::new(stream);
        let mut stats = TrafficStats::default();
        stats.bytes_up += wire::write_message(
            &mut writer,
            &Message::Hello { version: PROTOCOL_VERSION, model_hash: identity.hash },
        )? as u64;
        let (welcome, n) = wire::read_message(&mut reader)?;
        stats.bytes_down += n as u64;
        let choices = match welcome {
            Message::Welcome {
                version,
                model_hash,
                weights_hash,
                model_name,
                layers,
                params: theirs,
                plans,
            } => {
                if version != PROTOCOL_VERSION {
                    return Err(ZkError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: version,
                    });
                }
                if model_hash != identity.hash || layers as usize != model.n_layers() {
                    let served = ModelIdentity { name: model_name, hash: model_hash };
                    return Err(ZkError::ModelMismatch {
                        served: served.to_string(),
                        expected: identity.to_string(),
                    });
                }
                let our_weights = weights_fingerprint(model);
                if weights_hash != our_weights {
                    return Err(ZkError::WeightsMismatch {
                        ours: hex(&our_weights[..8]),
                        theirs: hex(&weights_hash[..8]),
                    });
                }
                let ours = params_summary(&shared);
                if theirs != ours {
                    return Err(ZkError::ParamsMismatch(format!(
                        "ours {ours:?}, theirs {theirs:?}"
                    )));
                }
                plans
            }
            Message::Error { message } => return Err(ZkError::Remote(message)),
            other => {
                return Err(ZkError::UnexpectedMessage { expected: "Welcome", got: other.kind() });
            }
        };
        let mut rng = ChaCha20Rng::from_os_rng();
        let secret_key = SecretKey::generate(&shared, &mut rng);
        let plans = stage_plans(model, &secret_key, &choices)?;
        let all_plans: Vec<&RhombusPlan> = plans.iter().flatten().map(|s| &s.plan).collect();
        let keys = RhombusKeys::generate(&secret_key, &all_plans, &mut rng)?;
        let mut mask_seed = [0u8; 32];
        rng.fill_bytes(&mut mask_seed);
        let sent = wire::write_message(
            &mut writer,
            &Message::Keys {
                mask_seed,
                input: keys.input().map(|k| k.to_bytes()),
                tree: keys.tree().to_bytes(),
            },
        )? as u64;
        stats.bytes_up += sent;
        stats.key_bytes += sent;
        Ok(Self { reader, writer, plans, rng, mask_seed, next_request: 0, stats })
    }

    /// How many tokens the miner can now serve from precomputed shares (it computes them while
    /// it waits; a chat that pauses lets it get ahead).
    pub fn tokens_ahead(&mut self) -> Result<u32, ZkError> {
        self.stats.bytes_up += wire::write_message(&mut self.writer, &Message::Readiness)? as u64;
        let (answer, n) = wire::read_message(&mut self.reader)?;
        self.stats.bytes_down += n as u64;
        match answer {
            Message::Ready { tokens_ahead } => Ok(tokens_ahead),
            Message::Error { message } => Err(ZkError::Remote(message)),
            other => Err(ZkError::UnexpectedMessage { expected: "Ready", got: other.kind() }),
        }
    }

    /// Ends the session politely; the miner logs it as a clean end.
    pub fn close(mut self) -> Result<TrafficStats, ZkError> {
        wire::write_message(&mut self.writer, &Message::Bye)?;
        Ok(self.stats)
    }

    /// [`LinearBackend::products`] with the protocol's own error type.
    pub fn exchange(
        &mut self,
        layer: usize,
        stage: Stage,
        codes: &[Vec<i8>],
    ) -> Result<Vec<Vec<i64>>, ZkError> {
        let plan = &mut self.plans[layer][stage_index(stage)];
        let first_mask = plan.next_mask;
        plan.next_mask += codes.len() as u64;
        let plan = &*plan;
        let started = Instant::now();
        // Prefill sends many tokens at once: encrypt them on every core, each with its own
        // generator seeded from the session's.
        let seeded: Vec<(u64, &Vec<i8>, ChaCha20Rng)> = (first_mask..)
            .zip(codes)
            .map(|(index, code)| (index, code, ChaCha20Rng::from_rng(&mut self.rng)))
            .collect();
        let mask_seed = &self.mask_seed;
        let encrypt = |(index, code, mut rng): (u64, &Vec<i8>, ChaCha20Rng)| {
            let masks =
                upload_mask_seeds(mask_seed, layer as u32, stage, index, plan.plan.upload_cts());
            let upload = rhombus_encrypt_with_masks(&plan.key, &plan.plan, code, &masks, &mut rng)?;
            Ok(vec![upload.to_bytes()])
        };
        // One token (decode) stays on this thread: handing it to the pool and back costs
        // two thread wake-ups a round.
        let inputs = if seeded.len() == 1 {
            seeded.into_iter().map(encrypt).collect::<Result<Vec<Vec<Vec<u8>>>, ZkError>>()?
        } else {
            seeded.into_par_iter().map(encrypt).collect::<Result<Vec<Vec<Vec<u8>>>, ZkError>>()?
        };
        let mut crypto = started.elapsed();

        let request_id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        let sent = Instant::now();
        let request =
            Message::Products { request_id, layer: layer as u32, stage, first_mask, inputs };
        self.stats.bytes_up += wire::write_message(&mut self.writer, &request)? as u64;
        let (answer, n) = wire::read_message(&mut self.reader)?;
        self.stats.waiting += sent.elapsed();
        self.stats.bytes_down += n as u64;
        self.stats.rounds += 1;
        let outputs = match answer {
            Message::Results { request_id: got, outputs } if got == request_id => outputs,
            Message::Results { request_id: got, .. } => {
                return Err(ZkError::WrongRequestId { expected: request_id, got });
            }
            Message::Error { message } => return Err(ZkError::Remote(message)),
            other => {
                return Err(ZkError::UnexpectedMessage { expected: "Results", got: other.kind() });
            }
        };
        if outputs.len() != codes.len() {
            return Err(ZkError::WrongCiphertextCount {
                what: format!("answer vectors of layer {layer} {stage:?}"),
                expected: codes.len(),
                got: outputs.len(),
            });
        }

        let started = Instant::now();
        let decrypt = |vector: &Vec<Vec<u8>>| {
            let results = vector
                .iter()
                .enumerate()
                .map(|(block, bytes)| RhombusResult::from_bytes(&plan.plan, block, bytes))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rhombus_decrypt(&plan.key, &plan.plan, &results, plan.bound)?)
        };
        let products = if outputs.len() == 1 {
            outputs.iter().map(decrypt).collect::<Result<Vec<_>, ZkError>>()?
        } else {
            outputs.par_iter().map(decrypt).collect::<Result<Vec<_>, ZkError>>()?
        };
        crypto += started.elapsed();
        self.stats.client_crypto += crypto;
        Ok(products)
    }
}

impl LinearBackend for EncryptedBackend {
    fn products(
        &mut self,
        layer: usize,
        stage: Stage,
        codes: &[Vec<i8>],
    ) -> Result<Vec<Vec<i64>>, BackendError> {
        Ok(self.exchange(layer, stage, codes)?)
    }
}

/// The miner's announced plans, checked against the model's shapes and weights.
fn stage_plans(
    model: &SqueezedModel,
    secret_key: &SecretKey,
    choices: &[PlanChoice],
) -> Result<Vec<Vec<StagePlan>>, ZkError> {
    let expected = model.n_layers() * STAGES.len();
    if choices.len() != expected {
        return Err(ZkError::ParamsMismatch(format!(
            "the miner announced {} stage plans, the model has {expected} stages",
            choices.len()
        )));
    }
    (0..model.n_layers())
        .map(|layer| {
            STAGES
                .iter()
                .map(|&stage| {
                    let m = model.matrix(layer, stage);
                    let choice = choices[layer * STAGES.len() + stage_index(stage)];
                    let params = stage_params(m)?;
                    let plan = plan_from_choice(&params, m, choice)?;
                    let key = secret_key.with_params(&params);
                    Ok(StagePlan { plan, key, bound: max_product(m), next_mask: 0 })
                })
                .collect()
        })
        .collect()
}
