//! The block consensus orders: a based-types block plus the simplex context it was proposed in.

use based_types::{Decode as _, Encode as _};
use bytes::{Buf, BufMut};
use commonware_codec::{EncodeSize, Error as CodecError, Read, ReadExt as _, Write};
use commonware_consensus::simplex::types::Context;
use commonware_consensus::types::Height;
use commonware_consensus::{CertifiableBlock, Heightable};
use commonware_cryptography::{Digestible, Hasher, Sha256, ed25519, sha256};

/// Largest encoded block a peer may send us (docs/node-design.md section 7).
pub const MAX_BLOCK_BYTES: usize = 512 * 1024;

const DIGEST_DOMAIN: &[u8] = b"BASED_BLOCK";

pub type ConsensusContext = Context<sha256::Digest, ed25519::PublicKey>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBlock {
    pub context: ConsensusContext,
    pub inner: based_types::Block,
    /// Computed once at construction or decode: digests are requested constantly.
    digest: sha256::Digest,
}

impl ChainBlock {
    pub fn new(context: ConsensusContext, inner: based_types::Block) -> Self {
        let digest = compute_digest(&context, &inner);
        Self { context, inner, digest }
    }

    pub fn height_u64(&self) -> u64 {
        self.inner.header.height
    }

    pub fn timestamp_ms(&self) -> u64 {
        self.inner.header.timestamp_ms
    }
}

fn compute_digest(context: &ConsensusContext, inner: &based_types::Block) -> sha256::Digest {
    let mut hasher = Sha256::new();
    hasher.update(DIGEST_DOMAIN);
    hasher.update(&commonware_codec::Encode::encode(context));
    hasher.update(&inner.hash().0);
    hasher.finalize()
}

impl Write for ChainBlock {
    fn write(&self, writer: &mut impl BufMut) {
        self.context.write(writer);
        self.inner.to_bytes().write(writer);
    }
}

impl EncodeSize for ChainBlock {
    fn encode_size(&self) -> usize {
        self.context.encode_size() + self.inner.to_bytes().encode_size()
    }
}

impl Read for ChainBlock {
    type Cfg = ();

    fn read_cfg(reader: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let context = ConsensusContext::read(reader)?;
        let bytes = Vec::<u8>::read_cfg(reader, &((..=MAX_BLOCK_BYTES).into(), ()))?;
        let inner = based_types::Block::from_bytes(&bytes)
            .map_err(|_| CodecError::Invalid("ChainBlock", "malformed based block"))?;
        Ok(Self::new(context, inner))
    }
}

impl Digestible for ChainBlock {
    type Digest = sha256::Digest;

    fn digest(&self) -> sha256::Digest {
        self.digest
    }
}

impl Heightable for ChainBlock {
    fn height(&self) -> Height {
        Height::new(self.inner.header.height)
    }
}

impl commonware_consensus::Block for ChainBlock {
    fn parent(&self) -> sha256::Digest {
        self.context.parent.1
    }
}

impl CertifiableBlock for ChainBlock {
    type Context = ConsensusContext;

    fn context(&self) -> ConsensusContext {
        self.context.clone()
    }
}

/// Consensus identities and based-types keys are both raw 32-byte ed25519 keys.
pub fn based_key(key: &ed25519::PublicKey) -> based_types::PublicKey {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(key.as_ref());
    based_types::PublicKey(bytes)
}
