//! End of block: the block reward is split among Brains, Brains whose tempo ends run their
//! epoch and pay out, and proposals whose voting ends are decided.
//!
//! Emission nobody can earn (no Brain with a score, no consensus in a Brain, the owner share of
//! an immature staked Brain) is withheld: counted, never minted.

use based_types::{Amount, BrainId, PublicKey, Role, Uid};

use crate::epoch::{EpochConfig, ValidatorInput, run_epoch};
use crate::error::TxError;
use crate::events::Event;
use crate::fixed::{mul_ppb, split_proportional};
use crate::nodes::{load_nodes, load_stakes};
use crate::params::{block_reward, tft_beta};
use crate::records::{Brain, Globals, Node, keys};
use crate::state::Ctx;

pub fn end_block(ctx: &mut Ctx<'_>) -> Result<Vec<Event>, TxError> {
    let mut globals = ctx.globals()?;
    let entries: Vec<(Vec<u8>, Brain)> = ctx.scan(&keys::brain_prefix())?;
    let mut brains: Vec<(BrainId, Brain)> = entries
        .into_iter()
        .filter_map(|(key, brain)| Some((keys::brain_id_of(&key)?, brain)))
        .collect();
    let shares = split_block_reward(block_reward(ctx.height), &brains, &globals);
    globals.withheld_based = add(globals.withheld_based, shares.withheld)?;
    let mut events = Vec::new();
    for ((id, brain), share) in brains.iter_mut().zip(&shares.per_brain) {
        brain.accrued = add(brain.accrued, *share)?;
        // Brains are staggered across the tempo so that epochs do not all land on one block.
        let epoch_due = (ctx.height + u64::from(*id)).is_multiple_of(globals.params.tempo);
        if epoch_due {
            events.push(run_brain_epoch(ctx, &mut globals, *id, brain)?);
        }
        if *share > 0 || epoch_due {
            ctx.set_brain(*id, brain);
        }
    }
    events.extend(crate::governance::tally(ctx, &mut globals, &brains)?);
    globals.height = ctx.height;
    ctx.set_globals(&globals);
    Ok(events)
}

fn add(a: Amount, b: Amount) -> Result<Amount, TxError> {
    a.checked_add(b).ok_or(TxError::Overflow)
}

pub struct BlockShares {
    /// Parallel to the Brains passed in.
    pub per_brain: Vec<Amount>,
    pub withheld: Amount,
}

/// score_b = min(stake_b, cap) x performance_b. The main pool is split by score; the bonus pool
/// goes to the top share of scored Brains by performance (ties: lower number), by score.
pub fn split_block_reward(
    reward: Amount,
    brains: &[(BrainId, Brain)],
    globals: &Globals,
) -> BlockShares {
    let params = &globals.params;
    let cap = mul_ppb(globals.total_stake, params.stake_cap_ppb);
    let scores: Vec<u128> = brains
        .iter()
        .map(|(_, brain)| u128::from(brain.stake.min(cap)) * u128::from(brain.performance))
        .collect();
    let bonus = mul_ppb(reward, params.bonus_share_ppb);
    let main = reward - bonus;
    let mut per_brain = vec![0; brains.len()];
    let mut withheld = 0;
    match split_proportional(main, &scores) {
        Some(parts) => per_brain = parts,
        None => withheld += main,
    }
    let mut scored: Vec<usize> = (0..brains.len()).filter(|&i| scores[i] > 0).collect();
    scored.sort_by_key(|&i| (std::cmp::Reverse(brains[i].1.performance), brains[i].0));
    let top = (scored.len() as u64 * u64::from(params.bonus_top_ppb))
        .div_ceil(u64::from(based_types::PPB));
    let mut bonus_weights = vec![0u128; brains.len()];
    for &i in scored.iter().take(top as usize) {
        bonus_weights[i] = scores[i];
    }
    match split_proportional(bonus, &bonus_weights) {
        Some(parts) => per_brain.iter_mut().zip(parts).for_each(|(share, part)| *share += part),
        None => withheld += bonus,
    }
    BlockShares { per_brain, withheld }
}

/// Runs the Brain's epoch, stores the nodes' new state and pays the accrued emission:
/// the owner share to the reward address, the rest to miners (by incentive) and validators
/// (by dividends, minus commission, shared with their stakers) in the owner's ratio.
fn run_brain_epoch(
    ctx: &mut Ctx<'_>,
    globals: &mut Globals,
    id: BrainId,
    brain: &mut Brain,
) -> Result<Event, TxError> {
    let mut validators = load_nodes(ctx, id, Role::Validator)?;
    let mut miners = load_nodes(ctx, id, Role::Miner)?;
    let columns = miners.last().map_or(0, |(uid, _)| usize::from(*uid) + 1);
    let mut miner_at: Vec<Option<&Node>> = vec![None; columns];
    for (uid, node) in &miners {
        miner_at[usize::from(*uid)] = Some(node);
    }
    let inputs: Vec<ValidatorInput> =
        validators.iter().map(|(_, validator)| epoch_input(validator, &miner_at)).collect();
    let config = EpochConfig {
        active_percentile_ppb: globals.params.active_percentile_ppb,
        steepness: globals.params.consensus_steepness,
        tft_beta: tft_beta(ctx.height),
    };
    // Accuracy_TFT is zero until the TFT Enforcer exists.
    let mut result = run_epoch(&inputs, columns, &[], config);
    brain.performance = result.performance;

    let accrued = std::mem::take(&mut brain.accrued);
    let owner_share = mul_ppb(accrued, globals.params.owner_share_ppb);
    let nodes_share = accrued - owner_share;
    let miners_pool = mul_ppb(nodes_share, brain.settings.miners_ppb);
    let validators_pool = nodes_share - miners_pool;
    let mut paid = 0;
    let mut withheld = 0;
    if ctx.height >= brain.matures_at() {
        ctx.credit(&brain.settings.reward_address, owner_share)?;
        paid += owner_share;
    } else {
        withheld += owner_share;
    }

    let miner_weights: Vec<u128> =
        miners.iter().map(|(uid, _)| u128::from(result.incentive[usize::from(*uid)])).collect();
    let miner_payouts = split_proportional(miners_pool, &miner_weights);
    if miner_payouts.is_none() {
        withheld += miners_pool;
    }
    for (index, (uid, miner)) in miners.iter_mut().enumerate() {
        miner.score = result.incentive[usize::from(*uid)];
        miner.last_reward = miner_payouts.as_ref().map_or(0, |p| p[index]);
        ctx.credit(&miner.coldkey, miner.last_reward)?;
        paid += miner.last_reward;
        ctx.put(keys::node(id, Role::Miner, *uid), &*miner);
    }

    let validator_weights: Vec<u128> = result.dividends.iter().map(|&d| u128::from(d)).collect();
    let validator_payouts = split_proportional(validators_pool, &validator_weights);
    if validator_payouts.is_none() {
        withheld += validators_pool;
    }
    for (index, (uid, validator)) in validators.iter_mut().enumerate() {
        validator.score = result.dividends[index];
        validator.active = result.active[index];
        validator.credits = result.credits.get_mut(index).map(std::mem::take).unwrap_or_default();
        validator.credits_updated_at = ctx.height;
        validator.last_reward = validator_payouts.as_ref().map_or(0, |p| p[index]);
        pay_validator(ctx, id, *uid, validator, validator.last_reward)?;
        paid += validator.last_reward;
        ctx.put(keys::node(id, Role::Validator, *uid), &*validator);
    }
    globals.emitted_based = add(globals.emitted_based, paid)?;
    globals.withheld_based = add(globals.withheld_based, withheld)?;
    Ok(Event::EpochPaid { brain: id, paid, withheld, performance: result.performance })
}

/// Drops self-weights (same cold key), weights set before the miner registered, and credits
/// earned by a previous holder of the miner's slot.
fn epoch_input(validator: &Node, miner_at: &[Option<&Node>]) -> ValidatorInput {
    let miner = |uid: Uid| miner_at.get(usize::from(uid)).copied().flatten();
    let weights = match validator.weights_set_at {
        Some(set_at) => validator
            .weights
            .iter()
            .filter(|(uid, _)| {
                miner(*uid)
                    .is_some_and(|m| m.registered_at < set_at && m.coldkey != validator.coldkey)
            })
            .copied()
            .collect(),
        None => Vec::new(),
    };
    let previous_credits = validator
        .credits
        .iter()
        .filter(|(uid, _)| {
            miner(*uid).is_some_and(|m| m.registered_at < validator.credits_updated_at)
        })
        .copied()
        .collect();
    ValidatorInput { stake: validator.stake, weights, previous_credits }
}

/// The validator's cold key takes its commission; the rest is shared by stake among its
/// stakers (the validator's own stake included). Without stakers it all goes to the cold key.
fn pay_validator(
    ctx: &mut Ctx<'_>,
    brain: BrainId,
    uid: Uid,
    validator: &Node,
    amount: Amount,
) -> Result<(), TxError> {
    if amount == 0 {
        return Ok(());
    }
    let commission = mul_ppb(amount, validator.commission_ppb);
    let shared = amount - commission;
    let stakes = load_stakes(ctx, brain, uid)?;
    let weights: Vec<u128> = stakes.iter().map(|(_, stake)| u128::from(*stake)).collect();
    match split_proportional(shared, &weights) {
        Some(parts) => {
            ctx.credit(&validator.coldkey, commission)?;
            for ((staker, _), part) in stakes.iter().zip(parts) {
                credit_nonzero(ctx, staker, part)?;
            }
        }
        None => ctx.credit(&validator.coldkey, amount)?,
    }
    Ok(())
}

fn credit_nonzero(ctx: &mut Ctx<'_>, to: &PublicKey, amount: Amount) -> Result<(), TxError> {
    if amount > 0 { ctx.credit(to, amount) } else { Ok(()) }
}
