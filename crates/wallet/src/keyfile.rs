//! The key file format, version 1 (JSON):
//!
//! ```json
//! {"version":1,"kind":"coldkey","address":"<64 hex>",
//!  "kdf":{"algorithm":"argon2id","memory_kib":65536,"iterations":3,"parallelism":1,
//!         "salt":"<32 hex>"},
//!  "cipher":{"algorithm":"xchacha20poly1305","nonce":"<48 hex>"},
//!  "ciphertext":"<96 hex: the 32-byte seed and the 16-byte tag>"}
//! ```
//!
//! The associated data binds the version, kind, address and KDF parameters, so editing any of
//! them makes decryption fail like a wrong password; after decryption the seed must yield the
//! stored address.

use argon2::{Algorithm, Argon2, Params, Version};
use based_types::PublicKey;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::seed::Seed;

pub const VERSION: u64 = 1;
const KDF_ALGORITHM: &str = "argon2id";
const CIPHER_ALGORITHM: &str = "xchacha20poly1305";
const AAD_DOMAIN: &[u8] = b"BASEDAI-KEYFILE-V1";
const SALT_BYTES: usize = 16;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// Largest KDF cost a file may ask for (a hostile file must not make us allocate gigabytes).
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Coldkey,
    Hotkey,
}

impl KeyKind {
    fn tag(self) -> u8 {
        match self {
            KeyKind::Coldkey => 0,
            KeyKind::Hotkey => 1,
        }
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Coldkey => "cold key",
            KeyKind::Hotkey => "hot key",
        })
    }
}

/// argon2id cost. Stored in every file, so files written with other costs stay readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, one lane: RFC 9106's second recommended setting with one lane instead
    /// of four (about 0.1 s on this project's machines).
    fn default() -> Self {
        KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 }
    }
}

impl KdfParams {
    /// A cheap cost (64 KiB, one pass) **for tests only**: it makes brute-forcing a password
    /// trivial, so never use it for keys that hold value. Files record their cost, so keys
    /// written this way stay readable by every build.
    pub fn fast_for_tests() -> KdfParams {
        KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }
    }

    fn check(&self) -> Result<Params, KeyFileError> {
        let out_of_range = |what: &str, value: u32, low: u32, high: u32| {
            KeyFileError::Corrupted(format!("KDF {what} {value} is outside {low}..={high}"))
        };
        if !(1..=MAX_PARALLELISM).contains(&self.parallelism) {
            return Err(out_of_range("parallelism", self.parallelism, 1, MAX_PARALLELISM));
        }
        if !(1..=MAX_ITERATIONS).contains(&self.iterations) {
            return Err(out_of_range("iterations", self.iterations, 1, MAX_ITERATIONS));
        }
        let least = 8 * self.parallelism;
        if !(least..=MAX_MEMORY_KIB).contains(&self.memory_kib) {
            return Err(out_of_range("memory_kib", self.memory_kib, least, MAX_MEMORY_KIB));
        }
        Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| KeyFileError::Corrupted(format!("KDF parameters: {e}")))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    #[error("wrong password (or the key file was altered)")]
    WrongPassword,
    #[error("the key file is truncated")]
    Truncated,
    #[error("not a key file: {0}")]
    NotAKeyFile(String),
    #[error("key file version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u64),
    #[error("the key file is corrupted: {0}")]
    Corrupted(String),
    #[error("this is a {found} file, expected a {expected} file")]
    WrongKind { expected: KeyKind, found: KeyKind },
    #[error("the password is empty")]
    EmptyPassword,
    #[error("the system's random number generator failed: {0}")]
    Random(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfJson {
    algorithm: String,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherJson {
    algorithm: String,
    nonce: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    version: u64,
    kind: KeyKind,
    address: String,
    kdf: KdfJson,
    cipher: CipherJson,
    ciphertext: String,
}

/// A parsed key file: the address is readable without the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub kind: KeyKind,
    pub address: PublicKey,
    pub kdf: KdfParams,
    salt: [u8; SALT_BYTES],
    nonce: [u8; NONCE_BYTES],
    ciphertext: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(what: &str, text: &str, expected_bytes: usize) -> Result<Vec<u8>, KeyFileError> {
    let corrupted = |why: &str| KeyFileError::Corrupted(format!("{what}: {why}"));
    if text.len() != 2 * expected_bytes {
        return Err(corrupted(&format!(
            "expected {} hex digits, found {}",
            2 * expected_bytes,
            text.len()
        )));
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| corrupted("not hex"))
        })
        .collect()
}

fn random<const N: usize>() -> Result<[u8; N], KeyFileError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| KeyFileError::Random(e.to_string()))?;
    Ok(bytes)
}

impl KeyFile {
    /// Encrypts `seed` under `password` with a fresh salt and nonce.
    pub fn encrypt(
        kind: KeyKind,
        seed: &Seed,
        password: &str,
        kdf: KdfParams,
    ) -> Result<KeyFile, KeyFileError> {
        if password.is_empty() {
            return Err(KeyFileError::EmptyPassword);
        }
        let mut file = KeyFile {
            kind,
            address: seed.public_key(),
            kdf,
            salt: random()?,
            nonce: random()?,
            ciphertext: Vec::new(),
        };
        let cipher = XChaCha20Poly1305::new(file.derive_key(password)?.as_ref().into());
        let aad = file.associated_data();
        file.ciphertext = cipher
            .encrypt(XNonce::from_slice(&file.nonce), Payload { msg: seed.bytes(), aad: &aad })
            .map_err(|_| KeyFileError::Corrupted("encryption failed".into()))?;
        Ok(file)
    }

    /// Decrypts the seed; checks that it yields the stored address.
    pub fn decrypt(&self, password: &str) -> Result<Seed, KeyFileError> {
        let cipher = XChaCha20Poly1305::new(self.derive_key(password)?.as_ref().into());
        let aad = self.associated_data();
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(&self.nonce),
                    Payload { msg: &self.ciphertext, aad: &aad },
                )
                .map_err(|_| KeyFileError::WrongPassword)?,
        );
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| KeyFileError::Corrupted(format!("seed of {} bytes", plain.len())))?;
        let seed = Seed::from_bytes(bytes);
        if seed.public_key() != self.address {
            return Err(KeyFileError::Corrupted(
                "the decrypted key does not match the stored address".into(),
            ));
        }
        Ok(seed)
    }

    fn derive_key(&self, password: &str) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
        let params = self.kdf.check()?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password.as_bytes(), &self.salt, key.as_mut())
            .map_err(|e| KeyFileError::Corrupted(format!("key derivation: {e}")))?;
        Ok(key)
    }

    fn associated_data(&self) -> Vec<u8> {
        let mut aad = AAD_DOMAIN.to_vec();
        aad.push(self.kind.tag());
        aad.extend_from_slice(&self.address.0);
        for value in [self.kdf.memory_kib, self.kdf.iterations, self.kdf.parallelism] {
            aad.extend_from_slice(&value.to_le_bytes());
        }
        aad.extend_from_slice(&self.salt);
        aad
    }

    pub fn to_json(&self) -> String {
        let json = KeyFileJson {
            version: VERSION,
            kind: self.kind,
            address: self.address.to_hex(),
            kdf: KdfJson {
                algorithm: KDF_ALGORITHM.into(),
                memory_kib: self.kdf.memory_kib,
                iterations: self.kdf.iterations,
                parallelism: self.kdf.parallelism,
                salt: hex(&self.salt),
            },
            cipher: CipherJson { algorithm: CIPHER_ALGORITHM.into(), nonce: hex(&self.nonce) },
            ciphertext: hex(&self.ciphertext),
        };
        serde_json::to_string_pretty(&json).expect("a key file serializes") + "\n"
    }

    /// Parses a key file, naming what is wrong: truncated, not JSON, an unknown version, a
    /// missing or malformed field, or an unsupported algorithm.
    pub fn parse(text: &str) -> Result<KeyFile, KeyFileError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            if e.is_eof() {
                KeyFileError::Truncated
            } else {
                KeyFileError::NotAKeyFile(e.to_string())
            }
        })?;
        let version = value
            .get("version")
            .ok_or_else(|| KeyFileError::NotAKeyFile("no \"version\" field".into()))?;
        let version = version.as_u64().ok_or_else(|| {
            KeyFileError::NotAKeyFile(format!("\"version\" is {version}, not a number"))
        })?;
        if version != VERSION {
            return Err(KeyFileError::UnsupportedVersion(version));
        }
        let json: KeyFileJson =
            serde_json::from_value(value).map_err(|e| KeyFileError::Corrupted(e.to_string()))?;
        if json.kdf.algorithm != KDF_ALGORITHM {
            return Err(KeyFileError::Corrupted(format!(
                "KDF {:?} is not supported (expected {KDF_ALGORITHM})",
                json.kdf.algorithm
            )));
        }
        if json.cipher.algorithm != CIPHER_ALGORITHM {
            return Err(KeyFileError::Corrupted(format!(
                "cipher {:?} is not supported (expected {CIPHER_ALGORITHM})",
                json.cipher.algorithm
            )));
        }
        let kdf = KdfParams {
            memory_kib: json.kdf.memory_kib,
            iterations: json.kdf.iterations,
            parallelism: json.kdf.parallelism,
        };
        kdf.check()?;
        let address = unhex("address", &json.address, 32)?;
        Ok(KeyFile {
            kind: json.kind,
            address: PublicKey(address.try_into().expect("32 bytes")),
            kdf,
            salt: unhex("salt", &json.kdf.salt, SALT_BYTES)?.try_into().expect("salt bytes"),
            nonce: unhex("nonce", &json.cipher.nonce, NONCE_BYTES)?.try_into().expect("nonce"),
            ciphertext: unhex("ciphertext", &json.ciphertext, 32 + TAG_BYTES)?,
        })
    }

    /// Parses and checks that the file holds the expected kind of key.
    pub fn parse_kind(text: &str, expected: KeyKind) -> Result<KeyFile, KeyFileError> {
        let file = KeyFile::parse(text)?;
        if file.kind != expected {
            return Err(KeyFileError::WrongKind { expected, found: file.kind });
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Seed, String) {
        let seed = Seed::from_bytes([3; 32]);
        let file =
            KeyFile::encrypt(KeyKind::Coldkey, &seed, "hunter2", KdfParams::fast_for_tests())
                .unwrap();
        (seed, file.to_json())
    }

    #[test]
    fn encrypts_and_decrypts() {
        let (seed, text) = sample();
        assert!(!text.contains(seed.to_hex().as_str()));
        let file = KeyFile::parse(&text).unwrap();
        assert_eq!(file.address, seed.public_key());
        assert_eq!(file.decrypt("hunter2").unwrap().bytes(), seed.bytes());
        assert_eq!(file.decrypt("hunter3").err(), Some(KeyFileError::WrongPassword));
        // Fresh salt and nonce every time.
        assert_ne!(sample().1, text);
    }

    #[test]
    fn default_cost_decrypts() {
        let seed = Seed::from_bytes([4; 32]);
        let file = KeyFile::encrypt(KeyKind::Hotkey, &seed, "pw", KdfParams::default()).unwrap();
        let parsed = KeyFile::parse_kind(&file.to_json(), KeyKind::Hotkey).unwrap();
        assert_eq!(parsed.kdf, KdfParams::default());
        assert_eq!(parsed.decrypt("pw").unwrap().public_key(), seed.public_key());
    }

    #[test]
    fn damaged_files_get_precise_errors() {
        let (_, text) = sample();
        assert_eq!(KeyFile::parse(&text[..text.len() / 2]).err(), Some(KeyFileError::Truncated));
        assert_eq!(KeyFile::parse("").err(), Some(KeyFileError::Truncated));
        assert!(matches!(KeyFile::parse("hello"), Err(KeyFileError::NotAKeyFile(_))));
        assert!(matches!(KeyFile::parse("{}"), Err(KeyFileError::NotAKeyFile(_))));
        let v2 = text.replace("\"version\": 1", "\"version\": 2");
        assert_eq!(KeyFile::parse(&v2).err(), Some(KeyFileError::UnsupportedVersion(2)));
        assert_eq!(
            KeyFile::parse_kind(&text, KeyKind::Hotkey).err(),
            Some(KeyFileError::WrongKind { expected: KeyKind::Hotkey, found: KeyKind::Coldkey })
        );

        let mut value: Value = serde_json::from_str(&text).unwrap();
        value["kdf"]["algorithm"] = "scrypt".into();
        let error = KeyFile::parse(&value.to_string()).err().unwrap().to_string();
        assert!(error.contains("\"scrypt\" is not supported"), "{error}");

        let mut value: Value = serde_json::from_str(&text).unwrap();
        value["kdf"]["memory_kib"] = (u64::from(MAX_MEMORY_KIB) + 1).into();
        let error = KeyFile::parse(&value.to_string()).err().unwrap().to_string();
        assert!(error.contains("memory_kib 4194305 is outside"), "{error}");

        let mut value: Value = serde_json::from_str(&text).unwrap();
        value["ciphertext"] = "00".into();
        let error = KeyFile::parse(&value.to_string()).err().unwrap().to_string();
        assert!(error.contains("ciphertext: expected 96 hex digits, found 2"), "{error}");

        // A flipped ciphertext byte, or an edited header, fails authentication.
        let mut value: Value = serde_json::from_str(&text).unwrap();
        let mut ciphertext = value["ciphertext"].as_str().unwrap().to_string();
        let flipped = if ciphertext.starts_with('0') { "1" } else { "0" };
        ciphertext.replace_range(0..1, flipped);
        value["ciphertext"] = ciphertext.into();
        let file = KeyFile::parse(&value.to_string()).unwrap();
        assert_eq!(file.decrypt("hunter2").err(), Some(KeyFileError::WrongPassword));
        let mut value: Value = serde_json::from_str(&text).unwrap();
        value["kdf"]["iterations"] = 2.into();
        let file = KeyFile::parse(&value.to_string()).unwrap();
        assert_eq!(file.decrypt("hunter2").err(), Some(KeyFileError::WrongPassword));
        let mut value: Value = serde_json::from_str(&text).unwrap();
        value["address"] = Seed::from_bytes([5; 32]).public_key().to_hex().into();
        let file = KeyFile::parse(&value.to_string()).unwrap();
        assert_eq!(file.decrypt("hunter2").err(), Some(KeyFileError::WrongPassword));
    }

    #[test]
    fn empty_passwords_are_refused() {
        let seed = Seed::from_bytes([3; 32]);
        let refused = KeyFile::encrypt(KeyKind::Coldkey, &seed, "", KdfParams::fast_for_tests());
        assert_eq!(refused.err(), Some(KeyFileError::EmptyPassword));
    }
}
