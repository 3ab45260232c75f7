//! Ed25519 keys. A participant has a cold key (funds, Brain ownership) and hot keys
//! (operational: a miner's or validator's identity on a Brain). Both are plain ed25519 keys;
//! the role is a matter of use, and an account address is its public key.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::codec::{Decode, DecodeError, Encode, Reader};
use crate::hash::{from_hex, to_hex};

/// An account address: the 32-byte ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PublicKey(pub [u8; 32]);

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

/// A signing key. Not `Debug`/`Display`, so it cannot leak into logs.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn generate<R: ed25519_dalek::rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        SecretKey(SigningKey::generate(rng))
    }

    /// The 32-byte seed, for key files (which encrypt it at rest).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl PublicKey {
    /// Strict verification (rejects non-canonical and small-order encodings), so every node
    /// agrees on which signatures are valid.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &signature).is_ok()
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

/// Checks many (key, message, signature) triples at once with ed25519 batch verification,
/// about three times faster per signature than one by one. `true` means every signature is
/// valid; on `false`, check them one by one to find the culprit.
///
/// Batch verification is cofactorless with coefficients derived deterministically from the
/// batch, so every node reaches the same answer. Unlike [`PublicKey::verify`] it may accept a
/// signature whose signer deliberately added a small-torsion component; it cannot accept a
/// signature not made with the signing key. Weak (small-order) keys are refused outright.
pub fn verify_batch(items: &[(&PublicKey, &[u8], &Signature)]) -> bool {
    let mut keys = Vec::with_capacity(items.len());
    for (key, _, _) in items {
        match VerifyingKey::from_bytes(&key.0) {
            Ok(key) if !key.is_weak() => keys.push(key),
            _ => return false,
        }
    }
    let messages: Vec<&[u8]> = items.iter().map(|(_, message, _)| *message).collect();
    let signatures: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|(_, _, signature)| ed25519_dalek::Signature::from_bytes(&signature.0))
        .collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", to_hex(&self.0))
    }
}

impl std::str::FromStr for PublicKey {
    type Err = DecodeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        from_hex(text)
            .map(PublicKey)
            .ok_or(DecodeError::InvalidValue("address must be 64 hex digits"))
    }
}

impl Encode for PublicKey {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for PublicKey {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PublicKey(reader.take_array()?))
    }
}

impl Encode for Signature {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for Signature {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Signature(reader.take_array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let key = SecretKey::from_seed([7; 32]);
        let signature = key.sign(b"hello");
        assert!(key.public_key().verify(b"hello", &signature));
        assert!(!key.public_key().verify(b"hellO", &signature));
        assert!(!SecretKey::from_seed([8; 32]).public_key().verify(b"hello", &signature));
        let parsed: PublicKey = key.public_key().to_hex().parse().unwrap();
        assert_eq!(parsed, key.public_key());
    }

    #[test]
    fn batch_verification_agrees_on_honest_signatures() {
        let keys: Vec<SecretKey> = (0..5).map(|i| SecretKey::from_seed([i; 32])).collect();
        let publics: Vec<PublicKey> = keys.iter().map(SecretKey::public_key).collect();
        let messages: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 40]).collect();
        let mut signatures: Vec<Signature> =
            keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
        let items = |signatures: &[Signature]| -> bool {
            let items: Vec<(&PublicKey, &[u8], &Signature)> = publics
                .iter()
                .zip(&messages)
                .zip(signatures)
                .map(|((k, m), s)| (k, m.as_slice(), s))
                .collect();
            verify_batch(&items)
        };
        assert!(items(&signatures));
        signatures.swap(1, 2);
        assert!(!items(&signatures));
        assert!(verify_batch(&[]));
    }
}
