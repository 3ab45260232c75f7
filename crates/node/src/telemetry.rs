//! The node's own Prometheus metrics (registered in commonware's registry, so one `encode()`
//! serves them with commonware's) and a watchdog that turns commonware's p2p counters into log
//! lines: drops by rate limits or full buffers (SPEC 3.1: they are otherwise silent) and peers
//! connecting or going away.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use commonware_runtime::{Clock, Metrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tracing::{info, warn};

/// How often the watchdog reads the counters; also bounds its warnings to one per series per
/// period.
pub const WATCHDOG_PERIOD: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct NodeMetrics {
    pub finalized_height: Gauge,
    /// Executing a block's transactions and end-of-block rules (proposals, verification,
    /// re-execution of finalized blocks not seen before).
    pub block_execution_seconds: Histogram,
    /// Committing a finalized block to the ledger (its redb write transaction).
    pub block_commit_seconds: Histogram,
    pub transactions_succeeded: Counter,
    /// Included transactions whose call failed (they paid the fee and used the nonce).
    pub transactions_failed: Counter,
    pub mempool_transactions: Gauge,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.000_5, 2.0, 14));
        NodeMetrics {
            finalized_height: Gauge::default(),
            block_execution_seconds: seconds(),
            block_commit_seconds: seconds(),
            transactions_succeeded: Counter::default(),
            transactions_failed: Counter::default(),
            mempool_transactions: Gauge::default(),
        }
    }
}

impl NodeMetrics {
    /// Registers every metric under `context`'s label (`based_<name>` when labelled `based`).
    pub fn register(&self, context: &impl Metrics) {
        context.register(
            "finalized_height",
            "height of the last finalized block",
            self.finalized_height.clone(),
        );
        context.register(
            "block_execution_seconds",
            "time to execute a block's transactions and end-of-block rules",
            self.block_execution_seconds.clone(),
        );
        context.register(
            "block_commit_seconds",
            "time to commit a finalized block to the ledger",
            self.block_commit_seconds.clone(),
        );
        context.register(
            "transactions_succeeded",
            "finalized transactions whose call succeeded",
            self.transactions_succeeded.clone(),
        );
        context.register(
            "transactions_failed",
            "finalized transactions whose call failed (fee and nonce taken)",
            self.transactions_failed.clone(),
        );
        context.register(
            "mempool_transactions",
            "transactions waiting in this node's mempool",
            self.mempool_transactions.clone(),
        );
    }
}

/// What the watchdog cares about in one reading of the metrics text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct P2pReading {
    /// Series (name and labels) of commonware's `messages_rate_limited` and
    /// `messages_dropped` counters, with their values.
    pub drops: BTreeMap<String, u64>,
    /// Peers whose `connected` gauge is set (they are connected now).
    pub connected: BTreeSet<String>,
}

/// Reads the p2p drop counters and connected peers out of the OpenMetrics text.
pub fn read_p2p(text: &str) -> P2pReading {
    let mut reading = P2pReading::default();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let name = series.split('{').next().unwrap_or(series);
        if name.ends_with("messages_rate_limited_total") || name.ends_with("messages_dropped_total")
        {
            if let Ok(value) = value.parse() {
                reading.drops.insert(series.to_string(), value);
            }
        } else if name.contains("tracker")
            && name.ends_with("_connected")
            && value.parse::<f64>().is_ok_and(|value| value > 0.0)
            && let Some(peer) = label(series, "peer")
        {
            reading.connected.insert(peer.to_string());
        }
    }
    reading
}

fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let end = series[start..].find('"')? + start;
    Some(&series[start..end])
}

/// Every [`WATCHDOG_PERIOD`], logs counters that grew and peers that came or went, until the
/// runtime stops.
pub async fn watchdog<E: Clock + Metrics>(context: E) {
    let mut last = read_p2p(&context.encode());
    loop {
        context.sleep(WATCHDOG_PERIOD).await;
        let now = read_p2p(&context.encode());
        for (series, value) in &now.drops {
            let before = last.drops.get(series).copied().unwrap_or(0);
            if *value > before {
                warn!(series, dropped = value - before, total = value, "p2p messages dropped");
            }
        }
        for peer in now.connected.difference(&last.connected) {
            info!(peer, "peer connected");
        }
        for peer in last.connected.difference(&now.connected) {
            warn!(peer, "peer lost");
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_and_connected_peers_are_read_from_the_metrics_text() {
        let text = "# HELP network_spawner_messages_rate_limited messages rate limited\n\
            # TYPE network_spawner_messages_rate_limited counter\n\
            network_spawner_messages_rate_limited_total{peer=\"ab\",message=\"data_3\"} 4\n\
            network_router_messages_dropped_total{peer=\"cd\",message=\"data_0\"} 0\n\
            network_spawner_messages_sent_total{peer=\"ab\",message=\"data_3\"} 90\n\
            network_tracker_directory_connected{peer=\"ab\"} 1795572690000\n\
            network_tracker_directory_connected{peer=\"cd\"} 0\n\
            # EOF\n";
        let reading = read_p2p(text);
        let drops: Vec<(&str, u64)> =
            reading.drops.iter().map(|(series, value)| (series.as_str(), *value)).collect();
        assert_eq!(
            drops,
            [
                ("network_router_messages_dropped_total{peer=\"cd\",message=\"data_0\"}", 0),
                ("network_spawner_messages_rate_limited_total{peer=\"ab\",message=\"data_3\"}", 4),
            ]
        );
        assert_eq!(reading.connected, BTreeSet::from(["ab".to_string()]));
    }
}
