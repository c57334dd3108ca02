//! A TCP relay the tests control: it stands in front of some of a hub's
//! ports and keeps a copy of every byte it passes, so a test can look at
//! what crossed the wire without any capture tool.

use crate::support::WAIT;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A TCP relay in front of some of the hub's ports that keeps a copy of
/// every byte it passes, both ways. Stopped on drop.
pub struct Relay {
    bytes: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    listeners: Vec<(u16, JoinHandle<()>)>,
}

impl Relay {
    /// Listens on a fresh loopback port for each of `ports` of the hub;
    /// returns the relay and the port that stands in for each.
    pub fn start(ports: &[u16]) -> (Relay, Vec<u16>) {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut listeners = Vec::new();
        let mut local = Vec::new();
        for &target in ports {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let (bytes, stop) = (bytes.clone(), stop.clone());
            let accept = std::thread::spawn(move || {
                for inbound in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(inbound) = inbound else { continue };
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                        continue;
                    };
                    pump(&inbound, &outbound, &bytes);
                    pump(&outbound, &inbound, &bytes);
                }
            });
            listeners.push((port, accept));
            local.push(port);
        }
        (
            Relay {
                bytes,
                stop,
                listeners,
            },
            local,
        )
    }

    /// Whether `needle` passed through the relay, either way.
    pub fn saw(&self, needle: &[u8]) -> bool {
        let bytes = self.bytes.lock().unwrap();
        bytes.windows(needle.len()).any(|w| w == needle)
    }

    pub fn len(&self) -> usize {
        self.bytes.lock().unwrap().len()
    }
}

/// Copies `from` to `to` on a thread of its own, recording what passes,
/// until either side closes (bounded: reads time out after [`WAIT`]).
fn pump(from: &TcpStream, to: &TcpStream, bytes: &Arc<Mutex<Vec<u8>>>) {
    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
    let bytes = bytes.clone();
    let _ = from.set_read_timeout(Some(WAIT));
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.lock().unwrap().extend_from_slice(&buf[..n]);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (port, accept) in self.listeners.drain(..) {
            // Wakes the accept loop, which sees the flag and ends.
            let _ = TcpStream::connect(("127.0.0.1", port));
            let _ = accept.join();
        }
    }
}
