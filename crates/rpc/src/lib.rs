//! JSON-RPC 2.0 over HTTP for the BasedAI node (docs/rpc.md).
//!
//! The server knows the node only through [`NodeApi`]: finalized state and head from one
//! consistent snapshot, and mempool submission. It holds no commonware types, so it is tested
//! here against an in-memory state.

pub mod client;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use based_state::records::{Account, Acquisition, Brain};
use based_state::{State, Store};
use based_types::{Amount, BrainId, Hash, PublicKey, SignedTransaction};
use serde_json::{Map, Value, json};

/// Largest accepted HTTP request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most requests in one batch.
pub const MAX_BATCH: usize = 100;
/// Largest encoded transaction accepted by `based_sendTransaction` (the mempool's limit).
pub const MAX_TRANSACTION_BYTES: usize = 64 * 1024;
/// Brain ids run from 0 to this bound (exclusive).
pub const BRAIN_COUNT: u16 = based_state::params::BRAIN_COUNT;

/// JSON-RPC error codes: the standard ones and this API's application codes.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The transaction bytes do not decode as a canonical signed transaction.
    pub const TRANSACTION_MALFORMED: i64 = -32010;
    /// The node refused the transaction (signature, chain id, nonce, fee, balance, full pool).
    pub const TRANSACTION_REJECTED: i64 = -32011;
}

/// The last finalized block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub chain_id: u32,
    pub height: u64,
    /// The based-types block hash (hash of the header).
    pub hash: Hash,
    pub state_root: Hash,
    pub timestamp_ms: u64,
    pub proposer: PublicKey,
}

/// What the RPC server needs from a node.
pub trait NodeApi: Send + Sync + 'static {
    type Store: Store;

    /// The finalized head and the state after it, read from one snapshot.
    fn finalized(&self) -> Result<(Head, State<Self::Store>), String>;

    /// Admits a transaction to the mempool; the error says why it was refused.
    fn submit(&self, transaction: SignedTransaction) -> Result<(), String>;

    fn pending_transactions(&self) -> usize;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMS, message)
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(codes::INTERNAL_ERROR, format!("internal error: {message}"))
    }
}

/// Serves JSON-RPC on `listener` from a thread of its own (with a one-thread tokio runtime),
/// until the process exits. Returns the bound address.
pub fn spawn<A: NodeApi>(api: Arc<A>, listener: TcpListener) -> std::io::Result<SocketAddr> {
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    std::thread::Builder::new().name("rpc".into()).spawn(move || {
        runtime.block_on(async move {
            let result = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => axum::serve(listener, router(api)).await,
                Err(error) => Err(error),
            };
            if let Err(error) = result {
                tracing::error!(%error, "rpc server stopped");
            }
        });
    })?;
    Ok(address)
}

/// `POST /` for JSON-RPC, `GET /health` for liveness probes.
pub fn router<A: NodeApi>(api: Arc<A>) -> Router {
    let rpc_api = api.clone();
    Router::new()
        .route("/", post(move |body: Body| handle_http(rpc_api.clone(), body)))
        .route("/health", get(move || async move { health(&*api) }))
}

fn health<A: NodeApi>(api: &A) -> Response {
    match api.finalized() {
        Ok((head, _)) => format!("ok {}\n", head.height).into_response(),
        Err(error) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {error}\n")).into_response()
        }
    }
}

async fn handle_http<A: NodeApi>(api: Arc<A>, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let message =
                format!("request body is unreadable or larger than {MAX_BODY_BYTES} bytes");
            let error =
                error_response(Value::Null, &RpcError::new(codes::INVALID_REQUEST, message));
            return json_response(StatusCode::PAYLOAD_TOO_LARGE, &error);
        }
    };
    match handle_body(&*api, &bytes) {
        Some(response) => json_response(StatusCode::OK, &response),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(id: Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": error.code, "message": error.message } })
}

/// Answers one HTTP body: a request or a batch. `None` when only notifications were sent.
pub fn handle_body<A: NodeApi>(api: &A, body: &[u8]) -> Option<Value> {
    let request: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => {
            let error = RpcError::new(codes::PARSE_ERROR, format!("invalid JSON: {error}"));
            return Some(error_response(Value::Null, &error));
        }
    };
    match request {
        Value::Array(requests) => {
            let refuse = |message: String| {
                Some(error_response(Value::Null, &RpcError::new(codes::INVALID_REQUEST, message)))
            };
            if requests.is_empty() {
                return refuse("empty batch".into());
            }
            if requests.len() > MAX_BATCH {
                return refuse(format!(
                    "batch of {} requests exceeds the limit of {MAX_BATCH}",
                    requests.len()
                ));
            }
            let responses: Vec<Value> =
                requests.into_iter().filter_map(|request| handle_request(api, request)).collect();
            (!responses.is_empty()).then_some(Value::Array(responses))
        }
        request => handle_request(api, request),
    }
}

/// One request object; `None` for a notification (no `id`).
fn handle_request<A: NodeApi>(api: &A, request: Value) -> Option<Value> {
    let invalid = |id: Value, message: &str| {
        Some(error_response(id, &RpcError::new(codes::INVALID_REQUEST, message)))
    };
    let Value::Object(mut request) = request else {
        return invalid(Value::Null, "a request must be a JSON object");
    };
    let id = request.remove("id");
    if let Some(id) = &id
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return invalid(Value::Null, "\"id\" must be a string, a number or null");
    }
    let reply_id = id.clone().unwrap_or(Value::Null);
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(reply_id, "\"jsonrpc\" must be \"2.0\"");
    }
    let Some(Value::String(method)) = request.remove("method") else {
        return invalid(reply_id, "\"method\" must be a string");
    };
    // `"params": null` is treated as omitted.
    let params = request.remove("params").filter(|params| !params.is_null());
    if let Some(params) = &params
        && !(params.is_array() || params.is_object())
    {
        return invalid(reply_id, "\"params\" must be an array or an object");
    }
    let outcome = dispatch(api, &method, Params(params.as_ref()));
    let id = id?;
    Some(match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(error) => error_response(id, &error),
    })
}

/// Positional (`[..]`) or named (`{..}`) parameters.
struct Params<'a>(Option<&'a Value>);

impl<'a> Params<'a> {
    /// Checks that exactly the parameters `names` are given (all of them are required).
    fn expect(&self, method: &str, names: &[&str]) -> Result<Vec<&'a Value>, RpcError> {
        let usage = || {
            if names.is_empty() {
                format!("{method} takes no parameters")
            } else {
                format!("{method} expects parameters [{}]", names.join(", "))
            }
        };
        match self.0 {
            None if names.is_empty() => Ok(Vec::new()),
            None => Err(RpcError::invalid_params(usage())),
            Some(Value::Array(values)) => {
                if values.len() != names.len() {
                    return Err(RpcError::invalid_params(format!(
                        "{}, got {} positional parameters",
                        usage(),
                        values.len()
                    )));
                }
                Ok(values.iter().collect())
            }
            Some(Value::Object(map)) => {
                if let Some(unknown) = map.keys().find(|key| !names.contains(&key.as_str())) {
                    return Err(RpcError::invalid_params(format!(
                        "{}, got unknown parameter \"{unknown}\"",
                        usage()
                    )));
                }
                names
                    .iter()
                    .map(|name| {
                        map.get(*name).ok_or_else(|| {
                            RpcError::invalid_params(format!("{}, missing \"{name}\"", usage()))
                        })
                    })
                    .collect()
            }
            Some(_) => Err(RpcError::invalid_params(usage())),
        }
    }
}

fn dispatch<A: NodeApi>(api: &A, method: &str, params: Params<'_>) -> Result<Value, RpcError> {
    match method {
        "based_getHead" => {
            params.expect(method, &[])?;
            let (head, _) = api.finalized().map_err(RpcError::internal)?;
            let mut value = head_json(&head);
            value["pending_transactions"] = json!(api.pending_transactions());
            Ok(value)
        }
        "based_getAccount" => {
            let values = params.expect(method, &["address"])?;
            let address = parse_address(values[0])?;
            let (head, state) = api.finalized().map_err(RpcError::internal)?;
            let account = state.account(&address).map_err(RpcError::internal)?;
            Ok(account_json(&address, &account, head.height))
        }
        "based_getBrain" => {
            let values = params.expect(method, &["id"])?;
            let id = parse_brain_id(values[0])?;
            let (_, state) = api.finalized().map_err(RpcError::internal)?;
            let brain = state.brain(id).map_err(RpcError::internal)?;
            Ok(brain.map_or(Value::Null, |brain| brain_json(id, &brain)))
        }
        "based_listBrains" => {
            params.expect(method, &[])?;
            let (_, state) = api.finalized().map_err(RpcError::internal)?;
            let brains = state.brains().map_err(RpcError::internal)?;
            let list = brains
                .iter()
                .map(|(id, brain)| {
                    json!({ "id": id, "owner": brain.owner.to_hex(), "name": brain.settings.name })
                })
                .collect();
            Ok(Value::Array(list))
        }
        "based_sendTransaction" => {
            let values = params.expect(method, &["transaction"])?;
            let transaction = parse_transaction(values[0])?;
            let hash = transaction.hash();
            api.submit(transaction).map_err(|reason| {
                RpcError::new(
                    codes::TRANSACTION_REJECTED,
                    format!("transaction rejected: {reason}"),
                )
            })?;
            Ok(json!({ "hash": hash.to_hex() }))
        }
        _ => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!(
                "unknown method \"{method}\"; available: based_getHead, based_getAccount, \
                 based_getBrain, based_listBrains, based_sendTransaction"
            ),
        )),
    }
}

fn parse_address(value: &Value) -> Result<PublicKey, RpcError> {
    let text = value
        .as_str()
        .ok_or_else(|| RpcError::invalid_params("address must be a string of 64 hex digits"))?;
    text.parse().map_err(|_| {
        RpcError::invalid_params(format!("address must be 64 hex digits, got \"{text}\""))
    })
}

fn parse_brain_id(value: &Value) -> Result<BrainId, RpcError> {
    value
        .as_u64()
        .and_then(|id| BrainId::try_from(id).ok())
        .filter(|id| *id < BRAIN_COUNT)
        .ok_or_else(|| {
            RpcError::invalid_params(format!(
                "brain id must be an integer from 0 to {}, got {value}",
                BRAIN_COUNT - 1
            ))
        })
}

fn parse_transaction(value: &Value) -> Result<SignedTransaction, RpcError> {
    let text = value.as_str().ok_or_else(|| {
        RpcError::invalid_params("transaction must be a hex string of its canonical encoding")
    })?;
    let text = text.strip_prefix("0x").unwrap_or(text);
    if text.len() > 2 * MAX_TRANSACTION_BYTES {
        return Err(RpcError::new(
            codes::TRANSACTION_MALFORMED,
            format!("transaction is larger than {MAX_TRANSACTION_BYTES} bytes"),
        ));
    }
    let bytes = decode_hex(text).map_err(RpcError::invalid_params)?;
    SignedTransaction::decode(&bytes).map_err(|error| {
        RpcError::new(codes::TRANSACTION_MALFORMED, format!("transaction does not decode: {error}"))
    })
}

/// Decodes hexadecimal digits (either case) into bytes.
pub fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("hex string has an odd number of digits ({})", text.len()));
    }
    let digit = |byte: u8, position: usize| {
        (byte as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("invalid hex digit {:?} at position {position}", byte as char))
    };
    let bytes = text.as_bytes();
    (0..bytes.len())
        .step_by(2)
        .map(|i| Ok(digit(bytes[i], i)? << 4 | digit(bytes[i + 1], i + 1)?))
        .collect()
}

pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Amounts are decimal strings of base units (10^-9 BASED), exact beyond 2^53.
fn amount(value: Amount) -> Value {
    Value::String(value.to_string())
}

fn head_json(head: &Head) -> Value {
    json!({
        "chain_id": head.chain_id,
        "height": head.height,
        "hash": head.hash.to_hex(),
        "state_root": head.state_root.to_hex(),
        "timestamp_ms": head.timestamp_ms,
        "proposer": head.proposer.to_hex(),
    })
}

fn account_json(address: &PublicKey, account: &Account, height: u64) -> Value {
    json!({
        "address": address.to_hex(),
        "height": height,
        "nonce": account.nonce,
        "balance": amount(account.balance),
        "pepe": amount(account.pepe),
        "pepe_locked": amount(account.pepe_locked),
        "pepe_locked_until": account.pepe_locked_until,
    })
}

fn brain_json(id: BrainId, brain: &Brain) -> Value {
    let acquisition = match &brain.acquisition {
        Acquisition::Reserved {} => json!({ "kind": "reserved" }),
        Acquisition::Burn { price } => json!({ "kind": "burn", "price": amount(*price) }),
        Acquisition::Stake { locked } => json!({ "kind": "stake", "locked": amount(*locked) }),
    };
    let s = &brain.settings;
    let mut settings = Map::new();
    settings.insert("model_id".into(), json!(s.model_id));
    settings.insert("model_revision".into(), json!(s.model_revision));
    settings.insert("model_hash".into(), json!(s.model_hash.to_hex()));
    settings.insert("miners_ppb".into(), json!(s.miners_ppb));
    settings.insert("name".into(), json!(s.name));
    settings.insert("label".into(), json!(s.label));
    settings.insert("reward_address".into(), json!(s.reward_address.to_hex()));
    settings.insert("registration_fee".into(), amount(s.registration_fee));
    settings.insert("memorize_fee".into(), amount(s.memorize_fee));
    settings.insert("owner_fee_share_ppb".into(), json!(s.owner_fee_share_ppb));
    settings.insert("prompt_price_per_1000".into(), amount(s.prompt_price_per_1000));
    settings.insert("completion_price_per_1000".into(), amount(s.completion_price_per_1000));
    settings.insert("max_context".into(), json!(s.max_context));
    json!({
        "id": id,
        "owner": brain.owner.to_hex(),
        "approved": brain.approved.map(|key| key.to_hex()),
        "acquisition": acquisition,
        "acquired_at": brain.acquired_at,
        "matures_at": brain.matures_at(),
        "stake": amount(brain.stake),
        "performance": brain.performance,
        "accrued": amount(brain.accrued),
        "settings": settings,
    })
}

#[cfg(test)]
mod tests;
