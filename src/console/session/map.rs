//! `%map`: a load-balanced map over a sequence (read lazily, so a range
//! may have no end), its results shown as they come; Ctrl-C cancels it.

use super::{Session, Status, SLICE};
use crate::console::literal::Sequence;
use crate::console::render;
use crate::console::targets::TargetSpec;
use anyhow::{bail, Result};
use zpar_client::{Error, Value};

/// What `%map` was asked to do.
pub(super) struct MapJob {
    pub(super) sequence: Sequence,
    pub(super) function: String,
    pub(super) ordered: bool,
    pub(super) max_outstanding: usize,
    pub(super) label: Option<String>,
}

impl Session {
    pub(super) fn map(&mut self, job: MapJob, targets: &Option<TargetSpec>) -> Result<Status> {
        self.ensure_hub()?;
        let (_, ids) = self.view(targets)?;
        if ids.is_empty() {
            bail!("%map has no engines to run on (%engines lists them)");
        }
        let mut lb = self.client.load_balanced().with_targets(ids);
        if let Some(label) = job.label {
            lb = lb.label(label);
        }
        let items: Box<dyn Iterator<Item = Value> + Send> = match job.sequence {
            Sequence::Values(v) => Box::new(v.into_iter()),
            Sequence::Range {
                start,
                end: Some(end),
            } => Box::new((start..end).map(Value::Int)),
            Sequence::Range { start, end: None } => Box::new((start..).map(Value::Int)),
        };
        let mut map = lb.imap(&job.function, items, job.ordered, job.max_outstanding);
        let colour = self.out.colour();
        let (mut shown, mut failed) = (0usize, 0usize);
        // Each result shows its item's index in the sequence.
        loop {
            if super::signal::take() {
                let in_flight = map.outstanding();
                let cancelled = map.cancel();
                self.out.line(render::notice(
                    &format!(
                        "cancelled the map after {shown} results: {in_flight} tasks in flight were \
                         aborted or stopped"
                    ),
                    colour,
                ));
                cancelled?;
                return Ok(Status::Interrupted);
            }
            if self.hub.is_down() {
                bail!(self.hub_gone_while_waiting());
            }
            match map.next_timeout(SLICE) {
                Err(Error::Timeout { .. }) => continue,
                Err(e) => return Err(e.into()),
                Ok(None) => break,
                Ok(Some((i, Ok(v)))) => self.out.line(format!("[{i}] {}", render::value(&v))),
                Ok(Some((i, Err(e)))) => {
                    failed += 1;
                    let mut lines = render::error_lines(&e, colour);
                    if let Some(first) = lines.first_mut() {
                        *first = format!("[{i}] {first}");
                    }
                    self.out.lines(lines);
                }
            }
            shown += 1;
        }
        self.out.line(format!(
            "mapped {shown} items{}",
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        ));
        Ok(if failed > 0 {
            Status::Failed
        } else {
            Status::Ok
        })
    }
}
