//! Pending transactions, per sender in nonce order, checked against the finalized state on
//! admission and re-checked by execution when a block is built.

use std::collections::{BTreeMap, BTreeSet};

use based_state::{State, Store};
use based_types::{Amount, Encode as _, Hash, PublicKey, SignedTransaction};

/// Encoded transactions larger than this are refused before decoding.
pub const MAX_TRANSACTION_BYTES: usize = 64 * 1024;
pub const MAX_PER_SENDER: usize = 64;
pub const MAX_TOTAL: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error("transaction is not signed by its signer")]
    BadSignature,
    #[error("wrong chain id {got}, this chain is {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("nonce {got} is already used (account nonce {account})")]
    StaleNonce { account: u64, got: u64 },
    #[error("fee {fee} is below the minimum {minimum}")]
    FeeTooLow { fee: Amount, minimum: Amount },
    #[error("balance {available} cannot pay the fee {fee}")]
    CannotPayFee { fee: Amount, available: Amount },
    #[error("a transaction with this nonce and a fee of at least {existing} is already pending")]
    Underpriced { existing: Amount },
    #[error("too many pending transactions")]
    Full,
    #[error("state unreadable: {0}")]
    State(String),
}

#[derive(Default)]
pub struct Mempool {
    by_sender: BTreeMap<PublicKey, BTreeMap<u64, SignedTransaction>>,
    /// Hashes of every pending transaction, for lookups by hash.
    hashes: BTreeSet<Hash>,
    total: usize,
}

impl Mempool {
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.hashes.contains(hash)
    }

    /// Admits `transaction` if `state` (the finalized state) says it can pay and is not stale.
    /// An equal nonce replaces the pending transaction only for a higher fee.
    pub fn insert<S: Store>(
        &mut self,
        state: &State<S>,
        transaction: SignedTransaction,
    ) -> Result<(), MempoolError> {
        let tx = &transaction.transaction;
        let globals = state.globals().map_err(|e| MempoolError::State(e.to_string()))?;
        if tx.chain_id != globals.chain_id {
            return Err(MempoolError::WrongChain { expected: globals.chain_id, got: tx.chain_id });
        }
        let minimum = globals.params.min_transaction_fee;
        if tx.fee < minimum {
            return Err(MempoolError::FeeTooLow { fee: tx.fee, minimum });
        }
        let account = state.account(&tx.signer).map_err(|e| MempoolError::State(e.to_string()))?;
        if tx.nonce < account.nonce {
            return Err(MempoolError::StaleNonce { account: account.nonce, got: tx.nonce });
        }
        if account.balance < tx.fee {
            return Err(MempoolError::CannotPayFee { fee: tx.fee, available: account.balance });
        }
        // Room is checked before the signature: under load most refusals are for a full pool,
        // and the signature check is the most expensive step of admission.
        let queue = self.by_sender.get(&tx.signer);
        let replaces = match queue.and_then(|queue| queue.get(&tx.nonce)) {
            Some(existing) if existing.transaction.fee >= tx.fee => {
                return Err(MempoolError::Underpriced { existing: existing.transaction.fee });
            }
            Some(_) => true,
            None => false,
        };
        if !replaces
            && (queue.map_or(0, BTreeMap::len) >= MAX_PER_SENDER || self.total >= MAX_TOTAL)
        {
            return Err(MempoolError::Full);
        }
        if !transaction.verify_signature() {
            return Err(MempoolError::BadSignature);
        }
        if !replaces {
            self.total += 1;
        }
        self.hashes.insert(transaction.hash());
        let queue = self.by_sender.entry(tx.signer).or_default();
        if let Some(replaced) = queue.insert(tx.nonce, transaction) {
            self.hashes.remove(&replaced.hash());
        }
        Ok(())
    }

    /// Up to `max` transactions (and `max_bytes` encoded) executable on `state`: for each sender, the run of consecutive
    /// nonces starting at its account nonce. Senders are taken in key order, one transaction
    /// each per round, so one busy sender cannot crowd out the rest.
    pub fn executable<S: Store>(
        &self,
        state: &State<S>,
        max: usize,
        max_bytes: usize,
    ) -> Vec<SignedTransaction> {
        let mut runs: Vec<Vec<&SignedTransaction>> = Vec::new();
        for (sender, queue) in &self.by_sender {
            let Ok(account) = state.account(sender) else { continue };
            let run: Vec<_> = queue
                .range(account.nonce..)
                .zip(account.nonce..)
                .take_while(|((nonce, _), expected)| *nonce == expected)
                .map(|((_, tx), _)| tx)
                .collect();
            if !run.is_empty() {
                runs.push(run);
            }
        }
        let mut selected = Vec::new();
        let mut bytes = 0;
        let mut round = 0;
        while selected.len() < max {
            let before = selected.len();
            for run in &runs {
                if let Some(tx) = run.get(round) {
                    let size = tx.to_bytes().len();
                    if selected.len() == max || bytes + size > max_bytes {
                        break;
                    }
                    bytes += size;
                    selected.push((*tx).clone());
                }
            }
            if selected.len() == before {
                break;
            }
            round += 1;
        }
        selected
    }

    /// Drops every transaction whose nonce `state` (the new finalized state) has used.
    pub fn prune<S: Store>(&mut self, state: &State<S>) {
        let mut removed = 0;
        let hashes = &mut self.hashes;
        self.by_sender.retain(|sender, queue| {
            if let Ok(account) = state.account(sender) {
                let keep = queue.split_off(&account.nonce);
                removed += queue.len();
                for transaction in queue.values() {
                    hashes.remove(&transaction.hash());
                }
                *queue = keep;
            }
            !queue.is_empty()
        });
        self.total -= removed;
    }
}

#[cfg(test)]
mod tests {
    use based_state::{GenesisConfig, MemoryStore, Params};
    use based_types::{Call, SecretKey, Transaction, coins};

    use super::*;

    const CHAIN: u32 = 9;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    fn state() -> State<MemoryStore> {
        let genesis = GenesisConfig {
            chain_id: CHAIN,
            foundation: key(100).public_key(),
            balances: vec![(key(1).public_key(), coins(10)), (key(2).public_key(), coins(10))],
            pepe_balances: Vec::new(),
            relayers: vec![key(101).public_key()],
            relayer_threshold: 1,
            params: Params::default(),
        };
        State::genesis(MemoryStore::new(), genesis).expect("genesis")
    }

    fn transfer(from: u8, nonce: u64, fee: Amount) -> SignedTransaction {
        let signer = key(from);
        let call = Call::Transfer { to: key(3).public_key(), amount: 1 };
        Transaction { chain_id: CHAIN, signer: signer.public_key(), nonce, fee, call }.sign(&signer)
    }

    #[test]
    fn admission_checks_chain_fee_nonce_balance_and_signature() {
        let mut state = state();
        let mut pool = Mempool::default();
        let mut wrong_chain = transfer(1, 0, 1_000);
        wrong_chain.transaction.chain_id = CHAIN + 1;
        assert!(matches!(pool.insert(&state, wrong_chain), Err(MempoolError::WrongChain { .. })));
        assert!(matches!(
            pool.insert(&state, transfer(1, 0, 1)),
            Err(MempoolError::FeeTooLow { .. })
        ));
        assert!(matches!(
            pool.insert(&state, transfer(3, 0, 1_000)),
            Err(MempoolError::CannotPayFee { .. })
        ));
        let mut forged = transfer(1, 0, 1_000);
        forged.transaction.nonce = 1;
        assert_eq!(pool.insert(&state, forged), Err(MempoolError::BadSignature));
        state.propose_block(vec![transfer(1, 0, 1_000)]).expect("block");
        assert!(matches!(
            pool.insert(&state, transfer(1, 0, 1_000)),
            Err(MempoolError::StaleNonce { account: 1, got: 0 })
        ));
        assert!(pool.is_empty());
    }

    #[test]
    fn selection_follows_nonces_and_skips_gaps() {
        let state = state();
        let mut pool = Mempool::default();
        for nonce in [1, 0, 3] {
            pool.insert(&state, transfer(1, nonce, 1_000)).expect("admitted");
        }
        pool.insert(&state, transfer(2, 0, 1_000)).expect("admitted");
        let selected = pool.executable(&state, 10, MAX_TRANSACTION_BYTES);
        let order: Vec<_> =
            selected.iter().map(|t| (t.transaction.signer, t.transaction.nonce)).collect();
        let (one, two) = (key(1).public_key(), key(2).public_key());
        let mut expected = vec![(one, 0), (two, 0), (one, 1)];
        if two < one {
            expected.swap(0, 1);
        }
        assert_eq!(order, expected);
        assert_eq!(pool.executable(&state, 1, MAX_TRANSACTION_BYTES).len(), 1);
    }

    #[test]
    fn a_full_queue_refuses_before_checking_the_signature() {
        let state = state();
        let mut pool = Mempool::default();
        for nonce in 0..MAX_PER_SENDER as u64 {
            pool.insert(&state, transfer(1, nonce, 1_000)).expect("admitted");
        }
        let mut forged = transfer(1, MAX_PER_SENDER as u64, 1_000);
        forged.transaction.fee = 2_000;
        assert_eq!(pool.insert(&state, forged.clone()), Err(MempoolError::Full));
        forged.transaction.nonce = 0;
        assert_eq!(pool.insert(&state, forged), Err(MempoolError::BadSignature));
        assert_eq!(pool.len(), MAX_PER_SENDER);
        assert_eq!(pool.insert(&state, transfer(2, 0, 1_000)), Ok(()));
    }

    #[test]
    fn equal_nonce_replaces_only_for_a_higher_fee_and_prune_drops_used_nonces() {
        let mut state = state();
        let mut pool = Mempool::default();
        pool.insert(&state, transfer(1, 0, 2_000)).expect("admitted");
        assert_eq!(
            pool.insert(&state, transfer(1, 0, 2_000)),
            Err(MempoolError::Underpriced { existing: 2_000 })
        );
        pool.insert(&state, transfer(1, 0, 3_000)).expect("replaced");
        pool.insert(&state, transfer(1, 1, 1_000)).expect("admitted");
        assert_eq!(pool.len(), 2);
        assert!(!pool.contains(&transfer(1, 0, 2_000).hash()), "the replaced one is gone");
        assert!(pool.contains(&transfer(1, 0, 3_000).hash()));
        let chosen = pool.executable(&state, 10, MAX_TRANSACTION_BYTES);
        assert_eq!(chosen[0].transaction.fee, 3_000);
        state.propose_block(chosen[..1].to_vec()).expect("block");
        pool.prune(&state);
        assert_eq!(pool.len(), 1);
        assert!(!pool.contains(&transfer(1, 0, 3_000).hash()), "pruned");
        assert!(pool.contains(&transfer(1, 1, 1_000).hash()));
        assert_eq!(pool.executable(&state, 10, MAX_TRANSACTION_BYTES)[0].transaction.nonce, 1);
    }
}
