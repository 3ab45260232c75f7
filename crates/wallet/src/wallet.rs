//! The wallet folder layout and atomic, owner-only file writes.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use based_types::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};

use crate::keyfile::{KdfParams, KeyFile, KeyFileError, KeyKind};
use crate::seed::Seed;

const COLDKEY: &str = "coldkey";
const COLDKEYPUB: &str = "coldkeypub.txt";
const HOTKEYS: &str = "hotkeys";
const MAX_NAME: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("{path}: {source}")]
    KeyFile { path: PathBuf, source: KeyFileError },
    #[error("{0} already exists (pass --overwrite to replace it)")]
    Exists(PathBuf),
    #[error("{what} {name:?} does not exist ({path} is missing)")]
    Missing { what: &'static str, name: String, path: PathBuf },
    #[error(
        "{what} name {name:?} is invalid: use 1 to {MAX_NAME} letters, digits, '-', '_' or '.', \
         not starting with '.'"
    )]
    BadName { what: &'static str, name: String },
    #[error("{path}: {message}")]
    BadPublicFile { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no home folder: set BASED_HOME or HOME")]
    NoHome,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalletError + '_ {
    move |source| WalletError::Io { path: path.to_path_buf(), source }
}

fn check_name(what: &'static str, name: &str) -> Result<(), WalletError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.starts_with('.')
        || !name.chars().all(allowed)
    {
        return Err(WalletError::BadName { what, name: name.to_string() });
    }
    Ok(())
}

/// Writes `contents` to `path` atomically (a temporary file in the same folder, synced, then
/// renamed over the target) with mode 0600. Refuses to replace an existing file unless
/// `overwrite`.
fn write_atomic(path: &Path, contents: &[u8], overwrite: bool) -> Result<(), WalletError> {
    if !overwrite && path.exists() {
        return Err(WalletError::Exists(path.to_path_buf()));
    }
    let dir = path.parent().expect("wallet files live in a folder");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    let name = path.file_name().expect("a file name").to_string_lossy();
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(WalletError::Io { path: temporary, source });
    }
    if !overwrite && path.exists() {
        let _ = std::fs::remove_file(&temporary);
        return Err(WalletError::Exists(path.to_path_buf()));
    }
    std::fs::rename(&temporary, path).map_err(io(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The folder holding every wallet.
#[derive(Debug, Clone)]
pub struct Wallets {
    root: PathBuf,
}

/// A wallet's name, addresses and hot keys, as `based wallet list` shows them.
#[derive(Debug, Clone)]
pub struct WalletSummary {
    pub name: String,
    /// `None` when the wallet has no readable cold key address.
    pub coldkey: Option<PublicKey>,
    pub hotkeys: Vec<(String, PublicKey)>,
}

impl Wallets {
    pub fn at(root: impl Into<PathBuf>) -> Wallets {
        Wallets { root: root.into() }
    }

    /// `$BASED_HOME/wallets`, else `~/.based/wallets`.
    pub fn default_location() -> Result<Wallets, WalletError> {
        let home = match std::env::var_os("BASED_HOME") {
            Some(home) => PathBuf::from(home),
            None => {
                PathBuf::from(std::env::var_os("HOME").ok_or(WalletError::NoHome)?).join(".based")
            }
        };
        Ok(Wallets::at(home.join("wallets")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A wallet by name (it may not exist yet).
    pub fn wallet(&self, name: &str) -> Result<Wallet, WalletError> {
        check_name("wallet", name)?;
        Ok(Wallet { name: name.to_string(), dir: self.root.join(name) })
    }

    /// Every wallet, sorted by name.
    pub fn list(&self) -> Result<Vec<WalletSummary>, WalletError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(WalletError::Io { path: self.root.clone(), source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(&self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && check_name("wallet", &name).is_ok() {
                names.push(name);
            }
        }
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let wallet = self.wallet(&name)?;
                Ok(WalletSummary {
                    coldkey: wallet.coldkey_address().ok(),
                    hotkeys: wallet.hotkeys()?,
                    name,
                })
            })
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColdkeyPub {
    address: String,
}

/// One wallet: a cold key and named hot keys.
#[derive(Debug, Clone)]
pub struct Wallet {
    name: String,
    dir: PathBuf,
}

impl Wallet {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn coldkey_path(&self) -> PathBuf {
        self.dir.join(COLDKEY)
    }

    pub fn coldkeypub_path(&self) -> PathBuf {
        self.dir.join(COLDKEYPUB)
    }

    pub fn hotkey_path(&self, hotkey: &str) -> Result<PathBuf, WalletError> {
        check_name("hot key", hotkey)?;
        Ok(self.dir.join(HOTKEYS).join(hotkey))
    }

    /// Writes the cold key (encrypted) and `coldkeypub.txt`. Refuses to replace either
    /// unless `overwrite`.
    pub fn write_coldkey(
        &self,
        seed: &Seed,
        password: &str,
        kdf: KdfParams,
        overwrite: bool,
    ) -> Result<PublicKey, WalletError> {
        for path in [self.coldkey_path(), self.coldkeypub_path()] {
            if !overwrite && path.exists() {
                return Err(WalletError::Exists(path));
            }
        }
        let path = self.coldkey_path();
        let file = KeyFile::encrypt(KeyKind::Coldkey, seed, password, kdf)
            .map_err(|source| WalletError::KeyFile { path: path.clone(), source })?;
        write_atomic(&path, file.to_json().as_bytes(), overwrite)?;
        self.write_coldkeypub(&file.address)?;
        Ok(file.address)
    }

    fn write_coldkeypub(&self, address: &PublicKey) -> Result<(), WalletError> {
        let public = ColdkeyPub { address: address.to_hex() };
        let text = serde_json::to_string(&public).expect("serializes") + "\n";
        write_atomic(&self.coldkeypub_path(), text.as_bytes(), true)
    }

    /// Writes a hot key (encrypted). Refuses to replace it unless `overwrite`.
    pub fn write_hotkey(
        &self,
        hotkey: &str,
        seed: &Seed,
        password: &str,
        kdf: KdfParams,
        overwrite: bool,
    ) -> Result<PublicKey, WalletError> {
        let path = self.hotkey_path(hotkey)?;
        let file = KeyFile::encrypt(KeyKind::Hotkey, seed, password, kdf)
            .map_err(|source| WalletError::KeyFile { path: path.clone(), source })?;
        write_atomic(&path, file.to_json().as_bytes(), overwrite)?;
        Ok(file.address)
    }

    fn read_key_file(
        &self,
        path: &Path,
        kind: KeyKind,
        name: &str,
    ) -> Result<KeyFile, WalletError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                let what = match kind {
                    KeyKind::Coldkey => "cold key of wallet",
                    KeyKind::Hotkey => "hot key",
                };
                WalletError::Missing { what, name: name.to_string(), path: path.to_path_buf() }
            } else {
                WalletError::Io { path: path.to_path_buf(), source }
            }
        })?;
        KeyFile::parse_kind(&text, kind)
            .map_err(|source| WalletError::KeyFile { path: path.to_path_buf(), source })
    }

    /// The cold key's address from `coldkeypub.txt` (no password needed), else from the cold
    /// key file's header.
    pub fn coldkey_address(&self) -> Result<PublicKey, WalletError> {
        let path = self.coldkeypub_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bad =
                    |message: String| WalletError::BadPublicFile { path: path.clone(), message };
                let public: ColdkeyPub =
                    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
                public.address.parse().map_err(|e| bad(format!("{e}")))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(self.read_key_file(&self.coldkey_path(), KeyKind::Coldkey, &self.name)?.address)
            }
            Err(source) => Err(WalletError::Io { path, source }),
        }
    }

    /// A hot key's address (no password needed).
    pub fn hotkey_address(&self, hotkey: &str) -> Result<PublicKey, WalletError> {
        Ok(self.read_key_file(&self.hotkey_path(hotkey)?, KeyKind::Hotkey, hotkey)?.address)
    }

    pub fn unlock_coldkey_seed(&self, password: &str) -> Result<Seed, WalletError> {
        let path = self.coldkey_path();
        self.read_key_file(&path, KeyKind::Coldkey, &self.name)?
            .decrypt(password)
            .map_err(|source| WalletError::KeyFile { path, source })
    }

    pub fn unlock_hotkey_seed(&self, hotkey: &str, password: &str) -> Result<Seed, WalletError> {
        let path = self.hotkey_path(hotkey)?;
        self.read_key_file(&path, KeyKind::Hotkey, hotkey)?
            .decrypt(password)
            .map_err(|source| WalletError::KeyFile { path, source })
    }

    pub fn unlock_coldkey(&self, password: &str) -> Result<SecretKey, WalletError> {
        Ok(self.unlock_coldkey_seed(password)?.secret_key())
    }

    pub fn unlock_hotkey(&self, hotkey: &str, password: &str) -> Result<SecretKey, WalletError> {
        Ok(self.unlock_hotkey_seed(hotkey, password)?.secret_key())
    }

    /// Rewrites `coldkeypub.txt` from the cold key, decrypted to prove the address is its own.
    pub fn regen_coldkeypub(&self, password: &str) -> Result<PublicKey, WalletError> {
        let address = self.unlock_coldkey_seed(password)?.public_key();
        self.write_coldkeypub(&address)?;
        Ok(address)
    }

    /// The wallet's hot keys and their addresses, sorted by name.
    pub fn hotkeys(&self) -> Result<Vec<(String, PublicKey)>, WalletError> {
        let dir = self.dir.join(HOTKEYS);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(WalletError::Io { path: dir, source }),
        };
        let mut hotkeys = Vec::new();
        for entry in entries {
            let name = entry.map_err(io(&dir))?.file_name().to_string_lossy().into_owned();
            if check_name("hot key", &name).is_ok() {
                hotkeys.push((name.clone(), self.hotkey_address(&name)?));
            }
        }
        hotkeys.sort();
        Ok(hotkeys)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn fast() -> KdfParams {
        KdfParams::fast_for_tests()
    }

    #[test]
    fn a_wallet_holds_a_coldkey_and_hotkeys() {
        let dir = tempfile::tempdir().unwrap();
        let wallets = Wallets::at(dir.path().join("wallets"));
        let alice = wallets.wallet("alice").unwrap();
        let cold = Seed::from_bytes([1; 32]);
        let address = alice.write_coldkey(&cold, "pw", fast(), false).unwrap();
        assert_eq!(address, cold.public_key());
        let hot = Seed::from_bytes([2; 32]);
        alice.write_hotkey("miner", &hot, "pw2", fast(), false).unwrap();

        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&alice.coldkey_path()), 0o600);
        assert_eq!(mode(&alice.hotkey_path("miner").unwrap()), 0o600);
        assert_eq!(mode(alice.dir()), 0o700);

        assert_eq!(alice.coldkey_address().unwrap(), cold.public_key());
        assert_eq!(alice.unlock_coldkey("pw").unwrap().public_key(), cold.public_key());
        assert_eq!(alice.unlock_hotkey("miner", "pw2").unwrap().public_key(), hot.public_key());
        let listed = wallets.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].coldkey, Some(cold.public_key()));
        assert_eq!(listed[0].hotkeys, vec![("miner".to_string(), hot.public_key())]);
        // No leftover temporary files.
        assert_eq!(std::fs::read_dir(alice.dir()).unwrap().count(), 3);
    }

    #[test]
    fn nothing_is_overwritten_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let wallet = Wallets::at(dir.path()).wallet("w").unwrap();
        let first = Seed::from_bytes([1; 32]);
        wallet.write_coldkey(&first, "pw", fast(), false).unwrap();
        let second = Seed::from_bytes([2; 32]);
        let refused = wallet.write_coldkey(&second, "pw", fast(), false).unwrap_err();
        assert!(refused.to_string().ends_with("already exists (pass --overwrite to replace it)"));
        assert_eq!(wallet.unlock_coldkey("pw").unwrap().public_key(), first.public_key());
        wallet.write_coldkey(&second, "pw", fast(), true).unwrap();
        assert_eq!(wallet.coldkey_address().unwrap(), second.public_key());
        wallet.write_hotkey("h", &first, "pw", fast(), false).unwrap();
        assert!(matches!(
            wallet.write_hotkey("h", &second, "pw", fast(), false),
            Err(WalletError::Exists(_))
        ));
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let wallets = Wallets::at(dir.path());
        let wallet = wallets.wallet("w").unwrap();
        let error = wallet.unlock_coldkey("pw").err().unwrap().to_string();
        assert!(error.starts_with("cold key of wallet \"w\" does not exist"), "{error}");
        wallet.write_coldkey(&Seed::from_bytes([1; 32]), "pw", fast(), false).unwrap();
        let error = wallet.unlock_coldkey("nope").err().unwrap().to_string();
        assert!(
            error.ends_with("coldkey: wrong password (or the key file was altered)"),
            "{error}"
        );

        let text = std::fs::read_to_string(wallet.coldkey_path()).unwrap();
        std::fs::write(wallet.coldkey_path(), &text[..40]).unwrap();
        let error = wallet.unlock_coldkey("pw").err().unwrap().to_string();
        assert!(error.ends_with("coldkey: the key file is truncated"), "{error}");
        // The public address survives in coldkeypub.txt; regenerating it needs the key.
        assert!(wallet.coldkey_address().is_ok());
        assert!(wallet.regen_coldkeypub("pw").is_err());

        assert!(matches!(wallets.wallet("../x"), Err(WalletError::BadName { .. })));
        assert!(matches!(wallet.hotkey_path(".h"), Err(WalletError::BadName { .. })));
        let error = wallet.hotkey_address("none").unwrap_err().to_string();
        assert!(error.starts_with("hot key \"none\" does not exist"), "{error}");
    }

    #[test]
    fn coldkeypub_is_regenerated_from_the_coldkey() {
        let dir = tempfile::tempdir().unwrap();
        let wallet = Wallets::at(dir.path()).wallet("w").unwrap();
        let seed = Seed::from_bytes([7; 32]);
        wallet.write_coldkey(&seed, "pw", fast(), false).unwrap();
        std::fs::write(wallet.coldkeypub_path(), "garbage").unwrap();
        assert!(matches!(wallet.coldkey_address(), Err(WalletError::BadPublicFile { .. })));
        assert_eq!(wallet.regen_coldkeypub("pw").unwrap(), seed.public_key());
        assert_eq!(wallet.coldkey_address().unwrap(), seed.public_key());
        std::fs::remove_file(wallet.coldkeypub_path()).unwrap();
        assert_eq!(wallet.coldkey_address().unwrap(), seed.public_key());
    }
}
