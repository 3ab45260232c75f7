//! `based devnet`: a local network of validators, each a `based node run` child process on
//! loopback, with a generated genesis (funded dev accounts, the reserved Brains). Its files live
//! in one directory; a second start resumes from them.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use based_types::{SecretKey, coins};
use commonware_codec::DecodeExt as _;
use commonware_cryptography::{Signer as _, ed25519};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::node::{
    Balance, GenesisFile, NodeFile, Peer, read_json, validator_key_hex, validator_public_hex,
    write_json,
};

pub const DEVNET_CHAIN_ID: u32 = 1337;
pub const DEV_ACCOUNTS: usize = 4;
/// Most transactions per block in a devnet's genesis.
pub const MAX_BLOCK_TRANSACTIONS: usize = 2_000;
/// How long stopping nodes may take before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(clap::Args)]
pub struct DevnetArgs {
    /// Directory for keys, genesis, node configs, databases and logs
    /// [default: $BASED_HOME/devnet, else ./devnet].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Number of validators (only when the devnet is created).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=16))]
    nodes: u16,
    /// Block time in milliseconds (only when the devnet is created).
    #[arg(long, default_value_t = 1000)]
    block_time_ms: u64,
    /// Blocks between two payouts of a Brain (the `tempo` parameter; only when the devnet is
    /// created). Mainnet's is 360; a short one lets rewards flow within seconds.
    #[arg(long, default_value_t = DEFAULT_TEMPO, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    tempo: u64,
    /// First p2p port; node i listens on this plus i (only when the devnet is created).
    #[arg(long, default_value_t = 30300)]
    p2p_port: u16,
    /// First JSON-RPC port; node i serves on this plus i (only when the devnet is created).
    #[arg(long, default_value_t = 8545)]
    rpc_port: u16,
    /// Delete the directory first and start a new chain.
    #[arg(long)]
    reset: bool,
}

/// The devnet's tempo unless `--tempo` says otherwise (mainnet's is 360 blocks).
pub const DEFAULT_TEMPO: u64 = 20;

/// The sizing of a new devnet.
pub struct Layout {
    pub nodes: u16,
    pub block_time_ms: u64,
    /// The `tempo` parameter: blocks between two payouts of a Brain.
    pub tempo: u64,
    /// Node i listens for p2p on this plus i.
    pub p2p_port: u16,
    /// Node i serves JSON-RPC on this plus i.
    pub rpc_port: u16,
}

/// `accounts.json`: the funded dev accounts. Their keys are for local testing only.
#[derive(Serialize, Deserialize)]
pub struct DevAccount {
    pub address: String,
    /// Hex of the 32-byte ed25519 seed (`SecretKey::from_seed`).
    pub secret_seed: String,
    pub balance: String,
    pub pepe: String,
}

pub fn default_dir() -> PathBuf {
    match std::env::var_os("BASED_HOME") {
        Some(home) => PathBuf::from(home).join("devnet"),
        None => PathBuf::from("devnet"),
    }
}

/// The dev account keys: seeds are SHA-256 of `based-devnet-account-<i>`, the same on every
/// devnet, so that scripts can sign without reading files.
pub fn dev_account(index: usize) -> SecretKey {
    let seed = sha2::Sha256::digest(format!("based-devnet-account-{index}").as_bytes());
    SecretKey::from_seed(seed.into())
}

fn random_validator_key() -> Result<ed25519::PrivateKey> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut seed))
        .context("read /dev/urandom")?;
    ed25519::PrivateKey::decode(seed.as_slice()).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn node_dir(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("node-{index}"))
}

/// Writes genesis.json, accounts.json and node-<i>/config.json.
pub fn create(dir: &Path, args: &Layout) -> Result<()> {
    let nodes = usize::from(args.nodes);
    let localhost = |port: u16, index: usize| -> Result<SocketAddr> {
        let port = port.checked_add(u16::try_from(index)?).context("port out of range")?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let keys = (0..nodes).map(|_| random_validator_key()).collect::<Result<Vec<_>>>()?;
    let accounts: Vec<DevAccount> = (0..DEV_ACCOUNTS)
        .map(|index| DevAccount {
            address: dev_account(index).public_key().to_hex(),
            secret_seed: based_rpc::encode_hex(&dev_account(index).seed()),
            balance: coins(10_000_000).to_string(),
            pepe: coins(1_000_000).to_string(),
        })
        .collect();
    let genesis_time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("clock before 1970")?
        .as_millis();
    let foundation = accounts[0].address.clone();
    let genesis = GenesisFile {
        chain_id: DEVNET_CHAIN_ID,
        genesis_time_ms: u64::try_from(genesis_time_ms)?,
        block_time_ms: args.block_time_ms,
        max_block_transactions: MAX_BLOCK_TRANSACTIONS,
        validators: keys.iter().map(|key| validator_public_hex(&key.public_key())).collect(),
        foundation: foundation.clone(),
        balances: accounts
            .iter()
            .map(|a| Balance { address: a.address.clone(), amount: a.balance.clone() })
            .collect(),
        pepe_balances: accounts
            .iter()
            .map(|a| Balance { address: a.address.clone(), amount: a.pepe.clone() })
            .collect(),
        relayers: vec![foundation],
        relayer_threshold: 1,
        params: [("tempo".to_string(), args.tempo)].into(),
    };
    crate::node::chain_spec(&genesis)?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    write_json(&dir.join("accounts.json"), &accounts)?;
    for (index, key) in keys.iter().enumerate() {
        let bootstrappers = keys
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .map(|(other, key)| {
                Ok(Peer {
                    public_key: validator_public_hex(&key.public_key()),
                    address: localhost(args.p2p_port, other)?,
                })
            })
            .collect::<Result<_>>()?;
        let p2p = localhost(args.p2p_port, index)?;
        let config = NodeFile {
            validator_key: validator_key_hex(key),
            directory: PathBuf::from("data"),
            genesis: PathBuf::from("../genesis.json"),
            p2p_listen: p2p,
            p2p_dialable: p2p,
            rpc_listen: localhost(args.rpc_port, index)?,
            bootstrappers,
            local: true,
            worker_threads: 2,
        };
        let node = node_dir(dir, index);
        std::fs::create_dir_all(&node)?;
        write_json(&node.join("config.json"), &config)?;
    }
    // Written last: its presence marks a complete devnet.
    write_json(&dir.join("genesis.json"), &genesis)
}

/// The node processes; stopped (stdin closed, then killed after a grace period) when dropped.
pub struct Nodes(Vec<(usize, Child)>);

impl Nodes {
    /// Starts one `based node run` per `node-<i>/config.json` of `dir` (logs in
    /// `node-<i>/node.log`); returns them with their configs.
    pub fn start(dir: &Path) -> Result<(Nodes, Vec<NodeFile>)> {
        let mut configs = Vec::new();
        while node_dir(dir, configs.len()).join("config.json").exists() {
            let path = node_dir(dir, configs.len()).join("config.json");
            let file: NodeFile = read_json(&path)?;
            configs.push((path, file));
        }
        if configs.is_empty() {
            bail!("{} holds a genesis but no node-0/config.json", dir.display());
        }
        let executable = std::env::current_exe().context("locate the based executable")?;
        let mut nodes = Nodes(Vec::new());
        for (index, (path, _)) in configs.iter().enumerate() {
            let log_path = node_dir(dir, index).join("node.log");
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("open {}", log_path.display()))?;
            let child = Command::new(&executable)
                .args(["node", "run", "--stop-on-stdin-eof", "--config"])
                .arg(path)
                .stdin(Stdio::piped())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("start node-{index}"))?;
            nodes.0.push((index, child));
        }
        Ok((nodes, configs.into_iter().map(|(_, file)| file).collect()))
    }

    /// Process ids, in node order.
    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|(_, child)| child.id()).collect()
    }

    /// Why a node is no longer running, if one has exited.
    pub fn exited(&mut self) -> Option<String> {
        self.0.iter_mut().find_map(|(index, child)| match child.try_wait() {
            Ok(Some(status)) => Some(format!("node-{index} exited ({status})")),
            _ => None,
        })
    }

    pub fn stop(&mut self) {
        for (_, child) in &mut self.0 {
            drop(child.stdin.take());
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (index, child) in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("node-{index} did not stop within {STOP_GRACE:?}; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.0.clear();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn run(args: DevnetArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    if args.reset && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("delete {}", dir.display()))?;
    }
    if dir.join("genesis.json").exists() {
        println!("resuming the devnet in {} (--reset starts a new one)", dir.display());
    } else {
        let layout = Layout {
            nodes: args.nodes,
            block_time_ms: args.block_time_ms,
            tempo: args.tempo,
            p2p_port: args.p2p_port,
            rpc_port: args.rpc_port,
        };
        create(&dir, &layout)?;
        println!("created a devnet in {}", dir.display());
    }
    let (mut nodes, configs) = Nodes::start(&dir)?;
    for (index, file) in configs.iter().enumerate() {
        println!(
            "node-{index}: rpc http://{}  p2p {}  log {}",
            file.rpc_listen,
            file.p2p_listen,
            node_dir(&dir, index).join("node.log").display()
        );
    }
    let accounts: Vec<DevAccount> = read_json(&dir.join("accounts.json"))?;
    println!("dev accounts (keys in {}):", dir.join("accounts.json").display());
    for account in &accounts {
        println!("  {}", account.address);
    }
    println!("devnet running; Ctrl-C stops it");
    let _ = std::io::stdout().flush();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let failed = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok::<_, std::io::Error>(None),
                _ = terminate.recv() => return Ok(None),
                _ = ticker.tick() => {
                    if let Some(reason) = nodes.exited() {
                        return Ok(Some(reason));
                    }
                }
            }
        }
    })?;
    println!("stopping the devnet");
    nodes.stop();
    match failed {
        Some(reason) => bail!("{reason}; see its node.log"),
        None => {
            println!("devnet stopped; `based devnet` resumes it");
            Ok(())
        }
    }
}
