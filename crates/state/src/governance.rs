//! Governance (SPEC 3.7): GigaBrains (eligible stake at the cap, 0.5% of all stake) propose and
//! vote, one vote each; PEPE holders can veto with two thirds of the PEPE that voted.

use based_types::{BrainId, ParamId, PublicKey};

use crate::error::TxError;
use crate::events::Event;
use crate::fixed::mul_ppb;
use crate::params::{BLOCKS_PER_YEAR, Params};
use crate::records::{Brain, Globals, Proposal, ProposalStatus, keys};
use crate::state::Ctx;

/// Every parameter with its current value.
pub fn all_params(params: &Params) -> [(ParamId, u64); 14] {
    [
        (ParamId::Tempo, params.tempo),
        (ParamId::BonusSharePpb, params.bonus_share_ppb.into()),
        (ParamId::BonusTopPpb, params.bonus_top_ppb.into()),
        (ParamId::ActivePercentilePpb, params.active_percentile_ppb.into()),
        (ParamId::StakeCapPpb, params.stake_cap_ppb.into()),
        (ParamId::OwnerSharePpb, params.owner_share_ppb.into()),
        (ParamId::ConsensusSteepness, params.consensus_steepness),
        (ParamId::DefaultRegistrationFee, params.default_registration_fee),
        (ParamId::DefaultCommissionPpb, params.default_commission_ppb.into()),
        (ParamId::ImmunityPeriod, params.immunity_period),
        (ParamId::WeightsRateLimit, params.weights_rate_limit),
        (ParamId::VotingPeriod, params.voting_period),
        (ParamId::MinTransactionFee, params.min_transaction_fee),
        (ParamId::EscrowReleaseDelay, params.escrow_release_delay),
    ]
}

pub fn is_giga_brain(brain: &Brain, globals: &Globals) -> bool {
    let cap = mul_ppb(globals.total_stake, globals.params.stake_cap_ppb);
    brain.stake > 0 && brain.stake >= cap
}

/// The Brain, if `signer` owns it and it is a GigaBrain now.
fn giga_brain_of(
    ctx: &Ctx<'_>,
    signer: &PublicKey,
    id: BrainId,
    globals: &Globals,
) -> Result<(), TxError> {
    let brain = ctx.owned_brain(signer, id)?;
    if !is_giga_brain(&brain, globals) {
        return Err(TxError::NotGigaBrain(id));
    }
    Ok(())
}

fn open_proposal(ctx: &Ctx<'_>, id: u64) -> Result<Proposal, TxError> {
    let proposal: Proposal = ctx.get(&keys::proposal(id))?.ok_or(TxError::UnknownProposal(id))?;
    if proposal.status != ProposalStatus::Open || ctx.height > proposal.ends_at {
        return Err(TxError::ProposalClosed(id));
    }
    Ok(proposal)
}

pub fn propose(
    ctx: &mut Ctx<'_>,
    signer: &PublicKey,
    brain: BrainId,
    param: ParamId,
    value: u64,
) -> Result<Vec<Event>, TxError> {
    let mut globals = ctx.globals()?;
    giga_brain_of(ctx, signer, brain, &globals)?;
    globals.params.clone().set(param, value)?;
    let id = globals.next_proposal;
    let ends_at = ctx.height.saturating_add(globals.params.voting_period);
    let proposal = Proposal {
        proposer: *signer,
        param,
        value,
        created_at: ctx.height,
        ends_at,
        yes: Vec::new(),
        no: Vec::new(),
        pepe_support: 0,
        pepe_veto: 0,
        status: ProposalStatus::Open,
    };
    ctx.put(keys::proposal(id), &proposal);
    globals.next_proposal += 1;
    globals.open_proposals.push(id);
    ctx.set_globals(&globals);
    Ok(vec![Event::ProposalCreated { id, ends_at }])
}

pub fn vote_as_brain(
    ctx: &mut Ctx<'_>,
    signer: &PublicKey,
    id: u64,
    brain: BrainId,
    approve: bool,
) -> Result<Vec<Event>, TxError> {
    let globals = ctx.globals()?;
    giga_brain_of(ctx, signer, brain, &globals)?;
    let mut proposal = open_proposal(ctx, id)?;
    if proposal.yes.contains(&brain) || proposal.no.contains(&brain) {
        return Err(TxError::AlreadyVoted(id));
    }
    if approve {
        proposal.yes.push(brain)
    } else {
        proposal.no.push(brain)
    }
    ctx.put(keys::proposal(id), &proposal);
    Ok(vec![Event::Voted { proposal: id }])
}

/// Votes with the whole PEPE balance, which stays locked until the vote ends, so the same
/// PEPE cannot vote twice through another account.
pub fn vote_with_pepe(
    ctx: &mut Ctx<'_>,
    voter: &PublicKey,
    id: u64,
    veto: bool,
) -> Result<Vec<Event>, TxError> {
    let mut proposal = open_proposal(ctx, id)?;
    let vote_key = keys::pepe_vote(id, voter);
    if ctx.get::<bool>(&vote_key)?.is_some() {
        return Err(TxError::AlreadyVoted(id));
    }
    let mut account = ctx.account(voter)?;
    let weight = account.pepe;
    if weight == 0 {
        return Err(TxError::InsufficientPepe { needed: 1, available: 0 });
    }
    account.pepe_locked = weight;
    account.pepe_locked_until = account.pepe_locked_until.max(proposal.ends_at + 1);
    ctx.set_account(voter, &account);
    let tally = if veto { &mut proposal.pepe_veto } else { &mut proposal.pepe_support };
    *tally = tally.checked_add(weight).ok_or(TxError::Overflow)?;
    ctx.put(keys::proposal(id), &proposal);
    ctx.put(vote_key, &veto);
    Ok(vec![Event::Voted { proposal: id }])
}

/// The decision at the end of the voting period. Votes count from Brains that are GigaBrains
/// at the tally; in year one silence is consent.
pub fn decide(proposal: &Proposal, giga_brains: &[BrainId]) -> ProposalStatus {
    let count = |votes: &[BrainId]| votes.iter().filter(|b| giga_brains.contains(b)).count();
    let total = giga_brains.len();
    let passes = if proposal.created_at <= BLOCKS_PER_YEAR {
        2 * count(&proposal.no) <= total
    } else {
        2 * count(&proposal.yes) > total
    };
    let pepe_voted = u128::from(proposal.pepe_support) + u128::from(proposal.pepe_veto);
    let vetoed = pepe_voted > 0 && 3 * u128::from(proposal.pepe_veto) >= 2 * pepe_voted;
    match (vetoed, passes) {
        (true, _) => ProposalStatus::Vetoed,
        (false, true) => ProposalStatus::Passed,
        (false, false) => ProposalStatus::Rejected,
    }
}

/// Decides proposals whose voting ends at this block and applies the ones that passed.
pub fn tally(
    ctx: &mut Ctx<'_>,
    globals: &mut Globals,
    brains: &[(BrainId, Brain)],
) -> Result<Vec<Event>, TxError> {
    let (due, still_open): (Vec<u64>, Vec<u64>) = {
        let mut due = Vec::new();
        let mut open = Vec::new();
        for &id in &globals.open_proposals {
            let proposal: Proposal =
                ctx.get(&keys::proposal(id))?.ok_or(TxError::UnknownProposal(id))?;
            if proposal.ends_at <= ctx.height { due.push(id) } else { open.push(id) }
        }
        (due, open)
    };
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let giga_brains: Vec<BrainId> =
        brains.iter().filter(|(_, b)| is_giga_brain(b, globals)).map(|(id, _)| *id).collect();
    let mut events = Vec::new();
    for id in due {
        let mut proposal: Proposal =
            ctx.get(&keys::proposal(id))?.ok_or(TxError::UnknownProposal(id))?;
        let mut status = decide(&proposal, &giga_brains);
        if status == ProposalStatus::Passed
            && globals.params.set(proposal.param, proposal.value).is_err()
        {
            status = ProposalStatus::Rejected;
        }
        proposal.status = status;
        ctx.put(keys::proposal(id), &proposal);
        events.push(Event::ProposalDecided { id, status });
    }
    globals.open_proposals = still_open;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(
        created_at: u64,
        yes: Vec<BrainId>,
        no: Vec<BrainId>,
        support: u64,
        veto: u64,
    ) -> Proposal {
        Proposal {
            proposer: PublicKey::default(),
            param: ParamId::Tempo,
            value: 100,
            created_at,
            ends_at: created_at + 10,
            yes,
            no,
            pepe_support: support,
            pepe_veto: veto,
            status: ProposalStatus::Open,
        }
    }

    #[test]
    fn year_one_passes_by_default_later_needs_a_majority() {
        let gigas = [1, 2, 3];
        assert_eq!(decide(&proposal(5, vec![], vec![1], 0, 0), &gigas), ProposalStatus::Passed);
        assert_eq!(
            decide(&proposal(5, vec![], vec![1, 2], 0, 0), &gigas),
            ProposalStatus::Rejected
        );
        let later = BLOCKS_PER_YEAR + 1;
        assert_eq!(
            decide(&proposal(later, vec![1], vec![], 0, 0), &gigas),
            ProposalStatus::Rejected
        );
        assert_eq!(
            decide(&proposal(later, vec![1, 2], vec![], 0, 0), &gigas),
            ProposalStatus::Passed
        );
        // A vote from a Brain that is no longer a GigaBrain does not count.
        assert_eq!(
            decide(&proposal(later, vec![1, 9], vec![], 0, 0), &gigas),
            ProposalStatus::Rejected
        );
    }

    #[test]
    fn two_thirds_of_voting_pepe_vetoes() {
        assert_eq!(decide(&proposal(5, vec![], vec![], 1, 2), &[]), ProposalStatus::Vetoed);
        assert_eq!(decide(&proposal(5, vec![], vec![], 34, 66), &[]), ProposalStatus::Passed);
    }
}
