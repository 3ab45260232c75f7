//! The read methods beyond head, accounts and Brains: events over a height range, nodes,
//! stake, weights, epoch results, emission, proposals and chain parameters. Each answers from
//! one [`ChainView`].

use based_state::params::{
    BLOCKS_PER_YEAR, BURN_BASE_PRICE, BURN_PRICE_STEP, INITIAL_BLOCK_REWARD, MINER_SLOTS,
    RESERVED_BRAINS, STAKE_LOCK, STAKE_MATURITY_BLOCKS, VALIDATOR_SLOTS, block_reward,
};
use based_state::{Event, OutcomeRecord, all_params, is_giga_brain, split_block_reward};
use based_types::{BrainId, ParamId, PublicKey, Role, Uid};
use serde_json::{Map, Value, json};

use crate::{ChainInfo, ChainView, RpcError, parse_address, parse_brain_id, render};

/// Most blocks `based_getEvents` scans in one call.
pub const MAX_EVENT_BLOCKS: u64 = 1_000;
/// `based_getEvents` stops at the first block boundary past this many events.
pub const MAX_EVENTS: usize = 10_000;

/// Which events a client wants; every given criterion must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub kinds: Option<Vec<&'static str>>,
    pub brain: Option<BrainId>,
    pub account: Option<PublicKey>,
}

impl EventFilter {
    /// `{"kinds": [..], "brain": id, "account": address}`, each optional; `null` is no filter.
    pub fn parse(value: Option<&Value>) -> Result<Self, RpcError> {
        let Some(value) = value else { return Ok(Self::default()) };
        let Value::Object(map) = value else {
            return Err(RpcError::invalid_params(format!(
                "filter must be an object with optional \"kinds\", \"brain\", \"account\", got \
                 {value}"
            )));
        };
        let mut filter = Self::default();
        for (key, value) in map {
            match key.as_str() {
                "kinds" => filter.kinds = Some(parse_kinds(value)?),
                "brain" => filter.brain = Some(parse_brain_id(value)?),
                "account" => filter.account = Some(parse_address(value)?),
                other => {
                    return Err(RpcError::invalid_params(format!(
                        "unknown filter field \"{other}\"; fields: kinds, brain, account"
                    )));
                }
            }
        }
        Ok(filter)
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.kinds.as_ref().is_none_or(|kinds| kinds.contains(&event.kind()))
            && self.brain.is_none_or(|brain| event.brain() == Some(brain))
            && self.account.is_none_or(|account| event.accounts().contains(&account))
    }
}

fn parse_kinds(value: &Value) -> Result<Vec<&'static str>, RpcError> {
    let Value::Array(kinds) = value else {
        return Err(RpcError::invalid_params(format!(
            "filter kinds must be an array of event kinds, got {value}"
        )));
    };
    kinds
        .iter()
        .map(|kind| {
            let name = kind.as_str().unwrap_or_default();
            Event::KINDS.iter().copied().find(|known| *known == name).ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "unknown event kind {kind}; kinds: {}",
                    Event::KINDS.join(", ")
                ))
            })
        })
        .collect()
}

/// One event with where it happened: a transaction's (`tx_index`, `tx_hash`) or the block's
/// end (both `null`).
fn located(height: u64, tx: Option<(u32, &based_types::Hash)>, event: &Event) -> Value {
    json!({
        "height": height,
        "tx_index": tx.map(|(index, _)| index),
        "tx_hash": tx.map(|(_, hash)| hash.to_hex()),
        "event": render::event(event),
    })
}

/// The matching events of one block with their renderings, transactions first (in block
/// order), then the block's end.
pub fn located_events(
    outcome: &OutcomeRecord,
    height: u64,
    filter: &EventFilter,
) -> Vec<(Event, Value)> {
    let mut events = Vec::new();
    for (index, receipt) in (0u32..).zip(&outcome.receipts) {
        for event in receipt.events.iter().filter(|event| filter.matches(event)) {
            let rendered = located(height, Some((index, &receipt.tx_hash)), event);
            events.push((event.clone(), rendered));
        }
    }
    for event in outcome.events.iter().filter(|event| filter.matches(event)) {
        events.push((event.clone(), located(height, None, event)));
    }
    events
}

pub fn events<V: ChainView>(
    view: &V,
    from: u64,
    to: u64,
    filter: &EventFilter,
) -> Result<Value, RpcError> {
    if from > to {
        return Err(RpcError::invalid_params(format!("from ({from}) is above to ({to})")));
    }
    if to - from >= MAX_EVENT_BLOCKS {
        return Err(RpcError::invalid_params(format!(
            "heights {from}..={to} span {} blocks, more than the limit of {MAX_EVENT_BLOCKS}",
            to - from + 1
        )));
    }
    let head = view.head().height;
    let last = to.min(head);
    let mut events = Vec::new();
    let mut scanned = from.checked_sub(1);
    for height in from..=last {
        if events.len() > MAX_EVENTS {
            break;
        }
        if let Some(outcome) = view.outcome(height).map_err(RpcError::internal)? {
            let located = located_events(&outcome, height, filter);
            events.extend(located.into_iter().map(|(_, rendered)| rendered));
        }
        scanned = Some(height);
    }
    Ok(json!({
        "from": from,
        "to": scanned,
        "complete": scanned == Some(to),
        "events": events,
    }))
}

pub fn list_nodes<V: ChainView>(
    view: &V,
    brain: BrainId,
    role: Option<Role>,
) -> Result<Value, RpcError> {
    let state = view.state();
    if state.brain(brain).map_err(RpcError::internal)?.is_none() {
        return Ok(Value::Null);
    }
    let roles = match role {
        Some(role) => vec![role],
        None => vec![Role::Validator, Role::Miner],
    };
    let mut nodes = Vec::new();
    for role in roles {
        for (uid, node) in state.nodes(brain, role).map_err(RpcError::internal)? {
            nodes.push(render::node(brain, role, uid, &node));
        }
    }
    Ok(Value::Array(nodes))
}

pub fn node<V: ChainView>(view: &V, brain: BrainId, hotkey: &PublicKey) -> Result<Value, RpcError> {
    let found = view.state().node_by_hotkey(brain, hotkey).map_err(RpcError::internal)?;
    Ok(found.map_or(Value::Null, |(role, uid, node)| render::node(brain, role, uid, &node)))
}

pub fn stake<V: ChainView>(
    view: &V,
    brain: BrainId,
    hotkey: &PublicKey,
) -> Result<Value, RpcError> {
    let state = view.state();
    let Some((role, uid, node)) =
        state.node_by_hotkey(brain, hotkey).map_err(RpcError::internal)?
    else {
        return Ok(Value::Null);
    };
    if role != Role::Validator {
        return Err(RpcError::invalid_params(format!(
            "{hotkey} is a miner on Brain #{brain}; only validators hold stake"
        )));
    }
    let stakers: Vec<Value> = state
        .stakes(brain, uid)
        .map_err(RpcError::internal)?
        .iter()
        .map(
            |(staker, stake)| json!({ "staker": staker.to_hex(), "stake": render::amount(*stake) }),
        )
        .collect();
    Ok(json!({
        "brain": brain,
        "hotkey": hotkey.to_hex(),
        "uid": uid,
        "coldkey": node.coldkey.to_hex(),
        "total": render::amount(node.stake),
        "stakers": stakers,
    }))
}

pub fn weights<V: ChainView>(view: &V, brain: BrainId, uid: Uid) -> Result<Value, RpcError> {
    let validators = view.state().nodes(brain, Role::Validator).map_err(RpcError::internal)?;
    let Some((_, node)) = validators.iter().find(|(found, _)| *found == uid) else {
        return Ok(Value::Null);
    };
    let pairs = |pairs: &[(Uid, u64)], name: &str| -> Vec<Value> {
        pairs.iter().map(|(miner, value)| json!({ "uid": miner, name: value })).collect()
    };
    let weights: Vec<(Uid, u64)> = node.weights.iter().map(|(m, w)| (*m, u64::from(*w))).collect();
    Ok(json!({
        "brain": brain,
        "uid": uid,
        "hotkey": node.hotkey.to_hex(),
        "weights": pairs(&weights, "weight"),
        "weights_set_at": node.weights_set_at,
        "credits": pairs(&node.credits, "credit"),
        "credits_updated_at": node.credits_updated_at,
    }))
}

/// The last epoch of a Brain as the state keeps it: the Brain's performance, each node's score
/// (miners: incentive, validators: dividends), active flag and last reward, and the payout.
pub fn epoch<V: ChainView>(view: &V, brain: BrainId) -> Result<Value, RpcError> {
    let state = view.state();
    let Some(record) = state.brain(brain).map_err(RpcError::internal)? else {
        return Ok(Value::Null);
    };
    let tempo = state.params().map_err(RpcError::internal)?.tempo;
    let head = view.head().height;
    // Epochs run at the end of blocks where (height + brain) is a multiple of the tempo.
    let offset = (head + 1 + u64::from(brain)) % tempo;
    let next = head + 1 + if offset == 0 { 0 } else { tempo - offset };
    let last = view.last_epoch(brain).map_err(RpcError::internal)?;
    let mut payout = Value::Null;
    if let Some(height) = last {
        let outcome = view.outcome(height).map_err(RpcError::internal)?;
        let paid = outcome
            .iter()
            .flat_map(|o| &o.events)
            .find(|event| matches!(event, Event::EpochPaid { brain: b, .. } if *b == brain));
        payout = paid.map_or(Value::Null, render::event);
    }
    let nodes = |role: Role, score: &str| -> Result<Vec<Value>, RpcError> {
        let nodes = state.nodes(brain, role).map_err(RpcError::internal)?;
        Ok(nodes
            .iter()
            .map(|(uid, node)| {
                let mut value = json!({
                    "uid": uid,
                    "hotkey": node.hotkey.to_hex(),
                    score: node.score,
                    "last_reward": render::amount(node.last_reward),
                });
                if role == Role::Validator {
                    value["stake"] = render::amount(node.stake);
                    value["active"] = json!(node.active);
                }
                value
            })
            .collect())
    };
    Ok(json!({
        "brain": brain,
        "tempo": tempo,
        "last_epoch_height": last,
        "next_epoch_height": next,
        "performance": record.performance,
        "accrued": render::amount(record.accrued),
        "payout": payout,
        "validators": nodes(Role::Validator, "dividends")?,
        "miners": nodes(Role::Miner, "incentive")?,
    }))
}

pub fn emission<V: ChainView>(view: &V) -> Result<Value, RpcError> {
    let state = view.state();
    let globals = state.globals().map_err(RpcError::internal)?;
    let brains = state.brains().map_err(RpcError::internal)?;
    let next = view.head().height + 1;
    let reward = block_reward(next);
    let shares = split_block_reward(reward, &brains, &globals);
    let per_brain: Vec<Value> = brains
        .iter()
        .zip(&shares.per_brain)
        .map(|((id, brain), share)| {
            json!({
                "brain": id,
                "stake": render::amount(brain.stake),
                "performance": brain.performance,
                "giga_brain": is_giga_brain(brain, &globals),
                "accrued": render::amount(brain.accrued),
                "next_block_share": render::amount(*share),
            })
        })
        .collect();
    Ok(json!({
        "height": view.head().height,
        "next_block_reward": render::amount(reward),
        "initial_block_reward": render::amount(INITIAL_BLOCK_REWARD),
        "halving_interval": BLOCKS_PER_YEAR,
        "next_halving_at": (next - 1) / BLOCKS_PER_YEAR * BLOCKS_PER_YEAR + BLOCKS_PER_YEAR + 1,
        "next_block_withheld": render::amount(shares.withheld),
        "genesis_based": render::amount(globals.genesis_based),
        "emitted_based": render::amount(globals.emitted_based),
        "withheld_based": render::amount(globals.withheld_based),
        "fees_burned": render::amount(globals.fees_burned),
        "total_stake": render::amount(globals.total_stake),
        "genesis_pepe": render::amount(globals.genesis_pepe),
        "bridged_pepe": render::amount(globals.bridged_pepe),
        "pepe_burned": render::amount(globals.pepe_burned),
        "brains": per_brain,
    }))
}

pub fn proposal<V: ChainView>(view: &V, id: u64) -> Result<Value, RpcError> {
    let proposal = view.state().proposal(id).map_err(RpcError::internal)?;
    Ok(proposal.map_or(Value::Null, |proposal| render::proposal(id, &proposal)))
}

pub fn proposals<V: ChainView>(view: &V) -> Result<Value, RpcError> {
    let state = view.state();
    let count = state.globals().map_err(RpcError::internal)?.next_proposal;
    let mut list = Vec::new();
    for id in 0..count {
        if let Some(proposal) = state.proposal(id).map_err(RpcError::internal)? {
            list.push(render::proposal(id, &proposal));
        }
    }
    Ok(Value::Array(list))
}

pub fn params<V: ChainView>(view: &V, chain: &ChainInfo) -> Result<Value, RpcError> {
    let globals = view.state().globals().map_err(RpcError::internal)?;
    let mut params = Map::new();
    for (param, value) in all_params(&globals.params) {
        let value = match param {
            ParamId::DefaultRegistrationFee | ParamId::MinTransactionFee => render::amount(value),
            _ => json!(value),
        };
        params.insert(render::param(param).into(), value);
    }
    Ok(json!({
        "chain_id": globals.chain_id,
        "genesis_time_ms": chain.genesis_time_ms,
        "block_time_ms": chain.block_time_ms,
        "max_block_transactions": chain.max_block_transactions,
        "validators": chain.validators,
        "foundation": globals.foundation.to_hex(),
        "relayers": globals.relayers.iter().map(|key| key.to_hex()).collect::<Vec<_>>(),
        "relayer_threshold": globals.relayer_threshold,
        "params": params,
        "constants": {
            "blocks_per_year": BLOCKS_PER_YEAR,
            "initial_block_reward": render::amount(INITIAL_BLOCK_REWARD),
            "brain_count": crate::BRAIN_COUNT,
            "reserved_brains": RESERVED_BRAINS,
            "burn_base_price": render::amount(BURN_BASE_PRICE),
            "burn_price_step": render::amount(BURN_PRICE_STEP),
            "stake_lock": render::amount(STAKE_LOCK),
            "stake_maturity_blocks": STAKE_MATURITY_BLOCKS,
            "validator_slots": VALIDATOR_SLOTS,
            "miner_slots": MINER_SLOTS,
        },
    }))
}
