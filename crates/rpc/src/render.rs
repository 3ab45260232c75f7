//! JSON renderings of chain types: amounts as decimal strings of base units, keys and hashes as
//! lowercase hex, enums as objects with a snake-case `kind`.

use based_state::records::{Account, Acquisition, Brain, Node, Proposal, ProposalStatus};
use based_state::{Event, OutcomeRecord, ReceiptRecord};
use based_types::{
    Amount, Block, BrainId, BrainSetting, Call, Encode as _, ParamId, Role, SignedTransaction,
};
use serde_json::{Map, Value, json};

use crate::{Head, encode_hex};

/// Amounts are decimal strings of base units (10^-9 BASED), exact beyond 2^53.
pub fn amount(value: Amount) -> Value {
    Value::String(value.to_string())
}

pub fn role(role: Role) -> &'static str {
    match role {
        Role::Validator => "validator",
        Role::Miner => "miner",
    }
}

pub fn head(head: &Head) -> Value {
    json!({
        "chain_id": head.chain_id,
        "height": head.height,
        "hash": head.hash.to_hex(),
        "state_root": head.state_root.to_hex(),
        "timestamp_ms": head.timestamp_ms,
        "proposer": head.proposer.to_hex(),
    })
}

pub fn account(address: &based_types::PublicKey, account: &Account, height: u64) -> Value {
    json!({
        "address": address.to_hex(),
        "height": height,
        "nonce": account.nonce,
        "balance": amount(account.balance),
        "pepe": amount(account.pepe),
        "pepe_locked": amount(account.pepe_locked),
        "pepe_locked_until": account.pepe_locked_until,
        "pepe_free": amount(account.free_pepe(height + 1)),
    })
}

pub fn brain(id: BrainId, brain: &Brain) -> Value {
    let acquisition = match &brain.acquisition {
        Acquisition::Reserved {} => json!({ "kind": "reserved" }),
        Acquisition::Burn { price } => json!({ "kind": "burn", "price": amount(*price) }),
        Acquisition::Stake { locked } => json!({ "kind": "stake", "locked": amount(*locked) }),
    };
    let s = &brain.settings;
    let mut settings = Map::new();
    settings.insert("model_id".into(), json!(s.model_id));
    settings.insert("model_revision".into(), json!(s.model_revision));
    settings.insert("model_hash".into(), json!(s.model_hash.to_hex()));
    settings.insert("miners_ppb".into(), json!(s.miners_ppb));
    settings.insert("name".into(), json!(s.name));
    settings.insert("label".into(), json!(s.label));
    settings.insert("reward_address".into(), json!(s.reward_address.to_hex()));
    settings.insert("registration_fee".into(), amount(s.registration_fee));
    settings.insert("memorize_fee".into(), amount(s.memorize_fee));
    settings.insert("owner_fee_share_ppb".into(), json!(s.owner_fee_share_ppb));
    settings.insert("prompt_price_per_1000".into(), amount(s.prompt_price_per_1000));
    settings.insert("completion_price_per_1000".into(), amount(s.completion_price_per_1000));
    settings.insert("max_context".into(), json!(s.max_context));
    json!({
        "id": id,
        "owner": brain.owner.to_hex(),
        "approved": brain.approved.map(|key| key.to_hex()),
        "transferable": brain.is_transferable(),
        "acquisition": acquisition,
        "acquired_at": brain.acquired_at,
        "matures_at": brain.matures_at(),
        "stake": amount(brain.stake),
        "performance": brain.performance,
        "accrued": amount(brain.accrued),
        "settings": settings,
    })
}

/// A block header and its transactions: hashes only, or decoded with `full`.
pub fn block(block: &Block, full: bool) -> Value {
    let h = &block.header;
    let transactions: Vec<Value> = block
        .transactions
        .iter()
        .map(|tx| if full { transaction(tx) } else { json!(tx.hash().to_hex()) })
        .collect();
    json!({
        "chain_id": h.chain_id,
        "height": h.height,
        "hash": block.hash().to_hex(),
        "parent": h.parent.to_hex(),
        "transactions_root": h.transactions_root.to_hex(),
        "state_root": h.state_root.to_hex(),
        "timestamp_ms": h.timestamp_ms,
        "proposer": h.proposer.to_hex(),
        "transaction_count": block.transactions.len(),
        "transactions": transactions,
    })
}

pub fn transaction(signed: &SignedTransaction) -> Value {
    let tx = &signed.transaction;
    json!({
        "hash": signed.hash().to_hex(),
        "chain_id": tx.chain_id,
        "signer": tx.signer.to_hex(),
        "nonce": tx.nonce,
        "fee": amount(tx.fee),
        "call": call(&tx.call),
        "encoded": encode_hex(&signed.to_bytes()),
    })
}

pub fn param(param: ParamId) -> &'static str {
    match param {
        ParamId::Tempo => "tempo",
        ParamId::BonusSharePpb => "bonus_share_ppb",
        ParamId::BonusTopPpb => "bonus_top_ppb",
        ParamId::ActivePercentilePpb => "active_percentile_ppb",
        ParamId::StakeCapPpb => "stake_cap_ppb",
        ParamId::OwnerSharePpb => "owner_share_ppb",
        ParamId::ConsensusSteepness => "consensus_steepness",
        ParamId::DefaultRegistrationFee => "default_registration_fee",
        ParamId::DefaultCommissionPpb => "default_commission_ppb",
        ParamId::ImmunityPeriod => "immunity_period",
        ParamId::WeightsRateLimit => "weights_rate_limit",
        ParamId::VotingPeriod => "voting_period",
        ParamId::MinTransactionFee => "min_transaction_fee",
        ParamId::EscrowReleaseDelay => "escrow_release_delay",
    }
}

fn setting(setting: &BrainSetting) -> Value {
    match setting {
        BrainSetting::Model { model_id, revision, weights_hash } => json!({
            "kind": "model", "model_id": model_id, "revision": revision,
            "weights_hash": weights_hash.to_hex(),
        }),
        BrainSetting::Split { miners_ppb } => json!({ "kind": "split", "miners_ppb": miners_ppb }),
        BrainSetting::Name { name } => json!({ "kind": "name", "name": name }),
        BrainSetting::Label { label } => json!({ "kind": "label", "label": label }),
        BrainSetting::RewardAddress { address } => {
            json!({ "kind": "reward_address", "address": address.to_hex() })
        }
        BrainSetting::RegistrationFee { amount: fee } => {
            json!({ "kind": "registration_fee", "amount": amount(*fee) })
        }
        BrainSetting::MemorizeFee { amount: fee } => {
            json!({ "kind": "memorize_fee", "amount": amount(*fee) })
        }
        BrainSetting::OwnerFeeShare { ppb } => json!({ "kind": "owner_fee_share", "ppb": ppb }),
        BrainSetting::ComputePrices { prompt_per_1000, completion_per_1000, max_context } => {
            json!({
                "kind": "compute_prices", "prompt_per_1000": amount(*prompt_per_1000),
                "completion_per_1000": amount(*completion_per_1000), "max_context": max_context,
            })
        }
    }
}

pub fn call(call: &Call) -> Value {
    match call {
        Call::Transfer { to, amount: value } => {
            json!({ "kind": "transfer", "to": to.to_hex(), "amount": amount(*value) })
        }
        Call::TransferPepe { to, amount: value } => {
            json!({ "kind": "transfer_pepe", "to": to.to_hex(), "amount": amount(*value) })
        }
        Call::BridgeAttest { event_id, recipient, amount: value } => json!({
            "kind": "bridge_attest", "event_id": event_id.to_hex(),
            "recipient": recipient.to_hex(), "amount": amount(*value),
        }),
        Call::AcquireBrainByBurn {} => json!({ "kind": "acquire_brain_by_burn" }),
        Call::AcquireBrainByStake {} => json!({ "kind": "acquire_brain_by_stake" }),
        Call::DeactivateBrain { brain } => json!({ "kind": "deactivate_brain", "brain": brain }),
        Call::ApproveBrain { brain, approved } => json!({
            "kind": "approve_brain", "brain": brain, "approved": approved.map(|k| k.to_hex()),
        }),
        Call::TransferBrain { brain, to } => {
            json!({ "kind": "transfer_brain", "brain": brain, "to": to.to_hex() })
        }
        Call::ConfigureBrain { brain, setting: value } => {
            json!({ "kind": "configure_brain", "brain": brain, "setting": setting(value) })
        }
        Call::Register { brain, hotkey, role: r, max_fee } => json!({
            "kind": "register", "brain": brain, "hotkey": hotkey.to_hex(), "role": role(*r),
            "max_fee": amount(*max_fee),
        }),
        Call::AddStake { brain, hotkey, amount: value } => json!({
            "kind": "add_stake", "brain": brain, "hotkey": hotkey.to_hex(),
            "amount": amount(*value),
        }),
        Call::RemoveStake { brain, hotkey, amount: value } => json!({
            "kind": "remove_stake", "brain": brain, "hotkey": hotkey.to_hex(),
            "amount": amount(*value),
        }),
        Call::SetWeights { brain, weights } => {
            json!({ "kind": "set_weights", "brain": brain, "weights": weights })
        }
        Call::SetCommission { brain, commission_ppb } => {
            json!({ "kind": "set_commission", "brain": brain, "commission_ppb": commission_ppb })
        }
        Call::FundEscrow { amount: value } => {
            json!({ "kind": "fund_escrow", "amount": amount(*value) })
        }
        Call::RequestEscrowRelease {} => json!({ "kind": "request_escrow_release" }),
        Call::ReleaseEscrow {} => json!({ "kind": "release_escrow" }),
        Call::RedeemReceipt { receipt, user_signature } => json!({
            "kind": "redeem_receipt",
            "receipt": {
                "chain_id": receipt.chain_id, "user": receipt.user.to_hex(),
                "brain": receipt.brain, "miner": receipt.miner.to_hex(),
                "prompt_units": receipt.prompt_units,
                "completion_units": receipt.completion_units, "amount": amount(receipt.amount),
            },
            "user_signature": encode_hex(&user_signature.to_bytes()),
        }),
        Call::Propose { brain, param: p, value } => {
            json!({ "kind": "propose", "brain": brain, "param": param(*p), "value": value })
        }
        Call::VoteAsBrain { proposal, brain, approve } => json!({
            "kind": "vote_as_brain", "proposal": proposal, "brain": brain, "approve": approve,
        }),
        Call::VoteWithPepe { proposal, veto } => {
            json!({ "kind": "vote_with_pepe", "proposal": proposal, "veto": veto })
        }
    }
}

pub fn proposal_status(status: ProposalStatus) -> &'static str {
    match status {
        ProposalStatus::Open => "open",
        ProposalStatus::Passed => "passed",
        ProposalStatus::Rejected => "rejected",
        ProposalStatus::Vetoed => "vetoed",
    }
}

/// `{"kind": "<snake case>", ..fields}`.
pub fn event(event: &Event) -> Value {
    let mut value = match event {
        Event::Transferred { from, to, amount: a }
        | Event::PepeTransferred { from, to, amount: a } => {
            json!({ "from": from.to_hex(), "to": to.to_hex(), "amount": amount(*a) })
        }
        Event::BridgeAttested { event_id, attestations } => {
            json!({ "event_id": event_id.to_hex(), "attestations": attestations })
        }
        Event::PepeBridged { event_id, recipient, amount: a } => json!({
            "event_id": event_id.to_hex(), "recipient": recipient.to_hex(), "amount": amount(*a),
        }),
        Event::BrainAcquired { brain, owner, pepe, by_stake } => json!({
            "brain": brain, "owner": owner.to_hex(), "pepe": amount(*pepe), "by_stake": by_stake,
        }),
        Event::BrainDeactivated { brain, pepe_returned } => {
            json!({ "brain": brain, "pepe_returned": amount(*pepe_returned) })
        }
        Event::BrainApproved { brain, approved } => {
            json!({ "brain": brain, "approved": approved.map(|k| k.to_hex()) })
        }
        Event::BrainTransferred { brain, from, to } => {
            json!({ "brain": brain, "from": from.to_hex(), "to": to.to_hex() })
        }
        Event::BrainConfigured { brain } => json!({ "brain": brain }),
        Event::NodeRegistered { brain, role: r, uid, hotkey, fee } => json!({
            "brain": brain, "role": role(*r), "uid": uid, "hotkey": hotkey.to_hex(),
            "fee": amount(*fee),
        }),
        Event::NodeReplaced { brain, role: r, uid, hotkey } => json!({
            "brain": brain, "role": role(*r), "uid": uid, "hotkey": hotkey.to_hex(),
        }),
        Event::StakeChanged { brain, hotkey, staker, stake } => json!({
            "brain": brain, "hotkey": hotkey.to_hex(), "staker": staker.to_hex(),
            "stake": amount(*stake),
        }),
        Event::WeightsSet { brain, uid } => json!({ "brain": brain, "uid": uid }),
        Event::CommissionSet { brain, uid, commission_ppb } => {
            json!({ "brain": brain, "uid": uid, "commission_ppb": commission_ppb })
        }
        Event::EscrowChanged { user, balance } => {
            json!({ "user": user.to_hex(), "balance": amount(*balance) })
        }
        Event::ReceiptRedeemed { user, brain, miner_paid, owner_paid } => json!({
            "user": user.to_hex(), "brain": brain, "miner_paid": amount(*miner_paid),
            "owner_paid": amount(*owner_paid),
        }),
        Event::ProposalCreated { id, ends_at } => json!({ "id": id, "ends_at": ends_at }),
        Event::Voted { proposal } => json!({ "proposal": proposal }),
        Event::EpochPaid { brain, paid, withheld, performance } => json!({
            "brain": brain, "paid": amount(*paid), "withheld": amount(*withheld),
            "performance": performance,
        }),
        Event::ProposalDecided { id, status } => {
            json!({ "id": id, "status": proposal_status(*status) })
        }
    };
    value["kind"] = json!(event.kind());
    value
}

/// A finalized transaction's outcome as `based_getTransaction` reports it.
pub fn receipt(receipt: &ReceiptRecord, height: u64, index: u32) -> Value {
    json!({
        "hash": receipt.tx_hash.to_hex(),
        "status": "finalized",
        "height": height,
        "index": index,
        "fee": amount(receipt.fee),
        "success": receipt.error.is_none(),
        "error": receipt.error,
        "events": receipt.events.iter().map(event).collect::<Vec<_>>(),
    })
}

/// Every receipt and block event of one block.
pub fn outcome(outcome: &OutcomeRecord, height: u64) -> Value {
    let receipts: Vec<Value> = (0u32..)
        .zip(&outcome.receipts)
        .map(|(index, record)| receipt(record, height, index))
        .collect();
    json!({
        "height": height,
        "receipts": receipts,
        "events": outcome.events.iter().map(event).collect::<Vec<_>>(),
    })
}

pub fn node(brain: BrainId, r: Role, uid: based_types::Uid, node: &Node) -> Value {
    json!({
        "brain": brain,
        "role": role(r),
        "uid": uid,
        "hotkey": node.hotkey.to_hex(),
        "coldkey": node.coldkey.to_hex(),
        "registered_at": node.registered_at,
        "fee_paid": amount(node.fee_paid),
        "stake": amount(node.stake),
        "commission_ppb": node.commission_ppb,
        "active": node.active,
        "score": node.score,
        "last_reward": amount(node.last_reward),
        "weights_set_at": node.weights_set_at,
    })
}

pub fn proposal(id: u64, p: &Proposal) -> Value {
    json!({
        "id": id,
        "proposer": p.proposer.to_hex(),
        "param": param(p.param),
        "value": p.value,
        "created_at": p.created_at,
        "ends_at": p.ends_at,
        "yes": p.yes,
        "no": p.no,
        "pepe_support": amount(p.pepe_support),
        "pepe_veto": amount(p.pepe_veto),
        "status": proposal_status(p.status),
    })
}
