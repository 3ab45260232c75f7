use std::sync::Mutex;

use based_state::{GenesisConfig, MemoryStore, Params};
use based_types::{BlockHeader, Call, Encode as _, SecretKey, Transaction, coins};

use super::*;

/// A chain in memory: the state machine executes blocks as a proposer would, and blocks and
/// their outcomes are kept as a node's ledger keeps them. Submissions are checked for a
/// signature and kept as the mempool.
struct FakeNode {
    chain: Mutex<Chain>,
    submitted: Mutex<Vec<SignedTransaction>>,
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
        balances: vec![(user().public_key(), coins(10))],
        pepe_balances: vec![(user().public_key(), coins(3))],
        relayers: vec![user().public_key()],
        relayer_threshold: 1,
        params: Params::default(),
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
    FakeNode { chain: Mutex::new(chain), submitted: Mutex::new(Vec::new()) }
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
}

fn request(node: &FakeNode, body: &str) -> Value {
    handle_body(node, body.as_bytes()).expect("a response")
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
    assert!(handle_body(&node, br#"{"jsonrpc":"2.0","method":"based_getHead"}"#).is_none());
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
