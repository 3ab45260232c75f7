//! Blocks: a header committing to the parent, the transactions and the post-state root.

use crate::codec::{DecodeError, Encode};
use crate::codec_struct;
use crate::hash::Hash;
use crate::keys::PublicKey;
use crate::tx::SignedTransaction;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    pub chain_id: u32,
    pub height: u64,
    pub parent: Hash,
    pub transactions_root: Hash,
    /// The state root after applying this block.
    pub state_root: Hash,
    /// Proposer's wall clock, informational only: the state machine never reads it.
    pub timestamp_ms: u64,
    pub proposer: PublicKey,
}
codec_struct!(BlockHeader {
    chain_id,
    height,
    parent,
    transactions_root,
    state_root,
    timestamp_ms,
    proposer
});

impl BlockHeader {
    pub fn hash(&self) -> Hash {
        Hash::of(&self.to_bytes())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub header: BlockHeader,
    pub transactions: Vec<SignedTransaction>,
}
codec_struct!(Block { header, transactions });

impl Block {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        <Self as crate::codec::Decode>::from_bytes(bytes)
    }
}

/// Commitment to an ordered list of transactions: the hash of their hashes.
pub fn transactions_root(transactions: &[SignedTransaction]) -> Hash {
    let mut hashes = Vec::with_capacity(transactions.len() * 32);
    for transaction in transactions {
        hashes.extend_from_slice(&transaction.hash().0);
    }
    Hash::of(&hashes)
}
