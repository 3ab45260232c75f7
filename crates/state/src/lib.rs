//! The BasedAI protocol state machine (SPEC section 3): accounts, Brains, miners and
//! validators, emission and the Yuma-style epoch, compute-unit payments and governance.
//!
//! Deterministic by construction: no I/O, no clocks, no floats. Storage is behind [`Store`];
//! ratios are fixed-point integers ([`fixed`]).

mod accounts;
pub mod bench;
mod brains;
mod compute;
mod emission;
pub mod epoch;
mod error;
mod events;
pub mod fixed;
mod governance;
mod nodes;
pub mod params;
pub mod records;
mod state;
mod store;

#[cfg(test)]
mod tests;

pub use brains::burn_price;
pub use emission::{BlockShares, split_block_reward};
pub use error::{BlockError, GenesisError, TxError};
pub use events::{BlockOutcome, Event, OutcomeRecord, Receipt, ReceiptRecord};
pub use governance::{all_params, decide, is_giga_brain};
pub use params::Params;
pub use state::{GenesisConfig, State};
pub use store::{MemoryStore, Store, state_root};
