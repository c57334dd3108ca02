//! Reading code the way a front end asks about it: is it complete (from
//! Rhai's own parser), which name is at the cursor, and what could complete
//! it. Pure functions, tested without sockets.

use zpar_protocol::kernel::{Completeness, IsCompleteReply};

/// Rhai's keywords and the built-in names a script uses like keywords:
/// completed like names.
pub(crate) const KEYWORDS: &[&str] = &[
    "as",
    "break",
    "call",
    "catch",
    "const",
    "continue",
    "curry",
    "debug",
    "do",
    "else",
    "eval",
    "export",
    "false",
    "fn",
    "Fn",
    "for",
    "global",
    "if",
    "import",
    "in",
    "is_def_fn",
    "is_def_var",
    "is_shared",
    "let",
    "loop",
    "print",
    "private",
    "return",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "type_of",
    "until",
    "while",
];

/// Whether `code` is ready to run, by compiling it with `engine`:
///
/// - it compiles: complete — unless it ends inside a block comment, which
///   Rhai's parser accepts silently (told by compiling it again with a `*/`
///   after it: that compiles only if the comment was open);
/// - the parser stopped at or past the end of the code (`if x {`, `f(1,`,
///   `let y =`), or a string is open: incomplete, with the next line's
///   indent;
/// - the parser stopped earlier (`let x = 1 1`, `1 }`): invalid, whatever
///   follows.
///
/// ```ignore
/// let e = rhai::Engine::new();
/// assert_eq!(is_complete(&e, "if x {").status, Completeness::Incomplete);
/// ```
pub(crate) fn is_complete(engine: &rhai::Engine, code: &str) -> IsCompleteReply {
    let incomplete = || IsCompleteReply {
        status: Completeness::Incomplete,
        indent: Some(next_indent(code)),
    };
    let done = |status| IsCompleteReply {
        status,
        indent: None,
    };
    if code.trim().is_empty() {
        return done(Completeness::Complete);
    }
    match engine.compile(code) {
        Ok(_) if engine.compile(format!("{code}\n*/")).is_ok() => incomplete(),
        Ok(_) => done(Completeness::Complete),
        Err(e) => {
            let open_string = matches!(
                e.err_type(),
                rhai::ParseErrorType::BadInput(rhai::LexError::UnterminatedString)
            );
            let at_end = match (e.position().line(), e.position().position()) {
                (Some(line), Some(column)) => (line, column) > last_char(code),
                _ => true,
            };
            if open_string || at_end {
                incomplete()
            } else {
                done(Completeness::Invalid)
            }
        }
    }
}

/// The 1-based line and column (in characters) of the last character of
/// `code` that is not white space; (0, 0) if there is none.
fn last_char(code: &str) -> (usize, usize) {
    code.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let trimmed = line.trim_end();
            (!trimmed.is_empty()).then(|| (i + 1, trimmed.chars().count()))
        })
        .last()
        .unwrap_or((0, 0))
}

/// The indent of the line after `code`: the last line's, and four spaces
/// more after an opening bracket.
fn next_indent(code: &str) -> String {
    let last = code
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut indent: String = last.chars().take_while(|c| c.is_whitespace()).collect();
    if last.trim_end().ends_with(['{', '[', '(']) {
        indent.push_str("    ");
    }
    indent
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The word being typed at `cursor` (in code points; past the end is the
/// end): where it starts, and whether it follows a `.` (a method call).
pub(crate) fn word_before(code: &str, cursor: usize) -> (usize, String, bool) {
    let chars: Vec<char> = code.chars().collect();
    let cursor = cursor.min(chars.len());
    let start = (0..cursor)
        .rev()
        .take_while(|&i| is_name_char(chars[i]))
        .last()
        .unwrap_or(cursor);
    let word: String = chars[start..cursor].iter().collect();
    let method = start > 0 && chars[start - 1] == '.';
    (start, word, method)
}

/// The whole name the cursor is in or just after, for inspection.
pub(crate) fn name_at(code: &str, cursor: usize) -> Option<String> {
    let chars: Vec<char> = code.chars().collect();
    let cursor = cursor.min(chars.len());
    let (start, _, _) = word_before(code, cursor);
    let end = (cursor..chars.len())
        .take_while(|&i| is_name_char(chars[i]))
        .last()
        .map_or(cursor, |i| i + 1);
    let name: String = chars[start..end].iter().collect();
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_');
    starts_well.then_some(name)
}

/// The candidates that start with `prefix`, sorted, each once.
pub(crate) fn matching<'a>(
    prefix: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut out: Vec<String> = candidates
        .into_iter()
        .filter(|c| c.starts_with(prefix))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: &str) -> Completeness {
        is_complete(&rhai::Engine::new(), code).status
    }

    #[test]
    fn complete_code_is_complete() {
        for code in [
            "",
            "  ",
            "40 + 2",
            "let x = 1;",
            "print(\"a\")",
            "fn f(x) { x }",
            "if x { 1 } else { 2 }",
            "1 // a { in a comment",
            "/* closed */ 1",
        ] {
            assert_eq!(status(code), Completeness::Complete, "{code:?}");
        }
    }

    #[test]
    fn code_that_stops_at_its_end_is_incomplete() {
        for code in [
            "if x {",
            "if x {\n  print(x);",
            "fn f(x) {",
            "let x = [1,",
            "f(1,",
            "1 +",
            "let y =",
            "let x = (1 + 2",
            "#{a: ",
            "x.",
            "switch x {",
            "try { 1 } catch",
            "let s = `multi",
            "let s = \"open",
            "/* open",
            "/* a /* nested */ still open",
            "loop {\n",
        ] {
            assert_eq!(status(code), Completeness::Incomplete, "{code:?}");
        }
    }

    #[test]
    fn code_broken_before_its_end_is_invalid() {
        for code in [
            "let x = 1 1",
            "1 }",
            "1 + 2)",
            "let x = ; 5",
            "let 5 = 1; 2",
        ] {
            assert_eq!(status(code), Completeness::Invalid, "{code:?}");
        }
    }

    #[test]
    fn the_next_line_is_indented_inside_a_block() {
        let e = rhai::Engine::new();
        assert_eq!(is_complete(&e, "if x {").indent.as_deref(), Some("    "));
        assert_eq!(
            is_complete(&e, "if x {\n    if y {").indent.as_deref(),
            Some("        ")
        );
        assert_eq!(
            is_complete(&e, "if x {\n    let a = 1 +").indent.as_deref(),
            Some("    ")
        );
        assert_eq!(is_complete(&e, "1").indent, None);
    }

    #[test]
    fn words_and_names_at_the_cursor() {
        assert_eq!(word_before("let x = pri", 11), (8, "pri".into(), false));
        assert_eq!(word_before("xs.le", 5), (3, "le".into(), true));
        assert_eq!(word_before("1 + ", 4), (4, String::new(), false));
        assert_eq!(word_before("pri", 99), (0, "pri".into(), false));
        // Code points, not bytes.
        assert_eq!(word_before("\"é\" + ab", 8), (6, "ab".into(), false));
        assert_eq!(name_at("f(alpha_value)", 5).as_deref(), Some("alpha_value"));
        assert_eq!(
            name_at("f(alpha_value)", 13).as_deref(),
            Some("alpha_value")
        );
        assert_eq!(name_at("1 + 2", 1), None);
        assert_eq!(name_at("12ab", 2), None);
    }

    #[test]
    fn matches_are_sorted_and_unique() {
        assert_eq!(
            matching("pr", ["print", "private", "print", "x", "pr"]),
            ["pr", "print", "private"]
        );
        assert!(KEYWORDS.contains(&"let"));
    }
}
