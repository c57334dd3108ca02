//! `DirectView::run`: a local script file (and the files it imports) on
//! every target — what it defines stays for later calls, its errors point
//! into the files, a missing file is a local error, and an `import` is read
//! relative to the importing file whatever the working directory.

use crate::support::{self, zpar_bin, WAIT};
use std::path::{Path, PathBuf};
use std::process::Command;
use zpar::{Error, Value};

/// A folder of script files under the cluster's own (temporary) profile.
fn scripts(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let root = dir.join("scripts");
    for (name, text) in files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("writing a script");
    }
    root
}

/// The engine errors in `e`, one per engine.
fn each_error(e: Error) -> Vec<Error> {
    match e {
        Error::Multiple(all) => all,
        one => vec![one],
    }
}

#[test]
fn run_defines_functions_and_variables_for_later_calls() {
    let _watchdog = support::watchdog();
    let (cluster, client) = support::cluster(2);
    let dir = scripts(
        &cluster.profile().dir,
        &[
            (
                "setup.rhai",
                "// helpers for the engines\n\
                 import \"lib/util\" as util;\n\
                 let base = 10;\n\
                 fn tripled(x) { util::twice(x) + x }\n\
                 let scale = |x| x * base;\n\
                 tripled(base)\n",
            ),
            (
                "lib/util.rhai",
                "fn twice(x) { x * 2 }\nlet from_util = \"util\";\n",
            ),
        ],
    );
    let view = client.all();
    // The file's last expression, from every engine.
    let ar = view.run(dir.join("setup.rhai")).unwrap();
    assert_eq!(
        ar.get_timeout(WAIT).unwrap(),
        vec![Value::Int(30), Value::Int(30)]
    );
    assert_eq!(ar.get_dict().unwrap().len(), 2, "one reply per engine");

    // Later executes see its functions and variables, the imported ones too.
    let got = view
        .execute("tripled(base) + twice(1) + from_util.len()")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(got, vec![Value::Int(36), Value::Int(36)]);
    // So do applies: by function name, and a closure kept in a variable.
    let got = view
        .apply("tripled", vec![Value::Int(2)])
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(got, vec![Value::Int(6), Value::Int(6)]);
    let got = view
        .apply(
            "|s, x| s.call(x)",
            vec![zpar::Reference("scale"), Value::Int(4)],
        )
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(got, vec![Value::Int(40), Value::Int(40)]);

    // run_async returns at once even on a blocking view; one engine only.
    let mut one = client.view(1);
    one.block = true;
    let ar = one.run_async(dir.join("lib/util.rhai")).unwrap();
    assert_eq!(ar.get_timeout(WAIT).unwrap(), vec![Value::Unit]);
}

#[test]
fn run_reports_an_error_at_the_files_line() {
    let _watchdog = support::watchdog();
    let (cluster, client) = support::cluster(2);
    let dir = scripts(
        &cluster.profile().dir,
        &[
            (
                "broken.rhai",
                "// line 1\nlet ok = 1;\nlet sum = ok + no_such_name;\n",
            ),
            // An error in an imported file names that file and its line.
            ("main.rhai", "import \"helpers\" as h;\n\nh::fails()\n"),
            (
                "helpers.rhai",
                "fn fails() {\n  let x = 1;\n  x.no_such_method()\n}\n",
            ),
        ],
    );
    let view = client.all();
    let e = view
        .run(dir.join("broken.rhai"))
        .unwrap()
        .get_timeout(WAIT)
        .unwrap_err();
    let text = e.to_string();
    let errors = each_error(e);
    assert_eq!(errors.len(), 2, "{text}");
    let mut engines = Vec::new();
    for e in errors {
        let shown = e.to_string();
        let Error::InFile {
            path,
            line,
            column,
            error,
        } = e
        else {
            panic!("not an error in the file: {shown}");
        };
        assert_eq!(path, dir.join("broken.rhai"));
        assert_eq!((line, column), (Some(3), Some(16)), "{shown}");
        assert!(
            shown.starts_with(&format!("{}:3:16: engine ", path.display())),
            "{shown}"
        );
        match *error {
            Error::RemoteError {
                engine,
                ref ename,
                ref message,
                ..
            } => {
                assert_eq!(ename, "UnknownName", "{shown}");
                assert!(message.contains("no_such_name"), "{shown}");
                engines.push(engine);
            }
            ref other => panic!("not the engine's error: {other}"),
        }
    }
    engines.sort();
    assert_eq!(engines, [0, 1]);

    let e = view
        .run(dir.join("main.rhai"))
        .unwrap()
        .get_timeout(WAIT)
        .unwrap_err();
    for e in each_error(e) {
        match &e {
            Error::InFile { path, line, .. } => {
                assert_eq!(path, &dir.join("helpers.rhai"), "{e}");
                assert_eq!(*line, Some(3), "{e}");
            }
            other => panic!("not an error in the file: {other}"),
        }
    }
}

#[test]
fn run_of_a_missing_file_is_a_local_error() {
    let _watchdog = support::watchdog();
    let (cluster, client) = support::cluster(1);
    let before = client.queue_status().unwrap();
    let missing = cluster.profile().dir.join("no-such-script.rhai");
    let e = client.all().run(&missing).unwrap_err();
    match &e {
        Error::ScriptFile { path, line, .. } => {
            assert_eq!(path, &missing);
            assert_eq!(*line, None);
        }
        other => panic!("not a local script-file error: {other}"),
    }
    let text = e.to_string();
    assert!(
        text.starts_with(&missing.display().to_string()) && text.contains("no such file"),
        "{text}"
    );
    // A missing import is the same, at the line of the import.
    let dir = scripts(
        &cluster.profile().dir,
        &[("imports.rhai", "let a = 1;\nimport \"gone\" as g;\n")],
    );
    let e = client
        .all()
        .run_async(dir.join("imports.rhai"))
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "{}:2:1: cannot import ",
            dir.join("imports.rhai").display()
        )) && text.contains("gone.rhai"),
        "{text}"
    );
    // Nothing reached any engine.
    assert_eq!(client.queue_status().unwrap(), before);
}

#[test]
fn run_resolves_imports_from_the_files_folder_not_the_working_directory() {
    let _watchdog = support::watchdog();
    let (cluster, _client) = support::cluster(1);
    let base = cluster.profile().dir.clone();
    scripts(
        &base,
        &[
            (
                "project/main.rhai",
                "import \"lib/names\" as names;\nlet who = names::which();\n",
            ),
            // The import of an import is relative to that file's folder.
            (
                "project/lib/names.rhai",
                "import \"deeper/leaf\" as leaf;\nfn which() { \"project \" + leaf::tag() }\n",
            ),
            ("project/lib/deeper/leaf.rhai", "fn tag() { \"leaf\" }\n"),
            // A decoy where a working-directory lookup would look.
            ("elsewhere/lib/names.rhai", "fn which() { \"decoy\" }\n"),
        ],
    );
    let cwd = base.join("scripts/elsewhere");
    let script = "%run ../project/main.rhai\n%px who\n";
    let input = base.join("run-session.txt");
    std::fs::write(&input, script).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("exec \"$0\" console --timeout 10 --profile-dir \"$1\" < \"$2\"")
        .arg(zpar_bin())
        .arg(&base)
        .arg(&input)
        .current_dir(&cwd);
    let out = support::output_within(cmd, WAIT, "zpar console with %run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l == "Out[0:2]: \"project leaf\""),
        "{stdout}"
    );
}
