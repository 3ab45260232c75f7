//! Compute units (SPEC 3.6): users fund an escrow, sign cumulative usage receipts off chain,
//! and miners redeem the latest one. Redemption pays the difference to what the channel
//! already redeemed, so a receipt cannot be redeemed twice and never beyond the escrow.

use based_types::{Amount, PublicKey, Role, Signature, UsageReceipt};

use crate::error::TxError;
use crate::events::Event;
use crate::fixed::mul_ppb;
use crate::records::{Escrow, keys};
use crate::state::Ctx;

pub fn fund_escrow(
    ctx: &mut Ctx<'_>,
    user: &PublicKey,
    amount: Amount,
) -> Result<Vec<Event>, TxError> {
    if amount == 0 {
        return Err(TxError::ZeroAmount);
    }
    ctx.debit(user, amount)?;
    let key = keys::escrow(user);
    let mut escrow: Escrow = ctx.get(&key)?.unwrap_or_default();
    escrow.balance = escrow.balance.checked_add(amount).ok_or(TxError::Overflow)?;
    ctx.put(key, &escrow);
    Ok(vec![Event::EscrowChanged { user: *user, balance: escrow.balance }])
}

/// Starts the release delay; miners can still redeem receipts until the release happens.
pub fn request_release(ctx: &mut Ctx<'_>, user: &PublicKey) -> Result<Vec<Event>, TxError> {
    let key = keys::escrow(user);
    let mut escrow: Escrow = ctx.get(&key)?.unwrap_or_default();
    if escrow.balance == 0 {
        return Err(TxError::EmptyEscrow);
    }
    escrow.release_requested_at = Some(ctx.height);
    ctx.put(key, &escrow);
    Ok(vec![Event::EscrowChanged { user: *user, balance: escrow.balance }])
}

pub fn release(ctx: &mut Ctx<'_>, user: &PublicKey) -> Result<Vec<Event>, TxError> {
    let key = keys::escrow(user);
    let escrow: Escrow = ctx.get(&key)?.unwrap_or_default();
    let requested_at = escrow.release_requested_at.ok_or(TxError::NoReleaseRequested)?;
    let delay = ctx.globals()?.params.escrow_release_delay;
    let release_at = requested_at.saturating_add(delay);
    if ctx.height < release_at {
        return Err(TxError::EscrowLocked(release_at));
    }
    ctx.credit(user, escrow.balance)?;
    ctx.delete(key);
    Ok(vec![Event::EscrowChanged { user: *user, balance: 0 }])
}

pub fn redeem(
    ctx: &mut Ctx<'_>,
    miner_hotkey: &PublicKey,
    receipt: &UsageReceipt,
    user_signature: &Signature,
) -> Result<Vec<Event>, TxError> {
    if receipt.chain_id != ctx.globals()?.chain_id {
        return Err(TxError::InvalidReceipt("receipt is for another chain"));
    }
    if receipt.miner != *miner_hotkey {
        return Err(TxError::InvalidReceipt("receipt names another miner"));
    }
    let brain = ctx.brain(receipt.brain)?;
    let (_, miner) = ctx.node_with_role(receipt.brain, miner_hotkey, Role::Miner)?;
    if !receipt.verify(user_signature) {
        return Err(TxError::InvalidReceipt("user signature is invalid"));
    }
    let channel = keys::channel(&receipt.user, receipt.brain, miner_hotkey);
    let redeemed: Amount = ctx.get(&channel)?.unwrap_or(0);
    if receipt.amount <= redeemed {
        return Err(TxError::DoubleRedemption { redeemed });
    }
    let due = receipt.amount - redeemed;
    let escrow_key = keys::escrow(&receipt.user);
    let mut escrow: Escrow = ctx.get(&escrow_key)?.unwrap_or_default();
    if due > escrow.balance {
        return Err(TxError::EscrowOverspend { needed: due, available: escrow.balance });
    }
    escrow.balance -= due;
    ctx.put(escrow_key, &escrow);
    let owner_paid = mul_ppb(due, brain.settings.owner_fee_share_ppb);
    let miner_paid = due - owner_paid;
    ctx.credit(&brain.settings.reward_address, owner_paid)?;
    ctx.credit(&miner.coldkey, miner_paid)?;
    ctx.put(channel, &receipt.amount);
    Ok(vec![Event::ReceiptRedeemed {
        user: receipt.user,
        brain: receipt.brain,
        miner_paid,
        owner_paid,
    }])
}
