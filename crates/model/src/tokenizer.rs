//! Byte-level BPE tokenizer (via the `tokenizers` crate) and the ChatML chat template.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::ModelError;
use crate::gguf::GgufFile;

/// The system prompt SmolLM2's own chat template inserts when none is given.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

const STOP_TOKEN_NAMES: [&str; 2] = ["<|im_end|>", "<|endoftext|>"];
/// ggml token types that are special (control) or user-defined tokens rather than BPE pieces.
const SPECIAL_TOKEN_TYPES: [i64; 2] = [3, 4];

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

pub struct ChatTokenizer {
    inner: Tokenizer,
    stop_tokens: Vec<u32>,
}

impl ChatTokenizer {
    fn with_stop_tokens(inner: Tokenizer, eos: Option<u32>) -> Self {
        let mut stop_tokens: Vec<u32> = eos.into_iter().collect();
        for id in STOP_TOKEN_NAMES.iter().filter_map(|t| inner.token_to_id(t)) {
            if !stop_tokens.contains(&id) {
                stop_tokens.push(id);
            }
        }
        Self { inner, stop_tokens }
    }

    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::with_stop_tokens(inner, None))
    }

    /// Builds SmolLM2-style byte-level BPE from the GGUF metadata: digits split one by one,
    /// no prefix space. Other pre-tokenizers (`tokenizer.ggml.pre`) are refused.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ModelError> {
        let strings = |key: &str| -> Result<Vec<&str>, ModelError> {
            gguf.meta(key)
                .and_then(|v| v.as_array())
                .ok_or_else(|| tok_err(format!("missing metadata array {key}")))?
                .iter()
                .map(|v| v.as_str().ok_or_else(|| tok_err(format!("{key} holds a non-string"))))
                .collect()
        };
        match gguf.meta("tokenizer.ggml.model").and_then(|v| v.as_str()) {
            Some("gpt2") => {}
            other => {
                return Err(tok_err(format!(
                    "unsupported tokenizer model {other:?} (only byte-level BPE)"
                )));
            }
        }
        // llama.cpp names the pre-tokenizer; only SmolLM2's (digits one by one, then byte-level
        // without prefix space) is built here, so others are refused rather than mis-tokenised.
        match gguf.meta("tokenizer.ggml.pre").and_then(|v| v.as_str()) {
            None | Some("smollm") => {}
            Some(other) => return Err(tok_err(format!("unsupported pre-tokenizer {other:?}"))),
        }
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| tok_err(format!("bad merge {m:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let types: Vec<i64> =
            match gguf.meta("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
                Some(items) => items.iter().map(|v| v.as_u64().map_or(-1, |t| t as i64)).collect(),
                None => Vec::new(),
            };
        let specials: Vec<&str> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| SPECIAL_TOKEN_TYPES.contains(t))
            .map(|(&token, _)| token)
            .collect();
        let inner = byte_level_bpe(&tokens, merges, &specials)?;
        let eos = gguf
            .meta("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok());
        Ok(Self::with_stop_tokens(inner, eos))
    }

    /// Builds the tokenizer from a vocabulary (id = position) and merges.
    pub fn from_vocab(
        tokens: &[&str],
        merges: Vec<(String, String)>,
        specials: &[&str],
    ) -> Result<Self, ModelError> {
        Ok(Self::with_stop_tokens(byte_level_bpe(tokens, merges, specials)?, None))
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self.inner.encode(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    /// Decodes, keeping special tokens in the text.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Tokens that end an assistant turn: the model's EOS, `<|im_end|>` and `<|endoftext|>`.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// ChatML: each `(role, content)` turn as `<|im_start|>role\ncontent<|im_end|>\n`, then the
    /// assistant header.
    pub fn chat_prompt(turns: &[(&str, &str)]) -> String {
        let mut prompt: String = turns.iter().map(|&(role, content)| turn(role, content)).collect();
        prompt.push_str("<|im_start|>assistant\n");
        prompt
    }

    /// Tokens of a chat's system turn: what every conversation with this system prompt starts
    /// with, in the same tokens as [`Self::encode_chat`] gives them (the special tokens cut the
    /// text there).
    pub fn encode_system_turn(&self, system: &str) -> Result<Vec<u32>, ModelError> {
        self.encode(&turn("system", system))
    }

    /// Tokens of a single-turn chat: the system prompt and the user's message.
    pub fn encode_chat(&self, system: &str, user: &str) -> Result<Vec<u32>, ModelError> {
        self.encode(&Self::chat_prompt(&[("system", system), ("user", user)]))
    }

    /// The `tokenizer.json` form (what a Hugging Face directory ships).
    pub fn to_json(&self) -> Result<String, ModelError> {
        self.inner.to_string(true).map_err(tok_err)
    }
}

/// One ChatML turn: `<|im_start|>role\ncontent<|im_end|>\n`.
fn turn(role: &str, content: &str) -> String {
    format!("<|im_start|>{role}\n{content}<|im_end|>\n")
}

fn byte_level_bpe(
    tokens: &[&str],
    merges: Vec<(String, String)>,
    specials: &[&str],
) -> Result<Tokenizer, ModelError> {
    let vocab: tokenizers::models::bpe::Vocab =
        tokens.iter().enumerate().map(|(id, &t)| (t.to_owned(), id as u32)).collect();
    if vocab.len() != tokens.len() {
        return Err(tok_err("duplicate tokens in the vocabulary"));
    }
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err)?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ])));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> =
        specials.iter().map(|&s| AddedToken::from(s.to_owned(), true)).collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}
