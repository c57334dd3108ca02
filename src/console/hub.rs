//! Watching the hub: a thread asks it for the engine table every second
//! (a cheap query that also keeps our table fresh), says on its own line
//! when the hub stops or starts answering again, and lets commands fail at
//! once while it is gone instead of waiting on a hub that is not there.

use super::output::Output;
use super::render;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use zpar_client::Client;

/// How often the hub is asked.
const PERIOD: Duration = Duration::from_secs(1);
/// How long one question may take before the hub counts as gone.
const PROBE: Duration = Duration::from_secs(2);

/// The watch; stops its thread on drop.
pub struct HubWatch {
    down: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    url: String,
}

impl HubWatch {
    /// Starts watching the hub `client` talks to.
    pub fn start(client: Client, out: Output) -> std::io::Result<HubWatch> {
        let down = Arc::new(AtomicBool::new(false));
        let url = client.connection().url(client.connection().registration);
        let (tx, rx) = mpsc::channel::<()>();
        let flag = down.clone();
        let where_ = url.clone();
        let thread = std::thread::Builder::new()
            .name("zpar-console-hub".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(PERIOD) {
                    let ok = client.refresh_engines(PROBE).is_ok();
                    let was_down = flag.swap(!ok, Ordering::SeqCst);
                    let colour = out.colour();
                    if ok && was_down {
                        out.line(render::notice(
                            &format!("the hub at {where_} answers again"),
                            colour,
                        ));
                    } else if !ok && !was_down {
                        out.line(render::notice(
                            &format!(
                                "the hub at {where_} is not answering; commands fail until it is back"
                            ),
                            colour,
                        ));
                    }
                }
            })?;
        Ok(HubWatch {
            down,
            stop: Some(tx),
            thread: Some(thread),
            url,
        })
    }

    /// Whether the hub failed to answer the last question.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Records what a command found out.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The hub's registration address.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for HubWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
