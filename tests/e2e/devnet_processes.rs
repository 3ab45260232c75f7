//! End to end across processes: `based devnet` starts four `based node run` processes on
//! loopback; the test drives them only through JSON-RPC: heads advance on every node, a signed
//! transfer changes balances everywhere, bad input gets clear errors, SIGTERM stops the whole
//! network and a second `based devnet` resumes it from disk.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use based_rpc::client::{self, ClientError};
use based_rpc::{codes, decode_hex, encode_hex};
use based_types::{Call, Encode as _, SecretKey, Transaction, coins};
use serde_json::{Value, json};

const NODES: u16 = 4;
const TIMEOUT: Duration = Duration::from_secs(30);

/// A `based devnet` process, stopped with SIGTERM (then killed) when dropped.
struct Devnet(Child);

impl Devnet {
    fn start(dir: &Path, p2p_port: u16, rpc_port: u16) -> Devnet {
        let child = Command::new(env!("CARGO_BIN_EXE_based"))
            .env("RUST_LOG", "warn")
            .arg("devnet")
            .arg("--dir")
            .arg(dir)
            .args(["--block-time-ms", "200"])
            .args(["--p2p-port", &p2p_port.to_string(), "--rpc-port", &rpc_port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("start based devnet");
        Devnet(child)
    }

    fn terminate(&mut self) -> ExitStatus {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for devnet") {
                return status;
            }
            assert!(Instant::now() < deadline, "devnet did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let pid = self.0.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            std::thread::sleep(Duration::from_secs(2));
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A base port with `2 * NODES` free ports above it (p2p then RPC).
fn free_ports() -> (u16, u16) {
    let mut base = 20_000 + (std::process::id() % 2_000) as u16 * 16;
    loop {
        let free = (0..2 * NODES).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return (base, base + NODES);
        }
        base = if base > 60_000 { 20_000 } else { base + 2 * NODES };
    }
}

fn rpc_addresses(rpc_port: u16) -> Vec<SocketAddr> {
    (0..NODES).map(|i| SocketAddr::from(([127, 0, 0, 1], rpc_port + i))).collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sums the samples of `GET /metrics` whose series contains `needle`.
fn metric_sum(node: SocketAddr, needle: &str) -> f64 {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect(node).unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {node}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let samples = text.lines().filter(|line| !line.starts_with('#') && line.contains(needle));
    let mut sum = 0.0;
    for (series, value) in samples.filter_map(|line| line.rsplit_once(' ')) {
        let value: f64 = value.parse().unwrap();
        if value > 0.0 && needle.starts_with("messages_") {
            eprintln!("{node}: {series} {value}");
        }
        sum += value;
    }
    sum
}

fn height(node: SocketAddr) -> Option<u64> {
    client::call(node, "based_getHead", json!([])).ok()?["height"].as_u64()
}

fn account(node: SocketAddr, address: &str) -> Value {
    client::call(node, "based_getAccount", json!([address])).expect("based_getAccount")
}

fn amount(value: &Value) -> u64 {
    value.as_str().expect("amounts are strings").parse().expect("base units")
}

fn rpc_error(result: Result<Value, ClientError>) -> (i64, String) {
    match result {
        Err(ClientError::Rpc { code, message }) => (code, message),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

#[test]
fn a_devnet_finalizes_a_transfer_sent_over_rpc_and_resumes_after_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().join("devnet");
    let (p2p_port, rpc_port) = free_ports();
    let nodes = rpc_addresses(rpc_port);
    let mut devnet = Devnet::start(&dir, p2p_port, rpc_port);

    for &node in &nodes {
        wait_until("every node's head to pass height 2", || height(node).is_some_and(|h| h >= 2));
    }

    // The first dev account (its seed is in accounts.json) pays a fresh address.
    let accounts: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("accounts.json")).unwrap()).unwrap();
    let seed = decode_hex(accounts[0]["secret_seed"].as_str().unwrap()).unwrap();
    let sender = SecretKey::from_seed(seed.try_into().unwrap());
    let sender_address = sender.public_key().to_hex();
    let recipient = SecretKey::from_seed([9; 32]).public_key();
    let before = account(nodes[0], &sender_address);
    let nonce = before["nonce"].as_u64().unwrap();
    let (value, fee) = (coins(3) / 2, 1_000);
    let call = Call::Transfer { to: recipient, amount: value };
    let transfer =
        Transaction { chain_id: 1337, signer: sender.public_key(), nonce, fee, call }.sign(&sender);
    let hex = encode_hex(&transfer.to_bytes());
    let sent = client::call(nodes[1], "based_sendTransaction", json!([hex])).unwrap();
    assert_eq!(sent["hash"], transfer.hash().to_hex());

    for &node in &nodes {
        wait_until("the transfer to finalize on every node", || {
            amount(&account(node, &recipient.to_hex())["balance"]) == value
        });
        let after = account(node, &sender_address);
        assert_eq!(after["nonce"], nonce + 1);
        assert_eq!(amount(&after["balance"]), amount(&before["balance"]) - value - fee);
    }
    let receipt = |node| {
        let receipt = client::call(node, "based_getTransaction", json!([transfer.hash().to_hex()]));
        receipt.expect("based_getTransaction")
    };
    let included = receipt(nodes[3]);
    assert_eq!((&included["status"], &included["success"]), (&json!("finalized"), &json!(true)));
    let block = client::call(nodes[0], "based_getBlock", json!([included["height"]])).unwrap();
    assert_eq!(block["transactions"][included["index"].as_u64().unwrap() as usize], sent["hash"]);

    // The same through the CLI: dev account 1 imported into a wallet, `based transfer` waits
    // for finality, `based query` reads.
    let rpc = format!("http://{}", nodes[2]);
    let recipient_hex = recipient.to_hex();
    let home = dir.parent().unwrap().join("home");
    let based = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_based"));
        command.env("BASED_HOME", &home).env("BASED_PASSWORD", "devnet-test");
        command
    };
    let cli = |args: &[&str]| {
        let output = based().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "based {args:?} failed: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    };
    let devnet_dir = dir.to_str().unwrap();
    cli(&["wallet", "import", "--dev", "1", "--devnet-dir", devnet_dir, "--wallet", "dev1"]);
    let args = ["--wallet", "dev1", "--to", &recipient_hex, "--amount", "2", "--rpc", &rpc];
    let printed = cli(&[&["transfer"], &args[..]].concat());
    assert!(printed.contains("finalized at height"), "{printed}");
    let printed = cli(&["query", "account", &recipient_hex, "--rpc", &rpc]);
    let queried: Value = serde_json::from_str(&printed).unwrap();
    let value = value + coins(2);
    assert_eq!(amount(&queried["balance"]), value);
    let refused = based()
        .args(["transfer", "--wallet", "dev1", "--to", "12", "--amount", "1", "--rpc", &rpc])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("address must be 64 hex digits"));

    // Bad input: clear errors, and the nodes keep running.
    let (code, message) = rpc_error(client::call(nodes[2], "based_sendTransaction", json!([hex])));
    assert_eq!(code, codes::TRANSACTION_REJECTED);
    assert!(message.contains(&format!("nonce {nonce} is already used")), "{message}");
    let (code, message) = rpc_error(client::call(nodes[2], "based_sendTransaction", json!(["zz"])));
    assert_eq!(code, codes::INVALID_PARAMS);
    assert!(message.contains("invalid hex digit"), "{message}");
    let (code, message) =
        rpc_error(client::call(nodes[2], "based_sendTransaction", json!(["00ff"])));
    assert_eq!(code, codes::TRANSACTION_MALFORMED);
    assert!(message.contains("does not decode"), "{message}");
    let (code, _) = rpc_error(client::call(nodes[3], "based_getAccount", json!(["0x12"])));
    assert_eq!(code, codes::INVALID_PARAMS);
    let (code, _) = rpc_error(client::call(nodes[3], "eth_blockNumber", json!([])));
    assert_eq!(code, codes::METHOD_NOT_FOUND);
    let (status, body) = client::post(nodes[3], b"{\"jsonrpc\":").unwrap();
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], codes::PARSE_ERROR);
    let (status, _) = client::post(nodes[3], &vec![b'['; 300 * 1024]).unwrap();
    assert_eq!(status, 413);
    let brain = client::call(nodes[0], "based_getBrain", json!([47])).unwrap();
    assert_eq!(brain["owner"], accounts[0]["address"]);

    // Metrics: the height moves; p2p drops by rate limits or full buffers are counted.
    let finalized = metric_sum(nodes[0], "node_finalized_height ");
    assert!(finalized >= included["height"].as_u64().unwrap() as f64);
    assert_eq!(metric_sum(nodes[0], "node_transactions_succeeded_total"), 2.0);
    let total = |needle: &str| nodes.iter().map(|&node| metric_sum(node, needle)).sum::<f64>();
    let rate_limited = total("messages_rate_limited_total");
    // Outbound messages to peers not connected yet (backfill requests while the network
    // forms) or with a full send queue; inbound ones our full buffers dropped.
    let dropped = total("messages_dropped_total");
    eprintln!("p2p at 200 ms blocks, 4 nodes: {rate_limited} rate-limited, {dropped} dropped");
    assert_eq!(rate_limited, 0.0, "quotas are sized to the block rate");

    // SIGTERM stops the devnet and its nodes; a second start resumes from disk.
    let stopped_at = nodes.iter().filter_map(|&node| height(node)).max().unwrap();
    assert!(devnet.terminate().success());
    for &node in &nodes {
        assert!(TcpStream::connect(node).is_err(), "{node} still answers after the devnet stopped");
    }
    let _devnet = Devnet::start(&dir, p2p_port, rpc_port);
    for &node in &nodes {
        wait_until("every node to resume past its old head", || {
            height(node).is_some_and(|h| h > stopped_at)
        });
        assert_eq!(amount(&account(node, &recipient.to_hex())["balance"]), value);
        assert_eq!(receipt(node), included, "receipts survive the restart");
    }
}
