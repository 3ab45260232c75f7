//! The client/miner wire format: length-prefixed frames over a byte stream.
//!
//! Every frame is `u32 length (LE) | u8 tag | body`. Ciphertexts travel as opaque, equally sized
//! byte strings; their meaning is checked by `based-rlwe` when they are decoded. Decoding is strict:
//! a frame that is truncated, oversized, has trailing bytes or an unknown tag is an error, never a
//! panic, so a peer speaking garbage costs only its own connection.

use std::io::{self, Read, Write};

use based_model::Stage;

/// Bumped on any change of the frame layout or of the cryptographic parameter choice.
pub const PROTOCOL_VERSION: u16 = 5;

/// A frame larger than this is refused before it is read: it bounds what a peer can make us
/// allocate. One SmolLM2 prefill stage of 512 tokens stays well below it.
pub const MAX_FRAME_BYTES: u32 = 512 << 20;

/// Bounds both dimensions of a batch (tokens per request, ciphertexts per vector), so that a
/// header cannot make us allocate what the frame does not carry.
pub const MAX_BATCH_VECTORS: usize = 1 << 16;

/// The ciphertexts of one product request or answer: `vectors[v][c]` is ciphertext `c` of input
/// (or output) vector `v`, every ciphertext the same length.
pub type CiphertextBatch = Vec<Vec<Vec<u8>>>;

/// Bytes of one [`PlanChoice`] in Welcome.
const PLAN_CHOICE_BYTES: usize = 6;

/// The public parameter set both ends must agree on before any ciphertext is exchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamsSummary {
    pub ring_degree: u32,
    pub ciphertext_modulus: u64,
}

/// How the miner computes one stage's product (`based_rlwe::RhombusPlan`'s free choices; the
/// shapes come from the model both ends hold). The client needs them to encrypt, to make the
/// Galois keys and to decrypt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanChoice {
    /// Each stage has its own t, just above its weights' largest product.
    pub log2_plaintext_modulus: u8,
    /// How the input's columns are uploaded: 0 padded to a power of two, 1 split into a power
    /// of two and the rest (`based_rlwe::ColumnLayout`).
    pub column_layout: u8,
    /// Of the widest column part.
    pub log2_input_conjugates: u8,
    pub upload_bits: u8,
    /// 0 when the plan has no input conjugates.
    pub input_digit_bits: u8,
    pub tree_digit_bits: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client -> miner, first frame: which protocol and which model the client expects.
    Hello { version: u16, model_hash: [u8; 32] },
    /// Miner -> client: the miner's model and parameters (the client checks they match its
    /// own) and its plan for every stage, layer by layer in `STAGES` order.
    Welcome {
        version: u16,
        model_hash: [u8; 32],
        /// `crate::weights_fingerprint` of the int8 weights the miner multiplies by.
        weights_hash: [u8; 32],
        model_name: String,
        layers: u32,
        params: ParamsSummary,
        plans: Vec<PlanChoice>,
    },
    /// Client -> miner, once after Welcome: the seed every upload's masks are derived from
    /// (`crate::masks`), so the miner can precompute their share ahead, and the Galois keys the
    /// plans need (serialised `based_rlwe::GaloisKeys`; `input` only if some plan has input
    /// conjugates).
    Keys { mask_seed: [u8; 32], input: Option<Vec<u8>>, tree: Vec<u8> },
    /// Client -> miner: encrypted activations for one linear stage of one layer. Vector i's
    /// masks have index `first_mask + i` in the stage's mask sequence; indices only grow.
    Products { request_id: u32, layer: u32, stage: Stage, first_mask: u64, inputs: CiphertextBatch },
    /// Miner -> client: the encrypted products, in the order of the inputs.
    Results { request_id: u32, outputs: CiphertextBatch },
    /// Client -> miner: how many tokens ahead are the masks' shares precomputed?
    Readiness,
    /// Miner -> client: the answer to Readiness: every stage has at least this many of its
    /// next uploads' masks precomputed.
    Ready { tokens_ahead: u32 },
    /// Either way: the request (or the session) failed; the message says why.
    Error { message: String },
    /// Client -> miner: the chat is over.
    Bye,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    // The message includes the cause, so it is not also chained as the source (see ZkError::Io).
    #[error("connection error: {0}")]
    Io(io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer sent nothing within the idle timeout")]
    Idle,
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    Oversized(u64),
    #[error("frame truncated: needed {needed} more bytes for {what}")]
    Truncated { what: &'static str, needed: usize },
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("unknown linear stage {0}")]
    UnknownStage(u8),
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    #[error("batch of {vectors} vectors x {per_vector} ciphertexts does not fit the frame")]
    BatchTooLarge { vectors: usize, per_vector: usize },
    #[error("a batch declares a ciphertext of zero bytes")]
    EmptyCiphertext,
    #[error("text field is not UTF-8")]
    BadText,
    #[error("an optional field's flag is {0}, not 0 or 1")]
    BadFlag(u8),
}

const TAG_HELLO: u8 = 1;
const TAG_WELCOME: u8 = 2;
const TAG_PRODUCTS: u8 = 3;
const TAG_RESULTS: u8 = 4;
const TAG_ERROR: u8 = 5;
const TAG_BYE: u8 = 6;
const TAG_KEYS: u8 = 7;
const TAG_READINESS: u8 = 8;
const TAG_READY: u8 = 9;

fn stage_code(stage: Stage) -> u8 {
    match stage {
        Stage::Qkv => 0,
        Stage::AttnOut => 1,
        Stage::GateUp => 2,
        Stage::Down => 3,
    }
}

fn stage_from_code(code: u8) -> Result<Stage, WireError> {
    Ok(match code {
        0 => Stage::Qkv,
        1 => Stage::AttnOut,
        2 => Stage::GateUp,
        3 => Stage::Down,
        other => return Err(WireError::UnknownStage(other)),
    })
}

impl From<io::Error> for WireError {
    fn from(error: io::Error) -> Self {
        WireError::Io(error)
    }
}

impl Message {
    /// The message's name, for errors that must not dump a whole ciphertext batch.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Welcome { .. } => "Welcome",
            Message::Keys { .. } => "Keys",
            Message::Products { .. } => "Products",
            Message::Results { .. } => "Results",
            Message::Readiness => "Readiness",
            Message::Ready { .. } => "Ready",
            Message::Error { .. } => "Error",
            Message::Bye => "Bye",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Message::Hello { version, model_hash } => {
                out.push(TAG_HELLO);
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(model_hash);
            }
            Message::Welcome {
                version,
                model_hash,
                weights_hash,
                model_name,
                layers,
                params,
                plans,
            } => {
                out.push(TAG_WELCOME);
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(model_hash);
                out.extend_from_slice(weights_hash);
                put_text(&mut out, model_name);
                out.extend_from_slice(&layers.to_le_bytes());
                out.extend_from_slice(&params.ring_degree.to_le_bytes());
                out.extend_from_slice(&params.ciphertext_modulus.to_le_bytes());
                out.extend_from_slice(&(plans.len() as u32).to_le_bytes());
                for plan in plans {
                    out.extend_from_slice(&[
                        plan.log2_plaintext_modulus,
                        plan.column_layout,
                        plan.log2_input_conjugates,
                        plan.upload_bits,
                        plan.input_digit_bits,
                        plan.tree_digit_bits,
                    ]);
                }
            }
            Message::Keys { mask_seed, input, tree } => {
                out.push(TAG_KEYS);
                out.extend_from_slice(mask_seed);
                match input {
                    Some(keys) => {
                        out.push(1);
                        put_bytes(&mut out, keys);
                    }
                    None => out.push(0),
                }
                put_bytes(&mut out, tree);
            }
            Message::Products { request_id, layer, stage, first_mask, inputs } => {
                out.push(TAG_PRODUCTS);
                out.extend_from_slice(&request_id.to_le_bytes());
                out.extend_from_slice(&layer.to_le_bytes());
                out.push(stage_code(*stage));
                out.extend_from_slice(&first_mask.to_le_bytes());
                put_batch(&mut out, inputs);
            }
            Message::Results { request_id, outputs } => {
                out.push(TAG_RESULTS);
                out.extend_from_slice(&request_id.to_le_bytes());
                put_batch(&mut out, outputs);
            }
            Message::Readiness => out.push(TAG_READINESS),
            Message::Ready { tokens_ahead } => {
                out.push(TAG_READY);
                out.extend_from_slice(&tokens_ahead.to_le_bytes());
            }
            Message::Error { message } => {
                out.push(TAG_ERROR);
                put_text(&mut out, message);
            }
            Message::Bye => out.push(TAG_BYE),
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader { bytes };
        let message = match r.u8("message tag")? {
            TAG_HELLO => {
                Message::Hello { version: r.u16("version")?, model_hash: r.array("model hash")? }
            }
            TAG_WELCOME => Message::Welcome {
                version: r.u16("version")?,
                model_hash: r.array("model hash")?,
                weights_hash: r.array("weights fingerprint")?,
                model_name: r.text()?,
                layers: r.u32("layer count")?,
                params: ParamsSummary {
                    ring_degree: r.u32("ring degree")?,
                    ciphertext_modulus: r.u64("ciphertext modulus")?,
                },
                plans: r.plans()?,
            },
            TAG_KEYS => {
                let mask_seed = r.array("mask seed")?;
                let input = match r.u8("input keys flag")? {
                    0 => None,
                    1 => Some(r.bytes("input Galois keys")?),
                    other => return Err(WireError::BadFlag(other)),
                };
                Message::Keys { mask_seed, input, tree: r.bytes("tree Galois keys")? }
            }
            TAG_PRODUCTS => Message::Products {
                request_id: r.u32("request id")?,
                layer: r.u32("layer")?,
                stage: stage_from_code(r.u8("stage")?)?,
                first_mask: r.u64("first mask index")?,
                inputs: r.batch()?,
            },
            TAG_RESULTS => {
                Message::Results { request_id: r.u32("request id")?, outputs: r.batch()? }
            }
            TAG_READINESS => Message::Readiness,
            TAG_READY => Message::Ready { tokens_ahead: r.u32("tokens ahead")? },
            TAG_ERROR => Message::Error { message: r.text()? },
            TAG_BYE => Message::Bye,
            other => return Err(WireError::UnknownTag(other)),
        };
        if !r.bytes.is_empty() {
            return Err(WireError::TrailingBytes(r.bytes.len()));
        }
        Ok(message)
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_bytes(out, text.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Batches are rectangular (every vector has as many ciphertexts), so the shape is written once;
/// each ciphertext carries its own length, since a stage's last output block may be shorter.
fn put_batch(out: &mut Vec<u8>, batch: &CiphertextBatch) {
    let per_vector = batch.first().map_or(0, Vec::len);
    debug_assert!(batch.iter().all(|v| v.len() == per_vector), "ragged ciphertext batch");
    out.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    out.extend_from_slice(&(per_vector as u32).to_le_bytes());
    for ct in batch.iter().flatten() {
        out.extend_from_slice(&(ct.len() as u32).to_le_bytes());
        out.extend_from_slice(ct);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < len {
            return Err(WireError::Truncated { what, needed: len - self.bytes.len() });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn text(&mut self) -> Result<String, WireError> {
        String::from_utf8(self.bytes("text")?).map_err(|_| WireError::BadText)
    }
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, WireError> {
        let len = self.u32(what)? as usize;
        Ok(self.take(len, what)?.to_vec())
    }
    fn plans(&mut self) -> Result<Vec<PlanChoice>, WireError> {
        let count = self.u32("plan count")? as usize;
        let raw = self.take(count.saturating_mul(PLAN_CHOICE_BYTES), "plans")?;
        Ok(raw
            .chunks_exact(PLAN_CHOICE_BYTES)
            .map(|c| PlanChoice {
                log2_plaintext_modulus: c[0],
                column_layout: c[1],
                log2_input_conjugates: c[2],
                upload_bits: c[3],
                input_digit_bits: c[4],
                tree_digit_bits: c[5],
            })
            .collect())
    }
    fn batch(&mut self) -> Result<CiphertextBatch, WireError> {
        let vectors = self.u32("vector count")? as usize;
        let per_vector = self.u32("ciphertexts per vector")? as usize;
        // Every ciphertext costs at least its 4-byte length: a header claiming more than the
        // frame can hold is refused before anything is allocated for it.
        if vectors > MAX_BATCH_VECTORS
            || per_vector > MAX_BATCH_VECTORS
            || vectors * per_vector > self.bytes.len() / 4
        {
            return Err(WireError::BatchTooLarge { vectors, per_vector });
        }
        (0..vectors)
            .map(|_| {
                (0..per_vector)
                    .map(|_| {
                        let len = self.u32("ciphertext length")? as usize;
                        if len == 0 {
                            return Err(WireError::EmptyCiphertext);
                        }
                        Ok(self.take(len, "ciphertext")?.to_vec())
                    })
                    .collect()
            })
            .collect()
    }
}

/// What [`read_message`] reserves before a frame's body arrives (decode uploads and results
/// fit; larger frames grow as they are read).
const BODY_CAPACITY_UP_FRONT: usize = 1 << 20;

/// Writes one frame; returns the bytes put on the wire.
pub fn write_message(stream: &mut impl Write, message: &Message) -> Result<usize, WireError> {
    let body = message.encode();
    if body.len() as u64 > MAX_FRAME_BYTES as u64 {
        return Err(WireError::Oversized(body.len() as u64));
    }
    stream.write_all(&(body.len() as u32).to_le_bytes())?;
    stream.write_all(&body)?;
    stream.flush()?;
    Ok(body.len() + 4)
}

/// Reads one frame; returns the message and the bytes taken off the wire.
pub fn read_message(stream: &mut impl Read) -> Result<(Message, usize), WireError> {
    let mut len = [0u8; 4];
    if let Err(e) = stream.read_exact(&mut len) {
        return Err(match e.kind() {
            io::ErrorKind::UnexpectedEof => WireError::Closed,
            // What a socket's read timeout gives, depending on the platform.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => WireError::Idle,
            _ => e.into(),
        });
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME_BYTES {
        return Err(WireError::Oversized(len as u64));
    }
    // Grown as the bytes arrive, not allocated at the declared length: a peer (or a damaged
    // file) that declares a large frame and sends little makes us hold only what it sent.
    let len = len as usize;
    let mut body = Vec::with_capacity(len.min(BODY_CAPACITY_UP_FRONT));
    stream.take(len as u64).read_to_end(&mut body)?;
    if body.len() < len {
        return Err(WireError::Truncated { what: "frame body", needed: len - body.len() });
    }
    Ok((Message::decode(&body)?, len + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello { version: PROTOCOL_VERSION, model_hash: [7; 32] },
            Message::Welcome {
                version: PROTOCOL_VERSION,
                model_hash: [9; 32],
                weights_hash: [8; 32],
                model_name: "smollm2-135m".into(),
                layers: 30,
                params: ParamsSummary { ring_degree: 2048, ciphertext_modulus: 97 },
                plans: vec![
                    PlanChoice {
                        log2_plaintext_modulus: 24,
                        column_layout: 1,
                        log2_input_conjugates: 2,
                        upload_bits: 50,
                        input_digit_bits: 3,
                        tree_digit_bits: 9,
                    };
                    3
                ],
            },
            Message::Keys { mask_seed: [3; 32], input: Some(vec![1, 2, 3]), tree: vec![4; 10] },
            Message::Keys { mask_seed: [0; 32], input: None, tree: vec![5; 3] },
            Message::Products {
                request_id: 3,
                layer: 29,
                stage: Stage::GateUp,
                first_mask: 1 << 40,
                inputs: vec![
                    vec![vec![1, 2, 3], vec![4, 5, 6]],
                    vec![vec![7, 8, 9], vec![10, 11, 12]],
                ],
            },
            Message::Results {
                request_id: 3,
                outputs: vec![vec![vec![0; 5], vec![1; 5], vec![2; 3]]],
            },
            Message::Readiness,
            Message::Ready { tokens_ahead: 17 },
            Message::Error { message: "no such layer".into() },
            Message::Bye,
        ]
    }

    #[test]
    fn every_message_round_trips_through_a_stream() {
        let mut wire = Vec::new();
        for m in samples() {
            write_message(&mut wire, &m).unwrap();
        }
        let mut cursor = io::Cursor::new(wire);
        for m in samples() {
            assert_eq!(read_message(&mut cursor).unwrap().0, m);
        }
        assert!(matches!(read_message(&mut cursor), Err(WireError::Closed)));
    }

    #[test]
    fn every_strict_prefix_of_a_message_is_rejected() {
        for m in samples() {
            let body = m.encode();
            for cut in 0..body.len() {
                assert!(Message::decode(&body[..cut]).is_err(), "{m:?} cut at {cut} decoded");
            }
        }
    }

    #[test]
    fn garbage_gets_precise_errors() {
        assert!(matches!(Message::decode(&[200]), Err(WireError::UnknownTag(200))));
        let mut products = samples()[4].encode();
        products[9] = 9; // the stage byte
        assert!(matches!(Message::decode(&products), Err(WireError::UnknownStage(9))));
        let mut keys = samples()[2].encode();
        keys[33] = 2; // the input keys flag, after the mask seed
        assert!(matches!(Message::decode(&keys), Err(WireError::BadFlag(2))));
        let mut bye = Message::Bye.encode();
        bye.push(0);
        assert!(matches!(Message::decode(&bye), Err(WireError::TrailingBytes(1))));
        let huge = (MAX_FRAME_BYTES + 1).to_le_bytes();
        assert!(matches!(read_message(&mut &huge[..]), Err(WireError::Oversized(_))));
        // A batch header that claims more ciphertexts than the frame holds.
        let mut lying = vec![TAG_RESULTS, 0, 0, 0, 0];
        for n in [1u32 << 16, 1 << 16] {
            lying.extend_from_slice(&n.to_le_bytes());
        }
        assert!(matches!(Message::decode(&lying), Err(WireError::BatchTooLarge { .. })));
        // ... or a ciphertext longer than what follows.
        let mut short = vec![TAG_RESULTS, 0, 0, 0, 0];
        for n in [1u32, 1, 100] {
            short.extend_from_slice(&n.to_le_bytes());
        }
        assert!(matches!(Message::decode(&short), Err(WireError::Truncated { .. })));
    }
}
