//! The decoder's JSON walk: one pass over a record that checks it is JSON and hands the
//! values on the configured paths to [`Captures`].
//!
//! It accepts and rejects exactly what the serde_json walk it replaced did (a differential
//! property test holds it to that, see `decode::tests`): keys and captured strings are
//! checked strictly (escapes, paired surrogates, UTF-8), skipped values only for grammar,
//! captured numbers are read by serde_json itself unless they are plain integers. It exists
//! because serde_json's visitor machinery cost about three times its own skipping speed per
//! event; this walk finds string ends eight bytes at a time and never leaves the byte slice.

use std::borrow::Cow;

use serde::Deserializer as _;
use serde::de::Visitor;

use super::{Captures, Level, Node, Scalar};

/// The record is not JSON (the reason does not matter: every case is `not_json`).
#[derive(Debug)]
pub(super) struct Invalid;

type Scan<T> = Result<T, Invalid>;

/// How deep objects on a configured path may nest: serde_json's recursion limit. Skipped
/// values are walked without recursion and have no limit.
const MAX_DEPTH: usize = 127;

/// Walks `bytes` (whose UTF-8 validity the caller checked once: `text`) to its end;
/// `Ok(true)` if it is an object.
pub(super) fn walk<'a>(
    bytes: &'a [u8],
    text: Option<&'a str>,
    root: &Level,
    captures: &mut Captures<'a>,
) -> Scan<bool> {
    let mut scanner = Scanner {
        bytes,
        text,
        pos: 0,
    };
    scanner.skip_whitespace();
    let is_object = match scanner.peek() {
        Some(b'{') => {
            scanner.pos += 1;
            scanner.object(root, captures, 1)?;
            true
        }
        Some(b'[') => {
            scanner.skip_value()?;
            false
        }
        // A scalar document is read like a captured value (a string checked strictly, a
        // number converted), then dropped.
        _ => {
            scanner.scalar()?;
            false
        }
    };
    scanner.skip_whitespace();
    if scanner.pos != bytes.len() {
        return Err(Invalid);
    }
    Ok(is_object)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Scan<u8> {
        let byte = self.peek().ok_or(Invalid)?;
        self.pos += 1;
        Ok(byte)
    }

    fn expect(&mut self, byte: u8) -> Scan<()> {
        if self.next()? == byte {
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// The members of an object whose `{` was just read, descending along `level`.
    fn object(&mut self, level: &Level, captures: &mut Captures<'a>, depth: usize) -> Scan<()> {
        if depth > MAX_DEPTH {
            return Err(Invalid);
        }
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            self.expect(b'"')?;
            let key = self.string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            match level.find(&key) {
                Some(node) => self.captured(node, captures, depth)?,
                None => self.skip_value()?,
            }
            self.skip_whitespace();
            match self.next()? {
                b',' => {}
                b'}' => return Ok(()),
                _ => return Err(Invalid),
            }
        }
    }

    /// A value on a configured path: offered to the node's fields, and walked on if it is an
    /// object with deeper paths.
    fn captured(&mut self, node: &Node, captures: &mut Captures<'a>, depth: usize) -> Scan<()> {
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                captures.record(&node.targets, Scalar::Unusable);
                self.object(&node.children, captures, depth + 1)
            }
            Some(b'[') => {
                captures.record(&node.targets, Scalar::Unusable);
                self.skip_value()
            }
            _ => {
                if let Some(value) = self.scalar()? {
                    captures.record(&node.targets, value);
                }
                Ok(())
            }
        }
    }

    /// A string, number or literal; `None` for `null`, which counts as absent.
    fn scalar(&mut self) -> Scan<Option<Scalar<'a>>> {
        match self.peek().ok_or(Invalid)? {
            b'"' => {
                self.pos += 1;
                Ok(Some(Scalar::Str(self.string()?)))
            }
            b't' => self.literal(b"true").map(|()| Some(Scalar::Unusable)),
            b'f' => self.literal(b"false").map(|()| Some(Scalar::Unusable)),
            b'n' => self.literal(b"null").map(|()| None),
            b'-' | b'0'..=b'9' => {
                let start = self.pos;
                self.skip_number()?;
                number(&self.bytes[start..self.pos]).map(Some)
            }
            _ => Err(Invalid),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// A string whose opening quote was just read, checked strictly: borrowed from the
    /// record unless it has escapes.
    fn string(&mut self) -> Scan<Cow<'a, str>> {
        let start = self.pos;
        self.pos = find_special(self.bytes, self.pos);
        match self.next()? {
            b'"' => {
                let raw = &self.bytes[start..self.pos - 1];
                let text = match self.text {
                    Some(text) => text.get(start..self.pos - 1),
                    None => std::str::from_utf8(raw).ok(),
                };
                text.map(Cow::Borrowed).ok_or(Invalid)
            }
            b'\\' => {
                let mut unescaped = self.bytes[start..self.pos - 1].to_vec();
                self.escape(&mut unescaped)?;
                loop {
                    let from = self.pos;
                    self.pos = find_special(self.bytes, self.pos);
                    unescaped.extend_from_slice(&self.bytes[from..self.pos]);
                    match self.next()? {
                        b'"' => break,
                        b'\\' => self.escape(&mut unescaped)?,
                        _ => return Err(Invalid),
                    }
                }
                String::from_utf8(unescaped)
                    .map(Cow::Owned)
                    .map_err(|_| Invalid)
            }
            _ => Err(Invalid), // a control character
        }
    }

    /// The escape after a `\`, appended to `out`; `\u` surrogates must come in pairs.
    fn escape(&mut self, out: &mut Vec<u8>) -> Scan<()> {
        let unescaped = match self.next()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\x08',
            b'f' => '\x0c',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4()?;
                let code = match high {
                    0xD800..=0xDBFF => {
                        self.expect(b'\\')?;
                        self.expect(b'u')?;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Invalid);
                        }
                        0x1_0000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(Invalid),
                    _ => u32::from(high),
                };
                char::from_u32(code).ok_or(Invalid)?
            }
            _ => return Err(Invalid),
        };
        out.extend_from_slice(unescaped.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    fn hex4(&mut self) -> Scan<u16> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(Invalid)?;
        let mut value = 0u16;
        for &digit in digits {
            let nibble = (digit as char).to_digit(16).ok_or(Invalid)?;
            value = value * 16 + nibble as u16;
        }
        self.pos += 4;
        Ok(value)
    }

    /// A string whose opening quote was just read, checked for grammar only.
    fn skip_string(&mut self) -> Scan<()> {
        loop {
            self.pos = find_special(self.bytes, self.pos);
            match self.next()? {
                b'"' => return Ok(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        self.hex4()?;
                    }
                    _ => return Err(Invalid),
                },
                _ => return Err(Invalid),
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn skip_number(&mut self) -> Scan<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next()? {
            // A digit after a leading zero is left to fail where the caller looks for what
            // follows a value.
            b'0' => {}
            b'1'..=b'9' => self.skip_digits(),
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.require_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.require_digits()?;
        }
        Ok(())
    }

    fn skip_digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn require_digits(&mut self) -> Scan<()> {
        let start = self.pos;
        self.skip_digits();
        if self.pos == start {
            Err(Invalid)
        } else {
            Ok(())
        }
    }

    /// Any value, checked for grammar only, without recursion: `nesting` remembers whether
    /// each open container is an object, so depth costs a bit, not a stack frame.
    fn skip_value(&mut self) -> Scan<()> {
        let mut nesting = Nesting::default();
        loop {
            // One value, or the opening of a non-empty container.
            self.skip_whitespace();
            match self.next()? {
                b'"' => self.skip_string()?,
                b'{' => {
                    self.skip_whitespace();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        nesting.push(true);
                        self.skip_key()?;
                        continue;
                    }
                }
                b'[' => {
                    self.skip_whitespace();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        nesting.push(false);
                        continue;
                    }
                }
                b't' => {
                    self.pos -= 1;
                    self.literal(b"true")?;
                }
                b'f' => {
                    self.pos -= 1;
                    self.literal(b"false")?;
                }
                b'n' => {
                    self.pos -= 1;
                    self.literal(b"null")?;
                }
                b'-' | b'0'..=b'9' => {
                    self.pos -= 1;
                    self.skip_number()?;
                }
                _ => return Err(Invalid),
            }
            // A value ended: close the containers it ends, or go on to the next member.
            loop {
                let Some(in_object) = nesting.innermost() else {
                    return Ok(());
                };
                self.skip_whitespace();
                match (self.next()?, in_object) {
                    (b',', true) => {
                        self.skip_key()?;
                        break;
                    }
                    (b',', false) => break,
                    (b'}', true) | (b']', false) => nesting.pop(),
                    _ => return Err(Invalid),
                }
            }
        }
    }

    /// `"key" :` of a skipped object.
    fn skip_key(&mut self) -> Scan<()> {
        self.skip_whitespace();
        self.expect(b'"')?;
        self.skip_string()?;
        self.skip_whitespace();
        self.expect(b':')
    }
}

/// Open containers of a skipped value, innermost last: one bit each for the first 128,
/// which is every real record, and a vector beyond.
#[derive(Default)]
struct Nesting {
    depth: usize,
    bits: u128,
    deeper: Vec<bool>,
}

impl Nesting {
    fn push(&mut self, is_object: bool) {
        if self.depth < 128 {
            let bit = 1u128 << self.depth;
            if is_object {
                self.bits |= bit;
            } else {
                self.bits &= !bit;
            }
        } else {
            self.deeper.push(is_object);
        }
        self.depth += 1;
    }

    fn innermost(&self) -> Option<bool> {
        let index = self.depth.checked_sub(1)?;
        Some(if index < 128 {
            self.bits & (1u128 << index) != 0
        } else {
            self.deeper[index - 128]
        })
    }

    fn pop(&mut self) {
        self.depth -= 1;
        if self.depth >= 128 {
            self.deeper.pop();
        }
    }
}

/// The index of the first `"`, `\` or control character at or after `from` (or the end),
/// eight bytes at a time: the zero-byte test on a word flags the lowest match exactly
/// (only bytes above a match can be flagged wrongly), so the lowest flag is the answer.
fn find_special(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut at = from;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let flags = has_zero(word ^ (ONES * u64::from(b'"')))
            | has_zero(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS);
        if flags != 0 {
            return at + (flags.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + bytes[at.min(bytes.len())..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len().saturating_sub(at))
}

/// A number that passed the grammar: plain non-negative integers of up to 19 digits (every
/// epoch-millisecond time) directly, the rest by serde_json, so that signs, `-0`, overflow to
/// floating point, float rounding and out-of-range exponents are exactly its own.
fn number<'a>(raw: &[u8]) -> Scan<Scalar<'a>> {
    if raw.len() <= 19 && raw.iter().all(u8::is_ascii_digit) {
        let value = raw.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        return Ok(Scalar::UInt(value));
    }
    serde_json::Deserializer::from_slice(raw)
        .deserialize_any(NumberVisitor)
        .map_err(|_| Invalid)
}

struct NumberVisitor;

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = Scalar<'static>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number")
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
}
