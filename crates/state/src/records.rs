//! What the state stores, and under which keys. Every record uses the canonical codec of
//! `based-types`; keys start with one prefix byte per record kind, integers big-endian so that
//! key order is numeric order.

use based_types::{
    Amount, BrainId, Hash, ParamId, Ppb, PublicKey, Role, Uid, codec_enum, codec_struct,
};

use crate::params::Params;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub nonce: u64,
    pub balance: Amount,
    pub pepe: Amount,
    /// PEPE committed to governance votes, unmovable until `pepe_locked_until`.
    pub pepe_locked: Amount,
    pub pepe_locked_until: u64,
}
codec_struct!(Account { nonce, balance, pepe, pepe_locked, pepe_locked_until });

impl Account {
    pub fn free_pepe(&self, height: u64) -> Amount {
        if height < self.pepe_locked_until {
            self.pepe.saturating_sub(self.pepe_locked)
        } else {
            self.pepe
        }
    }
}

/// Chain-wide counters and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Globals {
    pub chain_id: u32,
    pub height: u64,
    pub foundation: PublicKey,
    pub relayers: Vec<PublicKey>,
    pub relayer_threshold: u32,
    pub params: Params,
    pub brains_burned: u64,
    pub genesis_based: Amount,
    /// Emission credited to accounts.
    pub emitted_based: Amount,
    /// Emission nobody could earn (no consensus, immature owner share): never minted.
    pub withheld_based: Amount,
    pub fees_burned: Amount,
    pub genesis_pepe: Amount,
    pub bridged_pepe: Amount,
    pub pepe_burned: Amount,
    pub total_stake: Amount,
    pub next_proposal: u64,
    pub open_proposals: Vec<u64>,
}
codec_struct!(Globals {
    chain_id,
    height,
    foundation,
    relayers,
    relayer_threshold,
    params,
    brains_burned,
    genesis_based,
    emitted_based,
    withheld_based,
    fees_burned,
    genesis_pepe,
    bridged_pepe,
    pepe_burned,
    total_stake,
    next_proposal,
    open_proposals,
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    Reserved {},
    Burn { price: Amount },
    Stake { locked: Amount },
}
codec_enum!(Acquisition { 0 => Reserved {}, 1 => Burn { price }, 2 => Stake { locked } });

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrainSettings {
    pub model_id: String,
    pub model_revision: String,
    pub model_hash: Hash,
    pub miners_ppb: Ppb,
    pub name: String,
    pub label: String,
    pub reward_address: PublicKey,
    pub registration_fee: Amount,
    pub memorize_fee: Amount,
    pub owner_fee_share_ppb: Ppb,
    pub prompt_price_per_1000: Amount,
    pub completion_price_per_1000: Amount,
    pub max_context: u32,
}
codec_struct!(BrainSettings {
    model_id,
    model_revision,
    model_hash,
    miners_ppb,
    name,
    label,
    reward_address,
    registration_fee,
    memorize_fee,
    owner_fee_share_ppb,
    prompt_price_per_1000,
    completion_price_per_1000,
    max_context,
});

/// A Brain: the NFT (owner, approval, how it was acquired) and its economics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brain {
    pub owner: PublicKey,
    pub approved: Option<PublicKey>,
    pub acquisition: Acquisition,
    pub acquired_at: u64,
    pub settings: BrainSettings,
    /// BASED staked on this Brain's validators.
    pub stake: Amount,
    /// Share of rank backed by consensus in the last epoch (Q32).
    pub performance: u64,
    /// Emission accrued since the last tempo payout.
    pub accrued: Amount,
}
codec_struct!(Brain {
    owner,
    approved,
    acquisition,
    acquired_at,
    settings,
    stake,
    performance,
    accrued
});

impl Brain {
    pub fn is_transferable(&self) -> bool {
        !matches!(self.acquisition, Acquisition::Stake { .. })
    }

    /// The owner earns rewards (and may deactivate a staked Brain) from this height.
    pub fn matures_at(&self) -> u64 {
        match self.acquisition {
            Acquisition::Stake { .. } => {
                self.acquired_at.saturating_add(crate::params::STAKE_MATURITY_BLOCKS)
            }
            _ => self.acquired_at,
        }
    }
}

/// A registered miner or validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub hotkey: PublicKey,
    pub coldkey: PublicKey,
    pub registered_at: u64,
    pub fee_paid: Amount,
    /// Validators: total BASED staked on it.
    pub stake: Amount,
    pub commission_ppb: Ppb,
    /// Validators: (miner uid, weight).
    pub weights: Vec<(Uid, u16)>,
    pub weights_set_at: Option<u64>,
    /// Validators: (miner uid, credit in Q32), Yuma's bonds.
    pub credits: Vec<(Uid, u64)>,
    pub credits_updated_at: u64,
    pub active: bool,
    /// Miners: incentive; validators: dividends (Q32, last epoch). Lowest is replaced first.
    pub score: u64,
    pub last_reward: Amount,
}
codec_struct!(Node {
    hotkey,
    coldkey,
    registered_at,
    fee_paid,
    stake,
    commission_ppb,
    weights,
    weights_set_at,
    credits,
    credits_updated_at,
    active,
    score,
    last_reward,
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub role: Role,
    pub uid: Uid,
}
codec_struct!(NodeRef { role, uid });

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeEvent {
    pub recipient: PublicKey,
    pub amount: Amount,
    pub attesters: Vec<PublicKey>,
    pub credited: bool,
}
codec_struct!(BridgeEvent { recipient, amount, attesters, credited });

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Escrow {
    pub balance: Amount,
    pub release_requested_at: Option<u64>,
}
codec_struct!(Escrow { balance, release_requested_at });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalStatus {
    Open,
    Passed,
    Rejected,
    Vetoed,
}
codec_enum!(ProposalStatus { 0 => Open {}, 1 => Passed {}, 2 => Rejected {}, 3 => Vetoed {} });

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub proposer: PublicKey,
    pub param: ParamId,
    pub value: u64,
    pub created_at: u64,
    pub ends_at: u64,
    pub yes: Vec<BrainId>,
    pub no: Vec<BrainId>,
    pub pepe_support: Amount,
    pub pepe_veto: Amount,
    pub status: ProposalStatus,
}
codec_struct!(Proposal {
    proposer,
    param,
    value,
    created_at,
    ends_at,
    yes,
    no,
    pepe_support,
    pepe_veto,
    status,
});

pub(crate) mod keys {
    use super::*;

    const GLOBALS: u8 = 0x00;
    const ACCOUNT: u8 = 0x01;
    const BRAIN: u8 = 0x02;
    const NODE: u8 = 0x03;
    const HOTKEY: u8 = 0x04;
    const STAKE: u8 = 0x05;
    const LABEL: u8 = 0x06;
    const BRIDGE: u8 = 0x07;
    const ESCROW: u8 = 0x08;
    const CHANNEL: u8 = 0x09;
    const PROPOSAL: u8 = 0x0a;
    const PEPE_VOTE: u8 = 0x0b;

    fn key(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn role_byte(role: Role) -> u8 {
        match role {
            Role::Validator => 0,
            Role::Miner => 1,
        }
    }

    pub fn globals() -> Vec<u8> {
        vec![GLOBALS]
    }
    pub fn account(address: &PublicKey) -> Vec<u8> {
        key(&[&[ACCOUNT], &address.0])
    }
    pub fn account_prefix() -> Vec<u8> {
        vec![ACCOUNT]
    }
    pub fn brain(brain: BrainId) -> Vec<u8> {
        key(&[&[BRAIN], &brain.to_be_bytes()])
    }
    pub fn brain_prefix() -> Vec<u8> {
        vec![BRAIN]
    }
    pub fn brain_id_of(key: &[u8]) -> Option<BrainId> {
        Some(BrainId::from_be_bytes(key.get(1..3)?.try_into().ok()?))
    }
    pub fn node(brain: BrainId, role: Role, uid: Uid) -> Vec<u8> {
        key(&[&[NODE], &brain.to_be_bytes(), &[role_byte(role)], &uid.to_be_bytes()])
    }
    pub fn nodes_prefix(brain: BrainId, role: Role) -> Vec<u8> {
        key(&[&[NODE], &brain.to_be_bytes(), &[role_byte(role)]])
    }
    pub fn uid_of_node_key(key: &[u8]) -> Option<Uid> {
        Some(Uid::from_be_bytes(key.get(4..6)?.try_into().ok()?))
    }
    pub fn hotkey(brain: BrainId, hotkey: &PublicKey) -> Vec<u8> {
        key(&[&[HOTKEY], &brain.to_be_bytes(), &hotkey.0])
    }
    pub fn stake(brain: BrainId, uid: Uid, staker: &PublicKey) -> Vec<u8> {
        key(&[&[STAKE], &brain.to_be_bytes(), &uid.to_be_bytes(), &staker.0])
    }
    pub fn stakes_prefix(brain: BrainId, uid: Uid) -> Vec<u8> {
        key(&[&[STAKE], &brain.to_be_bytes(), &uid.to_be_bytes()])
    }
    pub fn staker_of_stake_key(key: &[u8]) -> Option<PublicKey> {
        Some(PublicKey(key.get(5..37)?.try_into().ok()?))
    }
    pub fn label(label: &str) -> Vec<u8> {
        key(&[&[LABEL], label.as_bytes()])
    }
    pub fn bridge_event(event_id: &Hash) -> Vec<u8> {
        key(&[&[BRIDGE], &event_id.0])
    }
    pub fn escrow(user: &PublicKey) -> Vec<u8> {
        key(&[&[ESCROW], &user.0])
    }
    pub fn escrow_prefix() -> Vec<u8> {
        vec![ESCROW]
    }
    pub fn channel(user: &PublicKey, brain: BrainId, miner: &PublicKey) -> Vec<u8> {
        key(&[&[CHANNEL], &user.0, &brain.to_be_bytes(), &miner.0])
    }
    pub fn proposal(id: u64) -> Vec<u8> {
        key(&[&[PROPOSAL], &id.to_be_bytes()])
    }
    pub fn pepe_vote(proposal: u64, voter: &PublicKey) -> Vec<u8> {
        key(&[&[PEPE_VOTE], &proposal.to_be_bytes(), &voter.0])
    }
}
