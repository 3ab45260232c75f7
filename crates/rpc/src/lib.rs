//! JSON-RPC 2.0 over HTTP for the BasedAI node (docs/rpc.md).
//!
//! The server knows the node only through [`NodeApi`]: consistent read-only views of the
//! finalized chain ([`ChainView`]: head, state, blocks, receipts, indexes) and the mempool. It
//! holds no commonware types, so it is tested here against an in-memory chain.

pub mod client;
pub mod metrics;
pub mod queries;
pub mod render;
pub mod ws;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use based_state::{OutcomeRecord, State, Store};
use based_types::{Block, BrainId, Hash, PublicKey, SignedTransaction};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::metrics::RpcMetrics;
use crate::ws::{Notification, Session};

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
    /// The WebSocket connection holds as many subscriptions as it may.
    pub const SUBSCRIPTION_LIMIT: i64 = -32012;
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

/// What the genesis file fixes beyond the state: timing, block size, the validator set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainInfo {
    pub genesis_time_ms: u64,
    pub block_time_ms: u64,
    pub max_block_transactions: usize,
    /// Hex ed25519 public keys of the consensus validators.
    pub validators: Vec<String>,
}

/// One consistent read of the finalized chain: every method answers from the same snapshot.
pub trait ChainView {
    type Store: Store;

    /// The last finalized block.
    fn head(&self) -> &Head;

    /// The state after the head block.
    fn state(&self) -> State<Self::Store>;

    /// The finalized block at `height` (0 is genesis).
    fn block(&self, height: u64) -> Result<Option<Block>, String>;

    /// Height of the finalized block whose hash (the header hash) is `hash`.
    fn height_of(&self, hash: &Hash) -> Result<Option<u64>, String>;

    /// Receipts and block events of the finalized block at `height`.
    fn outcome(&self, height: u64) -> Result<Option<OutcomeRecord>, String>;

    /// Where a finalized transaction is: (height, index in its block).
    fn transaction(&self, hash: &Hash) -> Result<Option<(u64, u32)>, String>;

    /// Height of the block whose end ran `brain`'s last epoch.
    fn last_epoch(&self, brain: BrainId) -> Result<Option<u64>, String>;
}

/// What the RPC server needs from a node.
pub trait NodeApi: Send + Sync + 'static {
    type View: ChainView;

    /// A consistent view of the finalized chain.
    fn view(&self) -> Result<Self::View, String>;

    /// Admits a transaction to the mempool; the error says why it was refused.
    fn submit(&self, transaction: SignedTransaction) -> Result<(), String>;

    fn pending_transactions(&self) -> usize;

    /// True while a transaction with this hash waits in the node's mempool.
    fn is_pending(&self, hash: &Hash) -> bool;

    fn chain(&self) -> &ChainInfo;

    /// The last finalized height, changed after each block is committed.
    fn watch_finalized(&self) -> watch::Receiver<u64>;

    /// The node's metrics in the OpenMetrics text format (ending with `# EOF`).
    fn metrics(&self) -> String;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub(crate) fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMS, message)
    }

    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(codes::INTERNAL_ERROR, format!("internal error: {message}"))
    }
}

/// Serves JSON-RPC on `listener` from a thread of its own (with a one-thread tokio runtime),
/// until the process exits. Returns the bound address.
pub fn spawn<A: NodeApi>(api: Arc<A>, listener: TcpListener) -> std::io::Result<SocketAddr> {
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    std::thread::Builder::new().name("rpc".into()).spawn(move || {
        runtime.block_on(async move {
            let (feed, _) = broadcast::channel(ws::FEED_CAPACITY);
            tokio::spawn(ws::publish(api.clone(), feed.clone()));
            let result = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => axum::serve(listener, router(api, feed)).await,
                Err(error) => Err(error),
            };
            if let Err(error) = result {
                tracing::error!(%error, "rpc server stopped");
            }
        });
    })?;
    Ok(address)
}

/// `POST /` for JSON-RPC, `GET /` upgraded to a WebSocket, `GET /health` for liveness probes,
/// `GET /metrics` for Prometheus.
fn router<A: NodeApi>(api: Arc<A>, feed: broadcast::Sender<Arc<Notification>>) -> Router {
    let metrics = Arc::new(RpcMetrics::default());
    let (rpc_api, rpc_metrics) = (api.clone(), metrics.clone());
    let (ws_api, ws_metrics) = (api.clone(), metrics.clone());
    let (metrics_api, health_api) = (api.clone(), api);
    let upgrade = move |upgrade: WebSocketUpgrade| async move {
        let (api, metrics, feed) = (ws_api.clone(), ws_metrics.clone(), feed.subscribe());
        upgrade
            .max_message_size(MAX_BODY_BYTES)
            .max_frame_size(MAX_BODY_BYTES)
            .on_upgrade(move |socket| ws::serve(api, metrics, feed, socket))
    };
    let serve_metrics = move || async move {
        let node = metrics_api.metrics();
        let node = node.trim_end().strip_suffix("# EOF").unwrap_or(&node);
        let text = format!("{}\n{}# EOF\n", node.trim_end(), metrics.encode());
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, content_type)], text)
    };
    Router::new()
        .route(
            "/",
            get(upgrade)
                .post(move |body: Body| handle_http(rpc_api.clone(), rpc_metrics.clone(), body)),
        )
        .route("/health", get(move || async move { health(&*health_api) }))
        .route("/metrics", get(serve_metrics))
}

fn health<A: NodeApi>(api: &A) -> Response {
    match api.view() {
        Ok(view) => format!("ok {}\n", view.head().height).into_response(),
        Err(error) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {error}\n")).into_response()
        }
    }
}

async fn handle_http<A: NodeApi>(api: Arc<A>, metrics: Arc<RpcMetrics>, body: Body) -> Response {
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
    match handle_body(&*api, &metrics, &bytes) {
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

pub(crate) fn error_response(id: Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": error.code, "message": error.message } })
}

/// Answers one HTTP body: a request or a batch. `None` when only notifications were sent.
pub fn handle_body<A: NodeApi>(api: &A, metrics: &RpcMetrics, body: &[u8]) -> Option<Value> {
    match serde_json::from_slice(body) {
        Ok(request) => handle_value(api, metrics, None, request),
        Err(error) => {
            let error = RpcError::new(codes::PARSE_ERROR, format!("invalid JSON: {error}"));
            Some(error_response(Value::Null, &error))
        }
    }
}

/// Answers one WebSocket text message, with the connection's subscriptions.
pub(crate) fn handle_text<A: NodeApi>(
    api: &A,
    metrics: &RpcMetrics,
    session: Option<&mut Session>,
    text: &str,
) -> Option<Value> {
    match serde_json::from_str(text) {
        Ok(request) => handle_value(api, metrics, session, request),
        Err(error) => {
            let error = RpcError::new(codes::PARSE_ERROR, format!("invalid JSON: {error}"));
            Some(error_response(Value::Null, &error))
        }
    }
}

fn handle_value<A: NodeApi>(
    api: &A,
    metrics: &RpcMetrics,
    mut session: Option<&mut Session>,
    request: Value,
) -> Option<Value> {
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
            let responses: Vec<Value> = requests
                .into_iter()
                .filter_map(|request| handle_request(api, metrics, session.as_deref_mut(), request))
                .collect();
            (!responses.is_empty()).then_some(Value::Array(responses))
        }
        request => handle_request(api, metrics, session, request),
    }
}

/// One request object; `None` for a notification (no `id`).
fn handle_request<A: NodeApi>(
    api: &A,
    metrics: &RpcMetrics,
    session: Option<&mut Session>,
    request: Value,
) -> Option<Value> {
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
    let params = Params(params.as_ref());
    let outcome = match session {
        Some(session) if ws::METHODS.contains(&method.as_str()) => {
            session.dispatch(metrics, &method, params)
        }
        None if ws::METHODS.contains(&method.as_str()) => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("{method} needs a WebSocket connection (ws:// on this port)"),
        )),
        _ => dispatch(api, &method, params),
    };
    metrics.record(&method, outcome.is_err());
    let id = id?;
    Some(match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(error) => error_response(id, &error),
    })
}

/// Positional (`[..]`) or named (`{..}`) parameters.
pub(crate) struct Params<'a>(Option<&'a Value>);

impl<'a> Params<'a> {
    /// Checks that exactly the parameters `names` are given (all of them are required).
    pub(crate) fn expect(&self, method: &str, names: &[&str]) -> Result<Vec<&'a Value>, RpcError> {
        Ok(self.parse(method, names, &[])?.0)
    }

    /// The `required` parameters, then the `optional` ones (`None` when omitted or `null`).
    pub(crate) fn parse(
        &self,
        method: &str,
        required: &[&str],
        optional: &[&str],
    ) -> Result<(Vec<&'a Value>, Vec<Option<&'a Value>>), RpcError> {
        let usage = || {
            let mut names: Vec<String> = required.iter().map(|name| name.to_string()).collect();
            names.extend(optional.iter().map(|name| format!("{name}?")));
            if names.is_empty() {
                format!("{method} takes no parameters")
            } else {
                format!("{method} expects parameters [{}]", names.join(", "))
            }
        };
        let all = required.len() + optional.len();
        let split = |values: Vec<Option<&'a Value>>| {
            let mut values: Vec<Option<&'a Value>> =
                values.into_iter().map(|value| value.filter(|value| !value.is_null())).collect();
            let optional = values.split_off(required.len());
            match values.iter().zip(required).find(|(value, _)| value.is_none()) {
                Some((_, name)) => {
                    Err(RpcError::invalid_params(format!("{}, missing \"{name}\"", usage())))
                }
                None => Ok((values.into_iter().flatten().collect(), optional)),
            }
        };
        match self.0 {
            None if required.is_empty() => Ok((Vec::new(), vec![None; all])),
            None => Err(RpcError::invalid_params(usage())),
            Some(Value::Array(values)) => {
                if values.len() < required.len() || values.len() > all {
                    return Err(RpcError::invalid_params(format!(
                        "{}, got {} positional parameters",
                        usage(),
                        values.len()
                    )));
                }
                let mut out: Vec<Option<&Value>> = values.iter().map(Some).collect();
                out.resize(all, None);
                split(out)
            }
            Some(Value::Object(map)) => {
                let known = |key: &str| required.contains(&key) || optional.contains(&key);
                if let Some(unknown) = map.keys().find(|key| !known(key)) {
                    return Err(RpcError::invalid_params(format!(
                        "{}, got unknown parameter \"{unknown}\"",
                        usage()
                    )));
                }
                split(required.iter().chain(optional).map(|name| map.get(*name)).collect())
            }
            Some(_) => Err(RpcError::invalid_params(usage())),
        }
    }
}

/// Every method, in the order docs/rpc.md lists them.
pub const METHODS: &[&str] = &[
    "based_getHead",
    "based_getAccount",
    "based_getBrain",
    "based_listBrains",
    "based_sendTransaction",
    "based_getTransaction",
    "based_getBlock",
    "based_getBlockOutcome",
    "based_getEvents",
    "based_listNodes",
    "based_getNode",
    "based_getStake",
    "based_getWeights",
    "based_getEpoch",
    "based_getEmission",
    "based_listProposals",
    "based_getProposal",
    "based_getParams",
];

fn dispatch<A: NodeApi>(api: &A, method: &str, params: Params<'_>) -> Result<Value, RpcError> {
    let view = || api.view().map_err(RpcError::internal);
    match method {
        "based_getHead" => {
            params.expect(method, &[])?;
            let mut value = render::head(view()?.head());
            value["pending_transactions"] = json!(api.pending_transactions());
            Ok(value)
        }
        "based_getAccount" => {
            let values = params.expect(method, &["address"])?;
            let address = parse_address(values[0])?;
            let view = view()?;
            let state = view.state();
            let account = state.account(&address).map_err(RpcError::internal)?;
            let escrow = state.escrow(&address).map_err(RpcError::internal)?;
            let brains = state.brains_owned_by(&address).map_err(RpcError::internal)?;
            let mut value = render::account(&address, &account, view.head().height);
            value["escrow"] = json!({
                "balance": render::amount(escrow.balance),
                "release_requested_at": escrow.release_requested_at,
            });
            value["brains"] = json!(brains);
            Ok(value)
        }
        "based_getBrain" => {
            let values = params.expect(method, &["id"])?;
            let id = parse_brain_id(values[0])?;
            let brain = view()?.state().brain(id).map_err(RpcError::internal)?;
            Ok(brain.map_or(Value::Null, |brain| render::brain(id, &brain)))
        }
        "based_listBrains" => {
            params.expect(method, &[])?;
            let brains = view()?.state().brains().map_err(RpcError::internal)?;
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
        "based_getTransaction" => {
            let values = params.expect(method, &["hash"])?;
            let hash = parse_hash("hash", values[0])?;
            get_transaction(api, &hash)
        }
        "based_getBlock" => {
            let (values, optional) = params.parse(method, &["block"], &["full"])?;
            let full = match optional[0] {
                None => false,
                Some(value) => value.as_bool().ok_or_else(|| {
                    RpcError::invalid_params(format!("full must be true or false, got {value}"))
                })?,
            };
            let view = view()?;
            let Some(height) = block_height(&view, values[0])? else {
                return Ok(Value::Null);
            };
            let block = view.block(height).map_err(RpcError::internal)?;
            Ok(block.map_or(Value::Null, |block| render::block(&block, full)))
        }
        "based_getBlockOutcome" => {
            let values = params.expect(method, &["block"])?;
            let view = view()?;
            let Some(height) = block_height(&view, values[0])? else {
                return Ok(Value::Null);
            };
            let outcome = view.outcome(height).map_err(RpcError::internal)?;
            Ok(outcome.map_or(Value::Null, |outcome| render::outcome(&outcome, height)))
        }
        "based_getEvents" => {
            let (values, optional) = params.parse(method, &["from", "to"], &["filter"])?;
            let from = parse_height("from", values[0])?;
            let to = parse_height("to", values[1])?;
            let filter = queries::EventFilter::parse(optional[0])?;
            queries::events(&view()?, from, to, &filter)
        }
        "based_listNodes" => {
            let (values, optional) = params.parse(method, &["brain"], &["role"])?;
            let brain = parse_brain_id(values[0])?;
            let role = optional[0].map(parse_role).transpose()?;
            queries::list_nodes(&view()?, brain, role)
        }
        "based_getNode" => {
            let values = params.expect(method, &["brain", "hotkey"])?;
            let brain = parse_brain_id(values[0])?;
            queries::node(&view()?, brain, &parse_address(values[1])?)
        }
        "based_getStake" => {
            let values = params.expect(method, &["brain", "hotkey"])?;
            let brain = parse_brain_id(values[0])?;
            queries::stake(&view()?, brain, &parse_address(values[1])?)
        }
        "based_getWeights" => {
            let values = params.expect(method, &["brain", "uid"])?;
            let brain = parse_brain_id(values[0])?;
            let uid =
                values[1].as_u64().and_then(|uid| u16::try_from(uid).ok()).ok_or_else(|| {
                    RpcError::invalid_params(format!(
                        "uid must be an integer from 0 to 65535, got {}",
                        values[1]
                    ))
                })?;
            queries::weights(&view()?, brain, uid)
        }
        "based_getEpoch" => {
            let values = params.expect(method, &["brain"])?;
            queries::epoch(&view()?, parse_brain_id(values[0])?)
        }
        "based_getEmission" => {
            params.expect(method, &[])?;
            queries::emission(&view()?)
        }
        "based_listProposals" => {
            params.expect(method, &[])?;
            queries::proposals(&view()?)
        }
        "based_getProposal" => {
            let values = params.expect(method, &["id"])?;
            queries::proposal(&view()?, parse_height("id", values[0])?)
        }
        "based_getParams" => {
            params.expect(method, &[])?;
            queries::params(&view()?, api.chain())
        }
        _ => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("unknown method \"{method}\"; available: {}", METHODS.join(", ")),
        )),
    }
}

/// The receipt once finalized, `{"status":"pending"}` while in this node's mempool, `null` if
/// unknown. A transaction leaves the mempool only after its block is committed, so if it is
/// not pending, a view taken after that check sees it if it was finalized meanwhile: no moment
/// answers `null` for a transaction on its way from the mempool to a block.
fn get_transaction<A: NodeApi>(api: &A, hash: &Hash) -> Result<Value, RpcError> {
    if let Some(receipt) = finalized_receipt(&api.view().map_err(RpcError::internal)?, hash)? {
        return Ok(receipt);
    }
    if api.is_pending(hash) {
        return Ok(json!({ "hash": hash.to_hex(), "status": "pending" }));
    }
    let fresh = api.view().map_err(RpcError::internal)?;
    Ok(finalized_receipt(&fresh, hash)?.unwrap_or(Value::Null))
}

fn finalized_receipt<V: ChainView>(view: &V, hash: &Hash) -> Result<Option<Value>, RpcError> {
    let Some((height, index)) = view.transaction(hash).map_err(RpcError::internal)? else {
        return Ok(None);
    };
    let outcome = view.outcome(height).map_err(RpcError::internal)?.ok_or_else(|| {
        RpcError::internal(format!("block {height} has an indexed transaction but no receipts"))
    })?;
    let receipt = outcome.receipts.get(index as usize).ok_or_else(|| {
        RpcError::internal(format!("block {height} has no receipt at index {index}"))
    })?;
    Ok(Some(render::receipt(receipt, height, index)))
}

/// A block given as a height (integer) or a hash (hex string); `None` if no finalized block
/// has that hash or height.
fn block_height<V: ChainView>(view: &V, value: &Value) -> Result<Option<u64>, RpcError> {
    if let Some(height) = value.as_u64() {
        return Ok((height <= view.head().height).then_some(height));
    }
    if value.is_string() {
        let hash = parse_hash("block hash", value)?;
        return view.height_of(&hash).map_err(RpcError::internal);
    }
    Err(RpcError::invalid_params(format!(
        "block must be a height (non-negative integer) or a block hash (64 hex digits), got {value}"
    )))
}

/// A non-negative integer parameter (heights, ids).
fn parse_height(what: &str, value: &Value) -> Result<u64, RpcError> {
    value.as_u64().ok_or_else(|| {
        RpcError::invalid_params(format!("{what} must be a non-negative integer, got {value}"))
    })
}

fn parse_role(value: &Value) -> Result<based_types::Role, RpcError> {
    match value.as_str() {
        Some("validator") => Ok(based_types::Role::Validator),
        Some("miner") => Ok(based_types::Role::Miner),
        _ => Err(RpcError::invalid_params(format!(
            "role must be \"validator\" or \"miner\", got {value}"
        ))),
    }
}

fn parse_hash(what: &str, value: &Value) -> Result<Hash, RpcError> {
    let text = value.as_str().ok_or_else(|| {
        RpcError::invalid_params(format!("{what} must be a string of 64 hex digits, got {value}"))
    })?;
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let bytes = decode_hex(digits).map_err(|e| RpcError::invalid_params(format!("{what}: {e}")))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
        RpcError::invalid_params(format!("{what} must be 64 hex digits, got \"{text}\""))
    })?;
    Ok(Hash(bytes))
}

pub(crate) fn parse_address(value: &Value) -> Result<PublicKey, RpcError> {
    let text = value
        .as_str()
        .ok_or_else(|| RpcError::invalid_params("address must be a string of 64 hex digits"))?;
    text.parse().map_err(|_| {
        RpcError::invalid_params(format!("address must be 64 hex digits, got \"{text}\""))
    })
}

pub(crate) fn parse_brain_id(value: &Value) -> Result<BrainId, RpcError> {
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

#[cfg(test)]
mod tests;
