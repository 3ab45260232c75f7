//! Cross-user batching on the miner: requests of every session for the same linear stage are
//! multiplied in one pass over that stage's encoded weights (SPEC 2.2.2: whatever the users'
//! keys, their ciphertexts meet the same public weights, so B chats are one GEMM).
//!
//! No request waits for company: the worker takes whatever is queued whenever it is free, so a
//! lone user pays only a hand-off between threads, and under load the batches grow by
//! themselves while the worker is busy with the previous one.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

use based_model::Stage;
use based_rlwe::{ResultCiphertext, UploadCiphertext};

use crate::error::ZkError;
use crate::miner::MinerModel;
use crate::stage_index;

type Products = Vec<Vec<ResultCiphertext>>;

struct Job {
    layer: u32,
    stage: Stage,
    inputs: Vec<Vec<UploadCiphertext>>,
    reply: Sender<Result<Products, ZkError>>,
}

#[derive(Default)]
struct Queue {
    jobs: Mutex<Vec<Job>>,
    ready: Condvar,
}

/// The sessions' handle on the batching worker; the worker stops when the last handle is gone.
pub struct Batcher {
    queue: Arc<Queue>,
    _stop_on_drop: Sender<()>,
}

impl Batcher {
    pub fn start(model: Arc<MinerModel>) -> Batcher {
        let queue = Arc::new(Queue::default());
        let (stop_on_drop, stopped) = mpsc::channel();
        let worker_queue = Arc::clone(&queue);
        std::thread::spawn(move || run_worker(&model, &worker_queue, &stopped));
        Batcher { queue, _stop_on_drop: stop_on_drop }
    }

    /// Multiplies `inputs` (already checked against the stage's layout) by the stage's weights,
    /// together with whatever other sessions asked for the same stage meanwhile.
    pub fn multiply(
        &self,
        layer: u32,
        stage: Stage,
        inputs: Vec<Vec<UploadCiphertext>>,
    ) -> Result<Products, ZkError> {
        let (reply, answer) = mpsc::channel();
        self.queue.jobs.lock().expect("batch queue lock").push(Job { layer, stage, inputs, reply });
        self.queue.ready.notify_one();
        answer.recv().map_err(|_| ZkError::Remote("the miner's batching worker stopped".into()))?
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Wake the worker so it notices that the stop channel has closed.
        self.queue.ready.notify_all();
    }
}

fn run_worker(model: &MinerModel, queue: &Queue, stopped: &Receiver<()>) {
    loop {
        let jobs = {
            let mut jobs = queue.jobs.lock().expect("batch queue lock");
            while jobs.is_empty() {
                if matches!(stopped.try_recv(), Err(mpsc::TryRecvError::Disconnected)) {
                    return;
                }
                jobs = queue.ready.wait(jobs).expect("batch queue lock");
            }
            std::mem::take(&mut *jobs)
        };
        let mut by_stage: BTreeMap<(u32, usize), Vec<Job>> = BTreeMap::new();
        for job in jobs {
            by_stage.entry((job.layer, stage_index(job.stage))).or_default().push(job);
        }
        for group in by_stage.into_values() {
            run_group(model, group);
        }
    }
}

/// One pass over a stage's weights for every job of the group. Should the batch fail, each job
/// is retried alone, so that one session's bad input cannot fail another's request.
fn run_group(model: &MinerModel, mut group: Vec<Job>) {
    let (layer, stage) = (group[0].layer, group[0].stage);
    let counts: Vec<usize> = group.iter().map(|job| job.inputs.len()).collect();
    let mut inputs: Vec<Vec<UploadCiphertext>> =
        group.iter_mut().flat_map(|job| std::mem::take(&mut job.inputs)).collect();
    match model.multiply(layer, stage, &inputs) {
        Ok(mut products) => {
            for (job, count) in group.iter().zip(&counts).rev() {
                let _ = job.reply.send(Ok(products.split_off(products.len() - count)));
            }
        }
        Err(error) if group.len() == 1 => {
            let _ = group[0].reply.send(Err(error));
        }
        Err(_) => {
            for (job, count) in group.iter().zip(&counts).rev() {
                let own = inputs.split_off(inputs.len() - count);
                let _ = job.reply.send(model.multiply(layer, stage, &own));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use based_model::testutil::write_random_gguf;
    use based_model::{LlamaConfig, LoadedModel, SqueezedModel};
    use based_rlwe::{MatrixLayout, SecretKey, decrypt_products, encrypt_vector};
    use rand_core::SeedableRng;

    use super::*;
    use crate::{ModelIdentity, encryption_params, max_product};

    #[test]
    fn a_bad_job_fails_alone_and_its_batch_mates_get_their_products() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_random_gguf(&path, &LlamaConfig::tiny(), 9).unwrap();
        let model = SqueezedModel::from_float(&LoadedModel::load(&path).unwrap().model);
        let identity = ModelIdentity::of_path(&path).unwrap();
        let miner = MinerModel::prepare(&model, identity, |_, _| {}).unwrap();

        let params = encryption_params(&model).unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let key = SecretKey::generate(&params, &mut rng);
        let layout_for = |stage| {
            let m = model.matrix(1, stage);
            MatrixLayout::choose(&params, m.cols, m.rows).unwrap()
        };
        let (good_layout, other_layout) = (layout_for(Stage::AttnOut), layout_for(Stage::Down));
        let code: Vec<i8> = (0..good_layout.n_in()).map(|i| (i % 200) as i8).collect();
        let good = encrypt_vector(&key, &good_layout, &code, &mut rng).unwrap();
        let other_code = vec![1i8; other_layout.n_in()];
        let bad = encrypt_vector(&key, &other_layout, &other_code, &mut rng).unwrap();

        let (good_reply, good_answer) = mpsc::channel();
        let (bad_reply, bad_answer) = mpsc::channel();
        let job = |inputs, reply| Job { layer: 1, stage: Stage::AttnOut, inputs, reply };
        run_group(&miner, vec![job(vec![good], good_reply), job(vec![bad], bad_reply)]);

        assert!(bad_answer.recv().unwrap().is_err());
        let products = good_answer.recv().unwrap().unwrap();
        let m = model.matrix(1, Stage::AttnOut);
        let decrypted = decrypt_products(&key, &good_layout, &products[0], max_product(m)).unwrap();
        assert_eq!(decrypted, m.products(&[code], 1).remove(0));
    }
}
