//! The console's commands: one enum, parsed from a line here and dispatched
//! by one `match` in the console's `session` module. Parsing needs no sockets.

use super::input::is_identifier;
use super::literal::{self, parse_sequence, Sequence};
use super::targets::TargetSpec;
use std::time::Duration;
use zpar_client::Value;

/// Tasks `%map` keeps in flight unless `--max` says.
pub const DEFAULT_MAP_OUTSTANDING: usize = 64;

pub use super::help::{command_words, help, spec, ParseError, Spec, COMMANDS};

/// One parsed line of input.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run code on the targets (`%px`, or a plain line in autopx mode).
    Px {
        /// Rhai source.
        code: String,
        /// Engines other than the current targets.
        targets: Option<TargetSpec>,
        /// Wait for the result (default) or return at once (`--noblock`).
        block: bool,
        /// Stop the code on the engines after this long.
        timeout: Option<Duration>,
        /// The label its task records carry (`--label`).
        label: Option<String>,
    },
    /// Run a local script file on the targets (`%run FILE`).
    Run {
        /// The file, as typed (a leading `~/` is the home folder).
        path: String,
        /// Engines other than the current targets.
        targets: Option<TargetSpec>,
    },
    /// Toggle autopx mode.
    Autopx,
    /// Set a variable on the targets.
    Push {
        /// Variable name.
        name: String,
        /// Its value.
        value: Value,
        /// Engines other than the current targets.
        targets: Option<TargetSpec>,
    },
    /// Show a variable from each target.
    Pull {
        /// Variable name.
        name: String,
        /// Engines other than the current targets.
        targets: Option<TargetSpec>,
    },
    /// Split a sequence over the targets.
    Scatter {
        /// Variable name.
        name: String,
        /// The sequence.
        value: Value,
        /// Engines other than the current targets.
        targets: Option<TargetSpec>,
        /// Set one-item blocks as the item itself.
        flatten: bool,
    },
    /// A load-balanced map, its results shown as they come.
    Map {
        /// What to map over.
        sequence: Sequence,
        /// The function (source).
        function: String,
        /// Results in input order (else as they come).
        ordered: bool,
        /// Tasks in flight at most.
        max_outstanding: usize,
        /// A label for the tasks' records.
        label: Option<String>,
        /// Engines other than the current targets.
        targets: Option<TargetSpec>,
    },
    /// Join a variable's blocks from the targets.
    Gather {
        /// Variable name.
        name: String,
        /// Engines other than the current targets.
        targets: Option<TargetSpec>,
    },
    /// Set up a tree communicator on the targets.
    Comm {
        /// Variable name for the communicator.
        name: String,
        /// Engines other than the current targets.
        targets: Option<TargetSpec>,
    },
    /// Show (None) or set the current targets.
    Targets(Option<TargetSpec>),
    /// List the engines (`--all`: every row even for a large cluster).
    Engines {
        /// One row per engine even past the summary size.
        all: bool,
    },
    /// Show the last %px result again.
    Result,
    /// Wait for commands still running.
    Wait(Option<Duration>),
    /// Abort queued work; with `running` (`--running`), the running
    /// request too.
    Abort {
        /// Other engines than the current targets.
        targets: Option<TargetSpec>,
        /// Stop the running requests too.
        running: bool,
    },
    /// Stop running code.
    Interrupt(Option<TargetSpec>),
    /// Empty the engines' namespaces.
    Clear(Option<TargetSpec>),
    /// Make the engines Jupyter kernels too.
    BindKernel(Option<TargetSpec>),
    /// Start the dashboard (once) and show its URL.
    Dashboard,
    /// Show this session's input.
    History,
    /// Leave.
    Quit,
    /// Help on all commands or one.
    Help(Option<String>),
    /// An empty line.
    Nothing,
}

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// Options a command may take before its arguments.
#[derive(Debug, Default)]
struct Opts {
    targets: Option<TargetSpec>,
    noblock: bool,
    flatten: bool,
    timeout: Option<Duration>,
    label: Option<String>,
    running: bool,
    ordered: bool,
    max: Option<usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Opt {
    Targets,
    Block,
    Flatten,
    Timeout,
    Label,
    Running,
    Ordered,
    Max,
}

/// Splits the first whitespace-separated word off `s`.
fn word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn seconds(text: &str, what: &str) -> Result<Duration, ParseError> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        _ => err(format!(
            "{what} takes a number of seconds above 0, not {text:?}"
        )),
    }
}

/// Reads leading options; returns them and the rest of the line.
fn options<'a>(
    cmd: &str,
    mut rest: &'a str,
    allowed: &[Opt],
) -> Result<(Opts, &'a str), ParseError> {
    let mut o = Opts::default();
    loop {
        let (w, after) = word(rest);
        if w == "--" {
            return Ok((o, after));
        }
        if !(w.starts_with("--") || w == "-t" || w.starts_with("-t=")) {
            return Ok((o, rest));
        }
        let (key, inline) = match w.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (w, None),
        };
        let take_value = |after: &'a str| -> Result<(&'a str, &'a str), ParseError> {
            match inline {
                Some(v) => Ok((v, after)),
                None => {
                    let (v, more) = word(after);
                    if v.is_empty() {
                        err(format!("%{cmd} {key} needs a value (see %help {cmd})"))
                    } else {
                        Ok((v, more))
                    }
                }
            }
        };
        let known = |opt: Opt| allowed.contains(&opt);
        rest = match key {
            "--targets" | "-t" if known(Opt::Targets) => {
                let (v, more) = take_value(after)?;
                o.targets = Some(TargetSpec::parse(v).map_err(ParseError)?);
                more
            }
            "--noblock" if known(Opt::Block) => {
                o.noblock = true;
                after
            }
            "--block" if known(Opt::Block) => {
                o.noblock = false;
                after
            }
            "--flatten" if known(Opt::Flatten) => {
                o.flatten = true;
                after
            }
            "--timeout" if known(Opt::Timeout) => {
                let (v, more) = take_value(after)?;
                o.timeout = Some(seconds(v, "--timeout")?);
                more
            }
            "--ordered" if known(Opt::Ordered) => {
                o.ordered = true;
                after
            }
            "--max" if known(Opt::Max) => {
                let (v, more) = take_value(after)?;
                o.max = Some(match v.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => return err(format!("--max takes a number of tasks above 0, not {v:?}")),
                });
                more
            }
            "--running" if known(Opt::Running) => {
                o.running = true;
                after
            }
            "--label" if known(Opt::Label) => {
                let (v, more) = take_value(after)?;
                o.label = Some(v.to_string());
                more
            }
            _ => {
                return err(format!(
                    "%{cmd} has no option {key} (usage: {})",
                    spec(cmd).map_or("", |s| s.usage)
                ))
            }
        };
    }
}

fn name_arg(cmd: &str, rest: &str) -> Result<String, ParseError> {
    let (name, more) = word(rest);
    let usage = spec(cmd).map_or("", |s| s.usage);
    if name.is_empty() {
        return err(format!("%{cmd} needs a variable name (usage: {usage})"));
    }
    if !more.trim().is_empty() {
        return err(format!("%{cmd} takes one name (usage: {usage})"));
    }
    if !is_identifier(name) {
        return err(format!(
            "{name:?} is not a variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    Ok(name.to_string())
}

fn assignment(cmd: &str, rest: &str) -> Result<(String, Value), ParseError> {
    let usage = spec(cmd).map_or("", |s| s.usage);
    let Some((name, value)) = rest.split_once('=') else {
        return err(format!("%{cmd} needs NAME = VALUE (usage: {usage})"));
    };
    let name = name.trim();
    if !is_identifier(name) {
        return err(format!("{name:?} is not a variable name (usage: {usage})"));
    }
    let value = literal::parse(value).map_err(|e| ParseError(format!("%{cmd} {name}: {e}")))?;
    Ok((name.to_string(), value))
}

/// A path without the quotes around it, if it has a matching pair (for
/// names with spaces).
fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

fn no_args(cmd: &str, rest: &str) -> Result<(), ParseError> {
    if rest.trim().is_empty() {
        Ok(())
    } else {
        err(format!(
            "%{cmd} takes no arguments (usage: {})",
            spec(cmd).map_or("", |s| s.usage)
        ))
    }
}

/// Parses one (possibly multi-line) input. In autopx mode a line that is
/// not a %-command is `%px LINE`.
///
/// ```
/// use zpar::console::commands::{parse, Command};
/// assert!(matches!(parse("%px --targets 0,2 x + 1", false).unwrap(),
///                  Command::Px { ref code, .. } if code == "x + 1"));
/// assert!(matches!(parse("x + 1", true).unwrap(), Command::Px { .. }));
/// assert!(parse("x + 1", false).is_err());
/// ```
pub fn parse(line: &str, autopx: bool) -> Result<Command, ParseError> {
    let text = line.trim();
    if text.is_empty() {
        return Ok(Command::Nothing);
    }
    let Some(after_pct) = text.strip_prefix('%') else {
        if autopx {
            return Ok(Command::Px {
                code: text.to_string(),
                targets: None,
                block: true,
                timeout: None,
                label: None,
            });
        }
        return err(
            "plain code runs nowhere here: use `%px CODE` to run it on the engines, \
             or %autopx to send every plain line (%help lists the commands)",
        );
    };
    let (word, rest) = word(after_pct);
    let Some(spec) = spec(word) else {
        return err(format!(
            "unknown command %{word} (%help lists the commands)"
        ));
    };
    let cmd = spec.name;
    use Opt::*;
    Ok(match cmd {
        "px" => {
            let (o, code) = options(cmd, rest, &[Targets, Block, Timeout, Label])?;
            let code = code.trim();
            if code.is_empty() {
                return err(format!("%px needs code to run (usage: {})", spec.usage));
            }
            Command::Px {
                code: code.to_string(),
                targets: o.targets,
                block: !o.noblock,
                timeout: o.timeout,
                label: o.label,
            }
        }
        "run" => {
            let (o, rest) = options(cmd, rest, &[Targets])?;
            let path = unquote(rest.trim());
            if path.is_empty() {
                return err(format!("%run needs a script file (usage: {})", spec.usage));
            }
            Command::Run {
                path: path.to_string(),
                targets: o.targets,
            }
        }
        "autopx" => {
            no_args(cmd, rest)?;
            Command::Autopx
        }
        "push" => {
            let (o, rest) = options(cmd, rest, &[Targets])?;
            let (name, value) = assignment(cmd, rest)?;
            Command::Push {
                name,
                value,
                targets: o.targets,
            }
        }
        "pull" | "gather" | "comm" => {
            let (o, rest) = options(cmd, rest, &[Targets])?;
            let name = name_arg(cmd, rest)?;
            let targets = o.targets;
            match cmd {
                "pull" => Command::Pull { name, targets },
                "gather" => Command::Gather { name, targets },
                _ => Command::Comm { name, targets },
            }
        }
        "scatter" => {
            let (o, rest) = options(cmd, rest, &[Targets, Flatten])?;
            let (name, value) = assignment(cmd, rest)?;
            if !matches!(
                value,
                Value::Array(_) | Value::F64Array(_) | Value::I64Array(_) | Value::Bytes(_)
            ) {
                return err(format!(
                    "%scatter needs a sequence (an array or a range like 0..100), not a {}",
                    value.kind()
                ));
            }
            Command::Scatter {
                name,
                value,
                targets: o.targets,
                flatten: o.flatten,
            }
        }
        "map" => {
            let (o, rest) = options(cmd, rest, &[Targets, Ordered, Max, Label])?;
            let (sequence, function) = parse_sequence(rest).map_err(ParseError)?;
            let function = function.trim();
            if !(function.starts_with('|')
                || function.starts_with("fn ")
                || function.starts_with("Fn("))
            {
                return err(format!(
                    "%map needs a function after the sequence (`|x| x * x`), not {function:?} \
                     (usage: {})",
                    spec.usage
                ));
            }
            Command::Map {
                sequence,
                function: function.to_string(),
                ordered: o.ordered,
                max_outstanding: o.max.unwrap_or(DEFAULT_MAP_OUTSTANDING),
                label: o.label,
                targets: o.targets,
            }
        }
        "targets" => {
            let spec = rest.trim();
            if spec.is_empty() {
                Command::Targets(None)
            } else {
                Command::Targets(Some(TargetSpec::parse(spec).map_err(ParseError)?))
            }
        }
        "wait" => {
            let secs = rest.trim();
            if secs.is_empty() {
                Command::Wait(None)
            } else {
                Command::Wait(Some(seconds(secs, "%wait")?))
            }
        }
        "abort" | "interrupt" | "clear" | "bind_kernel" => {
            let allowed: &[Opt] = match cmd {
                "abort" => &[Targets, Running],
                _ => &[Targets],
            };
            let (o, rest) = options(cmd, rest, allowed)?;
            no_args(cmd, rest)?;
            match cmd {
                "abort" => Command::Abort {
                    targets: o.targets,
                    running: o.running,
                },
                "interrupt" => Command::Interrupt(o.targets),
                "bind_kernel" => Command::BindKernel(o.targets),
                _ => Command::Clear(o.targets),
            }
        }
        "help" => {
            let name = rest.trim();
            if name.is_empty() {
                Command::Help(None)
            } else {
                Command::Help(Some(name.trim_start_matches('%').to_string()))
            }
        }
        "dashboard" => match rest.trim() {
            "" => Command::Dashboard,
            other => return err(format!("%dashboard takes no argument, not {other:?}")),
        },
        "engines" => match rest.trim() {
            "" => Command::Engines { all: false },
            "--all" => Command::Engines { all: true },
            other => {
                return err(format!(
                    "%engines takes no argument but --all, not {other:?}"
                ))
            }
        },
        other => {
            no_args(cmd, rest)?;
            match other {
                "result" => Command::Result,
                "history" => Command::History,
                "quit" => Command::Quit,
                _ => unreachable!("every command in COMMANDS is matched"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(code: &str) -> Command {
        Command::Px {
            code: code.into(),
            targets: None,
            block: true,
            timeout: None,
            label: None,
        }
    }

    #[test]
    fn px_and_its_options() {
        assert_eq!(parse("%px 1 + 1", false).unwrap(), px("1 + 1"));
        assert_eq!(
            parse(
                "%px --targets 0,2 --noblock --timeout 1.5 --label fit-1 loop {}",
                false
            )
            .unwrap(),
            Command::Px {
                code: "loop {}".into(),
                targets: Some(TargetSpec::Ids(vec![0, 2])),
                block: false,
                timeout: Some(Duration::from_millis(1500)),
                label: Some("fit-1".into()),
            }
        );
        assert_eq!(
            parse("%px -t=0-2 x", false).unwrap(),
            Command::Px {
                code: "x".into(),
                targets: Some(TargetSpec::Ids(vec![0, 1, 2])),
                block: true,
                timeout: None,
                label: None,
            }
        );
        assert_eq!(parse("%px -1", false).unwrap(), px("-1"));
        assert_eq!(parse("%px -- --x", false).unwrap(), px("--x"));
        assert_eq!(
            parse("%px if x {\n  print(x);\n}", false).unwrap(),
            px("if x {\n  print(x);\n}")
        );
        assert!(parse("%px", false).unwrap_err().0.contains("needs code"));
        assert!(parse("%px --bogus 1", false)
            .unwrap_err()
            .0
            .contains("no option --bogus"));
        assert!(parse("%px --targets", false)
            .unwrap_err()
            .0
            .contains("needs a value"));
        assert!(parse("%px --timeout 0 x", false).is_err());
    }

    #[test]
    fn run_takes_a_file_and_targets() {
        assert_eq!(
            parse("%run lib/setup.rhai", false).unwrap(),
            Command::Run {
                path: "lib/setup.rhai".into(),
                targets: None
            }
        );
        assert_eq!(
            parse("%run --targets 0,1 \"my dir/a.rhai\"", false).unwrap(),
            Command::Run {
                path: "my dir/a.rhai".into(),
                targets: Some(TargetSpec::Ids(vec![0, 1]))
            }
        );
        assert!(parse("%run", false)
            .unwrap_err()
            .0
            .contains("needs a script file"));
        assert!(parse("%run --noblock a.rhai", false)
            .unwrap_err()
            .0
            .contains("no option --noblock"));
    }

    #[test]
    fn plain_lines_need_autopx() {
        assert_eq!(parse("x + 1", true).unwrap(), px("x + 1"));
        assert!(parse("x + 1", false).unwrap_err().0.contains("%autopx"));
        assert_eq!(parse("   ", false).unwrap(), Command::Nothing);
        assert_eq!(parse("%autopx", true).unwrap(), Command::Autopx);
    }

    #[test]
    fn data_commands() {
        assert_eq!(
            parse("%push x = [1, 2]", false).unwrap(),
            Command::Push {
                name: "x".into(),
                value: Value::Array(vec![Value::Int(1), Value::Int(2)]),
                targets: None
            }
        );
        assert_eq!(
            parse("%push add = |a, b| a + b", false).unwrap(),
            Command::Push {
                name: "add".into(),
                value: Value::Function("|a, b| a + b".into()),
                targets: None
            }
        );
        assert_eq!(
            parse("%scatter --flatten -t 1,0 id=[1, 0]", false).unwrap(),
            Command::Scatter {
                name: "id".into(),
                value: Value::Array(vec![Value::Int(1), Value::Int(0)]),
                targets: Some(TargetSpec::Ids(vec![1, 0])),
                flatten: true
            }
        );
        assert_eq!(
            parse("%pull x", false).unwrap(),
            Command::Pull {
                name: "x".into(),
                targets: None
            }
        );
        assert_eq!(
            parse("%gather --targets all data", false).unwrap(),
            Command::Gather {
                name: "data".into(),
                targets: Some(TargetSpec::All)
            }
        );
        assert_eq!(
            parse("%comm com", false).unwrap(),
            Command::Comm {
                name: "com".into(),
                targets: None
            }
        );
        assert!(parse("%push x", false)
            .unwrap_err()
            .0
            .contains("NAME = VALUE"));
        assert!(parse("%push 1x = 2", false)
            .unwrap_err()
            .0
            .contains("not a variable name"));
        assert!(parse("%push x = y + 1", false)
            .unwrap_err()
            .0
            .contains("is a name"));
        assert!(parse("%scatter x = 5", false)
            .unwrap_err()
            .0
            .contains("sequence"));
        assert!(parse("%pull a b", false)
            .unwrap_err()
            .0
            .contains("one name"));
        assert!(parse("%pull", false)
            .unwrap_err()
            .0
            .contains("needs a variable name"));
        assert!(parse("%gather --flatten x", false).is_err());
    }

    #[test]
    fn control_and_session_commands() {
        assert_eq!(parse("%targets", false).unwrap(), Command::Targets(None));
        assert_eq!(
            parse("%targets 0-1", false).unwrap(),
            Command::Targets(Some(TargetSpec::Ids(vec![0, 1])))
        );
        assert!(parse("%targets x", false).is_err());
        assert_eq!(
            parse("%engines", false).unwrap(),
            Command::Engines { all: false }
        );
        assert_eq!(
            parse("%engines --all", false).unwrap(),
            Command::Engines { all: true }
        );
        assert!(parse("%engines 3", false).is_err());
        assert_eq!(parse("%result", false).unwrap(), Command::Result);
        assert_eq!(parse("%pxresult", false).unwrap(), Command::Result);
        assert_eq!(parse("%wait", false).unwrap(), Command::Wait(None));
        assert_eq!(
            parse("%wait 2", false).unwrap(),
            Command::Wait(Some(Duration::from_secs(2)))
        );
        assert_eq!(
            parse("%abort", false).unwrap(),
            Command::Abort {
                targets: None,
                running: false
            }
        );
        assert_eq!(
            parse("%abort --running -t 1", false).unwrap(),
            Command::Abort {
                targets: Some(TargetSpec::parse("1").unwrap()),
                running: true
            }
        );
        assert!(parse("%interrupt --running", false).is_err());
        assert_eq!(
            parse("%map --ordered --max 8 0.. |x| x * x", false).unwrap(),
            Command::Map {
                sequence: Sequence::Range {
                    start: 0,
                    end: None
                },
                function: "|x| x * x".into(),
                ordered: true,
                max_outstanding: 8,
                label: None,
                targets: None,
            }
        );
        assert!(matches!(
            parse("%map [1, 2] |x| x", false).unwrap(),
            Command::Map { sequence: Sequence::Values(v), max_outstanding: DEFAULT_MAP_OUTSTANDING, .. } if v.len() == 2
        ));
        assert!(matches!(
            parse("%map 0..=2 |x| x", false).unwrap(),
            Command::Map {
                sequence: Sequence::Range {
                    start: 0,
                    end: Some(3)
                },
                ..
            }
        ));
        for bad in [
            "%map 0..10",
            "%map |x| x",
            "%map 5 |x| x",
            "%map --max 0 0.. |x| x",
        ] {
            assert!(parse(bad, false).is_err(), "{bad}");
        }
        assert_eq!(
            parse("%interrupt --targets 1", false).unwrap(),
            Command::Interrupt(Some(TargetSpec::Ids(vec![1])))
        );
        assert_eq!(
            parse("%bind_kernel --targets 0", false).unwrap(),
            Command::BindKernel(Some(TargetSpec::Ids(vec![0])))
        );
        assert_eq!(
            parse("%bind_kernel", false).unwrap(),
            Command::BindKernel(None)
        );
        assert_eq!(parse("%clear", false).unwrap(), Command::Clear(None));
        assert_eq!(parse("%history", false).unwrap(), Command::History);
        assert_eq!(parse("%quit", false).unwrap(), Command::Quit);
        assert_eq!(parse("%exit", false).unwrap(), Command::Quit);
        assert_eq!(parse("%help", false).unwrap(), Command::Help(None));
        assert_eq!(
            parse("%help %px", false).unwrap(),
            Command::Help(Some("px".into()))
        );
        assert!(parse("%result now", false)
            .unwrap_err()
            .0
            .contains("no arguments"));
        assert!(parse("%engines now", false)
            .unwrap_err()
            .0
            .contains("--all"));
        assert!(parse("%frobnicate", false)
            .unwrap_err()
            .0
            .contains("unknown command"));
    }

    #[test]
    fn help_covers_every_command() {
        let all = help(None).unwrap();
        for c in COMMANDS {
            assert!(all.contains(&format!("%{}", c.name)), "{}", c.name);
            let one = help(Some(c.name)).unwrap();
            assert!(one.starts_with(c.usage), "{one}");
            // Every command parses from its own usage line's name.
            assert!(spec(c.name).is_some());
        }
        assert!(help(Some("pxresult")).unwrap().starts_with("%result"));
        assert!(help(Some("nope")).is_err());
        assert!(command_words().any(|w| w == "%autopx"));
    }
}
