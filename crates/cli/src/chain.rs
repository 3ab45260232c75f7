//! Reading the chain over a node's JSON-RPC: the endpoint option and `based query head|account|brain`.

use std::net::{SocketAddr, ToSocketAddrs as _};

use anyhow::{Context as _, Result, anyhow, bail};
use based_rpc::client;
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

    pub fn call(&self, method: &str, params: Value) -> Result<Value> {
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
    /// A transaction's status: pending, or finalized with its height, success, error and
    /// events.
    Transaction {
        /// The hash `based` printed when it submitted the transaction.
        hash: String,
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
        QueryCommand::Transaction { hash, endpoint } => {
            let transaction = endpoint.call("based_getTransaction", json!([hash]))?;
            if transaction.is_null() {
                bail!("the node knows no transaction {hash}");
            }
            transaction
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

/// Reads an amount the node sent as a decimal string of base units.
pub fn units(value: &Value) -> Result<u64> {
    value.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("bad amount {value}"))
}
