//! Finalized state and blocks in redb, with what each block did (receipts and events) and
//! indexes by block hash and transaction hash; and copy-on-write views over the state for
//! speculative execution of blocks that are not final yet.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use based_state::{Event, OutcomeRecord, Store};
use based_types::{Block, Decode as _, Encode as _, Hash};
use redb::{Database, ReadTransaction, ReadableDatabase as _, ReadableTable as _, TableDefinition};

/// Writes of one or more blocks over a base: `None` deletes the key.
pub type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
/// Encoded `ChainBlock`s by height.
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// Heights by based block hash (the header hash).
const BLOCK_HASHES: TableDefinition<&[u8], u64> = TableDefinition::new("block_hashes");
/// Encoded `OutcomeRecord`s (receipts and block events) by height.
const OUTCOMES: TableDefinition<u64, &[u8]> = TableDefinition::new("outcomes");
/// Transaction hash -> (height, index in the block).
const TRANSACTIONS: TableDefinition<&[u8], (u64, u32)> = TableDefinition::new("transactions");
/// Brain -> height of the block whose end ran its last epoch.
const EPOCHS: TableDefinition<u16, u64> = TableDefinition::new("epochs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const APPLIED_HEIGHT: &str = "applied_height";
const APPLIED_DIGEST: &str = "applied_digest";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database: {0}")]
    Database(#[from] redb::Error),
    #[error("stored outcome of block {height} does not decode: {reason}")]
    Corrupt { height: u64, reason: String },
}

fn db_error(error: impl Into<redb::Error>) -> LedgerError {
    LedgerError::Database(error.into())
}

/// The last block whose state is committed to the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub height: u64,
    pub digest: [u8; 32],
}

/// A finalized block as the ledger records it.
#[derive(Clone, Copy)]
pub struct Finalized<'a> {
    pub applied: Applied,
    /// The consensus block's encoding (`ChainBlock`).
    pub encoded_block: &'a [u8],
    pub block: &'a Block,
    pub outcome: &'a OutcomeRecord,
}

#[derive(Clone)]
pub struct Ledger {
    db: Arc<Database>,
}

impl Ledger {
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let db = Database::create(path).map_err(db_error)?;
        let write = db.begin_write().map_err(db_error)?;
        write.open_table(STATE).map_err(db_error)?;
        write.open_table(BLOCKS).map_err(db_error)?;
        write.open_table(BLOCK_HASHES).map_err(db_error)?;
        write.open_table(OUTCOMES).map_err(db_error)?;
        write.open_table(TRANSACTIONS).map_err(db_error)?;
        write.open_table(EPOCHS).map_err(db_error)?;
        write.open_table(META).map_err(db_error)?;
        write.commit().map_err(db_error)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// A consistent read-only view of the finalized state, unaffected by later commits.
    pub fn snapshot(&self) -> Result<Snapshot, LedgerError> {
        Ok(Snapshot { txn: Arc::new(self.db.begin_read().map_err(db_error)?) })
    }

    /// Atomically records a finalized block, what it did and the state changes it made.
    pub fn commit(&self, finalized: &Finalized<'_>, changes: &Changes) -> Result<(), LedgerError> {
        let Finalized { applied, encoded_block, block, outcome } = *finalized;
        let write = self.db.begin_write().map_err(db_error)?;
        {
            let mut hashes = write.open_table(BLOCK_HASHES).map_err(db_error)?;
            hashes.insert(block.hash().0.as_slice(), applied.height).map_err(db_error)?;
            let mut outcomes = write.open_table(OUTCOMES).map_err(db_error)?;
            outcomes.insert(applied.height, outcome.to_bytes().as_slice()).map_err(db_error)?;
            let mut transactions = write.open_table(TRANSACTIONS).map_err(db_error)?;
            for (index, receipt) in (0u32..).zip(&outcome.receipts) {
                transactions
                    .insert(receipt.tx_hash.0.as_slice(), (applied.height, index))
                    .map_err(db_error)?;
            }
            let mut epochs = write.open_table(EPOCHS).map_err(db_error)?;
            for event in &outcome.events {
                if let Event::EpochPaid { brain, .. } = event {
                    epochs.insert(*brain, applied.height).map_err(db_error)?;
                }
            }
            let mut state = write.open_table(STATE).map_err(db_error)?;
            for (key, value) in changes {
                match value {
                    Some(value) => state.insert(key.as_slice(), value.as_slice()),
                    None => state.remove(key.as_slice()),
                }
                .map_err(db_error)?;
            }
            let mut blocks = write.open_table(BLOCKS).map_err(db_error)?;
            blocks.insert(applied.height, encoded_block).map_err(db_error)?;
            let mut meta = write.open_table(META).map_err(db_error)?;
            meta.insert(APPLIED_HEIGHT, applied.height.to_be_bytes().as_slice())
                .map_err(db_error)?;
            meta.insert(APPLIED_DIGEST, applied.digest.as_slice()).map_err(db_error)?;
        }
        write.commit().map_err(db_error)
    }
}

#[derive(Clone)]
pub struct Snapshot {
    txn: Arc<ReadTransaction>,
}

impl Snapshot {
    /// `None` before genesis has been written.
    pub fn applied(&self) -> Result<Option<Applied>, LedgerError> {
        let meta = self.txn.open_table(META).map_err(db_error)?;
        let height = meta.get(APPLIED_HEIGHT).map_err(db_error)?;
        let digest = meta.get(APPLIED_DIGEST).map_err(db_error)?;
        let (Some(height), Some(digest)) = (height, digest) else {
            return Ok(None);
        };
        let (Ok(height), Ok(digest)) =
            (<[u8; 8]>::try_from(height.value()), <[u8; 32]>::try_from(digest.value()))
        else {
            return Ok(None);
        };
        Ok(Some(Applied { height: u64::from_be_bytes(height), digest }))
    }

    /// Encoded finalized blocks in height order, genesis included.
    pub fn blocks(&self) -> Result<Vec<(u64, Vec<u8>)>, LedgerError> {
        let blocks = self.txn.open_table(BLOCKS).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in blocks.iter().map_err(db_error)? {
            let (height, bytes) = entry.map_err(db_error)?;
            out.push((height.value(), bytes.value().to_vec()));
        }
        Ok(out)
    }

    pub fn block(&self, height: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        let blocks = self.txn.open_table(BLOCKS).map_err(db_error)?;
        Ok(blocks.get(height).map_err(db_error)?.map(|bytes| bytes.value().to_vec()))
    }

    /// Height of the finalized block whose based hash (header hash) is `hash`.
    pub fn height_of(&self, hash: &Hash) -> Result<Option<u64>, LedgerError> {
        let hashes = self.txn.open_table(BLOCK_HASHES).map_err(db_error)?;
        Ok(hashes.get(hash.0.as_slice()).map_err(db_error)?.map(|height| height.value()))
    }

    /// Receipts and block events of the finalized block at `height`.
    pub fn outcome(&self, height: u64) -> Result<Option<OutcomeRecord>, LedgerError> {
        let outcomes = self.txn.open_table(OUTCOMES).map_err(db_error)?;
        let Some(bytes) = outcomes.get(height).map_err(db_error)? else {
            return Ok(None);
        };
        OutcomeRecord::from_bytes(bytes.value())
            .map(Some)
            .map_err(|error| LedgerError::Corrupt { height, reason: error.to_string() })
    }

    /// Where a finalized transaction is: (height, index in the block).
    pub fn transaction(&self, hash: &Hash) -> Result<Option<(u64, u32)>, LedgerError> {
        let transactions = self.txn.open_table(TRANSACTIONS).map_err(db_error)?;
        Ok(transactions.get(hash.0.as_slice()).map_err(db_error)?.map(|entry| entry.value()))
    }

    /// Height of the block whose end ran `brain`'s last epoch.
    pub fn last_epoch(&self, brain: u16) -> Result<Option<u64>, LedgerError> {
        let epochs = self.txn.open_table(EPOCHS).map_err(db_error)?;
        Ok(epochs.get(brain).map_err(db_error)?.map(|height| height.value()))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        // The state machine's Store has no error channel: an unreadable database is fatal.
        let state = self.txn.open_table(STATE).expect("state table readable");
        state.get(key).expect("state entry readable").map(|value| value.value().to_vec())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let state = self.txn.open_table(STATE).expect("state table readable");
        let range = state.range::<&[u8]>(prefix..).expect("state range readable");
        let mut out = BTreeMap::new();
        for entry in range {
            let (key, value) = entry.expect("state entry readable");
            if !key.value().starts_with(prefix) {
                break;
            }
            out.insert(key.value().to_vec(), value.value().to_vec());
        }
        out
    }
}

/// The finalized snapshot plus the changes of unfinalized ancestors (oldest first), collecting
/// new writes in `changes`.
pub struct Overlay {
    base: Snapshot,
    layers: Vec<Arc<Changes>>,
    pub changes: Changes,
}

impl Overlay {
    pub fn new(base: Snapshot, layers: Vec<Arc<Changes>>) -> Self {
        Self { base, layers, changes: Changes::new() }
    }
}

impl Store for Overlay {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let newest_first =
            std::iter::once(&self.changes).chain(self.layers.iter().rev().map(|l| &**l));
        for layer in newest_first {
            if let Some(value) = layer.get(key) {
                return value.clone();
            }
        }
        self.base.get(key)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.changes.insert(key, Some(value));
    }

    fn delete(&mut self, key: &[u8]) {
        self.changes.insert(key.to_vec(), None);
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut entries = self.base.scan_prefix(prefix);
        let oldest_first = self.layers.iter().map(|l| &**l).chain(std::iter::once(&self.changes));
        for layer in oldest_first {
            let in_prefix = layer
                .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix));
            for (key, value) in in_prefix {
                match value {
                    Some(value) => entries.insert(key.clone(), value.clone()),
                    None => entries.remove(key),
                };
            }
        }
        entries.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use based_state::ReceiptRecord;
    use based_types::{BlockHeader, PublicKey};

    use super::*;

    fn block(height: u64) -> Block {
        let header = BlockHeader {
            chain_id: 1,
            height,
            parent: Hash([height as u8; 32]),
            transactions_root: Hash([0; 32]),
            state_root: Hash([2; 32]),
            timestamp_ms: height,
            proposer: PublicKey([3; 32]),
        };
        Block { header, transactions: Vec::new() }
    }

    #[test]
    fn blocks_receipts_and_indexes_survive_reopening_the_file() {
        let path = std::env::temp_dir().join(format!("based-ledger-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let failed = ReceiptRecord {
            tx_hash: Hash([8; 32]),
            fee: 1_000,
            error: Some("Brain #9 does not exist".into()),
            events: Vec::new(),
        };
        let outcome = OutcomeRecord {
            receipts: vec![failed.clone()],
            events: vec![Event::EpochPaid { brain: 4, paid: 10, withheld: 0, performance: 1 }],
        };
        let first = block(1);
        {
            let ledger = Ledger::open(&path).expect("open");
            for (height, block, outcome) in
                [(0, block(0), OutcomeRecord::default()), (1, first.clone(), outcome.clone())]
            {
                let finalized = Finalized {
                    applied: Applied { height, digest: [height as u8; 32] },
                    encoded_block: &block.to_bytes(),
                    block: &block,
                    outcome: &outcome,
                };
                let changes = Changes::from([(vec![height as u8], Some(vec![1]))]);
                ledger.commit(&finalized, &changes).expect("commit");
            }
        }
        let reopened = Ledger::open(&path).expect("reopen");
        let snapshot = reopened.snapshot().expect("snapshot");
        assert_eq!(snapshot.applied().unwrap(), Some(Applied { height: 1, digest: [1; 32] }));
        assert_eq!(snapshot.block(1).unwrap(), Some(first.to_bytes()));
        assert_eq!(snapshot.height_of(&first.hash()).unwrap(), Some(1));
        assert_eq!(snapshot.height_of(&Hash([5; 32])).unwrap(), None);
        assert_eq!(snapshot.outcome(1).unwrap(), Some(outcome));
        assert_eq!(snapshot.outcome(0).unwrap(), Some(OutcomeRecord::default()));
        assert_eq!(snapshot.outcome(2).unwrap(), None);
        assert_eq!(snapshot.transaction(&failed.tx_hash).unwrap(), Some((1, 0)));
        assert_eq!(snapshot.transaction(&Hash([9; 32])).unwrap(), None);
        assert_eq!(snapshot.last_epoch(4).unwrap(), Some(1));
        assert_eq!(snapshot.last_epoch(5).unwrap(), None);
        drop((snapshot, reopened));
        let _ = std::fs::remove_file(&path);
    }
}
