//! End to end through the `based` CLI against real node processes (`based devnet`, four
//! validators on loopback, 200 ms blocks, tempo 10): wallets are created and imported, a Brain
//! is acquired by burn and one by stake, the owner configures them, a miner and a validator
//! register on both, stake is added (and some removed), the validator sets weights, tempos pass,
//! and every balance is checked to the base unit against the rules of docs/protocol.md:
//! burn price 1,000 + 200 x n PEPE, the 100,000 PEPE stake lock, registration and memorize fees
//! paid to the owner, stake moved out of balances, transaction fees, and each tempo's payout
//! (block reward split among Brains by score with the bonus pool, 25% to a mature owner and
//! withheld for an immature one, the owner's miner/validator split, commission, stakers by
//! stake). Bad input (wrong password, damaged key file, malformed amounts and addresses,
//! insufficient funds) gets a clear error and changes nothing.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use based_rpc::client;
use serde_json::{Value, json};

const NODES: u16 = 4;
const TIMEOUT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery staple";
/// The devnet's tempo (blocks between two payouts of a Brain).
const TEMPO: u64 = 10;
/// 1 BASED = 1 PEPE = 10^9 base units.
const COIN: u64 = 1_000_000_000;
/// The minimum transaction fee, which the CLI pays by default: 1,000 units.
const FEE: u64 = 1_000;
const PPB: u64 = 1_000_000_000;

// docs/protocol.md, sections 5 and 7, with their default parameters.
const BURN_BASE_PRICE: u64 = 1_000 * COIN;
const BURN_PRICE_STEP: u64 = 200 * COIN;
const STAKE_LOCK: u64 = 100_000 * COIN;
const STAKE_MATURITY_BLOCKS: u64 = 777_600;
const DEFAULT_REGISTRATION_FEE: u64 = 100 * COIN;
const BLOCK_REWARD: u64 = 10 * COIN;
const BONUS_SHARE_PPB: u64 = 100_000_000;
const BONUS_TOP_PPB: u64 = 300_000_000;
const STAKE_CAP_PPB: u64 = 5_000_000;
const OWNER_SHARE_PPB: u64 = 250_000_000;
const DEFAULT_SPLIT_PPB: u64 = 500_000_000;
const DEFAULT_COMMISSION_PPB: u64 = 100_000_000;

/// `based devnet`, stopped with SIGTERM (then killed) when dropped.
struct Devnet(Child);

impl Drop for Devnet {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A base port with `2 * NODES` free ports above it (p2p then RPC).
fn free_ports() -> (u16, u16) {
    let mut base = 40_000 + (std::process::id() % 1_000) as u16 * 16;
    loop {
        let free = (0..2 * NODES).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return (base, base + NODES);
        }
        base = if base > 60_000 { 20_000 } else { base + 2 * NODES };
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn units(value: &Value) -> u64 {
    value.as_str().expect("amounts are strings").parse().expect("base units")
}

fn mul_ppb(amount: u64, ppb: u64) -> u64 {
    u64::try_from(u128::from(amount) * u128::from(ppb) / u128::from(PPB)).unwrap()
}

/// docs/protocol.md section 1: floor shares, then the units left one each to the largest
/// remainders, ties to the lowest index.
fn split_proportional(total: u64, weights: &[u128]) -> Vec<u64> {
    let sum: u128 = weights.iter().sum();
    assert!(sum > 0);
    let mut parts: Vec<u64> =
        weights.iter().map(|w| u64::try_from(u128::from(total) * w / sum).unwrap()).collect();
    let mut remainders: Vec<(u128, usize)> =
        weights.iter().enumerate().map(|(i, w)| (u128::from(total) * w % sum, i)).collect();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left = total - parts.iter().sum::<u64>();
    for &(_, index) in remainders.iter().take(usize::try_from(left).unwrap()) {
        parts[index] += 1;
    }
    parts
}

/// The CLI, with its own `BASED_HOME` and the wallets' password in `BASED_PASSWORD`.
struct Cli {
    home: PathBuf,
    rpc: String,
}

impl Cli {
    fn output(&self, args: &[&str], password: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_based"))
            .args(args)
            .env("BASED_HOME", &self.home)
            .env("BASED_PASSWORD", password)
            .env("BASED_RPC", &self.rpc)
            .env_remove("BASED_WALLET")
            .stdin(Stdio::null())
            .output()
            .expect("run based")
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.output(args, PASSWORD);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "based {args:?} failed: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its error output.
    fn fails(&self, args: &[&str], password: &str) -> String {
        let output = self.output(args, password);
        assert!(!output.status.success(), "based {args:?} should have failed");
        String::from_utf8(output.stderr).unwrap()
    }

    /// Sends a transaction with `--json` and waits for it to be final.
    fn tx(&self, args: &[&str]) -> Value {
        let printed = self.ok(&[args, &["--json"]].concat());
        let report: Value = serde_json::from_str(printed.trim()).expect("one JSON object");
        assert_eq!(report["status"], "finalized", "{report}");
        assert_eq!(report["success"], true, "{report}");
        report
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(self.ok(args).trim()).expect("JSON output")
    }
}

/// Reads through one node's RPC, so that finalized heights only grow.
struct Node(SocketAddr);

impl Node {
    fn call(&self, method: &str, params: Value) -> Value {
        client::call(self.0, method, params).unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    fn height(&self) -> u64 {
        self.call("based_getHead", json!([]))["height"].as_u64().unwrap()
    }

    fn account(&self, address: &str) -> Value {
        self.call("based_getAccount", json!([address]))
    }

    fn balance(&self, address: &str) -> u64 {
        units(&self.account(address)["balance"])
    }

    fn pepe(&self, address: &str) -> u64 {
        units(&self.account(address)["pepe"])
    }

    fn nonce(&self, address: &str) -> u64 {
        self.account(address)["nonce"].as_u64().unwrap()
    }

    fn brain(&self, id: u16) -> Value {
        self.call("based_getBrain", json!([id]))
    }
}

/// Expected BASED and PEPE of the accounts the test follows.
#[derive(Default)]
struct Ledger {
    based: BTreeMap<String, u64>,
    pepe: BTreeMap<String, u64>,
}

impl Ledger {
    fn based(&mut self, address: &str) -> &mut u64 {
        self.based.entry(address.to_string()).or_default()
    }

    fn pepe(&mut self, address: &str) -> &mut u64 {
        self.pepe.entry(address.to_string()).or_default()
    }

    fn check(&self, node: &Node, names: &BTreeMap<String, &str>) {
        for (address, expected) in &self.based {
            assert_eq!(node.balance(address), *expected, "BASED of {}", names[address]);
        }
        for (address, expected) in &self.pepe {
            assert_eq!(node.pepe(address), *expected, "PEPE of {}", names[address]);
        }
    }
}

fn wallet_address(cli: &Cli, wallet: &str) -> (String, String) {
    let shown = cli.json(&["wallet", "show", "-w", wallet, "--json"]);
    let cold = shown["address"].as_str().unwrap().to_string();
    let hot = shown["hotkeys"][0]["address"].as_str().unwrap_or_default().to_string();
    (cold, hot)
}

#[test]
fn brains_acquired_registered_staked_and_paid_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let devnet_dir = dir.path().join("devnet");
    let (p2p_port, rpc_port) = free_ports();
    let _devnet = Devnet(
        Command::new(env!("CARGO_BIN_EXE_based"))
            .env("RUST_LOG", "warn")
            .arg("devnet")
            .arg("--dir")
            .arg(&devnet_dir)
            .args(["--block-time-ms", "200", "--tempo", &TEMPO.to_string()])
            .args(["--p2p-port", &p2p_port.to_string(), "--rpc-port", &rpc_port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("start based devnet"),
    );
    let node = Node(SocketAddr::from(([127, 0, 0, 1], rpc_port)));
    wait_until("the devnet to finalize blocks", || {
        client::call(node.0, "based_getHead", json!([]))
            .is_ok_and(|head| head["height"].as_u64().is_some_and(|h| h >= 2))
    });
    let cli = Cli { home: dir.path().join("home"), rpc: format!("http://{}", node.0) };

    // Wallets: a funded dev account imported from the devnet, and four new ones.
    let devnet = devnet_dir.to_str().unwrap();
    cli.ok(&["wallet", "import", "--dev", "0", "--devnet-dir", devnet, "-w", "dev0"]);
    for wallet in ["owner", "val", "miner", "staker"] {
        cli.ok(&["wallet", "create", "-w", wallet]);
    }
    let (dev0, _) = wallet_address(&cli, "dev0");
    let (owner, _) = wallet_address(&cli, "owner");
    let (val, val_hot) = wallet_address(&cli, "val");
    let (miner, miner_hot) = wallet_address(&cli, "miner");
    let (staker, _) = wallet_address(&cli, "staker");
    let names: BTreeMap<String, &str> = [
        (&dev0, "dev0"),
        (&owner, "owner"),
        (&val, "val"),
        (&val_hot, "val's hot key"),
        (&miner, "miner"),
        (&miner_hot, "miner's hot key"),
        (&staker, "staker"),
    ]
    .into_iter()
    .map(|(address, name)| (address.clone(), name))
    .collect();
    let listed = cli.json(&["wallet", "list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 5, "{listed}");
    let error = cli.fails(&["wallet", "create", "-w", "owner"], PASSWORD);
    assert!(error.contains("already exists (pass --overwrite to replace it)"), "{error}");
    assert_eq!(wallet_address(&cli, "owner").0, owner, "a refused create changed the wallet");

    // The genesis funds dev accounts (accounts.json); everyone else starts empty.
    let accounts: Value =
        serde_json::from_str(&std::fs::read_to_string(devnet_dir.join("accounts.json")).unwrap())
            .unwrap();
    let mut ledger = Ledger::default();
    *ledger.based(&dev0) = units(&accounts[0]["balance"]);
    *ledger.pepe(&dev0) = units(&accounts[0]["pepe"]);
    for address in [&owner, &val, &val_hot, &miner, &miner_hot, &staker] {
        *ledger.based(address) = 0;
        *ledger.pepe(address) = 0;
    }
    ledger.check(&node, &names);

    // Funding.
    let owner_pepe = 110_000 * COIN;
    for (to, amount) in [(&owner, 1_000), (&val, 1_000), (&miner, 1_000), (&staker, 1_000)] {
        cli.tx(&["transfer", "-w", "dev0", "--to", to, "--amount", &amount.to_string()]);
        *ledger.based(&dev0) -= amount * COIN + FEE;
        *ledger.based(to) += amount * COIN;
    }
    for hot in [&val_hot, &miner_hot] {
        cli.tx(&["transfer", "-w", "dev0", "--to", hot, "--amount", "0.5"]);
        *ledger.based(&dev0) -= COIN / 2 + FEE;
        *ledger.based(hot) += COIN / 2;
    }
    cli.tx(&["pepe", "transfer", "-w", "dev0", "--to", &owner, "--amount", "110000"]);
    *ledger.based(&dev0) -= FEE;
    *ledger.pepe(&dev0) -= owner_pepe;
    *ledger.pepe(&owner) += owner_pepe;
    ledger.check(&node, &names);

    // Brains: the lowest free numbers after the reserved #0..#6 are 7, 8 and 9. Burn prices
    // grow by 200 PEPE per Brain burned; a stake locks 100,000 PEPE.
    cli.tx(&["brain", "acquire", "--burn", "-w", "owner"]);
    cli.tx(&["brain", "acquire", "--stake", "-w", "owner"]);
    cli.tx(&["brain", "acquire", "--burn", "-w", "owner"]);
    *ledger.based(&owner) -= 3 * FEE;
    *ledger.pepe(&owner) -= BURN_BASE_PRICE + STAKE_LOCK + (BURN_BASE_PRICE + BURN_PRICE_STEP);
    ledger.check(&node, &names);
    let (burned, staked, second) = (node.brain(7), node.brain(8), node.brain(9));
    assert_eq!(burned["owner"], owner.as_str());
    assert_eq!(
        burned["acquisition"],
        json!({"kind": "burn", "price": BURN_BASE_PRICE.to_string()})
    );
    assert_eq!(staked["acquisition"], json!({"kind": "stake", "locked": STAKE_LOCK.to_string()}));
    let acquired = staked["acquired_at"].as_u64().unwrap();
    assert_eq!(staked["matures_at"], acquired + STAKE_MATURITY_BLOCKS);
    let price = BURN_BASE_PRICE + BURN_PRICE_STEP;
    assert_eq!(second["acquisition"], json!({"kind": "burn", "price": price.to_string()}));

    // ERC-721 verbs: approve and clear, transfer a burned Brain; a staked one is refused
    // before anything is sent.
    cli.tx(&["brain", "approve", "9", "--to", &staker, "-w", "owner"]);
    assert_eq!(node.brain(9)["approved"], staker.as_str());
    cli.tx(&["brain", "approve", "9", "--none", "-w", "owner"]);
    assert_eq!(node.brain(9)["approved"], Value::Null);
    cli.tx(&["brain", "transfer", "9", "--to", &staker, "-w", "owner"]);
    assert_eq!(node.brain(9)["owner"], staker.as_str());
    *ledger.based(&owner) -= 3 * FEE;
    let error = cli.fails(&["brain", "transfer", "8", "--to", &staker, "-w", "owner"], PASSWORD);
    assert!(error.contains("acquired by stake and cannot be transferred"), "{error}");
    let error = cli.fails(&["brain", "set", "7", "name", "x", "-w", "staker"], PASSWORD);
    assert!(error.contains(&format!("brain 7 belongs to {owner}")), "{error}");

    // The owner's settings on Brain 7: 60% to miners, fees of 50 + 2 BASED.
    let split_ppb = 600_000_000;
    let (registration_fee, memorize_fee) = (50 * COIN, 2 * COIN);
    cli.tx(&["brain", "set", "7", "split", "--miners", "60%", "-w", "owner"]);
    cli.tx(&["brain", "set", "7", "registration-fee", "50", "-w", "owner"]);
    cli.tx(&["brain", "set", "7", "memorize-fee", "2", "-w", "owner"]);
    cli.tx(&["brain", "set", "7", "name", "Llama Lab", "-w", "owner"]);
    cli.tx(&["brain", "set", "7", "label", "llama-lab", "-w", "owner"]);
    *ledger.based(&owner) -= 5 * FEE;
    let settings = node.brain(7)["settings"].clone();
    assert_eq!(settings["miners_ppb"], split_ppb);
    assert_eq!(settings["registration_fee"], registration_fee.to_string());
    assert_eq!(settings["memorize_fee"], memorize_fee.to_string());
    assert_eq!(settings["name"], "Llama Lab");
    assert_eq!(settings["label"], "llama-lab");
    ledger.check(&node, &names);

    // Registration: the cold keys pay the Brain's fees to its owner.
    for brain in ["7", "8"] {
        cli.tx(&[
            "register",
            "-w",
            "val",
            "--brain",
            brain,
            "--role",
            "validator",
            "--hotkey",
            "default",
        ]);
        cli.tx(&[
            "register", "-w", "miner", "--brain", brain, "--role", "miner", "--hotkey", "default",
        ]);
    }
    let fees = (registration_fee + memorize_fee) + DEFAULT_REGISTRATION_FEE;
    *ledger.based(&val) -= fees + 2 * FEE;
    *ledger.based(&miner) -= fees + 2 * FEE;
    *ledger.based(&owner) += 2 * fees;
    ledger.check(&node, &names);

    // Stake: moved out of balances onto the validator and its Brain.
    let (val_stake, staker_stake) = (100 * COIN, 150 * COIN);
    cli.tx(&[
        "stake", "add", "-w", "val", "--brain", "7", "--hotkey", "default", "--amount", "100",
    ]);
    cli.tx(&[
        "stake", "add", "-w", "val", "--brain", "8", "--hotkey", "default", "--amount", "100",
    ]);
    let target = ["--brain", "7", "--hotkey-address", &val_hot];
    cli.tx(&[&["stake", "add", "-w", "staker"][..], &target, &["--amount", "200"]].concat());
    cli.tx(&[&["stake", "remove", "-w", "staker"][..], &target, &["--amount", "50"]].concat());
    *ledger.based(&val) -= 2 * val_stake + 2 * FEE;
    *ledger.based(&staker) -= staker_stake + 2 * FEE;
    ledger.check(&node, &names);
    let (stake_7, stake_8) = (val_stake + staker_stake, val_stake);
    assert_eq!(units(&node.brain(7)["stake"]), stake_7);
    assert_eq!(units(&node.brain(8)["stake"]), stake_8);
    let stakes = node.call("based_getStake", json!([7, val_hot]));
    let mut expected = vec![
        json!({"staker": val, "stake": val_stake.to_string()}),
        json!({"staker": staker, "stake": staker_stake.to_string()}),
    ];
    expected.sort_by_key(|entry| entry["staker"].as_str().unwrap().to_string());
    assert_eq!(stakes["stakers"], json!(expected), "{stakes}");

    // Compute payments: the staker funds an escrow and signs a receipt; the miner's hot key
    // redeems it and the owner's fee share (set to 15%) goes to the owner. Redeeming it again
    // fails in the state machine: the CLI reports its error, and the fee is paid.
    cli.tx(&["brain", "set", "7", "owner-fee-share", "15%", "-w", "owner"]);
    cli.tx(&["escrow", "fund", "-w", "staker", "--amount", "10"]);
    let receipt = cli.ok(&[
        "escrow",
        "receipt",
        "-w",
        "staker",
        "--brain",
        "7",
        "--miner",
        &miner_hot,
        "--prompt-units",
        "1000",
        "--completion-units",
        "200",
        "--amount",
        "2",
    ]);
    let redeem = ["escrow", "redeem", "-w", "miner", "--receipt", receipt.trim(), "--json"];
    cli.tx(&redeem[..6]);
    let owner_paid = mul_ppb(2 * COIN, 150_000_000);
    *ledger.based(&owner) += owner_paid - FEE;
    *ledger.based(&miner) += 2 * COIN - owner_paid;
    *ledger.based(&staker) -= 10 * COIN + FEE;
    *ledger.based(&miner_hot) -= FEE;
    let again = cli.output(&redeem, PASSWORD);
    assert!(!again.status.success());
    let report: Value = serde_json::from_slice(&again.stdout).expect("a JSON report");
    assert_eq!((&report["status"], &report["success"]), (&json!("finalized"), &json!(false)));
    let stderr = String::from_utf8_lossy(&again.stderr);
    let redeemed = format!("receipt was already redeemed up to {}", 2 * COIN);
    assert!(stderr.contains(&format!("failed (its fee was paid): {redeemed}")), "{stderr}");
    *ledger.based(&miner_hot) -= FEE;
    cli.tx(&["escrow", "request-release", "-w", "staker"]);
    *ledger.based(&staker) -= FEE;
    ledger.check(&node, &names);

    // Governance: Brain 7 holds more than 0.5% of all stake, so it is a GigaBrain; its owner
    // proposes and votes, and dev0 votes with (and locks) its PEPE.
    let proposed = cli.tx(&[
        "proposal", "submit", "-w", "owner", "--brain", "7", "--param", "tempo", "--value", "20",
    ]);
    assert_eq!(proposed["events"][0]["kind"], "proposal_created", "{proposed}");
    let id = proposed["events"][0]["id"].as_u64().unwrap().to_string();
    cli.tx(&["proposal", "vote", "-w", "owner", "--proposal", &id, "--brain", "7", "--approve"]);
    cli.tx(&["proposal", "vote", "-w", "dev0", "--proposal", &id, "--pepe", "--support"]);
    *ledger.based(&owner) -= 2 * FEE;
    *ledger.based(&dev0) -= FEE;
    ledger.check(&node, &names);
    assert_eq!(units(&node.account(&dev0)["pepe_locked"]), ledger.pepe[&dev0]);

    // The validator's hot key sets its commission on Brain 7 and its weights on both Brains,
    // paying the fees from its own balance.
    let commission_7 = 200_000_000;
    cli.tx(&["commission", "set", "-w", "val", "--brain", "7", "--percent", "20"]);
    cli.tx(&["weights", "set", "-w", "val", "--brain", "7", "--weights", "0:65535"]);
    cli.tx(&["weights", "set", "-w", "val", "--brain", "8", "--weights", "0:65535"]);
    *ledger.based(&val_hot) -= 3 * FEE;
    assert_eq!(node.balance(&val_hot), ledger.based[&val_hot]);

    // Bad input while the tempos pass: clear errors, and nothing changes.
    let dev0_nonce = node.nonce(&dev0);
    let send = ["transfer", "-w", "dev0", "--to", &staker, "--amount"];
    let error = cli.fails(&[&send[..], &["1"]].concat(), "wrong password");
    assert!(error.contains("wallets/dev0/coldkey: wrong password"), "{error}");
    let error = cli.fails(&[&send[..], &["1.2.3"]].concat(), PASSWORD);
    assert!(error.contains("--amount: amount \"1.2.3\" is not a decimal number"), "{error}");
    let error = cli.fails(&[&send[..], &["0.0000000001"]].concat(), PASSWORD);
    assert!(error.contains("has more than 9 decimals"), "{error}");
    let error = cli.fails(&[&send[..], &["100000000"]].concat(), PASSWORD);
    assert!(error.contains("insufficient balance"), "{error}");
    let error = cli.fails(&["transfer", "-w", "dev0", "--to", "0x12", "--amount", "1"], PASSWORD);
    assert!(
        error.contains("--to \"0x12\": invalid value: address must be 64 hex digits"),
        "{error}"
    );
    let error = cli.fails(&["brain", "acquire", "--stake", "-w", "staker"], PASSWORD);
    assert!(error.contains("insufficient PEPE"), "{error}");
    let error = cli
        .fails(&["weights", "set", "-w", "val", "--brain", "7", "--weights", "0:1,0:2"], PASSWORD);
    assert!(error.contains("uid 0 appears twice"), "{error}");
    // A damaged key file names its problem.
    let seed = cli.json(&["wallet", "show", "-w", "dev0", "--export-seed", "--json"]);
    let seed = seed["seed"].as_str().unwrap();
    cli.ok(&["wallet", "import", "-w", "broken", "--seed", seed]);
    let coldkey = cli.home.join("wallets/broken/coldkey");
    let text = std::fs::read_to_string(&coldkey).unwrap();
    std::fs::write(&coldkey, &text[..text.len() / 2]).unwrap();
    let error =
        cli.fails(&["transfer", "-w", "broken", "--to", &staker, "--amount", "1"], PASSWORD);
    assert!(error.contains("wallets/broken/coldkey: the key file is truncated"), "{error}");
    assert_eq!(node.nonce(&dev0), dev0_nonce);
    assert_eq!(node.balance(&dev0), ledger.based[&dev0]);
    let again = ["register", "-w", "val", "--brain", "7", "--role", "miner", "--hotkey", "default"];
    let error = cli.fails(&again, PASSWORD);
    assert!(error.contains("is already registered on brain 7 (as validator uid 0)"), "{error}");
    let error = cli.fails(
        &[&["stake", "remove", "-w", "staker"][..], &target, &["--amount", "151"]].concat(),
        PASSWORD,
    );
    assert!(
        error.contains("insufficient stake: ") && error.contains("has 150 BASED staked"),
        "{error}"
    );
    let on_miner = [
        "stake",
        "add",
        "-w",
        "staker",
        "--brain",
        "7",
        "--hotkey-address",
        &miner_hot,
        "--amount",
        "1",
    ];
    let error = cli.fails(&on_miner, PASSWORD);
    assert!(error.contains("is a miner on brain 7, not a validator"), "{error}");
    let error =
        cli.fails(&["weights", "set", "-w", "val", "--brain", "7", "--weights", "0:1"], PASSWORD);
    assert!(error.contains("they can be set again at block"), "{error}");
    assert_eq!(node.nonce(&staker), 4);
    assert_eq!(node.nonce(&val), 4);
    assert_eq!(node.nonce(&val_hot), 3);
    // The mnemonic gives back the same key.
    let mnemonic = cli.json(&["wallet", "show", "-w", "owner", "--export-mnemonic", "--json"]);
    let mnemonic = mnemonic["mnemonic"].as_str().unwrap();
    cli.ok(&["wallet", "import", "-w", "restored", "--mnemonic", mnemonic]);
    assert_eq!(wallet_address(&cli, "restored").0, owner);

    // Emission. Both Brains reach consensus at their first epoch after the weights; from then on
    // each block's reward is split the same way. Wait for that, then one more tempo so that
    // every payout counted below accrued entirely in that steady state.
    wait_until("both Brains to reach consensus", || {
        node.brain(7)["performance"].as_u64() > Some(0)
            && node.brain(8)["performance"].as_u64() > Some(0)
    });
    let steady = node.height() + TEMPO;
    wait_until("a tempo to pass", || node.height() >= steady);

    // docs/protocol.md section 7: score_b = min(stake_b, cap) x performance_b, the main pool
    // split by score, the bonus pool to the top 30% of scored Brains by performance (ties: the
    // lower number), by score.
    let performance = node.brain(7)["performance"].as_u64().unwrap();
    assert_eq!(
        node.brain(8)["performance"].as_u64().unwrap(),
        performance,
        "same shape, same performance"
    );
    let cap = mul_ppb(stake_7 + stake_8, STAKE_CAP_PPB);
    let scores = [
        u128::from(stake_7.min(cap)) * u128::from(performance),
        u128::from(stake_8.min(cap)) * u128::from(performance),
    ];
    let bonus = mul_ppb(BLOCK_REWARD, BONUS_SHARE_PPB);
    let main = split_proportional(BLOCK_REWARD - bonus, &scores);
    let top = (2 * BONUS_TOP_PPB).div_ceil(PPB);
    assert_eq!(top, 1, "the bonus goes to one of the two Brains: 7, the lower number");
    let per_block = [main[0] + bonus, main[1]];
    let accrued = [TEMPO * per_block[0], TEMPO * per_block[1]];

    // One tempo's payout of each Brain, by account.
    let mut payout: [BTreeMap<&str, u64>; 2] = Default::default();
    // Brain 7 (burned, so mature): 25% to the owner, 60% of the rest to the miner, the rest to
    // the validator: 20% commission to its cold key, the remainder to its stakers by stake.
    let owner_share = mul_ppb(accrued[0], OWNER_SHARE_PPB);
    let nodes = accrued[0] - owner_share;
    let miners = mul_ppb(nodes, split_ppb);
    let validators = nodes - miners;
    let commission = mul_ppb(validators, commission_7);
    let mut stakers = [(val.as_str(), val_stake), (staker.as_str(), staker_stake)];
    stakers.sort();
    let weights: Vec<u128> = stakers.iter().map(|(_, stake)| u128::from(*stake)).collect();
    let shares = split_proportional(validators - commission, &weights);
    *payout[0].entry(owner.as_str()).or_default() += owner_share;
    *payout[0].entry(miner.as_str()).or_default() += miners;
    *payout[0].entry(val.as_str()).or_default() += commission;
    for ((address, _), share) in stakers.iter().zip(shares) {
        *payout[0].entry(address).or_default() += share;
    }
    // Brain 8 (staked, immature): the owner's 25% is withheld; 50% of the rest to the miner,
    // the validator's pool to its cold key (commission, and the rest as its only staker).
    let nodes = accrued[1] - mul_ppb(accrued[1], OWNER_SHARE_PPB);
    let miners = mul_ppb(nodes, DEFAULT_SPLIT_PPB);
    let validators = nodes - miners;
    let commission = mul_ppb(validators, DEFAULT_COMMISSION_PPB);
    *payout[1].entry(miner.as_str()).or_default() += miners;
    *payout[1].entry(val.as_str()).or_default() += commission + (validators - commission);

    // Balances at two heights, three tempos apart: the difference is the payouts of the epochs
    // in between (Brain b's epoch ends block h when (h + b) mod tempo = 0).
    let followed = [&owner, &val, &miner, &staker];
    let before: Vec<(u64, u64)> = followed
        .iter()
        .map(|address| {
            let account = node.account(address);
            (account["height"].as_u64().unwrap(), units(&account["balance"]))
        })
        .collect();
    let later = before.iter().map(|(height, _)| *height).max().unwrap() + 3 * TEMPO;
    wait_until("three more tempos", || node.height() >= later);
    for (address, (from, balance)) in followed.iter().zip(&before) {
        let account = node.account(address);
        let to = account["height"].as_u64().unwrap();
        let epochs = |brain: u64| {
            (from + 1..=to).filter(|h| (h + brain).is_multiple_of(TEMPO)).count() as u64
        };
        let expected = balance
            + epochs(7) * payout[0].get(address.as_str()).copied().unwrap_or(0)
            + epochs(8) * payout[1].get(address.as_str()).copied().unwrap_or(0);
        assert!(epochs(7) >= 3 && epochs(8) >= 3);
        assert_eq!(
            units(&account["balance"]),
            expected,
            "BASED of {} between heights {from} and {to}",
            names[address.as_str()]
        );
    }
    // The owner earned on Brain 7 only (Brain 8 is immature); the hot keys nothing.
    assert!(payout[0][owner.as_str()] > 0 && !payout[1].contains_key(owner.as_str()));
    assert_eq!(node.balance(&val_hot), ledger.based[&val_hot]);
    assert_eq!(node.balance(&miner_hot), ledger.based[&miner_hot]);
    // PEPE did not move: the lock stays with Brain 8.
    assert_eq!(node.pepe(&owner), ledger.pepe[&owner]);
}
