//! The commands' names, usage lines and help texts (`%help`), and the
//! command words tab completion offers.

use std::fmt;

/// Why a line is not a command (or `%help` names none), with what to do
/// instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// A command's name, usage and help.
#[derive(Debug)]
pub struct Spec {
    /// Name without `%`.
    pub name: &'static str,
    /// Other names.
    pub aliases: &'static [&'static str],
    /// Usage line.
    pub usage: &'static str,
    /// One line.
    pub summary: &'static str,
    /// More.
    pub help: &'static str,
}

/// Every command, in the order `%help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "px",
        aliases: &[],
        usage: "%px [--targets SPEC] [--noblock] [--timeout SECS] [--label L] CODE",
        summary: "run Rhai code on the targets",
        help: "Runs CODE on every target engine, in its persistent namespace (top-level\n\
               `let` variables and `fn` definitions stay). Output streams in as\n\
               `[stdout:ID] ...`; each engine's value shows as `Out[ID:N]: ...`, its\n\
               error as `[ID:error] ...`. An unfinished block (open brace, bracket or\n\
               string) continues on the next line.\n\
               --targets SPEC   other engines than the current targets (all, 0,2, 0-3)\n\
               --noblock        return at once; %wait or %result show the outcome\n\
               --timeout SECS   stop the code on the engines after SECS seconds\n\
               --label L        label its task records L (found with db_query's $glob)\n\
               Ctrl-C interrupts the code on the engines and returns to the prompt.",
    },
    Spec {
        name: "run",
        aliases: &[],
        usage: "%run [--targets SPEC] FILE",
        summary: "run a local Rhai script file on the targets",
        help: "Reads FILE here and runs it on every target engine, as %px runs code: its\n\
               `fn` definitions and top-level `let` variables stay in the namespaces.\n\
               A top-level `import \"util\" as util;` is read here too, relative to the\n\
               importing file, and sent inlined, so the engines need no copy of any\n\
               file. Errors name the file, line and column; a missing file is reported\n\
               before anything is sent. Quote a FILE with spaces.\n\
               --targets SPEC   other engines than the current targets (all, 0,2, 0-3)",
    },
    Spec {
        name: "autopx",
        aliases: &[],
        usage: "%autopx",
        summary: "toggle sending every plain line to the engines as %px",
        help: "In autopx mode every line that is not a %-command runs as `%px LINE`\n\
               on the current targets. %autopx again turns it off.",
    },
    Spec {
        name: "push",
        aliases: &[],
        usage: "%push [--targets SPEC] NAME = VALUE",
        summary: "set a variable on the targets",
        help: "Sets NAME to VALUE on every target. VALUE is JSON or a Rhai literal:\n\
               numbers, strings, true/false, (), arrays [..], maps #{a: 1}, ranges 0..10\n\
               or 0..=10, or a function `|a, b| a + b` / `fn f(x) { .. }`.",
    },
    Spec {
        name: "pull",
        aliases: &[],
        usage: "%pull [--targets SPEC] NAME",
        summary: "show a variable from each target",
        help: "Reads NAME from every target and shows one line per engine.",
    },
    Spec {
        name: "scatter",
        aliases: &[],
        usage: "%scatter [--targets SPEC] [--flatten] NAME = SEQUENCE",
        summary: "split a sequence over the targets",
        help: "Splits SEQUENCE (an array or range literal) into contiguous blocks, one\n\
               per target in order, and sets NAME to its block on each. With --flatten\n\
               a one-item block is set as the item itself (scatter ids this way:\n\
               `%scatter --flatten id = [0, 1, 2, 3]`).",
    },
    Spec {
        name: "map",
        aliases: &[],
        usage: "%map [--targets SPEC] [--ordered] [--max N] [--label L] SEQUENCE FUNCTION",
        summary: "map a function over a sequence, load-balanced, results as they come",
        help: "Calls FUNCTION on each item of SEQUENCE as a task of its own, on whichever\n\
               target engine is free, and shows each result as it comes, with its\n\
               item's index: `[i] value` (in input order with --ordered). SEQUENCE is\n\
               an array or a range, read\n\
               lazily: `0..` has no end. At most N tasks are in flight (default 64), so\n\
               memory stays bounded. Ctrl-C cancels: the tasks in flight are aborted,\n\
               those running stopped.\n\
               --targets SPEC   other engines than the current targets (all, 0,2, 0-3)\n\
               --ordered        results in input order\n\
               --max N          tasks in flight at most\n\
               --label L        label the tasks' records L (found with db_query's $glob)\n\
               Example: %map --max 8 0..10 |x| x * x",
    },
    Spec {
        name: "gather",
        aliases: &[],
        usage: "%gather [--targets SPEC] NAME",
        summary: "join a variable's blocks from the targets",
        help: "Pulls NAME from every target and joins the blocks in target order.",
    },
    Spec {
        name: "comm",
        aliases: &[],
        usage: "%comm [--targets SPEC] NAME",
        summary: "set up a tree communicator named NAME on the targets",
        help: "Creates a BinaryTreeCommunicator named NAME on every target and connects\n\
               them along a tree of fan-out 8 over their ids, rooted at the lowest, in one\n\
               step. Then `%px NAME.allreduce(|a, b| a + b, x, true)` or `NAME.reduce(f, x, true)`.\n\
               `NAME.allreduce(\"sum\", array)` picks its algorithm by size (shared memory\n\
               on one host, a ring across hosts); `NAME.last_algorithm` says which ran.",
    },
    Spec {
        name: "targets",
        aliases: &[],
        usage: "%targets [SPEC]",
        summary: "show or set the current targets",
        help: "Without SPEC shows the current targets; with SPEC (all, 0,2, 0-3, 0-3,6)\n\
               makes them the engines later commands address.",
    },
    Spec {
        name: "dashboard",
        aliases: &[],
        usage: "%dashboard",
        summary: "serve a live web page of the cluster and show its URL",
        help: "Starts the dashboard (`zpar dashboard`) inside this console, once, and\n\
               shows its URL (127.0.0.1, with a token): engines and their state, a\n\
               task stream, throughput, progress of labelled work, the last errors.\n\
               It is served until the console ends.",
    },
    Spec {
        name: "engines",
        aliases: &[],
        usage: "%engines [--all]",
        summary: "list the engines with status and queue length",
        help: "Lists every registered engine: idle or busy, requests queued on it and\n\
               completed, whether it is a current target, and its host. Past 32\n\
               engines it sums up (counts, hosts, the busy ones); --all lists them all.",
    },
    Spec {
        name: "result",
        aliases: &["pxresult"],
        usage: "%result",
        summary: "show the last %px result again",
        help: "Shows the output, values and errors of the last %px again, with what\n\
               has arrived so far if it is still running.",
    },
    Spec {
        name: "wait",
        aliases: &["pxwait"],
        usage: "%wait [SECS]",
        summary: "wait for commands still running",
        help: "Waits for %px commands that are still running (sent with --noblock,\n\
               or left running after Ctrl-C or a timeout) and shows their results.\n\
               With SECS, gives up waiting after SECS seconds.",
    },
    Spec {
        name: "abort",
        aliases: &[],
        usage: "%abort [--targets SPEC] [--running]",
        summary: "drop the work queued on the targets",
        help: "Aborts requests queued on the targets that have not started yet; they\n\
               answer with an Aborted error. Running code goes on (see %interrupt),\n\
               unless --running: then it is stopped too and answers Aborted as well.\n\
               --targets SPEC   other engines than the current targets (all, 0,2, 0-3)\n\
               --running        stop the running requests too",
    },
    Spec {
        name: "interrupt",
        aliases: &[],
        usage: "%interrupt [--targets SPEC]",
        summary: "stop the code running on the targets",
        help: "Stops the script running on each target; the engines stay up and\n\
               answer its request with an Interrupted error.",
    },
    Spec {
        name: "clear",
        aliases: &[],
        usage: "%clear [--targets SPEC]",
        summary: "empty the namespaces of the targets",
        help: "Removes every variable and function from the targets' namespaces.",
    },
    Spec {
        name: "bind_kernel",
        aliases: &[],
        usage: "%bind_kernel [--targets SPEC]",
        summary: "make the targets Jupyter kernels too",
        help: "Each target also serves the Jupyter kernel protocol, beside the hub, on\n\
               its own ports, and writes kernel-<id>.json into its profile's security\n\
               folder; `jupyter console --existing FILE` then reaches its namespace\n\
               (the same one %px uses; one request at a time). Asking again shows the\n\
               same files. A kernel's shutdown stops the kernel, not the engine.",
    },
    Spec {
        name: "history",
        aliases: &[],
        usage: "%history",
        summary: "show this session's input",
        help: "Lists the lines entered in this session. Earlier sessions' lines are\n\
               in the history file (Up arrow, Ctrl-R to search).",
    },
    Spec {
        name: "quit",
        aliases: &["exit"],
        usage: "%quit",
        summary: "leave the console (or Ctrl-D)",
        help: "Leaves the console. The engines and their namespaces stay.",
    },
    Spec {
        name: "help",
        aliases: &[],
        usage: "%help [NAME]",
        summary: "list the commands, or explain one",
        help: "Without NAME lists the commands; `%help px` explains %px.",
    },
];

/// The spec of a command name (`px`, `%px`, or an alias).
pub fn spec(name: &str) -> Option<&'static Spec> {
    let name = name.trim().trim_start_matches('%');
    COMMANDS
        .iter()
        .find(|s| s.name == name || s.aliases.contains(&name))
}

/// Every command word, `%` included, for completion.
pub fn command_words() -> impl Iterator<Item = String> {
    COMMANDS
        .iter()
        .flat_map(|s| std::iter::once(s.name).chain(s.aliases.iter().copied()))
        .map(|n| format!("%{n}"))
}

/// The `%help` text: all commands, or one.
pub fn help(name: Option<&str>) -> Result<String, ParseError> {
    match name {
        None => {
            let mut s = String::from("Commands (`%help NAME` for more):\n");
            for c in COMMANDS {
                s.push_str(&format!("  %{:<11} {}\n", c.name, c.summary));
            }
            s.push_str(
                "Input: an unfinished block continues on the next line; Tab completes\n\
                 commands, the names this session pushed, pulled or defined, and files\n\
                 after %run; Up and Ctrl-R search the history. Ctrl-C interrupts a\n\
                 running command on the engines (at the prompt it clears the line);\n\
                 Ctrl-D leaves.",
            );
            Ok(s)
        }
        Some(n) => match spec(n) {
            Some(c) => {
                let mut s = format!("{}\n  {}\n", c.usage, c.summary);
                if !c.aliases.is_empty() {
                    let aliases: Vec<String> = c.aliases.iter().map(|a| format!("%{a}")).collect();
                    s.push_str(&format!("  (also {})\n", aliases.join(", ")));
                }
                for line in c.help.lines() {
                    s.push_str("  ");
                    s.push_str(line.trim_start());
                    s.push('\n');
                }
                Ok(s.trim_end().to_string())
            }
            None => Err(ParseError(format!(
                "no command %{n} (%help lists the commands)"
            ))),
        },
    }
}
