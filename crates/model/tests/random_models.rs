//! Tests on tiny random Llama models written in the real GGUF and Hugging Face formats.

use std::path::PathBuf;

use based_model::gguf::GgufFile;
use based_model::testutil::{test_tokenizer, write_random_gguf, write_random_hf_dir};
use based_model::{
    BackendError, ChatTokenizer, FloatGenerator, Generator, HeadInput, LinearBackend, LlamaConfig,
    LoadedModel, ModelError, NormGains, PlainBackend, QuantMatrix, SqueezedModel, Stage,
    float_perplexity, squeeze_activation, squeezed_perplexity,
};

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("based-model-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn tiny_gguf(test: &str) -> (PathBuf, LoadedModel) {
    let path = scratch_dir(test).join("model.gguf");
    write_random_gguf(&path, &LlamaConfig::tiny(), 7).expect("write gguf");
    let loaded = LoadedModel::load(&path).expect("load gguf");
    (path, loaded)
}

#[test]
fn gguf_and_hf_directory_load_to_the_same_model() {
    let dir = scratch_dir("same");
    let config = LlamaConfig::tiny();
    write_random_gguf(&dir.join("model.gguf"), &config, 3).unwrap();
    write_random_hf_dir(&dir.join("hf"), &config, 3).unwrap();
    let from_gguf = LoadedModel::load(&dir.join("model.gguf")).unwrap();
    let from_hf = LoadedModel::load(&dir.join("hf")).unwrap();
    assert_eq!(from_gguf.model.config, config);
    assert_eq!(
        from_gguf.model, from_hf.model,
        "Q8_0-exact weights and the q/k permutation must round-trip"
    );

    let text = "the cat sat on the mat in 2024 <|im_end|>";
    let ids = from_gguf.tokenizer.encode(text).unwrap();
    assert_eq!(ids, from_hf.tokenizer.encode(text).unwrap());
    assert_eq!(from_gguf.tokenizer.decode(&ids).unwrap(), text);
    assert_eq!(from_gguf.tokenizer.stop_tokens(), &[2, 0]);

    let squeezed = SqueezedModel::from_float(&from_gguf.model);
    let prompt = from_gguf.tokenizer.encode_chat("be brief", "hi there").unwrap();
    let mut backend = PlainBackend::new(&squeezed);
    let mut streamed = Vec::new();
    let out = Generator::new(&squeezed)
        .generate(&prompt, 12, &[], &mut backend, &mut |t| streamed.push(t))
        .unwrap();
    assert_eq!(out.len(), 12);
    assert_eq!(out, streamed);
    let float_out =
        FloatGenerator::new(&from_hf.model).generate(&prompt, 12, &[], &mut |_| {}).unwrap();
    assert_eq!(float_out.len(), 12);
}

/// Greedy replies of random models must not collapse into repeating one token, or tests that
/// compare two backends token by token prove little.
#[test]
fn random_models_reply_with_varied_tokens() {
    let dir = scratch_dir("varied");
    for seed in [1, 7, 11, 13] {
        let gguf = dir.join(format!("{seed}.gguf"));
        let hf = dir.join(seed.to_string());
        write_random_gguf(&gguf, &LlamaConfig::tiny(), seed).unwrap();
        write_random_hf_dir(&hf, &LlamaConfig::tiny(), seed).unwrap();
        for path in [gguf, hf] {
            let loaded = LoadedModel::load(&path).unwrap();
            let squeezed = SqueezedModel::from_float(&loaded.model);
            let prompt = loaded.tokenizer.encode_chat("You are terse.", "hello world").unwrap();
            let stops = loaded.tokenizer.stop_tokens();
            let mut backend = PlainBackend::new(&squeezed);
            let reply = Generator::new(&squeezed)
                .generate(&prompt, 16, stops, &mut backend, &mut |_| {})
                .unwrap();
            let mut distinct = reply.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(distinct.len() > 4, "{}: degenerate reply {reply:?}", path.display());
        }
    }
}

#[test]
fn tokenizer_splits_digits_and_adds_no_prefix_space() {
    let tokenizer = test_tokenizer(LlamaConfig::tiny().vocab_size).unwrap();
    let ids = tokenizer.encode("the 42").unwrap();
    let expected: Vec<u32> =
        ["the", "Ġ", "4", "2"].iter().map(|t| tokenizer.token_id(t).unwrap()).collect();
    assert_eq!(ids, expected);
    let chat = tokenizer.encode_chat("sys", "user").unwrap();
    assert_eq!(chat[0], tokenizer.token_id("<|im_start|>").unwrap());
    assert_eq!(
        ChatTokenizer::chat_prompt(&[("system", "S"), ("user", "U")]),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn activation_squeezing_reconstructs_within_half_a_step() {
    for (n, spread) in [(64, 5.0f32), (576, 0.05), (7, 1.0)] {
        let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * spread).collect();
        let s = squeeze_activation(&x);
        let (min, max) = x.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let step = (max - min) / 255.0;
        for (&v, &c) in x.iter().zip(&s.codes) {
            assert!((s.scale * f32::from(c) + s.offset - v).abs() <= 0.51 * step + 1e-6);
        }
        assert!(s.codes.contains(&-128) && s.codes.contains(&127));
    }
    let constant = squeeze_activation(&[0.25; 8]);
    assert_eq!(constant.codes, vec![0; 8]);
    assert_eq!(constant.scale * 3.0 + constant.offset, 0.25);
}

/// Adaptive scaling multiplies a token by 1/2 or 2 before min-max quantisation; min-max is
/// scale-invariant and powers of two are exact in binary floating point, so the codes are
/// exactly those of plain min-max quantisation of the unscaled token.
#[test]
fn adaptive_scaling_leaves_min_max_codes_unchanged() {
    let plain_min_max = |x: &[f32]| -> Vec<i8> {
        let (min, max) = x.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let step = (max - min) / 255.0;
        x.iter().map(|&v| (((v - min) / step).round() - 128.0) as i8).collect()
    };
    for spread in [0.01f32, 0.09, 0.5, 30.0] {
        let x: Vec<f32> =
            (0..576).map(|i| ((i * 113 % 577) as f32 / 288.0 - 1.0) * spread).collect();
        assert_eq!(squeeze_activation(&x).codes, plain_min_max(&x), "spread {spread}");
    }
}

#[test]
fn integer_products_are_exact_and_dequantise_close_to_float() {
    let (_, loaded) = tiny_gguf("products");
    let layer = &loaded.model.layers[1];
    let q = QuantMatrix::quantize(&layer.gate_up);
    let x: Vec<f32> = (0..q.cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let s = squeeze_activation(&x);
    let products = q.products(std::slice::from_ref(&s.codes), 2);
    assert_eq!(products[0].len(), q.rows);
    for (r, &product) in products[0].iter().enumerate() {
        let naive: i64 =
            q.row(r).iter().zip(&s.codes).map(|(&w, &c)| i64::from(w) * i64::from(c)).sum();
        assert_eq!(product, naive);
    }
    let extreme = vec![-128i8; q.cols];
    let bound = q.max_abs_product();
    assert!(q.products(std::slice::from_ref(&extreme), 1)[0].iter().all(|p| p.abs() <= bound));
    assert!(bound <= 127 * 128 * q.cols as i64);
    let y = q.dequantize(&products[0], &s).unwrap();
    let mut worst = 0f32;
    for (r, &y_r) in y.iter().enumerate() {
        let exact: f32 = layer.gate_up.row(r).iter().zip(&x).map(|(w, x)| w * x).sum();
        worst = worst.max((y_r - exact).abs());
    }
    assert!(worst < 0.05, "worst error {worst}");
}

/// Replays recorded products, counting calls: what an encrypted backend returning the same
/// integers looks like to the generator.
struct Recorder<'a> {
    inner: PlainBackend<'a>,
    calls: Vec<(usize, Stage, usize)>,
}

impl LinearBackend for Recorder<'_> {
    fn products(
        &mut self,
        layer: usize,
        stage: Stage,
        codes: &[Vec<i8>],
    ) -> Result<Vec<Vec<i64>>, BackendError> {
        self.calls.push((layer, stage, codes.len()));
        self.inner.products(layer, stage, codes)
    }
}

#[test]
fn prefill_batches_each_stage_and_matches_stepwise_decoding_bitwise() {
    let (_, loaded) = tiny_gguf("prefill");
    let squeezed = SqueezedModel::from_float(&loaded.model);
    let tokens = loaded.tokenizer.encode("the answer is 42, then").unwrap();
    let mut recorder =
        Recorder { inner: PlainBackend::with_threads(&squeezed, 1), calls: Vec::new() };
    let batched = Generator::new(&squeezed).prefill(&tokens, &mut recorder).unwrap();
    let expected: Vec<_> =
        (0..squeezed.n_layers()).flat_map(|l| Stage::ALL.map(|s| (l, s, tokens.len()))).collect();
    assert_eq!(recorder.calls, expected);

    let mut stepwise = Generator::new(&squeezed);
    let mut backend = PlainBackend::with_threads(&squeezed, 2);
    let mut logits = Vec::new();
    for &t in &tokens {
        logits = stepwise.step(t, &mut backend).unwrap();
    }
    assert_eq!(stepwise.position(), tokens.len());
    assert_eq!(logits, batched, "same integers must give bitwise identical logits");
}

/// A conversation saved after its system turn and resumed elsewhere continues bit for bit as
/// if it had never stopped; damaged or foreign saved states are refused with a reason.
#[test]
fn a_saved_conversation_resumes_bit_for_bit_and_bad_states_are_refused() {
    let (_, loaded) = tiny_gguf("resume");
    let squeezed = loaded.squeeze().unwrap();
    let tokenizer = &loaded.tokenizer;
    let prefix = tokenizer.encode_system_turn("be brief").unwrap();
    let whole = tokenizer.encode_chat("be brief", "what now?").unwrap();
    assert_eq!(whole[..prefix.len()], prefix[..], "the system turn is a prefix of the chat");
    let rest = &whole[prefix.len()..];
    let mut backend = PlainBackend::new(&squeezed);

    let expected = Generator::new(&squeezed).generate(&whole, 8, &[], &mut backend, &mut |_| {});
    let mut first = Generator::new(&squeezed);
    first.prefill(&prefix, &mut backend).unwrap();
    let saved = first.saved_state(&prefix).unwrap();
    let (mut resumed, tokens) = Generator::resume(&squeezed, &saved).unwrap();
    assert_eq!(tokens, prefix);
    assert_eq!(resumed.position(), prefix.len());
    let continued = resumed.generate(rest, 8, &[], &mut backend, &mut |_| {});
    assert_eq!(continued.unwrap(), expected.unwrap());

    let refused = |bytes: &[u8]| match Generator::resume(&squeezed, bytes) {
        Err(ModelError::SavedState(why)) => why,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a bad saved state was accepted"),
    };
    for cut in [0, 3, 10, saved.len() / 2, saved.len() - 1] {
        let why = refused(&saved[..cut]);
        let clear = ["magic", "truncated", "checksum"].iter().any(|w| why.contains(w));
        assert!(clear, "{why}");
    }
    let mut flipped = saved.clone();
    flipped[saved.len() / 2] ^= 1; // one bit of one cached key or value
    assert!(refused(&flipped).contains("checksum mismatch"));
    // A well-formed state of a model with one more layer.
    let mut config = LlamaConfig::tiny();
    config.n_layers += 1;
    let other_path = scratch_dir("resume-other").join("model.gguf");
    write_random_gguf(&other_path, &config, 7).unwrap();
    let other = LoadedModel::load(&other_path).unwrap().squeeze().unwrap();
    let mut on_other = Generator::new(&other);
    on_other.prefill(&prefix, &mut PlainBackend::new(&other)).unwrap();
    let foreign = on_other.saved_state(&prefix).unwrap();
    assert!(refused(&foreign).contains("saved for 3 layers"), "{}", refused(&foreign));
    let error = first.saved_state(&prefix[1..]).unwrap_err();
    assert!(error.to_string().contains("tokens given for a conversation at position"), "{error}");
}

#[test]
fn squeezed_perplexity_stays_close_to_float() {
    let (_, loaded) = tiny_gguf("ppl");
    let tokens =
        loaded.tokenizer.encode("the theses in the west are an answer to the rest").unwrap();
    let float = float_perplexity(&loaded.model, &tokens).unwrap();
    assert!(float.is_finite() && float > 1.0);
    for gains in [NormGains::ClientSide, NormGains::Folded] {
        let squeezed = SqueezedModel::from_float_with(&loaded.model, gains);
        assert_eq!(squeezed.input_gain(0, Stage::Qkv).is_some(), gains == NormGains::ClientSide);
        let ppl =
            squeezed_perplexity(&squeezed, &tokens, &mut PlainBackend::new(&squeezed)).unwrap();
        assert!((ppl / float - 1.0).abs() < 0.05, "{gains:?}: float {float}, squeezed {ppl}");
    }
}

#[test]
fn calibrated_squeezing_keeps_the_integer_contract() {
    let (_, loaded) = tiny_gguf("calibrated");
    let calibrated = loaded.squeeze().unwrap();
    let plain = SqueezedModel::from_float(&loaded.model);
    assert_eq!(calibrated.head_input, HeadInput::Float);
    for l in 0..calibrated.n_layers() {
        for s in Stage::ALL {
            let (m, p) = (calibrated.matrix(l, s), plain.matrix(l, s));
            assert_eq!((m.rows, m.cols), (p.rows, p.cols));
            assert!(m.weights.iter().all(|&w| w != i8::MIN));
            assert_ne!(m.weights, p.weights, "smoothing changes the integer weights");
            // The client's input gains undo the factors folded into the columns: W x is kept.
            let gain = calibrated.input_gain(l, s).expect("smoothing gains on every stage");
            let x: Vec<f32> = (0..m.cols).map(|j| ((j * 7 % 11) as f32 - 5.0) / 5.0).collect();
            let float_w = loaded.model.stage(l, s);
            let reference: Vec<f32> = (0..m.rows)
                .map(|r| {
                    let g = float_w.1;
                    float_w
                        .0
                        .row(r)
                        .iter()
                        .enumerate()
                        .map(|(j, w)| w * x[j] * g.map_or(1.0, |g| g[j]))
                        .sum()
                })
                .collect();
            let gained: Vec<f32> = x.iter().zip(gain).map(|(x, g)| x * g).collect();
            let squeezed = squeeze_activation(&gained);
            let products = m.products(std::slice::from_ref(&squeezed.codes), 1);
            let y = m.dequantize(&products[0], &squeezed).unwrap();
            let norm = reference.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = y.iter().zip(&reference).fold(0f32, |a, (y, r)| a.max((y - r).abs()));
            assert!(worst < 0.05 * norm, "layer {l} {s:?}: error {worst} of {norm}");
        }
    }
    // Same integers, same logits: batched prefill equals token-by-token decoding bitwise.
    let tokens = loaded.tokenizer.encode("the answer is 42, then").unwrap();
    let batched = Generator::new(&calibrated)
        .prefill(&tokens, &mut PlainBackend::with_threads(&calibrated, 1))
        .unwrap();
    let mut stepwise = Generator::new(&calibrated);
    let mut backend = PlainBackend::with_threads(&calibrated, 2);
    let mut logits = Vec::new();
    for &t in &tokens {
        logits = stepwise.step(t, &mut backend).unwrap();
    }
    assert_eq!(logits, batched);
    let float = float_perplexity(&loaded.model, &tokens).unwrap();
    let ppl =
        squeezed_perplexity(&calibrated, &tokens, &mut PlainBackend::new(&calibrated)).unwrap();
    assert!((ppl / float - 1.0).abs() < 0.05, "float {float}, calibrated {ppl}");
}

#[test]
fn backend_errors_and_bad_tokens_surface_as_errors() {
    struct Failing;
    impl LinearBackend for Failing {
        fn products(
            &mut self,
            _: usize,
            _: Stage,
            _: &[Vec<i8>],
        ) -> Result<Vec<Vec<i64>>, BackendError> {
            Err(BackendError::new("network down"))
        }
    }
    let (_, loaded) = tiny_gguf("errors");
    let squeezed = SqueezedModel::from_float(&loaded.model);
    let err = Generator::new(&squeezed).prefill(&[1, 2], &mut Failing).unwrap_err();
    assert_eq!(err.to_string(), "linear backend: network down");
    let mut backend = PlainBackend::new(&squeezed);
    assert!(Generator::new(&squeezed).prefill(&[100_000], &mut backend).is_err());
    assert!(Generator::new(&squeezed).prefill(&[], &mut backend).is_err());
    assert!(backend.products(0, Stage::Down, &[vec![0; 3]]).is_err());
}

/// Fails once, in the middle of the model, then behaves.
struct FailsOnce<'a> {
    inner: PlainBackend<'a>,
    failed: bool,
}

impl LinearBackend for FailsOnce<'_> {
    fn products(
        &mut self,
        layer: usize,
        stage: Stage,
        codes: &[Vec<i8>],
    ) -> Result<Vec<Vec<i64>>, BackendError> {
        if layer == 1 && stage == Stage::GateUp && !self.failed {
            self.failed = true;
            return Err(BackendError::from("timeout"));
        }
        self.inner.products(layer, stage, codes)
    }
}

#[test]
fn a_failed_step_rolls_back_and_can_be_retried() {
    let (_, loaded) = tiny_gguf("retry");
    let squeezed = SqueezedModel::from_float(&loaded.model);
    let mut clean = Generator::new(&squeezed);
    let mut backend = PlainBackend::new(&squeezed);
    clean.prefill(&[5, 6, 7], &mut backend).unwrap();
    let expected = clean.step(8, &mut backend).unwrap();

    let mut flaky = FailsOnce { inner: PlainBackend::new(&squeezed), failed: false };
    let mut generator = Generator::new(&squeezed);
    generator.prefill(&[5, 6, 7], &mut flaky).unwrap_err();
    assert_eq!(generator.position(), 0);
    generator.prefill(&[5, 6, 7], &mut flaky).unwrap();
    assert_eq!(generator.step(8, &mut flaky).unwrap(), expected);
}

#[test]
fn truncated_or_inconsistent_gguf_files_are_typed_errors() {
    let (path, _) = tiny_gguf("truncated");
    let bytes = std::fs::read(&path).unwrap();
    for cut in (0..bytes.len()).step_by(bytes.len() / 97).chain([bytes.len() - 1]) {
        assert!(GgufFile::parse(bytes[..cut].to_vec()).is_err(), "accepted a file cut at {cut}");
    }
    let mut bad_magic = bytes.clone();
    bad_magic[0] = b'X';
    assert!(matches!(GgufFile::parse(bad_magic), Err(ModelError::Gguf(_))));
    let patched = |from: &[u8], to: &[u8]| {
        let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
        let mut b = bytes.clone();
        b[at..at + from.len()].copy_from_slice(to);
        GgufFile::parse(b).unwrap()
    };
    let model = |gguf: GgufFile| based_model::FloatModel::from_gguf(&gguf);
    assert!(
        matches!(model(patched(b"llama", b"gemma")), Err(ModelError::UnsupportedArchitecture(a)) if a == "gemma")
    );
    assert!(
        matches!(model(patched(b"blk.1.ffn_up.weight", b"blk.1.ffn_UP.weight")), Err(ModelError::MissingTensor(t)) if t == "blk.1.ffn_up.weight")
    );
    let other_pre_tokenizer = patched(b"smollm", b"falcon");
    assert!(matches!(
        ChatTokenizer::from_gguf(&other_pre_tokenizer),
        Err(ModelError::Tokenizer(_))
    ));
}

#[test]
fn inconsistent_hf_directories_are_typed_errors() {
    let dir = scratch_dir("hf-errors");
    write_random_hf_dir(&dir, &LlamaConfig::tiny(), 1).unwrap();
    let config_path = dir.join("config.json");
    let original = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        original.replace("\"intermediate_size\": 96", "\"intermediate_size\": 128"),
    )
    .unwrap();
    let err = LoadedModel::load(&dir).err().unwrap();
    assert!(
        matches!(&err, ModelError::ShapeMismatch { name, .. } if name == "blk.0.ffn_gate.weight"),
        "{err}"
    );
    std::fs::write(
        &config_path,
        original.replace("LlamaForCausalLM", "GPT2LMHeadModel").replace("\"llama\"", "\"gpt2\""),
    )
    .unwrap();
    assert!(matches!(LoadedModel::load(&dir), Err(ModelError::UnsupportedArchitecture(_))));
    std::fs::write(&config_path, &original).unwrap();
    let weights = dir.join("model.safetensors");
    let full = std::fs::read(&weights).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&full).unwrap();
    let without_head = tensors.iter().filter(|(name, _)| *name != "lm_head.weight");
    std::fs::write(&weights, safetensors::serialize(without_head, None).unwrap()).unwrap();
    assert!(
        matches!(LoadedModel::load(&dir), Err(ModelError::MissingTensor(t)) if t == "lm_head.weight")
    );
    let full = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &full[..full.len() / 2]).unwrap();
    assert!(matches!(LoadedModel::load(&dir), Err(ModelError::Safetensors(_))));
    assert_eq!(based_model::model_files(&dir).unwrap().len(), 3);
}

#[test]
fn half_precision_safetensors_load_close_to_f32() {
    let dir = scratch_dir("half");
    write_random_hf_dir(&dir, &LlamaConfig::tiny(), 5).unwrap();
    let reference = LoadedModel::load(&dir).unwrap().model;
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    type Convert = fn(f32) -> [u8; 2];
    let to_f16: Convert = |v| half::f16::from_f32(v).to_le_bytes();
    let to_bf16: Convert = |v| half::bf16::from_f32(v).to_le_bytes();
    for (dtype, convert, tolerance) in
        [(safetensors::Dtype::F16, to_f16, 2e-3f32), (safetensors::Dtype::BF16, to_bf16, 1e-2)]
    {
        let converted: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(name, view)| {
                let data = view
                    .data()
                    .chunks_exact(4)
                    .flat_map(|b| convert(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .collect();
                (name.to_owned(), view.shape().to_vec(), data)
            })
            .collect();
        let views = converted.iter().map(|(name, shape, data)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(dtype, shape.clone(), data).unwrap(),
            )
        });
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        let model = LoadedModel::load(&dir).unwrap().model;
        let worst = model.layers[1]
            .qkv
            .data
            .iter()
            .zip(&reference.layers[1].qkv.data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs() / b.abs().max(1e-3)));
        assert!(worst < tolerance, "{dtype:?}: relative error {worst}");
    }
}
