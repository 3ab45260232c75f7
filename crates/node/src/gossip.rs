//! Transaction gossip: transactions submitted to this node are sent to every peer in batches;
//! transactions from peers are admitted to the mempool (not forwarded again: validators are
//! fully connected, so the submitting node reaches all of them).

use std::time::Duration;

use based_types::{Decode as _, Encode as _, SignedTransaction};
use commonware_codec::{Encode as _, RangeCfg, Read as _};
use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::Clock;
use tracing::debug;

use crate::application::Application;
use crate::mempool::MAX_TRANSACTION_BYTES;

pub const TRANSACTIONS_CHANNEL: u64 = 5;
/// Gossip is batched so that the per-peer message quota does not cap transactions per second.
const BATCH_INTERVAL: Duration = Duration::from_millis(50);
pub const MAX_BATCH_TRANSACTIONS: usize = 256;

pub(crate) fn encode_batch(transactions: &[SignedTransaction]) -> Vec<u8> {
    let encoded: Vec<Vec<u8>> = transactions.iter().map(|tx| tx.to_bytes()).collect();
    encoded.encode().to_vec()
}

/// Strict and bounded: `None` for anything but a well-formed batch.
pub(crate) fn decode_batch(bytes: &[u8]) -> Option<Vec<SignedTransaction>> {
    let limits: (RangeCfg<usize>, (RangeCfg<usize>, ())) =
        ((..=MAX_BATCH_TRANSACTIONS).into(), ((..=MAX_TRANSACTION_BYTES).into(), ()));
    let mut reader = bytes;
    let encoded = Vec::<Vec<u8>>::read_cfg(&mut reader, &limits).ok()?;
    if !reader.is_empty() {
        return None;
    }
    encoded.iter().map(|tx| SignedTransaction::from_bytes(tx).ok()).collect()
}

pub(crate) async fn run<E, S, R>(
    context: E,
    application: Application,
    (mut sender, mut receiver): (S, R),
) where
    E: Clock,
    S: Sender,
    R: Receiver,
{
    let mut next_flush = context.current() + BATCH_INTERVAL;
    loop {
        commonware_macros::select! {
            received = receiver.recv() => {
                let Ok((peer, message)) = received else { return };
                let Some(batch) = decode_batch(message.as_ref()) else {
                    debug!(?peer, "undecodable transaction batch");
                    continue;
                };
                for transaction in batch {
                    if let Err(reason) = application.admit_from_peer(transaction) {
                        debug!(?peer, %reason, "gossiped transaction refused");
                    }
                }
            },
            _ = context.sleep_until(next_flush) => {
                next_flush = context.current() + BATCH_INTERVAL;
                for batch in application.take_outbound().chunks(MAX_BATCH_TRANSACTIONS) {
                    // Peers that are offline or over quota miss the batch; the origin still
                    // includes the transaction when it leads.
                    let _ = sender.send(Recipients::All, encode_batch(batch), false).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use based_types::{Call, SecretKey, Transaction};

    use super::*;

    #[test]
    fn batches_round_trip_and_garbage_is_refused() {
        let key = SecretKey::from_seed([4; 32]);
        let batch: Vec<_> = (0..3)
            .map(|nonce| {
                let call = Call::Transfer { to: key.public_key(), amount: 5 };
                Transaction { chain_id: 1, signer: key.public_key(), nonce, fee: 1_000, call }
                    .sign(&key)
            })
            .collect();
        let bytes = encode_batch(&batch);
        assert_eq!(decode_batch(&bytes), Some(batch));
        assert_eq!(decode_batch(&bytes[..bytes.len() - 1]), None);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode_batch(&trailing), None);
        assert_eq!(decode_batch(&[0xff; 64]), None);
    }
}
