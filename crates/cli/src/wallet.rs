//! `based wallet …` (key files, see docs/wallets.md) and `based balance`.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use based_types::{PublicKey, format_amount};
use based_wallet::{KdfParams, PasswordSource, Seed, Wallet, Wallets};
use serde_json::{Value, json};

use crate::chain::Endpoint;
use crate::devnet::DevAccount;
use crate::tx::{Account, open_wallet, parse_address};

#[derive(clap::Args)]
pub struct WalletName {
    /// The wallet's name: a folder under $BASED_HOME/wallets (default ~/.based/wallets).
    #[arg(long, short = 'w', env = "BASED_WALLET", default_value = "default")]
    wallet: String,
}

#[derive(clap::Args)]
pub struct Secrets {
    /// Read the password from the first line of this file [default: $BASED_PASSWORD, else a
    /// prompt].
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum WalletCommand {
    /// Create a wallet: a new cold key and a first hot key, printing their mnemonics once.
    Create {
        #[command(flatten)]
        name: WalletName,
        /// Name of the first hot key.
        #[arg(long, default_value = "default")]
        hotkey: String,
        /// Create the cold key only.
        #[arg(long, conflicts_with = "hotkey")]
        no_hotkey: bool,
        /// Replace existing key files (their keys are lost unless backed up).
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        secrets: Secrets,
    },
    /// Add a new hot key to a wallet, printing its mnemonic once.
    NewHotkey {
        #[command(flatten)]
        name: WalletName,
        /// Name of the hot key.
        #[arg(long)]
        hotkey: String,
        /// Replace an existing hot key file.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        secrets: Secrets,
    },
    /// Import a key from a 24-word mnemonic, a hex seed or a devnet dev account, as the cold
    /// key (default) or as a hot key.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["mnemonic", "seed", "dev"])))]
    Import {
        #[command(flatten)]
        name: WalletName,
        /// The 24-word mnemonic (quote it; it stays in your shell history).
        #[arg(long)]
        mnemonic: Option<String>,
        /// The 32-byte ed25519 seed, 64 hex digits.
        #[arg(long)]
        seed: Option<String>,
        /// Devnet dev account N (0-3), read from the devnet's accounts.json; local testing only.
        #[arg(long)]
        dev: Option<usize>,
        /// The devnet folder holding accounts.json [default: $BASED_HOME/devnet, else
        /// ./devnet].
        #[arg(long, requires = "dev")]
        devnet_dir: Option<PathBuf>,
        /// Import as this hot key instead of the cold key.
        #[arg(long)]
        hotkey: Option<String>,
        /// Replace an existing key file.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        secrets: Secrets,
    },
    /// List wallets with their cold key and hot key addresses (no password needed).
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a wallet's addresses; with --export-*, decrypt a key and print its secret.
    Show {
        #[command(flatten)]
        name: WalletName,
        /// Export this hot key instead of the cold key.
        #[arg(long)]
        hotkey: Option<String>,
        /// Print the key's 24-word mnemonic (asks for the password).
        #[arg(long, conflicts_with = "export_seed")]
        export_mnemonic: bool,
        /// Print the key's seed in hex (asks for the password).
        #[arg(long)]
        export_seed: bool,
        #[command(flatten)]
        secrets: Secrets,
    },
    /// Rewrite coldkeypub.txt from the cold key (asks for the password).
    RegenColdkeypub {
        #[command(flatten)]
        name: WalletName,
        #[command(flatten)]
        secrets: Secrets,
    },
}

fn print(json: bool, value: &Value, text: &str) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn new_password(secrets: &Secrets, what: &str) -> Result<zeroize::Zeroizing<String>> {
    let source = PasswordSource::choose(secrets.password_file.clone())?;
    Ok(source.read_new(&format!("New password for {what}: "))?)
}

fn unlock_password(secrets: &Secrets, what: &str) -> Result<zeroize::Zeroizing<String>> {
    let source = PasswordSource::choose(secrets.password_file.clone())?;
    Ok(source.read(&format!("Password for {what}: "))?)
}

fn dev_seed(index: usize, dir: Option<PathBuf>) -> Result<Seed> {
    let dir = dir.unwrap_or_else(crate::devnet::default_dir);
    let path = dir.join("accounts.json");
    if !path.exists() {
        bail!("{} does not exist: start `based devnet` first or pass --devnet-dir", path.display());
    }
    let accounts: Vec<DevAccount> = crate::node::read_json(&path)?;
    let account = accounts.get(index).ok_or_else(|| {
        anyhow!(
            "--dev {index}: {} lists {} dev accounts (0 to {})",
            path.display(),
            accounts.len(),
            accounts.len().saturating_sub(1)
        )
    })?;
    Seed::from_hex(&account.secret_seed)
        .with_context(|| format!("{}: account {index}", path.display()))
}

pub fn run(command: WalletCommand) -> Result<()> {
    let wallets = Wallets::default_location()?;
    match command {
        WalletCommand::Create { name, hotkey, no_hotkey, overwrite, secrets } => {
            let wallet = wallets.wallet(&name.wallet)?;
            let hotkey_path = (!no_hotkey).then(|| wallet.hotkey_path(&hotkey)).transpose()?;
            for path in [Some(wallet.coldkey_path()), hotkey_path].into_iter().flatten() {
                if !overwrite && path.exists() {
                    bail!("{} already exists (pass --overwrite to replace it)", path.display());
                }
            }
            let password = new_password(&secrets, &format!("wallet {}", name.wallet))?;
            let cold = Seed::generate()?;
            let address =
                wallet.write_coldkey(&cold, &password, KdfParams::default(), overwrite)?;
            let mut report = json!({
                "wallet": name.wallet,
                "coldkey": {"address": address.to_hex(), "mnemonic": cold.to_mnemonic().as_str()},
            });
            let mut text = format!(
                "created wallet {} in {}\ncold key {address}\n  mnemonic (write it down, it is shown once): {}",
                name.wallet,
                wallet.dir().display(),
                cold.to_mnemonic().as_str()
            );
            if !no_hotkey {
                let hot = Seed::generate()?;
                let hot_address = wallet.write_hotkey(
                    &hotkey,
                    &hot,
                    &password,
                    KdfParams::default(),
                    overwrite,
                )?;
                report["hotkey"] = json!({
                    "name": hotkey, "address": hot_address.to_hex(),
                    "mnemonic": hot.to_mnemonic().as_str(),
                });
                text += &format!(
                    "\nhot key {hotkey} {hot_address}\n  mnemonic: {}",
                    hot.to_mnemonic().as_str()
                );
            }
            print(secrets.json, &report, &text);
        }
        WalletCommand::NewHotkey { name, hotkey, overwrite, secrets } => {
            let wallet = wallets.wallet(&name.wallet)?;
            let path = wallet.hotkey_path(&hotkey)?;
            if !overwrite && path.exists() {
                bail!("{} already exists (pass --overwrite to replace it)", path.display());
            }
            let password = new_password(&secrets, &format!("hot key {hotkey}"))?;
            let seed = Seed::generate()?;
            let address =
                wallet.write_hotkey(&hotkey, &seed, &password, KdfParams::default(), overwrite)?;
            let report = json!({
                "wallet": name.wallet, "hotkey": hotkey, "address": address.to_hex(),
                "mnemonic": seed.to_mnemonic().as_str(),
            });
            let text = format!(
                "hot key {hotkey} of wallet {} {address}\n  mnemonic (write it down, it is shown once): {}",
                name.wallet,
                seed.to_mnemonic().as_str()
            );
            print(secrets.json, &report, &text);
        }
        WalletCommand::Import {
            name,
            mnemonic,
            seed,
            dev,
            devnet_dir,
            hotkey,
            overwrite,
            secrets,
        } => {
            let wallet = wallets.wallet(&name.wallet)?;
            let imported = match (mnemonic, seed, dev) {
                (Some(phrase), _, _) => Seed::from_mnemonic(&phrase).context("--mnemonic")?,
                (None, Some(hex), _) => Seed::from_hex(&hex).context("--seed")?,
                (None, None, Some(index)) => dev_seed(index, devnet_dir)?,
                (None, None, None) => unreachable!("clap requires one source"),
            };
            let path = match &hotkey {
                Some(hotkey) => wallet.hotkey_path(hotkey)?,
                None => wallet.coldkey_path(),
            };
            if !overwrite && path.exists() {
                bail!("{} already exists (pass --overwrite to replace it)", path.display());
            }
            let what = match &hotkey {
                Some(hotkey) => format!("hot key {hotkey}"),
                None => format!("wallet {}", name.wallet),
            };
            let password = new_password(&secrets, &what)?;
            let kdf = KdfParams::default();
            let address = match &hotkey {
                Some(hotkey) => {
                    wallet.write_hotkey(hotkey, &imported, &password, kdf, overwrite)?
                }
                None => wallet.write_coldkey(&imported, &password, kdf, overwrite)?,
            };
            let role = if hotkey.is_some() { "hotkey" } else { "coldkey" };
            let report = json!({
                "wallet": name.wallet, "key": role, "hotkey": hotkey, "address": address.to_hex(),
            });
            let text = format!("imported {what} {address} into {}", path.display());
            print(secrets.json, &report, &text);
        }
        WalletCommand::List { json } => list(&wallets, json)?,
        WalletCommand::Show { name, hotkey, export_mnemonic, export_seed, secrets } => {
            let wallet = wallets.wallet(&name.wallet)?;
            show(&wallet, hotkey, export_mnemonic || export_seed, export_seed, &secrets)?;
        }
        WalletCommand::RegenColdkeypub { name, secrets } => {
            let wallet = wallets.wallet(&name.wallet)?;
            let password =
                unlock_password(&secrets, &format!("the cold key of wallet {}", name.wallet))?;
            let address = wallet.regen_coldkeypub(&password)?;
            let report = json!({"wallet": name.wallet, "address": address.to_hex()});
            let text = format!("wrote {} ({address})", wallet.coldkeypub_path().display());
            print(secrets.json, &report, &text);
        }
    }
    Ok(())
}

fn list(wallets: &Wallets, json: bool) -> Result<()> {
    let listed = wallets.list()?;
    if json {
        let value: Vec<Value> = listed
            .iter()
            .map(|w| {
                json!({
                    "name": w.name,
                    "coldkey": w.coldkey.map(|a| a.to_hex()),
                    "hotkeys": w.hotkeys.iter().map(|(n, a)| json!({"name": n, "address": a.to_hex()})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", Value::Array(value));
        return Ok(());
    }
    if listed.is_empty() {
        println!("no wallets in {} (`based wallet create` makes one)", wallets.root().display());
    }
    for wallet in listed {
        let cold = wallet.coldkey.map_or("(no readable cold key)".to_string(), |a| a.to_hex());
        println!("{}  {cold}", wallet.name);
        for (name, address) in wallet.hotkeys {
            println!("  hot key {name}  {address}");
        }
    }
    Ok(())
}

fn show(
    wallet: &Wallet,
    hotkey: Option<String>,
    export: bool,
    as_hex: bool,
    secrets: &Secrets,
) -> Result<()> {
    let (what, address) = match &hotkey {
        Some(name) => (format!("hot key {name}"), wallet.hotkey_address(name)?),
        None => (format!("the cold key of wallet {}", wallet.name()), wallet.coldkey_address()?),
    };
    let mut report = json!({"wallet": wallet.name(), "address": address.to_hex()});
    let mut text = format!("{what}: {address}");
    if hotkey.is_none() {
        let hotkeys = wallet.hotkeys()?;
        report["hotkeys"] = json!(
            hotkeys
                .iter()
                .map(|(n, a)| json!({"name": n, "address": a.to_hex()}))
                .collect::<Vec<_>>()
        );
        for (name, address) in hotkeys {
            text += &format!("\n  hot key {name}  {address}");
        }
    }
    if export {
        let password = unlock_password(secrets, &what)?;
        let seed = match &hotkey {
            Some(name) => wallet.unlock_hotkey_seed(name, &password)?,
            None => wallet.unlock_coldkey_seed(&password)?,
        };
        if as_hex {
            report["seed"] = json!(seed.to_hex().as_str());
            text += &format!("\nseed (keep it secret): {}", seed.to_hex().as_str());
        } else {
            report["mnemonic"] = json!(seed.to_mnemonic().as_str());
            text += &format!("\nmnemonic (keep it secret): {}", seed.to_mnemonic().as_str());
        }
    }
    print(secrets.json, &report, &text);
    Ok(())
}

#[derive(clap::Args)]
pub struct BalanceArgs {
    /// An address to read instead of a wallet's.
    address: Option<String>,
    #[command(flatten)]
    name: WalletName,
    /// Read this hot key's account instead of the cold key's.
    #[arg(long, conflicts_with = "address")]
    hotkey: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

pub fn balance(args: BalanceArgs) -> Result<()> {
    let address: PublicKey = match (&args.address, &args.hotkey) {
        (Some(text), _) => parse_address("address", text)?,
        (None, Some(hotkey)) => open_wallet(&args.name.wallet)?.hotkey_address(hotkey)?,
        (None, None) => open_wallet(&args.name.wallet)?.coldkey_address()?,
    };
    let account = Account::fetch(&args.endpoint, &address)?;
    if args.json {
        let value = json!({
            "address": address.to_hex(),
            "height": account.height,
            "nonce": account.nonce,
            "balance": account.balance.to_string(),
            "pepe": account.pepe.to_string(),
            "pepe_locked": account.pepe_locked.to_string(),
        });
        println!("{value}");
    } else {
        println!("{address} at height {}", account.height);
        println!("  BASED  {}", format_amount(account.balance));
        println!(
            "  PEPE   {} ({} locked by votes)",
            format_amount(account.pepe),
            format_amount(account.pepe_locked)
        );
        println!("  nonce  {}", account.nonce);
    }
    Ok(())
}
