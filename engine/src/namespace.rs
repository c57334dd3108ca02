//! One engine's persistent script namespace.
//!
//! A [`Namespace`] owns a Rhai engine, a scope of top-level variables and the
//! functions defined so far. Each `execute` compiles the code against the
//! scope, runs it with every function defined before, and keeps its new
//! `let` variables and `fn` definitions — as an IPython namespace does.

use crate::convert::{from_value, pretty_type, to_value};
use crate::stop::StopReason;
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, ParseError, Position, Scope, AST};
use std::collections::HashSet;
use zpar_protocol::{ErrorClass, Value};

/// A script failed: what class of error, its message and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ename}: {message}{}", location(*.line, *.column))]
pub struct ScriptError {
    /// `SyntaxError`, `RuntimeError`, `Interrupted`, `OperationLimit`,
    /// `UnknownName`, `NotTransferable`, `BadArgument`.
    pub ename: String,
    /// What went wrong.
    pub message: String,
    /// 1-based line, when the script has one.
    pub line: Option<u32>,
    /// 1-based column, when the script has one.
    pub column: Option<u32>,
    /// The call that found no function (`name (types)`), for an
    /// `UnknownName` raised by calling a function that does not exist.
    pub missing_function: Option<String>,
}

fn location(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

impl ScriptError {
    /// An error with no position.
    pub fn new(ename: &str, message: impl Into<String>) -> ScriptError {
        ScriptError {
            ename: ename.to_string(),
            message: message.into(),
            line: None,
            column: None,
            missing_function: None,
        }
    }

    fn at(mut self, pos: Position) -> ScriptError {
        self.line = pos.line().map(|l| l as u32);
        self.column = pos.position().map(|c| c as u32);
        self
    }
}

impl From<ParseError> for ScriptError {
    fn from(e: ParseError) -> ScriptError {
        ScriptError::new("SyntaxError", strip_position(e.to_string(), e.position()))
            .at(e.position())
    }
}

impl From<Box<EvalAltResult>> for ScriptError {
    fn from(e: Box<EvalAltResult>) -> ScriptError {
        // Errors inside called functions carry the innermost position.
        let inner = e.unwrap_inner();
        let pos = if inner.position().is_none() {
            e.position()
        } else {
            inner.position()
        };
        let ename = match inner {
            EvalAltResult::ErrorTerminated(token, _) => {
                // The progress callback stops a script with a typed reason
                // (`crate::stop`); any other token is a plain interrupt.
                let (class, message) = match token.clone().try_cast::<StopReason>() {
                    Some(reason) => (reason.class(), reason.to_string()),
                    None => (
                        ErrorClass::Interrupted,
                        "the script was interrupted".to_string(),
                    ),
                };
                return ScriptError::new(class.as_str(), message).at(pos);
            }
            EvalAltResult::ErrorTooManyOperations(_) => ErrorClass::OperationLimit.as_str(),
            EvalAltResult::ErrorParsing(..) => "SyntaxError",
            EvalAltResult::ErrorVariableNotFound(..) | EvalAltResult::ErrorFunctionNotFound(..) => {
                "UnknownName"
            }
            _ => "RuntimeError",
        };
        // `throw x` reads better as just x than as "Runtime error: x".
        let message = match inner {
            EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
            _ => strip_position(e.to_string(), e.position()),
        };
        let mut error = ScriptError::new(ename, message).at(pos);
        if let EvalAltResult::ErrorFunctionNotFound(call, _) = &*e {
            error.missing_function = Some(call.clone());
        }
        error
    }
}

/// Rhai appends " (line L, position C)" to messages; we report those apart.
fn strip_position(msg: String, pos: Position) -> String {
    if pos.is_none() {
        return msg;
    }
    let suffix = format!(" ({pos})");
    msg.strip_suffix(&suffix).map(str::to_string).unwrap_or(msg)
}

/// Whether `name` can be a script variable.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A persistent namespace: variables and functions that survive between
/// requests.
///
/// ```
/// use zpar_engine::Namespace;
/// let mut ns = Namespace::new(rhai::Engine::new());
/// ns.execute("let x = 20; fn double(v) { v * 2 }").unwrap();
/// let r = ns.execute("double(x) + 2").unwrap();
/// assert_eq!(r.as_int().unwrap(), 42);
/// ```
pub struct Namespace {
    engine: Engine,
    scope: Scope<'static>,
    functions: AST,
    /// Closures by source, for apply: compiling `|x| x + 1` costs more than
    /// running it. Only closures that capture nothing are kept (a capture
    /// belongs to the moment it was made).
    closures: std::collections::HashMap<String, FnPtr>,
    /// Values a push replaced, dropped once the push is answered
    /// ([`drop_replaced`](Self::drop_replaced)): freeing a large array
    /// (about 11 ms for 128 MiB) is then off the reply's path.
    replaced: Vec<Dynamic>,
}

/// Most closures remembered by a namespace.
const CLOSURE_CACHE: usize = 512;

/// Most characters of a value [`Namespace::describe`] shows.
const DESCRIBE_LIMIT: usize = 2000;

impl Namespace {
    /// A namespace running scripts on `engine` (with whatever natives,
    /// limits and callbacks it has registered).
    pub fn new(engine: Engine) -> Namespace {
        Namespace {
            engine,
            scope: Scope::new(),
            functions: AST::empty(),
            closures: std::collections::HashMap::new(),
            replaced: Vec::new(),
        }
    }

    /// The script engine (to parse with, say).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The script engine, to register more native functions or types.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Runs code in the namespace; the value of its last expression.
    pub fn execute(&mut self, code: &str) -> Result<Dynamic, ScriptError> {
        let ast = self.engine.compile_with_scope(&self.scope, code)?;
        let run = self.functions.merge(&ast);
        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &run);
        // Keep definitions even if the run failed: closures it stored in
        // variables must stay callable.
        self.functions = self.functions.merge(&ast.clone_functions_only());
        self.compact_scope();
        Ok(result?)
    }

    /// Calls `f` with `args`. `f` is a closure (`|a, b| a + b`), a function
    /// definition (`fn f(a) { .. }`), or the name of a function or of a
    /// variable holding one. An argument that is a [`Value::Reference`] is
    /// the engine variable of that name.
    pub fn apply(&mut self, f: &str, args: Vec<Value>) -> Result<Dynamic, ScriptError> {
        let mut call_args = Vec::with_capacity(args.len());
        for (i, a) in args.into_iter().enumerate() {
            call_args.push(match a {
                Value::Reference(name) => self.lookup(&name)?,
                Value::Function(src) => Dynamic::from(self.function(&src, true)?.0),
                other => from_value(other)
                    .map_err(|m| ScriptError::new("BadArgument", format!("argument {i}: {m}")))?,
            });
        }
        let (fn_ptr, one_off) = self.function(f, false)?;
        let ast = one_off.as_ref().unwrap_or(&self.functions);
        let result = fn_ptr.call::<Dynamic>(&self.engine, ast, call_args);
        self.compact_scope();
        Ok(result?)
    }

    /// Sets a variable, replacing any earlier one of that name. A
    /// [`Value::Function`] becomes a function pointer (and a `fn` definition
    /// is defined on the engine too).
    pub fn push(&mut self, name: &str, value: Value) -> Result<(), ScriptError> {
        if !is_identifier(name) {
            return Err(ScriptError::new(
                "BadArgument",
                format!("{name:?} is not a valid variable name"),
            ));
        }
        let d = match value {
            Value::Function(src) => Dynamic::from(self.function(&src, true)?.0),
            Value::Reference(other) => self.lookup(&other)?,
            v => from_value(v)
                .map_err(|m| ScriptError::new("BadArgument", format!("{name}: {m}")))?,
        };
        // As `set_or_push`, keeping the value replaced for later.
        match self.scope.get_mut(name) {
            Some(slot) => self.replaced.push(std::mem::replace(slot, d)),
            None => {
                self.scope.push(name.to_string(), d);
            }
        }
        Ok(())
    }

    /// Drops the values pushes replaced (the engine calls it after it has
    /// answered the request).
    pub fn drop_replaced(&mut self) {
        self.replaced.clear();
    }

    /// Reads a variable as a wire value.
    pub fn pull(&self, name: &str) -> Result<Value, ScriptError> {
        let d = self.lookup(name)?;
        to_value(&d).map_err(|e| ScriptError::new("NotTransferable", format!("{name}: {e}")))
    }

    /// A variable's script value.
    pub fn lookup(&self, name: &str) -> Result<Dynamic, ScriptError> {
        self.scope.get(name).cloned().ok_or_else(|| {
            ScriptError::new(
                "UnknownName",
                format!("no variable named {name:?} on this engine"),
            )
        })
    }

    /// Forgets every variable and function.
    pub fn clear(&mut self) {
        self.scope.clear();
        self.functions = AST::empty();
        self.closures.clear();
    }

    /// The names of the variables defined now.
    pub fn names(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut out: Vec<String> = self
            .scope
            .iter_raw()
            .map(|(n, _, _)| n.to_string())
            .filter(|n| seen.insert(n.clone()))
            .collect();
        out.sort();
        out
    }

    /// The names of every function a script can call here: the ones it
    /// defined and the engine's natives (Rhai's standard library, zpar's
    /// arrays and communicators, a program's own), sorted, each once.
    /// Operators and property accessors are left out.
    pub fn function_names(&self) -> Vec<String> {
        let natives = self.engine.gen_fn_signatures(true);
        let mut out: Vec<String> = natives
            .iter()
            .map(|sig| sig.split('(').next().unwrap_or(sig).to_string())
            .chain(self.functions.iter_functions().map(|f| f.name.to_string()))
            .filter(|name| is_identifier(name))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// What `name` is, for a person asking (Jupyter's inspect): a
    /// variable's type and value, or the signatures of the functions of
    /// that name. None if it is neither.
    ///
    /// ```
    /// use zpar_engine::Namespace;
    /// let mut ns = Namespace::new(rhai::Engine::new());
    /// let _ = ns.execute("let answer = 42; fn twice(x) { 2 * x }").unwrap();
    /// assert_eq!(ns.describe("answer").unwrap(), "answer: i64 = 42");
    /// assert_eq!(ns.describe("twice").unwrap(), "fn twice(x)");
    /// assert!(ns.describe("nothing_here").is_none());
    /// ```
    pub fn describe(&self, name: &str) -> Option<String> {
        if let Some(v) = self.scope.get(name) {
            let mut shown = v.to_string();
            if shown.chars().count() > DESCRIBE_LIMIT {
                shown = shown.chars().take(DESCRIBE_LIMIT).collect::<String>() + " …";
            }
            return Some(format!("{name}: {} = {shown}", pretty_type(v)));
        }
        let mut lines: Vec<String> = self
            .functions
            .iter_functions()
            .filter(|f| f.name == name)
            .map(|f| format!("fn {name}({})", f.params.join(", ")))
            .collect();
        lines.extend(
            self.engine
                .gen_fn_signatures(true)
                .into_iter()
                .filter(|sig| sig.split('(').next() == Some(name))
                .map(|sig| sig.replace("_: ", "")),
        );
        lines.dedup();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// Turns function source into a function pointer. A `fn` definition is
    /// kept in the namespace when `keep`; otherwise its AST is returned so
    /// the caller can call it once without defining it.
    fn function(&mut self, src: &str, keep: bool) -> Result<(FnPtr, Option<AST>), ScriptError> {
        let src = src.trim();
        if src.starts_with("fn ") || src.starts_with("private fn ") {
            let ast = self.engine.compile(src)?;
            let name = ast
                .iter_functions()
                .next()
                .map(|f| f.name.to_string())
                .ok_or_else(|| ScriptError::new("BadArgument", "the source defines no function"))?;
            let ptr = FnPtr::new(name.as_str()).map_err(ScriptError::from)?;
            let defs = ast.clone_functions_only();
            if keep {
                self.functions = self.functions.merge(&defs);
                return Ok((ptr, None));
            }
            return Ok((ptr, Some(self.functions.merge(&defs))));
        }
        if is_identifier(src) {
            if let Some(v) = self.scope.get(src) {
                let v = v.flatten_clone();
                let ptr = v.try_cast::<FnPtr>().ok_or_else(|| {
                    ScriptError::new("BadArgument", format!("{src} is not a function"))
                })?;
                return Ok((ptr, None));
            }
            return Ok((FnPtr::new(src).map_err(ScriptError::from)?, None));
        }
        if let Some(ptr) = self.closures.get(src) {
            return Ok((ptr.clone(), None));
        }
        // A closure's body is an anonymous function of the AST that made it,
        // found by hash when called: keep it with the namespace's functions.
        let ast = self.engine.compile_with_scope(&self.scope, src)?;
        self.functions = self.functions.merge(&ast.clone_functions_only());
        let run = self.functions.merge(&ast);
        let v = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &run)?;
        let type_name = pretty_type(&v);
        let ptr = v.try_cast::<FnPtr>().ok_or_else(|| {
            ScriptError::new(
                "BadArgument",
                format!("apply needs a function, but {src:?} is a {type_name}"),
            )
        })?;
        if ptr.curry().is_empty() && ptr.is_anonymous() {
            if self.closures.len() >= CLOSURE_CACHE {
                self.closures.clear();
            }
            self.closures.insert(src.to_string(), ptr.clone());
        }
        Ok((ptr, None))
    }

    /// `let x` run twice leaves two `x` in the scope; keep only the newest
    /// so shadowed values are freed.
    fn compact_scope(&mut self) {
        let mut names = HashSet::new();
        let total = self.scope.len();
        let distinct = self
            .scope
            .iter_raw()
            .filter(|(n, _, _)| names.insert(*n))
            .count();
        if distinct == total {
            return;
        }
        let old = std::mem::take(&mut self.scope);
        let entries: Vec<(String, Dynamic)> = old.into_iter().map(|(n, v, _)| (n, v)).collect();
        let mut seen = HashSet::new();
        let mut keep: Vec<(String, Dynamic)> = entries
            .into_iter()
            .rev()
            .filter(|(n, _)| seen.insert(n.clone()))
            .collect();
        keep.reverse();
        for (n, v) in keep {
            self.scope.push_dynamic(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Namespace {
        let mut e = Engine::new();
        crate::arrays::register(&mut e);
        Namespace::new(e)
    }

    #[test]
    fn variables_and_functions_persist() {
        let mut n = ns();
        let _ = n.execute("let a = 1; fn inc(x) { x + 1 }").unwrap();
        let _ = n.execute("let b = inc(a);").unwrap();
        assert_eq!(n.pull("b").unwrap(), Value::Int(2));
        let _ = n.execute("fn inc(x) { x + 10 }").unwrap();
        assert_eq!(n.execute("inc(0)").unwrap().as_int().unwrap(), 10);
    }

    #[test]
    fn shadowed_variables_are_freed() {
        let mut n = ns();
        for i in 0..5 {
            let _ = n.execute(&format!("let x = {i};")).unwrap();
        }
        assert_eq!(n.scope.len(), 1);
        assert_eq!(n.pull("x").unwrap(), Value::Int(4));
    }

    #[test]
    fn apply_closures_definitions_names_and_references() {
        let mut n = ns();
        n.push("a", Value::Int(40)).unwrap();
        let r = n.apply(
            "|x, y| x + y",
            vec![Value::Reference("a".into()), Value::Int(2)],
        );
        assert_eq!(r.unwrap().as_int().unwrap(), 42);
        let r = n.apply("fn sq(x) { x * x }", vec![Value::Int(7)]).unwrap();
        assert_eq!(r.as_int().unwrap(), 49);
        let _ = n.execute("fn twice(x) { 2 * x }").unwrap();
        assert_eq!(
            n.apply("twice", vec![Value::Int(4)])
                .unwrap()
                .as_int()
                .unwrap(),
            8
        );
        n.push("add", Value::Function("|a, b| a + b".into()))
            .unwrap();
        assert_eq!(
            n.apply("add", vec![Value::Int(1), Value::Int(2)])
                .unwrap()
                .as_int()
                .unwrap(),
            3
        );
        assert_eq!(n.execute("call(add, 5, 6)").unwrap().as_int().unwrap(), 11);
        // a closure that captures an engine variable sees its current value
        assert_eq!(n.apply("|| a + 1", vec![]).unwrap().as_int().unwrap(), 41);
        let _ = n.execute("let a = 1;").unwrap();
        assert_eq!(n.apply("|| a + 1", vec![]).unwrap().as_int().unwrap(), 2);
        // a cached closure still works after other code ran
        assert_eq!(
            n.apply("|x, y| x + y", vec![Value::Int(1), Value::Int(2)])
                .unwrap()
                .as_int()
                .unwrap(),
            3
        );
    }

    #[test]
    fn errors_have_class_and_position() {
        let mut n = ns();
        let e = n.execute("let x = 1;\nlet y = ;").unwrap_err();
        assert_eq!(e.ename, "SyntaxError");
        assert_eq!(e.line, Some(2));
        let e = n.execute("let z = 1;\n  nope + 1").unwrap_err();
        assert_eq!(e.ename, "UnknownName");
        assert_eq!((e.line, e.column), (Some(2), Some(3)));
        assert!(e.message.contains("nope"), "{e}");
        assert_eq!(e.missing_function, None);
        let e = n.execute("simulate(3)").unwrap_err();
        assert_eq!(e.ename, "UnknownName");
        assert_eq!(e.missing_function.as_deref(), Some("simulate (i64)"));
        let e = n.pull("missing").unwrap_err();
        assert!(e.message.contains("\"missing\""));
        let e = n.apply("a", vec![]).unwrap_err();
        assert_eq!(e.ename, "UnknownName");
        n.push("v", Value::Int(1)).unwrap();
        let e = n.apply("v", vec![]).unwrap_err();
        assert!(e.message.contains("not a function"), "{e}");
        let e = n.apply("1 + 1", vec![]).unwrap_err();
        assert!(
            e.message.contains("is a i64") || e.message.contains("is a"),
            "{e}"
        );
        let e = n.push("not valid", Value::Int(1)).unwrap_err();
        assert_eq!(e.ename, "BadArgument");
    }

    #[test]
    fn functions_cannot_be_pulled() {
        let mut n = ns();
        let _ = n.execute("let f = |x| x;").unwrap();
        let e = n.pull("f").unwrap_err();
        assert_eq!(e.ename, "NotTransferable");
        assert!(e.message.contains("Fn"), "{e}");
    }

    #[test]
    fn clear_forgets_everything() {
        let mut n = ns();
        let _ = n.execute("let a = 1; fn f() { 1 }").unwrap();
        n.clear();
        assert!(n.pull("a").is_err());
        assert!(n.execute("f()").is_err());
    }
}
