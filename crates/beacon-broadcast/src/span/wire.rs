//! A direct protobuf writer for OTLP export requests: no intermediate message structs, no
//! per-attribute allocations, and each nested length computed once (prost recomputes the
//! lengths of nested messages at every level). Equivalence with the prost types is tested.

use super::Attrs;

/// Appends protobuf fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    /// The encoded bytes.
    pub buf: Vec<u8>,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Bytes of the varint encoding of `v`.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

impl Writer {
    /// A writer with `capacity` bytes reserved.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    #[inline(always)]
    fn varint(&mut self, v: u64) {
        // Most varints here (tags, attribute lengths) are one byte.
        if v < 0x80 {
            self.buf.push(v as u8);
        } else {
            self.long_varint(v);
        }
    }

    #[inline(never)]
    fn long_varint(&mut self, mut v: u64) {
        let mut bytes = [0u8; 10];
        let mut n = 0;
        while v >= 0x80 {
            bytes[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        bytes[n] = v as u8;
        self.buf.extend_from_slice(&bytes[..=n]);
    }

    #[inline(always)]
    fn tag(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    /// A length-delimited bytes or string field.
    pub fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, LEN);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// The tag and length of a length-delimited field whose `len` bytes follow separately.
    pub fn len_prefix(&mut self, field: u32, len: usize) {
        self.tag(field, LEN);
        self.varint(len as u64);
    }

    /// A string field (omitted when empty, as proto3 does).
    pub fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    /// A varint field (omitted when zero).
    pub fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, VARINT);
            self.varint(v);
        }
    }

    /// A fixed64 field (omitted when zero).
    pub fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, FIXED64);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A fixed32 field (omitted when zero).
    pub fn fixed32(&mut self, field: u32, v: u32) {
        if v != 0 {
            self.tag(field, FIXED32);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A nested message written by `f`. `expected_len_bytes` is how many bytes to reserve
    /// for its length (1 for small messages, 2 for spans); the length is fixed up after.
    pub fn message(&mut self, field: u32, expected_len_bytes: usize, f: impl FnOnce(&mut Self)) {
        self.tag(field, LEN);
        let len_pos = self.buf.len();
        self.buf.resize(len_pos + expected_len_bytes, 0);
        let start = self.buf.len();
        f(self);
        let len = self.buf.len() - start;
        let needed = varint_len(len as u64);
        if needed != expected_len_bytes {
            // Rare: make room for (or remove) length bytes; canonical varints only.
            self.buf
                .splice(len_pos..start, std::iter::repeat_n(0, needed));
        }
        let mut v = len as u64;
        for i in 0..needed {
            let mut byte = (v & 0x7f) as u8;
            v >>= 7;
            if i + 1 < needed {
                byte |= 0x80;
            }
            self.buf[len_pos + i] = byte;
        }
    }

    /// A `KeyValue` whose `AnyValue` is written by `value`.
    fn key_value(&mut self, field: u32, key: &str, value: impl FnOnce(&mut Self)) {
        self.message(field, 1, |w| {
            w.string(1, key);
            w.message(2, 1, value);
        });
    }
}

/// Attributes written as `KeyValue` messages in `field` of the enclosing message.
pub struct WireAttrs<'a> {
    /// The writer.
    pub w: &'a mut Writer,
    /// Field number of the repeated `KeyValue` field.
    pub field: u32,
}

impl WireAttrs<'_> {
    /// Writes a `KeyValue` whose `AnyValue` body (`value_len` bytes, written by `value`) has a
    /// known length, so every length prefix is exact and nothing is moved afterwards.
    #[inline]
    fn known(&mut self, key: &str, value_len: usize, value: impl FnOnce(&mut Writer)) {
        let w = &mut *self.w;
        // Nearly every attribute is short: the `KeyValue` (key tag and length, key, value tag
        // and length, value) under 128 bytes, so each length is one varint byte and the
        // header bytes are written as they are.
        let short = 4 + key.len() + value_len;
        if short < 0x80 && self.field < 16 {
            w.buf.reserve(2 + short);
            w.buf.extend_from_slice(&[
                ((self.field << 3) | u32::from(LEN)) as u8,
                short as u8,
                (1 << 3) | LEN,
                key.len() as u8,
            ]);
            w.buf.extend_from_slice(key.as_bytes());
            w.buf.extend_from_slice(&[(2 << 3) | LEN, value_len as u8]);
            value(w);
            return;
        }
        let any_len = value_len;
        let kv_len =
            1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any_len as u64) + any_len;
        // Room for the whole attribute at once (its tag takes at most 2 bytes here).
        w.buf.reserve(2 + varint_len(kv_len as u64) + kv_len);
        w.tag(self.field, LEN);
        w.varint(kv_len as u64);
        w.bytes(1, key.as_bytes());
        w.tag(2, LEN);
        w.varint(any_len as u64);
        value(w);
    }
}

impl Attrs for WireAttrs<'_> {
    fn str(&mut self, key: &str, value: &str) {
        let len = 1 + varint_len(value.len() as u64) + value.len();
        self.known(key, len, |w| w.bytes(1, value.as_bytes()));
    }
    fn int(&mut self, key: &str, value: i64) {
        let len = 1 + varint_len(value as u64);
        self.known(key, len, |w| {
            w.tag(3, VARINT);
            w.varint(value as u64);
        });
    }
    fn double(&mut self, key: &str, value: f64) {
        self.known(key, 9, |w| {
            w.tag(4, FIXED64);
            w.buf.extend_from_slice(&value.to_bits().to_le_bytes());
        });
    }
    fn bool(&mut self, key: &str, value: bool) {
        self.known(key, 2, |w| {
            w.tag(2, VARINT);
            w.varint(u64::from(value));
        });
    }
    fn str_array(&mut self, key: &str, values: &[String]) {
        self.w.key_value(self.field, key, |w| {
            w.message(5, 1, |w| {
                for v in values {
                    w.message(1, 1, |w| w.bytes(1, v.as_bytes()));
                }
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0u64, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
        }
    }

    #[test]
    fn attributes_around_the_one_byte_length_boundary_match_prost() {
        use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
        // A `KeyValue` of 127 bytes has one-byte lengths (the short path), 128 does not.
        // Keys are attribute names, never empty (prost would leave an empty key out).
        for key_len in [
            1, 20, 100, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 300,
        ] {
            for value_len in [
                0, 1, 30, 100, 118, 119, 120, 121, 122, 123, 126, 127, 128, 300,
            ] {
                let (key, value) = ("k".repeat(key_len), "v".repeat(value_len));
                let mut w = Writer::default();
                let mut a = WireAttrs {
                    w: &mut w,
                    field: 9,
                };
                a.str(&key, &value);
                a.int(&key, -(value_len as i64));
                a.double(&key, value_len as f64 / 3.0);
                a.bool(&key, value_len % 2 == 0);
                let mut expected = Vec::new();
                for value in [
                    Value::StringValue(value.clone()),
                    Value::IntValue(-(value_len as i64)),
                    Value::DoubleValue(value_len as f64 / 3.0),
                    Value::BoolValue(value_len % 2 == 0),
                ] {
                    let kv = KeyValue {
                        key: key.clone(),
                        value: Some(AnyValue { value: Some(value) }),
                        ..Default::default()
                    };
                    prost::encoding::message::encode(9, &kv, &mut expected);
                }
                assert_eq!(
                    w.buf, expected,
                    "key {key_len} bytes, value {value_len} bytes"
                );
            }
        }
    }

    #[test]
    fn nested_lengths_are_fixed_up_both_ways() {
        for (reserve, len) in [(1, 5), (1, 300), (2, 5), (2, 300), (2, 20_000)] {
            let mut w = Writer::default();
            w.message(7, reserve, |w| w.buf.extend(std::iter::repeat_n(0xAA, len)));
            let mut expected = vec![(7 << 3) | 2];
            let mut v = len as u64;
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    expected.push(b);
                    break;
                }
                expected.push(b | 0x80);
            }
            expected.extend(std::iter::repeat_n(0xAA, len));
            assert_eq!(w.buf, expected, "reserve {reserve}, len {len}");
        }
    }
}
