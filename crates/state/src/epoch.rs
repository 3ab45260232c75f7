//! The per-Brain epoch (whitepaper 3.4, after Bittensor's Yuma consensus), in Q32 fixed point.
//! Pure: the state loads the Brain's nodes, calls [`run_epoch`], and stores the result.

use based_types::{Amount, PPB, Ppb, Uid};

use crate::fixed::{ONE, mul, normalize, ratio, sigmoid};

/// A validator as the epoch sees it. Weights are already filtered by the state (self-weights
/// and weights older than the miner's registration are dropped).
#[derive(Debug, Clone, Default)]
pub struct ValidatorInput {
    pub stake: Amount,
    pub weights: Vec<(Uid, u16)>,
    pub previous_credits: Vec<(Uid, u64)>,
}

#[derive(Debug, Clone, Copy)]
pub struct EpochConfig {
    pub active_percentile_ppb: Ppb,
    /// rho of the consensus sigmoid.
    pub steepness: u64,
    /// beta(t) in Q32.
    pub tft_beta: u64,
}

/// All Q32. Miner vectors are indexed by miner uid, validator vectors by input position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochResult {
    pub active: Vec<bool>,
    pub consensus_weight: Vec<u64>,
    pub trust: Vec<u64>,
    pub consensus: Vec<u64>,
    pub rank: Vec<u64>,
    pub incentive: Vec<u64>,
    pub dividends: Vec<u64>,
    pub credits: Vec<Vec<(Uid, u64)>>,
    /// sum_j R_j C_j / sum_j R_j.
    pub performance: u64,
}

/// Nearest-rank percentile: with stakes sorted ascending the threshold is the value at rank
/// ceil(p n); validators at or above it are active (so at least one always is).
pub fn active_validators(stakes: &[Amount], percentile_ppb: Ppb) -> Vec<bool> {
    if stakes.is_empty() {
        return Vec::new();
    }
    let mut sorted = stakes.to_vec();
    sorted.sort_unstable();
    let count = sorted.len() as u64;
    let rank = (count * u64::from(percentile_ppb)).div_ceil(u64::from(PPB)).clamp(1, count);
    let threshold = sorted[(rank - 1) as usize];
    stakes.iter().map(|&stake| stake >= threshold).collect()
}

/// Runs the epoch. `tft_accuracy` is indexed by miner uid (empty: all zero).
pub fn run_epoch(
    validators: &[ValidatorInput],
    miner_columns: usize,
    tft_accuracy: &[u64],
    config: EpochConfig,
) -> EpochResult {
    let rows = validators.len();
    let stakes: Vec<Amount> = validators.iter().map(|v| v.stake).collect();
    let active = active_validators(&stakes, config.active_percentile_ppb);
    let active_stake: u128 =
        stakes.iter().zip(&active).filter(|(_, a)| **a).map(|(&s, _)| u128::from(s)).sum();
    let stake_share: Vec<u64> = stakes
        .iter()
        .zip(&active)
        .map(|(&s, &a)| if a { ratio(u128::from(s), active_stake) } else { 0 })
        .collect();
    let total_share: u64 = stake_share.iter().sum();

    // Row-normalized weights of active validators, dense rows x miner columns.
    let mut clipped = vec![0u64; rows * miner_columns];
    for (row, validator) in validators.iter().enumerate() {
        if stake_share[row] == 0 {
            continue;
        }
        let in_range =
            || validator.weights.iter().filter(|(uid, _)| usize::from(*uid) < miner_columns);
        let row_sum: u128 = in_range().map(|&(_, w)| u128::from(w)).sum();
        for &(uid, weight) in in_range() {
            clipped[row * miner_columns + usize::from(uid)] = ratio(u128::from(weight), row_sum);
        }
    }

    let mut consensus_weight = vec![0u64; miner_columns];
    let mut column: Vec<(u64, u64)> = Vec::with_capacity(rows);
    for (j, kappa) in consensus_weight.iter_mut().enumerate() {
        column.clear();
        column.extend(
            (0..rows)
                .map(|i| (clipped[i * miner_columns + j], stake_share[i]))
                .filter(|&(w, s)| w > 0 && s > 0),
        );
        column.sort_unstable_by_key(|&(weight, _)| std::cmp::Reverse(weight));
        let mut supporting = 0u64;
        for &(weight, share) in &column {
            supporting += share;
            if 2 * u128::from(supporting) >= u128::from(total_share) {
                *kappa = weight;
                break;
            }
        }
    }

    let mut trust = vec![0u64; miner_columns];
    let mut rank = vec![0u64; miner_columns];
    let mut column_credit_sum = vec![0u64; miner_columns];
    for i in 0..rows {
        let share = stake_share[i];
        if share == 0 {
            continue;
        }
        let row = &mut clipped[i * miner_columns..(i + 1) * miner_columns];
        for (j, weight) in row.iter_mut().enumerate() {
            *weight = (*weight).min(consensus_weight[j]);
            if *weight > 0 {
                trust[j] += share;
                let backed = mul(*weight, share);
                rank[j] += backed;
                column_credit_sum[j] += backed;
            }
        }
    }

    let steepness = i64::try_from(config.steepness).unwrap_or(i64::MAX);
    let consensus: Vec<u64> = trust
        .iter()
        .map(|&t| {
            let centred = i64::try_from(t).unwrap_or(i64::MAX) - (ONE / 2) as i64;
            sigmoid(centred.saturating_mul(steepness))
        })
        .collect();
    let ranked_consensus: Vec<u64> =
        rank.iter().zip(&consensus).map(|(&r, &c)| mul(r, c)).collect();
    let raw_incentive: Vec<u64> = ranked_consensus
        .iter()
        .enumerate()
        .map(|(j, &rc)| rc + mul(config.tft_beta, tft_accuracy.get(j).copied().unwrap_or(0)))
        .collect();
    let incentive = normalize(&raw_incentive);

    let mut credits = Vec::with_capacity(rows);
    let mut raw_dividends = Vec::with_capacity(rows);
    let mut previous = vec![0u64; miner_columns];
    for (i, validator) in validators.iter().enumerate() {
        if !active[i] {
            // Credits do not outlive the validator's active status.
            credits.push(Vec::new());
            raw_dividends.push(0);
            continue;
        }
        previous.fill(0);
        for &(uid, credit) in &validator.previous_credits {
            if let Some(slot) = previous.get_mut(usize::from(uid)) {
                *slot = credit;
            }
        }
        let share = stake_share[i];
        let row = &clipped[i * miner_columns..(i + 1) * miner_columns];
        let mut updated = Vec::new();
        let mut dividend = 0u64;
        for j in 0..miner_columns {
            let delta = ratio(u128::from(mul(row[j], share)), u128::from(column_credit_sum[j]));
            let credit = (delta + 9 * previous[j]) / 10;
            if credit > 0 {
                updated.push((j as Uid, credit));
                dividend += mul(credit, incentive[j]);
            }
        }
        credits.push(updated);
        raw_dividends.push(dividend);
    }

    let total_rank: u128 = rank.iter().map(|&r| u128::from(r)).sum();
    let total_ranked_consensus: u128 = ranked_consensus.iter().map(|&r| u128::from(r)).sum();
    EpochResult {
        active,
        consensus_weight,
        trust,
        consensus,
        rank,
        incentive,
        dividends: normalize(&raw_dividends),
        credits,
        performance: ratio(total_ranked_consensus, total_rank),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EpochConfig {
        EpochConfig { active_percentile_ppb: 700_000_000, steepness: 10, tft_beta: 0 }
    }

    #[test]
    fn seventieth_percentile_nearest_rank() {
        let stakes: Vec<u64> = (1..=10).collect();
        let active = active_validators(&stakes, 700_000_000);
        assert_eq!(active, [false, false, false, false, false, false, true, true, true, true]);
        assert_eq!(active_validators(&[5], 700_000_000), [true]);
        // Ties at the threshold are active.
        assert_eq!(active_validators(&[1, 3, 3, 3], 700_000_000), [false, true, true, true]);
    }

    #[test]
    fn inactive_validators_lose_their_credits_and_dividends() {
        let weights = vec![(0, 1), (1, 1)];
        let validators: Vec<ValidatorInput> = (1..=10)
            .map(|stake| ValidatorInput {
                stake,
                weights: weights.clone(),
                previous_credits: vec![(0, ONE / 2), (1, ONE / 2)],
            })
            .collect();
        let result = run_epoch(&validators, 2, &[], config());
        for i in 0..6 {
            assert!(!result.active[i] && result.credits[i].is_empty() && result.dividends[i] == 0);
        }
        for i in 6..10 {
            assert!(result.active[i] && !result.credits[i].is_empty() && result.dividends[i] > 0);
        }
    }

    #[test]
    fn clique_above_consensus_is_clipped() {
        // Three honest validators (60% stake) weight miners 0 and 1 equally; a clique (40%)
        // puts everything on its own miner 2.
        let honest = |stake| ValidatorInput {
            stake,
            weights: vec![(0, 1), (1, 1)],
            previous_credits: vec![],
        };
        let clique = ValidatorInput { stake: 40, weights: vec![(2, 1)], previous_credits: vec![] };
        let validators = [honest(20), honest(20), honest(20), clique];
        let config = EpochConfig { active_percentile_ppb: 1, ..config() };
        let result = run_epoch(&validators, 3, &[], config);
        assert_eq!(result.consensus_weight[2], 0);
        assert_eq!(result.incentive[2], 0);
        assert!(result.incentive[0] > 0 && result.incentive[0] == result.incentive[1]);
        assert_eq!(result.dividends[3], 0);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A clique holding less than half of the stake that puts weight on its own miner,
        /// which the honest majority does not weight, earns that miner nothing; and no miner's
        /// rank exceeds its consensus weight (clipping).
        #[test]
        fn clique_gains_nothing_beyond_clipping(
            honest in proptest::collection::vec((1u64..1_000, proptest::collection::vec(0u16..100, 4)), 2..6),
            clique in proptest::collection::vec((1u64..1_000, proptest::collection::vec(0u16..100, 5)), 1..4),
        ) {
            let honest_stake: u64 = honest.iter().map(|(s, _)| s).sum();
            let clique_stake: u64 = clique.iter().map(|(s, _)| s).sum();
            prop_assume!(clique_stake * 2 < honest_stake);
            let own_miner = 4;
            let mut validators: Vec<ValidatorInput> = honest
                .iter()
                .map(|(stake, weights)| ValidatorInput {
                    stake: *stake,
                    weights: (0..4).map(|j| (j as Uid, weights[j])).collect(),
                    previous_credits: vec![],
                })
                .collect();
            validators.extend(clique.iter().map(|(stake, weights)| ValidatorInput {
                stake: *stake,
                weights: (0..5).map(|j| (j as Uid, if j == own_miner { 1_000 } else { weights[j] })).collect(),
                previous_credits: vec![],
            }));
            let config = EpochConfig { active_percentile_ppb: 1, steepness: 10, tft_beta: 0 };
            let result = run_epoch(&validators, 5, &[], config);
            prop_assert_eq!(result.consensus_weight[own_miner], 0);
            prop_assert_eq!(result.incentive[own_miner], 0);
            for j in 0..5 {
                prop_assert!(result.rank[j] <= result.consensus_weight[j]);
            }
        }
    }
}
