//! Reading input: when a Rhai block is unfinished (an open brace, bracket,
//! parenthesis, string or block comment) the next line continues it; and
//! which names a piece of code defines, for tab completion.

/// Whether `text` is complete: every bracket closed, no string or block
/// comment left open. A stray closing bracket counts as complete (the engine
/// reports the syntax error).
///
/// ```
/// use zpar::console::input::is_complete;
/// assert!(is_complete("%px let x = [1, 2];"));
/// assert!(!is_complete("%px for i in 0..3 {"));
/// assert!(!is_complete("%px print(\"open"));
/// ```
pub fn is_complete(text: &str) -> bool {
    let mut depth: Vec<char> = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                // Rhai block comments nest.
                let mut nest = 1;
                while nest > 0 {
                    match chars.next() {
                        None => return false,
                        Some('*') if chars.peek() == Some(&'/') => {
                            chars.next();
                            nest -= 1;
                        }
                        Some('/') if chars.peek() == Some(&'*') => {
                            chars.next();
                            nest += 1;
                        }
                        Some(_) => {}
                    }
                }
            }
            '"' | '\'' | '`' => {
                let quote = c;
                loop {
                    match chars.next() {
                        None => return false,
                        Some('\\') if quote != '`' => {
                            chars.next();
                        }
                        Some(c) if c == quote => break,
                        Some(_) => {}
                    }
                }
            }
            '(' | '[' | '{' => depth.push(c),
            ')' | ']' | '}' => {
                let opened = depth.pop();
                if opened.is_none() {
                    return true;
                }
            }
            _ => {}
        }
    }
    depth.is_empty()
}

/// The names `code` defines at any level with `let`, `const` or `fn`, in
/// order of appearance (strings and comments skipped).
///
/// ```
/// use zpar::console::input::defined_names;
/// assert_eq!(defined_names("let a = 1; fn f(x) { let b = x; } // let c"), ["a", "f", "b"]);
/// ```
pub fn defined_names(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut words = words(code).into_iter();
    while let Some(w) = words.next() {
        if matches!(w.as_str(), "let" | "const" | "fn") {
            if let Some(name) = words.next() {
                if is_identifier(&name) && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
}

/// Whether `s` is a Rhai variable name.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Identifier-like words outside strings and comments.
fn words(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut chars = code.chars().peekable();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                flush(&mut word, &mut out);
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                flush(&mut word, &mut out);
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '"' | '\'' | '`' => {
                flush(&mut word, &mut out);
                while let Some(s) = chars.next() {
                    if s == '\\' && c != '`' {
                        chars.next();
                    } else if s == c {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' => word.push(c),
            _ => flush(&mut word, &mut out),
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_blocks_continue() {
        assert!(is_complete(""));
        assert!(is_complete("%px 1 + 1"));
        assert!(!is_complete("%px if x {"));
        assert!(!is_complete("%px if x {\n  print(x);"));
        assert!(is_complete("%px if x {\n  print(x);\n}"));
        assert!(!is_complete("%push xs = [1,"));
        assert!(!is_complete("%px f(1,"));
        assert!(!is_complete("%px let s = `multi"));
        assert!(!is_complete("%px /* open"));
        assert!(!is_complete("%px /* a /* nested */ still open"));
    }

    #[test]
    fn strings_and_comments_hide_brackets() {
        assert!(is_complete("%px print(\"{\")"));
        assert!(is_complete("%px print('{')"));
        assert!(is_complete("%px print(\"\\\"{\")"));
        assert!(is_complete("%px 1 // {"));
        assert!(is_complete("%px /* { */ 1"));
        assert!(
            is_complete("%px 1 }"),
            "a stray close is the engine's to report"
        );
    }

    #[test]
    fn names_defined() {
        assert_eq!(
            defined_names("let x = 1;\nconst LIMIT = 3; fn go(a) { a }"),
            ["x", "LIMIT", "go"]
        );
        assert!(defined_names("print(\"let y = 2\")").is_empty());
        assert!(defined_names("/* let z */ 1").is_empty());
        assert_eq!(defined_names("let x = 1; let x = 2;"), ["x"]);
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("data_sum"));
        assert!(is_identifier("_x1"));
        assert!(!is_identifier("1x"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier(""));
    }
}
