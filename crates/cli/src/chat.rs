//! `based chat` and `based miner serve`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use based_model::{BackendError, ChatTokenizer, Generator, LinearBackend, PlainBackend, Stage};
use based_zkllm::{EncryptedBackend, MinerModel, ServeConfig, TrafficStats, ZkError};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::loaded::{self, LoadedModel};

#[derive(Args)]
pub struct ChatArgs {
    /// What to ask. Without it the chat is interactive: one message per line on stdin, each
    /// reply continuing the conversation, until end of input (Ctrl-D).
    pub prompt: Option<String>,
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
    /// Most tokens to generate per reply.
    #[arg(short = 'n', long, default_value_t = 48)]
    pub max_tokens: usize,
    /// System prompt of the chat template.
    #[arg(long, default_value = based_model::DEFAULT_SYSTEM_PROMPT)]
    pub system: String,
    /// Compute the system turn again instead of resuming its saved state
    /// ($BASED_HOME/chat-states), and do not save it.
    #[arg(long)]
    pub no_saved_state: bool,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let model = loaded::load(&args.model)?;
    if args.plain {
        let mut backend = PlainBackend::new(&model.squeezed);
        return converse(&model, &args, &mut backend, "plain", |_| Ok(String::new()));
    }
    let address = match (&args.miner, args.local) {
        (Some(address), _) => address.clone(),
        (None, true) => {
            let miner = prepare_miner(&model, true)?;
            based_zkllm::spawn_server("127.0.0.1:0", Arc::new(miner), ServeConfig::default())?
                .to_string()
        }
        (None, false) => {
            bail!("say where the miner is (--miner HOST:PORT), or use --local or --plain")
        }
    };
    let mut backend = Reconnecting::connect(address, &model)?;
    // The miner works ahead while the user types: each turn says how far it got.
    converse(&model, &args, &mut backend, "encrypted", |backend| {
        Ok(format!("; the miner had {} tokens precomputed", backend.tokens_ahead()?))
    })?;
    let stats = backend.close()?;
    eprintln!(
        "[session: {} rounds, {:.1} MB up, {:.1} MB down, client crypto {:.1} s]",
        stats.rounds,
        stats.bytes_up as f64 / 1e6,
        stats.bytes_down as f64 / 1e6,
        stats.client_crypto.as_secs_f64(),
    );
    Ok(())
}

/// An encrypted session that outlives the miner closing it (an idle timeout, a restart): the
/// conversation's state is the client's own, so a new session with fresh keys takes over where
/// the old one stopped, and the request that failed is sent again on it. A miner that refuses a
/// request (rather than losing the session) still ends the chat with its reason.
struct Reconnecting<'m> {
    address: String,
    model: &'m LoadedModel,
    session: EncryptedBackend,
    /// What the sessions before this one cost.
    earlier: TrafficStats,
}

impl<'m> Reconnecting<'m> {
    fn connect(address: String, model: &'m LoadedModel) -> Result<Self> {
        let session = Self::open(&address, model)?;
        Ok(Self { address, model, session, earlier: TrafficStats::default() })
    }

    fn open(address: &str, model: &LoadedModel) -> Result<EncryptedBackend> {
        EncryptedBackend::connect(address, &model.squeezed, &model.identity).with_context(|| {
            format!("cannot start an encrypted session with the miner at {address}")
        })
    }

    /// `request` on the session, or, if the session is lost, once more on a new one.
    fn retrying<T>(
        &mut self,
        request: impl Fn(&mut EncryptedBackend) -> Result<T, ZkError>,
    ) -> Result<T> {
        match request(&mut self.session) {
            Err(error) if error.is_lost_session() => {
                tracing::warn!(%error, miner = %self.address, "session lost; starting a new one");
                let fresh = Self::open(&self.address, self.model)?;
                self.earlier += std::mem::replace(&mut self.session, fresh).stats;
                Ok(request(&mut self.session)?)
            }
            result => Ok(result?),
        }
    }

    fn tokens_ahead(&mut self) -> Result<u32> {
        self.retrying(EncryptedBackend::tokens_ahead)
    }

    fn close(self) -> Result<TrafficStats> {
        let mut stats = self.earlier;
        stats += self.session.close()?;
        Ok(stats)
    }
}

impl LinearBackend for Reconnecting<'_> {
    fn products(
        &mut self,
        layer: usize,
        stage: Stage,
        codes: &[Vec<i8>],
    ) -> Result<Vec<Vec<i64>>, BackendError> {
        self.retrying(|session| session.exchange(layer, stage, codes))
            .map_err(|error| BackendError::new(format!("{error:#}")))
    }
}

/// The conversation: the prompt argument as one turn, or one turn per line of stdin. Each turn
/// continues the same KV cache (and, encrypted, the same session); after each reply a summary
/// line `[mode: N tokens in ...]` goes to stderr, `readiness` adding what the backend reports
/// just before the turn.
fn converse<B: LinearBackend>(
    model: &LoadedModel,
    args: &ChatArgs,
    backend: &mut B,
    mode: &str,
    readiness: impl Fn(&mut B) -> Result<String>,
) -> Result<()> {
    let interactive = args.prompt.is_none();
    if interactive && std::io::stdin().is_terminal() {
        eprintln!("interactive chat: one message per line, Ctrl-D to end");
    }
    // Before the first message: in an interactive chat, while the user types it.
    let (mut generator, mut system_turn) = start_conversation(model, args, backend)?;
    // None before the first reply; then the previous reply's last token, which greedy decoding
    // does not feed back (None if it generated nothing).
    let mut previous: Option<Option<u32>> = None;
    for message in turns(args)? {
        let message = message?;
        if message.trim().is_empty() {
            continue;
        }
        let user = ChatTokenizer::chat_prompt(&[("user", message.as_str())]);
        let tokens = match previous {
            None => model.tokenizer.encode(&user)?,
            Some(last) => {
                let mut tokens = assistant_turn_end(model, last)?;
                tokens.extend(model.tokenizer.encode(&format!("\n{user}"))?);
                tokens
            }
        };
        let ready = readiness(backend)?;
        let reply = reply(model, args, &mut generator, backend, &tokens)?;
        previous = Some(reply.generated.last().copied());
        // One forward pass per generated token but the first (from the prefill) and the last
        // (never fed back).
        let passes = reply.generated.len().saturating_sub(1).max(1);
        eprintln!(
            "[{mode}: {} tokens in {:.1} s ({:.2} s/token) after a {}-token prefill in {:.1} s{}{ready}]",
            reply.shown,
            reply.decode.as_secs_f64(),
            reply.decode.as_secs_f64() / passes as f64,
            tokens.len(),
            reply.prefill.as_secs_f64(),
            std::mem::take(&mut system_turn),
        );
        if interactive && std::io::stdin().is_terminal() {
            eprint!("> ");
        }
    }
    Ok(())
}

/// The tokens that close the previous assistant turn: the reply's last token (which greedy
/// decoding does not feed back) and `<|im_end|>`; just the former if it is `<|im_end|>`, just
/// the latter if it is another stop token or the reply was empty.
fn assistant_turn_end(model: &LoadedModel, last: Option<u32>) -> Result<Vec<u32>> {
    let im_end = model.tokenizer.encode("<|im_end|>")?;
    Ok(match last {
        Some(token) if im_end == [token] => im_end,
        Some(token) if model.tokenizer.stop_tokens().contains(&token) => im_end,
        Some(token) => [vec![token], im_end].concat(),
        None => im_end,
    })
}

/// A generator that has processed the chat's system turn: resumed from its saved state when
/// there is one for this model and system prompt, else computed through `backend` (and saved
/// for next time). Also says which, for the first turn's summary. The saved state is the
/// client's own (never sent anywhere); the exactness contract makes a state saved by a
/// plaintext chat the same, bit for bit, as an encrypted chat's.
fn start_conversation<'m>(
    model: &'m LoadedModel,
    args: &ChatArgs,
    backend: &mut dyn LinearBackend,
) -> Result<(Generator<'m>, String)> {
    let system = model.tokenizer.encode_system_turn(&args.system)?;
    let path = saved_state_path(model, &system);
    if !args.no_saved_state {
        let resumed = std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Ok(Generator::resume(&model.squeezed, &bytes)?));
        match resumed {
            Ok((resumed, saved)) if saved == system => {
                let how = format!(
                    "; system turn of {} tokens resumed from its saved state",
                    system.len()
                );
                return Ok((resumed, how));
            }
            Ok(_) => tracing::warn!(
                path = %path.display(),
                "saved chat state is for other tokens; recomputing"
            ),
            Err(error) if path.exists() => tracing::warn!(
                path = %path.display(),
                %error,
                "unusable saved chat state; recomputing"
            ),
            Err(_) => {}
        }
    }
    let started = Instant::now();
    let mut generator = Generator::new(&model.squeezed);
    generator.prefill(&system, backend)?;
    let mut how = format!(
        "; system turn of {} tokens computed in {:.1} s",
        system.len(),
        started.elapsed().as_secs_f64()
    );
    if !args.no_saved_state {
        // A cache: failing to write it costs the next chat time, not this one its reply.
        match write_whole(&path, &generator.saved_state(&system)?) {
            Ok(()) => how.push_str(" and saved"),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot save the chat state")
            }
        }
    }
    Ok((generator, how))
}

/// `$BASED_HOME/chat-states/<model hash>-<hash of the system turn's tokens>.bkv`.
fn saved_state_path(model: &LoadedModel, system: &[u32]) -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    system.iter().for_each(|t| hasher.update(t.to_le_bytes()));
    let tokens = based_zkllm::hex(&hasher.finalize()[..8]);
    let model_hash = based_zkllm::hex(&model.identity.hash[..8]);
    crate::fetch::cache_home().join("chat-states").join(format!("{model_hash}-{tokens}.bkv"))
}

/// Written whole or not at all: to a temporary name, then renamed.
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a cache file's path has a folder")?;
    std::fs::create_dir_all(dir)?;
    // Another process may be saving the same file right now: each writes its own.
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// The user's messages: the prompt argument, or stdin line by line.
fn turns(args: &ChatArgs) -> Result<Box<dyn Iterator<Item = Result<String>>>> {
    Ok(match &args.prompt {
        Some(prompt) => Box::new(std::iter::once(Ok(prompt.clone()))),
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("> ");
            }
            let lines = std::io::stdin().lines();
            Box::new(lines.map(|line| line.context("cannot read the next message from stdin")))
        }
    })
}

struct Reply {
    /// Every generated token, a final stop token included.
    generated: Vec<u32>,
    /// Tokens printed (the stop token is not).
    shown: usize,
    prefill: Duration,
    /// From the first token to the last.
    decode: Duration,
}

/// Generates one reply to `tokens`, streaming its text to stdout as tokens arrive.
fn reply(
    model: &LoadedModel,
    args: &ChatArgs,
    generator: &mut Generator<'_>,
    backend: &mut dyn LinearBackend,
    tokens: &[u32],
) -> Result<Reply> {
    let mut text_tokens = Vec::new();
    let mut printed = 0;
    let started = Instant::now();
    let mut first_token: Option<Instant> = None;
    let mut stdout = std::io::stdout();
    let generated = generator.generate(
        tokens,
        args.max_tokens,
        model.tokenizer.stop_tokens(),
        backend,
        &mut |token| {
            first_token.get_or_insert_with(Instant::now);
            text_tokens.push(token);
            // Decode the whole reply each time: a token can end in the middle of a UTF-8 character.
            if let Ok(text) = model.tokenizer.decode(&text_tokens)
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
    let finished = Instant::now();
    let first_token = first_token.unwrap_or(finished);
    Ok(Reply {
        generated,
        shown: text_tokens.len(),
        prefill: first_token - started,
        decode: finished - first_token,
    })
}

/// Encodes the model's weights for the ciphertext products. With `reuse_saved_plans`, the
/// plans saved by an earlier preparation of the same model (`$BASED_HOME/miner-plans`) are
/// taken instead of choosing them again, which is most of the time; a missing, stale or
/// damaged record falls back to choosing. Chosen plans are saved for the next start.
pub fn prepare_miner(model: &LoadedModel, reuse_saved_plans: bool) -> Result<MinerModel> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("encoding weights [{bar:30}] {pos}/{len} matrices")
            .expect("static template")
            .progress_chars("=> "),
    );
    let on_matrix = |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let started = Instant::now();
    let path = saved_plans_path(model);
    let reused = if reuse_saved_plans { from_saved_plans(model, &path, &on_matrix) } else { None };
    let (miner, how) = match reused {
        Some(miner) => (miner, "plans reused from"),
        None => {
            let miner = MinerModel::prepare(&model.squeezed, model.identity.clone(), on_matrix)?;
            // A cache: failing to write it costs the next start time, not this one.
            match write_whole(&path, &miner.plan_record()) {
                Ok(()) => (miner, "plans chosen and saved to"),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot save the plans");
                    (miner, "plans chosen, not saved to")
                }
            }
        }
    };
    bar.finish_and_clear();
    tracing::info!(
        encoded_mb = miner.encoded_bytes() / 1_000_000,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "weights encoded for ciphertext products ({how} {})",
        path.display()
    );
    Ok(miner)
}

/// The miner from the record at `path`, or None (with the reason logged unless there is no
/// record yet).
fn from_saved_plans(
    model: &LoadedModel,
    path: &std::path::Path,
    on_matrix: &(impl Fn(usize, usize) + Sync),
) -> Option<MinerModel> {
    let record = match std::fs::read(path) {
        Ok(record) => record,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the saved plans");
            return None;
        }
    };
    let identity = model.identity.clone();
    MinerModel::prepare_with_plan_record(&model.squeezed, identity, &record, on_matrix)
        .inspect_err(
            |error| tracing::warn!(path = %path.display(), %error, "choosing the plans again"),
        )
        .ok()
}

/// `$BASED_HOME/miner-plans/<model hash>-<weights fingerprint>.plans`: versions of based that
/// squeeze the model differently keep records of their own.
fn saved_plans_path(model: &LoadedModel) -> std::path::PathBuf {
    let model_hash = based_zkllm::hex(&model.identity.hash[..8]);
    let weights = based_zkllm::hex(&based_zkllm::weights_fingerprint(&model.squeezed)[..8]);
    crate::fetch::cache_home().join("miner-plans").join(format!("{model_hash}-{weights}.plans"))
}

pub fn serve_miner(model: &str, listen: &str, config: ServeConfig) -> Result<()> {
    let model = loaded::load(model)?;
    let miner = prepare_miner(&model, true)?;
    let tokens_ahead = config.precompute_bytes / miner.precomputed_bytes_per_token().max(1);
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    tracing::info!(
        model = %model.identity,
        %address,
        precompute_mib = config.precompute_bytes >> 20,
        tokens_ahead_per_session = tokens_ahead,
        precompute_total_mib = config.precompute_total_bytes >> 20,
        idle_timeout_s = config.idle_timeout.as_secs(),
        "miner serving (holds no secret key)"
    );
    // The first stdout line tells scripts (and tests using port 0) where to connect.
    println!("listening on {address}");
    std::io::stdout().flush()?;
    based_zkllm::serve(listener, Arc::new(miner), config)?;
    Ok(())
}
