//! The BasedAI chain node: Commonware simplex consensus ordering blocks of signed transactions
//! that `based-state` executes, a mempool, and finalized state persisted in redb.

pub mod application;
pub mod block;
pub mod engine;
pub mod gossip;
pub mod ledger;
pub mod mempool;
pub mod run;
pub mod telemetry;

pub use application::{Application, ChainSpec, NodeError};
pub use block::ChainBlock;
pub use engine::{Channels, ValidatorConfig, channel_quotas, start_validator};
pub use ledger::Ledger;
pub use mempool::{Mempool, MempoolError};
pub use run::{NodeConfig, run};
