//! What happened: receipts of transactions and events of block boundaries.

use based_types::{Amount, BrainId, Hash, PublicKey, Role, Uid, codec_enum, codec_struct};

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
codec_enum!(Event {
    0 => Transferred { from, to, amount },
    1 => PepeTransferred { from, to, amount },
    2 => BridgeAttested { event_id, attestations },
    3 => PepeBridged { event_id, recipient, amount },
    4 => BrainAcquired { brain, owner, pepe, by_stake },
    5 => BrainDeactivated { brain, pepe_returned },
    6 => BrainApproved { brain, approved },
    7 => BrainTransferred { brain, from, to },
    8 => BrainConfigured { brain },
    9 => NodeRegistered { brain, role, uid, hotkey, fee },
    10 => NodeReplaced { brain, role, uid, hotkey },
    11 => StakeChanged { brain, hotkey, staker, stake },
    12 => WeightsSet { brain, uid },
    13 => CommissionSet { brain, uid, commission_ppb },
    14 => EscrowChanged { user, balance },
    15 => ReceiptRedeemed { user, brain, miner_paid, owner_paid },
    16 => ProposalCreated { id, ends_at },
    17 => Voted { proposal },
    18 => EpochPaid { brain, paid, withheld, performance },
    19 => ProposalDecided { id, status },
});

impl Event {
    /// Every value of [`Event::kind`].
    pub const KINDS: [&'static str; 20] = [
        "transferred",
        "pepe_transferred",
        "bridge_attested",
        "pepe_bridged",
        "brain_acquired",
        "brain_deactivated",
        "brain_approved",
        "brain_transferred",
        "brain_configured",
        "node_registered",
        "node_replaced",
        "stake_changed",
        "weights_set",
        "commission_set",
        "escrow_changed",
        "receipt_redeemed",
        "proposal_created",
        "voted",
        "epoch_paid",
        "proposal_decided",
    ];

    /// The variant's name in snake case, as clients filter and display it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Transferred { .. } => "transferred",
            Event::PepeTransferred { .. } => "pepe_transferred",
            Event::BridgeAttested { .. } => "bridge_attested",
            Event::PepeBridged { .. } => "pepe_bridged",
            Event::BrainAcquired { .. } => "brain_acquired",
            Event::BrainDeactivated { .. } => "brain_deactivated",
            Event::BrainApproved { .. } => "brain_approved",
            Event::BrainTransferred { .. } => "brain_transferred",
            Event::BrainConfigured { .. } => "brain_configured",
            Event::NodeRegistered { .. } => "node_registered",
            Event::NodeReplaced { .. } => "node_replaced",
            Event::StakeChanged { .. } => "stake_changed",
            Event::WeightsSet { .. } => "weights_set",
            Event::CommissionSet { .. } => "commission_set",
            Event::EscrowChanged { .. } => "escrow_changed",
            Event::ReceiptRedeemed { .. } => "receipt_redeemed",
            Event::ProposalCreated { .. } => "proposal_created",
            Event::Voted { .. } => "voted",
            Event::EpochPaid { .. } => "epoch_paid",
            Event::ProposalDecided { .. } => "proposal_decided",
        }
    }

    /// The Brain the event is about, if any.
    pub fn brain(&self) -> Option<BrainId> {
        match self {
            Event::BrainAcquired { brain, .. }
            | Event::BrainDeactivated { brain, .. }
            | Event::BrainApproved { brain, .. }
            | Event::BrainTransferred { brain, .. }
            | Event::BrainConfigured { brain }
            | Event::NodeRegistered { brain, .. }
            | Event::NodeReplaced { brain, .. }
            | Event::StakeChanged { brain, .. }
            | Event::WeightsSet { brain, .. }
            | Event::CommissionSet { brain, .. }
            | Event::ReceiptRedeemed { brain, .. }
            | Event::EpochPaid { brain, .. } => Some(*brain),
            Event::Transferred { .. }
            | Event::PepeTransferred { .. }
            | Event::BridgeAttested { .. }
            | Event::PepeBridged { .. }
            | Event::EscrowChanged { .. }
            | Event::ProposalCreated { .. }
            | Event::Voted { .. }
            | Event::ProposalDecided { .. } => None,
        }
    }

    /// The accounts and keys the event names (senders, recipients, owners, hot keys, stakers).
    pub fn accounts(&self) -> Vec<PublicKey> {
        match self {
            Event::Transferred { from, to, .. }
            | Event::PepeTransferred { from, to, .. }
            | Event::BrainTransferred { from, to, .. } => vec![*from, *to],
            Event::PepeBridged { recipient, .. } => vec![*recipient],
            Event::BrainAcquired { owner, .. } => vec![*owner],
            Event::BrainApproved { approved, .. } => approved.iter().copied().collect(),
            Event::NodeRegistered { hotkey, .. } | Event::NodeReplaced { hotkey, .. } => {
                vec![*hotkey]
            }
            Event::StakeChanged { hotkey, staker, .. } => vec![*hotkey, *staker],
            Event::EscrowChanged { user, .. } | Event::ReceiptRedeemed { user, .. } => vec![*user],
            Event::BridgeAttested { .. }
            | Event::BrainDeactivated { .. }
            | Event::BrainConfigured { .. }
            | Event::WeightsSet { .. }
            | Event::CommissionSet { .. }
            | Event::ProposalCreated { .. }
            | Event::Voted { .. }
            | Event::EpochPaid { .. }
            | Event::ProposalDecided { .. } => Vec::new(),
        }
    }
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

/// A receipt as a node stores and serves it: a failed call keeps its error as the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    pub tx_hash: Hash,
    pub fee: Amount,
    /// `Some`: the call failed with this error; only the fee and nonce were taken.
    pub error: Option<String>,
    /// Events of a successful call (empty when it failed).
    pub events: Vec<Event>,
}
codec_struct!(ReceiptRecord { tx_hash, fee, error, events });

/// What a finalized block did, as a node stores it: one receipt per transaction, in block
/// order, and the events of the block's end (emission, epochs, governance).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutcomeRecord {
    pub receipts: Vec<ReceiptRecord>,
    pub events: Vec<Event>,
}
codec_struct!(OutcomeRecord { receipts, events });

impl From<&BlockOutcome> for OutcomeRecord {
    fn from(outcome: &BlockOutcome) -> Self {
        let receipts = outcome
            .receipts
            .iter()
            .map(|receipt| {
                let (error, events) = match &receipt.outcome {
                    Ok(events) => (None, events.clone()),
                    Err(error) => (Some(error.to_string()), Vec::new()),
                };
                ReceiptRecord { tx_hash: receipt.tx_hash, fee: receipt.fee, error, events }
            })
            .collect();
        OutcomeRecord { receipts, events: outcome.events.clone() }
    }
}

#[cfg(test)]
mod tests {
    use based_types::{Decode as _, Encode as _};

    use super::*;

    #[test]
    fn outcome_records_keep_errors_and_events_and_round_trip() {
        let key = |n: u8| PublicKey([n; 32]);
        let outcome = BlockOutcome {
            height: 4,
            receipts: vec![
                Receipt {
                    tx_hash: Hash([1; 32]),
                    fee: 1_000,
                    outcome: Ok(vec![Event::Transferred { from: key(1), to: key(2), amount: 5 }]),
                },
                Receipt {
                    tx_hash: Hash([2; 32]),
                    fee: 2_000,
                    outcome: Err(TxError::UnknownBrain(900)),
                },
            ],
            events: vec![
                Event::EpochPaid { brain: 3, paid: 7, withheld: 1, performance: 9 },
                Event::ProposalDecided { id: 2, status: ProposalStatus::Vetoed },
                Event::BrainApproved { brain: 1, approved: None },
            ],
            state_root: Hash([9; 32]),
        };
        let record = OutcomeRecord::from(&outcome);
        assert_eq!(record.receipts[0].error, None);
        assert_eq!(record.receipts[0].events.len(), 1);
        assert_eq!(record.receipts[1].error.as_deref(), Some("Brain #900 does not exist"));
        assert!(record.receipts[1].events.is_empty());
        assert_eq!(OutcomeRecord::from_bytes(&record.to_bytes()), Ok(record.clone()));

        let first = &record.receipts[0].events[0];
        assert_eq!(
            (first.kind(), first.brain(), first.accounts()),
            ("transferred", None, vec![key(1), key(2)])
        );
        assert_eq!(record.events[0].brain(), Some(3));
        assert_eq!(record.events[1].kind(), "proposal_decided");
    }
}
