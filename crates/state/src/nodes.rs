//! Miners and validators: registration ("memorize") with replacement of the lowest-ranked
//! node past its immunity period, staking and delegation, weights and commission.

use based_types::{Amount, BrainId, PPB, Ppb, PublicKey, Role, Uid};

use crate::error::TxError;
use crate::events::Event;
use crate::params::{MAX_WEIGHTS, MINER_SLOTS, VALIDATOR_SLOTS};
use crate::records::{Brain, Globals, Node, NodeRef, keys};
use crate::state::Ctx;

pub fn slots(role: Role) -> Uid {
    match role {
        Role::Validator => VALIDATOR_SLOTS,
        Role::Miner => MINER_SLOTS,
    }
}

pub fn load_nodes(ctx: &Ctx<'_>, brain: BrainId, role: Role) -> Result<Vec<(Uid, Node)>, TxError> {
    let entries: Vec<(Vec<u8>, Node)> = ctx.scan(&keys::nodes_prefix(brain, role))?;
    Ok(entries
        .into_iter()
        .filter_map(|(key, node)| Some((keys::uid_of_node_key(&key)?, node)))
        .collect())
}

/// Stakers of a validator and their stakes, in key order.
pub fn load_stakes(
    ctx: &Ctx<'_>,
    brain: BrainId,
    uid: Uid,
) -> Result<Vec<(PublicKey, Amount)>, TxError> {
    let entries: Vec<(Vec<u8>, Amount)> = ctx.scan(&keys::stakes_prefix(brain, uid))?;
    Ok(entries
        .into_iter()
        .filter_map(|(key, stake)| Some((keys::staker_of_stake_key(&key)?, stake)))
        .collect())
}

/// Removes a node; a validator's stakers get their stake back.
pub fn deregister(
    ctx: &mut Ctx<'_>,
    globals: &mut Globals,
    brain: &mut Brain,
    brain_id: BrainId,
    role: Role,
    uid: Uid,
    node: &Node,
) -> Result<(), TxError> {
    for (staker, stake) in load_stakes(ctx, brain_id, uid)? {
        ctx.credit(&staker, stake)?;
        ctx.delete(keys::stake(brain_id, uid, &staker));
    }
    brain.stake = brain.stake.saturating_sub(node.stake);
    globals.total_stake = globals.total_stake.saturating_sub(node.stake);
    ctx.delete(keys::node(brain_id, role, uid));
    ctx.delete(keys::hotkey(brain_id, &node.hotkey));
    Ok(())
}

/// The slot for a newcomer: the lowest free uid, else the lowest-scored node past its immunity
/// (ties: the oldest registration, then the lowest uid).
fn choose_slot(
    nodes: &[(Uid, Node)],
    role: Role,
    height: u64,
    immunity: u64,
) -> Result<(Uid, Option<&Node>), TxError> {
    let mut expected = 0;
    for (uid, _) in nodes {
        if *uid != expected {
            break;
        }
        expected += 1;
    }
    if expected < slots(role) {
        return Ok((expected, None));
    }
    nodes
        .iter()
        .filter(|(_, node)| node.registered_at.saturating_add(immunity) <= height)
        .min_by_key(|(uid, node)| (node.score, node.registered_at, *uid))
        .map(|(uid, node)| (*uid, Some(node)))
        .ok_or(TxError::AllSlotsImmune { role })
}

pub fn register(
    ctx: &mut Ctx<'_>,
    coldkey: &PublicKey,
    brain_id: BrainId,
    hotkey: &PublicKey,
    role: Role,
    max_fee: Amount,
) -> Result<Vec<Event>, TxError> {
    let mut brain = ctx.brain(brain_id)?;
    if ctx.get::<NodeRef>(&keys::hotkey(brain_id, hotkey))?.is_some() {
        return Err(TxError::AlreadyRegistered(*hotkey));
    }
    let settings = &brain.settings;
    let fee =
        settings.registration_fee.checked_add(settings.memorize_fee).ok_or(TxError::Overflow)?;
    if fee > max_fee {
        return Err(TxError::RegistrationFeeAboveMax { fee, max_fee });
    }
    let mut globals = ctx.globals()?;
    let nodes = load_nodes(ctx, brain_id, role)?;
    let (uid, replaced) = choose_slot(&nodes, role, ctx.height, globals.params.immunity_period)?;
    let mut events = Vec::new();
    if let Some(replaced) = replaced {
        deregister(ctx, &mut globals, &mut brain, brain_id, role, uid, replaced)?;
        events.push(Event::NodeReplaced { brain: brain_id, role, uid, hotkey: replaced.hotkey });
    }
    ctx.debit(coldkey, fee)?;
    ctx.credit(&brain.settings.reward_address, fee)?;
    let node = Node {
        hotkey: *hotkey,
        coldkey: *coldkey,
        registered_at: ctx.height,
        fee_paid: fee,
        stake: 0,
        commission_ppb: globals.params.default_commission_ppb,
        weights: Vec::new(),
        weights_set_at: None,
        credits: Vec::new(),
        credits_updated_at: ctx.height,
        active: false,
        score: 0,
        last_reward: 0,
    };
    ctx.put(keys::node(brain_id, role, uid), &node);
    ctx.put(keys::hotkey(brain_id, hotkey), &NodeRef { role, uid });
    ctx.set_brain(brain_id, &brain);
    ctx.set_globals(&globals);
    events.push(Event::NodeRegistered { brain: brain_id, role, uid, hotkey: *hotkey, fee });
    Ok(events)
}

/// Adds (`delta > 0`) or removes stake of `staker` on a validator, keeping the node, Brain
/// and chain totals in step.
fn change_stake(
    ctx: &mut Ctx<'_>,
    staker: &PublicKey,
    brain_id: BrainId,
    hotkey: &PublicKey,
    amount: Amount,
    adding: bool,
) -> Result<Vec<Event>, TxError> {
    if amount == 0 {
        return Err(TxError::ZeroAmount);
    }
    let mut brain = ctx.brain(brain_id)?;
    let (uid, mut node) = ctx.node_with_role(brain_id, hotkey, Role::Validator)?;
    let mut globals = ctx.globals()?;
    let key = keys::stake(brain_id, uid, staker);
    let staked: Amount = ctx.get(&key)?.unwrap_or(0);
    let updated = if adding {
        ctx.debit(staker, amount)?;
        node.stake = node.stake.checked_add(amount).ok_or(TxError::Overflow)?;
        brain.stake = brain.stake.checked_add(amount).ok_or(TxError::Overflow)?;
        globals.total_stake = globals.total_stake.checked_add(amount).ok_or(TxError::Overflow)?;
        staked.checked_add(amount).ok_or(TxError::Overflow)?
    } else {
        let remaining = staked
            .checked_sub(amount)
            .ok_or(TxError::InsufficientStake { staked, requested: amount })?;
        ctx.credit(staker, amount)?;
        // The totals include this stake, so they cannot go below zero.
        node.stake = node.stake.saturating_sub(amount);
        brain.stake = brain.stake.saturating_sub(amount);
        globals.total_stake = globals.total_stake.saturating_sub(amount);
        remaining
    };
    if updated == 0 {
        ctx.delete(key);
    } else {
        ctx.put(key, &updated);
    }
    ctx.put(keys::node(brain_id, Role::Validator, uid), &node);
    ctx.set_brain(brain_id, &brain);
    ctx.set_globals(&globals);
    Ok(vec![Event::StakeChanged {
        brain: brain_id,
        hotkey: *hotkey,
        staker: *staker,
        stake: updated,
    }])
}

pub fn add_stake(
    ctx: &mut Ctx<'_>,
    staker: &PublicKey,
    brain: BrainId,
    hotkey: &PublicKey,
    amount: Amount,
) -> Result<Vec<Event>, TxError> {
    change_stake(ctx, staker, brain, hotkey, amount, true)
}

pub fn remove_stake(
    ctx: &mut Ctx<'_>,
    staker: &PublicKey,
    brain: BrainId,
    hotkey: &PublicKey,
    amount: Amount,
) -> Result<Vec<Event>, TxError> {
    change_stake(ctx, staker, brain, hotkey, amount, false)
}

/// Signed by the validator's hot key: strictly increasing miner uids within the miner slots.
pub fn set_weights(
    ctx: &mut Ctx<'_>,
    hotkey: &PublicKey,
    brain: BrainId,
    weights: &[(Uid, u16)],
) -> Result<Vec<Event>, TxError> {
    ctx.brain(brain)?;
    let (uid, mut node) = ctx.node_with_role(brain, hotkey, Role::Validator)?;
    let limit = ctx.globals()?.params.weights_rate_limit;
    if let Some(last) = node.weights_set_at {
        let next_allowed = last.saturating_add(limit);
        if ctx.height < next_allowed {
            return Err(TxError::WeightsRateLimited { next_allowed });
        }
    }
    if weights.len() > MAX_WEIGHTS {
        return Err(TxError::InvalidWeights("more weights than miner slots"));
    }
    if weights.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
        return Err(TxError::InvalidWeights("miner uids must be strictly increasing"));
    }
    if weights.iter().any(|(miner, _)| *miner >= MINER_SLOTS) {
        return Err(TxError::InvalidWeights("miner uid out of range"));
    }
    node.weights = weights.to_vec();
    node.weights_set_at = Some(ctx.height);
    ctx.put(keys::node(brain, Role::Validator, uid), &node);
    Ok(vec![Event::WeightsSet { brain, uid }])
}

pub fn set_commission(
    ctx: &mut Ctx<'_>,
    hotkey: &PublicKey,
    brain: BrainId,
    commission_ppb: Ppb,
) -> Result<Vec<Event>, TxError> {
    if commission_ppb > PPB {
        return Err(TxError::InvalidSetting("commission above 100%"));
    }
    let (uid, mut node) = ctx.node_with_role(brain, hotkey, Role::Validator)?;
    node.commission_ppb = commission_ppb;
    ctx.put(keys::node(brain, Role::Validator, uid), &node);
    Ok(vec![Event::CommissionSet { brain, uid, commission_ppb }])
}
