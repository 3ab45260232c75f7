//! BasedAI core types: amounts, ed25519 keys and addresses, SHA-256 hashes, and the canonical
//! binary encoding of transactions and blocks (strict decoding with typed errors).

pub mod amount;
pub mod block;
pub mod codec;
pub mod hash;
pub mod keys;
pub mod tx;

pub use amount::{Amount, AmountError, UNITS_PER_COIN, coins, format_amount, parse_amount};
pub use block::{Block, BlockHeader, transactions_root};
pub use codec::{Decode, DecodeError, Encode, Reader};
pub use hash::Hash;
pub use keys::{PublicKey, SecretKey, Signature, verify_batch};
pub use tx::{
    BrainId, BrainSetting, Call, PPB, ParamId, Ppb, Role, SignedTransaction, Transaction, Uid,
    UsageReceipt,
};
