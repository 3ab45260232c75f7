//! BASED and PEPE transfers, and PEPE bridged from Ethereum by a threshold of relayers.

use based_types::{Amount, Hash, PublicKey};

use crate::error::TxError;
use crate::events::Event;
use crate::records::{BridgeEvent, keys};
use crate::state::Ctx;

pub fn transfer(
    ctx: &mut Ctx<'_>,
    from: &PublicKey,
    to: &PublicKey,
    amount: Amount,
) -> Result<Vec<Event>, TxError> {
    if amount == 0 {
        return Err(TxError::ZeroAmount);
    }
    ctx.debit(from, amount)?;
    ctx.credit(to, amount)?;
    Ok(vec![Event::Transferred { from: *from, to: *to, amount }])
}

/// Moves free (not vote-locked) PEPE out of `from`.
pub fn debit_pepe(ctx: &mut Ctx<'_>, from: &PublicKey, amount: Amount) -> Result<(), TxError> {
    let mut account = ctx.account(from)?;
    let available = account.free_pepe(ctx.height);
    if available < amount {
        return Err(TxError::InsufficientPepe { needed: amount, available });
    }
    account.pepe -= amount;
    ctx.set_account(from, &account);
    Ok(())
}

pub fn credit_pepe(ctx: &mut Ctx<'_>, to: &PublicKey, amount: Amount) -> Result<(), TxError> {
    let mut account = ctx.account(to)?;
    account.pepe = account.pepe.checked_add(amount).ok_or(TxError::Overflow)?;
    ctx.set_account(to, &account);
    Ok(())
}

pub fn transfer_pepe(
    ctx: &mut Ctx<'_>,
    from: &PublicKey,
    to: &PublicKey,
    amount: Amount,
) -> Result<Vec<Event>, TxError> {
    if amount == 0 {
        return Err(TxError::ZeroAmount);
    }
    debit_pepe(ctx, from, amount)?;
    credit_pepe(ctx, to, amount)?;
    Ok(vec![Event::PepeTransferred { from: *from, to: *to, amount }])
}

/// Records a relayer's attestation; the deposit is credited once `relayer_threshold` distinct
/// relayers attested the same (recipient, amount). Later attestations of a credited event are
/// rejected, so a deposit cannot be replayed.
pub fn bridge_attest(
    ctx: &mut Ctx<'_>,
    relayer: &PublicKey,
    event_id: &Hash,
    recipient: &PublicKey,
    amount: Amount,
) -> Result<Vec<Event>, TxError> {
    let mut globals = ctx.globals()?;
    if !globals.relayers.contains(relayer) {
        return Err(TxError::NotRelayer(*relayer));
    }
    if amount == 0 {
        return Err(TxError::ZeroAmount);
    }
    let key = keys::bridge_event(event_id);
    let mut event: BridgeEvent = ctx.get(&key)?.unwrap_or(BridgeEvent {
        recipient: *recipient,
        amount,
        attesters: Vec::new(),
        credited: false,
    });
    if event.credited {
        return Err(TxError::BridgeEventAlreadyCredited(*event_id));
    }
    if event.attesters.contains(relayer) {
        return Err(TxError::DuplicateAttestation(*event_id));
    }
    if event.recipient != *recipient || event.amount != amount {
        return Err(TxError::ConflictingAttestation(*event_id));
    }
    event.attesters.push(*relayer);
    let attestations = event.attesters.len() as u32;
    let mut events = vec![Event::BridgeAttested { event_id: *event_id, attestations }];
    if attestations >= globals.relayer_threshold {
        event.credited = true;
        credit_pepe(ctx, recipient, amount)?;
        globals.bridged_pepe = globals.bridged_pepe.checked_add(amount).ok_or(TxError::Overflow)?;
        ctx.set_globals(&globals);
        events.push(Event::PepeBridged { event_id: *event_id, recipient: *recipient, amount });
    }
    ctx.put(key, &event);
    Ok(events)
}
