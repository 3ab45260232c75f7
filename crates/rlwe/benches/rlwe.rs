//! Plain benchmark (no harness): prints a table of NTT, encryption, decryption and encrypted
//! matrix-vector product timings for SmolLM2-135M's layer shapes, against a plain i8 product.
//! Run: cargo bench -p based-rlwe [-- rhombus [own-bound]]
//! (BASED_RLWE_WEIGHTS=dir adds real SmolLM2 weights to the Rhombus tables, see `real_weights`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use based_rlwe::{
    CIPHERTEXT_MODULUS, EncodedMatrix, GaloisKeys, MatrixLayout, Params, RING_DEGREE, RhombusKeys,
    RhombusMatrix, RhombusPlan, SecretKey, UploadCiphertext, decrypt_packed, decrypt_products,
    encrypt_vector, gadget_digits, galois_keys_bytes, packed_cts, packed_download_bytes,
    packing_digit_bits, packing_exponents, packing_key_switches, rhombus_decrypt, rhombus_encrypt,
    rhombus_worst_case_noise_sigmas,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tfhe_ntt::prime64::Plan;

/// Fastest time of `run` over enough repetitions to fill about `budget`: on 2 cores shared
/// with other jobs the minimum is the repeatable figure (the median measures the neighbours).
fn best_time(budget: Duration, mut run: impl FnMut()) -> Duration {
    let start = Instant::now();
    run();
    let first = start.elapsed();
    let repetitions =
        (budget.as_secs_f64() / first.as_secs_f64().max(1e-9)).clamp(3.0, 2000.0) as usize;
    (0..repetitions)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .min()
        .unwrap_or(first)
}

fn with_threads<T: Send>(threads: usize, work: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool").install(work)
}

fn random_i8(rng: &mut ChaCha20Rng, len: usize, low: i8) -> Vec<i8> {
    (0..len).map(|_| (rng.next_u32() as u8 as i8).max(low)).collect()
}

fn plain_matvec(weights: &[i8], x: &[i8], out: &mut [i32]) {
    for (row, value) in weights.chunks_exact(x.len()).zip(out) {
        *value = row.iter().zip(x).map(|(&w, &v)| i32::from(w) * i32::from(v)).sum();
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let budget = Duration::from_millis(400);
    // `cargo bench -p based-rlwe -- rhombus [own-bound]`: only the Rhombus tables (only the
    // real weights with t from their own bound, the regime the protocol uses).
    if std::env::args().any(|arg| arg == "rhombus") {
        rhombus_rows(budget, std::env::args().any(|arg| arg == "own-bound"));
        return;
    }
    let plan = Plan::try_new(RING_DEGREE, CIPHERTEXT_MODULUS).expect("NTT plan");
    let mut poly: Vec<u64> = (0..RING_DEGREE as u64).collect();
    let forward = best_time(budget, || plan.fwd(black_box(&mut poly)));
    let inverse = best_time(budget, || plan.inv(black_box(&mut poly)));
    let keygen_params = Params::for_product_bound(127 * 128 * 576).expect("params");
    let mut keygen_rng = ChaCha20Rng::seed_from_u64(0);
    let keygen = best_time(budget, || {
        black_box(SecretKey::generate(&keygen_params, &mut keygen_rng));
    });
    println!("N = {RING_DEGREE}, q = {CIPHERTEXT_MODULUS} (54 bits), tfhe-ntt prime64");
    println!(
        "NTT forward {:.1} us, inverse {:.1} us; key generation {:.1} us\n",
        micros(forward),
        micros(inverse),
        micros(keygen)
    );

    // SmolLM2-135M: fused QKV, attention output, fused gate/up, down; plus a 1B-class shape.
    let shapes = [
        ("qkv", 960, 576),
        ("o", 576, 576),
        ("gate_up", 3072, 576),
        ("down", 576, 1536),
        ("wide", 2048, 8192),
    ];
    let batch = 8;
    println!(
        "{:<8} {:>11} {:>5}x{:<4} {:>4}/{:<4} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>9} {:>7} {:>5} {:>6} {:>7} {:>6}",
        "layer",
        "n_out x n_in",
        "ob",
        "ib",
        "up",
        "down",
        "up KB",
        "down KB",
        "enc ms",
        "dec ms",
        "apply1 ms",
        "apply2 ms",
        "b8/vec ms",
        "plain us",
        "MMAC/s 2t",
        "x plain",
        "log t",
        "log q'",
        "up bits",
        "sigmas"
    );
    let mut token_seconds = 0.0;
    let mut token_seconds_batched = 0.0;
    let mut token_bytes = 0usize;
    let mut client_seconds = 0.0;
    let mut plain_seconds = 0.0;
    let mut memory = 0usize;
    for (name, n_out, n_in) in shapes {
        let mut rng = ChaCha20Rng::seed_from_u64(n_out as u64 * 31 + n_in as u64);
        let params = Params::for_product_bound(127 * 128 * n_in as u64).expect("params");
        let key = SecretKey::generate(&params, &mut rng);
        let layout = MatrixLayout::choose(&params, n_in, n_out).expect("layout");
        let weights = random_i8(&mut rng, n_out * n_in, -127);
        let x = random_i8(&mut rng, n_in, i8::MIN);
        let matrix = EncodedMatrix::encode(&params, &layout, &weights).expect("encode");
        let uploads = encrypt_vector(&key, &layout, &x, &mut rng).expect("encrypt");
        let results = matrix.apply(&uploads).expect("apply");
        let mut plain = vec![0i32; n_out];
        plain_matvec(&weights, &x, &mut plain);
        let decrypted =
            decrypt_products(&key, &layout, &results, params.product_bound()).expect("decrypt");
        assert!(decrypted.iter().zip(&plain).all(|(&d, &p)| d == i64::from(p)), "{name}: inexact");

        let encrypt = best_time(budget, || {
            black_box(encrypt_vector(&key, &layout, &x, &mut rng).expect("encrypt"));
        });
        let decrypt = best_time(budget, || {
            black_box(
                decrypt_products(&key, &layout, &results, params.product_bound()).expect("decrypt"),
            );
        });
        let apply_on = |threads: usize| {
            with_threads(threads, || {
                best_time(budget, || {
                    black_box(matrix.apply(&uploads).expect("apply"));
                })
            })
        };
        let (one_thread, two_threads) = (apply_on(1), apply_on(2));
        let batch_inputs: Vec<Vec<UploadCiphertext>> = vec![uploads.clone(); batch];
        let batched = with_threads(2, || {
            best_time(budget, || {
                black_box(matrix.apply_batch(&batch_inputs).expect("apply_batch"));
            })
        });
        let plain_time =
            best_time(budget, || plain_matvec(black_box(&weights), black_box(&x), &mut plain));
        let macs = (n_out * n_in) as f64;
        let batched_per_vector = batched.as_secs_f64() / batch as f64;
        println!(
            "{:<8} {:>5} x {:<5} {:>5}x{:<4} {:>4}/{:<4} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {:>9.2} {:>8.1} {:>9.0} {:>7.0} {:>5} {:>6} {:>7} {:>6.1}",
            name,
            n_out,
            n_in,
            layout.out_block(),
            layout.in_block(),
            layout.upload_cts(),
            layout.download_cts(),
            layout.upload_bytes() as f64 / 1e3,
            layout.download_bytes() as f64 / 1e3,
            encrypt.as_secs_f64() * 1e3,
            decrypt.as_secs_f64() * 1e3,
            one_thread.as_secs_f64() * 1e3,
            two_threads.as_secs_f64() * 1e3,
            batched_per_vector * 1e3,
            micros(plain_time),
            macs / two_threads.as_secs_f64() / 1e6,
            two_threads.as_secs_f64() / plain_time.as_secs_f64(),
            params.log2_plaintext_modulus(),
            params.result_modulus_bits(),
            params.upload_bits(),
            params.worst_case_noise_sigmas(layout.out_block()),
        );
        if name != "wide" {
            token_seconds += 30.0 * two_threads.as_secs_f64();
            token_bytes += 30 * (layout.upload_bytes() + layout.download_bytes());
            client_seconds += 30.0 * (encrypt + decrypt).as_secs_f64();
            plain_seconds += 30.0 * plain_time.as_secs_f64();
            memory += 30 * matrix.memory_bytes();
            token_seconds_batched += 30.0 * batched_per_vector;
        }
    }
    println!(
        "\nb8/vec: per input vector when {batch} vectors (tokens or users) share one apply_batch, 2 threads."
    );
    println!(
        "SmolLM2-135M, 30 layers x 4 stages, one token: miner {:.0} ms (2 threads; {:.0} ms per token in batches of {batch}), client enc+dec {:.0} ms \
         (plain i8 products {:.0} ms on 1 thread), {:.1} MB on the wire, encoded weights {:.2} GB",
        token_seconds * 1e3,
        token_seconds_batched * 1e3,
        client_seconds * 1e3,
        plain_seconds * 1e3,
        token_bytes as f64 / 1e6,
        memory as f64 / 1e9
    );
    packing_rows(budget);
    rhombus_rows(budget, false);
}

/// Output packing (automorphisms + key switching) at power-of-two input blocks: per stage the
/// bytes and the client's decryption time unpacked vs packed, the miner's packing time, and per
/// SmolLM2 token the totals; Galois key sizes.
fn packing_rows(budget: Duration) {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let params576 = Params::for_product_bound(127 * 128 * 576).expect("params");
    let key576 = SecretKey::generate(&params576, &mut rng);
    let a: Vec<u64> =
        (0..RING_DEGREE as u64).map(|i| (i * 0x9e37_79b9) % CIPHERTEXT_MODULUS).collect();
    let b = a.clone();
    for bits in [8u32, 9, 10, 11] {
        let keys = GaloisKeys::generate(&key576, &[65], bits, &mut rng).expect("keys");
        let switch = best_time(budget, || {
            black_box(keys.apply_automorphism(65, &a, &b).expect("switch"));
        });
        println!(
            "\nkey switch (automorphism + {} digits of 2^{bits}): {:.1} us, one Galois key {:.1} KB",
            gadget_digits(bits),
            micros(switch),
            galois_keys_bytes(1, bits) as f64 / 1e3
        );
    }
    println!(
        "\n{:<8} {:>4} {:>5}x{:<4} {:>4} {:>8} {:>5}/{:<4} {:>9} {:>9} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "stage",
        "ib",
        "ob",
        "ib",
        "up",
        "up KB",
        "down",
        "pack",
        "down KB",
        "pack KB",
        "KS",
        "digits",
        "apply ms",
        "packed ms",
        "pack ms",
        "dec ms",
        "pdec ms",
        "sigmas"
    );
    let shapes = [("qkv", 960, 576), ("o", 576, 576), ("gate_up", 3072, 576), ("down", 576, 1536)];
    for in_block in [64usize, 128, 256, 512] {
        let mut up = 0usize;
        let mut down = 0usize;
        let mut client = 0.0;
        let mut miner = 0.0;
        let mut exponents = packing_exponents(in_block).expect("exponents");
        let mut digit_bits = u32::MAX;
        for (name, n_out, n_in) in shapes {
            let params = Params::for_product_bound(127 * 128 * n_in as u64).expect("params");
            let key = SecretKey::generate(&params, &mut rng);
            let out_block = (RING_DEGREE / in_block).min(n_out).min(params.max_out_block());
            let layout = MatrixLayout::with_blocks(&params, n_in, n_out, in_block, out_block)
                .expect("layout");
            let bits = packing_digit_bits(&params, &layout).expect("digit base");
            digit_bits = digit_bits.min(bits);
            exponents.sort_unstable();
            let keys = GaloisKeys::generate(&key, &exponents, bits, &mut rng).expect("keys");
            let weights = random_i8(&mut rng, n_out * n_in, -127);
            let x = random_i8(&mut rng, n_in, i8::MIN);
            let matrix = EncodedMatrix::encode(&params, &layout, &weights).expect("encode");
            let uploads = encrypt_vector(&key, &layout, &x, &mut rng).expect("encrypt");
            let results = matrix.apply(&uploads).expect("apply");
            let packed = matrix.apply_packed(&uploads, &keys).expect("apply_packed");
            let mut plain = vec![0i32; n_out];
            plain_matvec(&weights, &x, &mut plain);
            let decrypted =
                decrypt_packed(&key, &layout, &packed, params.product_bound()).expect("decrypt");
            assert!(
                decrypted.iter().zip(&plain).all(|(&d, &p)| d == i64::from(p)),
                "{name}: inexact"
            );
            let encrypt = best_time(budget, || {
                black_box(encrypt_vector(&key, &layout, &x, &mut rng).expect("encrypt"));
            });
            let apply = with_threads(2, || {
                best_time(budget, || {
                    black_box(matrix.apply(&uploads).expect("apply"));
                })
            });
            let apply_packed = with_threads(2, || {
                best_time(budget, || {
                    black_box(matrix.apply_packed(&uploads, &keys).expect("apply_packed"));
                })
            });
            let decrypt = best_time(budget, || {
                black_box(
                    decrypt_products(&key, &layout, &results, params.product_bound()).expect("dec"),
                );
            });
            let decrypt_packed_time = best_time(budget, || {
                black_box(
                    decrypt_packed(&key, &layout, &packed, params.product_bound()).expect("dec"),
                );
            });
            println!(
                "{:<8} {:>4} {:>5}x{:<4} {:>4} {:>8.1} {:>5}/{:<4} {:>9.1} {:>9.1} {:>5} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.3} {:>9.3} {:>6.1}",
                name,
                in_block,
                layout.out_block(),
                layout.in_block(),
                layout.upload_cts(),
                layout.upload_bytes() as f64 / 1e3,
                layout.download_cts(),
                packed_cts(&layout),
                layout.download_bytes() as f64 / 1e3,
                packed_download_bytes(&layout, &params) as f64 / 1e3,
                packing_key_switches(&layout),
                format!("{}x2^{bits}", gadget_digits(bits)),
                apply.as_secs_f64() * 1e3,
                apply_packed.as_secs_f64() * 1e3,
                (apply_packed.saturating_sub(apply)).as_secs_f64() * 1e3,
                decrypt.as_secs_f64() * 1e3,
                decrypt_packed_time.as_secs_f64() * 1e3,
                params.packed_worst_case_noise_sigmas(layout.out_block(), in_block, bits),
            );
            up += 30 * layout.upload_bytes();
            down += 30 * packed_download_bytes(&layout, &params);
            client += 30.0 * (encrypt + decrypt_packed_time).as_secs_f64();
            miner += 30.0 * apply_packed.as_secs_f64();
        }
        println!(
            "  in_block {in_block}, per SmolLM2 token packed: up {:.2} MB + down {:.2} MB = {:.2} MB, client enc+dec {:.0} ms, miner {:.0} ms (2 threads); \
             Galois keys ({} automorphisms, 2^{digit_bits} digits) {:.0} KB once per session",
            up as f64 / 1e6,
            down as f64 / 1e6,
            (up + down) as f64 / 1e6,
            client * 1e3,
            miner * 1e3,
            exponents.len(),
            galois_keys_bytes(exponents.len(), digit_bits) as f64 / 1e3,
        );
    }
}

/// Where the real squeezed SmolLM2 weights are, if extracted (files `l{layer}_{stage}_{n_out}x{n_in}.i8`,
/// row-major i8, rows scaled to max |w| = 127): `BASED_RLWE_WEIGHTS=/dir cargo bench -p based-rlwe`.
fn real_weights(layer: usize, stage: &str, n_out: usize, n_in: usize) -> Option<Vec<i8>> {
    let dir = std::env::var("BASED_RLWE_WEIGHTS").ok()?;
    let bytes = std::fs::read(format!("{dir}/l{layer}_{stage}_{n_out}x{n_in}.i8")).ok()?;
    (bytes.len() == n_out * n_in).then(|| bytes.into_iter().map(|b| b as i8).collect())
}

/// Rhombus products (one upload per vector, packed results): per stage the plan the noise
/// allows for the given weights, bytes, key switches, miner and client times; per SmolLM2 token
/// the totals and the Galois keys uploaded once per session.
fn rhombus_rows(budget: Duration, own_bound_only: bool) {
    // The tree's key switch in NTT form: 64 outputs of 2048 inputs make 64 one-row
    // accumulators, so apply is 68 key switches and only 64 ct x pt products.
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    // Weights in {-1, 0, 1} and t for them: room for an 11-level tree at wide digits.
    let params = Params::for_product_bound(128 * 2048).expect("params");
    let key = SecretKey::generate(&params, &mut rng);
    let weights: Vec<i8> = (0..64 * 2048).map(|i| (i % 3) as i8 - 1).collect();
    for bits in [8u32, 9, 11] {
        let plan = RhombusPlan::new(&params, 2048, 64, 0, 54, 0, bits).expect("plan");
        let matrix = RhombusMatrix::encode(&params, &plan, &weights).expect("encode");
        let keys = RhombusKeys::generate(&key, &[&plan], &mut rng).expect("keys");
        let upload = rhombus_encrypt(&key, &plan, &vec![1; 2048], &mut rng).expect("encrypt");
        let apply = with_threads(1, || {
            best_time(budget, || {
                black_box(matrix.apply(&upload, &keys).expect("apply"));
            })
        });
        let switches = plan.key_switches().1;
        // The coefficient-form switch of `galois` (used by `packing`), back to back.
        let a: Vec<u64> =
            (0..RING_DEGREE as u64).map(|i| (i * 0x9e37_79b9) % CIPHERTEXT_MODULUS).collect();
        let k = plan.tree_exponents()[0];
        let coefficient_form = with_threads(1, || {
            best_time(budget, || {
                black_box(keys.tree().apply_automorphism(k, &a, &a).expect("switch"));
            })
        });
        println!(
            "NTT-form tree key switch, {} digits of 2^{bits}: {:.1} us (apply of {switches} key switches and 64 products, 1 thread, / {switches}); coefficient-form switch alone {:.1} us",
            gadget_digits(bits),
            micros(apply) / switches as f64,
            micros(coefficient_form)
        );
    }
    let shapes = [("qkv", 960, 576), ("o", 576, 576), ("gate_up", 3072, 576), ("down", 576, 1536)];
    // (label, real layer, t from the matrix's own bound max_r |W_r|_1 * 128 instead of the i8
    // worst case 127 * 128 * n_in)
    let mut regimes: Vec<(String, Option<usize>, bool)> =
        vec![("uniform random i8".into(), None, false)];
    if real_weights(15, "o", 576, 576).is_some() {
        regimes.push((
            "SmolLM2-135M layer 15 (squeezed i8), t for 127 * 128 * n_in".into(),
            Some(15),
            false,
        ));
        regimes.push((
            "SmolLM2-135M layer 15, t for the matrix's own bound".into(),
            Some(15),
            true,
        ));
    }
    for (regime, layer, own_bound) in regimes {
        if own_bound_only && !own_bound {
            continue;
        }
        println!(
            "\nRhombus, weights: {regime}\n{:<8} {:>3} {:>2} {:>9} {:>7} {:>8} {:>8} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>6} {:>7} {:>6} {:>15}",
            "stage",
            "g0",
            "u",
            "digits",
            "up bit",
            "up KB",
            "down KB",
            "KS in/tr",
            "prods",
            "apply1 ms",
            "apply2 ms",
            "masks2 ms",
            "online2 ms",
            "enc ms",
            "dec ms",
            "sigmas",
            "worst",
            "enc MB",
            "choose/encode s"
        );
        let mut rng = ChaCha20Rng::seed_from_u64(4242);
        let (mut up, mut down, mut switches, mut miner, mut client, mut memory) =
            (0usize, 0usize, 0usize, 0.0, 0.0, 0usize);
        let (mut masks_share, mut online_share, mut precomputed_bytes) = (0.0, 0.0, 0usize);
        // Plans and matrices of all stages first: one session (one secret, one set of Galois
        // keys for all stages, at the narrowest digit base any stage needs) is timed.
        let mut stages = Vec::new();
        for (name, n_out, n_in) in shapes {
            let weights = match layer {
                Some(layer) => real_weights(layer, name, n_out, n_in).expect("weights"),
                None => random_i8(&mut rng, n_out * n_in, -127),
            };
            let params = if own_bound {
                Params::for_weights(n_in, &weights)
            } else {
                Params::for_product_bound(127 * 128 * n_in as u64)
            }
            .expect("params");
            let start = Instant::now();
            let plan = RhombusPlan::choose(&params, n_in, n_out, &weights).expect("plan");
            let choose_time = start.elapsed();
            let start = Instant::now();
            let matrix = RhombusMatrix::encode(&params, &plan, &weights).expect("encode");
            let encode_time = start.elapsed();
            stages.push((
                name,
                n_out,
                n_in,
                weights,
                params,
                plan,
                matrix,
                choose_time,
                encode_time,
            ));
        }
        let secret = SecretKey::generate(&stages[0].4, &mut rng);
        let plan_refs: Vec<&RhombusPlan> = stages.iter().map(|stage| &stage.5).collect();
        let keys = RhombusKeys::generate(&secret, &plan_refs, &mut rng).expect("keys");
        for (name, n_out, n_in, weights, params, plan, matrix, choose_time, encode_time) in &stages
        {
            let (name, n_out, n_in, plan) = (*name, *n_out, *n_in, plan);
            let key = secret.with_params(params);
            let x = random_i8(&mut rng, n_in, i8::MIN);
            let upload = rhombus_encrypt(&key, plan, &x, &mut rng).expect("encrypt");
            let results = matrix.apply(&upload, &keys).expect("apply");
            let mut plain = vec![0i32; n_out];
            plain_matvec(weights, &x, &mut plain);
            let decrypted =
                rhombus_decrypt(&key, plan, &results, params.product_bound()).expect("decrypt");
            assert!(
                decrypted.iter().zip(&plain).all(|(&d, &p)| d == i64::from(p)),
                "{name}: inexact"
            );
            let apply_on = |threads: usize| {
                with_threads(threads, || {
                    best_time(budget, || {
                        black_box(matrix.apply(&upload, &keys).expect("apply"));
                    })
                })
            };
            let (one_thread, two_threads) = (apply_on(1), apply_on(2));
            // The same product split at the masks: what can run before the vector exists,
            // and what is left once it arrives (checked equal to apply).
            let seeds = upload.mask_seeds();
            let precomputed = matrix.precompute(&seeds, &keys).expect("precompute");
            assert_eq!(
                matrix.apply_precomputed(&upload, &precomputed).expect("online"),
                results,
                "{name}: precomputed results differ"
            );
            let (masks, online) = with_threads(2, || {
                let masks = best_time(budget, || {
                    black_box(matrix.precompute(&seeds, &keys).expect("precompute"));
                });
                let online = best_time(budget, || {
                    black_box(matrix.apply_precomputed(&upload, &precomputed).expect("online"));
                });
                (masks, online)
            });
            let encrypt = best_time(budget, || {
                black_box(rhombus_encrypt(&key, plan, &x, &mut rng).expect("encrypt"));
            });
            let decrypt = best_time(budget, || {
                black_box(
                    rhombus_decrypt(&key, plan, &results, params.product_bound()).expect("dec"),
                );
            });
            let (input_switches, tree_switches) = plan.key_switches();
            println!(
                "{:<8} {:>3} {:>2} {:>9} {:>7} {:>8.1} {:>8.1} {:>9} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.3} {:>8.3} {:>8.3} {:>6.1} {:>7.1} {:>6.0} {:>15}",
                name,
                1 << plan.log2_input_conjugates(),
                plan.split_point(),
                format!("{}/{}", plan.input_digit_bits(), plan.tree_digit_bits()),
                plan.upload_bits(),
                plan.upload_bytes() as f64 / 1e3,
                plan.download_bytes() as f64 / 1e3,
                format!("{input_switches}/{tree_switches}"),
                plan.products(),
                one_thread.as_secs_f64() * 1e3,
                two_threads.as_secs_f64() * 1e3,
                masks.as_secs_f64() * 1e3,
                online.as_secs_f64() * 1e3,
                encrypt.as_secs_f64() * 1e3,
                decrypt.as_secs_f64() * 1e3,
                matrix.noise_sigmas(),
                rhombus_worst_case_noise_sigmas(params, plan),
                matrix.memory_bytes() as f64 / 1e6,
                format!("{:.2}/{:.2}", choose_time.as_secs_f64(), encode_time.as_secs_f64()),
            );
            up += 30 * plan.upload_bytes();
            down += 30 * plan.download_bytes();
            switches += 30 * (input_switches + tree_switches);
            miner += 30.0 * two_threads.as_secs_f64();
            masks_share += 30.0 * masks.as_secs_f64();
            online_share += 30.0 * online.as_secs_f64();
            precomputed_bytes += 30 * precomputed.memory_bytes();
            client += 30.0 * (encrypt + decrypt).as_secs_f64();
            memory += 30 * matrix.memory_bytes();
        }
        println!(
            "  per SmolLM2 token (30 layers): up {:.2} MB + down {:.2} MB = {:.2} MB, {} key switches, \
             miner {:.0} ms (2 threads), client enc+dec {:.0} ms; Galois keys once per session \
             {:.0} KB ({} input automorphisms at 2^{} digits + {} tree at 2^{}; applies above use \
             them); encoded weights {:.2} GB\n  with the masks precomputed: {:.0} ms before the \
             vector exists, {:.0} ms once it arrives ({:.1} MB kept per token)",
            up as f64 / 1e6,
            down as f64 / 1e6,
            (up + down) as f64 / 1e6,
            switches,
            miner * 1e3,
            client * 1e3,
            keys.byte_len() as f64 / 1e3,
            keys.input().map_or(0, |k| k.exponents().len()),
            keys.input().map_or(0, |k| k.digit_bits()),
            keys.tree().exponents().len(),
            keys.tree().digit_bits(),
            memory as f64 / 1e9,
            masks_share * 1e3,
            online_share * 1e3,
            precomputed_bytes as f64 / 1e6,
        );
    }
    // Margins and plans of the real weights at three depths (no timing).
    for layer in [0usize, 15, 29] {
        for own_bound in [false, true] {
            let mut line = Vec::new();
            for (name, n_out, n_in) in shapes {
                let Some(weights) = real_weights(layer, name, n_out, n_in) else { return };
                let params = if own_bound {
                    Params::for_weights(n_in, &weights)
                } else {
                    Params::for_product_bound(127 * 128 * n_in as u64)
                }
                .expect("params");
                let plan = RhombusPlan::choose(&params, n_in, n_out, &weights).expect("plan");
                let matrix = RhombusMatrix::encode(&params, &plan, &weights).expect("encode");
                let (input_switches, tree_switches) = plan.key_switches();
                line.push(format!(
                    "{name} t 2^{} g0 {} digits {}/{} KS {}/{} {:.1} sigma",
                    params.log2_plaintext_modulus(),
                    1 << plan.log2_input_conjugates(),
                    plan.input_digit_bits(),
                    plan.tree_digit_bits(),
                    input_switches,
                    tree_switches,
                    matrix.noise_sigmas()
                ));
            }
            println!("  SmolLM2 layer {layer}: {}", line.join("; "));
        }
    }
}
