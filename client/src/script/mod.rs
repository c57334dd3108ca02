//! Script files for [`DirectView::run`](crate::DirectView::run): a `.rhai`
//! file and the files it `import`s, read here on the client and joined into
//! one piece of code, with a map from its lines back to the files.
//!
//! # Imports are inlined on the client
//!
//! Engines may run on other hosts with no shared filesystem, so an
//! `import "util" as util;` cannot be left to the engine's module resolver:
//! the file is here, not there. [`Script::load`] therefore reads each
//! top-level `import "PATH" [as NAME];` itself:
//!
//! - PATH is taken relative to the folder of the file that imports it (an
//!   absolute PATH as it is), and `.rhai` is added when it has no extension;
//! - the imported file's text replaces the `import` statement, once per
//!   file however often it is imported (an import cycle is an error);
//! - `NAME::item` in the importing file becomes `item`: the `NAME::` is
//!   blanked out, so every column stays where it was in the file.
//!
//! So an imported file's `fn`s and top-level variables land in the engines'
//! namespaces under their plain names, like the main file's, and stay there
//! for later `execute`s and `apply`s. One message carries everything, and
//! nothing on the engines reads a file. What this does not do: give an
//! imported file a namespace of its own (two files defining the same `fn`
//! with the same number of parameters: the later one wins), or import from
//! inside a block or function, or from a path computed at run time (both
//! are local errors naming the line).
//!
//! Every line of the joined code remembers its file and line, so an engine's
//! error at line L of the joined code is reported at its own file and line
//! ([`Error::InFile`]).

use crate::error::{Error, Result};
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod lex;
use lex::{lex, Kind, Token};

/// A script file and the files it imports, joined into the code one
/// `execute_request` carries, with each line's origin.
///
/// ```no_run
/// use zpar_client::script::Script;
/// # fn main() -> zpar_client::Result<()> {
/// let script = Script::load("lib/setup.rhai")?;      // and what it imports
/// println!("{} lines from {:?}", script.code().lines().count(), script.files());
/// let view = zpar_client::Client::connect()?.all();
/// view.run_script(&script)?.get()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Script {
    code: String,
    map: Arc<SourceMap>,
}

/// Where each line of a [`Script`]'s joined code comes from.
#[derive(Debug)]
pub(crate) struct SourceMap {
    /// The files, the one run first; as their paths were given or resolved.
    files: Vec<PathBuf>,
    /// For line L of the joined code (1-based), `lines[L - 1]`: the index
    /// in `files` and the line there.
    lines: Vec<(usize, u32)>,
}

impl Script {
    /// Reads `path` and every file it imports, relative to the file that
    /// imports it (see the [module notes](self)). Nothing is sent.
    ///
    /// A file that is missing, unreadable or not UTF-8, and an `import` that
    /// cannot be inlined, are [`Error::ScriptFile`]s naming the file (and the
    /// line and column of the `import`).
    pub fn load(path: impl AsRef<Path>) -> Result<Script> {
        let mut loader = Loader::default();
        loader.include(path.as_ref().to_path_buf(), None)?;
        loader.out.finish_line();
        Ok(Script {
            code: loader.out.code,
            map: Arc::new(SourceMap {
                files: loader.files,
                lines: loader.out.lines,
            }),
        })
    }

    /// The joined code, as the engines get it.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The files read: the one given first, then the imported ones.
    pub fn files(&self) -> &[PathBuf] {
        &self.map.files
    }

    /// The file and line that line `line` (1-based) of [`code`](Self::code)
    /// comes from.
    ///
    /// ```no_run
    /// let s = zpar_client::script::Script::load("main.rhai").unwrap();
    /// if let Some((file, line)) = s.locate(3) {
    ///     println!("{}:{line}", file.display());
    /// }
    /// ```
    pub fn locate(&self, line: u32) -> Option<(&Path, u32)> {
        self.map.locate(line)
    }

    pub(crate) fn source_map(&self) -> Arc<SourceMap> {
        Arc::clone(&self.map)
    }
}

impl SourceMap {
    fn locate(&self, line: u32) -> Option<(&Path, u32)> {
        let (file, l) = *self.lines.get((line as usize).checked_sub(1)?)?;
        Some((self.files[file].as_path(), l))
    }

    /// An engine's error in the joined code, as an error in the file: a
    /// script error becomes [`Error::InFile`] at the file's own line (and
    /// the column, which inlining keeps); other errors stay as they are.
    pub(crate) fn remap(&self, e: Error) -> Error {
        match e {
            Error::Multiple(all) => {
                Error::Multiple(all.into_iter().map(|e| self.remap(e)).collect())
            }
            Error::RemoteError {
                engine,
                ename,
                message,
                line,
                column,
            } => {
                let place = line.and_then(|l| self.locate(l));
                let (path, line, column) = match place {
                    Some((path, l)) => (path.to_path_buf(), Some(l), column),
                    None => (self.files[0].clone(), None, None),
                };
                Error::InFile {
                    path,
                    line,
                    column,
                    error: Box::new(Error::RemoteError {
                        engine,
                        ename,
                        message,
                        line: None,
                        column: None,
                    }),
                }
            }
            other => other,
        }
    }
}

/// Reads files and joins them.
#[derive(Default)]
struct Loader {
    files: Vec<PathBuf>,
    /// Files already inlined (canonical paths).
    done: HashSet<PathBuf>,
    /// The chain of files being read (canonical paths), for cycles.
    active: Vec<PathBuf>,
    out: Builder,
}

/// Where an `import` is, to name it in an error.
struct ImportSite {
    file: PathBuf,
    line: u32,
    column: u32,
}

impl Loader {
    fn include(&mut self, path: PathBuf, site: Option<ImportSite>) -> Result<()> {
        let text = std::fs::read_to_string(&path).map_err(|e| unreadable(&path, &site, e))?;
        let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if let Some(at) = self.active.iter().position(|p| *p == canonical) {
            let site = site.expect("only an import can close a cycle");
            let chain: Vec<String> = self.active[at..]
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| p.display().to_string())
                .collect();
            return Err(Error::ScriptFile {
                path: site.file,
                line: Some(site.line),
                column: Some(site.column),
                message: format!(
                    "import cycle: {}; move what both files need into a third one",
                    chain.join(" imports ")
                ),
                source: None,
            });
        }
        if !self.done.insert(canonical.clone()) {
            return Ok(());
        }
        self.active.push(canonical);
        let file = self.files.len();
        self.files.push(path.clone());

        let chars: Vec<char> = text.chars().collect();
        let tokens = lex(&chars);
        let (imports, blanks) = scan(&tokens, &path)?;
        let lines = LineIndex::new(&chars);
        let mut pos = 0;
        for import in imports {
            self.out
                .text(file, &chars, pos..import.start, lines.line_of(pos), &blanks);
            self.out.finish_line();
            let target = resolve(&path, &import.path);
            self.include(
                target,
                Some(ImportSite {
                    file: path.clone(),
                    line: import.line,
                    column: import.column,
                }),
            )?;
            self.out.finish_line();
            // Its own `;` after the inlined file ends that file's last statement.
            self.out.start_line(file, import.line);
            self.out.code.push(';');
            self.out.finish_line();
            // The rest of the import's last line, at its own columns.
            let end_line = lines.line_of(import.end);
            self.out.start_line(file, end_line);
            let line_start = lines.start_of(end_line);
            self.out
                .code
                .extend(chars[line_start..import.end].iter().map(|&c| {
                    if c == '\t' {
                        '\t'
                    } else {
                        ' '
                    }
                }));
            pos = import.end;
        }
        self.out
            .text(file, &chars, pos..chars.len(), lines.line_of(pos), &blanks);
        self.out.finish_line();
        self.active.pop();
        Ok(())
    }
}

/// The file an `import` names: relative to the importing file's folder,
/// `.rhai` added when there is no extension.
fn resolve(importer: &Path, import: &str) -> PathBuf {
    let mut target = importer
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(import);
    if target.extension().is_none() {
        target.set_extension("rhai");
    }
    target
}

fn unreadable(path: &Path, site: &Option<ImportSite>, e: std::io::Error) -> Error {
    use std::io::ErrorKind;
    let relative_to = match site {
        None => match std::env::current_dir() {
            Ok(cwd) => format!("the current directory, {}", cwd.display()),
            Err(_) => "the current directory".to_string(),
        },
        Some(s) => format!("the folder of {}", s.file.display()),
    };
    let why = match e.kind() {
        ErrorKind::NotFound => {
            format!("no such file; check the path (a relative path is taken from {relative_to})")
        }
        ErrorKind::PermissionDenied => "permission denied; make it readable".to_string(),
        ErrorKind::InvalidData => "it is not UTF-8 text; save it as UTF-8".to_string(),
        _ => "cannot read it".to_string(),
    };
    let source = Some(Arc::new(e));
    match site {
        None => Error::ScriptFile {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot run this script file: {why}"),
            source,
        },
        Some(s) => Error::ScriptFile {
            path: s.file.clone(),
            line: Some(s.line),
            column: Some(s.column),
            message: format!("cannot import {}: {why}", path.display()),
            source,
        },
    }
}

/// The joined code and each line's origin.
#[derive(Default)]
struct Builder {
    code: String,
    lines: Vec<(usize, u32)>,
    /// The origin of the line being built, once it has one.
    current: Option<(usize, u32)>,
}

impl Builder {
    /// Starts a line from `file`'s line `line` (finishing the current one).
    fn start_line(&mut self, file: usize, line: u32) {
        self.finish_line();
        self.current = Some((file, line));
    }

    fn finish_line(&mut self) {
        if let Some(origin) = self.current.take() {
            self.code.push('\n');
            self.lines.push(origin);
        }
    }

    /// Appends `chars[range]` of `file`, which starts on line `line`, with
    /// the `blanks` ranges turned into spaces.
    fn text(
        &mut self,
        file: usize,
        chars: &[char],
        range: Range<usize>,
        mut line: u32,
        blanks: &[Range<usize>],
    ) {
        for i in range {
            let c = chars[i];
            if c == '\n' {
                if self.current.is_none() {
                    self.current = Some((file, line));
                }
                self.finish_line();
                line += 1;
                continue;
            }
            if self.current.is_none() {
                self.current = Some((file, line));
            }
            let blank = blanks.iter().any(|b| b.contains(&i));
            self.code.push(if blank && c != '\t' { ' ' } else { c });
        }
    }
}

/// Line numbers of char offsets in one file.
struct LineIndex {
    /// Offset of the first char of each line.
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(chars: &[char]) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            chars
                .iter()
                .enumerate()
                .filter(|(_, &c)| c == '\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// The 1-based line of offset `i`.
    fn line_of(&self, i: usize) -> u32 {
        self.starts.partition_point(|&s| s <= i) as u32
    }

    fn start_of(&self, line: u32) -> usize {
        self.starts[line as usize - 1]
    }
}

/// One `import` statement: where it is and what it names.
#[derive(Debug, PartialEq)]
struct Import {
    /// Char offsets of the statement (its `;` included).
    start: usize,
    end: usize,
    path: String,
    line: u32,
    column: u32,
}

/// The top-level imports of a file, and the `NAME::` prefixes to blank.
fn scan(tokens: &[Token], file: &Path) -> Result<(Vec<Import>, Vec<Range<usize>>)> {
    let fail = |t: &Token, message: String| Error::ScriptFile {
        path: file.to_path_buf(),
        line: Some(t.line),
        column: Some(t.column),
        message,
        source: None,
    };
    let mut imports = Vec::new();
    let mut aliases = HashSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if t.kind != Kind::Ident("import".into()) {
            i += 1;
            continue;
        }
        if t.depth > 0 {
            return Err(fail(
                t,
                "`import` inside a block or function cannot be inlined; move it to the top \
                 level of the file"
                    .into(),
            ));
        }
        let Some(Kind::Str(Some(path))) = tokens.get(i + 1).map(|t| &t.kind) else {
            return Err(fail(
                t,
                "`import` needs a string literal path here (`import \"util\" as util;`): the \
                 client reads the imported file before anything runs"
                    .into(),
            ));
        };
        let mut last = i + 1;
        if tokens.get(last + 1).map(|t| &t.kind) == Some(&Kind::Ident("as".into())) {
            match tokens.get(last + 2).map(|t| &t.kind) {
                Some(Kind::Ident(alias)) => {
                    aliases.insert(alias.clone());
                    last += 2;
                }
                _ => {
                    return Err(fail(
                        &tokens[last + 1],
                        "`as` needs a name after it (`import \"util\" as util;`)".into(),
                    ))
                }
            }
        }
        if tokens.get(last + 1).map(|t| &t.kind) == Some(&Kind::Punct(';')) {
            last += 1;
        }
        imports.push(Import {
            start: t.start,
            end: tokens[last].end,
            path: path.clone(),
            line: t.line,
            column: t.column,
        });
        i = last + 1;
    }
    let mut blanks = Vec::new();
    for (i, pair) in tokens.windows(2).enumerate() {
        let after_sep = i > 0 && tokens[i - 1].kind == Kind::PathSep;
        if let (Kind::Ident(name), Kind::PathSep) = (&pair[0].kind, &pair[1].kind) {
            if aliases.contains(name) && !after_sep {
                blanks.push(pair[0].start..pair[1].end);
            }
        }
    }
    Ok((imports, blanks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zpar-script-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn imports_are_inlined_once_with_lines_mapped() {
        let d = dir("inline");
        fs::create_dir_all(d.join("lib")).unwrap();
        fs::write(
            d.join("lib/util.rhai"),
            "// util\nfn twice(x) { x * 2 }\nlet base = 10",
        )
        .unwrap();
        fs::write(
            d.join("main.rhai"),
            "import \"lib/util\" as u;\nimport \"lib/util.rhai\" as again;\nlet y = u::twice(u::base); y\n",
        )
        .unwrap();
        let s = Script::load(d.join("main.rhai")).unwrap();
        assert_eq!(s.files().len(), 2);
        assert_eq!(s.code().matches("fn twice").count(), 1, "{}", s.code());
        let lines: Vec<&str> = s.code().lines().collect();
        let at = lines.iter().position(|l| l.contains("let y")).unwrap();
        // `u::` blanked, columns kept.
        assert_eq!(lines[at], "let y =    twice(   base); y");
        assert_eq!(
            s.locate(at as u32 + 1),
            Some((d.join("main.rhai").as_path(), 3))
        );
        let f = lines.iter().position(|l| l.contains("fn twice")).unwrap();
        assert_eq!(
            s.locate(f as u32 + 1),
            Some((d.join("lib/util.rhai").as_path(), 2))
        );
    }

    #[test]
    fn code_after_an_import_on_its_line_keeps_its_columns() {
        let d = dir("same-line");
        fs::write(d.join("m.rhai"), "fn one() { 1 }").unwrap();
        fs::write(d.join("main.rhai"), "import \"m\"; let x = one();").unwrap();
        let s = Script::load(d.join("main.rhai")).unwrap();
        let last = s.code().lines().last().unwrap();
        assert_eq!(last, format!("{}let x = one();", " ".repeat(12)));
        assert_eq!(s.locate(s.code().lines().count() as u32).unwrap().1, 1);
    }

    #[test]
    fn bad_files_and_imports_are_local_errors() {
        let d = dir("bad");
        let e = Script::load(d.join("missing.rhai")).unwrap_err();
        assert!(matches!(e, Error::ScriptFile { line: None, .. }), "{e}");
        assert!(e.to_string().contains("missing.rhai"), "{e}");
        assert!(e.to_string().contains("no such file"), "{e}");

        fs::write(d.join("a.rhai"), "let x = 1;\nimport \"nope\" as n;").unwrap();
        let e = Script::load(d.join("a.rhai")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("a.rhai:2:1") && text.contains("nope.rhai"),
            "{text}"
        );

        fs::write(d.join("b.rhai"), "fn f() {\n  import \"a\" as a;\n}").unwrap();
        let e = Script::load(d.join("b.rhai")).unwrap_err().to_string();
        assert!(e.contains("b.rhai:2:3") && e.contains("top level"), "{e}");

        fs::write(d.join("c.rhai"), "let p = \"a\";\nimport p as a;").unwrap();
        let e = Script::load(d.join("c.rhai")).unwrap_err().to_string();
        assert!(
            e.contains("c.rhai:2:1") && e.contains("string literal"),
            "{e}"
        );

        fs::write(d.join("x.rhai"), "import \"y\";").unwrap();
        fs::write(d.join("y.rhai"), "import \"x\";").unwrap();
        let e = Script::load(d.join("x.rhai")).unwrap_err().to_string();
        assert!(e.contains("import cycle"), "{e}");
    }

    #[test]
    fn engine_errors_point_into_the_files() {
        let d = dir("remap");
        fs::write(d.join("m.rhai"), "fn f() {\n  boom\n}").unwrap();
        fs::write(d.join("main.rhai"), "import \"m\" as m;\nm::f()").unwrap();
        let s = Script::load(d.join("main.rhai")).unwrap();
        let at = s.code().lines().position(|l| l.contains("boom")).unwrap() as u32 + 1;
        let e = s.source_map().remap(Error::RemoteError {
            engine: 3,
            ename: "UnknownName".into(),
            message: "Variable not found: boom".into(),
            line: Some(at),
            column: Some(3),
        });
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "{}:2:3: engine 3: UnknownName",
                d.join("m.rhai").display()
            )),
            "{text}"
        );
        assert_eq!(e.engine(), Some(3));
    }
}
