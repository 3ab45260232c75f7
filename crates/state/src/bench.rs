//! Throughput measurements behind `based bench state`: signed transfers applied per second on
//! one core (signature verification included, signing excluded: users sign), through block
//! validation and one by one, and the epoch of a full Brain (256 validators x 1792 miners). Wall-clock time is read here only, never by the
//! state machine.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use based_types::{
    Block, BlockHeader, Call, Hash, PPB, PublicKey, Role, SecretKey, SignedTransaction,
    Transaction, coins, transactions_root,
};

use crate::epoch::{EpochConfig, ValidatorInput, run_epoch};
use crate::params::{MINER_SLOTS, VALIDATOR_SLOTS};
use crate::{GenesisConfig, MemoryStore, Params, State};

const CHAIN: u32 = 1;
const SENDERS: usize = 1_000;
const TRANSFERS: usize = 20_000;
const BLOCK_SIZE: usize = 1_000;

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub transfers: usize,
    /// Validating blocks of transfers with `apply_block` (one batch signature check per block,
    /// execution, end of block, state root): what a validator does.
    pub blocks_elapsed: Duration,
    /// The same transfers through `apply_transaction` one by one (strict single signature
    /// check each) and `finish_block`: what a proposer does.
    pub one_by_one_elapsed: Duration,
    /// The Yuma epoch alone on in-memory matrices.
    pub epoch_compute: Duration,
    /// The end of the epoch block in the state machine: loading nodes, the epoch, payouts,
    /// storing credits, and the state root.
    pub epoch_block: Duration,
    /// An ordinary end of block on the same state, for comparison.
    pub plain_block: Duration,
}

impl BenchReport {
    /// The headline figure: transfers per second through block validation.
    pub fn transfers_per_second(&self) -> u64 {
        per_second(self.transfers, self.blocks_elapsed)
    }

    pub fn one_by_one_per_second(&self) -> u64 {
        per_second(self.transfers, self.one_by_one_elapsed)
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::from("| measurement | result | goal |\n|---|---|---|\n");
        let ms = |d: Duration| format!("{}.{:03} ms", d.as_millis(), d.as_micros() % 1000);
        let _ = writeln!(
            out,
            "| signed transfers per second, block validation (1 core, {} transfers in blocks of {BLOCK_SIZE}, batch signature check) | {} | >= 50,000 |",
            self.transfers,
            self.transfers_per_second()
        );
        let _ = writeln!(
            out,
            "| signed transfers per second, one by one (strict signature check each) | {} | |",
            self.one_by_one_per_second()
        );
        let _ = writeln!(
            out,
            "| epoch compute, {VALIDATOR_SLOTS} validators x {MINER_SLOTS} miners | {} | <= 50 ms |",
            ms(self.epoch_compute)
        );
        let _ = writeln!(
            out,
            "| epoch block in the state machine (load, epoch, payouts, store, state root) | {} | |",
            ms(self.epoch_block)
        );
        let _ =
            writeln!(out, "| ordinary block end on the same state | {} | |", ms(self.plain_block));
        out
    }
}

fn per_second(count: usize, elapsed: Duration) -> u64 {
    let micros = elapsed.as_micros().max(1);
    u64::try_from(count as u128 * 1_000_000 / micros).unwrap_or(u64::MAX)
}

/// Deterministic pseudo-random numbers (xorshift64), so runs are comparable.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn seeded_key(index: u64) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&index.to_le_bytes());
    seed[8] = 0xbe;
    SecretKey::from_seed(seed)
}

fn genesis(funded: &[PublicKey]) -> State<MemoryStore> {
    let config = GenesisConfig {
        chain_id: CHAIN,
        foundation: seeded_key(u64::MAX).public_key(),
        balances: funded.iter().map(|k| (*k, coins(1_000_000))).collect(),
        pepe_balances: funded.iter().map(|k| (*k, coins(1_000_000))).collect(),
        relayers: vec![seeded_key(u64::MAX - 1).public_key()],
        relayer_threshold: 1,
        params: Params::default(),
    };
    State::genesis(MemoryStore::new(), config).expect("valid bench genesis")
}

fn sign(key: &SecretKey, nonce: u64, call: Call) -> SignedTransaction {
    Transaction { chain_id: CHAIN, signer: key.public_key(), nonce, fee: 1_000, call }.sign(key)
}

/// Returns the time to validate blocks of transfers, and to apply them one by one.
fn measure_transfers() -> (Duration, Duration) {
    let keys: Vec<SecretKey> = (0..SENDERS as u64).map(seeded_key).collect();
    let addresses: Vec<PublicKey> = keys.iter().map(SecretKey::public_key).collect();
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let transactions: Vec<SignedTransaction> = (0..TRANSFERS)
        .map(|i| {
            let to = addresses[(noise.next() % SENDERS as u64) as usize];
            let call = Call::Transfer { to, amount: 1 + noise.next() % 1_000 };
            sign(&keys[i % SENDERS], (i / SENDERS) as u64, call)
        })
        .collect();

    let mut proposer = genesis(&addresses);
    let mut blocks = Vec::new();
    let start = Instant::now();
    for chunk in transactions.chunks(BLOCK_SIZE) {
        let (included, outcome) = proposer.propose_block(chunk.to_vec()).expect("block closes");
        assert_eq!(included.len(), chunk.len(), "bench transfer rejected");
        assert!(outcome.receipts.iter().all(|r| r.outcome.is_ok()), "bench transfer failed");
        let header = BlockHeader {
            chain_id: CHAIN,
            height: outcome.height,
            parent: Hash::ZERO,
            transactions_root: transactions_root(&included),
            state_root: outcome.state_root,
            timestamp_ms: 0,
            proposer: addresses[0],
        };
        blocks.push(Block { header, transactions: included });
    }
    let one_by_one = start.elapsed();

    let mut validator = genesis(&addresses);
    let start = Instant::now();
    for block in &blocks {
        validator.apply_block(block).expect("valid block");
    }
    (start.elapsed(), one_by_one)
}

fn full_brain_inputs(noise: &mut Noise) -> Vec<ValidatorInput> {
    (0..VALIDATOR_SLOTS)
        .map(|_| ValidatorInput {
            stake: coins(1 + noise.next() % 10_000),
            weights: (0..MINER_SLOTS).map(|uid| (uid, (noise.next() % 65_536) as u16)).collect(),
            previous_credits: (0..MINER_SLOTS).map(|uid| (uid, noise.next() % (1 << 24))).collect(),
        })
        .collect()
}

fn measure_epoch_compute() -> Duration {
    let inputs = full_brain_inputs(&mut Noise(7));
    let config = EpochConfig { active_percentile_ppb: PPB / 10 * 7, steepness: 10, tft_beta: 0 };
    (0..5)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(run_epoch(&inputs, usize::from(MINER_SLOTS), &[], config));
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Builds a full Brain through ordinary transactions, then times its epoch block.
fn measure_epoch_block() -> (Duration, Duration) {
    let owner = seeded_key(1);
    let mut state = genesis(&[owner.public_key()]);
    let mut nonce = 0;
    let submit = |state: &mut State<MemoryStore>, key: &SecretKey, nonce: &mut u64, call| {
        let receipt = state.apply_transaction(&sign(key, *nonce, call)).expect("admitted");
        receipt.outcome.expect("bench transaction succeeds");
        *nonce += 1;
    };
    submit(&mut state, &owner, &mut nonce, Call::AcquireBrainByBurn {});
    let brain = 7;
    let setting = based_types::BrainSetting::RegistrationFee { amount: 0 };
    submit(&mut state, &owner, &mut nonce, Call::ConfigureBrain { brain, setting });
    let hotkeys: Vec<SecretKey> =
        (0..u64::from(VALIDATOR_SLOTS + MINER_SLOTS)).map(|i| seeded_key(1_000 + i)).collect();
    for (index, hotkey) in hotkeys.iter().enumerate() {
        let role = if index < usize::from(VALIDATOR_SLOTS) { Role::Validator } else { Role::Miner };
        let call = Call::Register { brain, hotkey: hotkey.public_key(), role, max_fee: 0 };
        submit(&mut state, &owner, &mut nonce, call);
        if index % 128 == 127 {
            state.finish_block().expect("block closes");
        }
    }
    let mut noise = Noise(11);
    for hotkey in &hotkeys[..usize::from(VALIDATOR_SLOTS)] {
        let amount = coins(1 + noise.next() % 1_000);
        submit(
            &mut state,
            &owner,
            &mut nonce,
            Call::AddStake { brain, hotkey: hotkey.public_key(), amount },
        );
        submit(
            &mut state,
            &owner,
            &mut nonce,
            Call::Transfer { to: hotkey.public_key(), amount: coins(1) },
        );
    }
    state.finish_block().expect("block closes");
    for hotkey in &hotkeys[..usize::from(VALIDATOR_SLOTS)] {
        let weights = (0..MINER_SLOTS).map(|uid| (uid, (noise.next() % 65_536) as u16)).collect();
        let mut hotkey_nonce = 0;
        submit(&mut state, hotkey, &mut hotkey_nonce, Call::SetWeights { brain, weights });
    }
    state.finish_block().expect("block closes");
    let tempo = state.params().expect("params").tempo;
    let next_epoch = |height: u64| (height + 1 + u64::from(brain)).is_multiple_of(tempo);
    let mut epoch_block = Duration::ZERO;
    let mut plain_block = Duration::ZERO;
    // The second epoch is the steady state: credits from the first one exist.
    for _ in 0..2 {
        while !next_epoch(state.height()) {
            let start = Instant::now();
            state.finish_block().expect("block closes");
            plain_block = start.elapsed();
        }
        let start = Instant::now();
        state.finish_block().expect("block closes");
        epoch_block = start.elapsed();
    }
    (epoch_block, plain_block)
}

pub fn run() -> BenchReport {
    let (blocks_elapsed, one_by_one_elapsed) = measure_transfers();
    let epoch_compute = measure_epoch_compute();
    let (epoch_block, plain_block) = measure_epoch_block();
    BenchReport {
        transfers: TRANSFERS,
        blocks_elapsed,
        one_by_one_elapsed,
        epoch_compute,
        epoch_block,
        plain_block,
    }
}
