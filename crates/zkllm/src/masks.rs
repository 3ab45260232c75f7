//! The masks of a session's uploads, derived from the mask seed the client publishes in Keys.
//!
//! An upload's masks (one per column part) are public: a ciphertext carries their seeds in the
//! clear. Deriving them from one published seed lets the miner know them before the vectors
//! exist, and so compute their share of every product while it would otherwise wait
//! (`crate::ahead`). The one rule is that no mask is used for two uploads under one key (the two
//! b's would differ by the difference of their messages): each stage numbers its uploads 0, 1,
//! 2, ..., both ends count, and the miner refuses an index that does not grow.

use based_model::Stage;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::{STAGES, stage_index};

/// Upload indices stay below this: 2^40 uploads of one stage is far beyond any conversation,
/// and it keeps every index's stretch of its ChaCha20 stream apart from every other's (the
/// stream's block counter has 64 bits).
pub const MAX_UPLOAD_INDEX: u64 = 1 << 40;

/// The mask seeds of upload `index` (below [`MAX_UPLOAD_INDEX`]) of (`layer`, `stage`), one
/// per column part.
///
/// ChaCha20 keyed by the session's seed is a PRF: every (layer, stage) reads its own stream and
/// every upload its own disjoint stretch of it, so no two uploads of a session share a mask.
pub fn upload_mask_seeds(
    session_seed: &[u8; 32],
    layer: u32,
    stage: Stage,
    index: u64,
    parts: usize,
) -> Vec<[u8; 32]> {
    let mut stream = ChaCha20Rng::from_seed(*session_seed);
    stream.set_stream(u64::from(layer) * STAGES.len() as u64 + stage_index(stage) as u64);
    // 8 words of 32 bits per seed.
    stream.set_word_pos(u128::from(index) * parts as u128 * 8);
    (0..parts)
        .map(|_| {
            let mut seed = [0u8; 32];
            stream.fill_bytes(&mut seed);
            seed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_upload_of_a_session_gets_its_own_masks() {
        let session = [5; 32];
        let mut seen = HashSet::new();
        for layer in 0..3 {
            for stage in STAGES {
                for index in 0..20 {
                    for seed in upload_mask_seeds(&session, layer, stage, index, 2) {
                        assert!(seen.insert(seed), "layer {layer} {stage:?} upload {index}");
                    }
                }
            }
        }
        // Both ends derive the same seeds; another session's differ.
        assert_eq!(
            upload_mask_seeds(&session, 2, Stage::Down, 7, 2),
            upload_mask_seeds(&session, 2, Stage::Down, 7, 2)
        );
        assert!(!seen.contains(&upload_mask_seeds(&[6; 32], 0, Stage::Qkv, 0, 1)[0]));
        // The first upload's first seed does not depend on how many parts follow it.
        assert_eq!(
            upload_mask_seeds(&session, 1, Stage::Qkv, 0, 1)[0],
            upload_mask_seeds(&session, 1, Stage::Qkv, 0, 2)[0]
        );
    }
}
