//! What a run reports: [`Figure`]s with their ratios to a baseline, as a
//! table or one JSON record, and the medians and repetition counts every
//! suite measures with.

use anyhow::Result;
use serde_json::json;
use std::time::Instant;

/// One measured figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The median.
    pub value: f64,
    /// Its unit (`us`, `MB/s`, `tasks/s`, `MiB`, `s`).
    pub unit: String,
    /// The baseline's name, if compared.
    pub baseline: Option<String>,
    /// value / baseline (for times: lower is better; for rates: higher).
    pub ratio: Option<f64>,
}

/// The figures of a run: each printed as a table row as it is measured, or
/// all printed as one JSON record at the end (`--json`).
pub(crate) struct Report {
    figures: Vec<Figure>,
    json: bool,
}

impl Report {
    /// An empty report; as a table, its header is printed now.
    pub(crate) fn new(json: bool) -> Report {
        if !json {
            println!(
                "{:<48} {:>12} {:<8} ratio to baseline (same run)",
                "figure (median)", "value", "unit"
            );
        }
        Report {
            figures: Vec::new(),
            json,
        }
    }

    /// Adds a figure, with its ratio to `baseline` (name, value) if given.
    pub(crate) fn add(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        baseline: Option<(&str, f64)>,
    ) {
        let fig = Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            baseline: baseline.map(|(b, _)| b.to_string()),
            ratio: baseline.map(|(_, b)| value / b),
        };
        if !self.json {
            let ratio = match (&fig.baseline, fig.ratio) {
                (Some(b), Some(r)) => format!("{r:>7.2}x {b}"),
                _ => String::new(),
            };
            println!(
                "{:<48} {:>12.1} {:<8} {}",
                fig.name, fig.value, fig.unit, ratio
            );
        }
        self.figures.push(fig);
    }

    /// Ends the run: with `--json`, prints every figure as one record.
    pub(crate) fn finish(self) -> Result<()> {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "figures": self.figures }))?
            );
        }
        Ok(())
    }
}

/// The median of some samples.
pub(crate) fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// Repetitions: `base` times `--scale`, at least 3.
pub(crate) fn reps(base: usize, scale: f64) -> usize {
    ((base as f64 * scale).round() as usize).max(3)
}

/// How long `f` takes, in µs.
fn time_us(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

/// The median time of `n` runs of `f`, in µs, after a few to warm up.
pub(crate) fn median_us(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..(n / 10).max(2) {
        f()?; // warm up
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(time_us(&mut f)?);
    }
    Ok(median(&mut samples))
}
