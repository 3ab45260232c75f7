//! GGUF reading and writing (llama.cpp's single-file format), with every read bounds-checked.

use std::collections::BTreeMap;
use std::path::Path;

use half::f16;

use crate::ModelError;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: usize = 32;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    const fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::String(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Self::F32(v) => Some(v),
            Self::F64(v) => Some(v as f32),
            _ => self.as_u64().map(|v| v as f32),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// ggml tensor element types this crate reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
    BF16,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            14 => Self::Q6K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    const fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q6K => 14,
            Self::BF16 => 30,
        }
    }

    /// (elements per block, bytes per block)
    const fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
            Self::Q4K => (256, 144),
            Self::Q6K => (256, 210),
        }
    }

    fn byte_len(self, elements: usize) -> Option<usize> {
        let (per_block, block_bytes) = self.block();
        elements.is_multiple_of(per_block).then(|| elements / per_block * block_bytes)
    }
}

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (column) dimension.
    pub dims: Vec<usize>,
    /// Raw ggml type id, kept even when unsupported so the error can name it.
    pub type_id: u32,
    /// Absolute byte range of the tensor's data in the file.
    range: std::ops::Range<usize>,
}

impl TensorInfo {
    /// Shape in row-major (PyTorch) order: outermost dimension first.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file held in memory.
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn err(message: impl Into<String>) -> ModelError {
    ModelError::Gguf(message.into())
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ModelError> {
        let end =
            self.pos.checked_add(n).filter(|&end| end <= self.bytes.len()).ok_or_else(|| {
                err(format!(
                    "truncated: {what} needs {n} bytes at offset {} but the file has {}",
                    self.pos,
                    self.bytes.len()
                ))
            })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ModelError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items that each take at least one byte: refusing counts beyond the
    /// remaining bytes keeps a corrupt header from triggering a huge allocation.
    fn count(&mut self, what: &str) -> Result<usize, ModelError> {
        let n = self.u64(what)?;
        let remaining = self.bytes.len() - self.pos;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= remaining)
            .ok_or_else(|| err(format!("{what} {n} exceeds the {remaining} bytes left")))
    }

    fn string(&mut self, what: &str) -> Result<String, ModelError> {
        let len = self.count(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| err(format!("{what} is not UTF-8")))
    }

    fn value(&mut self, type_id: u32, key: &str, depth: u32) -> Result<MetaValue, ModelError> {
        Ok(match type_id {
            0 => MetaValue::U8(self.array::<1>(key)?[0]),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(key)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                other => return Err(err(format!("metadata {key}: invalid bool byte {other}"))),
            },
            8 => MetaValue::String(self.string(key)?),
            9 if depth == 0 => {
                let item_type = self.u32(key)?;
                let n = self.count(key)?;
                let items = (0..n)
                    .map(|_| self.value(item_type, key, depth + 1))
                    .collect::<Result<_, _>>()?;
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(err(format!("metadata {key}: unsupported value type {other}"))),
        })
    }
}

impl GgufFile {
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::parse(bytes)
    }

    pub fn parse(bytes: Vec<u8>) -> Result<Self, ModelError> {
        let mut r = Reader { bytes: &bytes, pos: 0 };
        if &r.array::<4>("magic")? != MAGIC {
            return Err(err("not a GGUF file (bad magic)"));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(err(format!("unsupported GGUF version {version}")));
        }
        let tensor_count = r.count("tensor count")?;
        let kv_count = r.count("metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string("metadata key")?;
            let type_id = r.u32(&key)?;
            let value = r.value(type_id, &key, 0)?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .and_then(|a| usize::try_from(a).ok())
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| err(format!("invalid general.alignment {v:?}")))?,
        };
        let mut raw_infos = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(err(format!("tensor {name}: {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| {
                    let d = r.u64(&name)?;
                    usize::try_from(d).map_err(|_| err(format!("tensor {name}: dimension {d}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let type_id = r.u32(&name)?;
            let offset = r.u64(&name)?;
            raw_infos.push((name, dims, type_id, offset));
        }
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(tensor_count);
        for (name, dims, type_id, offset) in raw_infos {
            let elements = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| err(format!("tensor {name}: element count overflows")))?;
            // Unsupported types get an empty range; asking for their data reports the type.
            let len = match GgmlType::from_id(type_id) {
                Some(t) => t.byte_len(elements).ok_or_else(|| {
                    err(format!("tensor {name}: {elements} elements do not fill {t:?} blocks"))
                })?,
                None => 0,
            };
            let start = usize::try_from(offset)
                .ok()
                .filter(|o| o % alignment == 0)
                .and_then(|o| o.checked_add(data_start))
                .ok_or_else(|| err(format!("tensor {name}: bad data offset {offset}")))?;
            let end =
                start.checked_add(len).filter(|&end| end <= bytes.len()).ok_or_else(|| {
                    err(format!(
                        "truncated: tensor {name} needs bytes {start}..{} of a {}-byte file",
                        start.saturating_add(len),
                        bytes.len()
                    ))
                })?;
            tensors.push(TensorInfo { name, dims, type_id, range: start..end });
        }
        Ok(Self { version, metadata, tensors, bytes })
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// The tensor dequantised to f32, in row-major order with `shape()` as its shape.
    pub fn tensor_f32(&self, info: &TensorInfo) -> Result<Vec<f32>, ModelError> {
        let dtype =
            GgmlType::from_id(info.type_id).ok_or_else(|| ModelError::UnsupportedDtype {
                name: info.name.clone(),
                dtype: format!("ggml type {}", info.type_id),
            })?;
        Ok(dequantize(dtype, &self.bytes[info.range.clone()]))
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantises whole blocks; the caller guarantees `data` is a whole number of blocks.
fn dequantize(dtype: GgmlType, data: &[u8]) -> Vec<f32> {
    let (per_block, block_bytes) = dtype.block();
    let mut out = Vec::with_capacity(data.len() / block_bytes * per_block);
    for b in data.chunks_exact(block_bytes) {
        match dtype {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16_at(b, 0)),
            GgmlType::BF16 => out.push(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = f16_at(b, 0);
                out.extend(b[2..].iter().map(|&q| d * f32::from(q as i8)));
            }
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let d = f16_at(b, 0);
                let (min, qs) = match dtype {
                    GgmlType::Q4_1 => (f16_at(b, 2), &b[4..]),
                    _ => (-8.0 * d, &b[2..]),
                };
                out.extend(qs.iter().map(|&q| d * f32::from(q & 0xF) + min));
                out.extend(qs.iter().map(|&q| d * f32::from(q >> 4) + min));
            }
            GgmlType::Q4K => dequantize_q4k(b, &mut out),
            GgmlType::Q6K => dequantize_q6k(b, &mut out),
        }
    }
    out
}

fn dequantize_q4k(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    // Eight 6-bit (scale, min) pairs packed into 12 bytes, as in ggml's get_scale_min_k4.
    let scale_min = |j: usize| -> (f32, f32) {
        let (s, m) = if j < 4 {
            (scales[j] & 63, scales[j + 4] & 63)
        } else {
            (
                (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4),
                (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
            )
        };
        (d * f32::from(s), dmin * f32::from(m))
    };
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (d_lo, m_lo) = scale_min(2 * chunk);
        let (d_hi, m_hi) = scale_min(2 * chunk + 1);
        out.extend(q.iter().map(|&v| d_lo * f32::from(v & 0xF) - m_lo));
        out.extend(q.iter().map(|&v| d_hi * f32::from(v >> 4) - m_hi));
    }
}

fn dequantize_q6k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, rest) = b.split_at(128);
    let (qh, rest) = rest.split_at(64);
    let (scales, d) = rest.split_at(16);
    let d = f16_at(d, 0);
    for half in 0..2 {
        let ql = &ql[64 * half..];
        let qh = &qh[32 * half..];
        let sc = &scales[8 * half..];
        let mut y = [0f32; 128];
        for l in 0..32 {
            let is = l / 16;
            let h = qh[l];
            let q = [
                (ql[l] & 0xF) | ((h & 3) << 4),
                (ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4),
                (ql[l] >> 4) | (((h >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((h >> 6) & 3) << 4),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let scale = f32::from(sc[is + 2 * k] as i8);
                y[l + 32 * k] = d * scale * f32::from(i16::from(qk) - 32);
            }
        }
        out.extend_from_slice(&y);
    }
}

/// Builds a GGUF file in memory (used by the test-model writers).
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    pub fn meta(&mut self, key: &str, value: MetaValue) -> &mut Self {
        self.metadata.push((key.to_owned(), value));
        self
    }

    /// Adds a tensor of row-major `shape` stored as F32 or Q8_0 (the row length must then be a
    /// multiple of 32).
    pub fn tensor(&mut self, name: &str, shape: &[usize], dtype: GgmlType, values: &[f32]) {
        let bytes = match dtype {
            GgmlType::Q8_0 => quantize_q8_0(values),
            _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let dims = shape.iter().rev().copied().collect();
        self.tensors.push((name.to_owned(), dims, dtype, bytes));
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            write_value(&mut out, value);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for (name, dims, dtype, bytes) in &self.tensors {
            write_string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for &d in dims {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&dtype.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + bytes.len()).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        let data_start = out.len().div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        for ((_, _, _, bytes), offset) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + offset, 0);
            out.extend_from_slice(bytes);
        }
        out
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.push(*v),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::String(s) => write_string(out, s),
        MetaValue::Array(items) => {
            let item_type = items.first().map_or(MetaValue::U8(0).type_id(), MetaValue::type_id);
            out.extend_from_slice(&item_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|item| write_value(out, item));
        }
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

/// ggml's Q8_0: per block of 32, d = max|x| / 127 stored as f16, q = round(x / d).
fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = f16::from_f32(amax / 127.0);
        let inv = if d.to_f32() == 0.0 { 0.0 } else { 1.0 / d.to_f32() };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(block.iter().map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn four_and_sixteen_bit_blocks_dequantise() {
        let nibbles: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
        let q4_0 = [&f16_bytes(0.5)[..], &nibbles].concat();
        let expected: Vec<f32> =
            (0..16).chain((0..16).rev()).map(|q| (q as f32 - 8.0) * 0.5).collect();
        assert_eq!(dequantize(GgmlType::Q4_0, &q4_0), expected);

        let q4_1 = [&f16_bytes(0.5)[..], &f16_bytes(-1.0), &nibbles].concat();
        let expected: Vec<f32> =
            (0..16).chain((0..16).rev()).map(|q| q as f32 * 0.5 - 1.0).collect();
        assert_eq!(dequantize(GgmlType::Q4_1, &q4_1), expected);

        assert_eq!(
            dequantize(GgmlType::F16, &[f16_bytes(1.5), f16_bytes(-2.0)].concat()),
            [1.5, -2.0]
        );
    }

    #[test]
    fn q6_k_block_layout() {
        let mut block = vec![0u8; 210];
        block[192..208].fill(1); // scales
        block[208..210].copy_from_slice(&f16_bytes(1.0));
        block[0] = 0x35; // ql[0]: low nibble -> y[0], high nibble -> y[64]
        block[128] = 0b0000_0001; // qh[0] bits 0-1 -> y[0]'s high bits
        block[192] = 2; // scale of y[0..16]
        let y = dequantize(GgmlType::Q6K, &block);
        assert_eq!(y.len(), 256);
        assert_eq!(y[0], 2.0 * (0x15 as f32 - 32.0));
        assert_eq!(y[64], 3.0 - 32.0);
        assert_eq!(y[1], 2.0 * -32.0);
        assert_eq!(y[16], -32.0);
    }

    #[test]
    fn q4_k_block_layout() {
        let mut block = vec![0u8; 144];
        block[0..2].copy_from_slice(&f16_bytes(1.0));
        block[2..4].copy_from_slice(&f16_bytes(0.5));
        block[4] = 3; // scale of sub-block 0
        block[8] = 4; // min of sub-block 0
        block[5] = 5; // scale of sub-block 1
        block[9] = 2; // min of sub-block 1
        block[16] = 0x21; // low nibble -> y[0], high nibble -> y[32]
        let y = dequantize(GgmlType::Q4K, &block);
        assert_eq!(y.len(), 256);
        assert_eq!(y[0], 3.0 * 1.0 - 0.5 * 4.0);
        assert_eq!(y[32], 5.0 * 2.0 - 0.5 * 2.0);
        assert_eq!(y[1], -2.0);
    }
}
