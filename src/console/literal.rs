//! Literal values typed at the console (`%push`, `%scatter`): JSON, or a
//! Rhai literal — numbers, strings, `true`/`false`, `()`, arrays `[..]`,
//! object maps `#{a: 1}`, ranges `0..10` / `0..=10`, and functions
//! `|a, b| a + b` or `fn f(x) { .. }` (pushed as function source).
//!
//! Anything computed belongs on the engines: `%px let x = ...`.

use std::collections::BTreeMap;
use zpar_client::Value;

/// The most items a range literal may expand to.
const MAX_RANGE: i64 = 10_000_000;

/// Parses a console literal into a value.
///
/// ```
/// use zpar::console::literal::parse;
/// use zpar::Value;
/// assert_eq!(parse("[1, 2.5, \"x\"]").unwrap(),
///            Value::Array(vec![Value::Int(1), Value::Float(2.5), Value::Str("x".into())]));
/// assert_eq!(parse("|a, b| a + b").unwrap(), Value::Function("|a, b| a + b".into()));
/// ```
pub fn parse(text: &str) -> Result<Value, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("no value given".into());
    }
    if t.starts_with('|') || t.starts_with("fn ") || t.starts_with("Fn(") {
        let src = t
            .strip_prefix("Fn(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or(t);
        return Ok(Value::Function(src.trim().to_string()));
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(t) {
        return Ok(Value::from_json(&json));
    }
    let mut p = Parser {
        s: t.as_bytes(),
        text: t,
        i: 0,
    };
    let v = p.value()?;
    p.skip_ws();
    if p.i < p.s.len() {
        return Err(p.error("unexpected text after the value"));
    }
    Ok(v)
}

/// The sequence `%map` runs over: values, or a range of integers read
/// lazily (so `0..`, with no end, is a sequence too).
#[derive(Debug, Clone, PartialEq)]
pub enum Sequence {
    /// The items, as given.
    Values(Vec<Value>),
    /// `start..end` (`end` excluded; None: no end).
    Range {
        /// The first integer.
        start: i64,
        /// One past the last, if any.
        end: Option<i64>,
    },
}

/// Reads the sequence literal at the start of `text`: an array, or a range
/// (`0..100`, `0..=99`, or `0..` with no end, never expanded); returns it
/// and the text after it.
///
/// ```
/// use zpar::console::literal::{parse_sequence, Sequence};
/// let (seq, rest) = parse_sequence("0.. |x| x * x").unwrap();
/// assert_eq!((seq, rest), (Sequence::Range { start: 0, end: None }, " |x| x * x"));
/// let (seq, _) = parse_sequence("[1, 2] |x| x").unwrap();
/// assert_eq!(seq, Sequence::Values(vec![zpar::Value::Int(1), zpar::Value::Int(2)]));
/// ```
pub fn parse_sequence(text: &str) -> Result<(Sequence, &str), String> {
    let t = text.trim_start();
    let token_end = t.find(char::is_whitespace).unwrap_or(t.len());
    let (token, after) = t.split_at(token_end);
    if let Some((lo, hi)) = token.split_once("..") {
        if let Ok(start) = lo.parse::<i64>() {
            let end = match hi.strip_prefix('=') {
                _ if hi.is_empty() => Ok(None),
                Some(incl) => incl.parse::<i64>().map(|e| Some(e.saturating_add(1))),
                None => hi.parse::<i64>().map(Some),
            };
            return match end {
                Ok(end) => Ok((Sequence::Range { start, end }, after)),
                Err(_) => Err(format!(
                    "{token:?} is not a range of whole numbers (0..100, 0..=99 or 0..)"
                )),
            };
        }
    }
    let mut p = Parser {
        s: t.as_bytes(),
        text: t,
        i: 0,
    };
    match p.value()? {
        Value::Array(items) => Ok((Sequence::Values(items), &t[p.i..])),
        other => Err(format!(
            "%map needs a sequence first (an array, or a range like 0..100 or 0..), not a {}",
            other.kind()
        )),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!(
            "{what} at column {} (a value is JSON or a Rhai literal; compute others on the engines with %px)",
            self.text[..self.i.min(self.text.len())].chars().count() + 1
        )
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.s[self.i..].starts_with(token.as_bytes()) {
            self.i += token.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_ws();
        let Some(c) = self.peek() else {
            return Err(self.error("a value is missing"));
        };
        match c {
            b'[' => self.array(),
            b'#' => self.map(),
            b'{' => self.map(),
            b'"' | b'\'' => self.string().map(Value::Str),
            b'`' => self.raw_string().map(Value::Str),
            b'(' => {
                if self.eat("()") {
                    Ok(Value::Unit)
                } else {
                    Err(self.error("only `()` may start with a parenthesis"))
                }
            }
            b'-' | b'+' | b'0'..=b'9' => self.number_or_range(),
            _ => {
                let word = self.ident();
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "null" => Ok(Value::Unit),
                    "" => Err(self.error(&format!("unexpected {:?}", c as char))),
                    w => Err(self.error(&format!(
                        "`{w}` is a name, not a value (names live on the engines: use %px)"
                    ))),
                }
            }
        }
    }

    fn ident(&mut self) -> String {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
            self.i += 1;
        }
        self.text[start..self.i].to_string()
    }

    fn array(&mut self) -> Result<Value, String> {
        self.i += 1; // [
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.eat("]") {
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                return Ok(Value::Array(items));
            }
            return Err(self.error("expected `,` or `]` in the array"));
        }
    }

    fn map(&mut self) -> Result<Value, String> {
        if !self.eat("#{") && !self.eat("{") {
            return Err(self.error("expected `#{` to open a map"));
        }
        let mut m = BTreeMap::new();
        loop {
            self.skip_ws();
            if self.eat("}") {
                return Ok(Value::Map(m));
            }
            let key = match self.peek() {
                Some(b'"') | Some(b'\'') => self.string()?,
                Some(b'`') => self.raw_string()?,
                _ => {
                    let k = self.ident();
                    if k.is_empty() {
                        return Err(self.error("expected a key"));
                    }
                    k
                }
            };
            self.skip_ws();
            if !self.eat(":") {
                return Err(self.error("expected `:` after the key"));
            }
            let v = self.value()?;
            m.insert(key, v);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                return Ok(Value::Map(m));
            }
            return Err(self.error("expected `,` or `}` in the map"));
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.i..];
            let Some(c) = rest.chars().next() else {
                return Err(self.error("the string is not closed"));
            };
            self.i += c.len_utf8();
            match c {
                c if c as u32 == quote as u32 => return Ok(out),
                '\\' => {
                    let Some(e) = self.text[self.i..].chars().next() else {
                        return Err(self.error("the string is not closed"));
                    };
                    self.i += e.len_utf8();
                    out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        'u' => self.unicode()?,
                        other => other,
                    });
                }
                c => out.push(c),
            }
        }
    }

    fn unicode(&mut self) -> Result<char, String> {
        if !self.eat("{") {
            return Err(self.error("expected `\\u{HEX}`"));
        }
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_hexdigit()) {
            self.i += 1;
        }
        let hex = &self.text[start..self.i];
        if !self.eat("}") {
            return Err(self.error("expected `}` to close `\\u{`"));
        }
        u32::from_str_radix(hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| self.error("not a unicode scalar value"))
    }

    fn raw_string(&mut self) -> Result<String, String> {
        self.i += 1;
        let rest = &self.text[self.i..];
        match rest.find('`') {
            Some(end) => {
                self.i += end + 1;
                Ok(rest[..end].to_string())
            }
            None => Err(self.error("the string is not closed")),
        }
    }

    fn number_or_range(&mut self) -> Result<Value, String> {
        let first = self.number()?;
        let save = self.i;
        self.skip_ws();
        let inclusive = if self.eat("..=") {
            true
        } else if self.eat("..") {
            false
        } else {
            self.i = save;
            return Ok(first);
        };
        let Value::Int(lo) = first else {
            return Err(self.error("a range needs whole numbers"));
        };
        self.skip_ws();
        let Value::Int(hi) = self.number()? else {
            return Err(self.error("a range needs whole numbers"));
        };
        let hi = if inclusive { hi.saturating_add(1) } else { hi };
        if hi.saturating_sub(lo) > MAX_RANGE {
            return Err(self.error(&format!("a range may hold at most {MAX_RANGE} items")));
        }
        Ok(Value::Array((lo..hi).map(Value::Int).collect()))
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.i;
        if matches!(self.peek(), Some(b'-') | Some(b'+')) {
            self.i += 1;
        }
        let neg = self.s[start] == b'-';
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
            if self.eat(prefix) {
                let ds = self.i;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
                    self.i += 1;
                }
                let digits = self.text[ds..self.i].replace('_', "");
                let v =
                    i64::from_str_radix(&digits, radix).map_err(|_| self.error("not a number"))?;
                return Ok(Value::Int(if neg { -v } else { v }));
            }
        }
        let mut float = false;
        loop {
            match self.peek() {
                Some(c) if c.is_ascii_digit() || c == b'_' => self.i += 1,
                // `1..5` is a range, not a float
                Some(b'.') if !float && self.s.get(self.i + 1) != Some(&b'.') => {
                    float = true;
                    self.i += 1;
                }
                Some(b'e') | Some(b'E') => {
                    float = true;
                    self.i += 1;
                    if matches!(self.peek(), Some(b'-') | Some(b'+')) {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
        let digits = self.text[start..self.i].replace('_', "");
        if float {
            digits
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| self.error("not a number"))
        } else {
            digits
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|_| self.error("not a number (or too large for a 64-bit integer)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(r: std::ops::Range<i64>) -> Value {
        Value::Array(r.map(Value::Int).collect())
    }

    #[test]
    fn json_values() {
        assert_eq!(parse("42").unwrap(), Value::Int(42));
        assert_eq!(parse("-1.5").unwrap(), Value::Float(-1.5));
        assert_eq!(parse("null").unwrap(), Value::Unit);
        assert_eq!(parse("\"a\\nb\"").unwrap(), Value::Str("a\nb".into()));
        let m = parse("{\"a\": [1, true]}").unwrap();
        let Value::Map(m) = m else { panic!("{m:?}") };
        assert_eq!(m["a"], Value::Array(vec![Value::Int(1), Value::Bool(true)]));
    }

    #[test]
    fn rhai_literals() {
        assert_eq!(parse("()").unwrap(), Value::Unit);
        assert_eq!(parse("1_000").unwrap(), Value::Int(1000));
        assert_eq!(parse("0xff").unwrap(), Value::Int(255));
        assert_eq!(parse("'c'").unwrap(), Value::Str("c".into()));
        assert_eq!(parse("`raw \\n`").unwrap(), Value::Str("raw \\n".into()));
        assert_eq!(parse("\"\\u{e9}\"").unwrap(), Value::Str("é".into()));
        assert_eq!(parse("[1, 2,]").unwrap(), ints(1..3));
        let m = parse("#{ a: 1, \"b c\": [2.0], d: #{} }").unwrap();
        let Value::Map(m) = m else { panic!("{m:?}") };
        assert_eq!(m["a"], Value::Int(1));
        assert_eq!(m["b c"], Value::Array(vec![Value::Float(2.0)]));
        assert_eq!(m["d"], Value::Map(BTreeMap::new()));
    }

    #[test]
    fn ranges_expand() {
        assert_eq!(parse("0..4").unwrap(), ints(0..4));
        assert_eq!(parse("0..=4").unwrap(), ints(0..5));
        assert_eq!(
            parse("[0 .. 2, 7]").unwrap(),
            Value::Array(vec![ints(0..2), Value::Int(7)])
        );
        assert!(parse("0..99999999999").unwrap_err().contains("at most"));
        assert!(parse("0.5..2").is_err());
    }

    #[test]
    fn functions_travel_as_source() {
        assert_eq!(
            parse(" |a, b| a + b ").unwrap(),
            Value::Function("|a, b| a + b".into())
        );
        assert_eq!(
            parse("fn sq(x) { x * x }").unwrap(),
            Value::Function("fn sq(x) { x * x }".into())
        );
        assert_eq!(parse("Fn(|x| x)").unwrap(), Value::Function("|x| x".into()));
    }

    #[test]
    fn errors_say_where_and_what_to_do() {
        let e = parse("[1, 2").unwrap_err();
        assert!(e.contains("column 6") && e.contains("%px"), "{e}");
        assert!(parse("x + 1").unwrap_err().contains("is a name"));
        assert!(parse("\"open").unwrap_err().contains("not closed"));
        assert!(parse("1 2").unwrap_err().contains("unexpected text"));
        assert!(parse("").is_err());
    }
}
