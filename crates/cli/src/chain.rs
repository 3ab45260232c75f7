//! Chain verbs over a node's JSON-RPC: `based query head|account|brain` and `based transfer`.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use based_rpc::client;
use based_types::{
    Call, Encode as _, PublicKey, SecretKey, Transaction, format_amount, parse_amount,
};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Endpoint {
    /// The node's JSON-RPC address.
    #[arg(long, default_value = "http://127.0.0.1:8545", env = "BASED_RPC")]
    rpc: String,
}

impl Endpoint {
    fn address(&self) -> Result<SocketAddr> {
        let text = self.rpc.strip_prefix("http://").unwrap_or(&self.rpc).trim_end_matches('/');
        text.to_socket_addrs()
            .with_context(|| format!("--rpc {:?} is not host:port", self.rpc))?
            .next()
            .ok_or_else(|| anyhow!("--rpc {:?} resolves to no address", self.rpc))
    }

    fn call(&self, method: &str, params: Value) -> Result<Value> {
        Ok(client::call(self.address()?, method, params)?)
    }
}

#[derive(clap::Subcommand)]
pub enum QueryCommand {
    /// The finalized head: height, hash, state root.
    Head {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// An account's BASED and PEPE balances and nonce.
    Account {
        address: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// A Brain's owner and settings.
    Brain {
        id: u16,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

pub fn query(command: QueryCommand) -> Result<()> {
    let result = match command {
        QueryCommand::Head { endpoint } => endpoint.call("based_getHead", json!([]))?,
        QueryCommand::Account { address, endpoint } => {
            endpoint.call("based_getAccount", json!([address]))?
        }
        QueryCommand::Brain { id, endpoint } => {
            let brain = endpoint.call("based_getBrain", json!([id]))?;
            if brain.is_null() {
                bail!("brain {id} does not exist");
            }
            brain
        }
    };
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct TransferArgs {
    /// Recipient address (64 hex digits).
    #[arg(long)]
    to: String,
    /// Amount in BASED, e.g. 1.5.
    #[arg(long)]
    amount: String,
    /// Fee in BASED [default: the chain's minimum, 0.000001].
    #[arg(long, default_value = "0.000001")]
    fee: String,
    /// Sign with devnet dev account N (keys are public: local testing only).
    #[arg(long, conflicts_with = "key_file")]
    dev_account: Option<usize>,
    /// Sign with the 32-byte ed25519 seed in this file (hex).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Return after submission instead of waiting for finality.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

fn signing_key(args: &TransferArgs) -> Result<SecretKey> {
    match (&args.dev_account, &args.key_file) {
        (Some(index), _) => Ok(crate::devnet::dev_account(*index)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            let bytes = based_rpc::decode_hex(text.trim().trim_start_matches("0x"))
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let seed: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow!("{} must hold 32 bytes of hex", path.display()))?;
            Ok(SecretKey::from_seed(seed))
        }
        (None, None) => bail!("say who signs: --dev-account N or --key-file FILE"),
    }
}

fn units(value: &Value) -> Result<u64> {
    value.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("bad amount {value}"))
}

pub fn transfer(args: TransferArgs) -> Result<()> {
    let key = signing_key(&args)?;
    let to: PublicKey = args.to.parse().map_err(|e| anyhow!("--to {:?}: {e}", args.to))?;
    let amount = parse_amount(&args.amount).map_err(|e| anyhow!("--amount: {e}"))?;
    let fee = parse_amount(&args.fee).map_err(|e| anyhow!("--fee: {e}"))?;
    let head = args.endpoint.call("based_getHead", json!([]))?;
    let chain_id = head["chain_id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| anyhow!("the node reported no chain id"))?;
    let signer = key.public_key();
    let account = args.endpoint.call("based_getAccount", json!([signer.to_hex()]))?;
    let nonce = account["nonce"].as_u64().ok_or_else(|| anyhow!("the node reported no nonce"))?;
    let balance = units(&account["balance"])?;
    if balance < amount.saturating_add(fee) {
        bail!(
            "{signer} holds {} BASED, less than {} plus the fee {}",
            format_amount(balance),
            format_amount(amount),
            format_amount(fee)
        );
    }
    let call = Call::Transfer { to, amount };
    let signed = Transaction { chain_id, signer, nonce, fee, call }.sign(&key);
    let encoded = based_rpc::encode_hex(&signed.to_bytes());
    let sent = args.endpoint.call("based_sendTransaction", json!([encoded]))?;
    let hash = sent["hash"].as_str().unwrap_or_default().to_string();
    println!("submitted {hash}: {} BASED from {signer} to {to}", format_amount(amount));
    if args.no_wait {
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let account = args.endpoint.call("based_getAccount", json!([signer.to_hex()]))?;
        if account["nonce"].as_u64().is_some_and(|n| n > nonce) {
            println!(
                "finalized at height {} after {:.1} s; balance {} BASED",
                account["height"],
                started.elapsed().as_secs_f64(),
                format_amount(units(&account["balance"])?)
            );
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("not finalized after 60 s (nonce still {nonce}); it may still be pending");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
