//! Canonical JSON, byte-identical to what SchemaPin's reference implementation signs.
//!
//! The reference is Python: `json.dumps(json.loads(text), ensure_ascii=False,
//! separators=(',', ':'), sort_keys=True)`. Reproducing it means following Python, not JSON in
//! general:
//! - a number with a fraction or an exponent is a float and prints as Python's `repr` (`1e2` is
//!   `100.0`, `1.5e-7` is `1.5e-07`, `1e400` is `Infinity`); any other number is an exact integer,
//!   however big;
//! - keys sort by code point, and a duplicate key keeps its last value;
//! - only `"`, `\` and control characters are escaped, with Python's spellings.
//!
//! This module parses the text itself rather than going through `serde_json::Value`, whose number
//! handling changes with cargo features elsewhere in a dependency graph (`arbitrary_precision`).

use std::fmt::Write as _;

/// Why a text is not canonicalizable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {reason}")]
pub struct JsonError {
    pub offset: usize,
    pub reason: &'static str,
}

/// Nesting deeper than this is refused, so hostile input cannot exhaust the stack. A value at
/// this depth (the top-level value is at 0) may still be an empty array or object.
pub const MAX_DEPTH: usize = 128;

/// A parsed JSON value, keeping what Python keeps.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Bool(bool),
    /// Decimal digits with an optional leading `-`, normalized (no `-0`).
    Int(String),
    Float(f64),
    String(String),
    Array(Vec<Value>),
    /// Sorted by key, duplicates resolved (last wins).
    Object(Vec<(String, Value)>),
}

/// Canonicalizes a JSON text.
pub fn canonicalize(text: &str) -> Result<String, JsonError> {
    let value = parse(text)?;
    let mut out = String::with_capacity(text.len());
    write_value(&value, &mut out);
    Ok(out)
}

/// Canonicalizes only the named top-level members of a JSON object; absent ones stay absent.
pub fn canonicalize_members(text: &str, keep: &[&str]) -> Result<String, JsonError> {
    let Value::Object(members) = parse(text)? else {
        return Err(JsonError {
            offset: 0,
            reason: "expected an object",
        });
    };
    let members = members
        .into_iter()
        .filter(|(key, _)| keep.contains(&key.as_str()))
        .collect();
    let mut out = String::with_capacity(text.len());
    write_value(&Value::Object(members), &mut out);
    Ok(out)
}

/// Canonicalizes one top-level member of a JSON object (the `schema` of a signed document),
/// straight from the document's text so that its numbers keep Python's meaning.
pub fn canonicalize_member(text: &str, key: &str) -> Result<Option<String>, JsonError> {
    let Value::Object(members) = parse(text)? else {
        return Err(JsonError {
            offset: 0,
            reason: "expected an object",
        });
    };
    Ok(members
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, value)| {
            let mut out = String::new();
            write_value(&value, &mut out);
            out
        }))
}

/// Appends the canonical form of one JSON number literal (`12`, `-0`, `1E+2`), for a caller that
/// walks a value it parsed itself instead of handing over a text: the gateway's audit records,
/// built as `serde_json::Value`s, whose numbers print as the literals they were parsed from.
pub fn push_number(literal: &str, out: &mut String) -> Result<(), JsonError> {
    let mut parser = Parser {
        bytes: literal.as_bytes(),
        text: literal,
        pos: 0,
    };
    let value = parser.number()?;
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("trailing characters"));
    }
    write_value(&value, out);
    Ok(())
}

/// Appends a string, quoted and escaped as the canonical form writes strings and keys.
pub fn push_string(s: &str, out: &mut String) {
    write_string(s, out);
}

fn parse(text: &str) -> Result<Value, JsonError> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        text,
        pos: 0,
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("trailing characters"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &'static str) -> JsonError {
        JsonError {
            offset: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(reason))
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            // Python's `json.loads` accepts these, and `json.dumps` writes them, so a document
            // SchemaPin signs may contain them.
            Some(b'N') => self.literal("NaN", Value::Float(f64::NAN)),
            Some(b'I') => self.literal("Infinity", Value::Float(f64::INFINITY)),
            Some(b'-') if self.bytes[self.pos..].starts_with(b"-Infinity") => {
                self.literal("-Infinity", Value::Float(f64::NEG_INFINITY))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.pos += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            self.expect(b':', "expected `:`")?;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
        // A stable sort keeps duplicates in input order, so keeping the last of each run is
        // Python's "last one wins". Rust orders strings by UTF-8 bytes, which is code point
        // order, as Python's `sort_keys` does.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(String, Value)> = Vec::with_capacity(members.len());
        for member in members {
            match unique.last_mut() {
                Some(last) if last.0 == member.0 => *last = member,
                _ => unique.push(member),
            }
        }
        Ok(Value::Object(unique))
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
        Ok(Value::Array(items))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        let value = u32::from_str_radix(digits, 16).map_err(|_| self.error("bad \\u escape"))?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.error("bad \\u escape"));
        }
        self.pos += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The slice ends before an ASCII byte, so it is on a character boundary.
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escape = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated escape"))?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&first) {
                                // A high surrogate must be followed by an escaped low one.
                                if self.bytes[self.pos..].starts_with(b"\\u") {
                                    self.pos += 2;
                                    let second = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&second) {
                                        return Err(self.error("unpaired surrogate"));
                                    }
                                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                                } else {
                                    return Err(self.error("unpaired surrogate"));
                                }
                            } else if (0xDC00..0xE000).contains(&first) {
                                return Err(self.error("unpaired surrogate"));
                            } else {
                                first
                            };
                            out.push(
                                char::from_u32(code).ok_or_else(|| self.error("bad \\u escape"))?,
                            );
                        }
                        _ => return Err(self.error("unknown escape")),
                    }
                }
                Some(_) => return Err(self.error("control character in string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.pos += 1;
                }
            }
            _ => return Err(self.error("expected a digit")),
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            float = true;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit after `.`"));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            float = true;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit in the exponent"));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        let literal = &self.text[start..self.pos];
        if float {
            // Rust's parser rounds correctly, as Python's does; out-of-range values become
            // infinities in both.
            literal
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| self.error("bad number"))
        } else if literal == "-0" {
            Ok(Value::Int("0".to_owned()))
        } else {
            Ok(Value::Int(literal.to_owned()))
        }
    }
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(digits) => out.push_str(digits),
        Value::Float(f) => write_float(*f, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(value, out);
            }
            out.push('}');
        }
    }
}

/// Python's `json` escaping with `ensure_ascii=False`.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `float.__repr__`: the shortest digits that round-trip, in fixed notation for
/// decimal exponents from -4 to 15 and in scientific notation (`1e+16`, `1.5e-07`) otherwise.
fn write_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // `{:e}` gives the shortest round-trip digits: "1.5e-7", "-1e21", "0e0".
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if negative {
        out.push('-');
    }
    if (-4..16).contains(&exponent) {
        // Fixed notation: place the decimal point `exponent + 1` digits into `digits`.
        let point = exponent + 1;
        if point <= 0 {
            out.push_str("0.");
            for _ in 0..-point {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let point = point as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        );
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::canonicalize;

    fn check(input: &str, expected: Expect) {
        let actual = match canonicalize(input) {
            Ok(canonical) => canonical,
            Err(e) => format!("error: {e}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn objects_sort_by_code_point_and_keep_the_last_duplicate() {
        check(
            r#" { "b": 1, "a": { "z": [1, 2, {"y": null, "x": true}], "Z": false }, "b": 2 } "#,
            expect![[r#"{"a":{"Z":false,"z":[1,2,{"x":true,"y":null}]},"b":2}"#]],
        );
        check(
            r#"{"é":1,"e":2,"😀":3,"ｚ":4,"~":5}"#,
            expect![[r#"{"e":2,"~":5,"é":1,"ｚ":4,"😀":3}"#]],
        );
    }

    #[test]
    fn floats_print_as_python_repr() {
        check(
            "[1.0, 1e2, 1.5e-7, -0.0, 1e21, 1e22, 0.1, 1e16, 1e15, 0.0001, 0.00001, 123.456, 5e-324, 1e400, -1e400, 1E+2, 2.5e0]",
            expect![[
                r#"[1.0,100.0,1.5e-07,-0.0,1e+21,1e+22,0.1,1e+16,1000000000000000.0,0.0001,1e-05,123.456,5e-324,Infinity,-Infinity,100.0,2.5]"#
            ]],
        );
    }

    #[test]
    fn python_non_finite_literals_round_trip() {
        check(
            "[NaN, Infinity, -Infinity, -1e3444]",
            expect!["[NaN,Infinity,-Infinity,-Infinity]"],
        );
    }

    #[test]
    fn integers_are_exact_at_any_size() {
        check(
            "[0, -0, 12345678901234567890123456789, -9007199254740993]",
            expect![[r#"[0,0,12345678901234567890123456789,-9007199254740993]"#]],
        );
    }

    #[test]
    fn strings_escape_like_python() {
        check(
            r#"["\"\\\/\b\f\n\r\t", "\u0001\u001f\u007f", "\u00e9\u4e2d\ud83d\ude00", "é中😀", "\u2028"]"#,
            expect![[r#"["\"\\/\b\f\n\r\t","\u0001\u001f","é中😀","é中😀"," "]"#]],
        );
    }

    /// Arbitrary JSON texts, written with varied spacing, key order and number spellings.
    fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            "[a-zA-Z0-9 é中😀\\\\\"\n\t\u{1}]{0,8}".prop_map(|s| format!("{s:?}")),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[ {} ]", items.join(" , "))),
                proptest::collection::vec(("[a-z]{0,3}", inner), 0..5).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("{k:?} : {v}"))
                        .collect();
                    format!("{{ {} }}", members.join(" , "))
                }),
            ]
        })
    }

    proptest::proptest! {
        /// Canonical text is a fixed point: canonicalizing it again changes nothing.
        #[test]
        fn canonical_form_is_idempotent(text in json_text()) {
            if let Ok(once) = canonicalize(&text) {
                let twice = canonicalize(&once);
                proptest::prop_assert_eq!(twice, Ok(once));
            }
        }

        /// Nothing panics on arbitrary input, valid or not.
        #[test]
        fn arbitrary_input_never_panics(text in "\\PC{0,64}") {
            let _ = canonicalize(&text);
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for (input, expected) in [
            (
                "",
                expect!["error: invalid JSON at byte 0: unexpected end of input"],
            ),
            (
                "{",
                expect!["error: invalid JSON at byte 1: expected a string key"],
            ),
            (
                "[1,]",
                expect!["error: invalid JSON at byte 3: expected a value"],
            ),
            (
                "01",
                expect!["error: invalid JSON at byte 1: trailing characters"],
            ),
            (
                "1.",
                expect!["error: invalid JSON at byte 2: expected a digit after `.`"],
            ),
            (
                "\"\\ud800\"",
                expect!["error: invalid JSON at byte 7: unpaired surrogate"],
            ),
            (
                "\"\\udc00\"",
                expect!["error: invalid JSON at byte 7: unpaired surrogate"],
            ),
            (
                "\"a\u{1}\"",
                expect!["error: invalid JSON at byte 2: control character in string"],
            ),
            (
                "\"\\u12\"",
                expect![[r#"error: invalid JSON at byte 3: short \u escape"#]],
            ),
            (
                "nan",
                expect!["error: invalid JSON at byte 0: unknown literal"],
            ),
            (
                "-Inf",
                expect!["error: invalid JSON at byte 1: expected a digit"],
            ),
            (
                "[1] [2]",
                expect!["error: invalid JSON at byte 4: trailing characters"],
            ),
            (
                "\"\\x\"",
                expect!["error: invalid JSON at byte 3: unknown escape"],
            ),
        ] {
            check(input, expected);
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        check(
            &deep,
            expect!["error: invalid JSON at byte 129: nested too deeply"],
        );
    }
}
