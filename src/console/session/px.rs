//! `%px` and `%run`, and what follows them: showing a run's output, values and errors,
//! interrupting it, `%result` and `%wait`.

use super::run::PxRun;
use super::{Session, Status, WaitEnd, GRACE};
use crate::console::input;
use crate::console::render;
use crate::console::targets::TargetSpec;
use anyhow::{bail, Result};
use std::rc::Rc;
use std::time::{Duration, Instant};
use zpar_client::{AsyncResult, ExecuteOptions, Script, Value};

impl Session {
    pub(super) fn px(
        &mut self,
        code: &str,
        targets: &Option<TargetSpec>,
        block: bool,
        timeout: Option<Duration>,
        label: &Option<String>,
    ) -> Result<Status> {
        self.ensure_hub()?;
        let (mut view, ids) = self.view(targets)?;
        if let Some(label) = label {
            view = view.label(label.clone());
        }
        let options = ExecuteOptions {
            timeout,
            ..Default::default()
        };
        let ar = view.execute_with(code, options)?;
        self.names.add(input::defined_names(code));
        // The engines enforce a timeout themselves; this is the backstop.
        let deadline = timeout.map(|t| Instant::now() + t + GRACE);
        self.follow(ar, ids, block, deadline)
    }

    /// `%run FILE`: the file (and what it imports) read here, then run on
    /// the targets and shown as a `%px` is.
    pub(super) fn run_file(&mut self, path: &str, targets: &Option<TargetSpec>) -> Result<Status> {
        let path = match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
            (Some(rest), Some(home)) => std::path::Path::new(&home).join(rest),
            _ => std::path::PathBuf::from(path),
        };
        // Read first: a missing file fails here, before anything is sent.
        let script = Script::load(&path)?;
        self.ensure_hub()?;
        let (view, ids) = self.view(targets)?;
        let ar = view.run_script(&script)?;
        self.names.add(input::defined_names(script.code()));
        self.follow(ar, ids, true, None)
    }

    /// Files a request the session sent as a `%px` run (its execution
    /// numbers, `%result`), then waits for it and shows it, or leaves it
    /// pending without `block`.
    fn follow(
        &mut self,
        ar: AsyncResult,
        ids: Vec<u32>,
        block: bool,
        deadline: Option<Instant>,
    ) -> Result<Status> {
        let counts = ids
            .iter()
            .map(|id| {
                let c = self.counts.entry(*id).or_insert(0);
                *c += 1;
                (*id, *c)
            })
            .collect();
        let run = PxRun {
            ar,
            counts,
            ids: ids.clone(),
            shown: Rc::default(),
        };
        self.last = Some(run.clone());
        if !block {
            self.out.line(format!(
                "sent to {}; %wait or %result show the outcome",
                render::engines(&ids)
            ));
            self.pending.push(run);
            return Ok(Status::Ok);
        }
        match self.wait_ar(&run.ar, deadline) {
            WaitEnd::Done => Ok(self.show_run(&run)),
            WaitEnd::Interrupted => Ok(self.interrupt_run(run, "Ctrl-C")),
            WaitEnd::TimedOut => {
                self.interrupt_run(run, "timed out");
                Ok(Status::Failed)
            }
            WaitEnd::HubGone => {
                self.pending.push(run);
                bail!(self.hub_gone_while_waiting())
            }
        }
    }

    /// Shows the replies of `run` not shown yet: the rest of their output,
    /// then values and errors in engine order.
    pub(super) fn show_run(&self, run: &PxRun) -> Status {
        let colour = self.out.colour();
        let mut shown = run.shown.borrow_mut();
        let replies: Vec<_> = run
            .ar
            .replies()
            .into_iter()
            .filter(|r| !shown.contains(&r.engine))
            .collect();
        for r in &replies {
            if let Some(engine) = r.engine {
                self.out
                    .finish_stream(&r.msg_id, engine, "stdout", &r.stdout);
                self.out
                    .finish_stream(&r.msg_id, engine, "stderr", &r.stderr);
            }
        }
        let mut status = Status::Ok;
        let mut lines = Vec::new();
        for r in &replies {
            shown.insert(r.engine);
            match (&r.outcome, r.engine) {
                (Ok(Value::Unit), _) => {}
                (Ok(v), Some(engine)) => lines.push(render::out_line(
                    engine,
                    run.counts.get(&engine).copied().unwrap_or_default(),
                    v,
                    false,
                )),
                (Ok(_), None) => {}
                (Err(e), _) => {
                    status = Status::Failed;
                    lines.extend(render::reply_error_lines(r.engine, e, false));
                }
            }
        }
        self.out.lines(render::group_lines(lines, colour));
        status
    }

    /// Interrupts the engines still running `run`, waits a moment for their
    /// answers and shows them; what is still out stays pending.
    pub(super) fn interrupt_run(&mut self, run: PxRun, why: &str) -> Status {
        let colour = self.out.colour();
        let waiting = run.waiting();
        if !waiting.is_empty() {
            self.out.line(render::notice(
                &format!("{why}: interrupting {}", render::engines(&waiting)),
                colour,
            ));
            if let Err(e) = self.client.interrupt(waiting) {
                self.report(&e.into());
            }
            let _ = self.wait_ar(&run.ar, Some(Instant::now() + GRACE.min(self.timeout)));
        }
        self.show_run(&run);
        if !run.ar.ready() {
            let (done, total) = run.ar.progress();
            self.out.line(render::notice(
                &format!(
                    "{done}/{total} engines answered; the rest still run (%wait waits for them, \
                     %interrupt or %abort stops them)"
                ),
                colour,
            ));
            self.pending.push(run);
        }
        Status::Interrupted
    }

    pub(super) fn result(&self) -> Status {
        let Some(run) = &self.last else {
            self.out.line("no %px has run yet");
            return Status::Ok;
        };
        let colour = self.out.colour();
        let replies = run.ar.replies();
        let mut lines = Vec::new();
        let streamed = run.ar.stdout();
        for id in &run.ids {
            match replies.iter().find(|r| r.engine == Some(*id)) {
                Some(r) => {
                    lines.extend(render::stream_lines(*id, "stdout", &r.stdout, colour));
                    lines.extend(render::stream_lines(*id, "stderr", &r.stderr, colour));
                }
                None => {
                    if let Some(text) = streamed.get(id) {
                        lines.extend(render::stream_lines(*id, "stdout", text, colour));
                    }
                }
            }
        }
        let mut results = Vec::new();
        for r in &replies {
            match (&r.outcome, r.engine) {
                (Ok(Value::Unit), _) | (Ok(_), None) => {}
                (Ok(v), Some(engine)) => results.push(render::out_line(
                    engine,
                    run.counts.get(&engine).copied().unwrap_or_default(),
                    v,
                    false,
                )),
                (Err(e), _) => results.extend(render::reply_error_lines(r.engine, e, false)),
            }
        }
        lines.extend(render::group_lines(results, colour));
        if !run.ar.ready() {
            let (done, total) = run.ar.progress();
            lines.push(render::notice(
                &format!("{done}/{total} engines done; %wait waits for the rest"),
                colour,
            ));
        }
        self.out.lines(lines);
        Status::Ok
    }

    pub(super) fn wait(&mut self, limit: Option<Duration>) -> Result<Status> {
        if self.pending.is_empty() {
            self.out.line("nothing is running");
            return Ok(Status::Ok);
        }
        let deadline = limit.map(|l| Instant::now() + l);
        let mut runs = std::mem::take(&mut self.pending).into_iter();
        let mut status = Status::Ok;
        while let Some(run) = runs.next() {
            match self.wait_ar(&run.ar, deadline) {
                WaitEnd::Done => status = status.max(self.show_run(&run)),
                WaitEnd::Interrupted => {
                    self.pending.extend(runs);
                    return Ok(self.interrupt_run(run, "Ctrl-C"));
                }
                WaitEnd::TimedOut => {
                    let (done, total) = run.ar.progress();
                    self.pending.push(run);
                    self.pending.extend(runs);
                    bail!(
                        "still running after {:?}: {done}/{total} engines done (%wait again, or \
                         %interrupt)",
                        limit.unwrap_or_default()
                    );
                }
                WaitEnd::HubGone => {
                    self.pending.push(run);
                    self.pending.extend(runs);
                    bail!(self.hub_gone_while_waiting());
                }
            }
        }
        Ok(status)
    }
}
