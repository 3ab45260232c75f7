//! WebSocket subscriptions on the JSON-RPC port: `based_subscribe` to finalized block headers
//! (`newHeads`) or events (`events`, optionally filtered), `based_unsubscribe`, and every other
//! method as over HTTP. One task per connection; finalized blocks reach them through a bounded
//! broadcast, so a client that reads too slowly is dropped instead of slowing anyone down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use based_state::Event;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tracing::{debug, warn};

use crate::metrics::RpcMetrics;
use crate::queries::{EventFilter, located_events};
use crate::{ChainView, NodeApi, Params, RpcError, codes, render};

/// Methods only a WebSocket connection serves.
pub const METHODS: &[&str] = &["based_subscribe", "based_unsubscribe"];
/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 16;
/// Finalized blocks a client may fall behind before it is dropped.
pub const FEED_CAPACITY: usize = 256;
/// A notification or reply the client does not accept within this time drops the client.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One finalized block, rendered once for every subscriber.
pub struct Notification {
    height: u64,
    /// The `newHeads` result: the block's header and transaction hashes.
    head: Value,
    /// Every event of the block with its rendering (as `based_getEvents` lists it).
    events: Vec<(Event, Value)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Subscription {
    NewHeads,
    Events(EventFilter),
}

/// A connection's subscriptions.
#[derive(Default)]
pub(crate) struct Session {
    subscriptions: BTreeMap<String, Subscription>,
}

static NEXT_SUBSCRIPTION: AtomicU64 = AtomicU64::new(1);

impl Session {
    pub(crate) fn dispatch(
        &mut self,
        metrics: &RpcMetrics,
        method: &str,
        params: Params<'_>,
    ) -> Result<Value, RpcError> {
        if method == "based_unsubscribe" {
            let values = params.expect(method, &["subscription"])?;
            let id = values[0].as_str().ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "subscription must be the id string based_subscribe returned, got {}",
                    values[0]
                ))
            })?;
            let removed = self.subscriptions.remove(id).is_some();
            if removed {
                metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
            }
            return Ok(json!(removed));
        }
        let (values, optional) = params.parse(method, &["kind"], &["filter"])?;
        let subscription = match values[0].as_str() {
            Some("newHeads") if optional[0].is_some() => {
                return Err(RpcError::invalid_params("newHeads takes no filter"));
            }
            Some("newHeads") => Subscription::NewHeads,
            Some("events") => Subscription::Events(EventFilter::parse(optional[0])?),
            _ => {
                return Err(RpcError::invalid_params(format!(
                    "unknown subscription {}; kinds: newHeads, events",
                    values[0]
                )));
            }
        };
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(RpcError::new(
                codes::SUBSCRIPTION_LIMIT,
                format!(
                    "this connection already has {MAX_SUBSCRIPTIONS} subscriptions, the limit; \
                     unsubscribe first"
                ),
            ));
        }
        let id = format!("{:016x}", NEXT_SUBSCRIPTION.fetch_add(1, Ordering::Relaxed));
        self.subscriptions.insert(id.clone(), subscription);
        metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(json!(id))
    }

    /// The notifications `notification` produces for this connection's subscriptions.
    fn notifications(&self, notification: &Notification) -> Vec<Value> {
        let mut out = Vec::new();
        for (id, subscription) in &self.subscriptions {
            let result = match subscription {
                Subscription::NewHeads => notification.head.clone(),
                Subscription::Events(filter) => {
                    let events: Vec<&Value> = notification
                        .events
                        .iter()
                        .filter(|(event, _)| filter.matches(event))
                        .map(|(_, rendered)| rendered)
                        .collect();
                    if events.is_empty() {
                        continue;
                    }
                    json!({ "height": notification.height, "events": events })
                }
            };
            out.push(json!({
                "jsonrpc": "2.0",
                "method": "based_subscription",
                "params": { "subscription": id, "result": result },
            }));
        }
        out
    }
}

fn notification<V: ChainView>(view: &V, height: u64) -> Result<Notification, String> {
    let block =
        view.block(height)?.ok_or_else(|| format!("finalized block {height} is missing"))?;
    let outcome = view.outcome(height)?.unwrap_or_default();
    let events = located_events(&outcome, height, &EventFilter::default());
    Ok(Notification { height, head: render::block(&block, false), events })
}

/// Renders each newly finalized block once and broadcasts it to the connections, until the
/// node's height feed closes.
pub(crate) async fn publish<A: NodeApi>(api: Arc<A>, feed: broadcast::Sender<Arc<Notification>>) {
    let mut heights = api.watch_finalized();
    let mut last = *heights.borrow_and_update();
    while heights.changed().await.is_ok() {
        let target = *heights.borrow_and_update();
        if feed.receiver_count() == 0 {
            last = target;
            continue;
        }
        let view = match api.view() {
            Ok(view) => view,
            Err(error) => {
                warn!(%error, "cannot read finalized blocks for WebSocket subscribers");
                continue;
            }
        };
        for height in last + 1..=target.min(view.head().height) {
            match notification(&view, height) {
                Ok(notification) => {
                    // Fails only when no connection is listening.
                    let _ = feed.send(Arc::new(notification));
                }
                Err(error) => warn!(height, %error, "cannot notify WebSocket subscribers"),
            }
            last = height;
        }
    }
}

/// Why a connection ended.
enum Closed {
    /// The client closed it or went away.
    ByClient,
    /// We close it with this code and reason.
    ByServer(u16, String),
}

/// Serves one WebSocket connection until either side closes it.
pub(crate) async fn serve<A: NodeApi>(
    api: Arc<A>,
    metrics: Arc<RpcMetrics>,
    mut feed: broadcast::Receiver<Arc<Notification>>,
    mut socket: WebSocket,
) {
    metrics.websocket_clients.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::default();
    let closed = loop {
        let outgoing: Vec<Value> = tokio::select! {
            received = socket.recv() => match received {
                None | Some(Ok(Message::Close(_))) => break Closed::ByClient,
                Some(Err(error)) => break receive_error(&error),
                Some(Ok(Message::Text(text))) => {
                    let reply = crate::handle_text(&*api, &metrics, Some(&mut session), text.as_str());
                    reply.into_iter().collect()
                }
                Some(Ok(Message::Binary(_))) => {
                    let error = RpcError::new(
                        codes::INVALID_REQUEST,
                        "binary frames are not accepted; send JSON-RPC requests as text",
                    );
                    vec![crate::error_response(Value::Null, &error)]
                }
                // Pings are answered by the WebSocket layer.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Vec::new(),
            },
            notification = feed.recv() => match notification {
                Ok(notification) => session.notifications(&notification),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics.websocket_slow_clients.fetch_add(1, Ordering::Relaxed);
                    break Closed::ByServer(
                        close_code::AGAIN,
                        format!("too slow: {missed} finalized blocks not delivered"),
                    );
                }
                Err(broadcast::error::RecvError::Closed) => {
                    break Closed::ByServer(close_code::AWAY, "the node is stopping".into());
                }
            },
        };
        if let Some(closed) = send_all(&mut socket, outgoing).await {
            if matches!(closed, Closed::ByServer(..)) {
                metrics.websocket_slow_clients.fetch_add(1, Ordering::Relaxed);
            }
            break closed;
        }
    };
    let live = session.subscriptions.len() as i64;
    metrics.subscriptions.fetch_sub(live, Ordering::Relaxed);
    metrics.websocket_clients.fetch_sub(1, Ordering::Relaxed);
    match closed {
        Closed::ByClient => debug!("WebSocket client closed the connection"),
        Closed::ByServer(code, reason) => {
            warn!(code, %reason, "closing a WebSocket client");
            let frame = CloseFrame { code, reason: reason.into() };
            let close = socket.send(Message::Close(Some(frame)));
            let _ = tokio::time::timeout(SEND_TIMEOUT, close).await;
        }
    }
}

/// Sends every value; `Some` if the client did not take them in time.
async fn send_all(socket: &mut WebSocket, values: Vec<Value>) -> Option<Closed> {
    for value in values {
        let send = socket.send(Message::text(value.to_string()));
        match tokio::time::timeout(SEND_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Some(Closed::ByClient),
            Err(_) => {
                let reason = format!("too slow: a message waited {} s", SEND_TIMEOUT.as_secs());
                return Some(Closed::ByServer(close_code::AGAIN, reason));
            }
        }
    }
    None
}

fn receive_error(error: &axum::Error) -> Closed {
    let text = error.to_string();
    if text.contains("too long") || text.contains("Space limit") {
        // Close reasons are limited to 123 bytes.
        let reason = format!("message larger than {} bytes", crate::MAX_BODY_BYTES);
        return Closed::ByServer(close_code::SIZE, reason);
    }
    Closed::ByServer(close_code::PROTOCOL, text.chars().take(120).collect())
}
