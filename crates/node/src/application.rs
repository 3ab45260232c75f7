//! The consensus application: builds blocks from the mempool, verifies peers' blocks by
//! executing them speculatively, and commits finalized blocks to the ledger.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use based_state::{BlockOutcome, GenesisConfig, MemoryStore, OutcomeRecord, State, Store as _};
use based_types::{Block, BlockHeader, Hash, SignedTransaction, transactions_root};
use commonware_codec::Encode as _;
use commonware_consensus::marshal::Update;
use commonware_consensus::marshal::ancestry::{AncestorStream, BlockProvider};
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::types::{Epoch, Round, View};
use commonware_cryptography::{Digest as _, Digestible as _, ed25519, sha256};
use commonware_runtime::{Clock, Metrics, Spawner};
use commonware_utils::{Acknowledgement as _, SystemTimeExt as _};
use futures::StreamExt as _;
use rand::Rng;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::block::{ChainBlock, ConsensusContext, MAX_BLOCK_BYTES, based_key};
use crate::ledger::{Applied, Changes, Finalized, Ledger, LedgerError, Overlay, Snapshot};
use crate::mempool::{Mempool, MempoolError};
use crate::telemetry::NodeMetrics;

/// How far ahead of our clock a peer's block timestamp may be.
const SYNCHRONY_BOUND_MS: u64 = 500;
/// Room for the context and header around the transactions.
const BLOCK_OVERHEAD_BYTES: usize = 4 * 1024;

/// What every validator must agree on before the first block.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    pub genesis: GenesisConfig,
    pub genesis_time_ms: u64,
    /// Minimum spacing of block timestamps: proposers wait this long after the parent.
    pub block_time_ms: u64,
    pub max_block_transactions: usize,
    /// The validator set, sorted as `commonware_utils::ordered::Set` sorts it.
    pub validators: Vec<ed25519::PublicKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("genesis: {0}")]
    Genesis(String),
    #[error("the database belongs to another chain (genesis digest differs)")]
    GenesisMismatch,
    #[error("finalized block {height} does not extend the applied block {applied}")]
    Gap { height: u64, applied: u64 },
    #[error("finalized block {height} failed to execute: {reason}")]
    FinalizedBlockInvalid { height: u64, reason: String },
}

/// A speculatively executed block, kept until it is finalized or pruned.
struct Executed {
    height: u64,
    changes: Arc<Changes>,
    outcome: Arc<OutcomeRecord>,
}

struct Shared {
    mempool: Mempool,
    /// Admitted local submissions not yet gossiped.
    outbound: Vec<SignedTransaction>,
    executed: BTreeMap<sha256::Digest, Executed>,
}

#[derive(Clone)]
pub struct Application {
    ledger: Ledger,
    shared: Arc<Mutex<Shared>>,
    genesis: Arc<ChainBlock>,
    spec: Arc<ChainSpec>,
    metrics: NodeMetrics,
    /// The last finalized height, for the RPC server's subscriptions.
    finalized: Arc<watch::Sender<u64>>,
}

impl Application {
    /// Writes genesis into an empty ledger, or checks that the ledger holds this chain.
    pub fn new(ledger: Ledger, spec: ChainSpec) -> Result<Self, NodeError> {
        let snapshot = ledger.snapshot()?;
        // Computed apart from the ledger, which may already hold later state.
        let state = State::genesis(MemoryStore::new(), spec.genesis.clone())
            .map_err(|e| NodeError::Genesis(e.to_string()))?;
        let leader =
            spec.validators.first().cloned().ok_or(NodeError::Genesis("no validators".into()))?;
        let header = BlockHeader {
            chain_id: spec.genesis.chain_id,
            height: 0,
            parent: Hash([0; 32]),
            transactions_root: transactions_root(&[]),
            state_root: state.state_root(),
            timestamp_ms: spec.genesis_time_ms,
            proposer: based_key(&leader),
        };
        let context = ConsensusContext {
            round: Round::new(Epoch::zero(), View::zero()),
            leader,
            parent: (View::zero(), sha256::Digest::EMPTY),
        };
        let genesis = ChainBlock::new(context, Block { header, transactions: Vec::new() });
        let applied = snapshot.applied()?;
        match applied {
            None => {
                let entries = state.store().scan_prefix(&[]);
                let changes = entries.into_iter().map(|(key, value)| (key, Some(value))).collect();
                let finalized = Finalized {
                    applied: Applied { height: 0, digest: digest_bytes(&genesis.digest()) },
                    encoded_block: &genesis.encode(),
                    block: &genesis.inner,
                    outcome: &OutcomeRecord::default(),
                };
                ledger.commit(&finalized, &changes)?;
            }
            Some(_) => {
                let stored = snapshot.block(0)?;
                if stored.as_deref() != Some(genesis.encode().as_ref()) {
                    return Err(NodeError::GenesisMismatch);
                }
            }
        }
        let shared =
            Shared { mempool: Mempool::default(), outbound: Vec::new(), executed: BTreeMap::new() };
        let height = applied.map_or(0, |applied| applied.height);
        let metrics = NodeMetrics::default();
        metrics.finalized_height.set(i64::try_from(height).unwrap_or(i64::MAX));
        Ok(Self {
            ledger,
            shared: Arc::new(Mutex::new(shared)),
            genesis: Arc::new(genesis),
            spec: Arc::new(spec),
            metrics,
            finalized: Arc::new(watch::Sender::new(height)),
        })
    }

    pub fn genesis_digest(&self) -> sha256::Digest {
        self.genesis.digest()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// The last finalized height, updated after each block is committed.
    pub fn watch_finalized(&self) -> watch::Receiver<u64> {
        self.finalized.subscribe()
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a transaction to this node's mempool after checking it against finalized state,
    /// and queues it for gossip to the other validators.
    pub fn submit(&self, transaction: SignedTransaction) -> Result<(), MempoolError> {
        let hash = transaction.hash();
        if let Err(reason) = self.admit_from_peer(transaction.clone()) {
            info!(tx = %hash, signer = %transaction.transaction.signer, %reason, "transaction rejected");
            return Err(reason);
        }
        self.shared().outbound.push(transaction);
        Ok(())
    }

    pub(crate) fn admit_from_peer(
        &self,
        transaction: SignedTransaction,
    ) -> Result<(), MempoolError> {
        let snapshot = self.ledger.snapshot().map_err(|e| MempoolError::State(e.to_string()))?;
        let state = State::open(Overlay::new(snapshot, Vec::new()));
        let mut shared = self.shared();
        shared.mempool.insert(&state, transaction)?;
        self.metrics.mempool_transactions.set(shared.mempool.len() as i64);
        Ok(())
    }

    pub(crate) fn take_outbound(&self) -> Vec<SignedTransaction> {
        std::mem::take(&mut self.shared().outbound)
    }

    pub fn pending_transactions(&self) -> usize {
        self.shared().mempool.len()
    }

    /// True while a transaction with this hash waits in this node's mempool.
    pub fn is_pending(&self, hash: &Hash) -> bool {
        self.shared().mempool.contains(hash)
    }

    /// The finalized state with the changes of the unfinalized blocks from `tip` down to it,
    /// or `None` if `tip` does not descend from the finalized block.
    async fn view_at<A: BlockProvider<Block = ChainBlock>>(
        &self,
        tip: ChainBlock,
        ancestry: &mut AncestorStream<A, ChainBlock>,
    ) -> Option<(Snapshot, Vec<Arc<Changes>>)> {
        let snapshot = self.ledger.snapshot().ok()?;
        let applied = snapshot.applied().ok()??;
        let mut unfinalized = Vec::new();
        let mut cursor = tip;
        loop {
            let height = cursor.height_u64();
            if height <= applied.height {
                let is_applied =
                    height == applied.height && digest_bytes(&cursor.digest()) == applied.digest;
                if !is_applied {
                    return None;
                }
                break;
            }
            let parent_is_applied = height == applied.height + 1;
            if parent_is_applied
                && digest_bytes(&commonware_consensus::Block::parent(&cursor)) != applied.digest
            {
                return None;
            }
            unfinalized.push(cursor);
            if parent_is_applied {
                break;
            }
            cursor = ancestry.next().await?;
        }
        let mut layers: Vec<Arc<Changes>> = Vec::with_capacity(unfinalized.len());
        for block in unfinalized.into_iter().rev() {
            let cached = self.shared().executed.get(&block.digest()).map(|e| e.changes.clone());
            let changes = match cached {
                Some(changes) => changes,
                None => {
                    let mut state = State::open(Overlay::new(snapshot.clone(), layers.clone()));
                    let outcome = match self.execute(&mut state, &block) {
                        Ok(outcome) => outcome,
                        Err(reason) => {
                            warn!(height = block.height_u64(), %reason, "ancestor does not execute");
                            return None;
                        }
                    };
                    self.remember(&block, state_changes(state), &outcome)
                }
            };
            layers.push(changes);
        }
        Some((snapshot, layers))
    }

    /// Executes `block` on `state`, timing it.
    fn execute(
        &self,
        state: &mut State<Overlay>,
        block: &ChainBlock,
    ) -> Result<BlockOutcome, based_state::BlockError> {
        let started = Instant::now();
        let outcome = state.apply_block(&block.inner);
        self.metrics.block_execution_seconds.observe(started.elapsed().as_secs_f64());
        outcome
    }

    fn remember(
        &self,
        block: &ChainBlock,
        changes: Changes,
        outcome: &BlockOutcome,
    ) -> Arc<Changes> {
        let changes = Arc::new(changes);
        let executed = Executed {
            height: block.height_u64(),
            changes: changes.clone(),
            outcome: Arc::new(OutcomeRecord::from(outcome)),
        };
        self.shared().executed.insert(block.digest(), executed);
        changes
    }

    fn commit_finalized(&self, block: &ChainBlock) -> Result<(), NodeError> {
        let started = Instant::now();
        let snapshot = self.ledger.snapshot()?;
        let applied =
            snapshot.applied()?.ok_or(NodeError::Gap { height: block.height_u64(), applied: 0 })?;
        let height = block.height_u64();
        if height <= applied.height {
            return Ok(());
        }
        let parent = digest_bytes(&commonware_consensus::Block::parent(block));
        if height != applied.height + 1 || parent != applied.digest {
            return Err(NodeError::Gap { height, applied: applied.height });
        }
        let cached = self
            .shared()
            .executed
            .get(&block.digest())
            .map(|e| (e.changes.clone(), e.outcome.clone()));
        let (changes, outcome) = match cached {
            Some(cached) => cached,
            None => {
                let mut state = State::open(Overlay::new(snapshot, Vec::new()));
                let outcome = self.execute(&mut state, block).map_err(|e| {
                    NodeError::FinalizedBlockInvalid { height, reason: e.to_string() }
                })?;
                (Arc::new(state_changes(state)), Arc::new(OutcomeRecord::from(&outcome)))
            }
        };
        let finalized = Finalized {
            applied: Applied { height, digest: digest_bytes(&block.digest()) },
            encoded_block: &block.encode(),
            block: &block.inner,
            outcome: &outcome,
        };
        self.ledger.commit(&finalized, &changes)?;
        let failed = outcome.receipts.iter().filter(|receipt| receipt.error.is_some()).count();
        let succeeded = outcome.receipts.len() - failed;
        self.metrics.transactions_succeeded.inc_by(succeeded as u64);
        self.metrics.transactions_failed.inc_by(failed as u64);
        self.metrics.finalized_height.set(i64::try_from(height).unwrap_or(i64::MAX));
        self.metrics.block_commit_seconds.observe(started.elapsed().as_secs_f64());
        self.finalized.send_replace(height);
        let finalized = State::open(Overlay::new(self.ledger.snapshot()?, Vec::new()));
        let mut shared = self.shared();
        shared.mempool.prune(&finalized);
        shared.executed.retain(|_, executed| executed.height > height);
        self.metrics.mempool_transactions.set(shared.mempool.len() as i64);
        drop(shared);
        info!(
            height,
            hash = %block.inner.hash(),
            txs = outcome.receipts.len(),
            failed,
            events = outcome.events.len(),
            commit_ms = started.elapsed().as_millis() as u64,
            "block finalized"
        );
        Ok(())
    }
}

fn state_changes(state: State<Overlay>) -> Changes {
    state.into_store().changes
}

pub(crate) fn digest_bytes(digest: &sha256::Digest) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

impl<E> commonware_consensus::Application<E> for Application
where
    E: Rng + Spawner + Metrics + Clock,
{
    type SigningScheme = Scheme;
    type Context = ConsensusContext;
    type Block = ChainBlock;

    async fn genesis(&mut self) -> ChainBlock {
        self.genesis.as_ref().clone()
    }

    async fn propose<A: BlockProvider<Block = ChainBlock>>(
        &mut self,
        (runtime, context): (E, ConsensusContext),
        mut ancestry: AncestorStream<A, ChainBlock>,
    ) -> Option<ChainBlock> {
        let parent = ancestry.next().await?;
        let earliest = parent.timestamp_ms().saturating_add(self.spec.block_time_ms);
        let now = runtime.current().epoch_millis();
        if now < earliest {
            runtime.sleep(Duration::from_millis(earliest - now)).await;
        }
        let timestamp_ms = runtime.current().epoch_millis().max(earliest);
        let parent_hash = parent.inner.hash();
        let (snapshot, layers) = self.view_at(parent, &mut ancestry).await?;
        let mut state = State::open(Overlay::new(snapshot, layers));
        let candidates = self.shared().mempool.executable(
            &state,
            self.spec.max_block_transactions,
            MAX_BLOCK_BYTES - BLOCK_OVERHEAD_BYTES,
        );
        let started = Instant::now();
        let built = state.propose_block(candidates);
        self.metrics.block_execution_seconds.observe(started.elapsed().as_secs_f64());
        let (included, outcome) = match built {
            Ok(built) => built,
            Err(reason) => {
                error!(%reason, "cannot build a block");
                return None;
            }
        };
        let header = BlockHeader {
            chain_id: self.spec.genesis.chain_id,
            height: outcome.height,
            parent: parent_hash,
            transactions_root: transactions_root(&included),
            state_root: outcome.state_root,
            timestamp_ms,
            proposer: based_key(&context.leader),
        };
        let block = ChainBlock::new(context, Block { header, transactions: included });
        self.remember(&block, state_changes(state), &outcome);
        debug!(height = block.height_u64(), txs = block.inner.transactions.len(), "proposed");
        Some(block)
    }
}

impl<E> commonware_consensus::VerifyingApplication<E> for Application
where
    E: Rng + Spawner + Metrics + Clock,
{
    async fn verify<A: BlockProvider<Block = ChainBlock>>(
        &mut self,
        (runtime, context): (E, ConsensusContext),
        mut ancestry: AncestorStream<A, ChainBlock>,
    ) -> bool {
        let Some(block) = ancestry.next().await else { return false };
        let Some(parent) = ancestry.next().await else { return false };
        let header = &block.inner.header;
        let now = runtime.current().epoch_millis();
        let paced =
            header.timestamp_ms >= parent.timestamp_ms().saturating_add(self.spec.block_time_ms);
        if header.proposer != based_key(&context.leader)
            || header.parent != parent.inner.hash()
            || !paced
            || header.timestamp_ms > now.saturating_add(SYNCHRONY_BOUND_MS)
        {
            debug!(height = header.height, "block header rejected");
            return false;
        }
        let Some((snapshot, layers)) = self.view_at(parent, &mut ancestry).await else {
            return false;
        };
        let mut state = State::open(Overlay::new(snapshot, layers));
        let outcome = match self.execute(&mut state, &block) {
            Ok(outcome) => outcome,
            Err(reason) => {
                debug!(height = header.height, %reason, "block does not execute");
                return false;
            }
        };
        self.remember(&block, state_changes(state), &outcome);
        true
    }
}

impl commonware_consensus::Reporter for Application {
    type Activity = Update<ChainBlock>;

    async fn report(&mut self, update: Update<ChainBlock>) {
        let Update::Block(block, ack) = update else { return };
        match self.commit_finalized(&block) {
            Ok(()) => ack.acknowledge(),
            // Without the acknowledgement marshal stops delivering: a node that cannot apply a
            // finalized block must halt rather than diverge.
            Err(reason) => {
                error!(height = block.height_u64(), %reason, "halting on finalized block")
            }
        }
    }
}
