//! BasedAI wallets: a cold key (funds, Brain ownership) and named hot keys (a miner's or
//! validator's identity on a Brain), each in its own password-encrypted key file, laid out as
//! btcli users expect:
//!
//! ```text
//! $BASED_HOME/wallets/<wallet>/coldkey          encrypted seed of the cold key
//! $BASED_HOME/wallets/<wallet>/coldkeypub.txt   the cold key's address, readable without password
//! $BASED_HOME/wallets/<wallet>/hotkeys/<hotkey> encrypted seed of a hot key
//! ```
//!
//! Key files are versioned JSON: argon2id derives a key from the password (its parameters and
//! salt are stored in the file), XChaCha20-Poly1305 encrypts the 32-byte ed25519 seed, and the
//! file's header (kind, address, KDF parameters) is authenticated as associated data. Files are
//! written atomically with mode 0600 and never overwritten unless asked. docs/wallets.md has the
//! format and the reasons for these choices.

mod keyfile;
mod password;
mod seed;
mod wallet;

pub use keyfile::{KdfParams, KeyFile, KeyFileError, KeyKind};
pub use password::{PASSWORD_ENV, PasswordError, PasswordSource};
pub use seed::{MNEMONIC_WORDS, Seed, SeedError};
pub use wallet::{Wallet, WalletError, WalletSummary, Wallets};
