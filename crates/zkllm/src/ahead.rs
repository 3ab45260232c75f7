//! The miner's work ahead for one session: the masks' share of every stage's next uploads,
//! computed while the miner would otherwise wait (network round trips, the client's own steps,
//! a user reading the reply before asking again).
//!
//! The masks are known in advance (`crate::masks`), and everything a product computes from them
//! alone (every key switch, the a halves, the whole result a) can be done before the vector
//! exists (`RhombusMatrix::precompute`). A request whose uploads were precomputed is answered
//! with the online share only, about a sixth of the work. A request that arrives before its
//! share is ready is computed in full: the answers are the same, bit for bit, either way.
//!
//! The work runs on threads of its own at the lowest CPU priority, so requests, which run on
//! the main pool, take the cores whenever they need them. Each of those threads computes one
//! whole share at a time (one per core, each share on one thread) rather than all of them
//! splitting one share: the shares of different uploads are independent, and two products side
//! by side on one thread each did 1.77-1.83x the work of one thread, where one product split
//! over both did 1.57-1.86x (SmolLM2 layer 15, session 7).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use based_model::Stage;
use based_rlwe::{RhombusKeys, RhombusPrecomputed};

use crate::error::ZkError;
use crate::masks::upload_mask_seeds;
use crate::miner::MinerModel;
use crate::{STAGES, stage_index};

/// The precomputed shares of one session and what the client has used so far.
pub(crate) struct Ahead {
    shared: Arc<Shared>,
}

/// How much the shares may hold: per session, and over all sessions of a miner together.
#[derive(Clone)]
pub(crate) struct Budget {
    pub(crate) session_bytes: usize,
    pub(crate) total_bytes: usize,
    /// What every session of the miner holds now.
    pub(crate) used: Arc<AtomicUsize>,
}

struct Shared {
    state: Mutex<State<RhombusPrecomputed>>,
    changed: Condvar,
}

/// What the bookkeeping needs of a share (generic so that its tests need no cryptography).
trait Share {
    fn memory_bytes(&self) -> usize;
}

impl Share for RhombusPrecomputed {
    fn memory_bytes(&self) -> usize {
        RhombusPrecomputed::memory_bytes(self)
    }
}

struct State<T> {
    /// Per stage (layer-major, `STAGES` order): the next mask index the client may use.
    next: Vec<u64>,
    /// Per stage: the shares of mask indices next, next + 1, ... (contiguous); None while a
    /// worker computes that share.
    ready: Vec<VecDeque<Option<T>>>,
    /// What this session's shares hold (also counted in `budget.used`).
    bytes: usize,
    budget: Budget,
    context_tokens: u64,
    closed: bool,
}

impl<T: Share> State<T> {
    fn new(stages: usize, budget: Budget, context_tokens: u64) -> Self {
        State {
            next: vec![0; stages],
            ready: (0..stages).map(|_| VecDeque::new()).collect(),
            bytes: 0,
            budget,
            context_tokens,
            closed: false,
        }
    }

    /// Claims the next share to compute: the stage with the fewest shares ready or under way
    /// (the earliest in a forward pass among equals), and the mask index for it; None once the
    /// budget is spent (the shares under way may pass it by one per worker), or once the
    /// shares reach the model's context length (a conversation uses one upload per stage and
    /// token).
    fn claim_job(&mut self) -> Option<(usize, u64)> {
        let budget = &self.budget;
        if self.bytes >= budget.session_bytes
            || budget.used.load(Ordering::Relaxed) >= budget.total_bytes
        {
            return None;
        }
        let stage = (0..self.ready.len()).min_by_key(|&s| self.ready[s].len())?;
        let index = self.next[stage] + self.ready[stage].len() as u64;
        if index >= self.context_tokens {
            return None;
        }
        self.ready[stage].push_back(None);
        Some((stage, index))
    }

    /// Puts a finished share in the place its worker claimed, unless the session closed or
    /// the client has moved past it meanwhile (then it is dropped).
    fn complete(&mut self, stage: usize, index: u64, share: T) {
        let Some(position) = index.checked_sub(self.next[stage]) else { return };
        let slot = usize::try_from(position).ok().and_then(|p| self.ready[stage].get_mut(p));
        if let Some(slot @ None) = slot
            && !self.closed
        {
            let bytes = share.memory_bytes();
            *slot = Some(share);
            self.bytes += bytes;
            self.budget.used.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The shares of stage `s`, mask indices `first..first + count` (None where a share is
    /// not ready), marked used; Err(next) for an index below one already used.
    fn take(&mut self, s: usize, first: u64, count: usize) -> Result<Vec<Option<T>>, u64> {
        let next = self.next[s];
        if first < next {
            return Err(next);
        }
        let skipped = usize::try_from(first - next).unwrap_or(usize::MAX);
        let bytes = |share: &Option<T>| share.as_ref().map_or(0, Share::memory_bytes);
        let ready = &mut self.ready[s];
        let mut freed: usize = ready.drain(..skipped.min(ready.len())).map(|s| bytes(&s)).sum();
        // A share still under way is computed again by the request: its worker's result is
        // dropped when it arrives.
        let shares: Vec<Option<T>> = (0..count)
            .map(|_| {
                let share = ready.pop_front().flatten();
                freed += bytes(&share);
                share
            })
            .collect();
        // The miner checked first + count against MAX_UPLOAD_INDEX.
        self.next[s] = first + count as u64;
        self.release(freed);
        Ok(shares)
    }

    fn tokens_ahead(&self) -> u32 {
        let ready_in_a_row =
            |ready: &VecDeque<Option<T>>| ready.iter().take_while(|share| share.is_some()).count();
        let least = self.ready.iter().map(ready_in_a_row).min().unwrap_or(0);
        u32::try_from(least).unwrap_or(u32::MAX)
    }

    fn release(&mut self, bytes: usize) {
        self.bytes -= bytes;
        self.budget.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Ahead {
    /// Starts the session's background work (none when the session's budget is 0), with its
    /// keys and mask seed; the work stops, and its memory is freed, when the returned value is
    /// dropped.
    pub(crate) fn start(
        model: Arc<MinerModel>,
        keys: Arc<RhombusKeys>,
        mask_seed: [u8; 32],
        budget: Budget,
    ) -> Ahead {
        let works = budget.session_bytes > 0 && budget.total_bytes > 0;
        let stages = model.n_layers() * STAGES.len();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(stages, budget, model.context_tokens() as u64)),
            changed: Condvar::new(),
        });
        if works {
            for pool in background_pools() {
                let (shared, model, keys) =
                    (Arc::clone(&shared), Arc::clone(&model), Arc::clone(&keys));
                std::thread::spawn(move || work_ahead(&shared, pool, &model, &keys, &mask_seed));
            }
        }
        Ahead { shared }
    }

    /// Takes the precomputed shares for a request's uploads of (`layer`, `stage`), mask
    /// indices `first..first + count` (None where a share is not ready), and records that the
    /// client has used them. An index below one already used is refused: it would mean a mask
    /// used twice.
    pub(crate) fn take(
        &self,
        layer: u32,
        stage: Stage,
        first: u64,
        count: usize,
    ) -> Result<Vec<Option<RhombusPrecomputed>>, ZkError> {
        let s = layer as usize * STAGES.len() + stage_index(stage);
        let shares = self.lock().take(s, first, count).map_err(|next| ZkError::MaskReused {
            layer,
            stage,
            index: first,
            next,
        })?;
        self.shared.changed.notify_all();
        Ok(shares)
    }

    /// How many uploads ahead every stage is precomputed: the tokens the client can now
    /// generate at the online share's cost.
    pub(crate) fn tokens_ahead(&self) -> u32 {
        self.lock().tokens_ahead()
    }

    fn lock(&self) -> MutexGuard<'_, State<RhombusPrecomputed>> {
        lock(&self.shared)
    }
}

impl Drop for Ahead {
    /// Frees the shares now: each worker may still be inside one last precompute on its
    /// low-priority thread, and what it makes then is dropped.
    fn drop(&mut self) {
        let mut state = self.lock();
        state.closed = true;
        state.ready.iter_mut().for_each(VecDeque::clear);
        let held = state.bytes;
        state.release(held);
        drop(state);
        self.shared.changed.notify_all();
    }
}

/// A poisoned lock only means another thread panicked while holding it; the state is a cache,
/// every entry of which is checked on use, so it stays usable.
fn lock(shared: &Shared) -> MutexGuard<'_, State<RhombusPrecomputed>> {
    shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn work_ahead(
    shared: &Shared,
    pool: &rayon::ThreadPool,
    model: &MinerModel,
    keys: &RhombusKeys,
    mask_seed: &[u8; 32],
) {
    loop {
        let (s, index) = {
            let mut state = lock(shared);
            loop {
                if state.closed {
                    return;
                }
                if let Some(job) = state.claim_job() {
                    break job;
                }
                // Woken by the session's own requests; the timeout notices memory that other
                // sessions freed.
                state = shared
                    .changed
                    .wait_timeout(state, Duration::from_secs(1))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        let (layer, stage) = ((s / STAGES.len()) as u32, STAGES[s % STAGES.len()]);
        let matrix = model.stage_matrix(s);
        let seeds = upload_mask_seeds(mask_seed, layer, stage, index, matrix.plan().upload_cts());
        let share = match pool.install(|| matrix.precompute(&seeds, keys)) {
            Ok(share) => share,
            Err(error) => {
                // The same keys fail every request of the session too, with this error.
                tracing::warn!(layer, ?stage, %error, "precomputing the masks' share stopped");
                return;
            }
        };
        lock(shared).complete(s, index, share);
    }
}

/// The single-thread pools that work ahead, one per thread of the main pool, shared by every
/// session (each session has one worker per pool), each thread at the lowest CPU priority
/// the OS offers.
fn background_pools() -> &'static [rayon::ThreadPool] {
    static POOLS: OnceLock<Vec<rayon::ThreadPool>> = OnceLock::new();
    POOLS.get_or_init(|| {
        (0..rayon::current_num_threads())
            .map(|i| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("masks-ahead-{i}"))
                    .start_handler(|_| lower_this_threads_priority())
                    .build()
                    .expect("a thread pool of one thread can be built")
            })
            .collect()
    })
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // One system call with no pointer it keeps; std has no wrapper for it.
fn lower_this_threads_priority() {
    // SCHED_IDLE: the thread runs only when no normal thread wants the core. On Linux the
    // policy is per thread, and pid 0 is the calling thread.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on the calling thread with a valid parameter struct.
    let status = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if status != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the priority of the precomputing threads; they compete with requests"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A share of a given size (the bookkeeping only reads its size).
    #[derive(Debug, PartialEq)]
    struct ShareOfSize(usize);

    impl Share for ShareOfSize {
        fn memory_bytes(&self) -> usize {
            self.0
        }
    }

    fn state(stages: usize, session_bytes: usize, total_bytes: usize) -> State<ShareOfSize> {
        let used = Arc::new(AtomicUsize::new(0));
        State::new(stages, Budget { session_bytes, total_bytes, used }, 100)
    }

    #[test]
    fn claims_go_to_the_stage_with_the_fewest_shares_and_may_finish_out_of_order() {
        let mut state = state(2, 1000, 1000);
        assert_eq!(state.claim_job(), Some((0, 0)));
        assert_eq!(state.claim_job(), Some((1, 0)));
        assert_eq!(state.claim_job(), Some((0, 1)));
        // The second worker finishes first: its share waits behind the one still under way.
        state.complete(0, 1, ShareOfSize(10));
        assert_eq!(state.tokens_ahead(), 0);
        state.complete(0, 0, ShareOfSize(10));
        state.complete(1, 0, ShareOfSize(10));
        assert_eq!(state.tokens_ahead(), 1);
        assert_eq!(state.bytes, 30);
        assert_eq!(
            state.take(0, 0, 2).unwrap(),
            vec![Some(ShareOfSize(10)), Some(ShareOfSize(10))]
        );
        assert_eq!((state.bytes, state.budget.used.load(Ordering::Relaxed)), (10, 10));
    }

    #[test]
    fn a_share_taken_while_under_way_is_computed_by_the_request_and_dropped_on_arrival() {
        let mut state = state(1, 1000, 1000);
        assert_eq!(state.claim_job(), Some((0, 0)));
        assert_eq!(state.take(0, 0, 1).unwrap(), vec![None]);
        state.complete(0, 0, ShareOfSize(10));
        assert_eq!(state.bytes, 0, "a share the client moved past is not kept");
        // Skipped indices free what they held; a used index is refused.
        assert_eq!(state.claim_job(), Some((0, 1)));
        state.complete(0, 1, ShareOfSize(10));
        assert_eq!(state.take(0, 2, 1).unwrap(), vec![None]);
        assert_eq!(state.bytes, 0);
        assert_eq!(state.take(0, 1, 1), Err(3));
    }

    #[test]
    fn claims_stop_at_the_budget_and_the_context_length() {
        let mut state = state(1, 20, 1000);
        assert!(state.claim_job().is_some());
        state.complete(0, 0, ShareOfSize(20));
        assert_eq!(state.claim_job(), None, "the session's budget is spent");
        let mut short = State::<ShareOfSize>::new(
            1,
            Budget { session_bytes: 1000, total_bytes: 1000, used: Arc::new(AtomicUsize::new(0)) },
            2,
        );
        assert_eq!(short.claim_job(), Some((0, 0)));
        assert_eq!(short.claim_job(), Some((0, 1)));
        assert_eq!(short.claim_job(), None, "no upload beyond the context length");
        short.closed = true;
        short.complete(0, 0, ShareOfSize(5));
        assert_eq!(short.bytes, 0, "a closed session keeps nothing");
    }
}
