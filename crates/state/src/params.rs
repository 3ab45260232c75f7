//! Chain constants (fixed by the whitepaper) and parameters (changeable by governance).

use based_types::{Amount, PPB, ParamId, Ppb, codec_struct, coins};

use crate::error::TxError;

/// Blocks in one year at 10 s per block: the halving period and the beta(t) year.
pub const BLOCKS_PER_YEAR: u64 = 3_153_600;
/// The block reward of year one: 10 BASED.
pub const INITIAL_BLOCK_REWARD: Amount = coins(10);
pub const BRAIN_COUNT: u16 = 1024;
/// Brains held by the foundation key from genesis.
pub const RESERVED_BRAINS: [u16; 8] = [0, 1, 2, 3, 4, 5, 6, 47];
pub const BURN_BASE_PRICE: Amount = coins(1_000);
pub const BURN_PRICE_STEP: Amount = coins(200);
pub const STAKE_LOCK: Amount = coins(100_000);
/// 90 days of 10 s blocks before a staked Brain's owner earns rewards or may deactivate.
pub const STAKE_MATURITY_BLOCKS: u64 = 777_600;
pub const VALIDATOR_SLOTS: u16 = 256;
pub const MINER_SLOTS: u16 = 1792;
pub const MAX_NAME_BYTES: usize = 64;
pub const MAX_WEIGHTS: usize = MINER_SLOTS as usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub tempo: u64,
    /// Share of each block reward paid as the bonus to the top Brains.
    pub bonus_share_ppb: Ppb,
    /// Share of Brains (by performance) eligible for the bonus.
    pub bonus_top_ppb: Ppb,
    pub active_percentile_ppb: Ppb,
    /// A Brain's eligible stake is capped at this share of all stake; GigaBrains reach it.
    pub stake_cap_ppb: Ppb,
    pub owner_share_ppb: Ppb,
    /// rho of the consensus sigmoid.
    pub consensus_steepness: u64,
    pub default_registration_fee: Amount,
    pub default_commission_ppb: Ppb,
    pub immunity_period: u64,
    pub weights_rate_limit: u64,
    pub voting_period: u64,
    pub min_transaction_fee: Amount,
    pub escrow_release_delay: u64,
}
codec_struct!(Params {
    tempo,
    bonus_share_ppb,
    bonus_top_ppb,
    active_percentile_ppb,
    stake_cap_ppb,
    owner_share_ppb,
    consensus_steepness,
    default_registration_fee,
    default_commission_ppb,
    immunity_period,
    weights_rate_limit,
    voting_period,
    min_transaction_fee,
    escrow_release_delay,
});

impl Default for Params {
    fn default() -> Self {
        Params {
            tempo: 360,
            bonus_share_ppb: PPB / 10,
            bonus_top_ppb: 300_000_000,
            active_percentile_ppb: 700_000_000,
            stake_cap_ppb: 5_000_000,
            owner_share_ppb: PPB / 4,
            consensus_steepness: 10,
            default_registration_fee: coins(100),
            default_commission_ppb: PPB / 10,
            immunity_period: 4_096,
            weights_rate_limit: 100,
            voting_period: 60_480,
            min_transaction_fee: 1_000,
            escrow_release_delay: 360,
        }
    }
}

impl Params {
    /// Sets a parameter after checking its range.
    pub fn set(&mut self, param: ParamId, value: u64) -> Result<(), TxError> {
        let (low, high) = param_range(param);
        if value < low || value > high {
            return Err(TxError::ParamOutOfRange { param, value, low, high });
        }
        let as_ppb = || Ppb::try_from(value).unwrap_or(PPB);
        match param {
            ParamId::Tempo => self.tempo = value,
            ParamId::BonusSharePpb => self.bonus_share_ppb = as_ppb(),
            ParamId::BonusTopPpb => self.bonus_top_ppb = as_ppb(),
            ParamId::ActivePercentilePpb => self.active_percentile_ppb = as_ppb(),
            ParamId::StakeCapPpb => self.stake_cap_ppb = as_ppb(),
            ParamId::OwnerSharePpb => self.owner_share_ppb = as_ppb(),
            ParamId::ConsensusSteepness => self.consensus_steepness = value,
            ParamId::DefaultRegistrationFee => self.default_registration_fee = value,
            ParamId::DefaultCommissionPpb => self.default_commission_ppb = as_ppb(),
            ParamId::ImmunityPeriod => self.immunity_period = value,
            ParamId::WeightsRateLimit => self.weights_rate_limit = value,
            ParamId::VotingPeriod => self.voting_period = value,
            ParamId::MinTransactionFee => self.min_transaction_fee = value,
            ParamId::EscrowReleaseDelay => self.escrow_release_delay = value,
        }
        Ok(())
    }
}

/// Inclusive bounds of each parameter.
pub fn param_range(param: ParamId) -> (u64, u64) {
    let ppb = u64::from(PPB);
    match param {
        ParamId::Tempo => (1, 100_000),
        ParamId::ActivePercentilePpb | ParamId::StakeCapPpb => (1, ppb),
        ParamId::BonusSharePpb
        | ParamId::BonusTopPpb
        | ParamId::OwnerSharePpb
        | ParamId::DefaultCommissionPpb => (0, ppb),
        ParamId::ConsensusSteepness => (1, 100),
        ParamId::DefaultRegistrationFee | ParamId::MinTransactionFee => (0, coins(1_000_000)),
        ParamId::ImmunityPeriod | ParamId::WeightsRateLimit | ParamId::EscrowReleaseDelay => {
            (0, 1_000_000)
        }
        ParamId::VotingPeriod => (1, 1_000_000),
    }
}

/// Block reward at `height` (the first block is 1): 10 BASED halved every year.
pub fn block_reward(height: u64) -> Amount {
    let year = height.saturating_sub(1) / BLOCKS_PER_YEAR;
    if year >= 64 { 0 } else { INITIAL_BLOCK_REWARD >> year }
}

/// beta(t) in Q32: 0 before year 2, rising linearly to 0.9 at year 4, 1 after.
pub fn tft_beta(height: u64) -> u64 {
    use crate::fixed::ONE;
    let two_years = 2 * BLOCKS_PER_YEAR;
    let four_years = 4 * BLOCKS_PER_YEAR;
    if height < two_years {
        0
    } else if height < four_years {
        let progress = crate::fixed::ratio(u128::from(height - two_years), u128::from(two_years));
        crate::fixed::mul(progress, ONE / 10 * 9)
    } else if height == four_years {
        ONE / 10 * 9
    } else {
        ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whitepaper Table 2: yearly emission in BASED for years 1..10.
    #[test]
    fn table_2_yearly_emissions() {
        let table = [
            "31536000", "15768000", "7884000", "3942000", "1971000", "985500", "492750", "246375",
            "123187.5", "61593.75",
        ];
        for (year, expected) in (0u64..).zip(table) {
            let first = year * BLOCKS_PER_YEAR + 1;
            assert_eq!(block_reward(first), block_reward(first + BLOCKS_PER_YEAR - 1));
            let yearly = block_reward(first) * BLOCKS_PER_YEAR;
            assert_eq!(based_types::format_amount(yearly), expected, "year {}", year + 1);
        }
        assert_eq!(block_reward(10 * BLOCKS_PER_YEAR), 19_531_250);
    }

    #[test]
    fn beta_follows_the_formula() {
        assert_eq!(tft_beta(2 * BLOCKS_PER_YEAR - 1), 0);
        assert_eq!(tft_beta(3 * BLOCKS_PER_YEAR), crate::fixed::ONE / 10 * 9 / 2);
        assert_eq!(tft_beta(5 * BLOCKS_PER_YEAR), crate::fixed::ONE);
    }
}
