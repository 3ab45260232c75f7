//! Scenario and property tests of the state machine.

use based_types::{
    Amount, BrainSetting, Call, Hash, PPB, ParamId, PublicKey, Role, SecretKey, SignedTransaction,
    Transaction, UsageReceipt, coins,
};
use proptest::prelude::*;

use crate::params::{BLOCKS_PER_YEAR, STAKE_LOCK, STAKE_MATURITY_BLOCKS, block_reward};
use crate::records::{Acquisition, ProposalStatus};
use crate::{Event, GenesisConfig, MemoryStore, Params, Receipt, State, TxError};

const CHAIN: u32 = 7;
const FEE: Amount = 1_000;

pub(crate) fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn address(n: u8) -> PublicKey {
    key(n).public_key()
}

const FOUNDATION: u8 = 200;
const RELAYERS: [u8; 3] = [100, 101, 102];

fn genesis_with(params: Params) -> State<MemoryStore> {
    let users: Vec<u8> = (1..=20).collect();
    State::genesis(
        MemoryStore::new(),
        GenesisConfig {
            chain_id: CHAIN,
            foundation: address(FOUNDATION),
            balances: users.iter().map(|&n| (address(n), coins(1_000_000))).collect(),
            pepe_balances: users.iter().map(|&n| (address(n), coins(1_000_000))).collect(),
            relayers: RELAYERS.iter().map(|&n| address(n)).collect(),
            relayer_threshold: 2,
            params,
        },
    )
    .unwrap()
}

fn genesis() -> State<MemoryStore> {
    genesis_with(Params::default())
}

fn signed(state: &State<MemoryStore>, signer: u8, call: Call) -> SignedTransaction {
    let nonce = state.account(&address(signer)).unwrap().nonce;
    Transaction { chain_id: CHAIN, signer: address(signer), nonce, fee: FEE, call }
        .sign(&key(signer))
}

fn submit(state: &mut State<MemoryStore>, signer: u8, call: Call) -> Result<Receipt, TxError> {
    let transaction = signed(state, signer, call);
    state.apply_transaction(&transaction)
}

fn run(state: &mut State<MemoryStore>, signer: u8, call: Call) -> Result<Vec<Event>, TxError> {
    submit(state, signer, call).expect("admitted").outcome
}

fn ok(state: &mut State<MemoryStore>, signer: u8, call: Call) -> Vec<Event> {
    run(state, signer, call).expect("call succeeds")
}

fn finish(state: &mut State<MemoryStore>, blocks: u64) -> Vec<Event> {
    (0..blocks).flat_map(|_| state.finish_block().unwrap().events).collect()
}

fn balance(state: &State<MemoryStore>, n: u8) -> Amount {
    state.account(&address(n)).unwrap().balance
}

fn pepe(state: &State<MemoryStore>, n: u8) -> Amount {
    state.account(&address(n)).unwrap().pepe
}

/// BASED and PEPE are conserved: holdings equal what was created minus what was destroyed.
fn assert_supply_conserved(state: &State<MemoryStore>) {
    let g = state.globals().unwrap();
    let (based, pepe) = state.holdings().unwrap();
    let brains = state.brains().unwrap();
    assert_eq!(based, u128::from(g.genesis_based + g.emitted_based - g.fees_burned));
    assert_eq!(pepe, u128::from(g.genesis_pepe + g.bridged_pepe - g.pepe_burned));
    let scheduled: u128 = (1..=g.height).map(|h| u128::from(block_reward(h))).sum();
    let accrued: u128 = brains.iter().map(|(_, b)| u128::from(b.accrued)).sum();
    assert_eq!(scheduled, u128::from(g.emitted_based + g.withheld_based) + accrued);
}

fn acquire_burned_brain(state: &mut State<MemoryStore>, owner: u8) -> u16 {
    match ok(state, owner, Call::AcquireBrainByBurn {}).as_slice() {
        [Event::BrainAcquired { brain, .. }] => *brain,
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn transfer_moves_funds_and_burns_the_fee() {
    let mut state = genesis();
    ok(&mut state, 1, Call::Transfer { to: address(2), amount: coins(5) });
    assert_eq!(balance(&state, 1), coins(1_000_000) - coins(5) - FEE);
    assert_eq!(balance(&state, 2), coins(1_000_005));
    assert_eq!(state.globals().unwrap().fees_burned, FEE);
    finish(&mut state, 1);
    assert_supply_conserved(&state);
}

#[test]
fn rejected_transactions_change_nothing() {
    let mut state = genesis();
    let root = state.state_root();
    let mut forged = signed(&state, 1, Call::Transfer { to: address(2), amount: 1 });
    forged.transaction.fee += 1;
    assert_eq!(state.apply_transaction(&forged), Err(TxError::BadSignature));
    let mut replay = signed(&state, 1, Call::Transfer { to: address(2), amount: 1 });
    replay.transaction.nonce = 5;
    let replay = replay.transaction.sign(&key(1));
    assert_eq!(state.apply_transaction(&replay), Err(TxError::BadNonce { expected: 0, got: 5 }));
    let broke = Transaction {
        chain_id: CHAIN,
        signer: address(99),
        nonce: 0,
        fee: FEE,
        call: Call::RequestEscrowRelease {},
    };
    assert!(matches!(
        state.apply_transaction(&broke.sign(&key(99))),
        Err(TxError::InsufficientFunds { .. })
    ));
    let cheap = Transaction {
        chain_id: CHAIN,
        signer: address(1),
        nonce: 0,
        fee: 1,
        call: Call::RequestEscrowRelease {},
    };
    assert!(matches!(
        state.apply_transaction(&cheap.sign(&key(1))),
        Err(TxError::FeeTooLow { .. })
    ));
    let other_chain = Transaction {
        chain_id: 8,
        signer: address(1),
        nonce: 0,
        fee: FEE,
        call: Call::RequestEscrowRelease {},
    };
    assert!(matches!(
        state.apply_transaction(&other_chain.sign(&key(1))),
        Err(TxError::WrongChain { .. })
    ));
    assert_eq!(state.state_root(), root);
}

#[test]
fn failed_call_only_takes_fee_and_nonce() {
    let mut state = genesis();
    let error = run(&mut state, 1, Call::Transfer { to: address(2), amount: coins(2_000_000) })
        .unwrap_err();
    assert!(matches!(error, TxError::InsufficientFunds { .. }));
    assert_eq!(
        error.to_string(),
        format!(
            "insufficient funds: {} needed, {} available",
            coins(2_000_000),
            coins(1_000_000) - FEE
        )
    );
    let account = state.account(&address(1)).unwrap();
    assert_eq!((account.nonce, account.balance), (1, coins(1_000_000) - FEE));
    assert_eq!(balance(&state, 2), coins(1_000_000));
}

#[test]
fn bridge_credits_at_threshold_and_rejects_replays() {
    let mut state = genesis();
    let event_id = Hash::of(b"eth tx 0xabc log 3");
    let attest = |amount| Call::BridgeAttest { event_id, recipient: address(9), amount };
    assert_eq!(run(&mut state, 1, attest(coins(50))), Err(TxError::NotRelayer(address(1))));
    // Relayers pay fees: fund them.
    for relayer in RELAYERS {
        ok(&mut state, 1, Call::Transfer { to: address(relayer), amount: coins(1) });
    }
    ok(&mut state, RELAYERS[0], attest(coins(50)));
    assert_eq!(pepe(&state, 9), coins(1_000_000));
    assert_eq!(
        run(&mut state, RELAYERS[0], attest(coins(50))),
        Err(TxError::DuplicateAttestation(event_id))
    );
    assert_eq!(
        run(&mut state, RELAYERS[1], attest(coins(51))),
        Err(TxError::ConflictingAttestation(event_id))
    );
    ok(&mut state, RELAYERS[1], attest(coins(50)));
    assert_eq!(pepe(&state, 9), coins(1_000_050));
    assert_eq!(
        run(&mut state, RELAYERS[2], attest(coins(50))),
        Err(TxError::BridgeEventAlreadyCredited(event_id))
    );
    finish(&mut state, 1);
    assert_supply_conserved(&state);
}

#[test]
fn reserved_brains_and_burn_acquisition() {
    let mut state = genesis();
    for id in [0, 1, 2, 3, 4, 5, 6, 47] {
        let brain = state.brain(id).unwrap().unwrap();
        assert_eq!(
            (brain.owner, brain.acquisition),
            (address(FOUNDATION), Acquisition::Reserved {})
        );
    }
    let before = pepe(&state, 1);
    assert_eq!(acquire_burned_brain(&mut state, 1), 7);
    assert_eq!(acquire_burned_brain(&mut state, 1), 8);
    assert_eq!(before - pepe(&state, 1), coins(1_000) + coins(1_200));
    for expected in 9..47 {
        assert_eq!(acquire_burned_brain(&mut state, 2), expected);
    }
    // #47 is reserved: the next one is #48, at 1,000 + 200 x 40 PEPE.
    let before = pepe(&state, 3);
    assert_eq!(acquire_burned_brain(&mut state, 3), 48);
    assert_eq!(before - pepe(&state, 3), coins(9_000));
    finish(&mut state, 1);
    assert_supply_conserved(&state);
}

#[test]
fn all_1024_numbers_can_be_taken_then_the_cap_is_reached() {
    let mut state = State::genesis(
        MemoryStore::new(),
        GenesisConfig {
            chain_id: CHAIN,
            foundation: address(FOUNDATION),
            balances: vec![(address(1), coins(1_000))],
            pepe_balances: vec![(address(1), coins(200_000_000))],
            relayers: vec![address(RELAYERS[0])],
            relayer_threshold: 1,
            params: Params::default(),
        },
    )
    .unwrap();
    for _ in 0..1024 - 8 {
        ok(&mut state, 1, Call::AcquireBrainByStake {});
    }
    assert_eq!(state.brains_owned_by(&address(1)).unwrap().len(), 1016);
    assert_eq!(state.brains_owned_by(&address(FOUNDATION)).unwrap(), [0, 1, 2, 3, 4, 5, 6, 47]);
    assert_eq!(
        run(&mut state, 1, Call::AcquireBrainByStake {}),
        Err(TxError::BrainCapReached(1024))
    );
    assert_eq!(TxError::BrainCapReached(1024).to_string(), "all 1024 Brains are taken");
}

#[test]
fn brain_nft_follows_erc721() {
    let mut state = genesis();
    let brain = acquire_burned_brain(&mut state, 1);
    assert_eq!(
        run(&mut state, 2, Call::TransferBrain { brain, to: address(2) }),
        Err(TxError::NotBrainOwner(brain))
    );
    ok(&mut state, 1, Call::ApproveBrain { brain, approved: Some(address(3)) });
    ok(&mut state, 3, Call::TransferBrain { brain, to: address(4) });
    let record = state.brain(brain).unwrap().unwrap();
    assert_eq!(
        (record.owner, record.approved, record.settings.reward_address),
        (address(4), None, address(4))
    );
    assert_eq!(
        run(&mut state, 3, Call::TransferBrain { brain, to: address(3) }),
        Err(TxError::NotBrainOwner(brain))
    );
    let model = BrainSetting::Model {
        model_id: "SmolLM2-135M".into(),
        revision: "main".into(),
        weights_hash: Hash::of(b"w"),
    };
    ok(&mut state, 4, Call::ConfigureBrain { brain, setting: model });
    ok(
        &mut state,
        4,
        Call::ConfigureBrain { brain, setting: BrainSetting::Label { label: "smol".into() } },
    );
    let other = acquire_burned_brain(&mut state, 5);
    assert_eq!(
        run(
            &mut state,
            5,
            Call::ConfigureBrain {
                brain: other,
                setting: BrainSetting::Label { label: "smol".into() }
            }
        ),
        Err(TxError::LabelTaken("smol".into()))
    );
    assert_eq!(
        run(
            &mut state,
            4,
            Call::ConfigureBrain { brain, setting: BrainSetting::Split { miners_ppb: PPB + 1 } }
        ),
        Err(TxError::InvalidSetting("miner share above 100%"))
    );
}

#[test]
fn staked_brain_matures_then_deactivates_returning_everything() {
    let mut state = genesis();
    let pepe_before = pepe(&state, 1);
    let brain = match ok(&mut state, 1, Call::AcquireBrainByStake {}).as_slice() {
        [Event::BrainAcquired { brain, by_stake: true, .. }] => *brain,
        other => panic!("{other:?}"),
    };
    assert_eq!(pepe_before - pepe(&state, 1), STAKE_LOCK);
    assert_eq!(
        run(&mut state, 1, Call::TransferBrain { brain, to: address(2) }),
        Err(TxError::BrainNotTransferable(brain))
    );
    ok(
        &mut state,
        3,
        Call::Register { brain, hotkey: address(30), role: Role::Validator, max_fee: coins(100) },
    );
    ok(&mut state, 4, Call::AddStake { brain, hotkey: address(30), amount: coins(500) });
    assert_eq!(state.stakes(brain, 0).unwrap(), vec![(address(4), coins(500))]);
    let staker_balance = balance(&state, 4);
    let matures_at = 1 + STAKE_MATURITY_BLOCKS;
    assert_eq!(
        run(&mut state, 1, Call::DeactivateBrain { brain }),
        Err(TxError::BrainNotMature { brain, matures_at })
    );
    ok(&mut state, 2, Call::Transfer { to: address(FOUNDATION), amount: coins(1) });
    assert_eq!(
        run(&mut state, FOUNDATION, Call::DeactivateBrain { brain: 0 }),
        Err(TxError::BrainNotStaked(0))
    );
    finish(&mut state, 1);
    state.jump_to_height(matures_at - 1);
    ok(&mut state, 1, Call::DeactivateBrain { brain });
    assert_eq!(pepe(&state, 1), pepe_before);
    assert_eq!(balance(&state, 4), staker_balance + coins(500));
    assert!(state.brain(brain).unwrap().is_none());
    assert!(state.node_by_hotkey(brain, &address(30)).unwrap().is_none());
    assert_eq!(state.globals().unwrap().total_stake, 0);
    // The number is free again.
    assert_eq!(acquire_burned_brain(&mut state, 2), brain);
}

#[test]
fn registration_fees_go_to_the_owner_and_changes_bind_later_registrations() {
    let mut state = genesis();
    let brain = acquire_burned_brain(&mut state, 1);
    let owner_before = balance(&state, 1);
    ok(
        &mut state,
        2,
        Call::Register { brain, hotkey: address(40), role: Role::Miner, max_fee: coins(100) },
    );
    assert_eq!(balance(&state, 1), owner_before + coins(100));
    ok(
        &mut state,
        1,
        Call::ConfigureBrain {
            brain,
            setting: BrainSetting::RegistrationFee { amount: coins(300) },
        },
    );
    assert_eq!(
        run(
            &mut state,
            3,
            Call::Register { brain, hotkey: address(41), role: Role::Miner, max_fee: coins(100) }
        ),
        Err(TxError::RegistrationFeeAboveMax { fee: coins(300), max_fee: coins(100) })
    );
    ok(
        &mut state,
        3,
        Call::Register { brain, hotkey: address(41), role: Role::Miner, max_fee: coins(300) },
    );
    let (_, _, first) = state.node_by_hotkey(brain, &address(40)).unwrap().unwrap();
    let (_, _, second) = state.node_by_hotkey(brain, &address(41)).unwrap().unwrap();
    assert_eq!((first.fee_paid, second.fee_paid), (coins(100), coins(300)));
    assert_eq!(
        run(
            &mut state,
            3,
            Call::Register {
                brain,
                hotkey: address(41),
                role: Role::Validator,
                max_fee: coins(300)
            }
        ),
        Err(TxError::AlreadyRegistered(address(41)))
    );
    assert_eq!(
        run(
            &mut state,
            3,
            Call::Register { brain: 999, hotkey: address(42), role: Role::Miner, max_fee: 0 }
        ),
        Err(TxError::UnknownBrain(999))
    );
}

#[test]
fn full_brain_replaces_lowest_ranked_node_past_immunity() {
    let mut state = genesis();
    let brain = acquire_burned_brain(&mut state, 1);
    ok(
        &mut state,
        1,
        Call::ConfigureBrain { brain, setting: BrainSetting::RegistrationFee { amount: 0 } },
    );
    let hotkey = |i: u16| PublicKey(Hash::of(&i.to_le_bytes()).0);
    for i in 0..256 {
        ok(
            &mut state,
            2,
            Call::Register { brain, hotkey: hotkey(i), role: Role::Validator, max_fee: 0 },
        );
    }
    let newcomer = Call::Register { brain, hotkey: hotkey(999), role: Role::Validator, max_fee: 0 };
    assert_eq!(
        run(&mut state, 3, newcomer.clone()),
        Err(TxError::AllSlotsImmune { role: Role::Validator })
    );
    finish(&mut state, 1);
    state.jump_to_height(1 + 4_096);
    let events = ok(&mut state, 3, newcomer);
    // All scores are equal and registrations simultaneous: the lowest uid goes.
    assert!(matches!(events[0], Event::NodeReplaced { uid: 0, .. }));
    assert!(state.node_by_hotkey(brain, &hotkey(0)).unwrap().is_none());
    assert_eq!(state.node_by_hotkey(brain, &hotkey(999)).unwrap().unwrap().1, 0);
}

/// One Brain, one validator staked by a nominator, two miners weighted 3:1.
fn working_brain(state: &mut State<MemoryStore>) -> u16 {
    let brain = acquire_burned_brain(state, 1);
    populate(state, brain);
    brain
}

fn populate(state: &mut State<MemoryStore>, brain: u16) {
    ok(
        state,
        2,
        Call::Register { brain, hotkey: address(50), role: Role::Validator, max_fee: coins(100) },
    );
    ok(
        state,
        3,
        Call::Register { brain, hotkey: address(60), role: Role::Miner, max_fee: coins(100) },
    );
    ok(
        state,
        4,
        Call::Register { brain, hotkey: address(61), role: Role::Miner, max_fee: coins(100) },
    );
    ok(state, 2, Call::AddStake { brain, hotkey: address(50), amount: coins(1_000) });
    ok(state, 5, Call::AddStake { brain, hotkey: address(50), amount: coins(3_000) });
    ok(state, 2, Call::Transfer { to: address(50), amount: coins(1) });
    finish(state, 1);
    ok(state, 50, Call::SetWeights { brain, weights: vec![(0, 3), (1, 1)] });
    assert!(matches!(
        run(state, 50, Call::SetWeights { brain, weights: vec![(0, 1)] }),
        Err(TxError::WeightsRateLimited { .. })
    ));
}

/// Runs blocks until the end of `brain`'s next epoch; returns its (paid, withheld).
fn run_to_epoch(state: &mut State<MemoryStore>, brain: u16) -> (Amount, Amount) {
    loop {
        for event in finish(state, 1) {
            if let Event::EpochPaid { brain: b, paid, withheld, .. } = event
                && b == brain
            {
                return (paid, withheld);
            }
        }
    }
}

#[test]
fn staked_brain_owner_rewards_start_at_maturity() {
    let mut state = genesis();
    let brain = match ok(&mut state, 1, Call::AcquireBrainByStake {}).as_slice() {
        [Event::BrainAcquired { brain, .. }] => *brain,
        other => panic!("{other:?}"),
    };
    populate(&mut state, brain);
    run_to_epoch(&mut state, brain);
    let owner_before = balance(&state, 1);
    let (paid, withheld) = run_to_epoch(&mut state, brain);
    let accrued = paid + withheld;
    assert_eq!(withheld, accrued / 4);
    assert_eq!(balance(&state, 1), owner_before);
    state.jump_to_height(1 + STAKE_MATURITY_BLOCKS);
    run_to_epoch(&mut state, brain);
    let owner_before = balance(&state, 1);
    let (paid, withheld) = run_to_epoch(&mut state, brain);
    assert_eq!(withheld, 0);
    assert_eq!(balance(&state, 1) - owner_before, paid / 4);
}

#[test]
fn weights_set_before_a_miner_registered_do_not_count() {
    let mut state = genesis();
    let brain = working_brain(&mut state);
    // A miner taking uid 2 after the weights were set: the weights for it are dropped.
    ok(&mut state, 50, Call::SetCommission { brain, commission_ppb: 0 });
    finish(&mut state, 100);
    ok(&mut state, 50, Call::SetWeights { brain, weights: vec![(0, 1), (1, 1), (2, 1)] });
    ok(
        &mut state,
        6,
        Call::Register { brain, hotkey: address(62), role: Role::Miner, max_fee: coins(100) },
    );
    run_to_epoch(&mut state, brain);
    let (_, _, late) = state.node_by_hotkey(brain, &address(62)).unwrap().unwrap();
    let (_, _, early) = state.node_by_hotkey(brain, &address(61)).unwrap().unwrap();
    assert_eq!(late.score, 0);
    assert!(early.score > 0);
}

#[test]
fn epoch_pays_owner_quarter_and_nodes_by_owner_split() {
    let mut state = genesis();
    let brain = working_brain(&mut state);
    let tempo = state.params().unwrap().tempo;
    let height_of_epoch = |h: u64| (h + u64::from(brain)).is_multiple_of(tempo);
    // First epoch establishes performance; emission accrues only after it.
    while !height_of_epoch(state.height() + 1) {
        finish(&mut state, 1);
    }
    finish(&mut state, 1);
    // One validator backs both miners: trust 1, consensus sigmoid(10 x 0.5) = 0.9933.
    let performance = state.brain(brain).unwrap().unwrap().performance;
    assert!(performance.abs_diff(crate::fixed::sigmoid(5 * crate::fixed::ONE as i64)) <= 1);
    let before: Vec<Amount> = [1, 2, 3, 4, 5].iter().map(|&n| balance(&state, n)).collect();
    let events = finish(&mut state, tempo);
    let paid = events
        .iter()
        .find_map(|e| match e {
            Event::EpochPaid { brain: b, paid, withheld, .. } if *b == brain => {
                Some((*paid, *withheld))
            }
            _ => None,
        })
        .unwrap();
    let accrued = block_reward(1) * tempo;
    assert_eq!(paid, (accrued, 0));
    let gain: Vec<Amount> =
        [1, 2, 3, 4, 5].iter().zip(&before).map(|(&n, b)| balance(&state, n) - b).collect();
    assert_eq!(gain[0], accrued / 4);
    let nodes = accrued - accrued / 4;
    // Miners (50%) by incentive 3:1.
    assert_eq!(gain[2] + gain[3], nodes / 2);
    assert_eq!(gain[2], 3 * gain[3]);
    // Validators (50%): 10% commission to the validator's cold key, the rest by stake 1:3.
    let validators = nodes - nodes / 2;
    let commission = validators / 10;
    assert_eq!(gain[1], commission + (validators - commission) / 4);
    assert_eq!(gain[4], (validators - commission) * 3 / 4);
    assert_supply_conserved(&state);
}

#[test]
fn escrow_receipts_cannot_overspend_or_double_redeem() {
    let mut state = genesis();
    let brain = working_brain(&mut state);
    ok(
        &mut state,
        1,
        Call::ConfigureBrain { brain, setting: BrainSetting::OwnerFeeShare { ppb: PPB / 5 } },
    );
    ok(&mut state, 7, Call::FundEscrow { amount: coins(10) });
    ok(&mut state, 7, Call::Transfer { to: address(60), amount: coins(1) });
    let receipt = |amount| UsageReceipt {
        chain_id: CHAIN,
        user: address(7),
        brain,
        miner: address(60),
        prompt_units: 1_000,
        completion_units: 500,
        amount,
    };
    let redeem = |amount, signer: u8| Call::RedeemReceipt {
        receipt: receipt(amount),
        user_signature: receipt(amount).sign(&key(signer)),
    };
    assert_eq!(
        run(&mut state, 60, redeem(coins(4), 8)),
        Err(TxError::InvalidReceipt("user signature is invalid"))
    );
    let (owner, miner) = (balance(&state, 1), balance(&state, 3));
    ok(&mut state, 60, redeem(coins(4), 7));
    assert_eq!(balance(&state, 1) - owner, coins(4) / 5);
    assert_eq!(balance(&state, 3) - miner, coins(4) - coins(4) / 5);
    assert_eq!(
        run(&mut state, 60, redeem(coins(4), 7)),
        Err(TxError::DoubleRedemption { redeemed: coins(4) })
    );
    assert_eq!(
        run(&mut state, 60, redeem(coins(15), 7)),
        Err(TxError::EscrowOverspend { needed: coins(11), available: coins(6) })
    );
    ok(&mut state, 60, redeem(coins(10), 7));
    assert_eq!(state.escrow(&address(7)).unwrap().balance, 0);
    assert_eq!(run(&mut state, 7, Call::RequestEscrowRelease {}), Err(TxError::EmptyEscrow));
    assert_eq!(run(&mut state, 7, Call::ReleaseEscrow {}), Err(TxError::NoReleaseRequested));
    ok(&mut state, 7, Call::FundEscrow { amount: coins(2) });
    ok(&mut state, 7, Call::RequestEscrowRelease {});
    assert!(matches!(run(&mut state, 7, Call::ReleaseEscrow {}), Err(TxError::EscrowLocked(_))));
    finish(&mut state, 360);
    let before = balance(&state, 7);
    ok(&mut state, 7, Call::ReleaseEscrow {});
    assert_eq!(balance(&state, 7), before + coins(2) - FEE);
    finish(&mut state, 1);
    assert_supply_conserved(&state);
}

#[test]
fn governance_year_one_default_pass_and_pepe_veto() {
    let mut state = genesis();
    let brain = working_brain(&mut state);
    ok(&mut state, 1, Call::Transfer { to: address(FOUNDATION), amount: coins(1) });
    assert_eq!(
        run(&mut state, FOUNDATION, Call::Propose { brain: 0, param: ParamId::Tempo, value: 100 }),
        Err(TxError::NotGigaBrain(0))
    );
    assert_eq!(
        run(&mut state, 2, Call::Propose { brain, param: ParamId::Tempo, value: 100 }),
        Err(TxError::NotBrainOwner(brain))
    );
    let events = ok(&mut state, 1, Call::Propose { brain, param: ParamId::Tempo, value: 100 });
    let Event::ProposalCreated { id, ends_at } = events[0] else { panic!() };
    assert_eq!(
        run(&mut state, 1, Call::Propose { brain, param: ParamId::Tempo, value: 0 })
            .unwrap_err()
            .to_string(),
        "Tempo must be in 1..=100000, got 0"
    );
    let vetoed = match ok(
        &mut state,
        1,
        Call::Propose { brain, param: ParamId::ConsensusSteepness, value: 20 },
    )
    .as_slice()
    {
        [Event::ProposalCreated { id, .. }] => *id,
        other => panic!("{other:?}"),
    };
    ok(&mut state, 9, Call::VoteWithPepe { proposal: vetoed, veto: true });
    ok(&mut state, 10, Call::VoteWithPepe { proposal: vetoed, veto: false });
    assert_eq!(
        run(&mut state, 9, Call::VoteWithPepe { proposal: vetoed, veto: true }),
        Err(TxError::AlreadyVoted(vetoed))
    );
    // Voted PEPE is locked until the vote ends.
    assert!(matches!(
        run(&mut state, 9, Call::TransferPepe { to: address(11), amount: 1 }),
        Err(TxError::InsufficientPepe { .. })
    ));
    let height = state.height();
    finish(&mut state, ends_at - height);
    assert_eq!(state.proposal(id).unwrap().unwrap().status, ProposalStatus::Passed);
    assert_eq!(state.params().unwrap().tempo, 100);
    // 1,000,000 veto vs 1,000,000 support is only half: not vetoed.
    assert_eq!(state.proposal(vetoed).unwrap().unwrap().status, ProposalStatus::Passed);
    assert_eq!(state.params().unwrap().consensus_steepness, 20);
    ok(&mut state, 9, Call::TransferPepe { to: address(11), amount: 1 });
    assert!(BLOCKS_PER_YEAR > ends_at);
}

#[test]
fn stake_cap_and_bonus_split() {
    use crate::split_block_reward;
    let state = genesis();
    let mut globals = state.globals().unwrap();
    let template = state.brain(0).unwrap().unwrap();
    let brain =
        |stake, performance| crate::records::Brain { stake, performance, ..template.clone() };
    // Brain 0 has 99% of stake but is capped at 0.5% of it, like the others.
    globals.total_stake = 1_000_000;
    let full = crate::fixed::ONE;
    let brains =
        vec![(0, brain(990_000, full)), (1, brain(5_000, full)), (2, brain(5_000, full / 2))];
    let shares = split_block_reward(coins(10), &brains, &globals);
    assert_eq!(shares.withheld, 0);
    assert_eq!(shares.per_brain.iter().sum::<u64>(), coins(10));
    assert_eq!(shares.per_brain[1], coins(9) * 2 / 5);
    // Main pool 9 BASED by score 2:2:1; bonus 1 BASED to the top ceil(30% x 3) = 1 Brain,
    // which by performance (ties: lower number) is #0.
    assert_eq!(shares.per_brain[2], coins(9) / 5);
    assert_eq!(shares.per_brain[0], coins(9) * 2 / 5 + coins(1));
}

#[derive(Debug, Clone)]
enum Action {
    Transfer(u8, u8, Amount),
    TransferPepe(u8, u8, Amount),
    Burn(u8),
    Stake(u8, Amount),
    Unstake(u8, Amount),
    Fund(u8, Amount),
    Release(u8),
    Register(u8, u8, bool),
    TransferBrain(u8, u16, u8),
    Weights(Vec<u16>),
    Bridge(u8, u8, Amount),
    Blocks(u8),
}

fn action() -> impl Strategy<Value = Action> {
    let user = 1u8..6;
    let amount = prop_oneof![0..coins(10), Just(coins(2_000_000))];
    prop_oneof![
        (user.clone(), user.clone(), amount.clone())
            .prop_map(|(a, b, x)| Action::Transfer(a, b, x)),
        (user.clone(), user.clone(), amount.clone())
            .prop_map(|(a, b, x)| Action::TransferPepe(a, b, x)),
        user.clone().prop_map(Action::Burn),
        (user.clone(), amount.clone()).prop_map(|(a, x)| Action::Stake(a, x)),
        (user.clone(), amount.clone()).prop_map(|(a, x)| Action::Unstake(a, x)),
        (user.clone(), amount.clone()).prop_map(|(a, x)| Action::Fund(a, x)),
        user.clone().prop_map(Action::Release),
        (user.clone(), 70u8..90, any::<bool>()).prop_map(|(a, h, v)| Action::Register(a, h, v)),
        (user.clone(), 7u16..10, user.clone()).prop_map(|(a, b, c)| Action::TransferBrain(a, b, c)),
        proptest::collection::vec(0u16..100, 0..4).prop_map(Action::Weights),
        (0u8..3, user, amount).prop_map(|(r, a, x)| Action::Bridge(r, a, x)),
        (1u8..4).prop_map(Action::Blocks),
    ]
}

/// Between two snapshots, only the signer's fee and nonce and the burned-fee counter changed.
fn assert_only_fee_and_nonce_moved(
    before: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    after: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    signer: u8,
) {
    use based_types::Decode;

    use crate::records::{Account, Globals, keys};
    let account_key = keys::account(&address(signer));
    let globals_key = keys::globals();
    let changed: Vec<&Vec<u8>> =
        after.keys().chain(before.keys()).filter(|k| before.get(*k) != after.get(*k)).collect();
    assert!(changed.iter().all(|k| **k == account_key || **k == globals_key), "{changed:?}");
    let account = |map: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>| {
        map.get(&account_key).map(|b| Account::from_bytes(b).unwrap()).unwrap_or_default()
    };
    let (old, mut new) = (account(before), account(after));
    assert_eq!((new.nonce, new.balance + FEE), (old.nonce + 1, old.balance));
    new.nonce = old.nonce;
    new.balance = old.balance;
    assert_eq!(new, old);
    let globals = |map: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>| {
        Globals::from_bytes(&map[&globals_key]).unwrap()
    };
    let (old, mut new) = (globals(before), globals(after));
    assert_eq!(new.fees_burned, old.fees_burned + FEE);
    new.fees_burned = old.fees_burned;
    assert_eq!(new, old);
}

fn play(actions: &[Action], brain: u16) -> State<MemoryStore> {
    let mut state = genesis();
    working_brain(&mut state);
    for relayer in RELAYERS {
        ok(&mut state, 1, Call::Transfer { to: address(relayer), amount: coins(1) });
    }
    for action in actions {
        let (signer, call) = match action {
            Action::Transfer(a, b, x) => (*a, Call::Transfer { to: address(*b), amount: *x }),
            Action::TransferPepe(a, b, x) => {
                (*a, Call::TransferPepe { to: address(*b), amount: *x })
            }
            Action::Burn(a) => (*a, Call::AcquireBrainByBurn {}),
            Action::Stake(a, x) => (*a, Call::AddStake { brain, hotkey: address(50), amount: *x }),
            Action::Unstake(a, x) => {
                (*a, Call::RemoveStake { brain, hotkey: address(50), amount: *x })
            }
            Action::Fund(a, x) => (*a, Call::FundEscrow { amount: *x }),
            Action::Release(a) => (*a, Call::ReleaseEscrow {}),
            Action::Register(a, h, validator) => {
                let role = if *validator { Role::Validator } else { Role::Miner };
                (*a, Call::Register { brain, hotkey: address(*h), role, max_fee: coins(100) })
            }
            Action::TransferBrain(a, b, c) => {
                (*a, Call::TransferBrain { brain: *b, to: address(*c) })
            }
            Action::Weights(w) => {
                let weights = w.iter().enumerate().map(|(uid, w)| (uid as u16, *w)).collect();
                (50, Call::SetWeights { brain, weights })
            }
            Action::Bridge(r, a, x) => {
                let event_id = Hash::of(&[*a, (*x % 3) as u8]);
                (
                    RELAYERS[usize::from(*r)],
                    Call::BridgeAttest { event_id, recipient: address(*a), amount: *x },
                )
            }
            Action::Blocks(n) => {
                finish(&mut state, u64::from(*n) * 40);
                continue;
            }
        };
        let before = state.snapshot();
        let receipt = submit(&mut state, signer, call).unwrap();
        if receipt.outcome.is_err() {
            assert_only_fee_and_nonce_moved(&before, &state.snapshot(), signer);
        }
    }
    finish(&mut state, 1);
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn supply_is_conserved_and_replay_is_deterministic(actions in proptest::collection::vec(action(), 1..25)) {
        let state = play(&actions, 7);
        assert_supply_conserved(&state);
        let again = play(&actions, 7);
        prop_assert_eq!(state.state_root(), again.state_root());
        prop_assert_eq!(state.store(), again.store());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Whatever the weights, a tempo's payout plus what is withheld equals the emission the
    /// Brain accrued, to the base unit.
    #[test]
    fn epoch_payouts_sum_exactly_to_the_emission(
        weights in proptest::collection::vec(0u16..1_000, 2),
        split in 0u32..=PPB,
        commission in 0u32..=PPB,
    ) {
        let mut state = genesis();
        let brain = acquire_burned_brain(&mut state, 1);
        ok(&mut state, 1, Call::ConfigureBrain { brain, setting: BrainSetting::Split { miners_ppb: split } });
        ok(&mut state, 2, Call::Register { brain, hotkey: address(50), role: Role::Validator, max_fee: coins(100) });
        ok(&mut state, 3, Call::Register { brain, hotkey: address(60), role: Role::Miner, max_fee: coins(100) });
        ok(&mut state, 4, Call::Register { brain, hotkey: address(61), role: Role::Miner, max_fee: coins(100) });
        ok(&mut state, 5, Call::AddStake { brain, hotkey: address(50), amount: coins(7) });
        ok(&mut state, 6, Call::AddStake { brain, hotkey: address(50), amount: 3 });
        ok(&mut state, 2, Call::Transfer { to: address(50), amount: coins(1) });
        finish(&mut state, 1);
        ok(&mut state, 50, Call::SetCommission { brain, commission_ppb: commission });
        let weights = vec![(0, weights[0]), (1, weights[1])];
        ok(&mut state, 50, Call::SetWeights { brain, weights });
        let tempo = state.params().unwrap().tempo;
        let mut epochs = 0;
        while epochs < 2 {
            let record = state.brain(brain).unwrap().unwrap();
            // The only Brain with a score takes the whole block reward.
            let share = if record.performance > 0 { block_reward(state.height() + 1) } else { 0 };
            for event in finish(&mut state, 1) {
                if let Event::EpochPaid { paid, withheld, .. } = event {
                    prop_assert_eq!(paid + withheld, record.accrued + share);
                    epochs += 1;
                }
            }
            prop_assert!(state.height() < 3 * tempo);
        }
        assert_supply_conserved(&state);
    }
}

#[test]
fn blocks_apply_atomically_and_check_their_header() {
    use based_types::{Block, BlockHeader, transactions_root};
    let mut proposer = genesis();
    let mut follower = genesis();
    let transactions = vec![
        signed(&proposer, 1, Call::Transfer { to: address(2), amount: coins(1) }),
        signed(&proposer, 3, Call::AcquireBrainByBurn {}),
    ];
    let (included, outcome) = proposer.propose_block(transactions).unwrap();
    assert_eq!(included.len(), 2);
    let header = BlockHeader {
        chain_id: CHAIN,
        height: 1,
        parent: Hash::ZERO,
        transactions_root: transactions_root(&included),
        state_root: outcome.state_root,
        timestamp_ms: 0,
        proposer: address(1),
    };
    let block = Block { header: header.clone(), transactions: included.clone() };
    let decoded = Block::decode(&based_types::Encode::to_bytes(&block)).unwrap();
    let mut wrong_root = decoded.clone();
    wrong_root.header.state_root = Hash::ZERO;
    let before = follower.state_root();
    assert!(matches!(
        follower.apply_block(&wrong_root),
        Err(crate::BlockError::WrongStateRoot { .. })
    ));
    assert_eq!(follower.state_root(), before);
    let mut wrong_height = decoded.clone();
    wrong_height.header.height = 2;
    assert_eq!(
        follower.apply_block(&wrong_height),
        Err(crate::BlockError::WrongHeight { expected: 1, got: 2 })
    );
    let mut replayed = decoded.clone();
    replayed.transactions.push(included[0].clone());
    replayed.header.transactions_root = transactions_root(&replayed.transactions);
    assert!(matches!(
        follower.apply_block(&replayed),
        Err(crate::BlockError::InvalidTransaction { index: 2, error: TxError::BadNonce { .. } })
    ));
    assert_eq!(follower.state_root(), before);
    let applied = follower.apply_block(&decoded).unwrap();
    assert_eq!(applied.state_root, proposer.state_root());
    assert_eq!(follower.store(), proposer.store());
}

#[test]
fn a_forged_signature_in_a_block_is_named() {
    use based_types::{Block, BlockHeader, transactions_root};
    let mut state = genesis();
    let good = signed(&state, 1, Call::Transfer { to: address(2), amount: 1 });
    let mut forged = signed(&state, 3, Call::Transfer { to: address(2), amount: 1 });
    forged.transaction.call = Call::Transfer { to: address(4), amount: 1 };
    let transactions = vec![good, forged];
    let header = BlockHeader {
        chain_id: CHAIN,
        height: 1,
        parent: Hash::ZERO,
        transactions_root: transactions_root(&transactions),
        state_root: Hash::ZERO,
        timestamp_ms: 0,
        proposer: address(1),
    };
    let root = state.state_root();
    assert_eq!(
        state.apply_block(&Block { header, transactions }),
        Err(crate::BlockError::InvalidTransaction { index: 1, error: TxError::BadSignature })
    );
    assert_eq!(state.state_root(), root);
}
