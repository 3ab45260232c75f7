//! What happened: receipts of transactions and events of block boundaries.

use based_types::{Amount, BrainId, Hash, PublicKey, Role, Uid};

use crate::error::TxError;
use crate::records::ProposalStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Transferred { from: PublicKey, to: PublicKey, amount: Amount },
    PepeTransferred { from: PublicKey, to: PublicKey, amount: Amount },
    BridgeAttested { event_id: Hash, attestations: u32 },
    PepeBridged { event_id: Hash, recipient: PublicKey, amount: Amount },
    BrainAcquired { brain: BrainId, owner: PublicKey, pepe: Amount, by_stake: bool },
    BrainDeactivated { brain: BrainId, pepe_returned: Amount },
    BrainApproved { brain: BrainId, approved: Option<PublicKey> },
    BrainTransferred { brain: BrainId, from: PublicKey, to: PublicKey },
    BrainConfigured { brain: BrainId },
    NodeRegistered { brain: BrainId, role: Role, uid: Uid, hotkey: PublicKey, fee: Amount },
    NodeReplaced { brain: BrainId, role: Role, uid: Uid, hotkey: PublicKey },
    StakeChanged { brain: BrainId, hotkey: PublicKey, staker: PublicKey, stake: Amount },
    WeightsSet { brain: BrainId, uid: Uid },
    CommissionSet { brain: BrainId, uid: Uid, commission_ppb: u32 },
    EscrowChanged { user: PublicKey, balance: Amount },
    ReceiptRedeemed { user: PublicKey, brain: BrainId, miner_paid: Amount, owner_paid: Amount },
    ProposalCreated { id: u64, ends_at: u64 },
    Voted { proposal: u64 },
    EpochPaid { brain: BrainId, paid: Amount, withheld: Amount, performance: u64 },
    ProposalDecided { id: u64, status: ProposalStatus },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub tx_hash: Hash,
    pub fee: Amount,
    /// `Err`: the call failed; only the fee and nonce were taken.
    pub outcome: Result<Vec<Event>, TxError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutcome {
    pub height: u64,
    pub receipts: Vec<Receipt>,
    pub events: Vec<Event>,
    pub state_root: Hash,
}
