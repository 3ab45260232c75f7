use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::Mutex;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use based_state::{GenesisConfig, MemoryStore, Params};
use based_types::{BlockHeader, Call, Encode as _, SecretKey, Transaction, coins};

use super::*;
use crate::metrics::RpcMetrics;

/// A chain in memory: the state machine executes blocks as a proposer would, and blocks and
/// their outcomes are kept as a node's ledger keeps them. Submissions are checked for a
/// signature and kept as the mempool.
struct FakeNode {
    chain: Mutex<Chain>,
    submitted: Mutex<Vec<SignedTransaction>>,
    info: ChainInfo,
    heights: watch::Sender<u64>,
}

#[derive(Clone)]
struct Chain {
    store: MemoryStore,
    blocks: Vec<Block>,
    outcomes: Vec<OutcomeRecord>,
}

/// A snapshot of the fake chain.
struct FakeView {
    head: Head,
    chain: Chain,
}

impl ChainView for FakeView {
    type Store = MemoryStore;

    fn head(&self) -> &Head {
        &self.head
    }

    fn state(&self) -> State<MemoryStore> {
        State::open(self.chain.store.clone())
    }

    fn block(&self, height: u64) -> Result<Option<Block>, String> {
        Ok(self.chain.blocks.get(height as usize).cloned())
    }

    fn height_of(&self, hash: &Hash) -> Result<Option<u64>, String> {
        Ok(self.chain.blocks.iter().position(|block| block.hash() == *hash).map(|h| h as u64))
    }

    fn outcome(&self, height: u64) -> Result<Option<OutcomeRecord>, String> {
        Ok(self.chain.outcomes.get(height as usize).cloned())
    }

    fn transaction(&self, hash: &Hash) -> Result<Option<(u64, u32)>, String> {
        for (height, outcome) in self.chain.outcomes.iter().enumerate() {
            if let Some(index) = outcome.receipts.iter().position(|r| r.tx_hash == *hash) {
                return Ok(Some((height as u64, index as u32)));
            }
        }
        Ok(None)
    }

    fn last_epoch(&self, brain: BrainId) -> Result<Option<u64>, String> {
        let paid = |event: &based_state::Event| matches!(event, based_state::Event::EpochPaid { brain: b, .. } if *b == brain);
        let outcomes = &self.chain.outcomes;
        Ok(outcomes.iter().rposition(|o| o.events.iter().any(paid)).map(|h| h as u64))
    }
}

fn user() -> SecretKey {
    SecretKey::from_seed([1; 32])
}

/// A funded account that registers nodes and stakes.
fn rich() -> SecretKey {
    SecretKey::from_seed([6; 32])
}

const TEMPO: u64 = 4;

fn header(
    height: u64,
    parent: Hash,
    transactions: &[SignedTransaction],
    root: Hash,
) -> BlockHeader {
    BlockHeader {
        chain_id: 7,
        height,
        parent,
        transactions_root: based_types::transactions_root(transactions),
        state_root: root,
        timestamp_ms: 1_000 * height + 5,
        proposer: user().public_key(),
    }
}

fn fake() -> FakeNode {
    let config = GenesisConfig {
        chain_id: 7,
        foundation: user().public_key(),
        balances: vec![(user().public_key(), coins(10)), (rich().public_key(), coins(10_000))],
        pepe_balances: vec![(user().public_key(), coins(3))],
        relayers: vec![user().public_key()],
        relayer_threshold: 1,
        params: Params { tempo: TEMPO, ..Params::default() },
    };
    let state = State::genesis(MemoryStore::new(), config).expect("genesis");
    let genesis = Block {
        header: header(0, Hash([0; 32]), &[], state.state_root()),
        transactions: Vec::new(),
    };
    let chain = Chain {
        store: state.into_store(),
        blocks: vec![genesis],
        outcomes: vec![Default::default()],
    };
    let info = ChainInfo {
        genesis_time_ms: 5,
        block_time_ms: 1_000,
        max_block_transactions: 100,
        validators: vec![Hash([4; 32]).to_hex()],
    };
    let heights = watch::Sender::new(0);
    FakeNode { chain: Mutex::new(chain), submitted: Mutex::new(Vec::new()), info, heights }
}

impl FakeNode {
    /// Finalizes a block of `transactions` (rejected ones are left out, as a proposer does)
    /// and drops them from the pending list.
    fn finalize(&self, transactions: Vec<SignedTransaction>) -> Block {
        let mut chain = self.chain.lock().unwrap();
        let mut state = State::open(chain.store.clone());
        let (included, outcome) = state.propose_block(transactions).expect("block executes");
        let parent = chain.blocks.last().expect("genesis").hash();
        let height = chain.blocks.len() as u64;
        let block = Block {
            header: header(height, parent, &included, outcome.state_root),
            transactions: included,
        };
        chain.store = state.into_store();
        chain.blocks.push(block.clone());
        chain.outcomes.push(OutcomeRecord::from(&outcome));
        let included: Vec<Hash> = block.transactions.iter().map(|tx| tx.hash()).collect();
        self.submitted.lock().unwrap().retain(|tx| !included.contains(&tx.hash()));
        self.heights.send_replace(height);
        block
    }
}

impl NodeApi for FakeNode {
    type View = FakeView;

    fn view(&self) -> Result<FakeView, String> {
        let chain = self.chain.lock().unwrap().clone();
        let block = chain.blocks.last().expect("genesis");
        let head = Head {
            chain_id: 7,
            height: block.header.height,
            hash: block.hash(),
            state_root: block.header.state_root,
            timestamp_ms: block.header.timestamp_ms,
            proposer: block.header.proposer,
        };
        Ok(FakeView { head, chain })
    }

    fn submit(&self, transaction: SignedTransaction) -> Result<(), String> {
        if !transaction.verify_signature() {
            return Err("transaction is not signed by its signer".into());
        }
        self.submitted.lock().unwrap().push(transaction);
        Ok(())
    }

    fn pending_transactions(&self) -> usize {
        self.submitted.lock().unwrap().len()
    }

    fn is_pending(&self, hash: &Hash) -> bool {
        self.submitted.lock().unwrap().iter().any(|tx| tx.hash() == *hash)
    }

    fn chain(&self) -> &ChainInfo {
        &self.info
    }

    fn watch_finalized(&self) -> watch::Receiver<u64> {
        self.heights.subscribe()
    }

    fn metrics(&self) -> String {
        let height = *self.heights.borrow();
        format!(
            "# HELP fake_height finalized height.\n# TYPE fake_height gauge\nfake_height {height}\n# EOF\n"
        )
    }
}

fn request(node: &FakeNode, body: &str) -> Value {
    handle_body(node, &RpcMetrics::default(), body.as_bytes()).expect("a response")
}

fn call(node: &FakeNode, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 9, "method": method, "params": params });
    let response = request(node, &body.to_string());
    assert_eq!(response["id"], 9);
    response
}

fn error_of(response: &Value) -> (i64, String) {
    let error = &response["error"];
    (error["code"].as_i64().expect("an error code"), error["message"].as_str().unwrap().into())
}

fn transfer(nonce: u64) -> SignedTransaction {
    let call = Call::Transfer { to: SecretKey::from_seed([2; 32]).public_key(), amount: 5 };
    Transaction { chain_id: 7, signer: user().public_key(), nonce, fee: 1_000, call }.sign(&user())
}

#[test]
fn head_account_and_brains_come_from_the_finalized_state() {
    let node = fake();
    let head = &call(&node, "based_getHead", json!([]))["result"];
    assert_eq!(head["height"], 0);
    assert_eq!(head["chain_id"], 7);
    assert_eq!(head["hash"], node.view().unwrap().chain.blocks[0].hash().to_hex());
    assert_eq!(head["pending_transactions"], 0);

    let address = user().public_key().to_hex();
    let account = &call(&node, "based_getAccount", json!([address]))["result"];
    assert_eq!(account["balance"], coins(10).to_string());
    assert_eq!(account["pepe"], coins(3).to_string());
    assert_eq!(account["nonce"], 0);
    let named = &call(&node, "based_getAccount", json!({ "address": address }))["result"];
    assert_eq!(named, account);
    let stranger = SecretKey::from_seed([3; 32]).public_key().to_hex();
    assert_eq!(call(&node, "based_getAccount", json!([stranger]))["result"]["balance"], "0");

    let brain = &call(&node, "based_getBrain", json!([47]))["result"];
    assert_eq!(brain["owner"], address);
    assert_eq!(brain["acquisition"]["kind"], "reserved");
    assert!(brain["settings"]["miners_ppb"].is_u64());
    assert_eq!(call(&node, "based_getBrain", json!([9]))["result"], Value::Null);
    let brains = call(&node, "based_listBrains", Value::Null);
    assert_eq!(brains["result"].as_array().unwrap().len(), 8);
    assert_eq!(account["brains"], json!([0, 1, 2, 3, 4, 5, 6, 47]));
    assert_eq!(account["escrow"]["balance"], "0");
}

#[test]
fn a_signed_transaction_is_submitted_and_its_hash_returned() {
    let node = fake();
    let signed = transfer(0);
    let hex = encode_hex(&signed.to_bytes());
    let response = call(&node, "based_sendTransaction", json!([format!("0x{hex}")]));
    assert_eq!(response["result"]["hash"], signed.hash().to_hex());
    assert_eq!(node.submitted.lock().unwrap().as_slice(), &[signed]);

    let mut forged = transfer(1);
    forged.transaction.fee += 1;
    let response = call(&node, "based_sendTransaction", json!([encode_hex(&forged.to_bytes())]));
    let (code, message) = error_of(&response);
    assert_eq!(code, codes::TRANSACTION_REJECTED);
    assert!(message.contains("not signed by its signer"), "{message}");
}

#[test]
fn bad_transactions_get_precise_errors() {
    let node = fake();
    let cases = [
        (json!(["abc"]), codes::INVALID_PARAMS, "odd number of digits"),
        (json!(["zz"]), codes::INVALID_PARAMS, "invalid hex digit"),
        (json!([12]), codes::INVALID_PARAMS, "hex string"),
        (json!(["00"]), codes::TRANSACTION_MALFORMED, "input ended early"),
        (json!(["00".repeat(MAX_TRANSACTION_BYTES + 1)]), codes::TRANSACTION_MALFORMED, "larger"),
        (json!([]), codes::INVALID_PARAMS, "expects parameters [transaction]"),
        (json!({ "tx": "00" }), codes::INVALID_PARAMS, "unknown parameter \"tx\""),
    ];
    for (params, expected_code, expected_message) in cases {
        let (code, message) = error_of(&call(&node, "based_sendTransaction", params.clone()));
        assert_eq!(code, expected_code, "{params}: {message}");
        assert!(message.contains(expected_message), "{params}: {message}");
    }
    let mut trailing = transfer(0).to_bytes();
    trailing.push(0);
    let response = call(&node, "based_sendTransaction", json!([encode_hex(&trailing)]));
    assert_eq!(
        error_of(&response),
        (
            codes::TRANSACTION_MALFORMED,
            "transaction does not decode: 1 trailing bytes after the value".into()
        )
    );
    assert!(node.submitted.lock().unwrap().is_empty());
}

#[test]
fn malformed_requests_get_json_rpc_errors() {
    let node = fake();
    let (code, message) = error_of(&request(&node, "{\"jsonrpc\": \"2.0\", "));
    assert_eq!(code, codes::PARSE_ERROR);
    assert!(message.starts_with("invalid JSON: EOF while parsing"), "{message}");

    let cases = [
        ("[]", codes::INVALID_REQUEST, "empty batch"),
        ("7", codes::INVALID_REQUEST, "must be a JSON object"),
        (r#"{"id":1,"method":"based_getHead"}"#, codes::INVALID_REQUEST, "\"jsonrpc\" must be"),
        (r#"{"jsonrpc":"2.0","id":1,"method":5}"#, codes::INVALID_REQUEST, "\"method\" must"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#, codes::INVALID_REQUEST, "params"),
        (r#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#, codes::INVALID_REQUEST, "\"id\" must"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"eth_call"}"#, codes::METHOD_NOT_FOUND, "eth_call"),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"based_getAccount","params":["0x12"]}"#,
            codes::INVALID_PARAMS,
            "64 hex digits",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"based_getBrain","params":[1024]}"#,
            codes::INVALID_PARAMS,
            "from 0 to 1023, got 1024",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"based_getBrain","params":[-1]}"#,
            codes::INVALID_PARAMS,
            "got -1",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"based_getHead","params":[1]}"#,
            codes::INVALID_PARAMS,
            "takes no parameters",
        ),
    ];
    for (body, expected_code, expected_message) in cases {
        let (code, message) = error_of(&request(&node, body));
        assert_eq!(code, expected_code, "{body}: {message}");
        assert!(message.contains(expected_message), "{body}: {message}");
    }
    let too_many = Value::Array(vec![json!({}); MAX_BATCH + 1]).to_string();
    assert!(error_of(&request(&node, &too_many)).1.contains("exceeds the limit of 100"));
}

#[test]
fn batches_answer_each_request_and_notifications_get_no_answer() {
    let node = fake();
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"based_getHead"},
        {"jsonrpc":"2.0","method":"based_getHead"},
        {"jsonrpc":"2.0","id":"b","method":"nope"}]"#;
    let responses = request(&node, body);
    let responses = responses.as_array().unwrap();
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0]["result"]["height"], 0);
    assert_eq!(responses[1]["id"], "b");
    assert_eq!(responses[1]["error"]["code"], codes::METHOD_NOT_FOUND);
    let notification = br#"{"jsonrpc":"2.0","method":"based_getHead"}"#;
    assert!(handle_body(&node, &RpcMetrics::default(), notification).is_none());
}

#[test]
fn the_http_server_answers_on_loopback_and_refuses_oversized_bodies() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = spawn(Arc::new(fake()), listener).unwrap();
    let head = client::call(address, "based_getHead", json!([])).unwrap();
    assert_eq!(head["chain_id"], 7);
    let error = client::call(address, "based_getBrain", json!([5000])).unwrap_err();
    assert!(
        matches!(&error, client::ClientError::Rpc { code: codes::INVALID_PARAMS, .. }),
        "{error}"
    );

    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let (status, body) = client::post(address, &huge).unwrap();
    assert_eq!(status, 413);
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["error"]["code"], codes::INVALID_REQUEST);
    assert!(response["error"]["message"].as_str().unwrap().contains("larger than 262144 bytes"));

    let (status, body) = client::post(address, b"not json").unwrap();
    assert_eq!(status, 200);
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["error"]["code"], codes::PARSE_ERROR);
}

fn register(nonce: u64, brain: BrainId) -> SignedTransaction {
    let call = Call::Register {
        brain,
        hotkey: SecretKey::from_seed([5; 32]).public_key(),
        role: based_types::Role::Validator,
        max_fee: coins(1_000),
    };
    Transaction { chain_id: 7, signer: user().public_key(), nonce, fee: 2_000, call }.sign(&user())
}

#[test]
fn transactions_go_from_pending_to_finalized_with_receipts_and_failures() {
    let node = fake();
    let ok = transfer(0);
    // Brain #9 does not exist: the call fails, the fee and nonce are taken.
    let failing = register(1, 9);
    for tx in [&ok, &failing] {
        call(&node, "based_sendTransaction", json!([encode_hex(&tx.to_bytes())]));
    }
    let pending = &call(&node, "based_getTransaction", json!([ok.hash().to_hex()]))["result"];
    assert_eq!(pending, &json!({ "hash": ok.hash().to_hex(), "status": "pending" }));
    let unknown = call(&node, "based_getTransaction", json!([Hash([7; 32]).to_hex()]));
    assert_eq!(unknown["result"], Value::Null);

    let block = node.finalize(vec![ok.clone(), failing.clone()]);
    let receipt = &call(&node, "based_getTransaction", json!([ok.hash().to_hex()]))["result"];
    assert_eq!(receipt["status"], "finalized");
    assert_eq!((receipt["height"].as_u64(), receipt["index"].as_u64()), (Some(1), Some(0)));
    assert_eq!(receipt["fee"], "1000");
    assert_eq!(receipt["success"], true);
    assert_eq!(receipt["error"], Value::Null);
    assert_eq!(receipt["events"][0]["kind"], "transferred");
    assert_eq!(receipt["events"][0]["amount"], "5");
    assert_eq!(receipt["events"][0]["from"], user().public_key().to_hex());

    let named = json!({ "hash": format!("0x{}", failing.hash().to_hex()) });
    let failed = &call(&node, "based_getTransaction", named)["result"];
    assert_eq!(failed["status"], "finalized");
    assert_eq!(failed["index"], 1);
    assert_eq!(failed["success"], false);
    assert_eq!(failed["error"], "Brain #9 does not exist");
    assert_eq!(failed["events"], json!([]));
    assert_eq!(failed["fee"], "2000");
    let account = &call(&node, "based_getAccount", json!([user().public_key().to_hex()]));
    assert_eq!(account["result"]["nonce"], 2, "the failed call used its nonce");

    let by_height = &call(&node, "based_getBlock", json!([1]))["result"];
    let by_hash = &call(&node, "based_getBlock", json!([block.hash().to_hex()]))["result"];
    assert_eq!(by_height, by_hash);
    assert_eq!(by_height["hash"], block.hash().to_hex());
    assert_eq!(by_height["parent"], node.view().unwrap().chain.blocks[0].hash().to_hex());
    assert_eq!(by_height["transaction_count"], 2);
    assert_eq!(by_height["transactions"], json!([ok.hash().to_hex(), failing.hash().to_hex()]));
    let full = &call(&node, "based_getBlock", json!({ "block": 1, "full": true }))["result"];
    let first = &full["transactions"][0];
    assert_eq!(first["hash"], ok.hash().to_hex());
    assert_eq!(first["call"]["kind"], "transfer");
    assert_eq!(first["encoded"], encode_hex(&ok.to_bytes()));
    assert_eq!(full["transactions"][1]["call"]["role"], "validator");
    assert_eq!(call(&node, "based_getBlock", json!([2]))["result"], Value::Null);
    let nowhere = Hash([3; 32]).to_hex();
    assert_eq!(call(&node, "based_getBlock", json!([nowhere]))["result"], Value::Null);

    let outcome = &call(&node, "based_getBlockOutcome", json!([1]))["result"];
    assert_eq!(outcome["receipts"][1]["error"], "Brain #9 does not exist");
    assert!(outcome["events"].is_array());
    assert_eq!(call(&node, "based_getBlockOutcome", json!([0]))["result"]["receipts"], json!([]));
}

#[test]
fn block_and_transaction_parameters_are_checked() {
    let node = fake();
    let cases = [
        ("based_getTransaction", json!(["12"]), "hash must be 64 hex digits, got \"12\""),
        ("based_getTransaction", json!([12]), "hash must be a string of 64 hex digits, got 12"),
        ("based_getTransaction", json!(["zz"]), "hash: invalid hex digit 'z' at position 0"),
        ("based_getBlock", json!([-1]), "block must be a height (non-negative integer)"),
        ("based_getBlock", json!([1, "yes"]), "full must be true or false, got \"yes\""),
        ("based_getBlock", json!([]), "expects parameters [block, full?], got 0 positional"),
        ("based_getBlock", json!([1, true, 3]), "got 3 positional parameters"),
        ("based_getBlock", json!({ "full": true }), "missing \"block\""),
        ("based_getBlock", json!({ "height": 1 }), "unknown parameter \"height\""),
    ];
    for (method, params, expected) in cases {
        let (code, message) = error_of(&call(&node, method, params.clone()));
        assert_eq!(code, codes::INVALID_PARAMS, "{method} {params}: {message}");
        assert!(message.contains(expected), "{method} {params}: {message}");
    }
}

fn signed(signer: &SecretKey, nonce: u64, call: Call) -> SignedTransaction {
    Transaction { chain_id: 7, signer: signer.public_key(), nonce, fee: 1_000, call }.sign(signer)
}

/// Brain #47 with a validator (registered and staked by `rich`) and a miner (its own cold
/// key), the validator's weights on the miner, and epochs run at the ends of blocks 1 and 5
/// ((height + 47) a multiple of the tempo 4): the second one scores the nodes.
fn populated() -> (FakeNode, PublicKey, PublicKey) {
    let node = fake();
    let (validator, miner) = (SecretKey::from_seed([5; 32]), SecretKey::from_seed([8; 32]));
    let (v, m) = (validator.public_key(), miner.public_key());
    let register = |hotkey, role| Call::Register { brain: 47, hotkey, role, max_fee: coins(1_000) };
    node.finalize(vec![
        signed(&rich(), 0, register(v, based_types::Role::Validator)),
        signed(&rich(), 1, Call::AddStake { brain: 47, hotkey: v, amount: coins(50) }),
        signed(&rich(), 2, Call::Transfer { to: v, amount: coins(1) }),
        signed(&rich(), 3, Call::Transfer { to: m, amount: coins(200) }),
    ]);
    node.finalize(vec![signed(&miner, 0, register(m, based_types::Role::Miner))]);
    node.finalize(vec![signed(
        &validator,
        0,
        Call::SetWeights { brain: 47, weights: vec![(0, 1)] },
    )]);
    for _ in 4..=5 {
        node.finalize(Vec::new());
    }
    (node, v, m)
}

#[test]
fn nodes_stake_weights_and_epoch_results_come_from_the_state() {
    let (node, v, m) = populated();
    let nodes = &call(&node, "based_listNodes", json!([47]))["result"];
    assert_eq!(nodes.as_array().unwrap().len(), 2);
    assert_eq!(nodes[0]["role"], "validator");
    assert_eq!(nodes[0]["hotkey"], v.to_hex());
    assert_eq!(nodes[0]["coldkey"], rich().public_key().to_hex());
    assert_eq!(nodes[0]["stake"], coins(50).to_string());
    assert_eq!(nodes[0]["registered_at"], 1);
    assert_eq!(nodes[1]["coldkey"], m.to_hex());
    assert_eq!(nodes[1]["role"], "miner");
    let miners = &call(&node, "based_listNodes", json!({ "brain": 47, "role": "miner" }));
    assert_eq!(miners["result"].as_array().unwrap().len(), 1);
    assert_eq!(call(&node, "based_listNodes", json!([9]))["result"], Value::Null);
    let found = &call(&node, "based_getNode", json!([47, m.to_hex()]))["result"];
    assert_eq!((&found["role"], &found["uid"]), (&json!("miner"), &json!(0)));

    let stake = &call(&node, "based_getStake", json!([47, v.to_hex()]))["result"];
    assert_eq!(stake["total"], coins(50).to_string());
    let staker = json!({ "staker": rich().public_key().to_hex(), "stake": coins(50).to_string() });
    assert_eq!(stake["stakers"], json!([staker]));
    let (code, message) = error_of(&call(&node, "based_getStake", json!([47, m.to_hex()])));
    assert_eq!(code, codes::INVALID_PARAMS);
    assert!(message.contains("is a miner on Brain #47; only validators hold stake"), "{message}");

    let weights = &call(&node, "based_getWeights", json!([47, 0]))["result"];
    assert_eq!(weights["weights"], json!([{ "uid": 0, "weight": 1 }]));
    assert_eq!(weights["weights_set_at"], 3);
    assert_eq!(call(&node, "based_getWeights", json!([47, 1]))["result"], Value::Null);

    let epoch = &call(&node, "based_getEpoch", json!([47]))["result"];
    assert_eq!(epoch["last_epoch_height"], 5);
    assert_eq!(epoch["next_epoch_height"], 9);
    assert_eq!(epoch["payout"]["kind"], "epoch_paid");
    assert_eq!(epoch["payout"]["brain"], 47);
    assert_eq!(epoch["validators"][0]["active"], true);
    assert!(epoch["validators"][0]["dividends"].as_u64().unwrap() > 0, "{epoch}");
    assert!(epoch["miners"][0]["incentive"].as_u64().unwrap() > 0, "{epoch}");
    assert_eq!(
        epoch["performance"],
        node.view().unwrap().state().brain(47).unwrap().unwrap().performance
    );
    assert_eq!(call(&node, "based_getEpoch", json!([9]))["result"], Value::Null);
}

#[test]
fn events_come_by_height_range_with_filters_and_bounds() {
    let (node, v, _) = populated();
    let all = &call(&node, "based_getEvents", json!([1, 5]))["result"];
    assert_eq!((&all["from"], &all["to"], &all["complete"]), (&json!(1), &json!(5), &json!(true)));
    let kinds: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap())
        .collect();
    let expected = ["node_registered", "stake_changed", "transferred", "transferred", "epoch_paid"];
    assert_eq!(&kinds[..5], expected, "Brain #3's epoch also ends block 1: {kinds:?}");
    assert_eq!(all["events"][4]["tx_index"], Value::Null, "the epoch ran at the block's end");
    assert_eq!(all["events"][0]["tx_index"], 0);
    assert_eq!(all["events"][0]["height"], 1);

    let filter = json!({ "kinds": ["epoch_paid"], "brain": 47 });
    let paid = &call(&node, "based_getEvents", json!([0, 5, filter]))["result"]["events"];
    assert_eq!(paid.as_array().unwrap().len(), 2, "{paid}");
    assert_eq!((&paid[1]["height"], &paid[1]["tx_index"]), (&json!(5), &Value::Null));
    let mine = json!({ "from": 1, "to": 1, "filter": { "account": v.to_hex() } });
    let mine = &call(&node, "based_getEvents", mine)["result"]["events"];
    let mine: Vec<&str> =
        mine.as_array().unwrap().iter().map(|e| e["event"]["kind"].as_str().unwrap()).collect();
    assert_eq!(mine, ["node_registered", "stake_changed", "transferred"]);
    let weights = json!([3, 3, { "kinds": ["weights_set"], "brain": 47 }]);
    assert_eq!(call(&node, "based_getEvents", weights)["result"]["events"][0]["tx_index"], 0);
    let ahead = &call(&node, "based_getEvents", json!([4, 20]))["result"];
    assert_eq!((&ahead["to"], &ahead["complete"]), (&json!(5), &json!(false)));

    let cases = [
        (json!([5, 4]), "from (5) is above to (4)"),
        (json!([0, 1000]), "span 1001 blocks, more than the limit of 1000"),
        (json!([0, 1, { "kinds": ["nope"] }]), "unknown event kind \"nope\"; kinds: transferred"),
        (json!([0, 1, { "kinds": "transferred" }]), "kinds must be an array"),
        (json!([0, 1, { "who": 1 }]), "unknown filter field \"who\""),
        (json!([0, 1, 7]), "filter must be an object"),
        (json!([-1, 1]), "from must be a non-negative integer, got -1"),
    ];
    for (params, expected) in cases {
        let (code, message) = error_of(&call(&node, "based_getEvents", params.clone()));
        assert_eq!(code, codes::INVALID_PARAMS, "{params}: {message}");
        assert!(message.contains(expected), "{params}: {message}");
    }
}

#[test]
fn emission_proposals_and_parameters() {
    let (node, _, _) = populated();
    let emission = &call(&node, "based_getEmission", json!([]))["result"];
    assert_eq!(emission["height"], 5);
    assert_eq!(emission["next_block_reward"], coins(10).to_string());
    assert_eq!(emission["next_halving_at"], based_state::params::BLOCKS_PER_YEAR + 1);
    assert_eq!(emission["brains"].as_array().unwrap().len(), 8);
    let brain = emission["brains"].as_array().unwrap().iter().find(|b| b["brain"] == 47).unwrap();
    assert_eq!(brain["stake"], coins(50).to_string());
    let share: u64 = brain["next_block_share"].as_str().unwrap().parse().unwrap();
    assert!(share > 0, "the epoch at block 5 gave Brain #47 a performance: {emission}");
    assert_eq!(emission["next_block_withheld"], "0");

    assert_eq!(call(&node, "based_listProposals", Value::Null)["result"], json!([]));
    assert_eq!(call(&node, "based_getProposal", json!([0]))["result"], Value::Null);

    let params = &call(&node, "based_getParams", json!([]))["result"];
    assert_eq!(params["chain_id"], 7);
    assert_eq!(params["block_time_ms"], 1_000);
    assert_eq!(params["params"]["tempo"], TEMPO);
    assert_eq!(params["params"]["min_transaction_fee"], "1000");
    assert_eq!(params["constants"]["brain_count"], 1024);
    assert_eq!(params["relayers"], json!([user().public_key().to_hex()]));
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(address: SocketAddr) -> Socket {
    let url = format!("ws://{address}/");
    tokio_tungstenite::connect_async(url).await.expect("WebSocket handshake").0
}

async fn send(socket: &mut Socket, text: String) {
    socket.send(WsMessage::text(text)).await.expect("sent");
}

async fn ask(socket: &mut Socket, id: u64, method: &str, params: Value) -> Value {
    let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
    send(socket, request.to_string()).await;
    let response = next(socket).await;
    assert_eq!(response["id"], id, "{response}");
    response
}

/// The next text message (JSON), or the close frame's code and reason as an error.
async fn receive(socket: &mut Socket) -> Result<Value, (CloseCode, String)> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the connection is open")
            .expect("a readable message");
        match message {
            WsMessage::Text(text) => return Ok(serde_json::from_str(text.as_str()).unwrap()),
            WsMessage::Close(frame) => {
                let frame = frame.expect("a close frame with a code");
                return Err((frame.code, frame.reason.as_str().to_string()));
            }
            _ => {}
        }
    }
}

async fn next(socket: &mut Socket) -> Value {
    receive(socket).await.expect("a JSON message")
}

#[tokio::test]
async fn websocket_subscriptions_deliver_finalized_blocks_and_events() {
    let node = Arc::new(fake());
    let address = spawn(node.clone(), TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let mut socket = connect(address).await;
    let heads = ask(&mut socket, 1, "based_subscribe", json!(["newHeads"])).await["result"].clone();
    let filter = json!({ "kinds": ["transferred"] });
    let events = ask(&mut socket, 2, "based_subscribe", json!(["events", filter])).await;
    let events = events["result"].clone();
    assert!(heads.is_string() && events.is_string() && heads != events);
    // Ordinary calls work over the socket too.
    assert_eq!(ask(&mut socket, 3, "based_getHead", json!([])).await["result"]["height"], 0);

    let block = node.finalize(vec![transfer(0)]);
    let mut notified = BTreeMap::new();
    for _ in 0..2 {
        let notification = next(&mut socket).await;
        assert_eq!(notification["jsonrpc"], "2.0");
        assert_eq!(notification["method"], "based_subscription");
        let params = &notification["params"];
        notified
            .insert(params["subscription"].as_str().unwrap().to_string(), params["result"].clone());
    }
    let head = &notified[heads.as_str().unwrap()];
    assert_eq!((&head["height"], &head["hash"]), (&json!(1), &json!(block.hash().to_hex())));
    assert_eq!(head["transactions"], json!([transfer(0).hash().to_hex()]));
    let batch = &notified[events.as_str().unwrap()];
    assert_eq!(batch["height"], 1);
    assert_eq!(batch["events"][0]["event"]["kind"], "transferred");
    assert_eq!(batch["events"][0]["tx_hash"], transfer(0).hash().to_hex());

    // Bad input gets errors; the connection stays usable.
    send(&mut socket, "{\"jsonrpc\": ".into()).await;
    let broken = next(&mut socket).await;
    assert_eq!(broken["error"]["code"], codes::PARSE_ERROR, "{broken}");
    let unknown = ask(&mut socket, 4, "based_subscribe", json!(["blocks"])).await;
    assert_eq!(
        error_of(&unknown),
        (codes::INVALID_PARAMS, "unknown subscription \"blocks\"; kinds: newHeads, events".into())
    );
    let filtered_heads = ask(&mut socket, 5, "based_subscribe", json!(["newHeads", {}])).await;
    assert_eq!(error_of(&filtered_heads).1, "newHeads takes no filter");
    let bad_filter = json!(["events", { "kinds": ["nope"] }]);
    let bad_filter = ask(&mut socket, 6, "based_subscribe", bad_filter).await;
    assert!(error_of(&bad_filter).1.starts_with("unknown event kind \"nope\""));

    for (id, subscription, removed) in [(7, &heads, true), (8, &heads, false), (9, &events, true)] {
        let answer = ask(&mut socket, id, "based_unsubscribe", json!([subscription])).await;
        assert_eq!(answer["result"], removed);
    }
    node.finalize(Vec::new());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Nothing was notified: the next message is this call's answer.
    assert_eq!(ask(&mut socket, 10, "based_getHead", json!([])).await["result"]["height"], 2);

    for id in 0..ws::MAX_SUBSCRIPTIONS as u64 {
        ask(&mut socket, 20 + id, "based_subscribe", json!(["newHeads"])).await["result"]
            .as_str()
            .expect("a subscription id");
    }
    let over = ask(&mut socket, 99, "based_subscribe", json!(["newHeads"])).await;
    let (code, message) = error_of(&over);
    assert_eq!(code, codes::SUBSCRIPTION_LIMIT);
    assert!(message.contains("already has 16 subscriptions"), "{message}");

    // Subscriptions need a socket.
    let error = client::call(address, "based_subscribe", json!(["newHeads"])).unwrap_err();
    assert!(error.to_string().contains("needs a WebSocket connection"), "{error}");

    // An oversized message closes this connection with code 1009; the server goes on.
    send(&mut socket, format!("\"{}\"", "x".repeat(MAX_BODY_BYTES))).await;
    let (code, reason) = receive(&mut socket).await.expect_err("a close frame");
    assert_eq!(code, CloseCode::Size);
    assert_eq!(reason, "message larger than 262144 bytes");
    let mut again = connect(address).await;
    assert_eq!(ask(&mut again, 1, "based_getHead", json!([])).await["result"]["height"], 2);
}

/// `GET path` over plain HTTP/1.1: the status and the body.
fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
}

/// Checks the text exposition line by line; returns the samples by series.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let is_name = |name: &str| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (kind, name) = (words.next().unwrap(), words.next().unwrap_or(""));
            assert!(
                matches!(kind, "HELP" | "TYPE" | "UNIT") && is_name(name),
                "bad comment {line:?}"
            );
            continue;
        }
        let (series, value) =
            line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(is_name(name), "bad metric name in {line:?}");
        if let Some(labels) = series.strip_prefix(name).filter(|labels| !labels.is_empty()) {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
            let inner = inner.unwrap_or_else(|| panic!("bad labels in {line:?}"));
            for pair in inner.split(',') {
                let (key, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
                assert!(
                    is_name(key) && quoted.starts_with('"') && quoted.ends_with('"'),
                    "{line:?}"
                );
            }
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

#[test]
fn metrics_parse_and_follow_the_chain_and_the_requests() {
    let node = Arc::new(fake());
    let address = spawn(node.clone(), TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    client::call(address, "based_getHead", json!([])).unwrap();
    client::call(address, "based_getBlock", json!(["nope"])).unwrap_err();
    client::call(address, "eth_chainId", json!([])).unwrap_err();
    let (status, text) = get(address, "/metrics");
    assert_eq!(status, 200);
    let before = parse_metrics(&text);
    assert_eq!(before["fake_height"], 0.0);
    assert_eq!(before["based_rpc_requests_total{method=\"based_getHead\"}"], 1.0);
    assert_eq!(before["based_rpc_errors_total{method=\"based_getHead\"}"], 0.0);
    assert_eq!(before["based_rpc_errors_total{method=\"based_getBlock\"}"], 1.0);
    assert_eq!(before["based_rpc_requests_total{method=\"unknown\"}"], 1.0);
    assert_eq!(before["based_rpc_websocket_clients"], 0.0);

    node.finalize(Vec::new());
    node.finalize(Vec::new());
    let after = parse_metrics(&get(address, "/metrics").1);
    assert_eq!(after["fake_height"], 2.0);
    assert_eq!(get(address, "/health"), (200, "ok 2\n".into()));
}
