//! Finalized state and blocks in redb, and copy-on-write views over them for speculative
//! execution of blocks that are not final yet.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use based_state::Store;
use redb::{Database, ReadTransaction, ReadableDatabase as _, ReadableTable as _, TableDefinition};

/// Writes of one or more blocks over a base: `None` deletes the key.
pub type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
/// Encoded `ChainBlock`s by height.
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const APPLIED_HEIGHT: &str = "applied_height";
const APPLIED_DIGEST: &str = "applied_digest";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database: {0}")]
    Database(#[from] redb::Error),
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
        write.open_table(META).map_err(db_error)?;
        write.commit().map_err(db_error)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// A consistent read-only view of the finalized state, unaffected by later commits.
    pub fn snapshot(&self) -> Result<Snapshot, LedgerError> {
        Ok(Snapshot { txn: Arc::new(self.db.begin_read().map_err(db_error)?) })
    }

    /// Atomically records a finalized block and the state changes it made.
    pub fn commit(
        &self,
        applied: Applied,
        encoded_block: &[u8],
        changes: &Changes,
    ) -> Result<(), LedgerError> {
        let write = self.db.begin_write().map_err(db_error)?;
        {
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
