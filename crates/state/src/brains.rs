//! Brains: acquisition by burn or stake, the ERC-721 semantics of the Brain NFT, owner
//! settings and deactivation of staked Brains.

use based_types::{Amount, BrainId, BrainSetting, Hash, PPB, PublicKey, Role};

use crate::accounts::{credit_pepe, debit_pepe};
use crate::error::TxError;
use crate::events::Event;
use crate::params::{
    BRAIN_COUNT, BURN_BASE_PRICE, BURN_PRICE_STEP, MAX_NAME_BYTES, Params, STAKE_LOCK,
};
use crate::records::{Acquisition, Brain, BrainSettings, keys};
use crate::state::Ctx;

const MAX_LABEL_BYTES: usize = 32;
const MAX_MODEL_TEXT_BYTES: usize = 128;
const DEFAULT_MAX_CONTEXT: u32 = 2048;

pub fn new_brain(
    owner: PublicKey,
    acquisition: Acquisition,
    height: u64,
    params: &Params,
) -> Brain {
    Brain {
        owner,
        approved: None,
        acquisition,
        acquired_at: height,
        settings: BrainSettings {
            model_id: String::new(),
            model_revision: String::new(),
            model_hash: Hash::ZERO,
            miners_ppb: PPB / 2,
            name: String::new(),
            label: String::new(),
            reward_address: owner,
            registration_fee: params.default_registration_fee,
            memorize_fee: 0,
            owner_fee_share_ppb: PPB / 10,
            prompt_price_per_1000: 0,
            completion_price_per_1000: 0,
            max_context: DEFAULT_MAX_CONTEXT,
        },
        stake: 0,
        performance: 0,
        accrued: 0,
    }
}

/// Price of the next Brain acquired by burn: 1,000 PEPE + 200 PEPE x Brains burned so far.
pub fn burn_price(brains_burned: u64) -> Option<Amount> {
    BURN_PRICE_STEP.checked_mul(brains_burned)?.checked_add(BURN_BASE_PRICE)
}

fn lowest_free_brain(ctx: &Ctx<'_>) -> Result<BrainId, TxError> {
    let taken: Vec<(Vec<u8>, Brain)> = ctx.scan(&keys::brain_prefix())?;
    let mut taken = taken.iter().filter_map(|(key, _)| keys::brain_id_of(key)).peekable();
    for candidate in 0..BRAIN_COUNT {
        if taken.peek() == Some(&candidate) {
            taken.next();
        } else {
            return Ok(candidate);
        }
    }
    Err(TxError::BrainCapReached(BRAIN_COUNT))
}

fn acquire(
    ctx: &mut Ctx<'_>,
    owner: &PublicKey,
    acquisition: Acquisition,
    pepe: Amount,
) -> Result<Vec<Event>, TxError> {
    let id = lowest_free_brain(ctx)?;
    debit_pepe(ctx, owner, pepe)?;
    let globals = ctx.globals()?;
    let by_stake = matches!(acquisition, Acquisition::Stake { .. });
    let brain = new_brain(*owner, acquisition, ctx.height, &globals.params);
    ctx.set_brain(id, &brain);
    Ok(vec![Event::BrainAcquired { brain: id, owner: *owner, pepe, by_stake }])
}

pub fn acquire_by_burn(ctx: &mut Ctx<'_>, owner: &PublicKey) -> Result<Vec<Event>, TxError> {
    let mut globals = ctx.globals()?;
    let price = burn_price(globals.brains_burned).ok_or(TxError::Overflow)?;
    let events = acquire(ctx, owner, Acquisition::Burn { price }, price)?;
    globals.brains_burned += 1;
    globals.pepe_burned = globals.pepe_burned.checked_add(price).ok_or(TxError::Overflow)?;
    ctx.set_globals(&globals);
    Ok(events)
}

pub fn acquire_by_stake(ctx: &mut Ctx<'_>, owner: &PublicKey) -> Result<Vec<Event>, TxError> {
    acquire(ctx, owner, Acquisition::Stake { locked: STAKE_LOCK }, STAKE_LOCK)
}

/// Returns a mature staked Brain: its nodes are deregistered (stake returned), the PEPE
/// unlocks, the number is freed. Emission accrued but not yet paid is withheld.
pub fn deactivate(
    ctx: &mut Ctx<'_>,
    owner: &PublicKey,
    id: BrainId,
) -> Result<Vec<Event>, TxError> {
    let brain = ctx.owned_brain(owner, id)?;
    let Acquisition::Stake { locked } = brain.acquisition else {
        return Err(TxError::BrainNotStaked(id));
    };
    let matures_at = brain.matures_at();
    if ctx.height < matures_at {
        return Err(TxError::BrainNotMature { brain: id, matures_at });
    }
    let mut globals = ctx.globals()?;
    let mut brain = brain;
    for role in [Role::Validator, Role::Miner] {
        for (uid, node) in crate::nodes::load_nodes(ctx, id, role)? {
            crate::nodes::deregister(ctx, &mut globals, &mut brain, id, role, uid, &node)?;
        }
    }
    globals.withheld_based =
        globals.withheld_based.checked_add(brain.accrued).ok_or(TxError::Overflow)?;
    ctx.set_globals(&globals);
    if !brain.settings.label.is_empty() {
        ctx.delete(keys::label(&brain.settings.label));
    }
    ctx.delete(keys::brain(id));
    credit_pepe(ctx, owner, locked)?;
    Ok(vec![Event::BrainDeactivated { brain: id, pepe_returned: locked }])
}

pub fn approve(
    ctx: &mut Ctx<'_>,
    owner: &PublicKey,
    id: BrainId,
    approved: Option<PublicKey>,
) -> Result<Vec<Event>, TxError> {
    let mut brain = ctx.owned_brain(owner, id)?;
    if !brain.is_transferable() {
        return Err(TxError::BrainNotTransferable(id));
    }
    brain.approved = approved;
    ctx.set_brain(id, &brain);
    Ok(vec![Event::BrainApproved { brain: id, approved }])
}

/// ERC-721 transfer by the owner or the approved operator. The approval is cleared and the
/// reward address follows the new owner.
pub fn transfer(
    ctx: &mut Ctx<'_>,
    signer: &PublicKey,
    id: BrainId,
    to: &PublicKey,
) -> Result<Vec<Event>, TxError> {
    let mut brain = ctx.brain(id)?;
    if brain.owner != *signer && brain.approved != Some(*signer) {
        return Err(TxError::NotBrainOwner(id));
    }
    if !brain.is_transferable() {
        return Err(TxError::BrainNotTransferable(id));
    }
    let from = brain.owner;
    brain.owner = *to;
    brain.approved = None;
    brain.settings.reward_address = *to;
    ctx.set_brain(id, &brain);
    Ok(vec![Event::BrainTransferred { brain: id, from, to: *to }])
}

fn check_ppb(ppb: u32, what: &'static str) -> Result<(), TxError> {
    if ppb > PPB { Err(TxError::InvalidSetting(what)) } else { Ok(()) }
}

fn check_text(text: &str, max: usize, what: &'static str) -> Result<(), TxError> {
    if text.len() > max { Err(TxError::InvalidSetting(what)) } else { Ok(()) }
}

/// ENS-style: 1..=32 of [a-z0-9-], not starting or ending with '-'.
fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL_BYTES
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

pub fn configure(
    ctx: &mut Ctx<'_>,
    owner: &PublicKey,
    id: BrainId,
    setting: &BrainSetting,
) -> Result<Vec<Event>, TxError> {
    let mut brain = ctx.owned_brain(owner, id)?;
    let settings = &mut brain.settings;
    match setting {
        BrainSetting::Model { model_id, revision, weights_hash } => {
            if model_id.is_empty() {
                return Err(TxError::InvalidSetting("model id must not be empty"));
            }
            check_text(model_id, MAX_MODEL_TEXT_BYTES, "model id longer than 128 bytes")?;
            check_text(revision, MAX_MODEL_TEXT_BYTES, "model revision longer than 128 bytes")?;
            settings.model_id = model_id.clone();
            settings.model_revision = revision.clone();
            settings.model_hash = *weights_hash;
        }
        BrainSetting::Split { miners_ppb } => {
            check_ppb(*miners_ppb, "miner share above 100%")?;
            settings.miners_ppb = *miners_ppb;
        }
        BrainSetting::Name { name } => {
            check_text(name, MAX_NAME_BYTES, "name longer than 64 bytes")?;
            settings.name = name.clone();
        }
        BrainSetting::Label { label } => {
            if !valid_label(label) {
                return Err(TxError::InvalidSetting(
                    "label must be 1-32 of a-z, 0-9 and inner '-'",
                ));
            }
            let label_key = keys::label(label);
            match ctx.get::<u16>(&label_key)? {
                Some(holder) if holder != id => return Err(TxError::LabelTaken(label.clone())),
                _ => {}
            }
            if !settings.label.is_empty() {
                ctx.delete(keys::label(&settings.label));
            }
            ctx.put(label_key, &id);
            settings.label = label.clone();
        }
        BrainSetting::RewardAddress { address } => settings.reward_address = *address,
        // Fees are charged when a node registers, so a change binds later registrations only;
        // registrants also sign a maximum fee, so a raise cannot surprise a pending one.
        BrainSetting::RegistrationFee { amount } => settings.registration_fee = *amount,
        BrainSetting::MemorizeFee { amount } => settings.memorize_fee = *amount,
        BrainSetting::OwnerFeeShare { ppb } => {
            check_ppb(*ppb, "owner fee share above 100%")?;
            settings.owner_fee_share_ppb = *ppb;
        }
        BrainSetting::ComputePrices { prompt_per_1000, completion_per_1000, max_context } => {
            if *max_context == 0 {
                return Err(TxError::InvalidSetting("max context must be positive"));
            }
            settings.prompt_price_per_1000 = *prompt_per_1000;
            settings.completion_price_per_1000 = *completion_per_1000;
            settings.max_context = *max_context;
        }
    }
    ctx.set_brain(id, &brain);
    Ok(vec![Event::BrainConfigured { brain: id }])
}

#[cfg(test)]
mod tests {
    use based_types::coins;

    use super::*;

    #[test]
    fn burn_price_sequence() {
        let prices: Vec<Amount> = (0..5).map(|n| burn_price(n).unwrap()).collect();
        assert_eq!(prices, [coins(1_000), coins(1_200), coins(1_400), coins(1_600), coins(1_800)]);
        assert_eq!(burn_price(1015), Some(coins(204_000)));
    }

    #[test]
    fn labels() {
        assert!(valid_label("zk-llm-3"));
        assert!(!valid_label("-x") && !valid_label("Upper") && !valid_label(""));
    }
}
