use std::sync::Mutex;

use based_state::{GenesisConfig, MemoryStore, Params};
use based_types::{Call, Encode as _, SecretKey, Transaction, coins};

use super::*;

/// A node whose finalized state is genesis; submissions are checked for a signature and kept.
struct FakeNode {
    store: MemoryStore,
    submitted: Mutex<Vec<SignedTransaction>>,
}

fn user() -> SecretKey {
    SecretKey::from_seed([1; 32])
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
    FakeNode { store: state.into_store(), submitted: Mutex::new(Vec::new()) }
}

impl NodeApi for FakeNode {
    type Store = MemoryStore;

    fn finalized(&self) -> Result<(Head, State<MemoryStore>), String> {
        let state = State::open(self.store.clone());
        let head = Head {
            chain_id: 7,
            height: 0,
            hash: Hash([1; 32]),
            state_root: state.state_root(),
            timestamp_ms: 5,
            proposer: user().public_key(),
        };
        Ok((head, state))
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
    assert_eq!(head["hash"], Hash([1; 32]).to_hex());
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
