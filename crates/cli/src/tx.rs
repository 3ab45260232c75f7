//! What every transaction verb shares: the signing wallet key, the fee, the nonce read over
//! RPC, local checks that spare a doomed transaction its fee, signing, submission, and the wait
//! for finality with a spinner (or `--no-wait`, or `--json` for scripts).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use based_types::{Amount, Call, Encode as _, PublicKey, Transaction, format_amount, parse_amount};
use based_wallet::{PasswordSource, Wallet, Wallets};
use serde_json::{Value, json};

use crate::chain::{Endpoint, units};

/// How long to wait for a transaction to become final.
const FINALITY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub struct TxOptions {
    /// The wallet that signs (see `based wallet list`).
    #[arg(long, short = 'w', env = "BASED_WALLET", default_value = "default")]
    pub wallet: String,
    /// Fee in BASED, paid even if the call fails.
    #[arg(long, default_value = "0.000001")]
    pub fee: String,
    /// Read the key's password from the first line of this file
    /// [default: $BASED_PASSWORD, else a prompt].
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Return once the node accepted the transaction, without waiting for finality.
    #[arg(long)]
    pub no_wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// Which of the wallet's keys signs: the state machine expects the cold key for funds and
/// ownership, the hot key for a node's own acts (weights, commission, receipts).
pub enum Key {
    Cold,
    Hot(String),
}

/// An account as `based_getAccount` reports it.
pub struct Account {
    pub height: u64,
    pub nonce: u64,
    pub balance: Amount,
    pub pepe: Amount,
    pub pepe_locked: Amount,
    pub pepe_locked_until: u64,
}

impl Account {
    pub fn fetch(endpoint: &Endpoint, address: &PublicKey) -> Result<Account> {
        let value = endpoint.call("based_getAccount", json!([address.to_hex()]))?;
        let number = |field: &str| {
            value[field].as_u64().ok_or_else(|| anyhow!("the node reported no {field}"))
        };
        Ok(Account {
            height: number("height")?,
            nonce: number("nonce")?,
            balance: units(&value["balance"])?,
            pepe: units(&value["pepe"])?,
            pepe_locked: units(&value["pepe_locked"])?,
            pepe_locked_until: number("pepe_locked_until")?,
        })
    }

    /// PEPE not locked by a vote still running (the next block is the earliest use).
    pub fn pepe_available(&self) -> Amount {
        if self.height + 1 < self.pepe_locked_until {
            self.pepe.saturating_sub(self.pepe_locked)
        } else {
            self.pepe
        }
    }
}

pub fn open_wallet(name: &str) -> Result<Wallet> {
    Ok(Wallets::default_location()?.wallet(name)?)
}

/// A transaction being prepared: the signer's address and account, read before any password
/// is asked, so that bad input fails fast.
pub struct Pending<'a> {
    options: &'a TxOptions,
    wallet: Wallet,
    key: Key,
    pub signer: PublicKey,
    pub chain_id: u32,
    pub account: Account,
    pub fee: Amount,
}

impl<'a> Pending<'a> {
    pub fn new(options: &'a TxOptions, key: Key) -> Result<Pending<'a>> {
        let fee = parse_amount(&options.fee).map_err(|e| anyhow!("--fee: {e}"))?;
        let wallet = open_wallet(&options.wallet)?;
        let signer = match &key {
            Key::Cold => wallet.coldkey_address()?,
            Key::Hot(name) => wallet.hotkey_address(name)?,
        };
        let head = options.endpoint.call("based_getHead", json!([]))?;
        let chain_id = head["chain_id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| anyhow!("the node reported no chain id"))?;
        let account = Account::fetch(&options.endpoint, &signer)?;
        Ok(Pending { options, wallet, key, signer, chain_id, account, fee })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.options.endpoint
    }

    /// Refuses unless the signer holds `amount` BASED on top of the fee.
    pub fn require_balance(&self, amount: Amount, what: &str) -> Result<()> {
        let needed = amount.checked_add(self.fee).context("amount plus fee overflows")?;
        if self.account.balance < needed {
            bail!(
                "insufficient balance: {} holds {} BASED, {what} needs {} BASED plus the fee {}",
                self.signer,
                format_amount(self.account.balance),
                format_amount(amount),
                format_amount(self.fee)
            );
        }
        Ok(())
    }

    /// Refuses unless the signer holds `amount` PEPE that no vote locks.
    pub fn require_pepe(&self, amount: Amount, what: &str) -> Result<()> {
        let available = self.account.pepe_available();
        if available < amount {
            bail!(
                "insufficient PEPE: {} holds {} PEPE available ({} locked by votes), {what} \
                 needs {} PEPE",
                self.signer,
                format_amount(available),
                format_amount(self.account.pepe_locked),
                format_amount(amount)
            );
        }
        Ok(())
    }

    /// Unlocks the key, signs `call`, submits it and (unless `--no-wait`) waits for finality.
    /// `summary` describes the call for people, e.g. "transfer 1.5 BASED to …".
    pub fn send(self, call: Call, summary: &str) -> Result<()> {
        if self.account.balance < self.fee {
            let hint = match self.key {
                Key::Hot(_) => " (a hot key pays the fees of what it signs: send it some BASED)",
                Key::Cold => "",
            };
            bail!(
                "insufficient balance: {} holds {} BASED, less than the fee {}{hint}",
                self.signer,
                format_amount(self.account.balance),
                format_amount(self.fee)
            );
        }
        let source = PasswordSource::choose(self.options.password_file.clone())?;
        let key = match &self.key {
            Key::Cold => {
                let prompt =
                    format!("Password for the cold key of wallet {}: ", self.options.wallet);
                self.wallet.unlock_coldkey(&source.read(&prompt)?)?
            }
            Key::Hot(name) => {
                let prompt =
                    format!("Password for hot key {name} of wallet {}: ", self.options.wallet);
                self.wallet.unlock_hotkey(name, &source.read(&prompt)?)?
            }
        };
        let nonce = self.account.nonce;
        let transaction = Transaction {
            chain_id: self.chain_id,
            signer: self.signer,
            nonce,
            fee: self.fee,
            call,
        };
        let signed = transaction.sign(&key);
        let hash = signed.hash().to_hex();
        let encoded = based_rpc::encode_hex(&signed.to_bytes());
        self.endpoint().call("based_sendTransaction", json!([encoded]))?;
        let mut report = json!({
            "hash": hash,
            "signer": self.signer.to_hex(),
            "nonce": nonce,
            "fee": self.fee.to_string(),
            "summary": summary,
            "status": "submitted",
        });
        if !self.options.json {
            println!("submitted {hash} (nonce {nonce}): {summary}");
        }
        if self.options.no_wait {
            if self.options.json {
                println!("{report}");
            }
            return Ok(());
        }
        let receipt = self.wait_for_finality(&hash, nonce)?;
        for field in ["status", "height", "index", "success", "error", "events"] {
            report[field] = receipt[field].clone();
        }
        let success = receipt["success"] == true;
        if self.options.json {
            println!("{report}");
        } else {
            let account = Account::fetch(self.endpoint(), &self.signer)?;
            if success {
                println!("finalized at height {}: succeeded", receipt["height"]);
            } else {
                println!("finalized at height {}: FAILED", receipt["height"]);
            }
            for event in receipt["events"].as_array().into_iter().flatten() {
                println!("  event {event}");
            }
            println!(
                "{} now holds {} BASED, {} PEPE (nonce {})",
                self.signer,
                format_amount(account.balance),
                format_amount(account.pepe),
                account.nonce
            );
        }
        if !success {
            bail!(
                "transaction {hash} failed (its fee was paid): {}",
                receipt["error"].as_str().unwrap_or("no reason given")
            );
        }
        Ok(())
    }

    /// Polls `based_getTransaction` until the transaction is final; returns its receipt.
    fn wait_for_finality(&self, hash: &str, nonce: u64) -> Result<Value> {
        let spinner = if self.options.json {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new_spinner()
        };
        spinner.enable_steady_tick(Duration::from_millis(100));
        let started = Instant::now();
        let result = loop {
            let receipt = self.endpoint().call("based_getTransaction", json!([hash]))?;
            match receipt["status"].as_str() {
                Some("finalized") => break Ok(receipt),
                Some("pending") => spinner.set_message("pending in the mempool"),
                _ => {
                    // Unknown to the node: not yet gossiped back, or its nonce went to
                    // another transaction.
                    let account = Account::fetch(self.endpoint(), &self.signer)?;
                    if account.nonce > nonce {
                        let again = self.endpoint().call("based_getTransaction", json!([hash]))?;
                        if again["status"] == "finalized" {
                            break Ok(again);
                        }
                        break Err(anyhow!(
                            "nonce {nonce} of {} was used by another transaction; {hash} will \
                             never be included",
                            self.signer
                        ));
                    }
                    spinner.set_message("waiting for the node to see it");
                }
            }
            if started.elapsed() > FINALITY_TIMEOUT {
                break Err(anyhow!(
                    "{hash} is not final after {} s; it may still be included: check with \
                     `based query transaction {hash}`",
                    FINALITY_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(POLL);
        };
        spinner.finish_and_clear();
        result
    }
}

/// Parses an address given on the command line, naming the option.
pub fn parse_address(option: &str, text: &str) -> Result<PublicKey> {
    text.parse().map_err(|e| anyhow!("{option} {text:?}: {e}"))
}

/// Parses an amount of BASED or PEPE (decimal, up to 9 decimals), naming the option.
pub fn parse_coins(option: &str, text: &str) -> Result<Amount> {
    parse_amount(text).map_err(|e| anyhow!("{option}: {e}"))
}

/// Parses a percentage such as `12.5` or `12.5%` (up to 7 decimals) into parts per billion.
pub fn parse_percent(option: &str, text: &str) -> Result<u32> {
    let bad = || anyhow!("{option} {text:?} is not a percentage from 0 to 100 (e.g. 12.5%)");
    let number = text.trim().strip_suffix('%').unwrap_or(text.trim());
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 7 {
        return Err(bad());
    }
    if number.contains('.') && fraction.is_empty() {
        return Err(bad());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let fraction: u64 = format!("{fraction:0<7}").parse().map_err(|_| bad())?;
    let ppb =
        whole.checked_mul(10_000_000).and_then(|w| w.checked_add(fraction)).ok_or_else(bad)?;
    if ppb > u64::from(based_types::PPB) {
        return Err(bad());
    }
    u32::try_from(ppb).map_err(|_| bad())
}

/// Renders parts per billion as a percentage, e.g. `12.5%`.
pub fn format_percent(ppb: u64) -> String {
    let whole = ppb / 10_000_000;
    let fraction = ppb % 10_000_000;
    if fraction == 0 {
        return format!("{whole}%");
    }
    format!("{whole}.{}%", format!("{fraction:07}").trim_end_matches('0'))
}

/// Reads `field` of a JSON object as base units.
pub fn field_units(value: &Value, field: &str) -> Result<Amount> {
    units(&value[field]).with_context(|| format!("field {field}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_exactly() {
        assert_eq!(parse_percent("--x", "50").unwrap(), 500_000_000);
        assert_eq!(parse_percent("--x", "12.5%").unwrap(), 125_000_000);
        assert_eq!(parse_percent("--x", "0.0000001").unwrap(), 1);
        assert_eq!(parse_percent("--x", "100%").unwrap(), 1_000_000_000);
        for bad in ["100.1", "-1", "1.", ".5", "abc", "0.00000001", "", "99999999999999999999"] {
            let error = parse_percent("--x", bad).unwrap_err().to_string();
            assert!(error.contains("is not a percentage"), "{bad}: {error}");
        }
        assert_eq!(format_percent(125_000_000), "12.5%");
        assert_eq!(format_percent(1_000_000_000), "100%");
        assert_eq!(format_percent(1), "0.0000001%");
    }
}
