//! Everything the console prints goes through one [`Output`], shared by the
//! command thread and the event thread, so lines never interleave.
//!
//! # Design
//!
//! Engines stream `print` output on iopub as it happens; the client hands
//! it to us as [`ClientEvent::Stream`]s on a thread of ours (the event
//! pump), which prints whole lines as `[stdout:ID] ...` at once. The reply
//! to the request also carries the request's whole stdout. When a reply is
//! shown, [`Output::finish_stream`] prints what the stream has not shown yet
//! (iopub and the reply travel on different sockets, so either may come
//! first) and remembers how much was shown, so late stream messages are not
//! printed twice. At the prompt the sink is rustyline's external printer,
//! which prints above the line being edited without corrupting it.

use super::render;
use rustyline::ExternalPrinter;
use std::collections::HashMap;
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use zpar_client::ClientEvent;

/// Where lines go.
pub enum Sink {
    /// Standard output.
    Stdout,
    /// rustyline's printer (a terminal with a prompt), fed through a
    /// thread of its own: the printer may block until the editor takes the
    /// text, and nobody holding the [`Output`] lock may wait on that.
    Printer(mpsc::Sender<String>),
    /// Kept in memory (tests).
    Memory(Arc<Mutex<String>>),
}

impl Sink {
    /// A sink that prints through `printer` on a thread of its own (it
    /// ends when the sink is replaced or dropped).
    pub fn printer(mut printer: impl ExternalPrinter + Send + 'static) -> std::io::Result<Sink> {
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("zpar-console-printer".into())
            .spawn(move || {
                while let Ok(text) = rx.recv() {
                    if printer.print(text.clone()).is_err() {
                        // The editor is gone: straight to stdout.
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(text.as_bytes());
                        let _ = out.flush();
                    }
                }
            })?;
        Ok(Sink::Printer(tx))
    }
}

/// How much of one request's stream on one engine has been seen and shown.
#[derive(Debug, Default)]
struct StreamState {
    /// Bytes received as stream messages.
    seen: usize,
    /// Received but not printed: the start of an unfinished line.
    partial: String,
    /// Once the reply is shown: the length of the whole stream, all of which
    /// has been printed.
    total: Option<usize>,
}

struct State {
    sink: Sink,
    colour: bool,
    /// Progress is redrawn in place (a terminal) rather than printed as
    /// lines.
    transient: bool,
    /// The progress text on screen (terminal) or last printed (lines).
    progress: Option<String>,
    streams: HashMap<(String, u32, String), StreamState>,
}

/// The console's printer. Cheap to clone.
#[derive(Clone)]
pub struct Output {
    state: Arc<Mutex<State>>,
}

impl Output {
    /// Prints to `sink`; `colour` and in-place progress on a terminal.
    pub fn new(sink: Sink, colour: bool, transient: bool) -> Output {
        Output {
            state: Arc::new(Mutex::new(State {
                sink,
                colour,
                transient,
                progress: None,
                streams: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while printing leaves nothing half-done that matters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether colour is on.
    pub fn colour(&self) -> bool {
        self.lock().colour
    }

    /// Replaces the sink (the external printer, once the editor exists).
    pub fn set_sink(&self, sink: Sink) {
        self.lock().sink = sink;
    }

    /// Prints one line (or several, separated by newlines).
    pub fn line(&self, text: impl AsRef<str>) {
        let mut s = self.lock();
        s.write_line(text.as_ref());
    }

    /// Prints lines.
    pub fn lines<I: IntoIterator<Item = String>>(&self, lines: I) {
        let mut s = self.lock();
        for l in lines {
            s.write_line(&l);
        }
    }

    /// Shows `done`/`total` engines finished after `elapsed`: redrawn in
    /// place on a terminal, a line per change otherwise.
    pub fn progress(&self, done: usize, total: usize, elapsed: std::time::Duration) {
        let mut s = self.lock();
        if s.transient {
            let text = render::progress(done, total, Some(elapsed));
            let painted = render::paint(&text, render::Colour::Dim, s.colour);
            s.write_raw(&format!("\r\x1b[K{painted}"));
            s.progress = Some(text);
        } else {
            let text = render::progress(done, total, None);
            if s.progress.as_deref() != Some(text.as_str()) {
                s.write_raw(&format!("{text}\n"));
                s.progress = Some(text);
            }
        }
    }

    /// Takes the progress line away (the command is over).
    pub fn end_progress(&self) {
        let mut s = self.lock();
        s.clear_progress();
        s.progress = None;
    }

    /// Streamed output of request `msg_id` on `engine`: prints its whole
    /// lines now.
    pub fn stream(&self, msg_id: Option<&str>, engine: u32, name: &str, text: &str) {
        let mut s = self.lock();
        let colour = s.colour;
        let key = (
            msg_id.unwrap_or_default().to_string(),
            engine,
            name.to_string(),
        );
        let st = s.streams.entry(key.clone()).or_default();
        let before = st.seen;
        st.seen += text.len();
        let mut fresh = text;
        if let Some(total) = st.total {
            // The reply already showed everything up to `total`.
            let skip = total.saturating_sub(before);
            if skip >= text.len() {
                if st.seen >= total {
                    s.streams.remove(&key);
                }
                return;
            }
            fresh = text.get(skip..).unwrap_or(text);
        }
        st.partial.push_str(fresh);
        let Some(end) = st.partial.rfind('\n') else {
            return;
        };
        let ready: String = st.partial.drain(..=end).collect();
        for l in render::stream_lines(engine, name, &ready, colour) {
            s.write_line(&l);
        }
    }

    /// The reply of `msg_id` on `engine` is being shown and its whole stream
    /// `name` was `full`: prints what streaming has not shown yet.
    pub fn finish_stream(&self, msg_id: &str, engine: u32, name: &str, full: &str) {
        let mut s = self.lock();
        let colour = s.colour;
        let key = (msg_id.to_string(), engine, name.to_string());
        let st = s.streams.remove(&key).unwrap_or_default();
        if st.total.is_some() {
            s.streams.insert(key, st);
            return; // shown before
        }
        let mut rest = st.partial;
        if full.len() > st.seen {
            rest.push_str(full.get(st.seen..).unwrap_or_default());
        }
        if st.seen < full.len() {
            s.streams.insert(
                key,
                StreamState {
                    seen: st.seen,
                    partial: String::new(),
                    total: Some(full.len()),
                },
            );
        }
        for l in render::stream_lines(engine, name, &rest, colour) {
            s.write_line(&l);
        }
    }

    /// Shows something the client saw happen.
    pub fn event(&self, event: ClientEvent) {
        let colour = self.colour();
        match event {
            ClientEvent::Stream {
                engine,
                name,
                text,
                msg_id,
            } => self.stream(msg_id.as_deref(), engine, &name, &text),
            ClientEvent::EngineRegistered(id) => {
                self.line(render::notice(&format!("engine {id} joined"), colour))
            }
            ClientEvent::EngineUnregistered { engine, reason } => {
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                };
                self.line(render::notice(
                    &format!("engine {engine} left{why}"),
                    colour,
                ))
            }
            // The console's own hub watch says these on its line.
            ClientEvent::HubLost { .. } | ClientEvent::HubReturned { .. } => {}
        }
    }

    /// Prints events from `rx` on a thread of its own until the client
    /// closes.
    pub fn pump(&self, rx: mpsc::Receiver<ClientEvent>) -> std::io::Result<()> {
        let out = self.clone();
        std::thread::Builder::new()
            .name("zpar-console-events".into())
            .spawn(move || {
                while let Ok(e) = rx.recv() {
                    out.event(e);
                }
            })
            .map(|_| ())
    }
}

impl State {
    fn clear_progress(&mut self) {
        if self.transient && self.progress.is_some() {
            self.progress = None;
            self.write_raw("\r\x1b[K");
        }
    }

    fn write_line(&mut self, text: &str) {
        self.clear_progress();
        let mut t = text.to_string();
        t.push('\n');
        self.write_raw(&t);
    }

    fn write_raw(&mut self, text: &str) {
        match &mut self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            Sink::Printer(p) => {
                if p.send(text.to_string()).is_err() {
                    self.sink = Sink::Stdout;
                    self.write_raw(text);
                }
            }
            Sink::Memory(m) => m.lock().unwrap_or_else(|p| p.into_inner()).push_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> (Output, Arc<Mutex<String>>) {
        let m = Arc::new(Mutex::new(String::new()));
        (Output::new(Sink::Memory(m.clone()), false, false), m)
    }

    fn take(m: &Arc<Mutex<String>>) -> String {
        std::mem::take(&mut *m.lock().unwrap())
    }

    #[test]
    fn streams_print_whole_lines_as_they_come() {
        let (out, m) = memory();
        out.stream(Some("a"), 0, "stdout", "hel");
        assert_eq!(take(&m), "");
        out.stream(Some("a"), 0, "stdout", "lo\nwor");
        assert_eq!(take(&m), "[stdout:0] hello\n");
        out.finish_stream("a", 0, "stdout", "hello\nworld\n");
        assert_eq!(take(&m), "[stdout:0] world\n");
        // The rest of the stream arrives after the reply: not again.
        out.stream(Some("a"), 0, "stdout", "ld\n");
        assert_eq!(take(&m), "");
        assert!(out.lock().streams.is_empty());
    }

    #[test]
    fn a_reply_before_its_stream_prints_once() {
        let (out, m) = memory();
        out.finish_stream("b", 1, "stdout", "x\ny\n");
        assert_eq!(take(&m), "[stdout:1] x\n[stdout:1] y\n");
        out.stream(Some("b"), 1, "stdout", "x\n");
        out.stream(Some("b"), 1, "stdout", "y\n");
        assert_eq!(take(&m), "");
        assert!(out.lock().streams.is_empty());
        // Engines and requests are kept apart.
        out.stream(Some("b"), 2, "stdout", "z\n");
        out.stream(Some("c"), 1, "stdout", "w\n");
        assert_eq!(take(&m), "[stdout:2] z\n[stdout:1] w\n");
    }

    #[test]
    fn events_and_progress() {
        let (out, m) = memory();
        out.event(ClientEvent::EngineRegistered(4));
        out.event(ClientEvent::EngineUnregistered {
            engine: 2,
            reason: "heartbeat".into(),
        });
        assert_eq!(
            take(&m),
            "[zpar] engine 4 joined\n[zpar] engine 2 left (heartbeat)\n"
        );
        let t = std::time::Duration::from_secs(2);
        out.progress(0, 2, t);
        out.progress(0, 2, t);
        out.progress(1, 2, t);
        assert_eq!(
            take(&m),
            "[progress] 0/2 engines done\n[progress] 1/2 engines done\n"
        );
        let m2 = Arc::new(Mutex::new(String::new()));
        let tty = Output::new(Sink::Memory(m2.clone()), false, true);
        tty.progress(1, 2, t);
        tty.line("next");
        assert_eq!(take(&m2), "\r\x1b[K1/2 engines done (2.0 s)\r\x1b[Knext\n");
    }
}
