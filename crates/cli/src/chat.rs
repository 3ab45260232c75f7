//! `based chat` and `based miner serve`.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use based_model::{Generator, LinearBackend, PlainBackend};
use based_zkllm::{EncryptedBackend, MinerModel, ServeConfig};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::loaded::{self, LoadedModel};

#[derive(Args)]
pub struct ChatArgs {
    /// What to ask.
    pub prompt: String,
    /// Address of a miner started with `based miner serve`.
    #[arg(long, conflicts_with = "local")]
    pub miner: Option<String>,
    /// Start a miner inside this process (on a loopback socket) and chat with it.
    #[arg(long)]
    pub local: bool,
    /// Skip encryption and run the same squeezed model in plaintext, for comparison.
    #[arg(long, conflicts_with_all = ["miner", "local"])]
    pub plain: bool,
    /// A known model name or a path to a .gguf file or Hugging Face folder; it must be the
    /// miner's model.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Most tokens to generate.
    #[arg(short = 'n', long, default_value_t = 48)]
    pub max_tokens: usize,
    /// System prompt of the chat template.
    #[arg(long, default_value = based_model::DEFAULT_SYSTEM_PROMPT)]
    pub system: String,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let model = loaded::load(&args.model)?;
    if args.plain {
        let mut backend = PlainBackend::new(&model.squeezed);
        let (generated, elapsed) = chat(&model, &args, &mut backend)?;
        eprintln!("[plain: {}]", speed(generated, elapsed));
        return Ok(());
    }
    let address = match (&args.miner, args.local) {
        (Some(address), _) => address.clone(),
        (None, true) => {
            let miner = prepare_miner(&model)?;
            based_zkllm::spawn_server("127.0.0.1:0", Arc::new(miner), ServeConfig::default())?
                .to_string()
        }
        (None, false) => {
            bail!("say where the miner is (--miner HOST:PORT), or use --local or --plain")
        }
    };
    let mut backend = EncryptedBackend::connect(&address, &model.squeezed, &model.identity)
        .with_context(|| {
            format!("cannot start an encrypted session with the miner at {address}")
        })?;
    let (generated, elapsed) = chat(&model, &args, &mut backend)?;
    let stats = backend.close()?;
    eprintln!(
        "[encrypted: {}, {} rounds, {:.1} MB up, {:.1} MB down, client crypto {:.1} s]",
        speed(generated, elapsed),
        stats.rounds,
        stats.bytes_up as f64 / 1e6,
        stats.bytes_down as f64 / 1e6,
        stats.client_crypto.as_secs_f64(),
    );
    Ok(())
}

fn speed(generated: usize, elapsed: std::time::Duration) -> String {
    let per_token = elapsed.as_secs_f64() / generated.max(1) as f64;
    format!("{generated} tokens in {:.1} s ({per_token:.2} s/token)", elapsed.as_secs_f64())
}

/// Generates a reply, streaming text to stdout as tokens arrive.
fn chat(
    model: &LoadedModel,
    args: &ChatArgs,
    backend: &mut dyn LinearBackend,
) -> Result<(usize, std::time::Duration)> {
    let prompt_tokens = model.tokenizer.encode_chat(&args.system, &args.prompt)?;
    let mut generator = Generator::new(&model.squeezed);
    let mut reply = Vec::new();
    let mut printed = 0;
    let started = Instant::now();
    let mut stdout = std::io::stdout();
    generator.generate(
        &prompt_tokens,
        args.max_tokens,
        model.tokenizer.stop_tokens(),
        backend,
        &mut |token| {
            reply.push(token);
            // Decode the whole reply each time: a token can end in the middle of a UTF-8 character.
            if let Ok(text) = model.tokenizer.decode(&reply)
                && text.len() > printed
                && text.is_char_boundary(printed)
            {
                let _ = write!(stdout, "{}", &text[printed..]);
                let _ = stdout.flush();
                printed = text.len();
            }
        },
    )?;
    println!();
    Ok((reply.len(), started.elapsed()))
}

pub fn prepare_miner(model: &LoadedModel) -> Result<MinerModel> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("encoding weights [{bar:30}] {pos}/{len} matrices")
            .expect("static template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let miner = MinerModel::prepare(&model.squeezed, model.identity.clone(), |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    tracing::info!(
        encoded_mb = miner.encoded_bytes() / 1_000_000,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "weights encoded for ciphertext products"
    );
    Ok(miner)
}

pub fn serve_miner(model: &str, listen: &str, config: ServeConfig) -> Result<()> {
    let model = loaded::load(model)?;
    let miner = prepare_miner(&model)?;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    tracing::info!(
        model = %model.identity,
        %address,
        precompute_mib = config.precompute_bytes >> 20,
        "miner serving (holds no secret key)"
    );
    // The first stdout line tells scripts (and tests using port 0) where to connect.
    println!("listening on {address}");
    std::io::stdout().flush()?;
    based_zkllm::serve(listener, Arc::new(miner), config)?;
    Ok(())
}
