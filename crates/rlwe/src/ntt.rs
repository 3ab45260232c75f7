//! The only place that knows which NTT library we use, so it can be swapped for a faster one.

use tfhe_ntt::prime64::Plan;

/// Negacyclic NTT over Z_q[X]/(X^N+1). Transformed vectors are in the library's own (bit
/// reversed) order: only pointwise operations may touch them.
pub(crate) struct Ntt {
    plan: Plan,
}

impl Ntt {
    /// `None` when `modulus` is not a prime with a 2N-th root of unity.
    pub(crate) fn new(n: usize, modulus: u64) -> Option<Self> {
        Plan::try_new(n, modulus).map(|plan| Self { plan })
    }

    pub(crate) fn forward(&self, coefficients: &mut [u64]) {
        self.plan.fwd(coefficients);
    }

    /// Inverse transform without the 1/N factor: callers fold 1/N into a multiplicand once
    /// (see [`Ntt::scale_by_inverse_n`]) instead of paying a pass per result.
    pub(crate) fn inverse_unscaled(&self, values: &mut [u64]) {
        self.plan.inv(values);
    }

    pub(crate) fn scale_by_inverse_n(&self, values: &mut [u64]) {
        self.plan.normalize(values);
    }

    /// `acc += lhs * rhs` pointwise, all operands reduced.
    pub(crate) fn mul_accumulate(&self, acc: &mut [u64], lhs: &[u64], rhs: &[u64]) {
        self.plan.mul_accumulate(acc, lhs, rhs);
    }
}
