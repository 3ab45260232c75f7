//! Why a transaction or block was refused.

use based_types::{Amount, BrainId, DecodeError, Hash, ParamId, PublicKey, Role};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxError {
    #[error("transaction is for chain {got}, this chain is {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("invalid signature")]
    BadSignature,
    #[error("wrong nonce: expected {expected}, got {got}")]
    BadNonce { expected: u64, got: u64 },
    #[error("fee {fee} is below the minimum of {minimum}")]
    FeeTooLow { fee: Amount, minimum: Amount },
    #[error("insufficient funds: {needed} needed, {available} available")]
    InsufficientFunds { needed: Amount, available: Amount },
    #[error("insufficient free PEPE: {needed} needed, {available} available")]
    InsufficientPepe { needed: Amount, available: Amount },
    #[error("amount must be positive")]
    ZeroAmount,
    #[error("arithmetic overflow")]
    Overflow,
    #[error("{0} is not a bridge relayer")]
    NotRelayer(PublicKey),
    #[error("bridge event {0} was already credited")]
    BridgeEventAlreadyCredited(Hash),
    #[error("relayer already attested bridge event {0}")]
    DuplicateAttestation(Hash),
    #[error("attestation of bridge event {0} disagrees with earlier attestations")]
    ConflictingAttestation(Hash),
    #[error("all {0} Brains are taken")]
    BrainCapReached(u16),
    #[error("Brain #{0} does not exist")]
    UnknownBrain(BrainId),
    #[error("not the owner (or approved operator) of Brain #{0}")]
    NotBrainOwner(BrainId),
    #[error("Brain #{0} was acquired by stake and cannot be transferred")]
    BrainNotTransferable(BrainId),
    #[error("only Brains acquired by stake can be deactivated (Brain #{0})")]
    BrainNotStaked(BrainId),
    #[error("Brain #{brain} matures at block {matures_at}")]
    BrainNotMature { brain: BrainId, matures_at: u64 },
    #[error("invalid setting: {0}")]
    InvalidSetting(&'static str),
    #[error("label {0:?} is already used by another Brain")]
    LabelTaken(String),
    #[error("hot key {0} is already registered on this Brain")]
    AlreadyRegistered(PublicKey),
    #[error("hot key {0} is not registered on this Brain")]
    NotRegistered(PublicKey),
    #[error("hot key {hotkey} is not a {expected:?} on this Brain")]
    WrongRole { hotkey: PublicKey, expected: Role },
    #[error("all {role:?} slots are full and every node is still immune")]
    AllSlotsImmune { role: Role },
    #[error("registration costs {fee}, above the maximum of {max_fee} you signed")]
    RegistrationFeeAboveMax { fee: Amount, max_fee: Amount },
    #[error("stake of {staked} is less than {requested}")]
    InsufficientStake { staked: Amount, requested: Amount },
    #[error("weights can be set again at block {next_allowed}")]
    WeightsRateLimited { next_allowed: u64 },
    #[error("invalid weights: {0}")]
    InvalidWeights(&'static str),
    #[error("escrow holds {available}, redemption needs {needed}")]
    EscrowOverspend { needed: Amount, available: Amount },
    #[error("the spending account is empty")]
    EmptyEscrow,
    #[error("no escrow release requested")]
    NoReleaseRequested,
    #[error("escrow release possible at block {0}")]
    EscrowLocked(u64),
    #[error("receipt was already redeemed up to {redeemed}")]
    DoubleRedemption { redeemed: Amount },
    #[error("receipt is invalid: {0}")]
    InvalidReceipt(&'static str),
    #[error("Brain #{0} is not a GigaBrain")]
    NotGigaBrain(BrainId),
    #[error("proposal {0} does not exist")]
    UnknownProposal(u64),
    #[error("voting on proposal {0} has ended")]
    ProposalClosed(u64),
    #[error("already voted on proposal {0}")]
    AlreadyVoted(u64),
    #[error("{param:?} must be in {low}..={high}, got {value}")]
    ParamOutOfRange { param: ParamId, value: u64, low: u64, high: u64 },
    #[error("stored state is corrupt: {0}")]
    Corrupt(#[from] DecodeError),
}

impl TxError {
    /// True when the transaction was refused before it paid its fee: it must not be included.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            TxError::WrongChain { .. }
                | TxError::BadSignature
                | TxError::BadNonce { .. }
                | TxError::FeeTooLow { .. }
                | TxError::InsufficientFunds { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockError {
    #[error("block height {got} does not follow {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("block is for chain {got}, this chain is {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("block parent {got} is not the last block {expected}")]
    WrongParent { expected: Hash, got: Hash },
    #[error("transactions root does not match")]
    WrongTransactionsRoot,
    #[error("transaction {index} cannot be included: {error}")]
    InvalidTransaction { index: usize, error: TxError },
    #[error("state root {computed} differs from the header's {claimed}")]
    WrongStateRoot { computed: Hash, claimed: Hash },
    #[error("end of block failed: {0}")]
    EndBlock(TxError),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GenesisError {
    #[error("relayer threshold {threshold} must be in 1..={relayers}")]
    BadRelayerThreshold { threshold: u32, relayers: usize },
    #[error("genesis balances overflow")]
    Overflow,
    #[error("invalid genesis parameter: {0}")]
    Param(#[from] TxError),
}
