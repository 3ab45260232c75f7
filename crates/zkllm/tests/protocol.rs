//! The client/miner protocol over real loopback sockets: exactness, what the miner sees, and
//! what happens when either side misbehaves.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use based_model::testutil::{write_random_gguf, write_random_hf_dir};
use based_model::{
    BackendError, ChatTokenizer, Generator, LinearBackend, LlamaConfig, LoadedModel, PlainBackend,
    SqueezedModel, Stage,
};
use based_zkllm::masks::upload_mask_seeds;
use based_zkllm::relay::Relay;
use based_zkllm::wire::{self, Message, PROTOCOL_VERSION};
use based_zkllm::{
    EncryptedBackend, MinerModel, ModelIdentity, ServeConfig, ZkError, spawn_server,
};

struct Fixture {
    identity: ModelIdentity,
    model: SqueezedModel,
    tokenizer: ChatTokenizer,
    _dir: tempfile::TempDir,
}

fn tiny_gguf(seed: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_random_gguf(&path, &LlamaConfig::tiny(), seed).unwrap();
    fixture(&path, dir)
}

fn fixture(path: &Path, dir: tempfile::TempDir) -> Fixture {
    let loaded = LoadedModel::load(path).unwrap();
    Fixture {
        identity: ModelIdentity::of_path(path).unwrap(),
        model: loaded.squeeze().unwrap(),
        tokenizer: loaded.tokenizer,
        _dir: dir,
    }
}

/// A miner that works ahead (the default).
fn start_miner(f: &Fixture) -> SocketAddr {
    start_miner_with(f, ServeConfig::default())
}

fn start_miner_with(f: &Fixture, config: ServeConfig) -> SocketAddr {
    let miner = MinerModel::prepare(&f.model, f.identity.clone(), |_, _| {}).unwrap();
    spawn_server("127.0.0.1:0", Arc::new(miner), config).unwrap()
}

fn generate(
    f: &Fixture,
    prompt: &str,
    max_new: usize,
    backend: &mut dyn LinearBackend,
) -> Vec<u32> {
    let tokens = f.tokenizer.encode_chat("You are terse.", prompt).unwrap();
    Generator::new(&f.model)
        .generate(&tokens, max_new, f.tokenizer.stop_tokens(), backend, &mut |_| {})
        .unwrap()
}

/// A miner that works ahead (its answers mix precomputed and full products) and one that
/// does not.
const BOTH_MINERS: [fn() -> ServeConfig; 2] = [ServeConfig::default, ServeConfig::on_request];

/// Token and logit identity against miners of these configurations (the same encoded model
/// behind all).
fn assert_encrypted_matches_plaintext(
    f: &Fixture,
    prompt: &str,
    max_new: usize,
    configs: &[fn() -> ServeConfig],
) {
    let miner = Arc::new(MinerModel::prepare(&f.model, f.identity.clone(), |_, _| {}).unwrap());
    for config in configs.iter().map(|config| config()) {
        let address = spawn_server("127.0.0.1:0", Arc::clone(&miner), config).unwrap();
        assert_encrypted_matches_plaintext_on(f, prompt, max_new, address);
    }
}

fn assert_encrypted_matches_plaintext_on(
    f: &Fixture,
    prompt: &str,
    max_new: usize,
    miner: SocketAddr,
) {
    let plain = generate(f, prompt, max_new, &mut PlainBackend::new(&f.model));
    let mut client = EncryptedBackend::connect(miner, &f.model, &f.identity).unwrap();
    let encrypted = generate(f, prompt, max_new, &mut client);
    assert_eq!(encrypted, plain, "encrypted generation diverged from the plaintext model");
    let stats = client.close().unwrap();
    let passes = encrypted.len() as u64; // one prefill, then one pass per token but the last
    assert_eq!(stats.rounds, passes * 4 * f.model.n_layers() as u64);
    assert!(stats.bytes_up > 0 && stats.bytes_down > 0);

    // Stronger than equal tokens (a random model may repeat one token): every logit of every
    // step is bitwise the same, because every integer product is.
    let mut client = EncryptedBackend::connect(miner, &f.model, &f.identity).unwrap();
    let mut plain_backend = PlainBackend::new(&f.model);
    let (mut on_plain, mut on_encrypted) = (Generator::new(&f.model), Generator::new(&f.model));
    let tokens = f.tokenizer.encode_chat("You are terse.", prompt).unwrap();
    let expected = on_plain.prefill(&tokens, &mut plain_backend).unwrap();
    assert_eq!(on_encrypted.prefill(&tokens, &mut client).unwrap(), expected);
    for &token in &plain {
        let expected = on_plain.step(token, &mut plain_backend).unwrap();
        assert_eq!(on_encrypted.step(token, &mut client).unwrap(), expected);
    }
}

#[test]
fn encrypted_generation_is_token_identical_on_a_tiny_gguf_model() {
    assert_encrypted_matches_plaintext(&tiny_gguf(11), "hello world", 16, &BOTH_MINERS);
}

#[test]
fn encrypted_generation_is_token_identical_on_a_tiny_hugging_face_model() {
    let dir = tempfile::tempdir().unwrap();
    write_random_hf_dir(dir.path(), &LlamaConfig::tiny(), 13).unwrap();
    let path = dir.path().to_path_buf();
    assert_encrypted_matches_plaintext(&fixture(&path, dir), "numbers 12345", 16, &BOTH_MINERS);
}

/// The real published model, when CI has fetched it (`based model fetch smollm2-135m`), against
/// the default miner only (the tiny models cover both; each SmolLM2 run costs minutes here).
#[test]
fn encrypted_generation_is_token_identical_on_smollm2() {
    let Some(path) = std::env::var_os("BASED_MODEL_GGUF") else {
        eprintln!("BASED_MODEL_GGUF is not set: skipping the SmolLM2 test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(Path::new(&path), dir);
    assert_encrypted_matches_plaintext(&f, "What is 2+2?", 3, &[ServeConfig::default]);
}

/// A chat that pauses lets the miner get ahead: the next tokens are answered from precomputed
/// masks' shares, with every logit the same as the plaintext model's.
#[test]
fn after_a_pause_the_next_tokens_come_from_precomputed_shares_and_stay_exact() {
    let f = tiny_gguf(15);
    let miner = start_miner(&f);
    let mut client = EncryptedBackend::connect(miner, &f.model, &f.identity).unwrap();
    let mut plain_backend = PlainBackend::new(&f.model);
    let (mut on_plain, mut on_encrypted) = (Generator::new(&f.model), Generator::new(&f.model));
    let tokens = f.tokenizer.encode_chat("You are terse.", "pause here").unwrap();
    let mut expected = on_plain.prefill(&tokens, &mut plain_backend).unwrap();
    assert_eq!(on_encrypted.prefill(&tokens, &mut client).unwrap(), expected);

    let wanted = 4;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client.tokens_ahead().unwrap() < wanted {
        assert!(std::time::Instant::now() < deadline, "the miner never got {wanted} tokens ahead");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..wanted {
        let token = based_model::argmax(&expected);
        expected = on_plain.step(token, &mut plain_backend).unwrap();
        assert_eq!(on_encrypted.step(token, &mut client).unwrap(), expected);
    }
    client.close().unwrap();

    // A miner that does not work ahead says so.
    let idle = start_miner_with(&f, ServeConfig::on_request());
    let mut client = EncryptedBackend::connect(idle, &f.model, &f.identity).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(client.tokens_ahead().unwrap(), 0);
}

/// The miner's memory for work ahead is shared by all sessions: one session that has filled it
/// leaves none to the next, until it ends and its shares are freed.
#[test]
fn work_ahead_memory_is_capped_across_sessions_and_freed_when_one_ends() {
    let f = tiny_gguf(16);
    let miner = MinerModel::prepare(&f.model, f.identity.clone(), |_, _| {}).unwrap();
    let two_tokens = 2 * miner.precomputed_bytes_per_token();
    let config = ServeConfig { precompute_total_bytes: two_tokens, ..ServeConfig::default() };
    let miner = spawn_server("127.0.0.1:0", Arc::new(miner), config).unwrap();
    let wait_for = |client: &mut EncryptedBackend, tokens: u32| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while client.tokens_ahead().unwrap() < tokens {
            assert!(std::time::Instant::now() < deadline, "never {tokens} tokens ahead");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut first = EncryptedBackend::connect(miner, &f.model, &f.identity).unwrap();
    wait_for(&mut first, 2);
    let mut second = EncryptedBackend::connect(miner, &f.model, &f.identity).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(second.tokens_ahead().unwrap(), 0, "the second session found memory");
    first.close().unwrap();
    wait_for(&mut second, 1);
}

/// Records every activation code the forward pass hands to the backend.
struct Recording<'m> {
    inner: PlainBackend<'m>,
    codes: Vec<Vec<i8>>,
}

impl LinearBackend for Recording<'_> {
    fn products(
        &mut self,
        layer: usize,
        stage: Stage,
        codes: &[Vec<i8>],
    ) -> Result<Vec<Vec<i64>>, BackendError> {
        self.codes.extend_from_slice(codes);
        self.inner.products(layer, stage, codes)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_miner_receives_no_prompt_text_token_ids_or_activations() {
    let f = tiny_gguf(21);
    let prompt = "attack the castle at dawn";
    let miner = start_miner(&f);
    let relay = Relay::start(miner, Duration::ZERO).unwrap();
    let mut client = EncryptedBackend::connect(relay.address, &f.model, &f.identity).unwrap();
    let generated = generate(&f, prompt, 6, &mut client);
    client.close().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // the relay's last chunks
    let transcript = relay.to_miner.lock().unwrap().clone();
    assert!(transcript.len() > 10_000, "the transcript missed the traffic");

    assert!(!contains(&transcript, prompt.as_bytes()));
    assert!(!contains(&transcript, b"castle"));
    let prompt_ids = f.tokenizer.encode_chat("You are terse.", prompt).unwrap();
    for window in prompt_ids.windows(3).chain(generated.windows(3)) {
        let as_u32: Vec<u8> = window.iter().flat_map(|t| t.to_le_bytes()).collect();
        let as_u16: Vec<u8> = window.iter().flat_map(|t| (*t as u16).to_le_bytes()).collect();
        assert!(!contains(&transcript, &as_u32) && !contains(&transcript, &as_u16));
    }
    let mut recording = Recording { inner: PlainBackend::new(&f.model), codes: Vec::new() };
    generate(&f, prompt, 6, &mut recording);
    assert!(!recording.codes.is_empty());
    for code in &recording.codes {
        let bytes: Vec<u8> = code.iter().map(|&c| c as u8).collect();
        for piece in bytes.chunks_exact(12) {
            assert!(!contains(&transcript, piece), "an activation code crossed in the clear");
        }
    }
    // The embeddings of the prompt tokens, as f32, are not there either.
    let embedding = f.model.embedding.row(prompt_ids[0] as usize);
    let as_bytes: Vec<u8> = embedding.iter().take(4).flat_map(|v| v.to_le_bytes()).collect();
    assert!(!contains(&transcript, &as_bytes));
}

/// Sends raw frames to a miner and returns what it answers.
fn raw_exchange(miner: SocketAddr, frames: &[Message]) -> Vec<Message> {
    let mut stream = TcpStream::connect(miner).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    for frame in frames {
        wire::write_message(&mut stream, frame).unwrap();
    }
    let mut answers = Vec::new();
    while let Ok((message, _)) = wire::read_message(&mut stream) {
        answers.push(message);
    }
    answers
}

fn error_text(answers: &[Message]) -> String {
    match answers.last() {
        Some(Message::Error { message }) => message.clone(),
        other => panic!("expected an error message, got {other:?}"),
    }
}

#[test]
fn saved_plans_are_reused_and_bad_records_are_refused() {
    let f = tiny_gguf(21);
    let chosen = MinerModel::prepare(&f.model, f.identity.clone(), |_, _| {}).unwrap();
    let record = chosen.plan_record();
    let prepare = |record: &[u8], identity: &ModelIdentity| {
        MinerModel::prepare_with_plan_record(&f.model, identity.clone(), record, |_, _| {})
    };
    let reused = prepare(&record, &f.identity).unwrap();
    assert_eq!(reused.plan_choices(), chosen.plan_choices());
    let miner = spawn_server("127.0.0.1:0", Arc::new(reused), ServeConfig::default()).unwrap();
    assert_encrypted_session_works(&f, miner);

    let refusal = |record: &[u8], identity: &ModelIdentity| match prepare(record, identity) {
        Ok(_) => panic!("a bad plan record was accepted"),
        Err(error) => error.to_string(),
    };
    let other = tiny_gguf(22);
    assert!(refusal(&record, &other.identity).contains("made for model sha256"));
    assert!(refusal(&record[..record.len() - 1], &f.identity).contains("truncated"));
    let mut longer = record.clone();
    longer.push(0);
    assert!(refusal(&longer, &f.identity).contains("1 bytes after them"));
    let tampered = |change: &dyn Fn(&mut Message)| {
        let (mut welcome, _) = wire::read_message(&mut record.as_slice()).unwrap();
        change(&mut welcome);
        let mut bytes = Vec::new();
        wire::write_message(&mut bytes, &welcome).unwrap();
        refusal(&bytes, &f.identity)
    };
    let other_weights = tampered(&|welcome| {
        if let Message::Welcome { weights_hash, .. } = welcome {
            weights_hash[0] ^= 1;
        }
    });
    assert!(other_weights.contains("other int8 weights"), "{other_weights}");
    let older = tampered(&|welcome| {
        if let Message::Welcome { version, .. } = welcome {
            *version -= 1;
        }
    });
    assert!(older.contains(&format!("protocol version {}", PROTOCOL_VERSION - 1)), "{older}");
    let short = tampered(&|welcome| {
        if let Message::Welcome { plans, .. } = welcome {
            plans.pop();
        }
    });
    assert!(short.contains("plans and 0 bytes after them"), "{short}");
    // A plan that decodes but does not fit these weights (its key switches' digits far too
    // wide for the noise budget) is refused when its matrix is encoded.
    let too_wide = tampered(&|welcome| {
        if let Message::Welcome { plans, .. } = welcome {
            plans[0].tree_digit_bits = 27;
        }
    });
    assert!(too_wide.contains("noise budget exceeded"), "{too_wide}");
}

#[test]
fn a_miner_that_squeezed_the_model_differently_is_refused_by_the_client() {
    let f = tiny_gguf(24);
    // The same file squeezed without the calibrated smoothing: other int8 weights.
    let float = LoadedModel::load(&f._dir.path().join("tiny.gguf")).unwrap().model;
    let unsmoothed = SqueezedModel::from_float(&float);
    let miner = MinerModel::prepare(&unsmoothed, f.identity.clone(), |_, _| {}).unwrap();
    let miner = spawn_server("127.0.0.1:0", Arc::new(miner), ServeConfig::default()).unwrap();
    let error = match EncryptedBackend::connect(miner, &f.model, &f.identity) {
        Ok(_) => panic!("a miner with other weights was accepted"),
        Err(error) => error,
    };
    assert!(matches!(error, ZkError::WeightsMismatch { .. }), "{error}");
    assert!(error.to_string().contains("squeezed the model differently"), "{error}");
    // The miner keeps serving clients whose weights are its own.
    let same = Fixture { model: unsmoothed, ..tiny_gguf(24) };
    assert_encrypted_session_works(&same, miner);
}

#[test]
fn a_wrong_protocol_version_gets_a_clear_error_and_the_miner_keeps_serving() {
    let f = tiny_gguf(31);
    let miner = start_miner(&f);
    let answers =
        raw_exchange(miner, &[Message::Hello { version: 99, model_hash: f.identity.hash }]);
    let text = error_text(&answers);
    assert!(text.contains("protocol version 99 is not supported"), "{text}");
    assert_encrypted_session_works(&f, miner);
}

/// A session that goes quiet is closed with a reason, and frees its place for others.
#[test]
fn an_idle_session_is_closed_and_the_miner_keeps_serving() {
    let f = tiny_gguf(35);
    let config = ServeConfig { idle_timeout: Duration::from_millis(300), ..ServeConfig::default() };
    let miner = start_miner_with(&f, config);
    let hello = Message::Hello { version: PROTOCOL_VERSION, model_hash: f.identity.hash };
    let welcomed = || {
        let mut stream = TcpStream::connect(miner).unwrap();
        wire::write_message(&mut stream, &hello).unwrap();
        assert!(matches!(wire::read_message(&mut stream).unwrap().0, Message::Welcome { .. }));
        stream
    };
    let mut stream = welcomed();
    // Nothing more is sent: the miner gives up on the session.
    let (answer, _) = wire::read_message(&mut stream).unwrap();
    assert!(
        matches!(&answer, Message::Error { message } if message.contains("idle timeout")),
        "{answer:?}"
    );
    assert!(matches!(wire::read_message(&mut stream), Err(wire::WireError::Closed)));
    // Still serving. (Not a whole encrypted session: making its keys may take longer than
    // this miner's 300 ms of patience on a loaded machine.)
    welcomed();
}

fn assert_encrypted_session_works(f: &Fixture, miner: SocketAddr) {
    let mut client = EncryptedBackend::connect(miner, &f.model, &f.identity).unwrap();
    let plain = generate(f, "still there?", 3, &mut PlainBackend::new(&f.model));
    assert_eq!(generate(f, "still there?", 3, &mut client), plain);
}

#[test]
fn garbage_bytes_cost_only_their_own_connection() {
    let f = tiny_gguf(32);
    let miner = start_miner(&f);
    let mut stream = TcpStream::connect(miner).unwrap();
    stream.write_all(&[5, 0, 0, 0, 0xff, 1, 2, 3, 4]).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (answer, _) = wire::read_message(&mut stream).unwrap();
    assert!(
        matches!(answer, Message::Error { message } if message.contains("unknown message tag 255"))
    );
    assert_encrypted_session_works(&f, miner);
}

/// What an honest client sends for layer 0: its Galois keys and one stage's encrypted input.
struct HonestSession {
    keys: Message,
    /// The same, but with tree keys for one automorphism no plan uses (X -> X^-1).
    useless_keys: Message,
    inputs: Vec<Vec<Vec<u8>>>,
}

/// The plans the miner announces are its deterministic choice for these weights, so a test can
/// make them itself.
fn honest_session(f: &Fixture, stage: Stage) -> HonestSession {
    use based_rlwe::{GaloisKeys, RhombusKeys, RhombusPlan, SecretKey, rhombus_encrypt_with_masks};
    use rand_core::SeedableRng;
    let stages: Vec<(based_rlwe::Params, RhombusPlan)> = (0..f.model.n_layers())
        .flat_map(|layer| based_zkllm::STAGES.map(|stage| (layer, stage)))
        .map(|(layer, stage)| {
            let m = f.model.matrix(layer, stage);
            let params = based_zkllm::stage_params(m).unwrap();
            let plan = RhombusPlan::choose(&params, m.cols, m.rows, &m.weights).unwrap();
            (params, plan)
        })
        .collect();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let key = SecretKey::generate(&stages[0].0, &mut rng);
    let plans: Vec<&RhombusPlan> = stages.iter().map(|(_, plan)| plan).collect();
    let keys = RhombusKeys::generate(&key, &plans, &mut rng).unwrap();
    let (params, plan) = &stages[based_zkllm::STAGES.iter().position(|s| *s == stage).unwrap()];
    let code = vec![3i8; plan.n_in()];
    let mask_seed = [8; 32];
    let masks = upload_mask_seeds(&mask_seed, 0, stage, 0, plan.upload_cts());
    let upload =
        rhombus_encrypt_with_masks(&key.with_params(params), plan, &code, &masks, &mut rng)
            .unwrap();
    let inverse = 2 * stages[0].0.ring_degree() - 1;
    let useless =
        GaloisKeys::generate(&key, &[inverse], keys.tree().digit_bits(), &mut rng).unwrap();
    let input = keys.input().map(|k| k.to_bytes());
    HonestSession {
        keys: Message::Keys { mask_seed, input: input.clone(), tree: keys.tree().to_bytes() },
        useless_keys: Message::Keys { mask_seed, input, tree: useless.to_bytes() },
        inputs: vec![vec![upload.to_bytes()]],
    }
}

fn honest_inputs(f: &Fixture, stage: Stage) -> Vec<Vec<Vec<u8>>> {
    honest_session(f, stage).inputs
}

/// Hello, the honest keys, then `requests`: the miner's error text.
fn hello_then(f: &Fixture, miner: SocketAddr, requests: &[Message]) -> String {
    let hello = Message::Hello { version: PROTOCOL_VERSION, model_hash: f.identity.hash };
    let mut frames = vec![hello, honest_session(f, Stage::Qkv).keys];
    frames.extend_from_slice(requests);
    let answers = raw_exchange(miner, &frames);
    assert!(matches!(answers.first(), Some(Message::Welcome { .. })));
    error_text(&answers)
}

#[test]
fn corrupted_and_mismatched_ciphertexts_are_rejected_clearly() {
    let f = tiny_gguf(33);
    let miner = start_miner(&f);

    let mut truncated = honest_inputs(&f, Stage::Qkv);
    truncated[0][0].pop();
    let text = hello_then(&f, miner, &[products(0, Stage::Qkv, truncated)]);
    assert!(text.starts_with("ciphertext rejected"), "{text}");

    let mut missing = honest_inputs(&f, Stage::Qkv);
    missing[0].pop();
    if !missing[0].is_empty() {
        let text = hello_then(&f, miner, &[products(0, Stage::Qkv, missing)]);
        assert!(text.contains("ciphertexts per vector"), "{text}");
    }

    // Inputs laid out for another stage's width.
    let text = hello_then(&f, miner, &[products(0, Stage::Down, honest_inputs(&f, Stage::Qkv))]);
    assert!(text.contains("ciphertext") || text.contains("layout"), "{text}");

    let text = hello_then(&f, miner, &[products(7, Stage::Qkv, honest_inputs(&f, Stage::Qkv))]);
    assert!(text.contains("layer 7 does not exist"), "{text}");

    // Masks that are not the session's upload 1 of the stage (they are upload 0's).
    let mut late = products(0, Stage::Qkv, honest_inputs(&f, Stage::Qkv));
    if let Message::Products { first_mask, .. } = &mut late {
        *first_mask = 1;
    }
    let text = hello_then(&f, miner, &[late]);
    assert!(text.contains("masks are not the ones the session's mask seed gives"), "{text}");

    // An index so large it could wrap: refused before anything is computed.
    let mut far = products(0, Stage::Qkv, honest_inputs(&f, Stage::Qkv));
    if let Message::Products { first_mask, .. } = &mut far {
        *first_mask = u64::MAX;
    }
    let text = hello_then(&f, miner, &[far]);
    assert!(text.contains("beyond the protocol's limit"), "{text}");

    // The same masks twice: the miner answers the first and refuses the second.
    let once = products(0, Stage::Qkv, honest_inputs(&f, Stage::Qkv));
    let text = hello_then(&f, miner, &[once.clone(), once]);
    assert!(text.contains("mask index 0 was already used (the next is 1)"), "{text}");

    assert_encrypted_session_works(&f, miner);
}

#[test]
fn products_before_keys_and_garbage_keys_are_refused_clearly() {
    let f = tiny_gguf(34);
    let miner = start_miner(&f);
    let hello = Message::Hello { version: PROTOCOL_VERSION, model_hash: f.identity.hash };

    let early = products(0, Stage::Qkv, honest_inputs(&f, Stage::Qkv));
    let text = error_text(&raw_exchange(miner, &[hello.clone(), early]));
    assert!(text.contains("expected Keys, got Products"), "{text}");

    let Message::Keys { mask_seed, input, mut tree } = honest_session(&f, Stage::Qkv).keys else {
        unreachable!()
    };
    tree.truncate(tree.len() / 2);
    let truncated = Message::Keys { mask_seed, input, tree };
    let text = error_text(&raw_exchange(miner, &[hello.clone(), truncated]));
    assert!(text.starts_with("ciphertext rejected"), "{text}");

    // Keys without the automorphisms the plans need: the product names the missing one.
    let session = honest_session(&f, Stage::Qkv);
    let request = products(0, Stage::Qkv, session.inputs);
    let answers = raw_exchange(miner, &[hello, session.useless_keys, request]);
    let text = error_text(&answers);
    assert!(text.contains("no key for the automorphism"), "{text}");

    assert_encrypted_session_works(&f, miner);
}

fn products(layer: u32, stage: Stage, inputs: Vec<Vec<Vec<u8>>>) -> Message {
    Message::Products { request_id: 0, layer, stage, first_mask: 0, inputs }
}

/// A miner that answers with well-formed but wrong ciphertexts: the client must notice.
#[test]
fn a_lying_miner_is_caught_by_the_client() {
    let f = tiny_gguf(41);
    let honest = start_miner(&f);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let liar = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut upstream = TcpStream::connect(honest).unwrap();
        loop {
            let Ok((request, _)) = wire::read_message(&mut client) else { return };
            wire::write_message(&mut upstream, &request).unwrap();
            if matches!(request, Message::Keys { .. }) {
                continue; // the only message the miner does not answer
            }
            let Ok((mut answer, _)) = wire::read_message(&mut upstream) else { return };
            if let Message::Results { outputs, .. } = &mut answer {
                // Keep each ciphertext's header so it still parses; scramble its coefficients.
                for ct in outputs.iter_mut().flatten() {
                    let header = ct.len() / 2;
                    for byte in ct.iter_mut().skip(header) {
                        *byte = byte.wrapping_mul(31).wrapping_add(7);
                    }
                }
            }
            wire::write_message(&mut client, &answer).unwrap();
        }
    });
    let mut client = EncryptedBackend::connect(liar, &f.model, &f.identity).unwrap();
    let tokens = f.tokenizer.encode_chat("You are terse.", "hi").unwrap();
    let error = Generator::new(&f.model)
        .generate(&tokens, 2, f.tokenizer.stop_tokens(), &mut client, &mut |_| {})
        .unwrap_err();
    assert!(error.to_string().contains("bound"), "unclear error for a lying miner: {error}");
}

#[test]
fn a_client_for_another_model_is_refused() {
    let served = tiny_gguf(51);
    let other = tiny_gguf(52);
    let miner = start_miner(&served);
    let error = EncryptedBackend::connect(miner, &other.model, &other.identity).err().unwrap();
    assert!(matches!(error, ZkError::Remote(ref m) if m.contains("serves model")), "{error}");
}

/// Several chats at once share the miner's cores; each still gets exactly its own products.
#[test]
fn concurrent_chats_each_stay_exact() {
    let f = Arc::new(tiny_gguf(61));
    let miner = start_miner(&f);
    let prompts = ["first user", "a second, longer question", "3", "four four four"];
    let chats: Vec<_> = prompts
        .iter()
        .map(|&prompt| {
            let f = Arc::clone(&f);
            std::thread::spawn(move || {
                let mut client = EncryptedBackend::connect(miner, &f.model, &f.identity).unwrap();
                let encrypted = generate(&f, prompt, 8, &mut client);
                (prompt, encrypted)
            })
        })
        .collect();
    for chat in chats {
        let (prompt, encrypted) = chat.join().unwrap();
        assert_eq!(encrypted, generate(&f, prompt, 8, &mut PlainBackend::new(&f.model)));
    }
}
