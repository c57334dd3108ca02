//! A lexer for just what [`super::scan`] needs in Rhai source: names,
//! `::`, braces, semicolons, and strings read whole (with their
//! interpolations), comments skipped.

/// What the scan needs to tell apart in Rhai source.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Ident(String),
    /// A string; its text when it has no interpolation.
    Str(Option<String>),
    /// `::`
    PathSep,
    /// Anything else (a number counts as `0`, a char literal as `'`).
    Punct(char),
}

#[derive(Debug)]
pub(super) struct Token {
    pub kind: Kind,
    /// Char offsets.
    pub start: usize,
    pub end: usize,
    /// 1-based, as Rhai counts them.
    pub line: u32,
    pub column: u32,
    /// Braces open around it (an interpolation `${..}` counts as one).
    pub depth: u32,
}

struct Lexer<'a> {
    s: &'a [char],
    i: usize,
    line: u32,
    column: u32,
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(c) = self.peek(0).filter(|c| c.is_alphanumeric() || *c == '_') {
            w.push(c);
            self.bump();
        }
        w
    }

    /// After `/*`: to the matching `*/` (Rhai's block comments nest).
    fn block_comment(&mut self) {
        self.bump();
        self.bump();
        let mut nest = 1;
        while nest > 0 {
            match (self.bump(), self.peek(0)) {
                (None, _) => return,
                (Some('*'), Some('/')) => {
                    self.bump();
                    nest -= 1;
                }
                (Some('/'), Some('*')) => {
                    self.bump();
                    nest += 1;
                }
                _ => {}
            }
        }
    }

    /// After an opening `"` or `'`: to the closing one; the text.
    fn quoted(&mut self, quote: char) -> String {
        let mut text = String::new();
        while let Some(c) = self.bump() {
            match c {
                '\\' => match self.bump() {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some('r') => text.push('\r'),
                    Some(other) => text.push(other),
                    None => break,
                },
                c if c == quote => break,
                c => text.push(c),
            }
        }
        text
    }

    /// At `#"` or `##"`...: a raw string; the text.
    fn raw(&mut self) -> String {
        let mut hashes = 0;
        while self.peek(0) == Some('#') {
            self.bump();
            hashes += 1;
        }
        self.bump(); // the opening quote
        let mut text = String::new();
        while let Some(c) = self.bump() {
            if c == '"' && (0..hashes).all(|k| self.peek(k) == Some('#')) {
                for _ in 0..hashes {
                    self.bump();
                }
                break;
            }
            text.push(c);
        }
        text
    }

    /// Inside a backtick string: to its end (Some(text)), or to an
    /// interpolation's `${` (None).
    fn backtick(&mut self) -> Option<String> {
        let mut text = String::new();
        while let Some(c) = self.bump() {
            match c {
                '`' if self.peek(0) == Some('`') => {
                    self.bump();
                    text.push('`');
                }
                '`' => return Some(text),
                '$' if self.peek(0) == Some('{') => {
                    self.bump();
                    return None;
                }
                c => text.push(c),
            }
        }
        Some(text)
    }
}

/// A backtick string (or its part after an interpolation): its text if it
/// ended, or else one level deeper, into the interpolation it opened.
fn string_part(opened: Option<String>, depth: &mut u32, interpolations: &mut Vec<u32>) -> Kind {
    match opened {
        Some(text) => Kind::Str(Some(text)),
        None => {
            *depth += 1;
            interpolations.push(*depth);
            Kind::Str(None)
        }
    }
}

/// Splits Rhai source into the tokens [`scan`] needs, skipping comments and
/// reading strings (with their interpolations) whole. Never fails: what it
/// cannot read, the engine's parser reports.
pub(super) fn lex(s: &[char]) -> Vec<Token> {
    let mut lx = Lexer {
        s,
        i: 0,
        line: 1,
        column: 1,
    };
    let mut out = Vec::new();
    let mut depth = 0u32;
    // For each open `${`: the depth inside it.
    let mut interpolations: Vec<u32> = Vec::new();
    while let Some(c) = lx.peek(0) {
        let (start, line, column, at_depth) = (lx.i, lx.line, lx.column, depth);
        let kind = match (c, lx.peek(1)) {
            (c, _) if c.is_whitespace() => {
                lx.bump();
                continue;
            }
            ('/', Some('/')) => {
                while !matches!(lx.peek(0), None | Some('\n')) {
                    lx.bump();
                }
                continue;
            }
            ('/', Some('*')) => {
                lx.block_comment();
                continue;
            }
            ('"' | '\'', _) => {
                lx.bump();
                let text = lx.quoted(c);
                if c == '"' {
                    Kind::Str(Some(text))
                } else {
                    Kind::Punct('\'')
                }
            }
            ('#', Some('#' | '"')) => Kind::Str(Some(lx.raw())),
            ('`', _) => {
                lx.bump();
                let opened = lx.backtick();
                string_part(opened, &mut depth, &mut interpolations)
            }
            ('}', _) if interpolations.last() == Some(&depth) => {
                // The end of `${..}`: back inside the backtick string.
                interpolations.pop();
                depth -= 1;
                lx.bump();
                let opened = lx.backtick();
                string_part(opened, &mut depth, &mut interpolations);
                Kind::Str(None)
            }
            ('#', Some('{')) | ('{', _) => {
                lx.bump();
                if c == '#' {
                    lx.bump();
                }
                depth += 1;
                Kind::Punct('{')
            }
            ('}', _) => {
                lx.bump();
                depth = depth.saturating_sub(1);
                Kind::Punct('}')
            }
            (':', Some(':')) => {
                lx.bump();
                lx.bump();
                Kind::PathSep
            }
            (c, _) if c.is_alphabetic() || c == '_' => Kind::Ident(lx.word()),
            (c, _) if c.is_ascii_digit() => {
                lx.word();
                Kind::Punct('0')
            }
            (c, _) => {
                lx.bump();
                Kind::Punct(c)
            }
        };
        out.push(Token {
            kind,
            start,
            end: lx.i,
            line,
            column,
            depth: at_depth,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Kind> {
        let chars: Vec<char> = src.chars().collect();
        lex(&chars).into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn lexing_skips_comments_and_reads_strings_whole() {
        use Kind::*;
        assert_eq!(
            kinds("import \"a\" as m; // import \"b\"\n/* /* import */ */ m::f(`x ${m::y} z`)"),
            vec![
                Ident("import".into()),
                Str(Some("a".into())),
                Ident("as".into()),
                Ident("m".into()),
                Punct(';'),
                Ident("m".into()),
                PathSep,
                Ident("f".into()),
                Punct('('),
                Str(None),
                Ident("m".into()),
                PathSep,
                Ident("y".into()),
                Str(None),
                Punct(')'),
            ]
        );
        assert_eq!(
            kinds(r##"#"raw "q""# '\'' "e\"s""##),
            vec![
                Str(Some("raw \"q\"".into())),
                Punct('\''),
                Str(Some("e\"s".into()))
            ]
        );
    }
}
