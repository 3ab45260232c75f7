//! The secret of a key: a 32-byte ed25519 seed (`SecretKey::from_seed`), shown to users as 64
//! hex digits or as a 24-word BIP-39 mnemonic that encodes exactly those 32 bytes (the BIP-39
//! word list and checksum; no PBKDF2 stretching and no HD derivation, so the mnemonic and the
//! seed convert both ways).

use based_types::{PublicKey, SecretKey};
use zeroize::Zeroizing;

/// Words of a mnemonic: 256 bits of seed plus an 8-bit checksum, 11 bits a word.
pub const MNEMONIC_WORDS: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeedError {
    #[error("a seed is 64 hex digits (32 bytes), got {0} characters")]
    HexLength(usize),
    #[error("the seed holds a character that is not a hex digit")]
    HexDigit,
    #[error("a mnemonic has {MNEMONIC_WORDS} words, got {0}")]
    WordCount(usize),
    #[error("invalid mnemonic: {0}")]
    Mnemonic(String),
    #[error("the system's random number generator failed: {0}")]
    Random(String),
}

/// A 32-byte ed25519 seed, wiped from memory when dropped. Not `Debug`, so it cannot leak into
/// logs.
#[derive(Clone)]
pub struct Seed(Zeroizing<[u8; 32]>);

impl Seed {
    pub fn from_bytes(bytes: [u8; 32]) -> Seed {
        Seed(Zeroizing::new(bytes))
    }

    /// A fresh seed from the operating system's random number generator.
    pub fn generate() -> Result<Seed, SeedError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| SeedError::Random(e.to_string()))?;
        Ok(Seed(bytes))
    }

    /// Parses 64 hex digits (an optional `0x` prefix and surrounding whitespace are accepted).
    pub fn from_hex(text: &str) -> Result<Seed, SeedError> {
        let text = text.trim();
        let text = text.strip_prefix("0x").unwrap_or(text);
        if text.len() != 64 {
            return Err(SeedError::HexLength(text.len()));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            let digit = |c: u8| char::from(c).to_digit(16).ok_or(SeedError::HexDigit);
            *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?)
                .map_err(|_| SeedError::HexDigit)?;
        }
        Ok(Seed(bytes))
    }

    /// Parses a 24-word English BIP-39 mnemonic (words separated by any whitespace).
    pub fn from_mnemonic(phrase: &str) -> Result<Seed, SeedError> {
        let words = phrase.split_whitespace().count();
        if words != MNEMONIC_WORDS {
            return Err(SeedError::WordCount(words));
        }
        let normalized = phrase.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let mnemonic = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &normalized)
            .map_err(|e| SeedError::Mnemonic(e.to_string()))?;
        let (entropy, length) = mnemonic.to_entropy_array();
        let entropy = Zeroizing::new(entropy);
        let bytes: [u8; 32] = entropy[..length]
            .try_into()
            .map_err(|_| SeedError::Mnemonic(format!("{length} bytes of entropy, not 32")))?;
        Ok(Seed(Zeroizing::new(bytes)))
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn to_mnemonic(&self) -> Zeroizing<String> {
        let mnemonic = bip39::Mnemonic::from_entropy_in(bip39::Language::English, self.0.as_ref())
            .expect("32 bytes is a valid BIP-39 entropy length");
        Zeroizing::new(mnemonic.to_string())
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn secret_key(&self) -> SecretKey {
        SecretKey::from_seed(*self.0)
    }

    pub fn public_key(&self) -> PublicKey {
        self.secret_key().public_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonic_and_hex_round_trip() {
        let seed = Seed::from_bytes([0x5a; 32]);
        let phrase = seed.to_mnemonic();
        assert_eq!(phrase.split(' ').count(), MNEMONIC_WORDS);
        let back = Seed::from_mnemonic(&format!("  {}\n", phrase.to_uppercase())).unwrap();
        assert_eq!(back.bytes(), seed.bytes());
        let back = Seed::from_hex(&format!("0x{}\n", seed.to_hex().as_str())).unwrap();
        assert_eq!(back.public_key(), seed.public_key());
        assert_ne!(Seed::generate().unwrap().bytes(), Seed::generate().unwrap().bytes());
    }

    #[test]
    fn bad_seeds_are_named() {
        assert_eq!(Seed::from_hex("abcd").err(), Some(SeedError::HexLength(4)));
        assert_eq!(Seed::from_hex(&"zz".repeat(32)).err(), Some(SeedError::HexDigit));
        assert_eq!(Seed::from_mnemonic("abandon ability").err(), Some(SeedError::WordCount(2)));
        // 24 valid words with a wrong checksum.
        let phrase = ["abandon"; 24].join(" ");
        assert!(matches!(Seed::from_mnemonic(&phrase), Err(SeedError::Mnemonic(_))));
        let mut words: Vec<String> =
            Seed::from_bytes([1; 32]).to_mnemonic().split(' ').map(String::from).collect();
        words[3] = "notaword".into();
        let error = Seed::from_mnemonic(&words.join(" ")).err().unwrap().to_string();
        assert!(error.contains("unknown word"), "{error}");
    }
}
