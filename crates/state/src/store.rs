//! The storage seam: the state machine reads and writes opaque keys and values through
//! [`Store`]. [`MemoryStore`] is the in-memory implementation; a node puts the same trait on an
//! embedded database.

use std::collections::BTreeMap;
use std::ops::Bound;

use based_types::Hash;

pub trait Store {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: &[u8]);
    /// Every entry whose key starts with `prefix`, in ascending key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.entries.insert(key, value);
    }

    fn delete(&mut self, key: &[u8]) {
        self.entries.remove(key);
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.entries
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
}

/// Pending writes over a store: `None` marks a deletion.
pub(crate) type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Applies `changes` to the entries of `base` under `prefix`.
pub(crate) fn overlay_scan(
    mut base: BTreeMap<Vec<u8>, Vec<u8>>,
    changes: &Changes,
    prefix: &[u8],
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let in_prefix = changes
        .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(|(key, _)| key.starts_with(prefix));
    for (key, value) in in_prefix {
        match value {
            Some(value) => base.insert(key.clone(), value.clone()),
            None => base.remove(key),
        };
    }
    base
}

/// The state root: SHA-256 over every key and value in key order, each length-prefixed.
/// Linear in the state size; an incremental Merkle scheme can replace it behind this function.
pub fn state_root(store: &dyn Store) -> Hash {
    root_of(&store.scan_prefix(&[]).into_iter().collect())
}

pub(crate) fn root_of(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Hash {
    let parts: Vec<&[u8]> =
        entries.iter().flat_map(|(key, value)| [key.as_slice(), value.as_slice()]).collect();
    Hash::of_parts(&parts)
}
