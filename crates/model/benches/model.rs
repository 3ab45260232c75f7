//! Plaintext speed and perplexity on SmolLM2-135M (BASED_MODEL_GGUF, default
//! /work/models/SmolLM2-135M-Instruct.Q4_1.gguf): `cargo bench -p based-model`.
//! Prints a table; decode rates use teacher-forced tokens so every run does the same work.
//! `-- --no-perplexity` skips the (slow) perplexity comparison.

use std::time::{Duration, Instant};

use based_model::{
    BackendError, FloatGenerator, Generator, LinearBackend, LoadedModel, NormGains, PlainBackend,
    SqueezedModel, Stage, float_perplexity, squeezed_perplexity,
};

const DEFAULT_MODEL: &str = "/work/models/SmolLM2-135M-Instruct.Q4_1.gguf";
const PREFILL_TOKENS: usize = 128;
const DECODE_TOKENS: usize = 64;
const PERPLEXITY_TOKENS: usize = 512;

/// Times the backend's share of a run, to split client work from product work.
struct Timed<'a> {
    inner: PlainBackend<'a>,
    spent: Duration,
}

impl LinearBackend for Timed<'_> {
    fn products(
        &mut self,
        layer: usize,
        stage: Stage,
        codes: &[Vec<i8>],
    ) -> Result<Vec<Vec<i64>>, BackendError> {
        let start = Instant::now();
        let out = self.inner.products(layer, stage, codes);
        self.spent += start.elapsed();
        out
    }
}

fn row(what: &str, tokens: usize, elapsed: Duration, note: &str) {
    let rate = tokens as f64 / elapsed.as_secs_f64();
    println!(
        "| {what:<40} | {tokens:>6} | {:>9.1} | {rate:>8.1} | {note}",
        elapsed.as_secs_f64() * 1e3
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("BASED_MODEL_GGUF").unwrap_or_else(|_| DEFAULT_MODEL.to_owned());
    if !std::path::Path::new(&path).is_file() {
        println!("note: {path} not found; set BASED_MODEL_GGUF to benchmark SmolLM2");
        return Ok(());
    }
    let start = Instant::now();
    let loaded = LoadedModel::load(path.as_ref())?;
    let load = start.elapsed();
    let start = Instant::now();
    let squeezed = SqueezedModel::from_float(&loaded.model);
    let squeeze = start.elapsed();
    let start = Instant::now();
    let calibrated = loaded.squeeze()?;
    let calibration = start.elapsed();
    println!(
        "load + dequantise {load:.2?}, squeeze {squeeze:.2?}, calibrated squeeze {calibration:.2?}\n"
    );

    let text = include_str!("../data/eval.txt");
    let tokens = loaded.tokenizer.encode(text)?;
    let prompt = &tokens[..PREFILL_TOKENS];
    let forced = &tokens[PREFILL_TOKENS..PREFILL_TOKENS + DECODE_TOKENS];

    println!("| {:<40} | tokens | time (ms) | tokens/s | note", "run");
    println!("|{:-<42}|{:-<8}|{:-<11}|{:-<10}|------", "", "", "", "");
    for (name, threads, model) in
        [("squeezed", 1, &squeezed), ("squeezed", 2, &squeezed), ("calibrated", 2, &calibrated)]
    {
        let mut backend =
            Timed { inner: PlainBackend::with_threads(model, threads), spent: Duration::ZERO };
        let mut generator = Generator::new(model);
        let start = Instant::now();
        generator.prefill(prompt, &mut backend)?;
        row(
            &format!("{name} prefill, backend {threads} thread(s)"),
            prompt.len(),
            start.elapsed(),
            "",
        );
        backend.spent = Duration::ZERO;
        let start = Instant::now();
        for &t in forced {
            generator.step(t, &mut backend)?;
        }
        let elapsed = start.elapsed();
        let client_ms = (elapsed - backend.spent).as_secs_f64() * 1e3 / forced.len() as f64;
        let note = format!("client side {client_ms:.2} ms/token (incl. LM head)");
        row(&format!("{name} decode, backend {threads} thread(s)"), forced.len(), elapsed, &note);
    }
    let head = squeezed.lm_head();
    let codes = vec![(0..head.cols).map(|i| (i % 255) as i8).collect::<Vec<i8>>()];
    let start = Instant::now();
    for _ in 0..DECODE_TOKENS {
        std::hint::black_box(head.products(&codes, 1));
    }
    row("client LM head product alone, 1 thread", DECODE_TOKENS, start.elapsed(), "");
    let mut float = FloatGenerator::new(&loaded.model);
    let start = Instant::now();
    float.prefill(prompt)?;
    row("float prefill", prompt.len(), start.elapsed(), "");
    let start = Instant::now();
    for &t in forced {
        float.prefill(&[t])?;
    }
    row("float decode", forced.len(), start.elapsed(), "");

    if std::env::args().any(|a| a == "--no-perplexity") {
        return Ok(());
    }
    let eval = &tokens[..PERPLEXITY_TOKENS.min(tokens.len())];
    let float_ppl = float_perplexity(&loaded.model, eval)?;
    let squeezed_ppl = squeezed_perplexity(&squeezed, eval, &mut PlainBackend::new(&squeezed))?;
    let folded = SqueezedModel::from_float_with(&loaded.model, NormGains::Folded);
    let folded_ppl = squeezed_perplexity(&folded, eval, &mut PlainBackend::new(&folded))?;
    let calibrated_ppl =
        squeezed_perplexity(&calibrated, eval, &mut PlainBackend::new(&calibrated))?;
    println!("\nperplexity on the first {} tokens of data/eval.txt:", eval.len());
    println!("  float {float_ppl:.3}");
    println!(
        "  squeezed, gains client-side {squeezed_ppl:.3} ({:+.2}%)",
        (squeezed_ppl / float_ppl - 1.0) * 100.0
    );
    println!(
        "  squeezed, gains folded      {folded_ppl:.3} ({:+.2}%)",
        (folded_ppl / float_ppl - 1.0) * 100.0
    );
    println!(
        "  squeezed, calibrated         {calibrated_ppl:.3} ({:+.2}%)",
        (calibrated_ppl / float_ppl - 1.0) * 100.0
    );
    let float_all = float_perplexity(&loaded.model, &tokens)?;
    let plain_all = squeezed_perplexity(&squeezed, &tokens, &mut PlainBackend::new(&squeezed))?;
    let calibrated_all =
        squeezed_perplexity(&calibrated, &tokens, &mut PlainBackend::new(&calibrated))?;
    println!(
        "on all {} tokens: float {float_all:.3}, squeezed {plain_all:.3} ({:+.2}%), calibrated {calibrated_all:.3} ({:+.2}%)",
        tokens.len(),
        (plain_all / float_all - 1.0) * 100.0,
        (calibrated_all / float_all - 1.0) * 100.0
    );
    Ok(())
}
