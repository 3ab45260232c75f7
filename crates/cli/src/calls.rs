//! One verb per transaction of `based_types::Call`: each parses its input, checks what it can
//! against the finalized state (balances, ownership, fees) so that a doomed transaction does not
//! cost its fee, and sends it through `tx::Pending`, signed by the key the state machine expects.

use anyhow::{Context as _, Result, anyhow, bail};
use based_state::params::{STAKE_LOCK, param_range};
use based_types::{
    Amount, BrainId, BrainSetting, Call, Decode as _, Encode as _, Hash, ParamId, PublicKey,
    Reader, Role, Signature, Uid, UsageReceipt, format_amount,
};
use based_wallet::PasswordSource;
use serde_json::{Value, json};

use crate::chain::Endpoint;
use crate::tx::{
    Key, Pending, TxOptions, field_units, format_percent, open_wallet, parse_address, parse_coins,
    parse_percent,
};

#[derive(clap::Args)]
pub struct TransferArgs {
    /// Recipient address (64 hex digits).
    #[arg(long)]
    to: String,
    /// Amount, e.g. 1.5 (up to 9 decimals).
    #[arg(long)]
    amount: String,
    #[command(flatten)]
    tx: TxOptions,
}

#[derive(clap::Subcommand)]
pub enum PepeCommand {
    /// Send bridged PEPE to an address (signed by the cold key).
    Transfer(TransferArgs),
}

/// A validator's hot key: one of the signing wallet's, or any address.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct HotkeyTarget {
    /// A hot key of the signing wallet, by name.
    #[arg(long)]
    hotkey: Option<String>,
    /// Any hot key, by address.
    #[arg(long)]
    hotkey_address: Option<String>,
}

impl HotkeyTarget {
    fn resolve(&self, wallet: &str) -> Result<PublicKey> {
        match (&self.hotkey, &self.hotkey_address) {
            (Some(name), _) => Ok(open_wallet(wallet)?.hotkey_address(name)?),
            (None, Some(address)) => parse_address("--hotkey-address", address),
            (None, None) => bail!("say which hot key: --hotkey NAME or --hotkey-address ADDRESS"),
        }
    }
}

#[derive(clap::Args)]
pub struct StakeArgs {
    /// The Brain the validator is registered on.
    #[arg(long)]
    brain: BrainId,
    #[command(flatten)]
    target: HotkeyTarget,
    /// Amount of BASED, e.g. 100.
    #[arg(long)]
    amount: String,
    #[command(flatten)]
    tx: TxOptions,
}

#[derive(clap::Subcommand)]
pub enum StakeCommand {
    /// Stake BASED on a validator of a Brain (signed by the staking cold key).
    Add(StakeArgs),
    /// Take staked BASED back (signed by the staking cold key).
    Remove(StakeArgs),
}

#[derive(clap::Subcommand)]
pub enum BrainCommand {
    /// Acquire the lowest free Brain by burning PEPE (1,000 + 200 per Brain burned so far;
    /// transferable) or by locking 100,000 PEPE (not transferable, matures after 777,600 blocks).
    #[command(group(clap::ArgGroup::new("how").required(true).args(["burn", "stake"])))]
    Acquire {
        /// Burn PEPE at the current price.
        #[arg(long)]
        burn: bool,
        /// Lock 100,000 PEPE.
        #[arg(long)]
        stake: bool,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// Change one of your Brain's settings (signed by the owner's cold key).
    Set {
        /// The Brain's number.
        brain: BrainId,
        #[command(subcommand)]
        setting: SettingCommand,
    },
    /// Let an operator transfer your Brain (ERC-721 approve), or clear the approval.
    #[command(group(clap::ArgGroup::new("operator").required(true).args(["to", "none"])))]
    Approve {
        brain: BrainId,
        /// The operator's address.
        #[arg(long)]
        to: Option<String>,
        /// Clear the approval.
        #[arg(long)]
        none: bool,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// Transfer a Brain acquired by burn (by its owner or approved operator).
    Transfer {
        brain: BrainId,
        /// The new owner's address.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// Deactivate a mature staked Brain: its nodes are deregistered, the 100,000 PEPE unlock.
    Deactivate {
        brain: BrainId,
        #[command(flatten)]
        tx: TxOptions,
    },
}

#[derive(clap::Subcommand)]
pub enum SettingCommand {
    /// The model the Brain serves.
    Model {
        /// Model id, e.g. smollm2-135m.
        #[arg(long)]
        id: String,
        /// Model revision.
        #[arg(long, default_value = "")]
        revision: String,
        /// SHA-256 of the weights file (64 hex digits) [default: zero].
        #[arg(long)]
        hash: Option<String>,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// The miners' share of the nodes' emission (validators get the rest), e.g. 60%.
    Split {
        #[arg(long)]
        miners: String,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// The Brain's display name (up to 64 bytes).
    Name {
        name: String,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// The Brain's unique label: 1 to 32 of a-z, 0-9 and '-', not at either end.
    Label {
        label: String,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// Where the owner's emission share and the fees go.
    RewardAddress {
        address: String,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// Fee in BASED paid by each later registration (registered nodes keep what they paid).
    RegistrationFee {
        amount: String,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// Extra fee in BASED per registration.
    MemorizeFee {
        amount: String,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// The owner's share of compute payments, e.g. 10%.
    OwnerFeeShare {
        percent: String,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// Prices in BASED per 1,000 prompt and completion tokens, and the maximum context.
    ComputePrices {
        #[arg(long)]
        prompt: String,
        #[arg(long)]
        completion: String,
        #[arg(long)]
        max_context: u32,
        #[command(flatten)]
        tx: TxOptions,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Miner,
    Validator,
}

#[derive(clap::Args)]
pub struct RegisterArgs {
    /// The Brain to join.
    #[arg(long)]
    brain: BrainId,
    /// Join as a miner or a validator.
    #[arg(long, value_enum)]
    role: RoleArg,
    #[command(flatten)]
    target: HotkeyTarget,
    /// Refuse if the fees exceed this many BASED [default: the Brain's current fees].
    #[arg(long)]
    max_fee: Option<String>,
    #[command(flatten)]
    tx: TxOptions,
}

#[derive(clap::Subcommand)]
pub enum WeightsCommand {
    /// Set a validator's weights on miners (signed by the validator's hot key).
    Set {
        #[arg(long)]
        brain: BrainId,
        /// Miner uid and weight pairs, e.g. 0:65535,3:1000 (weights 0 to 65535).
        #[arg(long)]
        weights: String,
        /// The validator's hot key in the signing wallet.
        #[arg(long, default_value = "default")]
        hotkey: String,
        #[command(flatten)]
        tx: TxOptions,
    },
}

#[derive(clap::Subcommand)]
pub enum CommissionCommand {
    /// Set a validator's commission on its stakers' rewards (signed by its hot key).
    Set {
        #[arg(long)]
        brain: BrainId,
        /// Commission, e.g. 12.5%.
        #[arg(long)]
        percent: String,
        /// The validator's hot key in the signing wallet.
        #[arg(long, default_value = "default")]
        hotkey: String,
        #[command(flatten)]
        tx: TxOptions,
    },
}

#[derive(clap::Subcommand)]
pub enum EscrowCommand {
    /// Move BASED into your compute spending account.
    Fund {
        #[arg(long)]
        amount: String,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// Start the release delay of your escrow (miners may still redeem during it).
    RequestRelease {
        #[command(flatten)]
        tx: TxOptions,
    },
    /// After the delay, return what is left in the escrow to your balance.
    Release {
        #[command(flatten)]
        tx: TxOptions,
    },
    /// Sign a usage receipt for a miner (off chain; prints it in hex for `escrow redeem`).
    Receipt {
        #[arg(long)]
        brain: BrainId,
        /// The miner's hot key address.
        #[arg(long)]
        miner: String,
        /// Cumulative prompt tokens of this (you, Brain, miner) channel.
        #[arg(long)]
        prompt_units: u64,
        /// Cumulative completion tokens.
        #[arg(long)]
        completion_units: u64,
        /// Cumulative BASED owed, e.g. 0.25.
        #[arg(long)]
        amount: String,
        /// The cold key's password file [default: $BASED_PASSWORD, else a prompt].
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
        #[arg(long, short = 'w', env = "BASED_WALLET", default_value = "default")]
        wallet: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Redeem a user's receipt (signed by the miner's hot key named in it).
    Redeem {
        /// The receipt as `escrow receipt` printed it.
        #[arg(long)]
        receipt: String,
        /// The miner's hot key in the signing wallet.
        #[arg(long, default_value = "default")]
        hotkey: String,
        #[command(flatten)]
        tx: TxOptions,
    },
}

#[derive(clap::Subcommand)]
pub enum ProposalCommand {
    /// Propose a parameter change (signed by the owner of a GigaBrain).
    Submit {
        /// Your GigaBrain.
        #[arg(long)]
        brain: BrainId,
        /// The parameter, e.g. tempo (see --help of `proposal submit` for the list).
        #[arg(long, value_parser = parse_param)]
        param: ParamId,
        /// The new value: blocks, base units for fees, parts per billion for shares.
        #[arg(long)]
        value: u64,
        #[command(flatten)]
        tx: TxOptions,
    },
    /// Vote as a GigaBrain's owner (--brain with --approve or --reject) or with all your PEPE
    /// (--pepe with --veto or --support; the PEPE stays locked until the vote ends).
    #[command(group(clap::ArgGroup::new("voter").required(true).args(["brain", "pepe"])))]
    #[command(group(clap::ArgGroup::new("choice").required(true).args(["approve", "reject", "veto", "support"])))]
    Vote {
        #[arg(long)]
        proposal: u64,
        #[arg(long)]
        brain: Option<BrainId>,
        #[arg(long)]
        pepe: bool,
        #[arg(long, requires = "brain")]
        approve: bool,
        #[arg(long, requires = "brain")]
        reject: bool,
        #[arg(long, requires = "pepe")]
        veto: bool,
        #[arg(long, requires = "pepe")]
        support: bool,
        #[command(flatten)]
        tx: TxOptions,
    },
}

#[derive(clap::Subcommand)]
pub enum BridgeCommand {
    /// Attest an Ethereum PEPE deposit (signed by a relayer's cold key).
    Attest {
        /// The 32-byte id of the Ethereum event, 64 hex digits.
        #[arg(long)]
        event_id: String,
        #[arg(long)]
        recipient: String,
        /// PEPE amount, e.g. 5000.
        #[arg(long)]
        amount: String,
        #[command(flatten)]
        tx: TxOptions,
    },
}

/// Governance parameters by name, as `proposal submit --param` takes them.
pub const PARAMS: [(&str, ParamId); 14] = [
    ("tempo", ParamId::Tempo),
    ("bonus-share-ppb", ParamId::BonusSharePpb),
    ("bonus-top-ppb", ParamId::BonusTopPpb),
    ("active-percentile-ppb", ParamId::ActivePercentilePpb),
    ("stake-cap-ppb", ParamId::StakeCapPpb),
    ("owner-share-ppb", ParamId::OwnerSharePpb),
    ("consensus-steepness", ParamId::ConsensusSteepness),
    ("default-registration-fee", ParamId::DefaultRegistrationFee),
    ("default-commission-ppb", ParamId::DefaultCommissionPpb),
    ("immunity-period", ParamId::ImmunityPeriod),
    ("weights-rate-limit", ParamId::WeightsRateLimit),
    ("voting-period", ParamId::VotingPeriod),
    ("min-transaction-fee", ParamId::MinTransactionFee),
    ("escrow-release-delay", ParamId::EscrowReleaseDelay),
];

pub fn parse_param(name: &str) -> Result<ParamId, String> {
    let wanted = name.replace('_', "-");
    PARAMS.iter().find(|(n, _)| *n == wanted).map(|(_, id)| *id).ok_or_else(|| {
        let names: Vec<&str> = PARAMS.iter().map(|(n, _)| *n).collect();
        format!("unknown parameter {name:?}; one of: {}", names.join(", "))
    })
}

/// The Brain's record from RPC; an error if it does not exist.
fn brain(endpoint: &Endpoint, id: BrainId) -> Result<Value> {
    let brain = endpoint.call("based_getBrain", json!([id]))?;
    if brain.is_null() {
        bail!("brain {id} does not exist");
    }
    Ok(brain)
}

/// The node registered with `hotkey` on the Brain, if any (`based_getNode`).
fn node(endpoint: &Endpoint, id: BrainId, hotkey: &PublicKey) -> Result<Option<Value>> {
    let node = endpoint.call("based_getNode", json!([id, hotkey.to_hex()]))?;
    Ok((!node.is_null()).then_some(node))
}

/// The validator registered with `hotkey` on the Brain; an error naming what it is otherwise.
fn validator(endpoint: &Endpoint, id: BrainId, hotkey: &PublicKey) -> Result<Value> {
    match node(endpoint, id, hotkey)? {
        Some(node) if node["role"] == "validator" => Ok(node),
        Some(node) => bail!(
            "hot key {hotkey} is a {} on brain {id}, not a validator",
            node["role"].as_str().unwrap_or("node")
        ),
        None => bail!("hot key {hotkey} is not registered on brain {id}"),
    }
}

fn require_owner(pending: &Pending<'_>, id: BrainId, brain: &Value) -> Result<()> {
    let owner = brain["owner"].as_str().unwrap_or_default();
    if owner != pending.signer.to_hex() {
        bail!("brain {id} belongs to {owner}, not to the signer {}", pending.signer);
    }
    Ok(())
}

/// The price of the next Brain acquired by burn: counts the Brains acquired by burn so far.
fn burn_price(endpoint: &Endpoint) -> Result<Amount> {
    let listed = endpoint.call("based_listBrains", json!([]))?;
    let mut burned = 0u64;
    for entry in listed.as_array().ok_or_else(|| anyhow!("based_listBrains: not a list"))? {
        let id = entry["id"].as_u64().and_then(|id| BrainId::try_from(id).ok());
        let id = id.ok_or_else(|| anyhow!("based_listBrains: bad id in {entry}"))?;
        if based_state::params::RESERVED_BRAINS.contains(&id) {
            continue;
        }
        if brain(endpoint, id)?["acquisition"]["kind"] == "burn" {
            burned += 1;
        }
    }
    based_state::burn_price(burned).context("burn price overflows")
}

pub fn transfer(args: TransferArgs) -> Result<()> {
    let to = parse_address("--to", &args.to)?;
    let amount = parse_coins("--amount", &args.amount)?;
    let pending = Pending::new(&args.tx, Key::Cold)?;
    pending.require_balance(amount, "the transfer")?;
    let summary = format!("transfer {} BASED to {to}", format_amount(amount));
    pending.send(Call::Transfer { to, amount }, &summary)
}

pub fn pepe(command: PepeCommand) -> Result<()> {
    let PepeCommand::Transfer(args) = command;
    let to = parse_address("--to", &args.to)?;
    let amount = parse_coins("--amount", &args.amount)?;
    let pending = Pending::new(&args.tx, Key::Cold)?;
    pending.require_pepe(amount, "the transfer")?;
    let summary = format!("transfer {} PEPE to {to}", format_amount(amount));
    pending.send(Call::TransferPepe { to, amount }, &summary)
}

pub fn stake(command: StakeCommand) -> Result<()> {
    let (adding, args) = match command {
        StakeCommand::Add(args) => (true, args),
        StakeCommand::Remove(args) => (false, args),
    };
    let hotkey = args.target.resolve(&args.tx.wallet)?;
    let amount = parse_coins("--amount", &args.amount)?;
    let pending = Pending::new(&args.tx, Key::Cold)?;
    brain(pending.endpoint(), args.brain)?;
    validator(pending.endpoint(), args.brain, &hotkey)?;
    let (call, summary) = if adding {
        pending.require_balance(amount, "the stake")?;
        let summary = format!(
            "stake {} BASED on validator {hotkey} of brain {}",
            format_amount(amount),
            args.brain
        );
        (Call::AddStake { brain: args.brain, hotkey, amount }, summary)
    } else {
        let stakes =
            pending.endpoint().call("based_getStake", json!([args.brain, hotkey.to_hex()]))?;
        let signer = pending.signer.to_hex();
        let staked = stakes["stakers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["staker"] == signer.as_str())
            .map(|entry| field_units(entry, "stake"))
            .transpose()?
            .unwrap_or(0);
        if staked < amount {
            bail!(
                "insufficient stake: {signer} has {} BASED staked on validator {hotkey} of brain \
                 {}, less than {}",
                format_amount(staked),
                args.brain,
                format_amount(amount)
            );
        }
        let summary = format!(
            "unstake {} BASED from validator {hotkey} of brain {}",
            format_amount(amount),
            args.brain
        );
        (Call::RemoveStake { brain: args.brain, hotkey, amount }, summary)
    };
    pending.send(call, &summary)
}

pub fn brain_command(command: BrainCommand) -> Result<()> {
    match command {
        BrainCommand::Acquire { burn, stake, tx } => {
            let pending = Pending::new(&tx, Key::Cold)?;
            if burn {
                let price = burn_price(pending.endpoint())?;
                pending.require_pepe(price, "acquiring a Brain by burn")?;
                let summary = format!("acquire a Brain by burning {} PEPE", format_amount(price));
                pending.send(Call::AcquireBrainByBurn {}, &summary)
            } else {
                debug_assert!(stake);
                pending.require_pepe(STAKE_LOCK, "acquiring a Brain by stake")?;
                let summary =
                    format!("acquire a Brain by locking {} PEPE", format_amount(STAKE_LOCK));
                pending.send(Call::AcquireBrainByStake {}, &summary)
            }
        }
        BrainCommand::Set { brain: id, setting } => set(id, setting),
        BrainCommand::Approve { brain: id, to, none, tx } => {
            let approved = match (&to, none) {
                (Some(to), _) => Some(parse_address("--to", to)?),
                (None, _) => None,
            };
            let pending = Pending::new(&tx, Key::Cold)?;
            let record = brain(pending.endpoint(), id)?;
            require_owner(&pending, id, &record)?;
            if record["acquisition"]["kind"] == "stake" {
                bail!("brain {id} was acquired by stake and cannot be transferred or approved");
            }
            let summary = match approved {
                Some(operator) => format!("approve {operator} to transfer brain {id}"),
                None => format!("clear the approval of brain {id}"),
            };
            pending.send(Call::ApproveBrain { brain: id, approved }, &summary)
        }
        BrainCommand::Transfer { brain: id, to, tx } => {
            let to = parse_address("--to", &to)?;
            let pending = Pending::new(&tx, Key::Cold)?;
            let record = brain(pending.endpoint(), id)?;
            let signer = pending.signer.to_hex();
            if record["owner"] != signer.as_str() && record["approved"] != signer.as_str() {
                bail!(
                    "brain {id} belongs to {} and the signer {signer} is neither its owner nor \
                     its approved operator",
                    record["owner"].as_str().unwrap_or_default()
                );
            }
            if record["acquisition"]["kind"] == "stake" {
                bail!("brain {id} was acquired by stake and cannot be transferred");
            }
            let summary = format!("transfer brain {id} to {to}");
            pending.send(Call::TransferBrain { brain: id, to }, &summary)
        }
        BrainCommand::Deactivate { brain: id, tx } => {
            let pending = Pending::new(&tx, Key::Cold)?;
            let record = brain(pending.endpoint(), id)?;
            require_owner(&pending, id, &record)?;
            if record["acquisition"]["kind"] != "stake" {
                bail!("only Brains acquired by stake can be deactivated; brain {id} was not");
            }
            let matures_at = record["matures_at"].as_u64().unwrap_or(u64::MAX);
            if pending.account.height + 1 < matures_at {
                bail!(
                    "brain {id} matures at height {matures_at} (finalized height {}): it cannot \
                     be deactivated before",
                    pending.account.height
                );
            }
            pending.send(Call::DeactivateBrain { brain: id }, &format!("deactivate brain {id}"))
        }
    }
}

fn set(id: BrainId, setting: SettingCommand) -> Result<()> {
    let (setting, summary, tx) = match setting {
        SettingCommand::Model { id: model_id, revision, hash, tx } => {
            let weights_hash = match &hash {
                Some(text) => text
                    .trim_start_matches("0x")
                    .parse::<Hash>()
                    .map_err(|e| anyhow!("--hash {text:?}: {e}"))?,
                None => Hash::default(),
            };
            let summary = format!("set brain {id}'s model to {model_id} {revision}");
            (BrainSetting::Model { model_id, revision, weights_hash }, summary, tx)
        }
        SettingCommand::Split { miners, tx } => {
            let miners_ppb = parse_percent("--miners", &miners)?;
            let summary = format!(
                "set brain {id}'s split to {} miners, {} validators",
                format_percent(miners_ppb.into()),
                format_percent((based_types::PPB - miners_ppb).into())
            );
            (BrainSetting::Split { miners_ppb }, summary, tx)
        }
        SettingCommand::Name { name, tx } => {
            let summary = format!("name brain {id} {name:?}");
            (BrainSetting::Name { name }, summary, tx)
        }
        SettingCommand::Label { label, tx } => {
            let summary = format!("label brain {id} {label:?}");
            (BrainSetting::Label { label }, summary, tx)
        }
        SettingCommand::RewardAddress { address, tx } => {
            let address = parse_address("address", &address)?;
            let summary = format!("pay brain {id}'s rewards to {address}");
            (BrainSetting::RewardAddress { address }, summary, tx)
        }
        SettingCommand::RegistrationFee { amount, tx } => {
            let amount = parse_coins("amount", &amount)?;
            let summary =
                format!("set brain {id}'s registration fee to {} BASED", format_amount(amount));
            (BrainSetting::RegistrationFee { amount }, summary, tx)
        }
        SettingCommand::MemorizeFee { amount, tx } => {
            let amount = parse_coins("amount", &amount)?;
            let summary =
                format!("set brain {id}'s memorize fee to {} BASED", format_amount(amount));
            (BrainSetting::MemorizeFee { amount }, summary, tx)
        }
        SettingCommand::OwnerFeeShare { percent, tx } => {
            let ppb = parse_percent("percent", &percent)?;
            let summary =
                format!("set brain {id}'s owner fee share to {}", format_percent(ppb.into()));
            (BrainSetting::OwnerFeeShare { ppb }, summary, tx)
        }
        SettingCommand::ComputePrices { prompt, completion, max_context, tx } => {
            let prompt_per_1000 = parse_coins("--prompt", &prompt)?;
            let completion_per_1000 = parse_coins("--completion", &completion)?;
            if max_context == 0 {
                bail!("--max-context must be positive");
            }
            let summary = format!(
                "price brain {id} at {} BASED per 1,000 prompt and {} per 1,000 completion \
                 tokens, context {max_context}",
                format_amount(prompt_per_1000),
                format_amount(completion_per_1000)
            );
            let setting =
                BrainSetting::ComputePrices { prompt_per_1000, completion_per_1000, max_context };
            (setting, summary, tx)
        }
    };
    let pending = Pending::new(&tx, Key::Cold)?;
    let record = brain(pending.endpoint(), id)?;
    require_owner(&pending, id, &record)?;
    pending.send(Call::ConfigureBrain { brain: id, setting }, &summary)
}

pub fn register(args: RegisterArgs) -> Result<()> {
    let hotkey = args.target.resolve(&args.tx.wallet)?;
    let max_fee = args.max_fee.as_deref().map(|text| parse_coins("--max-fee", text)).transpose()?;
    let role = match args.role {
        RoleArg::Miner => Role::Miner,
        RoleArg::Validator => Role::Validator,
    };
    let pending = Pending::new(&args.tx, Key::Cold)?;
    let record = brain(pending.endpoint(), args.brain)?;
    if let Some(node) = node(pending.endpoint(), args.brain, &hotkey)? {
        bail!(
            "hot key {hotkey} is already registered on brain {} (as {} uid {})",
            args.brain,
            node["role"].as_str().unwrap_or("a node"),
            node["uid"]
        );
    }
    let settings = &record["settings"];
    let fee = field_units(settings, "registration_fee")?
        .checked_add(field_units(settings, "memorize_fee")?)
        .context("fees overflow")?;
    if let Some(max_fee) = max_fee
        && fee > max_fee
    {
        bail!(
            "brain {} charges {} BASED to register, more than --max-fee {}",
            args.brain,
            format_amount(fee),
            format_amount(max_fee)
        );
    }
    pending.require_balance(fee, "registering")?;
    let role_name = match role {
        Role::Miner => "miner",
        Role::Validator => "validator",
    };
    let summary = format!(
        "register {hotkey} as a {role_name} on brain {} for {} BASED",
        args.brain,
        format_amount(fee)
    );
    let call = Call::Register { brain: args.brain, hotkey, role, max_fee: max_fee.unwrap_or(fee) };
    pending.send(call, &summary)
}

/// Parses `uid:weight,uid:weight`; uids are sorted and must be distinct.
pub fn parse_weights(text: &str) -> Result<Vec<(Uid, u16)>> {
    let mut weights = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let (uid, weight) =
            pair.split_once(':').ok_or_else(|| anyhow!("--weights: {pair:?} is not uid:weight"))?;
        let uid: Uid = uid.trim().parse().map_err(|_| anyhow!("--weights: bad uid in {pair:?}"))?;
        let weight: u16 = weight
            .trim()
            .parse()
            .map_err(|_| anyhow!("--weights: bad weight in {pair:?} (0 to 65535)"))?;
        if uid >= based_state::params::MINER_SLOTS {
            bail!("--weights: uid {uid} is not a miner slot (0 to 1791)");
        }
        weights.push((uid, weight));
    }
    if weights.is_empty() {
        bail!("--weights: give at least one uid:weight pair");
    }
    weights.sort_unstable();
    if let Some(pair) = weights.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        bail!("--weights: uid {} appears twice", pair[0].0);
    }
    Ok(weights)
}

pub fn weights(command: WeightsCommand) -> Result<()> {
    let WeightsCommand::Set { brain: id, weights, hotkey, tx } = command;
    let weights = parse_weights(&weights)?;
    let pending = Pending::new(&tx, Key::Hot(hotkey))?;
    brain(pending.endpoint(), id)?;
    let node = validator(pending.endpoint(), id, &pending.signer)?;
    if let Some(last) = node["weights_set_at"].as_u64() {
        let chain = pending.endpoint().call("based_getParams", json!([]))?;
        let limit = chain["params"]["weights_rate_limit"]
            .as_u64()
            .ok_or_else(|| anyhow!("based_getParams reported no weights_rate_limit"))?;
        let next_allowed = last.saturating_add(limit);
        if pending.account.height + 1 < next_allowed {
            bail!(
                "weights on brain {id} were set at block {last}; they can be set again at block \
                 {next_allowed} (finalized height {})",
                pending.account.height
            );
        }
    }
    let summary = format!("set weights on {} miners of brain {id}", weights.len());
    pending.send(Call::SetWeights { brain: id, weights }, &summary)
}

pub fn commission(command: CommissionCommand) -> Result<()> {
    let CommissionCommand::Set { brain: id, percent, hotkey, tx } = command;
    let commission_ppb = parse_percent("--percent", &percent)?;
    let pending = Pending::new(&tx, Key::Hot(hotkey))?;
    brain(pending.endpoint(), id)?;
    validator(pending.endpoint(), id, &pending.signer)?;
    let summary =
        format!("set the commission on brain {id} to {}", format_percent(commission_ppb.into()));
    pending.send(Call::SetCommission { brain: id, commission_ppb }, &summary)
}

fn decode_receipt(text: &str) -> Result<(UsageReceipt, Signature)> {
    let bytes = based_rpc::decode_hex(text.trim().trim_start_matches("0x"))
        .map_err(|e| anyhow!("--receipt: {e}"))?;
    let mut reader = Reader::new(&bytes);
    let receipt = UsageReceipt::decode_from(&mut reader).map_err(|e| anyhow!("--receipt: {e}"))?;
    let signature = Signature::decode_from(&mut reader).map_err(|e| anyhow!("--receipt: {e}"))?;
    reader.finish().map_err(|e| anyhow!("--receipt: {e}"))?;
    if !receipt.verify(&signature) {
        bail!("--receipt: the user's signature does not verify");
    }
    Ok((receipt, signature))
}

pub fn escrow(command: EscrowCommand) -> Result<()> {
    match command {
        EscrowCommand::Fund { amount, tx } => {
            let amount = parse_coins("--amount", &amount)?;
            let pending = Pending::new(&tx, Key::Cold)?;
            pending.require_balance(amount, "funding the escrow")?;
            let summary = format!("fund the escrow with {} BASED", format_amount(amount));
            pending.send(Call::FundEscrow { amount }, &summary)
        }
        EscrowCommand::RequestRelease { tx } => Pending::new(&tx, Key::Cold)?
            .send(Call::RequestEscrowRelease {}, "request the escrow's release"),
        EscrowCommand::Release { tx } => {
            Pending::new(&tx, Key::Cold)?.send(Call::ReleaseEscrow {}, "release the escrow")
        }
        EscrowCommand::Receipt {
            brain: id,
            miner,
            prompt_units,
            completion_units,
            amount,
            password_file,
            wallet,
            endpoint,
        } => {
            let miner = parse_address("--miner", &miner)?;
            let amount = parse_coins("--amount", &amount)?;
            let head = endpoint.call("based_getHead", json!([]))?;
            let chain_id = head["chain_id"]
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| anyhow!("the node reported no chain id"))?;
            let wallet_files = open_wallet(&wallet)?;
            let user = wallet_files.coldkey_address()?;
            let password = PasswordSource::choose(password_file)?
                .read(&format!("Password for the cold key of wallet {wallet}: "))?;
            let key = wallet_files.unlock_coldkey(&password)?;
            let receipt = UsageReceipt {
                chain_id,
                user,
                brain: id,
                miner,
                prompt_units,
                completion_units,
                amount,
            };
            let signature = receipt.sign(&key);
            let mut bytes = receipt.to_bytes();
            signature.encode_to(&mut bytes);
            println!("{}", based_rpc::encode_hex(&bytes));
            Ok(())
        }
        EscrowCommand::Redeem { receipt, hotkey, tx } => {
            let (receipt, user_signature) = decode_receipt(&receipt)?;
            let pending = Pending::new(&tx, Key::Hot(hotkey))?;
            if receipt.miner != pending.signer {
                bail!(
                    "the receipt pays miner {}, not the signing hot key {}",
                    receipt.miner,
                    pending.signer
                );
            }
            match node(pending.endpoint(), receipt.brain, &pending.signer)? {
                Some(node) if node["role"] == "miner" => {}
                _ => bail!("hot key {} is not a miner on brain {}", pending.signer, receipt.brain),
            }
            let summary = format!(
                "redeem {} BASED from {} on brain {}",
                format_amount(receipt.amount),
                receipt.user,
                receipt.brain
            );
            pending.send(Call::RedeemReceipt { receipt, user_signature }, &summary)
        }
    }
}

pub fn proposal(command: ProposalCommand) -> Result<()> {
    match command {
        ProposalCommand::Submit { brain: id, param, value, tx } => {
            let (low, high) = param_range(param);
            if !(low..=high).contains(&value) {
                bail!("--value {value} is outside the range of {param:?}: {low} to {high}");
            }
            let pending = Pending::new(&tx, Key::Cold)?;
            let record = brain(pending.endpoint(), id)?;
            require_owner(&pending, id, &record)?;
            let summary = format!("propose {param:?} = {value} as brain {id}");
            pending.send(Call::Propose { brain: id, param, value }, &summary)
        }
        ProposalCommand::Vote { proposal, brain: id, approve, reject, veto, tx, .. } => {
            let pending = Pending::new(&tx, Key::Cold)?;
            match id {
                Some(id) => {
                    debug_assert!(approve != reject);
                    let record = brain(pending.endpoint(), id)?;
                    require_owner(&pending, id, &record)?;
                    let choice = if approve { "approve" } else { "reject" };
                    let summary = format!("{choice} proposal {proposal} as brain {id}");
                    pending.send(Call::VoteAsBrain { proposal, brain: id, approve }, &summary)
                }
                None => {
                    let pepe = pending.account.pepe_available();
                    if pepe == 0 {
                        bail!("{} holds no free PEPE to vote with", pending.signer);
                    }
                    let choice = if veto { "veto" } else { "support" };
                    let summary = format!(
                        "{choice} proposal {proposal} with {} PEPE (locked until the vote ends)",
                        format_amount(pepe)
                    );
                    pending.send(Call::VoteWithPepe { proposal, veto }, &summary)
                }
            }
        }
    }
}

pub fn bridge(command: BridgeCommand) -> Result<()> {
    let BridgeCommand::Attest { event_id, recipient, amount, tx } = command;
    let event_id: Hash = event_id
        .trim_start_matches("0x")
        .parse()
        .map_err(|e| anyhow!("--event-id {event_id:?}: {e}"))?;
    let recipient = parse_address("--recipient", &recipient)?;
    let amount = parse_coins("--amount", &amount)?;
    let pending = Pending::new(&tx, Key::Cold)?;
    let summary =
        format!("attest the deposit {event_id} of {} PEPE to {recipient}", format_amount(amount));
    pending.send(Call::BridgeAttest { event_id, recipient, amount }, &summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_sorted_and_checked() {
        assert_eq!(parse_weights("3:10, 0:65535").unwrap(), vec![(0, 65535), (3, 10)]);
        for (bad, message) in [
            ("", "at least one"),
            ("1", "is not uid:weight"),
            ("x:1", "bad uid"),
            ("1:70000", "bad weight"),
            ("1792:1", "not a miner slot"),
            ("1:1,1:2", "appears twice"),
        ] {
            let error = parse_weights(bad).unwrap_err().to_string();
            assert!(error.contains(message), "{bad}: {error}");
        }
    }

    #[test]
    fn parameters_by_name() {
        assert_eq!(parse_param("tempo"), Ok(ParamId::Tempo));
        assert_eq!(parse_param("stake_cap_ppb"), Ok(ParamId::StakeCapPpb));
        assert!(parse_param("nope").unwrap_err().contains("one of: tempo"));
    }
}
