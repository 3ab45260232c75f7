//! Tests on the real SmolLM2-135M-Instruct GGUF; skipped unless BASED_MODEL_GGUF names it.

use std::path::PathBuf;
use std::sync::OnceLock;

use based_model::gguf::GgufFile;
use based_model::{
    ChatTokenizer, DEFAULT_SYSTEM_PROMPT, FloatGenerator, FloatModel, Generator, LlamaConfig,
    NormGains, PlainBackend, SqueezedModel, content_hash, float_perplexity, squeezed_perplexity,
};

const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

struct Real {
    path: PathBuf,
    gguf: GgufFile,
    float: FloatModel,
    squeezed: SqueezedModel,
    tokenizer: ChatTokenizer,
}

fn real() -> Option<&'static Real> {
    static REAL: OnceLock<Option<Real>> = OnceLock::new();
    REAL.get_or_init(|| {
        let path = PathBuf::from(std::env::var_os("BASED_MODEL_GGUF")?);
        if !path.is_file() {
            return None;
        }
        let gguf = GgufFile::read(&path).expect("read SmolLM2");
        let float = FloatModel::from_gguf(&gguf).expect("load SmolLM2");
        let squeezed = SqueezedModel::from_float(&float);
        let tokenizer = ChatTokenizer::from_gguf(&gguf).expect("SmolLM2 tokenizer");
        Some(Real { path, gguf, float, squeezed, tokenizer })
    })
    .as_ref()
    .or_else(|| {
        eprintln!("note: BASED_MODEL_GGUF unset or missing; skipping the SmolLM2 test");
        None
    })
}

#[test]
fn file_has_the_expected_shape_types_and_hash() {
    let Some(real) = real() else { return };
    assert_eq!(content_hash(std::slice::from_ref(&real.path)).unwrap(), SHA256);
    assert_eq!(
        real.float.config,
        LlamaConfig { max_seq_len: real.float.config.max_seq_len, ..LlamaConfig::smollm2_135m() }
    );
    let type_of = |name: &str| real.gguf.tensor_info(name).unwrap().type_id;
    assert_eq!(type_of("token_embd.weight"), 8, "Q8_0 embeddings");
    for t in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
        assert_eq!(type_of(&format!("blk.7.{t}.weight")), 3, "{t} is Q4_1");
    }
    assert!(real.gguf.tensor_info("output.weight").is_none(), "tied embeddings");
    assert_eq!(real.squeezed.matrix(0, based_model::Stage::Qkv).rows, 576 + 2 * 192);
    assert_eq!(real.squeezed.matrix(0, based_model::Stage::GateUp).rows, 2 * 1536);
}

#[test]
fn tokenizer_matches_smollm2() {
    let Some(real) = real() else { return };
    let t = &real.tokenizer;
    let id = |s: &str| t.token_id(s).unwrap();
    assert_eq!((id("<|endoftext|>"), id("<|im_start|>"), id("<|im_end|>")), (0, 1, 2));
    assert_eq!(t.stop_tokens()[..], [2, 0]);
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(t.encode("Hello world").unwrap(), vec![id("Hello"), id("Ġworld")]);
    assert_eq!(t.encode("Hello world").unwrap(), [19556, 905]);
    assert_eq!(
        t.encode("What is the capital of France?").unwrap(),
        [1780, 314, 260, 3575, 282, 4649, 47]
    );
    assert_eq!(t.encode("<|im_start|>system\nYou are").unwrap(), [1, 9690, 198, 2683, 359]);
    assert_eq!(t.encode("2024").unwrap(), vec![id("2"), id("0"), id("2"), id("4")]);
    assert_eq!(t.encode("<|im_start|>user").unwrap(), vec![1, id("user")]);
    // `based chat` resumes the system turn's saved state: its tokens must begin every chat.
    let system = t.encode_system_turn(based_model::DEFAULT_SYSTEM_PROMPT).unwrap();
    let chat = t.encode_chat(based_model::DEFAULT_SYSTEM_PROMPT, "Hi there").unwrap();
    assert_eq!(chat[..system.len()], system[..]);
    for text in [
        "It is a truth universally acknowledged.",
        "naïve café — 東京 🚀 x=3.14\n\ttabs",
        " leading space",
    ] {
        assert_eq!(t.decode(&t.encode(text).unwrap()).unwrap(), text);
    }
}

#[test]
fn squeezed_and_float_models_answer_a_simple_question() {
    let Some(real) = real() else { return };
    let prompt = real
        .tokenizer
        .encode_chat(DEFAULT_SYSTEM_PROMPT, "What is the capital of France?")
        .unwrap();
    let stops = real.tokenizer.stop_tokens();
    let mut backend = PlainBackend::new(&real.squeezed);
    let squeezed = Generator::new(&real.squeezed)
        .generate(&prompt, 24, stops, &mut backend, &mut |_| {})
        .unwrap();
    let float = FloatGenerator::new(&real.float).generate(&prompt, 24, stops, &mut |_| {}).unwrap();
    let answer = real.tokenizer.decode(&squeezed).unwrap();
    assert!(answer.contains("Paris"), "{answer:?}");
    assert_eq!(squeezed, float, "greedy replies should agree on this prompt");
}

#[test]
fn squeezing_costs_little_perplexity() {
    let Some(real) = real() else { return };
    let text = include_str!("../data/eval.txt");
    let tokens = &real.tokenizer.encode(text).unwrap()[..160];
    let float = float_perplexity(&real.float, tokens).unwrap();
    let squeezed_ppl =
        |m: &SqueezedModel| squeezed_perplexity(m, tokens, &mut PlainBackend::new(m)).unwrap();
    let client_side = squeezed_ppl(&real.squeezed);
    let folded = squeezed_ppl(&SqueezedModel::from_float_with(&real.float, NormGains::Folded));
    eprintln!(
        "perplexity on 160 tokens: float {float:.3}, squeezed {client_side:.3} (gains folded: {folded:.3})"
    );
    assert!(float > 1.0 && float < 40.0, "float perplexity {float}");
    assert!(
        client_side / float < 1.05 && client_side < folded,
        "float {float}, squeezed {client_side}"
    );
}

/// The calibrated squeezing (SmoothQuant factors from `data/calibration.txt` in the chat
/// template, f32 LM head input) stays within 2% of float perplexity on 512 tokens of the
/// evaluation text (plain squeezing: +3.08%), and still answers the README's question like the
/// float model (factors calibrated on prose alone did not).
#[test]
fn calibrated_squeezing_stays_within_two_percent_of_float() {
    let Some(real) = real() else { return };
    let loaded = based_model::LoadedModel::load(&real.path).unwrap();
    let calibrated = loaded.squeeze().unwrap();
    let tokens = &real.tokenizer.encode(include_str!("../data/eval.txt")).unwrap()[..512];
    let float = float_perplexity(&real.float, tokens).unwrap();
    let squeezed =
        squeezed_perplexity(&calibrated, tokens, &mut PlainBackend::new(&calibrated)).unwrap();
    eprintln!("perplexity on 512 tokens: float {float:.3}, calibrated squeezed {squeezed:.3}");
    assert!(squeezed / float < 1.02, "float {float}, calibrated squeezed {squeezed}");

    let prompt = real
        .tokenizer
        .encode_chat(DEFAULT_SYSTEM_PROMPT, "What is the capital of France?")
        .unwrap();
    let stops = real.tokenizer.stop_tokens();
    let reply = Generator::new(&calibrated)
        .generate(&prompt, 24, stops, &mut PlainBackend::new(&calibrated), &mut |_| {})
        .unwrap();
    let float_reply =
        FloatGenerator::new(&real.float).generate(&prompt, 24, stops, &mut |_| {}).unwrap();
    assert_eq!(reply, float_reply, "{:?}", real.tokenizer.decode(&reply));
}
