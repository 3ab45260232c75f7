//! The state machine: genesis, transaction admission and dispatch, block boundaries, queries.

use based_types::{
    Amount, Block, BrainId, Call, Decode, Encode, Hash, PublicKey, Role, SignedTransaction, Uid,
    transactions_root,
};

use crate::error::{BlockError, GenesisError, TxError};
use crate::events::{BlockOutcome, Event, Receipt};
use crate::params::Params;
use crate::records::{Account, Brain, BridgeEvent, Escrow, Globals, Node, NodeRef, Proposal, keys};
use crate::store::{Changes, Store, overlay_scan};

#[derive(Debug, Clone)]
pub struct GenesisConfig {
    pub chain_id: u32,
    /// Owner of the reserved Brains #0..#6 and #47.
    pub foundation: PublicKey,
    pub balances: Vec<(PublicKey, Amount)>,
    pub pepe_balances: Vec<(PublicKey, Amount)>,
    pub relayers: Vec<PublicKey>,
    pub relayer_threshold: u32,
    pub params: Params,
}

/// The protocol state over a [`Store`]. Transactions apply to the open block (committed height
/// + 1); [`State::finish_block`] runs the end-of-block rules and commits.
pub struct State<S: Store> {
    store: S,
    /// Writes of the open block, committed to the store by `finish_block`.
    open_block: Changes,
}

/// A read-through write buffer for one unit of work (a transaction or the end of a block):
/// dropped on error, merged on success, so a failed call changes nothing.
pub(crate) struct Ctx<'a> {
    store: &'a dyn Store,
    below: &'a Changes,
    changes: Changes,
    pub height: u64,
}

impl<'a> Ctx<'a> {
    fn new(store: &'a dyn Store, below: &'a Changes, height: u64) -> Self {
        Ctx { store, below, changes: Changes::new(), height }
    }

    fn raw(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.changes.get(key).or_else(|| self.below.get(key)) {
            Some(value) => value.clone(),
            None => self.store.get(key),
        }
    }

    pub fn get<T: Decode>(&self, key: &[u8]) -> Result<Option<T>, TxError> {
        self.raw(key).map(|bytes| T::from_bytes(&bytes)).transpose().map_err(TxError::from)
    }

    pub fn put<T: Encode>(&mut self, key: Vec<u8>, value: &T) {
        self.changes.insert(key, Some(value.to_bytes()));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.changes.insert(key, None);
    }

    /// Decoded entries under `prefix`, in key order.
    pub fn scan<T: Decode>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>, TxError> {
        let base = self.store.scan_prefix(prefix).into_iter().collect();
        let merged = overlay_scan(overlay_scan(base, self.below, prefix), &self.changes, prefix);
        merged.into_iter().map(|(key, bytes)| Ok((key, T::from_bytes(&bytes)?))).collect()
    }

    pub fn globals(&self) -> Result<Globals, TxError> {
        self.get(&keys::globals())?
            .ok_or(TxError::Corrupt(based_types::DecodeError::InvalidValue("no globals")))
    }

    pub fn set_globals(&mut self, globals: &Globals) {
        self.put(keys::globals(), globals);
    }

    pub fn account(&self, address: &PublicKey) -> Result<Account, TxError> {
        Ok(self.get(&keys::account(address))?.unwrap_or_default())
    }

    pub fn set_account(&mut self, address: &PublicKey, account: &Account) {
        if *account == Account::default() {
            self.delete(keys::account(address));
        } else {
            self.put(keys::account(address), account);
        }
    }

    pub fn credit(&mut self, address: &PublicKey, amount: Amount) -> Result<(), TxError> {
        let mut account = self.account(address)?;
        account.balance = account.balance.checked_add(amount).ok_or(TxError::Overflow)?;
        self.set_account(address, &account);
        Ok(())
    }

    pub fn debit(&mut self, address: &PublicKey, amount: Amount) -> Result<(), TxError> {
        let mut account = self.account(address)?;
        account.balance = account
            .balance
            .checked_sub(amount)
            .ok_or(TxError::InsufficientFunds { needed: amount, available: account.balance })?;
        self.set_account(address, &account);
        Ok(())
    }

    pub fn brain(&self, brain: BrainId) -> Result<Brain, TxError> {
        self.get(&keys::brain(brain))?.ok_or(TxError::UnknownBrain(brain))
    }

    pub fn set_brain(&mut self, id: BrainId, brain: &Brain) {
        self.put(keys::brain(id), brain);
    }

    /// The Brain, if `signer` owns it.
    pub fn owned_brain(&self, signer: &PublicKey, id: BrainId) -> Result<Brain, TxError> {
        let brain = self.brain(id)?;
        if brain.owner != *signer {
            return Err(TxError::NotBrainOwner(id));
        }
        Ok(brain)
    }

    /// The node registered under `hotkey` on `brain`, which must have `role`.
    pub fn node_with_role(
        &self,
        brain: BrainId,
        hotkey: &PublicKey,
        role: Role,
    ) -> Result<(Uid, Node), TxError> {
        let NodeRef { role: found, uid } =
            self.get(&keys::hotkey(brain, hotkey))?.ok_or(TxError::NotRegistered(*hotkey))?;
        if found != role {
            return Err(TxError::WrongRole { hotkey: *hotkey, expected: role });
        }
        let node =
            self.get(&keys::node(brain, role, uid))?.ok_or(TxError::NotRegistered(*hotkey))?;
        Ok((uid, node))
    }
}

impl<S: Store> State<S> {
    /// Writes the genesis state into an empty store.
    pub fn genesis(store: S, config: GenesisConfig) -> Result<Self, GenesisError> {
        let relayers = config.relayers.len();
        let threshold = config.relayer_threshold;
        if threshold == 0 || threshold as usize > relayers {
            return Err(GenesisError::BadRelayerThreshold { threshold, relayers });
        }
        let mut checked_params = Params::default();
        for (param, value) in crate::governance::all_params(&config.params) {
            checked_params.set(param, value)?;
        }
        let mut state = State { store, open_block: Changes::new() };
        let empty = Changes::new();
        let mut ctx = Ctx::new(&state.store, &empty, 0);
        let sum = |entries: &[(PublicKey, Amount)]| {
            entries.iter().try_fold(0u64, |total, (_, amount)| total.checked_add(*amount))
        };
        let genesis_based = sum(&config.balances).ok_or(GenesisError::Overflow)?;
        let genesis_pepe = sum(&config.pepe_balances).ok_or(GenesisError::Overflow)?;
        for (address, amount) in &config.balances {
            ctx.credit(address, *amount).map_err(|_| GenesisError::Overflow)?;
        }
        for (address, amount) in &config.pepe_balances {
            let mut account = ctx.account(address)?;
            account.pepe = account.pepe.checked_add(*amount).ok_or(GenesisError::Overflow)?;
            ctx.set_account(address, &account);
        }
        let globals = Globals {
            chain_id: config.chain_id,
            height: 0,
            foundation: config.foundation,
            relayers: config.relayers,
            relayer_threshold: threshold,
            params: checked_params,
            brains_burned: 0,
            genesis_based,
            emitted_based: 0,
            withheld_based: 0,
            fees_burned: 0,
            genesis_pepe,
            bridged_pepe: 0,
            pepe_burned: 0,
            total_stake: 0,
            next_proposal: 0,
            open_proposals: Vec::new(),
        };
        for brain in crate::params::RESERVED_BRAINS {
            let record = crate::brains::new_brain(
                config.foundation,
                crate::records::Acquisition::Reserved {},
                0,
                &globals.params,
            );
            ctx.set_brain(brain, &record);
        }
        ctx.set_globals(&globals);
        let changes = ctx.changes;
        apply_changes(&mut state.store, changes);
        Ok(state)
    }

    /// Resumes from a store that already holds a state.
    pub fn open(store: S) -> Self {
        State { store, open_block: Changes::new() }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn into_store(self) -> S {
        self.store
    }

    fn reader(&self) -> Ctx<'_> {
        Ctx::new(&self.store, &self.open_block, self.open_height())
    }

    /// Height of the last committed block (0 = genesis).
    pub fn height(&self) -> u64 {
        self.globals().map(|g| g.height).unwrap_or(0)
    }

    fn open_height(&self) -> u64 {
        let committed: Option<Globals> =
            self.store.get(&keys::globals()).and_then(|bytes| Globals::from_bytes(&bytes).ok());
        committed.map_or(0, |g| g.height) + 1
    }

    /// Applies a transaction to the open block. `Err` means it was rejected (bad chain id,
    /// signature, nonce or fee) and changed nothing. `Ok` means it paid its fee and used its
    /// nonce; the receipt's outcome says whether the call itself succeeded (a failed call
    /// changes nothing else).
    pub fn apply_transaction(&mut self, signed: &SignedTransaction) -> Result<Receipt, TxError> {
        self.apply_signed(signed, true)
    }

    /// `verify_signature: false` when the caller already verified it (a block's batch).
    fn apply_signed(
        &mut self,
        signed: &SignedTransaction,
        verify_signature: bool,
    ) -> Result<Receipt, TxError> {
        let height = self.open_height();
        let tx = &signed.transaction;
        let mut admission = Ctx::new(&self.store, &self.open_block, height);
        let mut globals = admission.globals()?;
        if tx.chain_id != globals.chain_id {
            return Err(TxError::WrongChain { expected: globals.chain_id, got: tx.chain_id });
        }
        let mut account = admission.account(&tx.signer)?;
        if tx.nonce != account.nonce {
            return Err(TxError::BadNonce { expected: account.nonce, got: tx.nonce });
        }
        let minimum = globals.params.min_transaction_fee;
        if tx.fee < minimum {
            return Err(TxError::FeeTooLow { fee: tx.fee, minimum });
        }
        if account.balance < tx.fee {
            return Err(TxError::InsufficientFunds { needed: tx.fee, available: account.balance });
        }
        if verify_signature && !signed.verify_signature() {
            return Err(TxError::BadSignature);
        }
        account.balance -= tx.fee;
        account.nonce += 1;
        admission.set_account(&tx.signer, &account);
        globals.fees_burned = globals.fees_burned.checked_add(tx.fee).ok_or(TxError::Overflow)?;
        admission.set_globals(&globals);
        let admitted = admission.changes;
        self.open_block.extend(admitted);

        let mut ctx = Ctx::new(&self.store, &self.open_block, height);
        let outcome = dispatch(&mut ctx, &tx.signer, &tx.call);
        let changes = ctx.changes;
        if outcome.is_ok() {
            self.open_block.extend(changes);
        }
        Ok(Receipt { tx_hash: signed.hash(), fee: tx.fee, outcome })
    }

    /// Runs the end-of-block rules (emission, epochs, governance) and commits the open block.
    pub fn finish_block(&mut self) -> Result<BlockOutcome, BlockError> {
        let (events, state_root) = self.close_block()?;
        self.commit();
        Ok(BlockOutcome { height: self.height(), receipts: Vec::new(), events, state_root })
    }

    fn close_block(&mut self) -> Result<(Vec<Event>, Hash), BlockError> {
        let height = self.open_height();
        let mut ctx = Ctx::new(&self.store, &self.open_block, height);
        let events = crate::emission::end_block(&mut ctx).map_err(BlockError::EndBlock)?;
        let changes = ctx.changes;
        self.open_block.extend(changes);
        Ok((events, self.pending_root()))
    }

    fn commit(&mut self) {
        let changes = std::mem::take(&mut self.open_block);
        apply_changes(&mut self.store, changes);
    }

    /// Moves the chain to `height` without running the blocks in between (tests of long
    /// periods such as stake maturity).
    #[cfg(test)]
    pub(crate) fn jump_to_height(&mut self, height: u64) {
        self.commit();
        let mut globals = self.globals().expect("genesis state");
        globals.height = height;
        self.store.put(keys::globals(), globals.to_bytes());
    }

    /// Every entry of the committed state plus the open block.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        let base = self.store.scan_prefix(&[]).into_iter().collect();
        overlay_scan(base, &self.open_block, &[])
    }

    /// Drops everything applied to the open block.
    pub fn discard_block(&mut self) {
        self.open_block.clear();
    }

    /// Applies a whole block atomically: header checks, every transaction (one rejected
    /// transaction rejects the block), the end-of-block rules and the state root. Anything
    /// applied to the open block through `apply_transaction` is dropped first.
    pub fn apply_block(&mut self, block: &Block) -> Result<BlockOutcome, BlockError> {
        self.discard_block();
        let header = &block.header;
        let globals = self.globals().map_err(BlockError::EndBlock)?;
        if header.chain_id != globals.chain_id {
            return Err(BlockError::WrongChain {
                expected: globals.chain_id,
                got: header.chain_id,
            });
        }
        let expected = globals.height + 1;
        if header.height != expected {
            return Err(BlockError::WrongHeight { expected, got: header.height });
        }
        if transactions_root(&block.transactions) != header.transactions_root {
            return Err(BlockError::WrongTransactionsRoot);
        }
        // One batch check for the whole block; if it fails, each transaction is checked alone
        // so that the bad one is named.
        let batch_verified = SignedTransaction::verify_signatures(&block.transactions);
        let mut receipts = Vec::with_capacity(block.transactions.len());
        for (index, transaction) in block.transactions.iter().enumerate() {
            match self.apply_signed(transaction, !batch_verified) {
                Ok(receipt) => receipts.push(receipt),
                Err(error) => {
                    self.discard_block();
                    return Err(BlockError::InvalidTransaction { index, error });
                }
            }
        }
        let (events, state_root) = match self.close_block() {
            Ok(closed) => closed,
            Err(error) => {
                self.discard_block();
                return Err(error);
            }
        };
        if state_root != header.state_root {
            self.discard_block();
            return Err(BlockError::WrongStateRoot {
                computed: state_root,
                claimed: header.state_root,
            });
        }
        self.commit();
        Ok(BlockOutcome { height: expected, receipts, events, state_root })
    }

    /// Applies `transactions` as the next block, dropping rejected ones (what a proposer does);
    /// returns the included transactions and the outcome.
    pub fn propose_block(
        &mut self,
        transactions: Vec<SignedTransaction>,
    ) -> Result<(Vec<SignedTransaction>, BlockOutcome), BlockError> {
        let mut included = Vec::with_capacity(transactions.len());
        let mut receipts = Vec::with_capacity(transactions.len());
        for transaction in transactions {
            if let Ok(receipt) = self.apply_transaction(&transaction) {
                receipts.push(receipt);
                included.push(transaction);
            }
        }
        let mut outcome = self.finish_block()?;
        outcome.receipts = receipts;
        Ok((included, outcome))
    }

    /// Root of the committed state plus the open block.
    pub fn state_root(&self) -> Hash {
        self.pending_root()
    }

    fn pending_root(&self) -> Hash {
        let base = self.store.scan_prefix(&[]).into_iter().collect();
        crate::store::root_of(&overlay_scan(base, &self.open_block, &[]))
    }

    pub fn globals(&self) -> Result<Globals, TxError> {
        self.reader().globals()
    }

    pub fn params(&self) -> Result<Params, TxError> {
        Ok(self.globals()?.params)
    }

    pub fn account(&self, address: &PublicKey) -> Result<Account, TxError> {
        self.reader().account(address)
    }

    pub fn brain(&self, brain: BrainId) -> Result<Option<Brain>, TxError> {
        self.reader().get(&keys::brain(brain))
    }

    pub fn brains(&self) -> Result<Vec<(BrainId, Brain)>, TxError> {
        let entries = self.reader().scan(&keys::brain_prefix())?;
        Ok(entries.into_iter().filter_map(|(k, b)| Some((keys::brain_id_of(&k)?, b))).collect())
    }

    /// The Brains `owner` holds (ERC-721 `balanceOf` is its length).
    pub fn brains_owned_by(&self, owner: &PublicKey) -> Result<Vec<BrainId>, TxError> {
        let brains = self.brains()?;
        Ok(brains.into_iter().filter(|(_, b)| b.owner == *owner).map(|(id, _)| id).collect())
    }

    pub fn nodes(&self, brain: BrainId, role: Role) -> Result<Vec<(Uid, Node)>, TxError> {
        crate::nodes::load_nodes(&self.reader(), brain, role)
    }

    pub fn node_by_hotkey(
        &self,
        brain: BrainId,
        hotkey: &PublicKey,
    ) -> Result<Option<(Role, Uid, Node)>, TxError> {
        let reader = self.reader();
        let Some(NodeRef { role, uid }) = reader.get(&keys::hotkey(brain, hotkey))? else {
            return Ok(None);
        };
        Ok(reader.get(&keys::node(brain, role, uid))?.map(|node| (role, uid, node)))
    }

    /// Everyone staked on the validator `uid` of `brain` (its own cold key included), in key
    /// order.
    pub fn stakes(&self, brain: BrainId, uid: Uid) -> Result<Vec<(PublicKey, Amount)>, TxError> {
        crate::nodes::load_stakes(&self.reader(), brain, uid)
    }

    pub fn stake(&self, brain: BrainId, uid: Uid, staker: &PublicKey) -> Result<Amount, TxError> {
        Ok(self.reader().get(&keys::stake(brain, uid, staker))?.unwrap_or(0))
    }

    pub fn escrow(&self, user: &PublicKey) -> Result<Escrow, TxError> {
        Ok(self.reader().get(&keys::escrow(user))?.unwrap_or_default())
    }

    pub fn bridge_event(&self, event_id: &Hash) -> Result<Option<BridgeEvent>, TxError> {
        self.reader().get(&keys::bridge_event(event_id))
    }

    pub fn proposal(&self, id: u64) -> Result<Option<Proposal>, TxError> {
        self.reader().get(&keys::proposal(id))
    }

    /// Totals for audits: (BASED held in balances, stakes and escrows; PEPE held in balances
    /// and Brain stake locks).
    pub fn holdings(&self) -> Result<(u128, u128), TxError> {
        let reader = self.reader();
        let accounts: Vec<(Vec<u8>, Account)> = reader.scan(&keys::account_prefix())?;
        let escrows: Vec<(Vec<u8>, Escrow)> = reader.scan(&keys::escrow_prefix())?;
        let brains = self.brains()?;
        let mut based: u128 = accounts.iter().map(|(_, a)| u128::from(a.balance)).sum();
        based += escrows.iter().map(|(_, e)| u128::from(e.balance)).sum::<u128>();
        based += brains.iter().map(|(_, b)| u128::from(b.stake)).sum::<u128>();
        let mut pepe: u128 = accounts.iter().map(|(_, a)| u128::from(a.pepe)).sum();
        for (_, brain) in &brains {
            if let crate::records::Acquisition::Stake { locked } = brain.acquisition {
                pepe += u128::from(locked);
            }
        }
        Ok((based, pepe))
    }
}

fn apply_changes<S: Store>(store: &mut S, changes: Changes) {
    for (key, value) in changes {
        match value {
            Some(value) => store.put(key, value),
            None => store.delete(&key),
        }
    }
}

fn dispatch(ctx: &mut Ctx<'_>, signer: &PublicKey, call: &Call) -> Result<Vec<Event>, TxError> {
    use crate::{accounts, brains, compute, governance, nodes};
    match call {
        Call::Transfer { to, amount } => accounts::transfer(ctx, signer, to, *amount),
        Call::TransferPepe { to, amount } => accounts::transfer_pepe(ctx, signer, to, *amount),
        Call::BridgeAttest { event_id, recipient, amount } => {
            accounts::bridge_attest(ctx, signer, event_id, recipient, *amount)
        }
        Call::AcquireBrainByBurn {} => brains::acquire_by_burn(ctx, signer),
        Call::AcquireBrainByStake {} => brains::acquire_by_stake(ctx, signer),
        Call::DeactivateBrain { brain } => brains::deactivate(ctx, signer, *brain),
        Call::ApproveBrain { brain, approved } => brains::approve(ctx, signer, *brain, *approved),
        Call::TransferBrain { brain, to } => brains::transfer(ctx, signer, *brain, to),
        Call::ConfigureBrain { brain, setting } => brains::configure(ctx, signer, *brain, setting),
        Call::Register { brain, hotkey, role, max_fee } => {
            nodes::register(ctx, signer, *brain, hotkey, *role, *max_fee)
        }
        Call::AddStake { brain, hotkey, amount } => {
            nodes::add_stake(ctx, signer, *brain, hotkey, *amount)
        }
        Call::RemoveStake { brain, hotkey, amount } => {
            nodes::remove_stake(ctx, signer, *brain, hotkey, *amount)
        }
        Call::SetWeights { brain, weights } => nodes::set_weights(ctx, signer, *brain, weights),
        Call::SetCommission { brain, commission_ppb } => {
            nodes::set_commission(ctx, signer, *brain, *commission_ppb)
        }
        Call::FundEscrow { amount } => compute::fund_escrow(ctx, signer, *amount),
        Call::RequestEscrowRelease {} => compute::request_release(ctx, signer),
        Call::ReleaseEscrow {} => compute::release(ctx, signer),
        Call::RedeemReceipt { receipt, user_signature } => {
            compute::redeem(ctx, signer, receipt, user_signature)
        }
        Call::Propose { brain, param, value } => {
            governance::propose(ctx, signer, *brain, *param, *value)
        }
        Call::VoteAsBrain { proposal, brain, approve } => {
            governance::vote_as_brain(ctx, signer, *proposal, *brain, *approve)
        }
        Call::VoteWithPepe { proposal, veto } => {
            governance::vote_with_pepe(ctx, signer, *proposal, *veto)
        }
    }
}
