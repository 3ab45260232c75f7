//! Deterministic simulated-network tests: four validators on Commonware's deterministic
//! runtime and simulated p2p, with the production channel quotas.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use based_node::block::ChainBlock;
use based_node::engine::{
    BACKFILL_CHANNEL, BLOCKS_CHANNEL, CERTIFICATES_CHANNEL, RESOLVER_CHANNEL, VOTES_CHANNEL,
};
use based_node::gossip::TRANSACTIONS_CHANNEL;
use based_node::ledger::Overlay;
use based_node::{Application, ChainSpec, Channels, Ledger, ValidatorConfig, channel_quotas};
use based_state::{GenesisConfig, Params};
use based_types::{Call, SecretKey, Transaction, coins};
use commonware_codec::DecodeExt as _;
use commonware_cryptography::{Digestible as _, Signer as _, ed25519};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_p2p::{Manager as _, Recipients, Sender as _};
use commonware_runtime::deterministic::{self, Context, Runner};
use commonware_runtime::{Clock as _, Handle, Metrics as _, Runner as _, Spawner as _};
use commonware_utils::ordered::Set;
use rand::Rng as _;

const VALIDATORS: usize = 4;
const CHAIN_ID: u32 = 7;
const BLOCK_TIME_MS: u64 = 200;
const GENESIS_TIME_MS: u64 = 1_000_000;
const USERS: u8 = 4;

fn user(n: u8) -> SecretKey {
    SecretKey::from_seed([n + 1; 32])
}

fn spec(validators: Vec<ed25519::PublicKey>) -> ChainSpec {
    let funded = |amount| (0..USERS).map(|n| (user(n).public_key(), amount)).collect();
    ChainSpec {
        genesis: GenesisConfig {
            chain_id: CHAIN_ID,
            foundation: user(100).public_key(),
            balances: funded(coins(1_000)),
            pepe_balances: funded(coins(1_000)),
            relayers: vec![user(101).public_key()],
            relayer_threshold: 1,
            params: Params::default(),
        },
        genesis_time_ms: GENESIS_TIME_MS,
        block_time_ms: BLOCK_TIME_MS,
        max_block_transactions: 1_000,
        validators,
    }
}

struct Node {
    signer: ed25519::PrivateKey,
    ledger: Ledger,
    running: Option<(Handle<()>, Application)>,
    starts: usize,
}

/// Four validators on one simulated network, and a load generator of transfers.
struct Cluster {
    context: Context,
    oracle: Oracle<ed25519::PublicKey, Context>,
    nodes: Vec<Node>,
    spec: ChainSpec,
    next_nonce: BTreeMap<u8, u64>,
}

fn ledger_dir() -> PathBuf {
    std::env::temp_dir().join(format!("based-node-sim-{}", std::process::id()))
}

/// A validator's database file; `fresh` deletes what an earlier run left.
fn ledger_path(test: &str, seed: u64, index: usize, fresh: bool) -> PathBuf {
    std::fs::create_dir_all(ledger_dir()).expect("temp dir");
    let path = ledger_dir().join(format!("{test}-{seed}-{index}.redb"));
    if fresh {
        let _ = std::fs::remove_file(&path);
    }
    path
}

/// Deletes a finished test's databases (the runtime that held them has been dropped).
fn remove_ledgers(test: &str, seed: u64) {
    for index in 0..VALIDATORS {
        let _ = std::fs::remove_file(ledger_path(test, seed, index, false));
    }
    // Fails while other tests still have files there; the last one removes it.
    let _ = std::fs::remove_dir(ledger_dir());
}

impl Cluster {
    async fn new(context: Context, test: &str, seed: u64, link: Link) -> Self {
        Self::open(context, test, seed, link, true).await
    }

    /// `fresh: false` reopens the databases of an earlier run of the same test.
    async fn open(context: Context, test: &str, seed: u64, link: Link, fresh: bool) -> Self {
        let (network, oracle) = Network::new(
            context.with_label("network"),
            simulated::Config {
                max_size: 1024 * 1024,
                disconnect_on_block: true,
                tracked_peer_sets: Some(1),
            },
        );
        network.start();
        let mut signers: Vec<_> =
            (0..VALIDATORS as u64).map(ed25519::PrivateKey::from_seed).collect();
        signers.sort_by_key(|signer| signer.public_key());
        let validators: Vec<_> = signers.iter().map(|signer| signer.public_key()).collect();
        // The garbage peer is a known identity (tracked), but not a validator.
        let peers = validators.iter().cloned().chain([garbage_peer().public_key()]);
        oracle.manager().track(0, Set::from_iter_dedup(peers)).await;
        let nodes = signers
            .into_iter()
            .enumerate()
            .map(|(index, signer)| Node {
                signer,
                ledger: Ledger::open(&ledger_path(test, seed, index, fresh)).expect("open ledger"),
                running: None,
                starts: 0,
            })
            .collect();
        let mut cluster =
            Self { context, oracle, nodes, spec: spec(validators), next_nonce: BTreeMap::new() };
        cluster.link_all(link).await;
        for index in 0..VALIDATORS {
            cluster.start(index).await;
        }
        cluster
    }

    fn public_key(&self, index: usize) -> ed25519::PublicKey {
        self.nodes[index].signer.public_key()
    }

    async fn link(&self, a: usize, b: usize, link: Link) {
        let (from, to) = (self.public_key(a), self.public_key(b));
        self.oracle.add_link(from, to, link).await.expect("add link");
    }

    async fn link_all(&self, link: Link) {
        for a in 0..VALIDATORS {
            for b in (0..VALIDATORS).filter(|&b| b != a) {
                self.link(a, b, link.clone()).await;
            }
        }
    }

    async fn unlink(&self, a: usize, b: usize) {
        let (from, to) = (self.public_key(a), self.public_key(b));
        self.oracle.remove_link(from, to).await.expect("remove link");
    }

    /// (Re)starts a validator on its ledger and storage partitions, with fresh channels.
    async fn start(&mut self, index: usize) {
        let public_key = self.public_key(index);
        let control = self.oracle.control(public_key.clone());
        let mut registered = BTreeMap::new();
        for (channel, quota) in channel_quotas(BLOCK_TIME_MS) {
            let pair = control.register(channel, quota).await.expect("register channel");
            registered.insert(channel, pair);
        }
        let mut channel = |id: u64| registered.remove(&id).expect("channel registered");
        let channels = Channels {
            votes: channel(VOTES_CHANNEL),
            certificates: channel(CERTIFICATES_CHANNEL),
            resolver: channel(RESOLVER_CHANNEL),
            blocks: channel(BLOCKS_CHANNEL),
            backfill: channel(BACKFILL_CHANNEL),
            transactions: channel(TRANSACTIONS_CHANNEL),
        };
        let node = &mut self.nodes[index];
        let config = ValidatorConfig {
            signer: node.signer.clone(),
            spec: self.spec.clone(),
            ledger: node.ledger.clone(),
            blocker: control,
            provider: self.oracle.manager(),
            partition_prefix: format!("validator-{index}"),
        };
        // Metrics names must be unique per runtime, so each start gets its own label.
        let label = format!("validator_{index}_start_{}", node.starts);
        node.starts += 1;
        let (started_tx, started_rx) = futures::channel::oneshot::channel();
        let handle = self.context.with_label(&label).spawn(move |context| async move {
            let (application, engine) = based_node::start_validator(context, config, channels)
                .await
                .expect("validator starts");
            let _ = started_tx.send(application);
            let _ = engine.await;
        });
        let application = started_rx.await.expect("validator reported its start");
        node.running = Some((handle, application));
    }

    /// Kills a validator's whole task tree, as a crash would.
    fn crash(&mut self, index: usize) {
        if let Some((handle, _)) = self.nodes[index].running.take() {
            handle.abort();
        }
    }

    fn height(&self, index: usize) -> u64 {
        let snapshot = self.nodes[index].ledger.snapshot().expect("snapshot");
        snapshot.applied().expect("meta").map_or(0, |applied| applied.height)
    }

    fn heights(&self) -> Vec<u64> {
        (0..VALIDATORS).map(|index| self.height(index)).collect()
    }

    /// Sends one transfer from every user to one running validator, which gossips it.
    fn submit_transfers(&mut self) {
        for n in 0..USERS {
            let key = user(n);
            let finalized = self.finalized_nonce(&key.public_key());
            let nonce = self.next_nonce.entry(n).or_insert(0);
            *nonce = (*nonce).max(finalized);
            let transfer = Transaction {
                chain_id: CHAIN_ID,
                signer: key.public_key(),
                nonce: *nonce,
                fee: 1_000,
                call: Call::Transfer { to: user((n + 1) % USERS).public_key(), amount: 1 },
            }
            .sign(&key);
            *nonce += 1;
            let entry = self.nodes.iter().cycle().skip(usize::from(n)).take(VALIDATORS);
            if let Some((_, application)) = entry.filter_map(|node| node.running.as_ref()).next() {
                let _ = application.submit(transfer);
            }
        }
    }

    /// The account nonce in the finalized state of the highest validator.
    fn finalized_nonce(&self, account: &based_types::PublicKey) -> u64 {
        let highest = (0..VALIDATORS).max_by_key(|&index| self.height(index)).unwrap_or(0);
        let snapshot = self.nodes[highest].ledger.snapshot().expect("snapshot");
        let state = based_state::State::open(Overlay::new(snapshot, Vec::new()));
        state.account(account).map_or(0, |account| account.nonce)
    }

    /// Drives load until every validator in `which` has finalized `height`.
    async fn wait_for(&mut self, which: &[usize], height: u64, limit: Duration) {
        let deadline = self.context.current() + limit;
        while which.iter().any(|&index| self.height(index) < height) {
            assert!(
                self.context.current() < deadline,
                "validators {which:?} did not reach height {height}: {:?}",
                self.heights()
            );
            self.submit_transfers();
            self.context.sleep(Duration::from_millis(BLOCK_TIME_MS)).await;
        }
    }

    /// The finalized chain of a validator as digests by height, checked for internal
    /// consistency: contiguous heights from genesis, parent links, and the persisted state root
    /// equal to the last block's.
    fn chain(&self, index: usize) -> Vec<[u8; 32]> {
        let snapshot = self.nodes[index].ledger.snapshot().expect("snapshot");
        let mut digests: Vec<[u8; 32]> = Vec::new();
        let mut last_root = None;
        for (expected_height, (height, bytes)) in
            snapshot.blocks().expect("blocks").into_iter().enumerate()
        {
            assert_eq!(height, expected_height as u64, "validator {index} skipped a height");
            let block = ChainBlock::decode(bytes.as_slice()).expect("stored block decodes");
            if let Some(parent) = digests.last() {
                let link = commonware_consensus::Block::parent(&block);
                assert_eq!(link.as_ref(), parent, "validator {index}: broken parent link");
            }
            digests.push(block.digest().as_ref().try_into().expect("32-byte digest"));
            last_root = Some(block.inner.header.state_root);
        }
        let state = Overlay::new(snapshot, Vec::new());
        assert_eq!(
            Some(based_state::state_root(&state)),
            last_root,
            "validator {index}: state root"
        );
        digests
    }

    /// Every validator's finalized chain is a prefix of every other's, and no validator was
    /// blocked (which only a fault would cause); returns the longest chain.
    async fn assert_consistent(&self) -> Vec<[u8; 32]> {
        let validators: Vec<_> = (0..VALIDATORS).map(|index| self.public_key(index)).collect();
        let blocked = self.oracle.blocked().await.expect("oracle");
        let honest_blocked: Vec<_> =
            blocked.iter().filter(|(_, peer)| validators.contains(peer)).collect();
        assert!(honest_blocked.is_empty(), "validators were blocked: {honest_blocked:?}");
        let chains: Vec<_> = (0..VALIDATORS).map(|index| self.chain(index)).collect();
        let longest = chains.iter().max_by_key(|chain| chain.len()).expect("validators").clone();
        for (index, chain) in chains.iter().enumerate() {
            assert_eq!(chain[..], longest[..chain.len()], "validator {index} forked");
        }
        longest
    }

    fn finalized_transactions(&self, index: usize) -> usize {
        let snapshot = self.nodes[index].ledger.snapshot().expect("snapshot");
        snapshot
            .blocks()
            .expect("blocks")
            .iter()
            .map(|(_, bytes)| {
                ChainBlock::decode(bytes.as_slice()).expect("decodes").inner.transactions.len()
            })
            .sum()
    }
}

fn garbage_peer() -> ed25519::PrivateKey {
    ed25519::PrivateKey::from_seed(99)
}

impl Cluster {
    /// Links a non-validator peer that sends random bytes on every channel, forever.
    async fn spawn_garbage_peer(&self) {
        let garbage = garbage_peer().public_key();
        let control = self.oracle.control(garbage.clone());
        let mut senders = Vec::new();
        for (channel, quota) in channel_quotas(BLOCK_TIME_MS) {
            let (sender, _receiver) = control.register(channel, quota).await.expect("register");
            senders.push(sender);
        }
        for index in 0..VALIDATORS {
            let validator = self.public_key(index);
            self.oracle
                .add_link(garbage.clone(), validator.clone(), good_link())
                .await
                .expect("link");
            self.oracle.add_link(validator, garbage.clone(), good_link()).await.expect("link");
        }
        self.context.with_label("garbage").spawn(move |mut context| async move {
            loop {
                for sender in &mut senders {
                    let length = context.gen_range(1..512);
                    let bytes: Vec<u8> = (0..length).map(|_| context.r#gen()).collect();
                    let _ = sender.send(Recipients::All, bytes, false).await;
                }
                context.sleep(Duration::from_millis(20)).await;
            }
        });
    }
}

fn good_link() -> Link {
    Link { latency: Duration::from_millis(10), jitter: Duration::from_millis(2), success_rate: 1.0 }
}

fn runner(seed: u64) -> Runner {
    let config = deterministic::Config::default()
        .with_seed(seed)
        .with_start_time(UNIX_EPOCH + Duration::from_millis(GENESIS_TIME_MS))
        .with_timeout(Some(Duration::from_secs(600)));
    Runner::from(config)
}

/// Returns the finalized chain and the runtime's audit of every event, for reproducibility.
fn all_online(test: &str, seed: u64, link: Link, height: u64) -> (Vec<[u8; 32]>, String) {
    let outcome = runner(seed).start(|context| async move {
        let mut cluster = Cluster::new(context.clone(), test, seed, link).await;
        cluster.wait_for(&[0, 1, 2, 3], height, Duration::from_secs(120)).await;
        let chain = cluster.assert_consistent().await;
        let transactions = cluster.finalized_transactions(0);
        assert!(transactions > 0, "no transfer was finalized");
        eprintln!(
            "{test} seed {seed}: heights {:?}, {transactions} transfers, {:?} simulated",
            cluster.heights(),
            context.current().duration_since(UNIX_EPOCH).unwrap_or_default()
        );
        (chain, context.auditor().state())
    });
    remove_ledgers(test, seed);
    outcome
}

#[test]
fn all_online_finalizes_the_same_chain() {
    for seed in 0..3 {
        let (chain, _) = all_online("online", seed, good_link(), 15);
        assert!(chain.len() > 15);
    }
}

#[test]
fn same_seed_reproduces_the_run() {
    let first = all_online("repro-a", 42, good_link(), 10);
    let second = all_online("repro-b", 42, good_link(), 10);
    assert_eq!(first, second);
}

#[test]
fn lossy_and_slow_links_still_finalize() {
    let link = Link {
        latency: Duration::from_millis(200),
        jitter: Duration::from_millis(150),
        success_rate: 0.75,
    };
    all_online("lossy", 5, link, 10);
}

#[test]
fn crashed_validator_restarts_from_disk_and_catches_up() {
    runner(7).start(|context| async move {
        let mut cluster = Cluster::new(context, "crash", 7, good_link()).await;
        cluster.wait_for(&[0, 1, 2, 3], 5, Duration::from_secs(60)).await;
        cluster.crash(0);
        let at_crash = cluster.height(0);
        cluster.wait_for(&[1, 2, 3], at_crash + 10, Duration::from_secs(60)).await;
        assert_eq!(cluster.height(0), at_crash, "a crashed validator finalized blocks");
        cluster.start(0).await;
        let target = cluster.heights().into_iter().max().unwrap_or(0) + 5;
        cluster.wait_for(&[0, 1, 2, 3], target, Duration::from_secs(120)).await;
        cluster.assert_consistent().await;
    });
    remove_ledgers("crash", 7);
}

#[test]
fn healed_partition_resumes_finality() {
    runner(11).start(|context| async move {
        let mut cluster = Cluster::new(context.clone(), "partition", 11, good_link()).await;
        cluster.wait_for(&[0, 1, 2, 3], 5, Duration::from_secs(60)).await;
        // 2 | 2: neither side has the quorum of 3.
        for a in [0, 1] {
            for b in [2, 3] {
                cluster.unlink(a, b).await;
                cluster.unlink(b, a).await;
            }
        }
        context.sleep(Duration::from_secs(3)).await;
        let stalled = cluster.heights();
        cluster.submit_transfers();
        context.sleep(Duration::from_secs(20)).await;
        assert_eq!(cluster.heights(), stalled, "a side without quorum finalized");
        for a in [0, 1] {
            for b in [2, 3] {
                cluster.link(a, b, good_link()).await;
                cluster.link(b, a, good_link()).await;
            }
        }
        let target = stalled.into_iter().max().unwrap_or(0) + 10;
        cluster.wait_for(&[0, 1, 2, 3], target, Duration::from_secs(120)).await;
        cluster.assert_consistent().await;
    });
    remove_ledgers("partition", 11);
}

#[test]
fn whole_network_killed_at_random_points_resumes_from_disk() {
    const TARGET: u64 = 30;
    let mut checkpoint: Option<deterministic::Checkpoint> = None;
    let mut floor = vec![0u64; VALIDATORS];
    let mut runs = 0;
    loop {
        let fresh = checkpoint.is_none();
        let previous = floor.clone();
        let run = move |context: Context| async move {
            let mut cluster =
                Cluster::open(context.clone(), "unclean", 3, good_link(), fresh).await;
            let resumed = cluster.heights();
            for (index, (now, before)) in resumed.iter().zip(&previous).enumerate() {
                assert!(
                    now >= before,
                    "validator {index} lost finalized blocks: {before} -> {now}"
                );
            }
            let stop_after = Duration::from_millis(context.clone().gen_range(300..1_500));
            let stop_at = context.current() + stop_after;
            while context.current() < stop_at && cluster.heights().iter().any(|&h| h < TARGET) {
                cluster.submit_transfers();
                context.sleep(Duration::from_millis(BLOCK_TIME_MS)).await;
            }
            cluster.assert_consistent().await;
            cluster.heights()
        };
        let (heights, next) = match checkpoint.take() {
            Some(previous) => Runner::from(previous),
            None => runner(3),
        }
        .start_and_recover(run);
        floor = heights;
        runs += 1;
        if floor.iter().all(|&height| height >= TARGET) {
            break;
        }
        assert!(runs < 100, "no progress after {runs} restarts: {floor:?}");
        checkpoint = Some(next);
    }
    assert!(runs > 1, "the network was never restarted");
    eprintln!("unclean: {runs} runs, heights {floor:?}");
    remove_ledgers("unclean", 3);
}

#[test]
fn isolated_minority_stalls_and_backfills_after_heal() {
    runner(13).start(|context| async move {
        let mut cluster = Cluster::new(context.clone(), "minority", 13, good_link()).await;
        cluster.wait_for(&[0, 1, 2, 3], 5, Duration::from_secs(60)).await;
        for other in 0..3 {
            cluster.unlink(3, other).await;
            cluster.unlink(other, 3).await;
        }
        let isolated_at = cluster.height(3);
        let majority_target = cluster.heights().into_iter().max().unwrap_or(0) + 10;
        cluster.wait_for(&[0, 1, 2], majority_target, Duration::from_secs(60)).await;
        assert!(cluster.height(3) <= isolated_at + 1, "the isolated validator kept finalizing");
        for other in 0..3 {
            cluster.link(3, other, good_link()).await;
            cluster.link(other, 3, good_link()).await;
        }
        let target = cluster.heights().into_iter().max().unwrap_or(0) + 5;
        cluster.wait_for(&[0, 1, 2, 3], target, Duration::from_secs(120)).await;
        cluster.assert_consistent().await;
    });
    remove_ledgers("minority", 13);
}

#[test]
fn a_peer_sending_garbage_on_every_channel_changes_nothing() {
    runner(17).start(|context| async move {
        let mut cluster = Cluster::new(context.clone(), "garbage", 17, good_link()).await;
        cluster.spawn_garbage_peer().await;
        cluster.wait_for(&[0, 1, 2, 3], 15, Duration::from_secs(60)).await;
        cluster.assert_consistent().await;
        assert!(cluster.finalized_transactions(0) > 0, "no transfer was finalized");
        let garbage = garbage_peer().public_key();
        let blocked = cluster.oracle.blocked().await.expect("oracle");
        let blockers = blocked.iter().filter(|(_, peer)| *peer == garbage).count();
        eprintln!("garbage: blocked by {blockers} of {VALIDATORS} validators");
    });
    remove_ledgers("garbage", 17);
}
