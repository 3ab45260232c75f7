//! A validator process: the commonware tokio runtime, authenticated p2p with discovery, and the
//! engine, until the engine stops or the caller's shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use commonware_cryptography::{Signer as _, ed25519};
use commonware_p2p::authenticated::discovery;
use commonware_p2p::{Ingress, Manager as _};
use commonware_runtime::{Metrics as _, Runner as _, Spawner as _, tokio};
use commonware_utils::ordered::Set;
use tracing::{error, info};

use crate::application::{Application, ChainSpec, NodeError};
use crate::engine::{Channels, ValidatorConfig, channel_quotas, start_validator};
use crate::ledger::Ledger;

/// Largest p2p message; blocks are capped at half of it.
const MAX_MESSAGE_SIZE: u32 = 1024 * 1024;
const MESSAGE_BACKLOG: usize = 1024;
/// How long shutdown waits for tasks to finish their writes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub signer: ed25519::PrivateKey,
    pub spec: ChainSpec,
    /// Holds `ledger.redb` and commonware's storage (`consensus/`).
    pub directory: PathBuf,
    pub listen: SocketAddr,
    /// The address peers dial (usually `listen` with a public IP).
    pub dialable: SocketAddr,
    /// Known validators to dial first.
    pub bootstrappers: Vec<(ed25519::PublicKey, SocketAddr)>,
    /// Loopback-friendly p2p settings (devnet, tests) instead of internet ones.
    pub local: bool,
    pub worker_threads: usize,
}

/// Encodes every metric of the node's runtime (commonware's and the node's) in the OpenMetrics
/// text format.
pub type MetricsEncoder = Arc<dyn Fn() -> String + Send + Sync>;

/// Runs a validator until its engine stops or `shutdown` resolves. `on_start` receives the
/// application (mempool submission, ledger snapshots) and the metrics once the engine is up.
pub fn run(
    config: NodeConfig,
    on_start: impl FnOnce(Application, MetricsEncoder) + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    std::fs::create_dir_all(&config.directory).map_err(|e| NodeError::Storage(e.to_string()))?;
    let ledger = Ledger::open(&config.directory.join("ledger.redb"))?;
    let runtime = tokio::Config::default()
        .with_worker_threads(config.worker_threads.max(1))
        .with_tcp_nodelay(Some(true))
        .with_storage_directory(config.directory.join("consensus"))
        .with_catch_panics(false);
    tokio::Runner::new(runtime).start(|context| async move {
        let namespace = [crate::engine::NAMESPACE, b"_P2P"].concat();
        let bootstrappers = config
            .bootstrappers
            .iter()
            .map(|(key, address)| (key.clone(), Ingress::Socket(*address)))
            .collect();
        let p2p_config = if config.local {
            discovery::Config::local
        } else {
            discovery::Config::recommended
        };
        let p2p_config = p2p_config(
            config.signer.clone(),
            &namespace,
            config.listen,
            config.dialable,
            bootstrappers,
            MAX_MESSAGE_SIZE,
        );
        let (mut network, mut oracle) =
            discovery::Network::new(context.with_label("network"), p2p_config);
        oracle.track(0, Set::from_iter_dedup(config.spec.validators.iter().cloned())).await;
        let mut registered: Vec<_> = channel_quotas(config.spec.block_time_ms)
            .into_iter()
            .map(|(channel, quota)| network.register(channel, quota, MESSAGE_BACKLOG))
            .collect();
        let mut next = || registered.remove(0);
        let channels = Channels {
            votes: next(),
            certificates: next(),
            resolver: next(),
            blocks: next(),
            backfill: next(),
            transactions: next(),
        };
        let network_handle = network.start();
        let validator = ValidatorConfig {
            signer: config.signer.clone(),
            spec: config.spec,
            ledger,
            blocker: oracle.clone(),
            provider: oracle,
            partition_prefix: "validator".into(),
        };
        let (application, engine) =
            start_validator(context.with_label("validator"), validator, channels).await?;
        info!(public_key = %config.signer.public_key(), listen = %config.listen, "validator started");
        context.with_label("watchdog").spawn(crate::telemetry::watchdog);
        let metrics = context.clone();
        on_start(application, Arc::new(move || metrics.encode()));
        let stopped = context.with_label("shutdown").spawn(move |_| shutdown);
        commonware_macros::select! {
            result = futures::future::try_join_all([network_handle, engine]) => {
                if let Err(reason) = result {
                    error!(?reason, "validator stopped");
                }
            },
            _ = stopped => info!("shutting down"),
        }
        if context.stop(0, Some(SHUTDOWN_GRACE)).await.is_err() {
            error!("tasks did not stop within the grace period");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use based_state::{GenesisConfig, Params};
    use based_types::{Call, SecretKey, Transaction, coins};
    use futures::FutureExt as _;

    use super::*;

    fn config(directory: PathBuf, port: u16) -> NodeConfig {
        let signer = ed25519::PrivateKey::from_seed(1);
        let user = SecretKey::from_seed([1; 32]);
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        NodeConfig {
            spec: ChainSpec {
                genesis: GenesisConfig {
                    chain_id: 3,
                    foundation: user.public_key(),
                    balances: vec![(user.public_key(), coins(10))],
                    pepe_balances: Vec::new(),
                    relayers: vec![user.public_key()],
                    relayer_threshold: 1,
                    params: Params::default(),
                },
                genesis_time_ms: 0,
                block_time_ms: 50,
                max_block_transactions: 100,
                validators: vec![signer.public_key()],
            },
            signer,
            directory,
            listen: address,
            dialable: address,
            bootstrappers: Vec::new(),
            local: true,
            worker_threads: 2,
        }
    }

    fn height(application: &Application) -> u64 {
        let snapshot = application.ledger().snapshot().expect("snapshot");
        snapshot.applied().expect("meta").map_or(0, |applied| applied.height)
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `run` on a thread; returns its application, metrics and a trigger that stops it.
    fn start(config: NodeConfig) -> (Application, MetricsEncoder, impl FnOnce()) {
        let (started_tx, started_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let on_start = move |app, metrics| started_tx.send((app, metrics)).expect("test waits");
            run(config, on_start, stop_rx.map(|_| ()))
        });
        let Ok((application, metrics)) = started_rx.recv_timeout(Duration::from_secs(30)) else {
            panic!("node did not start: {:?}", thread.join().map(|result| result.err()));
        };
        let stop = move || {
            let _ = stop_tx.send(());
            thread.join().expect("node thread").expect("node ran");
        };
        (application, metrics, stop)
    }

    #[test]
    fn a_node_on_real_sockets_finalizes_a_transfer_and_stops_on_request() {
        let directory = std::env::temp_dir().join(format!("based-node-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();

        let (application, metrics, stop) = start(config(directory.clone(), port));
        let user = SecretKey::from_seed([1; 32]);
        let recipient = SecretKey::from_seed([2; 32]).public_key();
        let call = Call::Transfer { to: recipient, amount: 7 };
        let transfer =
            Transaction { chain_id: 3, signer: user.public_key(), nonce: 0, fee: 1_000, call };
        application.submit(transfer.sign(&user)).expect("admitted");
        wait_until("the transfer to finalize", || application.pending_transactions() == 0);
        wait_until("a few blocks", || height(&application) >= 3);
        let snapshot = application.ledger().snapshot().expect("snapshot");
        let state = based_state::State::open(crate::ledger::Overlay::new(snapshot, Vec::new()));
        assert_eq!(state.account(&recipient).expect("account").balance, 7);
        let text = metrics();
        let value = |name: &str| {
            let line = text.lines().find(|line| line.starts_with(name)).expect(name);
            line.rsplit_once(' ').and_then(|(_, value)| value.parse::<f64>().ok()).expect(name)
        };
        assert!(value("validator_node_finalized_height ") >= 3.0, "{text}");
        assert_eq!(value("validator_node_transactions_succeeded_total "), 1.0);
        assert_eq!(value("validator_node_mempool_transactions "), 0.0);
        assert!(value("validator_node_block_execution_seconds_count ") >= 3.0);
        drop(application);
        stop();
        let _ = std::fs::remove_dir_all(&directory);
    }
}
