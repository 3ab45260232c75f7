//! `based bench devnet`: time to finality and finalized transfers per second on a fresh devnet
//! of real `based node run` processes on loopback, driven only through JSON-RPC. Throughput is
//! counted from the finalized blocks the nodes stored, never from submissions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use based_node::block::MAX_BLOCK_BYTES;
use based_node::mempool::{MAX_PER_SENDER, MAX_TOTAL, MempoolError};
use based_node::{ChainBlock, Ledger};
use based_rpc::client;
use based_types::{Amount, Call, Encode as _, Hash, PublicKey, SecretKey, Transaction};
use commonware_codec::DecodeExt as _;
use rand_core::{RngCore as _, SeedableRng as _};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::devnet::{self, DevAccount, Layout, Nodes};

/// Distinct recipients of the flood.
const RECIPIENTS: usize = 64;
/// How long the chain may go without admitting or finalizing anything before the run fails.
const STALL: Duration = Duration::from_secs(60);
/// Interval of the finalized-head poll (one node) that timestamps finalization.
const HEAD_POLL: Duration = Duration::from_millis(20);
/// Pause of a submitting thread after the mempool refused part of its batch as full.
const BACKOFF: Duration = Duration::from_millis(20);
/// Interval of the account poll that detects one transfer's finality.
const ACCOUNT_POLL: Duration = Duration::from_millis(5);

#[derive(clap::Args)]
pub struct DevnetBenchArgs {
    /// Block times to measure, each on a fresh devnet (milliseconds, comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,250")]
    pub block_time_ms: Vec<u64>,
    /// Validators, each a separate process.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub nodes: u16,
    /// Transfers submitted one at a time for the time to finality.
    #[arg(long, default_value_t = 30)]
    pub latency_samples: usize,
    /// Pre-signed transfers flooded for the throughput.
    #[arg(long, default_value_t = 40_000)]
    pub transfers: usize,
    /// Accounts signing the flood (funded by the dev accounts first; the mempool holds at most
    /// 64 pending transactions per sender).
    #[arg(long, default_value_t = 200)]
    pub senders: usize,
    /// Client threads submitting JSON-RPC batches, spread over the nodes.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Transactions per JSON-RPC batch.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub batch: u16,
    /// Keep each devnet's directory (node logs, databases) instead of deleting it; it is always
    /// kept when the run fails.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub output: crate::bench::OutputArgs,
}

/// One pre-signed transfer.
struct Signed {
    hash: Hash,
    hex: String,
}

/// The balances and nonces every node must hold at the end, updated as transfers are signed.
struct Expected {
    chain_id: u32,
    fee: Amount,
    accounts: BTreeMap<PublicKey, (Amount, u64)>,
}

impl Expected {
    /// Signs `amount` from `key` to `to` at the key's next nonce and books it.
    fn transfer(&mut self, key: &SecretKey, to: PublicKey, amount: Amount) -> Result<Signed> {
        let signer = key.public_key();
        let (balance, nonce) = self.accounts.entry(signer).or_default();
        *balance = balance
            .checked_sub(amount + self.fee)
            .ok_or_else(|| anyhow!("{signer} cannot pay {amount} plus the fee"))?;
        let call = Call::Transfer { to, amount };
        let transaction =
            Transaction { chain_id: self.chain_id, signer, nonce: *nonce, fee: self.fee, call };
        *nonce += 1;
        self.accounts.entry(to).or_default().0 += amount;
        let signed = transaction.sign(key);
        Ok(Signed { hash: signed.hash(), hex: based_rpc::encode_hex(&signed.to_bytes()) })
    }
}

fn derived_key(kind: &str, index: usize) -> SecretKey {
    SecretKey::from_seed(sha2::Sha256::digest(format!("based-bench-{kind}-{index}")).into())
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A base port with `count` free ports above it, away from the devnet defaults.
fn free_ports(count: u16) -> Result<u16> {
    let start = 32_000 + (std::process::id() % 1_000) as u16 * 32;
    let mut base = start;
    loop {
        if (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
        base = if base > 64_000 { 20_000 } else { base + count };
        ensure!(base != start, "no {count} consecutive free ports on 127.0.0.1");
    }
}

/// `(utime + stime)` of a process in clock ticks (USER_HZ, 100 per second on Linux).
fn cpu_ticks(pid: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').context("malformed /proc stat")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields.get(i).and_then(|f| f.parse().ok()).context("malformed /proc stat")
    };
    // utime and stime are fields 14 and 15 of the line; field 3 (the state) follows the name.
    Ok(field(11)? + field(12)?)
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Posts a batch and returns each request's outcome in request order.
fn batch(node: SocketAddr, requests: &[Value]) -> Result<Vec<Result<Value, String>>> {
    let body = Value::Array(requests.to_vec()).to_string();
    let (status, response) = client::post(node, body.as_bytes())?;
    let response: Value = serde_json::from_slice(&response).with_context(|| {
        format!("{node} answered HTTP {status} with something that is not JSON")
    })?;
    let Value::Array(responses) = response else {
        bail!("{node} refused the batch: {response}");
    };
    let mut outcomes: Vec<Option<Result<Value, String>>> = vec![None; requests.len()];
    for mut response in responses {
        let id = response["id"].as_u64().and_then(|id| usize::try_from(id).ok());
        let slot = id.and_then(|id| outcomes.get_mut(id)).context("response with an unknown id")?;
        *slot = Some(match response.get_mut("error") {
            Some(error) => Err(error["message"].as_str().unwrap_or_default().to_string()),
            None => Ok(response["result"].take()),
        });
    }
    outcomes
        .into_iter()
        .enumerate()
        .map(|(id, outcome)| outcome.ok_or_else(|| anyhow!("{node} did not answer request {id}")))
        .collect()
}

/// `(nonce, balance, height)` of each address, read from `node`'s finalized state.
fn accounts(node: SocketAddr, addresses: &[PublicKey]) -> Result<Vec<(u64, Amount, u64)>> {
    let mut out = Vec::with_capacity(addresses.len());
    for chunk in addresses.chunks(based_rpc::MAX_BATCH) {
        let requests: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(id, address)| {
                json!({"jsonrpc": "2.0", "id": id, "method": "based_getAccount",
                       "params": [address.to_hex()]})
            })
            .collect();
        for outcome in batch(node, &requests)? {
            let account = outcome.map_err(|e| anyhow!("based_getAccount on {node}: {e}"))?;
            let number = |field: &str| account[field].as_u64();
            let balance = account["balance"].as_str().and_then(|b| b.parse().ok());
            let (Some(nonce), Some(balance), Some(height)) =
                (number("nonce"), balance, number("height"))
            else {
                bail!("{node} returned a malformed account: {account}");
            };
            out.push((nonce, balance, height));
        }
    }
    Ok(out)
}

fn head_height(node: SocketAddr) -> Result<u64> {
    let head = client::call(node, "based_getHead", json!([]))?;
    head["height"].as_u64().ok_or_else(|| anyhow!("{node} reported a head without height"))
}

/// Waits until every account in `targets` has reached its nonce on `node`.
fn wait_for_nonces(
    nodes: &mut Nodes,
    node: SocketAddr,
    targets: &BTreeMap<PublicKey, u64>,
) -> Result<()> {
    let addresses: Vec<PublicKey> = targets.keys().copied().collect();
    let mut done = 0;
    let mut progress = Instant::now();
    loop {
        let reached = accounts(node, &addresses)?
            .iter()
            .zip(&addresses)
            .filter(|((nonce, _, _), address)| *nonce >= targets[*address])
            .count();
        if reached == addresses.len() {
            return Ok(());
        }
        if reached > done {
            (done, progress) = (reached, Instant::now());
        }
        if let Some(reason) = nodes.exited() {
            bail!("{reason}");
        }
        ensure!(
            progress.elapsed() < STALL,
            "{node}: {} of {} accounts still short of their nonce after {STALL:?} without progress",
            addresses.len() - reached,
            addresses.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the submitting threads saw.
#[derive(Default)]
struct Submission {
    accepted: usize,
    /// Refusals because the mempool (total or per sender) was full; resubmitted later.
    refused_full: usize,
    last_accepted: Option<Instant>,
}

/// Submits every queue (one per sender, in nonce order) from `threads` threads in JSON-RPC
/// batches, thread t to node t mod n, resubmitting what a full mempool refused.
fn submit_all(
    nodes: &[SocketAddr],
    queues: Vec<VecDeque<String>>,
    threads: usize,
    batch_size: usize,
) -> Result<Submission> {
    let threads = threads.clamp(1, queues.len().max(1));
    let mut shares: Vec<Vec<VecDeque<String>>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, queue) in queues.into_iter().enumerate() {
        shares[index % threads].push(queue);
    }
    let full = MempoolError::Full.to_string();
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(thread, share)| {
                let node = nodes[thread % nodes.len()];
                let full = full.as_str();
                scope.spawn(move || submit_share(node, share, batch_size, full))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().map_err(|_| anyhow!("a submitting thread panicked"))?)
            .collect::<Result<Vec<_>>>()
    })?;
    let mut total = Submission::default();
    for outcome in outcomes {
        total.accepted += outcome.accepted;
        total.refused_full += outcome.refused_full;
        total.last_accepted = total.last_accepted.max(outcome.last_accepted);
    }
    Ok(total)
}

fn submit_share(
    node: SocketAddr,
    mut queues: Vec<VecDeque<String>>,
    batch_size: usize,
    full: &str,
) -> Result<Submission> {
    let mut outcome = Submission::default();
    let mut progress = Instant::now();
    loop {
        let active = queues.iter().filter(|queue| !queue.is_empty()).count();
        if active == 0 {
            return Ok(outcome);
        }
        let per_sender = batch_size.div_ceil(active);
        let mut picked: Vec<(usize, String)> = Vec::with_capacity(batch_size);
        for (index, queue) in queues.iter_mut().enumerate() {
            let take = per_sender.min(batch_size - picked.len()).min(queue.len());
            picked.extend(queue.drain(..take).map(|hex| (index, hex)));
        }
        let requests: Vec<Value> = picked
            .iter()
            .enumerate()
            .map(|(id, (_, hex))| {
                json!({"jsonrpc": "2.0", "id": id, "method": "based_sendTransaction",
                       "params": [hex]})
            })
            .collect();
        let results = batch(node, &requests)?;
        let mut refused: Vec<(usize, String)> = Vec::new();
        for ((index, hex), result) in picked.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    outcome.accepted += 1;
                    outcome.last_accepted = Some(Instant::now());
                    progress = Instant::now();
                }
                Err(message) if message.ends_with(full) => refused.push((index, hex)),
                Err(message) => bail!("{node} refused a transfer: {message}"),
            }
        }
        outcome.refused_full += refused.len();
        let backoff = !refused.is_empty();
        for (index, hex) in refused.into_iter().rev() {
            queues[index].push_front(hex);
        }
        if backoff {
            // The mempool is full until the next finalized block prunes it: retrying at once
            // would only spend the node's CPU on refusals.
            ensure!(
                progress.elapsed() < STALL,
                "{node} admitted nothing for {STALL:?}: its mempool stays full"
            );
            std::thread::sleep(BACKOFF);
        }
    }
}

/// Records when each height was first seen finalized on one node (wall clock, ms).
struct HeadPoll {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<u64, u64>>,
}

impl HeadPoll {
    fn start(node: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeMap::new();
            let mut last = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(height) = head_height(node) {
                    let now = wall_ms();
                    for h in last + 1..=height {
                        seen.insert(h, now);
                    }
                    last = last.max(height);
                }
                std::thread::sleep(HEAD_POLL);
            }
            seen
        });
        Self { stop, thread }
    }

    fn finish(self) -> Result<BTreeMap<u64, u64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow!("the head poll panicked"))
    }
}

/// A finalized block as node 0 stored it.
struct BlockInfo {
    height: u64,
    timestamp_ms: u64,
    transactions: Vec<Hash>,
    bytes: usize,
}

/// The first ledger's finalized blocks, after checking every ledger stored the same ones up to
/// the lowest height; returns that height too.
fn read_blocks(ledgers: &[PathBuf]) -> Result<(Vec<BlockInfo>, u64)> {
    let mut chains = Vec::with_capacity(ledgers.len());
    for path in ledgers {
        let ledger = Ledger::open(path).with_context(|| format!("open {}", path.display()))?;
        chains.push(ledger.snapshot()?.blocks()?);
    }
    let common = chains.iter().map(Vec::len).min().unwrap_or(0);
    for (index, chain) in chains.iter().enumerate().skip(1) {
        if let Some(height) = (0..common).find(|&h| chain[h] != chains[0][h]) {
            bail!("node-{index} finalized a different block at height {height} than node-0");
        }
    }
    let blocks = chains[0]
        .iter()
        .map(|(height, bytes)| {
            let block = ChainBlock::decode(bytes.as_slice())
                .map_err(|e| anyhow!("finalized block {height} does not decode: {e}"))?;
            Ok(BlockInfo {
                height: *height,
                timestamp_ms: block.timestamp_ms(),
                transactions: block.inner.transactions.iter().map(|tx| tx.hash()).collect(),
                bytes: bytes.len(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((blocks, common.saturating_sub(1) as u64))
}

fn percentile<T: Copy + Ord>(values: &[T], fraction: f64) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

fn ms_summary(values: &[u64]) -> String {
    match (percentile(values, 0.5), percentile(values, 0.95)) {
        (Some(median), Some(p95)) => {
            format!("median {median} ms, p95 {p95} ms ({} blocks)", values.len())
        }
        _ => "no blocks".into(),
    }
}

/// The measurements of one devnet.
pub struct DevnetRun {
    pub block_time_ms: u64,
    rows: Vec<(&'static str, String)>,
}

/// Creates a devnet in a temporary directory, measures it and stops it. The directory is kept
/// (and named in the error) if the run fails.
pub fn measure(args: &DevnetBenchArgs, block_time_ms: u64) -> Result<DevnetRun> {
    let dir = tempfile::Builder::new().prefix("based-bench-devnet-").tempdir()?;
    match measure_in(args, block_time_ms, dir.path()) {
        Ok(run) if args.keep => {
            eprintln!("[{block_time_ms} ms] devnet kept in {}", dir.keep().display());
            Ok(run)
        }
        Ok(run) => Ok(run),
        Err(error) => {
            let kept = dir.keep();
            Err(error.context(format!("node logs kept in {}", kept.display())))
        }
    }
}

fn measure_in(args: &DevnetBenchArgs, block_time_ms: u64, dir: &Path) -> Result<DevnetRun> {
    ensure!(
        args.senders > 0 && args.transfers >= args.senders,
        "need --transfers >= --senders > 0"
    );
    let node_count = usize::from(args.nodes);
    let base = free_ports(2 * args.nodes)?;
    let layout = Layout {
        nodes: args.nodes,
        block_time_ms,
        tempo: crate::devnet::DEFAULT_TEMPO,
        p2p_port: base,
        rpc_port: base + args.nodes,
    };
    devnet::create(dir, &layout)?;
    let genesis: crate::node::GenesisFile = crate::node::read_json(&dir.join("genesis.json"))?;
    let dev_accounts: Vec<DevAccount> = crate::node::read_json(&dir.join("accounts.json"))?;
    let mut expected = Expected {
        chain_id: genesis.chain_id,
        fee: based_state::Params::default().min_transaction_fee,
        accounts: BTreeMap::new(),
    };
    let dev_keys: Vec<SecretKey> = (0..dev_accounts.len()).map(devnet::dev_account).collect();
    for (key, account) in dev_keys.iter().zip(&dev_accounts) {
        let balance = account.balance.parse().context("accounts.json balance")?;
        expected.accounts.insert(key.public_key(), (balance, 0));
    }

    // Everything is signed before the nodes start, so signing costs no node CPU.
    eprintln!(
        "[{block_time_ms} ms] signing {} transfers from {} senders",
        args.transfers, args.senders
    );
    let senders: Vec<SecretKey> = (0..args.senders).map(|i| derived_key("sender", i)).collect();
    let recipients: Vec<PublicKey> =
        (0..RECIPIENTS).map(|i| derived_key("recipient", i).public_key()).collect();
    let amount_of = |i: usize| 1 + (i % 1_000) as Amount;
    let mut needs = vec![0 as Amount; args.senders];
    for i in 0..args.transfers {
        needs[i % args.senders] += amount_of(i) + expected.fee;
    }
    let mut funding: Vec<VecDeque<String>> = vec![VecDeque::new(); dev_keys.len()];
    let mut hashes: Vec<Hash> = Vec::new();
    for (index, (sender, need)) in senders.iter().zip(&needs).enumerate() {
        let payer = index % dev_keys.len();
        let signed = expected.transfer(&dev_keys[payer], sender.public_key(), *need)?;
        hashes.push(signed.hash);
        funding[payer].push_back(signed.hex);
    }
    let mut flood: Vec<VecDeque<String>> = vec![VecDeque::new(); args.senders];
    for i in 0..args.transfers {
        let signed = expected.transfer(
            &senders[i % args.senders],
            recipients[i % RECIPIENTS],
            amount_of(i),
        )?;
        hashes.push(signed.hash);
        flood[i % args.senders].push_back(signed.hex);
    }
    let flood_hashes: Vec<Hash> = hashes[args.senders..].to_vec();

    let (mut nodes, configs) = Nodes::start(dir)?;
    let rpc: Vec<SocketAddr> = configs.iter().map(|config| config.rpc_listen).collect();
    let ledgers: Vec<PathBuf> = configs
        .iter()
        .enumerate()
        .map(|(i, config)| devnet::node_dir(dir, i).join(&config.directory).join("ledger.redb"))
        .collect();
    eprintln!("[{block_time_ms} ms] {node_count} nodes started in {}", dir.display());
    let started = Instant::now();
    loop {
        let heights: Vec<u64> = rpc.iter().filter_map(|&node| head_height(node).ok()).collect();
        if heights.len() == node_count && heights.iter().all(|&h| h >= 2) {
            break;
        }
        if let Some(reason) = nodes.exited() {
            bail!("{reason}");
        }
        ensure!(started.elapsed() < STALL, "the devnet did not reach height 2 within {STALL:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let heads = HeadPoll::start(rpc[0]);

    eprintln!("[{block_time_ms} ms] funding the senders");
    submit_all(&rpc, funding, dev_keys.len(), usize::from(args.batch))?;
    let funded: BTreeMap<PublicKey, u64> = dev_keys
        .iter()
        .map(|key| (key.public_key(), expected.accounts[&key.public_key()].1))
        .collect();
    wait_for_nonces(&mut nodes, rpc[0], &funded)?;

    eprintln!("[{block_time_ms} ms] {} transfers one at a time", args.latency_samples);
    let latency_start = wall_ms();
    let latencies = latency_samples(
        &rpc,
        &mut expected,
        &dev_keys[0],
        &recipients,
        args.latency_samples,
        block_time_ms,
        &mut hashes,
    )?;
    let latency_end = wall_ms();

    eprintln!(
        "[{block_time_ms} ms] flooding {} transfers through {} threads",
        args.transfers, args.threads
    );
    let pids: Vec<String> = nodes.pids().iter().map(u32::to_string).collect();
    let cpu = |pids: &[String]| -> Result<u64> { pids.iter().map(|pid| cpu_ticks(pid)).sum() };
    let (nodes_cpu_before, client_cpu_before) = (cpu(&pids)?, cpu_ticks("self")?);
    let flood_start = Instant::now();
    let flood_start_ms = wall_ms();
    let submission = submit_all(&rpc, flood, args.threads, usize::from(args.batch))?;
    let flood_submitted = submission.last_accepted.unwrap_or(flood_start);
    let flood_end_ms =
        flood_start_ms + flood_submitted.duration_since(flood_start).as_millis() as u64;
    let submit_seconds = flood_submitted.duration_since(flood_start).as_secs_f64();
    let (nodes_cpu, client_cpu) =
        (cpu(&pids)? - nodes_cpu_before, cpu_ticks("self")? - client_cpu_before);
    eprintln!("[{block_time_ms} ms] all submitted; waiting for finality on every node");
    check_final_state(&mut nodes, &rpc, &expected)?;
    let finalized_at = heads.finish()?;
    nodes.stop();

    let (blocks, common_height) = read_blocks(&ledgers)?;
    check_exactly_once(&blocks, &hashes)?;

    let flood_set: std::collections::HashSet<Hash> = flood_hashes.iter().copied().collect();
    let flood_blocks: Vec<&BlockInfo> = blocks
        .iter()
        .filter(|b| b.transactions.iter().any(|hash| flood_set.contains(hash)))
        .collect();
    let last_flood_height = flood_blocks.last().map_or(0, |b| b.height);
    let flood_final_ms = finalized_at.get(&last_flood_height).copied().unwrap_or(flood_end_ms);
    let end_to_end_seconds = (flood_final_ms.saturating_sub(flood_start_ms)) as f64 / 1e3;

    // The steady window: blocks proposed after a warm-up of two block times (at least 1 s)
    // from the first submission until the last one; the client kept the mempool full.
    let warmup = (2 * block_time_ms).max(1_000);
    let window: Vec<&BlockInfo> = blocks
        .iter()
        .filter(|b| b.timestamp_ms >= flood_start_ms + warmup && b.timestamp_ms <= flood_end_ms)
        .collect();
    let mut rows: Vec<(&'static str, String)> = Vec::new();
    rows.push(("validators (separate processes on loopback)", node_count.to_string()));
    rows.push(("configured block time", format!("{block_time_ms} ms")));
    let latency_ms: Vec<u64> = latencies.iter().map(|d| d.as_millis() as u64).collect();
    rows.push((
        "time to finality: submit -> visible in finalized state over RPC",
        match (percentile(&latency_ms, 0.5), percentile(&latency_ms, 0.95)) {
            (Some(median), Some(p95)) => format!(
                "median {median} ms, p95 {p95} ms, max {} ms ({} transfers, one at a time)",
                latency_ms.iter().max().unwrap_or(&0),
                latency_ms.len()
            ),
            _ => "not measured (--latency-samples 0)".into(),
        },
    ));
    let proposal_delay = |from: u64, to: u64| -> Vec<u64> {
        blocks
            .iter()
            .filter(|b| b.height > 0 && b.timestamp_ms >= from && b.timestamp_ms <= to)
            .filter_map(|b| Some(finalized_at.get(&b.height)?.saturating_sub(b.timestamp_ms)))
            .collect()
    };
    rows.push((
        "proposal (block timestamp) -> finalized head over RPC, idle",
        ms_summary(&proposal_delay(latency_start, latency_end)),
    ));
    rows.push((
        "proposal -> finalized head over RPC, under the flood",
        ms_summary(&proposal_delay(flood_start_ms, flood_end_ms)),
    ));

    let bounds = if window.len() >= 3 {
        let first = window[0];
        let last = window[window.len() - 1];
        let counted: usize = window[1..].iter().map(|b| b.transactions.len()).sum();
        let span_ms = last.timestamp_ms - first.timestamp_ms;
        let rate = counted as f64 * 1e3 / span_ms.max(1) as f64;
        let intervals: Vec<u64> =
            window.windows(2).map(|pair| pair[1].timestamp_ms - pair[0].timestamp_ms).collect();
        let sizes: Vec<usize> = window.iter().map(|b| b.transactions.len()).collect();
        let mean_txs = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        let mean_bytes = window.iter().map(|b| b.bytes).sum::<usize>() as f64 / window.len() as f64;
        let max_bytes = window.iter().map(|b| b.bytes).max().unwrap_or(0);
        rows.push((
            "finalized transfers per second, steady window",
            format!(
                "**{rate:.0}** ({counted} transfers in {} blocks over {:.1} s)",
                window.len() - 1,
                span_ms as f64 / 1e3
            ),
        ));
        rows.push((
            "block size under the flood",
            format!(
                "mean {mean_txs:.0} transfers (max {}), mean {:.0} KiB (max {:.0} KiB)",
                sizes.iter().max().unwrap_or(&0),
                mean_bytes / 1024.0,
                max_bytes as f64 / 1024.0
            ),
        ));
        let idle: Vec<u64> = blocks
            .windows(2)
            .filter(|pair| {
                pair[0].timestamp_ms >= latency_start && pair[1].timestamp_ms <= latency_end
            })
            .map(|pair| pair[1].timestamp_ms - pair[0].timestamp_ms)
            .collect();
        let median_interval = percentile(&intervals, 0.5).unwrap_or(0);
        rows.push((
            "block interval under the flood (idle)",
            format!(
                "median {median_interval} ms, p95 {} ms (idle median {} ms)",
                percentile(&intervals, 0.95).unwrap_or(0),
                percentile(&idle, 0.5).map_or("n/a".into(), |ms| ms.to_string())
            ),
        ));
        let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
        let node_cores = nodes_cpu as f64 / 100.0 / submit_seconds.max(1e-3);
        bound(Bound {
            mean_txs,
            mean_bytes,
            block_time_ms,
            median_interval,
            node_cores,
            cores,
            refused_full: submission.refused_full,
        })
    } else {
        rows.push((
            "finalized transfers per second, steady window",
            format!(
                "not measured: the flood lasted {submit_seconds:.1} s, shorter than the \
                 {warmup} ms warm-up plus 3 blocks (raise --transfers)"
            ),
        ));
        "not measured".into()
    };
    rows.push((
        "flood: submission",
        format!(
            "{} transfers from {} senders, {} threads, batches of {}: accepted at {:.0}/s; {} \
             refusals by a full mempool (resubmitted)",
            args.transfers,
            args.senders,
            args.threads,
            args.batch,
            submission.accepted as f64 / submit_seconds.max(1e-3),
            submission.refused_full
        ),
    ));
    rows.push((
        "flood: end to end",
        format!(
            "last transfer final {end_to_end_seconds:.1} s after the first submission ({:.0} \
             transfers/s)",
            args.transfers as f64 / end_to_end_seconds.max(1e-3)
        ),
    ));
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    rows.push((
        "CPU while submitting (of the machine's cores)",
        format!(
            "nodes {:.2}, bench client {:.2} of {cores}",
            nodes_cpu as f64 / 100.0 / submit_seconds.max(1e-3),
            client_cpu as f64 / 100.0 / submit_seconds.max(1e-3)
        ),
    ));
    rows.push((
        "every transfer finalized exactly once, balances exact",
        format!(
            "yes: {} transactions ({} funding, {} latency, {} flood) each in one finalized \
             block; {} accounts' balances and nonces exact to the base unit on all {node_count} \
             nodes; blocks identical up to height {common_height}",
            hashes.len(),
            args.senders,
            args.latency_samples,
            args.transfers,
            expected.accounts.len()
        ),
    ));
    rows.push(("what bounds throughput", bounds));
    Ok(DevnetRun { block_time_ms, rows })
}

/// Submits `samples` transfers from `payer` one at a time, each at a random point of the block
/// interval (as users arrive), and times each until its nonce is visible in the finalized state
/// of the node it was sent to.
fn latency_samples(
    rpc: &[SocketAddr],
    expected: &mut Expected,
    payer: &SecretKey,
    recipients: &[PublicKey],
    samples: usize,
    block_time_ms: u64,
    hashes: &mut Vec<Hash>,
) -> Result<Vec<Duration>> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(block_time_ms);
    let mut latencies = Vec::with_capacity(samples);
    for sample in 0..samples {
        std::thread::sleep(Duration::from_millis(rng.next_u64() % block_time_ms.max(1)));
        let node = rpc[sample % rpc.len()];
        let signed = expected.transfer(payer, recipients[sample % recipients.len()], 1)?;
        hashes.push(signed.hash);
        let nonce = expected.accounts[&payer.public_key()].1;
        let submitted = Instant::now();
        client::call(node, "based_sendTransaction", json!([signed.hex]))
            .with_context(|| format!("latency transfer {sample} on {node}"))?;
        while accounts(node, &[payer.public_key()])?[0].0 < nonce {
            ensure!(
                submitted.elapsed() < STALL,
                "latency transfer {sample} not final after {STALL:?}"
            );
            std::thread::sleep(ACCOUNT_POLL);
        }
        latencies.push(submitted.elapsed());
    }
    Ok(latencies)
}

/// Waits until every node has finalized every booked transaction, then checks each booked
/// balance and nonce on each node, to the base unit.
fn check_final_state(nodes: &mut Nodes, rpc: &[SocketAddr], expected: &Expected) -> Result<()> {
    let all: BTreeMap<PublicKey, u64> =
        expected.accounts.iter().map(|(key, (_, nonce))| (*key, *nonce)).collect();
    for &node in rpc {
        wait_for_nonces(nodes, node, &all)?;
    }
    let addresses: Vec<PublicKey> = expected.accounts.keys().copied().collect();
    for &node in rpc {
        let held = accounts(node, &addresses)?;
        for (address, (nonce, balance, _)) in addresses.iter().zip(held) {
            let (want_balance, want_nonce) = expected.accounts[address];
            ensure!(
                (balance, nonce) == (want_balance, want_nonce),
                "{node}: account {address} holds {balance} units at nonce {nonce}, expected \
                 {want_balance} at nonce {want_nonce}"
            );
        }
    }
    Ok(())
}

/// Every submitted transaction is in exactly one finalized block, and nothing else is.
fn check_exactly_once(blocks: &[BlockInfo], hashes: &[Hash]) -> Result<()> {
    let mut inclusions: HashMap<Hash, usize> = HashMap::new();
    for hash in blocks.iter().flat_map(|block| &block.transactions) {
        *inclusions.entry(*hash).or_default() += 1;
    }
    if let Some(wrong) = hashes.iter().find(|hash| inclusions.get(hash) != Some(&1)) {
        bail!(
            "transfer {wrong} is in {} finalized blocks, expected exactly one",
            inclusions.get(wrong).copied().unwrap_or(0)
        );
    }
    let included = inclusions.values().sum::<usize>();
    ensure!(
        included == hashes.len(),
        "the finalized blocks hold {included} transactions, {} were submitted",
        hashes.len()
    );
    Ok(())
}

/// What the flood's steady window says about the limit.
struct Bound {
    mean_txs: f64,
    mean_bytes: f64,
    block_time_ms: u64,
    median_interval: u64,
    node_cores: f64,
    cores: usize,
    refused_full: usize,
}

fn bound(b: Bound) -> String {
    let cap = devnet::MAX_BLOCK_TRANSACTIONS as f64;
    let block_limit = (MAX_BLOCK_BYTES - 4 * 1024) as f64;
    let full = b.mean_txs >= 0.9 * cap;
    let slow = b.median_interval as f64 > 1.2 * b.block_time_ms as f64;
    if slow || b.node_cores >= 0.8 * b.cores as f64 {
        format!(
            "CPU: blocks of {:.0} transfers{} came every {} ms instead of {} ms; the nodes used \
             {:.2} of {} cores (every node checks each signature on admission and executes \
             every block; the client shares the machine)",
            b.mean_txs,
            if full { " (the cap)" } else { "" },
            b.median_interval,
            b.block_time_ms,
            b.node_cores,
            b.cores
        )
    } else if full {
        format!(
            "the block cap: {cap:.0} transfers per block every {} ms = {:.0}/s",
            b.median_interval,
            cap * 1e3 / b.median_interval.max(1) as f64
        )
    } else if b.mean_bytes >= 0.9 * block_limit {
        format!("the block size cap ({} KiB)", MAX_BLOCK_BYTES / 1024)
    } else if b.refused_full > 0 {
        format!(
            "the mempool ({MAX_TOTAL} transactions, {MAX_PER_SENDER} per sender): it refused \
             {} submissions while blocks were not full",
            b.refused_full
        )
    } else {
        "the bench client: the mempool never filled and blocks were not full".into()
    }
}

/// The table of all runs, one column per block time.
pub fn table(runs: &[DevnetRun], load_before: &str, machine: &str) -> Result<String> {
    let load_after = load_average();
    let mut table = String::new();
    writeln!(table, "## Devnet: time to finality and finalized transfers per second\n")?;
    writeln!(
        table,
        "`based bench devnet` on {machine} ({} threads; load average {load_before} before the \
         run, {load_after} after), one fresh devnet per block time. Node limits: {} transfers \
         or {} KiB per block, mempool {MAX_TOTAL} transactions ({MAX_PER_SENDER} per sender), \
         JSON-RPC batches of {} and bodies up to {} KiB. The bench client runs on the same \
         machine.\n",
        std::thread::available_parallelism().map_or(1, |p| p.get()),
        devnet::MAX_BLOCK_TRANSACTIONS,
        MAX_BLOCK_BYTES / 1024,
        based_rpc::MAX_BATCH,
        based_rpc::MAX_BODY_BYTES / 1024,
    )?;
    write!(table, "| measurement |")?;
    for run in runs {
        write!(table, " {} ms blocks |", run.block_time_ms)?;
    }
    writeln!(table, "\n|---|{}", "---|".repeat(runs.len()))?;
    let Some(first) = runs.first() else { return Ok(table) };
    for (row, (what, _)) in first.rows.iter().enumerate() {
        write!(table, "| {what} |")?;
        for run in runs {
            write!(table, " {} |", run.rows[row].1)?;
        }
        writeln!(table)?;
    }
    Ok(table)
}
