//! The RPC server's own metrics, in the Prometheus text format: requests and errors by method,
//! WebSocket clients and subscriptions. `GET /metrics` serves them after the node's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::METHODS;

#[derive(Default)]
pub struct RpcMetrics {
    /// Method -> (requests, errors). Unknown methods count under `unknown`.
    by_method: Mutex<BTreeMap<&'static str, (u64, u64)>>,
    pub(crate) websocket_clients: AtomicI64,
    pub(crate) subscriptions: AtomicI64,
    /// WebSocket clients closed because they read notifications too slowly.
    pub(crate) websocket_slow_clients: AtomicU64,
}

impl RpcMetrics {
    pub(crate) fn record(&self, method: &str, failed: bool) {
        let label = METHODS
            .iter()
            .chain(crate::ws::METHODS)
            .copied()
            .find(|known| *known == method)
            .unwrap_or("unknown");
        let mut by_method = self.by_method.lock().unwrap_or_else(|p| p.into_inner());
        let entry = by_method.entry(label).or_default();
        entry.0 += 1;
        entry.1 += u64::from(failed);
    }

    /// The text exposition of these metrics (no `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let by_method = self.by_method.lock().unwrap_or_else(|p| p.into_inner());
        let families = [
            ("based_rpc_requests", "JSON-RPC requests by method", 0),
            ("based_rpc_errors", "JSON-RPC requests answered with an error, by method", 1),
        ];
        for (name, help, column) in families {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
            for (method, counts) in by_method.iter() {
                let value = if column == 0 { counts.0 } else { counts.1 };
                let _ = writeln!(out, "{name}_total{{method=\"{method}\"}} {value}");
            }
        }
        let gauges = [
            ("based_rpc_websocket_clients", "open WebSocket connections", &self.websocket_clients),
            ("based_rpc_subscriptions", "active WebSocket subscriptions", &self.subscriptions),
        ];
        for (name, help, value) in gauges {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}");
        }
        let name = "based_rpc_websocket_slow_clients";
        let value = self.websocket_slow_clients.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} WebSocket clients closed for reading notifications too slowly.\n\
             # TYPE {name} counter\n{name}_total {value}"
        );
        out
    }
}
