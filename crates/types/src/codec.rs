//! Canonical binary encoding: fixed-width little-endian integers, `u32` length prefixes,
//! one-byte tags for enums and options. Every value has exactly one encoding, and decoding is
//! strict: truncated input, trailing bytes, unknown tags, non-canonical booleans, invalid UTF-8
//! and oversized lengths are typed errors, never panics.

use thiserror::Error;

/// Upper bound on any length prefix, so a hostile prefix cannot make us allocate gigabytes.
pub const MAX_LENGTH: u32 = 1 << 24;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("input ended early: needed {needed} more bytes, {remaining} left")]
    UnexpectedEnd { needed: usize, remaining: usize },
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    #[error("invalid boolean byte {0} (must be 0 or 1)")]
    InvalidBool(u8),
    #[error("unknown tag {tag} for {type_name}")]
    InvalidTag { type_name: &'static str, tag: u8 },
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("length {len} exceeds the limit of {max}")]
    LengthTooLarge { len: u64, max: u64 },
    #[error("invalid value: {0}")]
    InvalidValue(&'static str),
}

/// Cursor over an input buffer.
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    pub fn remaining(&self) -> usize {
        self.input.len()
    }

    pub fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if count > self.input.len() {
            return Err(DecodeError::UnexpectedEnd { needed: count, remaining: self.input.len() });
        }
        let (head, tail) = self.input.split_at(count);
        self.input = tail;
        Ok(head)
    }

    pub fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// Reads a length prefix and checks it against `max` and against the bytes left, given
    /// that every element occupies at least `min_element_size` bytes.
    pub fn length(&mut self, max: u32, min_element_size: usize) -> Result<usize, DecodeError> {
        let len = u32::decode_from(self)?;
        if len > max {
            return Err(DecodeError::LengthTooLarge { len: len.into(), max: max.into() });
        }
        let len = len as usize;
        let needed = len.saturating_mul(min_element_size);
        if needed > self.input.len() {
            return Err(DecodeError::UnexpectedEnd { needed, remaining: self.input.len() });
        }
        Ok(len)
    }

    pub fn finish(self) -> Result<(), DecodeError> {
        match self.input.len() {
            0 => Ok(()),
            trailing => Err(DecodeError::TrailingBytes(trailing)),
        }
    }
}

pub trait Encode {
    fn encode_to(&self, out: &mut Vec<u8>);

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut out);
        out
    }
}

pub trait Decode: Sized {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decodes a complete buffer: bytes left over are an error.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let value = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(value)
    }
}

macro_rules! codec_int {
    ($($int:ty),*) => {$(
        impl Encode for $int {
            fn encode_to(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
        impl Decode for $int {
            fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(<$int>::from_le_bytes(reader.take_array()?))
            }
        }
    )*};
}
codec_int!(u8, u16, u32, u64, u128);

impl Encode for bool {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Decode for bool {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::decode_from(reader)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::InvalidBool(other)),
        }
    }
}

impl Encode for String {
    fn encode_to(&self, out: &mut Vec<u8>) {
        encode_length(self.len(), out);
        out.extend_from_slice(self.as_bytes());
    }
}

impl Decode for String {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = reader.length(MAX_LENGTH, 1)?;
        let bytes = reader.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode_to(&self, out: &mut Vec<u8>) {
        encode_length(self.len(), out);
        for item in self {
            item.encode_to(out);
        }
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // Every encodable type in this crate takes at least one byte.
        let len = reader.length(MAX_LENGTH, 1)?;
        (0..len).map(|_| T::decode_from(reader)).collect()
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                value.encode_to(out);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::decode_from(reader)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode_from(reader)?)),
            tag => Err(DecodeError::InvalidTag { type_name: "Option", tag }),
        }
    }
}

impl<A: Encode, B: Encode> Encode for (A, B) {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.0.encode_to(out);
        self.1.encode_to(out);
    }
}

impl<A: Decode, B: Decode> Decode for (A, B) {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok((A::decode_from(reader)?, B::decode_from(reader)?))
    }
}

fn encode_length(len: usize, out: &mut Vec<u8>) {
    // Lengths beyond MAX_LENGTH cannot be decoded; encoders of user values check limits first.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    len.encode_to(out);
}

/// Implements [`Encode`] and [`Decode`] for a struct by encoding its fields in the listed order.
#[macro_export]
macro_rules! codec_struct {
    ($name:ident { $($field:ident),* $(,)? }) => {
        impl $crate::codec::Encode for $name {
            fn encode_to(&self, out: &mut Vec<u8>) {
                $( $crate::codec::Encode::encode_to(&self.$field, out); )*
            }
        }
        impl $crate::codec::Decode for $name {
            fn decode_from(
                reader: &mut $crate::codec::Reader<'_>,
            ) -> Result<Self, $crate::codec::DecodeError> {
                Ok(Self { $( $field: $crate::codec::Decode::decode_from(reader)?, )* })
            }
        }
    };
}

/// Implements [`Encode`] and [`Decode`] for an enum whose variants all use braces: one tag byte,
/// then the fields in order.
#[macro_export]
macro_rules! codec_enum {
    ($name:ident { $($tag:literal => $variant:ident { $($field:ident),* $(,)? }),* $(,)? }) => {
        impl $crate::codec::Encode for $name {
            fn encode_to(&self, out: &mut Vec<u8>) {
                match self {
                    $( $name::$variant { $($field),* } => {
                        out.push($tag);
                        $( $crate::codec::Encode::encode_to($field, out); )*
                    } )*
                }
            }
        }
        impl $crate::codec::Decode for $name {
            fn decode_from(
                reader: &mut $crate::codec::Reader<'_>,
            ) -> Result<Self, $crate::codec::DecodeError> {
                match <u8 as $crate::codec::Decode>::decode_from(reader)? {
                    $( $tag => Ok($name::$variant {
                        $( $field: $crate::codec::Decode::decode_from(reader)?, )*
                    }), )*
                    tag => Err($crate::codec::DecodeError::InvalidTag {
                        type_name: stringify!($name),
                        tag,
                    }),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding_rejects_malformed_input() {
        assert_eq!(
            u64::from_bytes(&[1, 2, 3]),
            Err(DecodeError::UnexpectedEnd { needed: 8, remaining: 3 })
        );
        assert_eq!(u8::from_bytes(&[1, 2]), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(bool::from_bytes(&[2]), Err(DecodeError::InvalidBool(2)));
        assert_eq!(String::from_bytes(&[2, 0, 0, 0, 0xff, 0xfe]), Err(DecodeError::InvalidUtf8));
        assert!(matches!(
            Vec::<u64>::from_bytes(&[255, 255, 255, 0]),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
        assert!(matches!(
            Vec::<u8>::from_bytes(&[255, 255, 255, 255]),
            Err(DecodeError::LengthTooLarge { .. })
        ));
        assert_eq!(
            Option::<u8>::from_bytes(&[7]),
            Err(DecodeError::InvalidTag { type_name: "Option", tag: 7 })
        );
    }

    #[test]
    fn round_trips() {
        let value = (vec![Some(3u16), None], String::from("brain"));
        assert_eq!(<(Vec<Option<u16>>, String)>::from_bytes(&value.to_bytes()), Ok(value));
    }
}
