//! Reading input: a rustyline loop on a terminal (history file, Ctrl-R,
//! completion, multi-line blocks, an external printer for what arrives
//! while the prompt is up), or plain lines from a pipe.

use super::commands::command_words;
use super::input;
use super::output::Sink;
use super::render;
use super::session::{Names, Session, Status};
use super::signal;
use anyhow::Result;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{CompletionType, Config, Context, Editor};
use std::io::BufRead;
use std::path::Path;

/// Completion and multi-line input for the editor.
pub struct ConsoleHelper {
    names: Names,
}

impl Completer for ConsoleHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, words) = complete(line, pos, &self.names.snapshot());
        let pairs = words
            .into_iter()
            .map(|w| Pair {
                display: w.trim_end().to_string(),
                replacement: w,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ConsoleHelper {
    type Hint = String;
}

impl Highlighter for ConsoleHelper {}

impl Validator for ConsoleHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if input::is_complete(ctx.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl rustyline::Helper for ConsoleHelper {}

/// Completions for the word before `pos`: where it starts, and the
/// candidates. A command word at the start of the line (`%au` → `%autopx `),
/// a command name after `%help`, otherwise a name from `names`.
///
/// ```
/// use zpar::console::repl::complete;
/// let names = vec!["data".to_string(), "data_sum".to_string()];
/// assert_eq!(complete("%px dat", 7, &names), (4, vec!["data".to_string(), "data_sum".to_string()]));
/// assert_eq!(complete("%autop", 6, &names), (0, vec!["%autopx ".to_string()]));
/// ```
pub fn complete(line: &str, pos: usize, names: &[String]) -> (usize, Vec<String>) {
    let pos = pos.min(line.len());
    let before = line.get(..pos).unwrap_or(line);
    if let Some(args) = before.trim_start().strip_prefix("%run") {
        if args.starts_with(char::is_whitespace) {
            let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
            let previous = before[..start].split_whitespace().next_back();
            let word = &before[start..];
            if word.starts_with('-') || matches!(previous, Some("--targets" | "-t")) {
                return (start, Vec::new());
            }
            return (start, complete_path(word));
        }
    }
    let start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '%'))
        .map_or(0, |i| i + 1);
    let word = &before[start..];
    let head = before[..start].trim();
    if word.starts_with('%') {
        if !head.is_empty() {
            return (start, Vec::new());
        }
        let mut words: Vec<String> = command_words()
            .filter(|c| c.starts_with(word))
            .map(|c| format!("{c} "))
            .collect();
        words.sort();
        return (start, words);
    }
    if head == "%help" {
        let mut words: Vec<String> = command_words()
            .map(|c| c.trim_start_matches('%').to_string())
            .filter(|c| c.starts_with(word))
            .collect();
        words.sort();
        return (start, words);
    }
    if word.is_empty() || word.contains('%') || word.starts_with(|c: char| c.is_ascii_digit()) {
        return (start, Vec::new());
    }
    let words = names
        .iter()
        .filter(|n| n.starts_with(word))
        .cloned()
        .collect();
    (start, words)
}

/// Script files and folders that complete `word` (for `%run`): folders
/// with a trailing `/`, files ending in `.rhai`; hidden ones only when
/// `word` asks for them.
///
/// ```
/// use zpar::console::repl::complete_path;
/// let dir = std::env::temp_dir().join(format!("zpar-doc-{}", std::process::id()));
/// std::fs::create_dir_all(dir.join("lib")).unwrap();
/// std::fs::write(dir.join("setup.rhai"), "").unwrap();
/// let base = format!("{}/", dir.display());
/// assert_eq!(complete_path(&format!("{base}s")), [format!("{base}setup.rhai")]);
/// assert_eq!(complete_path(&format!("{base}l")), [format!("{base}lib/")]);
/// ```
pub fn complete_path(word: &str) -> Vec<String> {
    let (dir, prefix) = match word.rfind('/') {
        Some(i) => (&word[..=i], &word[i + 1..]),
        None => ("", word),
    };
    let folder = match (dir.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ if dir.is_empty() => Path::new(".").to_path_buf(),
        _ => Path::new(dir).to_path_buf(),
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut words: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            if !name.starts_with(prefix) || (name.starts_with('.') && !prefix.starts_with('.')) {
                return None;
            }
            if entry.path().is_dir() {
                Some(format!("{dir}{name}/"))
            } else if name.ends_with(".rhai") {
                Some(format!("{dir}{name}"))
            } else {
                None
            }
        })
        .collect();
    words.sort();
    words
}

/// The interactive loop. Returns the exit code.
pub fn interactive(session: &mut Session, history: Option<&Path>) -> Result<i32> {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_space(true)
        .history_ignore_dups(true)?
        .max_history_size(10_000)?
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<ConsoleHelper, DefaultHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ConsoleHelper {
        names: session.names(),
    }));
    let colour = session.out().colour();
    if let Some(h) = history {
        // 0600 like every file zpar keeps (it holds the code typed here); an
        // old one open to others is tightened. A failure shows when writing.
        let _ = zpar_protocol::private::touch(h);
    }
    if let Some(h) = history.filter(|h| h.exists()) {
        if let Err(e) = editor.load_history(h) {
            session.out().line(render::notice(
                &format!("could not read the history file {}: {e}", h.display()),
                colour,
            ));
        }
    }
    if let Ok(printer) = editor.create_external_printer() {
        session.out().set_sink(Sink::printer(printer)?);
    }
    let mut n = 1;
    let mut history_failed = false;
    loop {
        let prompt = render::prompt(n, session.autopx(), colour);
        match editor.readline(&prompt) {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line.as_str());
                if let Some(h) = history {
                    if let Err(e) = editor.append_history(h) {
                        if !history_failed {
                            history_failed = true;
                            session.out().line(render::notice(
                                &format!("could not write the history file {}: {e}", h.display()),
                                colour,
                            ));
                        }
                    }
                }
                n += 1;
                session.handle(&line);
                if session.quit() {
                    break;
                }
            }
            // Ctrl-C at the prompt: drop the line, prompt again.
            Err(ReadlineError::Interrupted) | Err(ReadlineError::Signal(_)) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Print straight to stdout again: the editor goes away.
    session.out().set_sink(Sink::Stdout);
    Ok(0)
}

/// Reads commands from a pipe or file: no prompts; an unfinished block
/// takes the next lines. Exit code 1 if a command failed, 130 if Ctrl-C
/// stopped one.
pub fn scripted(session: &mut Session, reader: impl BufRead) -> Result<i32> {
    let mut failed = false;
    let mut pending = String::new();
    for line in reader.lines() {
        let line = line?;
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(&line);
        if !input::is_complete(&pending) {
            continue;
        }
        let entry = std::mem::take(&mut pending);
        if entry.trim().is_empty() {
            continue;
        }
        if signal::take() {
            // Ctrl-C between commands ends a script, as during one.
            return Ok(130);
        }
        match session.handle(&entry) {
            Status::Ok => {}
            Status::Failed => failed = true,
            Status::Interrupted => return Ok(130),
        }
        if session.quit() {
            break;
        }
    }
    if !pending.trim().is_empty() {
        let first = pending.lines().next().unwrap_or_default();
        session.out().line(render::failure(
            &format!("the input ended inside an unfinished block starting {first:?}"),
            session.out().colour(),
        ));
        failed = true;
    }
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["add", "alpha", "data", "data_sum"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn completes_commands_at_the_start() {
        assert_eq!(
            complete("%pu", 3, &names()),
            (0, vec!["%pull ".to_string(), "%push ".to_string()])
        );
        assert_eq!(
            complete("  %sc", 5, &names()),
            (2, vec!["%scatter ".to_string()])
        );
        assert_eq!(complete("%px %pu", 7, &names()).1, Vec::<String>::new());
        assert_eq!(
            complete("%help au", 8, &names()),
            (6, vec!["autopx".to_string()])
        );
        assert_eq!(
            complete("%help ", 6, &names()).1.len(),
            command_words().count()
        );
    }

    #[test]
    fn completes_names_anywhere_else() {
        assert_eq!(
            complete("%px a", 5, &names()),
            (4, vec!["add".to_string(), "alpha".to_string()])
        );
        assert_eq!(
            complete("%px f(data_", 11, &names()),
            (6, vec!["data_sum".to_string()])
        );
        assert_eq!(
            complete("x + al", 6, &names()),
            (4, vec!["alpha".to_string()])
        );
        assert_eq!(complete("%px 1", 5, &names()).1, Vec::<String>::new());
        // After %run: files, not names.
        let dir = std::env::temp_dir().join(format!("zpar-complete-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("alpha.rhai"), "").unwrap();
        std::fs::write(dir.join("alpha.txt"), "").unwrap();
        let line = format!("%run -t 0 {}/al", dir.display());
        assert_eq!(
            complete(&line, line.len(), &names()),
            (10, vec![format!("{}/alpha.rhai", dir.display())])
        );
        assert_eq!(complete("%run -t ", 8, &names()).1, Vec::<String>::new());
        assert_eq!(complete("%px ", 4, &names()).1, Vec::<String>::new());
        // Completion looks at the word before the cursor only.
        assert_eq!(
            complete("%px al + 1", 6, &names()),
            (4, vec!["alpha".to_string()])
        );
    }
}
