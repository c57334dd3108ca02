//! The data and control commands: `%push`, `%pull`, `%scatter`,
//! `%gather`, `%comm`, `%targets`, `%engines`, `%abort`, `%interrupt`,
//! `%clear`, `%bind_kernel`. Each waits at most `--timeout` for its answers.

use super::run::Control;
use super::{Session, Status, WaitEnd, GRACE};
use crate::console::render;
use crate::console::targets::{compact, TargetSpec};
use anyhow::{bail, Result};
use std::time::Instant;
use zpar_client::{AsyncResult, Value};

impl Session {
    /// Waits for a data or control request, at most `--timeout`. Ok(None)
    /// when it is in; otherwise the status after saying why not.
    pub(super) fn await_reply(&self, ar: &AsyncResult, what: &str) -> Result<Option<Status>> {
        let end = self.wait_ar(ar, Some(Instant::now() + self.timeout));
        let (done, total) = ar.progress();
        match end {
            WaitEnd::Done => Ok(None),
            WaitEnd::Interrupted => {
                self.out.line(render::notice(
                    &format!(
                        "stopped waiting for {what} ({done}/{total} engines answered); what is \
                         queued stays queued (%abort drops it)"
                    ),
                    self.out.colour(),
                ));
                Ok(Some(Status::Interrupted))
            }
            WaitEnd::TimedOut => bail!(
                "{what}: only {done} of {total} engines answered within {:?} (the --timeout); \
                 busy engines answer after their running code (%interrupt stops it)",
                self.timeout
            ),
            WaitEnd::HubGone => bail!(self.hub_gone_while_waiting()),
        }
    }

    /// Shows the errors among `ar`'s replies; Failed if there were any.
    pub(super) fn show_errors(&self, ar: &AsyncResult) -> Status {
        let colour = self.out.colour();
        let mut status = Status::Ok;
        for r in ar.replies() {
            if let Err(e) = &r.outcome {
                status = Status::Failed;
                self.out
                    .lines(render::reply_error_lines(r.engine, e, colour));
            }
        }
        status
    }

    pub(super) fn push(
        &mut self,
        name: &str,
        value: Value,
        targets: &Option<TargetSpec>,
    ) -> Result<Status> {
        self.ensure_hub()?;
        let (view, ids) = self.view(targets)?;
        self.names.add([name]);
        let ar = view.push(name, value)?;
        if let Some(s) = self.await_reply(&ar, &format!("the push of {name}"))? {
            return Ok(s);
        }
        let status = self.show_errors(&ar);
        if status == Status::Ok {
            self.out
                .line(format!("pushed {name} to {}", render::engines(&ids)));
        }
        Ok(status)
    }

    pub(super) fn pull(&mut self, name: &str, targets: &Option<TargetSpec>) -> Result<Status> {
        self.ensure_hub()?;
        let (view, _) = self.view(targets)?;
        self.names.add([name]);
        let ar = view.pull(name)?;
        if let Some(s) = self.await_reply(&ar, &format!("the pull of {name}"))? {
            return Ok(s);
        }
        let colour = self.out.colour();
        let mut status = Status::Ok;
        let mut lines = Vec::new();
        for r in ar.replies() {
            match &r.outcome {
                Ok(v) => {
                    if let Some(engine) = r.engine {
                        lines.push(render::named_line(engine, name, v, colour))
                    }
                }
                Err(e) => {
                    status = Status::Failed;
                    lines.extend(render::reply_error_lines(r.engine, e, colour));
                }
            }
        }
        self.out.lines(lines);
        Ok(status)
    }

    pub(super) fn scatter(
        &mut self,
        name: &str,
        value: Value,
        targets: &Option<TargetSpec>,
        flatten: bool,
    ) -> Result<Status> {
        self.ensure_hub()?;
        let (view, ids) = self.view(targets)?;
        self.names.add([name]);
        let items = match &value {
            Value::Array(a) => a.len(),
            Value::F64Array(a) => a.len(),
            Value::I64Array(a) => a.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        };
        let ar = view.scatter(name, value, flatten)?;
        if let Some(s) = self.await_reply(&ar, &format!("the scatter of {name}"))? {
            return Ok(s);
        }
        let status = self.show_errors(&ar);
        if status == Status::Ok {
            self.out.line(format!(
                "scattered {items} items of {name} over {}",
                render::engines(&ids)
            ));
        }
        Ok(status)
    }

    pub(super) fn gather(&mut self, name: &str, targets: &Option<TargetSpec>) -> Result<Status> {
        self.ensure_hub()?;
        let (view, _) = self.view(targets)?;
        self.names.add([name]);
        let ar = view.gather(name)?;
        if let Some(s) = self.await_reply(&ar, &format!("the gather of {name}"))? {
            return Ok(s);
        }
        let status = self.show_errors(&ar);
        if status != Status::Ok {
            return Ok(status);
        }
        let v = ar.get_gathered()?;
        self.out.line(format!("{name} = {}", render::value(&v)));
        Ok(Status::Ok)
    }

    pub(super) fn comm(&mut self, name: &str, targets: &Option<TargetSpec>) -> Result<Status> {
        self.ensure_hub()?;
        let (view, ids) = self.view(targets)?;
        self.names.add([name]);
        let timeout = self.timeout;
        let owned = name.to_string();
        match self.blocking(move || view.setup_communicator(&owned, timeout)) {
            None => {
                self.out.line(render::notice(
                    &format!("Ctrl-C: interrupting the setup of {name}"),
                    self.out.colour(),
                ));
                if let Ok(ar) = self.client.interrupt(ids) {
                    ar.wait(Some(GRACE.min(self.timeout)));
                }
                Ok(Status::Interrupted)
            }
            Some(Err(e)) => Err(e.into()),
            Some(Ok(())) => {
                let tree = zpar_client::communicator_tree(&ids);
                let root = tree.iter().find(|(_, p)| p.is_none()).map(|(c, _)| *c);
                self.out.line(format!(
                    "{name}: a tree communicator over {}, root {}:",
                    render::engines(&ids),
                    root.map_or_else(|| "none".to_string(), |r| r.to_string())
                ));
                self.out
                    .line(zpar_client::format_bintree(&tree, "  ").trim_end());
                Ok(Status::Ok)
            }
        }
    }

    pub(super) fn set_targets(&mut self, spec: Option<TargetSpec>) -> Result<Status> {
        if let Some(spec) = spec {
            if let TargetSpec::Ids(ids) = &spec {
                let known = self.client.ids();
                if let Some(bad) = ids.iter().find(|i| !known.contains(i)) {
                    bail!(
                        "engine {bad} is not registered with the hub (engines: {}); targets stay {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            compact(&known)
                        },
                        self.targets
                    );
                }
            }
            self.targets = spec;
        }
        let now = match self.view(&None) {
            Ok((_, ids)) => render::engines(&ids),
            Err(_) => "no engines now".to_string(),
        };
        self.out.line(format!("targets: {} ({now})", self.targets));
        Ok(Status::Ok)
    }

    pub(super) fn engines(&mut self, all: bool) -> Result<Status> {
        self.ensure_hub()?;
        let client = self.client.clone();
        let Some(q) = self.blocking(move || client.queue_status()) else {
            return Ok(Status::Interrupted);
        };
        let q = q?;
        let hosts = self
            .client
            .engine_hosts(std::time::Duration::from_secs(5))
            .unwrap_or_default();
        let targets = self.view(&None).map(|(_, ids)| ids).unwrap_or_default();
        self.out
            .lines(render::engines_table(&q, &targets, &hosts, all));
        Ok(Status::Ok)
    }

    pub(super) fn control(
        &mut self,
        what: Control,
        targets: &Option<TargetSpec>,
    ) -> Result<Status> {
        self.ensure_hub()?;
        let (_, ids) = self.view(targets)?;
        let (ar, label, done) = match what {
            Control::Abort { running: false } => (
                self.client.abort(ids.clone(), None)?,
                "the abort",
                "aborted the work queued on",
            ),
            Control::Abort { running: true } => (
                self.client.abort_running(ids.clone(), None)?,
                "the abort",
                "aborted the work running and queued on",
            ),
            Control::Interrupt => (
                self.client.interrupt(ids.clone())?,
                "the interrupt",
                "interrupted",
            ),
            Control::Clear => (
                self.client.clear(ids.clone())?,
                "the clear",
                "cleared the namespaces of",
            ),
        };
        if let Some(s) = self.await_reply(&ar, label)? {
            return Ok(s);
        }
        let status = self.show_errors(&ar);
        if status == Status::Ok {
            self.out.line(format!("{done} {}", render::engines(&ids)));
        }
        Ok(status)
    }
}

impl Session {
    /// `%bind_kernel`: each target serves as a Jupyter kernel too; says
    /// where each one's connection file is.
    pub(super) fn bind_kernel(&mut self, targets: &Option<TargetSpec>) -> Result<Status> {
        self.ensure_hub()?;
        let (view, _) = self.view(targets)?;
        let ar = view.bind_kernel()?;
        if let Some(s) = self.await_reply(&ar, "the kernel binding")? {
            return Ok(s);
        }
        let status = self.show_errors(&ar);
        let key = self.client.connection().key.clone();
        for r in ar.replies() {
            let Ok(value) = &r.outcome else { continue };
            let k = zpar_client::BoundKernel::from_value(value, &key)?;
            self.out.line(format!(
                "[{}] kernel: jupyter console --existing {}",
                k.engine,
                k.connection_file.display()
            ));
        }
        Ok(status)
    }
}
