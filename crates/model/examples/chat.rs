//! Greedy chat with the squeezed model in plaintext:
//! `cargo run --release -p based-model --example chat -- MODEL.gguf "Your question"`.

use std::io::Write;
use std::time::Instant;

use based_model::{DEFAULT_SYSTEM_PROMPT, Generator, LoadedModel, PlainBackend, SqueezedModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(question)) = (args.get(1), args.get(2)) else {
        return Err("usage: chat MODEL_PATH QUESTION".into());
    };
    let loaded = LoadedModel::load(path.as_ref())?;
    let squeezed = SqueezedModel::from_float(&loaded.model);
    let prompt = loaded.tokenizer.encode_chat(DEFAULT_SYSTEM_PROMPT, question)?;
    let mut backend = PlainBackend::new(&squeezed);
    let mut generator = Generator::new(&squeezed);
    let start = Instant::now();
    let tokenizer = &loaded.tokenizer;
    // Decoding the whole reply each time keeps multi-byte characters split across tokens intact.
    let mut reply = Vec::new();
    let mut printed = 0;
    let generated =
        generator.generate(&prompt, 200, tokenizer.stop_tokens(), &mut backend, &mut |t| {
            reply.push(t);
            let text = tokenizer.decode(&reply).unwrap_or_default();
            if let Some(new) = text.get(printed..).filter(|new| !new.ends_with('\u{FFFD}')) {
                print!("{new}");
                printed = text.len();
                let _ = std::io::stdout().flush();
            }
        })?;
    println!("\n[{} tokens in {:.2?}]", generated.len(), start.elapsed());
    Ok(())
}
