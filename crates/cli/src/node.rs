//! `based node run`: one validator (based-node) with its JSON-RPC server (based-rpc), configured
//! by a JSON file and a JSON genesis (formats in docs/rpc.md, "Running a node").

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow, bail};
use based_node::ledger::{Overlay, Snapshot};
use based_node::run::MetricsEncoder;
use based_node::{Application, ChainBlock, ChainSpec, NodeConfig};
use based_rpc::{ChainInfo, ChainView, Head, NodeApi, decode_hex, encode_hex};
use based_state::{GenesisConfig, OutcomeRecord, Params, State};
use based_types::{Amount, Block, BrainId, Hash, PublicKey, SignedTransaction};
use commonware_codec::{DecodeExt as _, Encode as _};
use commonware_cryptography::{Signer as _, ed25519};
use serde::{Deserialize, Serialize};
use tracing::{error, info};

#[derive(clap::Subcommand)]
pub enum NodeCommand {
    /// Run a validator and its JSON-RPC server from a config file (as `based devnet` writes).
    Run(RunArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Node config file (JSON; see docs/rpc.md).
    #[arg(long)]
    config: PathBuf,
    /// JSON-RPC address, overriding the config's `rpc_listen`.
    #[arg(long)]
    rpc: Option<SocketAddr>,
    /// Stop when standard input closes (so that `based devnet`'s nodes never outlive it).
    #[arg(long, hide = true)]
    stop_on_stdin_eof: bool,
}

/// `config.json`: one validator. Relative paths are relative to the file's folder.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// Hex of the validator's 32-byte ed25519 secret key.
    pub validator_key: String,
    /// Holds `ledger.redb` and commonware's storage.
    pub directory: PathBuf,
    pub genesis: PathBuf,
    pub p2p_listen: SocketAddr,
    /// The address peers dial.
    pub p2p_dialable: SocketAddr,
    /// JSON-RPC; keep it on loopback unless a proxy guards it.
    pub rpc_listen: SocketAddr,
    /// Validators to dial first.
    pub bootstrappers: Vec<Peer>,
    /// Loopback-friendly p2p settings (devnet) instead of internet ones.
    #[serde(default)]
    pub local: bool,
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
}

fn default_worker_threads() -> usize {
    2
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Hex of the peer's ed25519 validator public key.
    pub public_key: String,
    pub address: SocketAddr,
}

/// `genesis.json`: what every validator must agree on. Protocol parameters are the defaults
/// of `based_state::Params` except those named in `params`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    pub chain_id: u32,
    pub genesis_time_ms: u64,
    pub block_time_ms: u64,
    pub max_block_transactions: usize,
    /// Hex ed25519 validator public keys.
    pub validators: Vec<String>,
    /// Owner of the reserved Brains #0..#6 and #47.
    pub foundation: String,
    pub balances: Vec<Balance>,
    pub pepe_balances: Vec<Balance>,
    pub relayers: Vec<String>,
    pub relayer_threshold: u32,
    /// Governance parameters that differ from the defaults, by the names of `based proposal
    /// submit --param` (e.g. `{"tempo": 20}`); each is range-checked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balance {
    pub address: String,
    /// Base units (10^-9), as a decimal string.
    pub amount: String,
}

pub fn validator_key_hex(key: &ed25519::PrivateKey) -> String {
    encode_hex(&key.encode())
}

pub fn validator_public_hex(key: &ed25519::PublicKey) -> String {
    encode_hex(&key.encode())
}

fn parse_validator_key(hex: &str) -> Result<ed25519::PrivateKey> {
    let bytes = decode_hex(hex).map_err(|e| anyhow!("validator_key: {e}"))?;
    ed25519::PrivateKey::decode(bytes.as_slice())
        .map_err(|e| anyhow!("validator_key must be 32 bytes of hex: {e}"))
}

fn parse_validator_public(hex: &str) -> Result<ed25519::PublicKey> {
    let bytes = decode_hex(hex).map_err(|e| anyhow!("validator public key {hex:?}: {e}"))?;
    ed25519::PublicKey::decode(bytes.as_slice())
        .map_err(|e| anyhow!("validator public key {hex:?}: {e}"))
}

fn parse_address(hex: &str) -> Result<PublicKey> {
    hex.parse().map_err(|e| anyhow!("address {hex:?}: {e}"))
}

fn parse_balances(balances: &[Balance]) -> Result<Vec<(PublicKey, Amount)>> {
    balances
        .iter()
        .map(|balance| {
            let amount = balance.amount.parse().with_context(|| {
                format!("amount {:?} must be an integer of base units", balance.amount)
            })?;
            Ok((parse_address(&balance.address)?, amount))
        })
        .collect()
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

pub fn chain_spec(genesis: &GenesisFile) -> Result<ChainSpec> {
    let mut validators = genesis
        .validators
        .iter()
        .map(|hex| parse_validator_public(hex))
        .collect::<Result<Vec<_>>>()?;
    validators.sort();
    validators.dedup();
    if validators.is_empty() {
        bail!("genesis names no validators");
    }
    if genesis.block_time_ms == 0 {
        bail!("block_time_ms must be positive");
    }
    let relayers = genesis.relayers.iter().map(|hex| parse_address(hex)).collect::<Result<_>>()?;
    let mut params = Params::default();
    for (name, value) in &genesis.params {
        let param = crate::calls::parse_param(name).map_err(|e| anyhow!("params: {e}"))?;
        params.set(param, *value).map_err(|e| anyhow!("params: {name}: {e}"))?;
    }
    Ok(ChainSpec {
        genesis: GenesisConfig {
            chain_id: genesis.chain_id,
            foundation: parse_address(&genesis.foundation)?,
            balances: parse_balances(&genesis.balances)?,
            pepe_balances: parse_balances(&genesis.pepe_balances)?,
            relayers,
            relayer_threshold: genesis.relayer_threshold,
            params,
        },
        genesis_time_ms: genesis.genesis_time_ms,
        block_time_ms: genesis.block_time_ms,
        max_block_transactions: genesis.max_block_transactions,
        validators,
    })
}

/// Reads a node config and its genesis into the node's configuration and the RPC address.
pub fn load(path: &Path) -> Result<(NodeConfig, SocketAddr)> {
    let file: NodeFile = read_json(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let genesis: GenesisFile = read_json(&base.join(&file.genesis))?;
    let spec =
        chain_spec(&genesis).with_context(|| format!("genesis {}", file.genesis.display()))?;
    let signer = parse_validator_key(&file.validator_key)?;
    if !spec.validators.contains(&signer.public_key()) {
        bail!("validator key {} is not in the genesis validator set", signer.public_key());
    }
    let bootstrappers = file
        .bootstrappers
        .iter()
        .map(|peer| Ok((parse_validator_public(&peer.public_key)?, peer.address)))
        .collect::<Result<_>>()?;
    let config = NodeConfig {
        signer,
        spec,
        directory: base.join(&file.directory),
        listen: file.p2p_listen,
        dialable: file.p2p_dialable,
        bootstrappers,
        local: file.local,
        worker_threads: file.worker_threads,
    };
    Ok((config, file.rpc_listen))
}

/// The node as the RPC server sees it.
struct RpcNode {
    application: Application,
    chain: ChainInfo,
    metrics: MetricsEncoder,
}

fn read_block(snapshot: &Snapshot, height: u64) -> Result<Option<Block>, String> {
    let Some(bytes) = snapshot.block(height).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let block = ChainBlock::decode(bytes.as_slice())
        .map_err(|e| format!("finalized block {height} unreadable: {e}"))?;
    Ok(Some(block.inner))
}

/// One redb snapshot of the finalized chain and its head.
struct RpcView {
    head: Head,
    snapshot: Snapshot,
}

impl ChainView for RpcView {
    type Store = Overlay;

    fn head(&self) -> &Head {
        &self.head
    }

    fn state(&self) -> State<Overlay> {
        State::open(Overlay::new(self.snapshot.clone(), Vec::new()))
    }

    fn block(&self, height: u64) -> Result<Option<Block>, String> {
        read_block(&self.snapshot, height)
    }

    fn height_of(&self, hash: &Hash) -> Result<Option<u64>, String> {
        self.snapshot.height_of(hash).map_err(|e| e.to_string())
    }

    fn outcome(&self, height: u64) -> Result<Option<OutcomeRecord>, String> {
        self.snapshot.outcome(height).map_err(|e| e.to_string())
    }

    fn transaction(&self, hash: &Hash) -> Result<Option<(u64, u32)>, String> {
        self.snapshot.transaction(hash).map_err(|e| e.to_string())
    }

    fn last_epoch(&self, brain: BrainId) -> Result<Option<u64>, String> {
        self.snapshot.last_epoch(brain).map_err(|e| e.to_string())
    }
}

impl NodeApi for RpcNode {
    type View = RpcView;

    fn view(&self) -> Result<RpcView, String> {
        let snapshot = self.application.ledger().snapshot().map_err(|e| e.to_string())?;
        let applied = snapshot
            .applied()
            .map_err(|e| e.to_string())?
            .ok_or("the ledger holds no genesis yet")?;
        let block = read_block(&snapshot, applied.height)?
            .ok_or_else(|| format!("finalized block {} is missing", applied.height))?;
        let header = &block.header;
        let head = Head {
            chain_id: header.chain_id,
            height: header.height,
            hash: header.hash(),
            state_root: header.state_root,
            timestamp_ms: header.timestamp_ms,
            proposer: header.proposer,
        };
        Ok(RpcView { head, snapshot })
    }

    fn submit(&self, transaction: SignedTransaction) -> Result<(), String> {
        self.application.submit(transaction).map_err(|e| e.to_string())
    }

    fn pending_transactions(&self) -> usize {
        self.application.pending_transactions()
    }

    fn is_pending(&self, hash: &Hash) -> bool {
        self.application.is_pending(hash)
    }

    fn chain(&self) -> &ChainInfo {
        &self.chain
    }

    fn watch_finalized(&self) -> tokio::sync::watch::Receiver<u64> {
        self.application.watch_finalized()
    }

    fn metrics(&self) -> String {
        (self.metrics)()
    }
}

pub fn run(command: NodeCommand) -> Result<()> {
    let NodeCommand::Run(args) = command;
    let (config, rpc_listen) = load(&args.config)?;
    let rpc_listen = args.rpc.unwrap_or(rpc_listen);
    let listener =
        TcpListener::bind(rpc_listen).with_context(|| format!("bind JSON-RPC on {rpc_listen}"))?;
    let public_key = config.signer.public_key();
    let p2p = config.listen;
    let info = ChainInfo {
        genesis_time_ms: config.spec.genesis_time_ms,
        block_time_ms: config.spec.block_time_ms,
        max_block_transactions: config.spec.max_block_transactions,
        validators: config.spec.validators.iter().map(validator_public_hex).collect(),
    };

    // Kept alive for the whole run unless standard input is watched.
    let (stop, stopped) = futures::channel::oneshot::channel::<&'static str>();
    let mut stop = Some(stop);
    if args.stop_on_stdin_eof {
        let stop = stop.take();
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            if let Some(stop) = stop {
                let _ = stop.send("standard input closed");
            }
        });
    }
    let shutdown = async move {
        let reason = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            Ok(mut terminate) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted",
                _ = terminate.recv() => "terminated",
                reason = stopped => reason.unwrap_or("stopped"),
            },
            Err(error) => {
                error!(%error, "cannot watch SIGTERM");
                stopped.await.unwrap_or("stopped")
            }
        };
        info!(reason, "stopping the node");
    };
    let on_start = move |application, metrics| match based_rpc::spawn(
        Arc::new(RpcNode { application, chain: info, metrics }),
        listener,
    ) {
        Ok(address) => {
            println!("validator {public_key} p2p {p2p} rpc http://{address}");
            let _ = std::io::stdout().flush();
        }
        Err(error) => error!(%error, "the JSON-RPC server did not start"),
    };
    based_node::run(config, on_start, shutdown).context("node stopped with an error")?;
    drop(stop);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesis(params: &[(&str, u64)]) -> GenesisFile {
        let key = ed25519::PrivateKey::decode([7u8; 32].as_slice()).unwrap();
        GenesisFile {
            chain_id: 7,
            genesis_time_ms: 0,
            block_time_ms: 1_000,
            max_block_transactions: 10,
            validators: vec![validator_public_hex(&key.public_key())],
            foundation: PublicKey([1; 32]).to_hex(),
            balances: Vec::new(),
            pepe_balances: Vec::new(),
            relayers: Vec::new(),
            relayer_threshold: 1,
            params: params.iter().map(|(name, value)| (name.to_string(), *value)).collect(),
        }
    }

    #[test]
    fn genesis_params_override_the_defaults_by_name() {
        let spec = chain_spec(&genesis(&[("tempo", 20), ("weights_rate_limit", 5)])).unwrap();
        assert_eq!(spec.genesis.params.tempo, 20);
        assert_eq!(spec.genesis.params.weights_rate_limit, 5);
        assert_eq!(spec.genesis.params.immunity_period, Params::default().immunity_period);
        let error = chain_spec(&genesis(&[("tempo", 0)])).unwrap_err().to_string();
        assert!(error.starts_with("params: tempo:"), "{error}");
        let error = chain_spec(&genesis(&[("speed", 1)])).unwrap_err().to_string();
        assert!(error.contains("unknown parameter \"speed\""), "{error}");
        // Omitted `params` reads as the defaults, and an empty map is not written.
        let text = serde_json::to_string(&genesis(&[])).unwrap();
        assert!(!text.contains("params"));
        let back: GenesisFile = serde_json::from_str(&text).unwrap();
        assert_eq!(chain_spec(&back).unwrap().genesis.params, Params::default());
    }
}
