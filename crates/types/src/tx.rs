//! Transactions: what an account asks the chain to do, signed with ed25519 over a domain-tagged
//! canonical encoding that includes the chain id (no cross-network replay) and the nonce (no
//! replay on the same chain).

use crate::amount::Amount;
use crate::codec::{Decode, DecodeError, Encode};
use crate::hash::Hash;
use crate::keys::{PublicKey, SecretKey, Signature};
use crate::{codec_enum, codec_struct};

/// Brain numbers: 0..1023.
pub type BrainId = u16;
/// A node's slot index within its role on a Brain.
pub type Uid = u16;
/// Parts per billion: the fixed-point ratio of settings and parameters (1e9 = 100%).
pub type Ppb = u32;
pub const PPB: Ppb = 1_000_000_000;

const TRANSACTION_DOMAIN: &[u8] = b"BASEDAI-TX-V1";
const RECEIPT_DOMAIN: &[u8] = b"BASEDAI-RECEIPT-V1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Validator,
    Miner,
}
codec_enum!(Role { 0 => Validator {}, 1 => Miner {} });

/// A Brain owner's setting (SPEC 3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrainSetting {
    Model {
        model_id: String,
        revision: String,
        weights_hash: Hash,
    },
    /// The miners' share of the nodes' emission; validators get the rest.
    Split {
        miners_ppb: Ppb,
    },
    Name {
        name: String,
    },
    Label {
        label: String,
    },
    RewardAddress {
        address: PublicKey,
    },
    RegistrationFee {
        amount: Amount,
    },
    MemorizeFee {
        amount: Amount,
    },
    OwnerFeeShare {
        ppb: Ppb,
    },
    ComputePrices {
        prompt_per_1000: Amount,
        completion_per_1000: Amount,
        max_context: u32,
    },
}
codec_enum!(BrainSetting {
    0 => Model { model_id, revision, weights_hash },
    1 => Split { miners_ppb },
    2 => Name { name },
    3 => Label { label },
    4 => RewardAddress { address },
    5 => RegistrationFee { amount },
    6 => MemorizeFee { amount },
    7 => OwnerFeeShare { ppb },
    8 => ComputePrices { prompt_per_1000, completion_per_1000, max_context },
});

/// Chain parameters that governance may change (SPEC 3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ParamId {
    Tempo,
    BonusSharePpb,
    BonusTopPpb,
    ActivePercentilePpb,
    StakeCapPpb,
    OwnerSharePpb,
    ConsensusSteepness,
    DefaultRegistrationFee,
    DefaultCommissionPpb,
    ImmunityPeriod,
    WeightsRateLimit,
    VotingPeriod,
    MinTransactionFee,
    EscrowReleaseDelay,
}
codec_enum!(ParamId {
    0 => Tempo {},
    1 => BonusSharePpb {},
    2 => BonusTopPpb {},
    3 => ActivePercentilePpb {},
    4 => StakeCapPpb {},
    5 => OwnerSharePpb {},
    6 => ConsensusSteepness {},
    7 => DefaultRegistrationFee {},
    8 => DefaultCommissionPpb {},
    9 => ImmunityPeriod {},
    10 => WeightsRateLimit {},
    11 => VotingPeriod {},
    12 => MinTransactionFee {},
    13 => EscrowReleaseDelay {},
});

/// A user's off-chain promise to pay a miner: cumulative totals for one (user, Brain, miner)
/// channel, so only the latest receipt matters and redeeming it pays the difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReceipt {
    pub chain_id: u32,
    pub user: PublicKey,
    pub brain: BrainId,
    pub miner: PublicKey,
    pub prompt_units: u64,
    pub completion_units: u64,
    /// Cumulative BASED owed, priced by the client from the Brain's published prices.
    pub amount: Amount,
}
codec_struct!(UsageReceipt {
    chain_id,
    user,
    brain,
    miner,
    prompt_units,
    completion_units,
    amount
});

impl UsageReceipt {
    pub fn signing_message(&self) -> Vec<u8> {
        let mut message = RECEIPT_DOMAIN.to_vec();
        self.encode_to(&mut message);
        message
    }

    pub fn sign(&self, user_key: &SecretKey) -> Signature {
        user_key.sign(&self.signing_message())
    }

    pub fn verify(&self, signature: &Signature) -> bool {
        self.user.verify(&self.signing_message(), signature)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Transfer {
        to: PublicKey,
        amount: Amount,
    },
    TransferPepe {
        to: PublicKey,
        amount: Amount,
    },
    /// A relayer's attestation of an Ethereum deposit event.
    BridgeAttest {
        event_id: Hash,
        recipient: PublicKey,
        amount: Amount,
    },
    AcquireBrainByBurn {},
    AcquireBrainByStake {},
    DeactivateBrain {
        brain: BrainId,
    },
    ApproveBrain {
        brain: BrainId,
        approved: Option<PublicKey>,
    },
    TransferBrain {
        brain: BrainId,
        to: PublicKey,
    },
    ConfigureBrain {
        brain: BrainId,
        setting: BrainSetting,
    },
    /// Signed by the cold key that pays the fees and will own the node's rewards.
    Register {
        brain: BrainId,
        hotkey: PublicKey,
        role: Role,
        max_fee: Amount,
    },
    AddStake {
        brain: BrainId,
        hotkey: PublicKey,
        amount: Amount,
    },
    RemoveStake {
        brain: BrainId,
        hotkey: PublicKey,
        amount: Amount,
    },
    /// Signed by a validator's hot key: (miner uid, weight) pairs.
    SetWeights {
        brain: BrainId,
        weights: Vec<(Uid, u16)>,
    },
    /// Signed by a validator's hot key.
    SetCommission {
        brain: BrainId,
        commission_ppb: Ppb,
    },
    FundEscrow {
        amount: Amount,
    },
    RequestEscrowRelease {},
    ReleaseEscrow {},
    /// Signed by the miner's hot key named in the receipt.
    RedeemReceipt {
        receipt: UsageReceipt,
        user_signature: Signature,
    },
    /// Signed by the owner of a GigaBrain.
    Propose {
        brain: BrainId,
        param: ParamId,
        value: u64,
    },
    VoteAsBrain {
        proposal: u64,
        brain: BrainId,
        approve: bool,
    },
    VoteWithPepe {
        proposal: u64,
        veto: bool,
    },
}
codec_enum!(Call {
    0 => Transfer { to, amount },
    1 => TransferPepe { to, amount },
    2 => BridgeAttest { event_id, recipient, amount },
    3 => AcquireBrainByBurn {},
    4 => AcquireBrainByStake {},
    5 => DeactivateBrain { brain },
    6 => ApproveBrain { brain, approved },
    7 => TransferBrain { brain, to },
    8 => ConfigureBrain { brain, setting },
    9 => Register { brain, hotkey, role, max_fee },
    10 => AddStake { brain, hotkey, amount },
    11 => RemoveStake { brain, hotkey, amount },
    12 => SetWeights { brain, weights },
    13 => SetCommission { brain, commission_ppb },
    14 => FundEscrow { amount },
    15 => RequestEscrowRelease {},
    16 => ReleaseEscrow {},
    17 => RedeemReceipt { receipt, user_signature },
    18 => Propose { brain, param, value },
    19 => VoteAsBrain { proposal, brain, approve },
    20 => VoteWithPepe { proposal, veto },
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub chain_id: u32,
    pub signer: PublicKey,
    pub nonce: u64,
    /// Paid in BASED whether or not the call succeeds.
    pub fee: Amount,
    pub call: Call,
}
codec_struct!(Transaction { chain_id, signer, nonce, fee, call });

impl Transaction {
    pub fn signing_message(&self) -> Vec<u8> {
        let mut message = TRANSACTION_DOMAIN.to_vec();
        self.encode_to(&mut message);
        message
    }

    /// Signs with `key`; the caller sets `signer` to the key's public key.
    pub fn sign(self, key: &SecretKey) -> SignedTransaction {
        let signature = key.sign(&self.signing_message());
        SignedTransaction { transaction: self, signature }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    pub transaction: Transaction,
    pub signature: Signature,
}
codec_struct!(SignedTransaction { transaction, signature });

impl SignedTransaction {
    pub fn verify_signature(&self) -> bool {
        let message = self.transaction.signing_message();
        self.transaction.signer.verify(&message, &self.signature)
    }

    pub fn hash(&self) -> Hash {
        Hash::of(&self.to_bytes())
    }

    /// Batch-verifies the signatures of many transactions (see [`crate::keys::verify_batch`]).
    pub fn verify_signatures(transactions: &[SignedTransaction]) -> bool {
        let messages: Vec<Vec<u8>> =
            transactions.iter().map(|t| t.transaction.signing_message()).collect();
        let items: Vec<_> = transactions
            .iter()
            .zip(&messages)
            .map(|(t, message)| (&t.transaction.signer, message.as_slice(), &t.signature))
            .collect();
        crate::keys::verify_batch(&items)
    }

    /// Decodes a transaction received from the network.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample(nonce: u64) -> SignedTransaction {
        let key = SecretKey::from_seed([1; 32]);
        let call = Call::ConfigureBrain {
            brain: 9,
            setting: BrainSetting::Model {
                model_id: "smollm2".into(),
                revision: "main".into(),
                weights_hash: Hash::of(b"w"),
            },
        };
        Transaction { chain_id: 1, signer: key.public_key(), nonce, fee: 10, call }.sign(&key)
    }

    #[test]
    fn signed_transaction_round_trips_and_verifies() {
        let signed = sample(3);
        let decoded = SignedTransaction::decode(&signed.to_bytes()).unwrap();
        assert_eq!(decoded, signed);
        assert!(decoded.verify_signature());
        let mut tampered = decoded;
        tampered.transaction.nonce = 4;
        assert!(!tampered.verify_signature());
    }

    #[test]
    fn unknown_call_tag_is_a_typed_error() {
        let mut bytes = sample(0).to_bytes();
        bytes[4 + 32 + 8 + 8] = 200;
        assert_eq!(
            SignedTransaction::decode(&bytes),
            Err(DecodeError::InvalidTag { type_name: "Call", tag: 200 })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SignedTransaction::decode(&bytes);
        }

        #[test]
        fn decoding_mutated_transactions_never_panics(index in 0usize..200, byte in any::<u8>(), cut in 0usize..250) {
            let mut bytes = sample(1).to_bytes();
            let len = bytes.len();
            bytes[index % len] = byte;
            bytes.truncate(cut.max(1));
            let _ = SignedTransaction::decode(&bytes);
        }
    }
}
