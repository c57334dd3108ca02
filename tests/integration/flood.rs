//! Peers without the key cannot exhaust a cluster: a frame larger than any
//! zpar sends costs its sender the connection, on every port of the hub and
//! on an engine's communicator, before the receiver holds it; thousands of
//! idle plain connections do not keep engines out.

use crate::support::{cluster, wait_until, watchdog, WAIT};
use zpar::bench::rss::peak_rss_mib;
use zpar::Value;

/// What a process may have held at its peak after the floods (it starts
/// at 10–40 MiB; one frame of a GiB held would pass it).
const PEAK_MIB: f64 = 200.0;

/// Sends one frame of `bytes` to `endpoint` from `senders` plain DEALER
/// sockets at once, and waits (bounded) until the receiver has dropped
/// every one of them: the frame never leaves the sender whole.
fn flood(ctx: &zmq::Context, endpoint: &str, senders: usize, bytes: usize) {
    let pairs: Vec<(zmq::Socket, zmq::Socket)> = (0..senders)
        .map(|_| {
            let s = ctx.socket(zmq::DEALER).unwrap();
            s.set_linger(0).unwrap();
            // Only one try: a dropped connection is not made again.
            s.set_reconnect_ivl(-1).unwrap();
            let at = format!("inproc://flood-{}", zpar_protocol::new_id());
            s.monitor(&at, zmq::SocketEvent::DISCONNECTED.to_raw() as i32)
                .unwrap();
            let monitor = ctx.socket(zmq::PAIR).unwrap();
            monitor.connect(&at).unwrap();
            s.connect(endpoint).unwrap();
            // Fresh zeroed pages: nothing is resident until read.
            s.send(zmq::Message::from(vec![0u8; bytes]), 0).unwrap();
            (s, monitor)
        })
        .collect();
    let mut dropped = vec![false; senders];
    wait_until(
        &format!("{endpoint} drops {senders} senders of {bytes} bytes"),
        || {
            for (i, (_, monitor)) in pairs.iter().enumerate() {
                if monitor.recv_multipart(zmq::DONTWAIT).is_ok() {
                    dropped[i] = true;
                }
            }
            dropped.iter().all(|d| *d)
        },
    );
}

#[test]
fn frames_of_a_gib_cost_their_sender_the_connection_not_the_hub_or_engine_its_memory() {
    let _watchdog = watchdog();
    let (cluster, client) = cluster(2);
    let view = client.all();
    view.setup_communicator("com", WAIT).unwrap();
    let url = view
        .execute("com.info.url")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let Value::Str(communicator) = &url[0] else {
        panic!("communicator url: {url:?}")
    };
    let clients = client.connection().clone();
    let engines: zpar::EngineConnection =
        zpar_protocol::connection::read_json_file(&cluster.profile().engine_file()).unwrap();
    let at = |port: u16| format!("tcp://127.0.0.1:{port}");
    let mut endpoints = vec![communicator.clone()];
    endpoints.extend(
        [
            clients.registration,
            clients.mux,
            clients.task,
            clients.control,
            clients.iopub,
            clients.notification,
            engines.heartbeat,
            engines.link,
        ]
        .map(at),
    );
    let ctx = zmq::Context::new();
    for endpoint in &endpoints {
        flood(&ctx, endpoint, 3, 1 << 30);
    }
    let pids = cluster.pids();
    let hub = peak_rss_mib(pids.hub);
    let engine = peak_rss_mib(pids.engines[0]);
    assert!(hub < PEAK_MIB, "the hub held {hub:.0} MiB at its peak");
    assert!(
        engine < PEAK_MIB,
        "engine 0 held {engine:.0} MiB at its peak"
    );
    // And everything still serves, the communicator too.
    let sum = view
        .execute("com.allreduce(|a, b| a + b, 1, true)")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(sum, vec![Value::Int(2), Value::Int(2)]);
}

/// Raises this process's soft limit on open files to its hard limit and
/// returns it.
fn raise_own_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls read or write only the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[test]
fn two_thousand_idle_plain_connections_do_not_keep_engines_out() {
    let _watchdog = watchdog();
    let files = raise_own_file_limit();
    assert!(
        files > 2_200,
        "this test holds 2,000 connections; its limit on open files is {files} (ulimit -Hn)"
    );
    let (mut cluster, client) = cluster(1);
    let engines: zpar::EngineConnection =
        zpar_protocol::connection::read_json_file(&cluster.profile().engine_file()).unwrap();
    // Plain TCP, never a byte: spread over the ports engines use.
    let ports = [engines.link, engines.heartbeat];
    let idle: Vec<std::net::TcpStream> = (0..2_000)
        .map(|i| std::net::TcpStream::connect(("127.0.0.1", ports[i % ports.len()])).unwrap())
        .collect();
    cluster.add_engines(2).unwrap();
    wait_until("3 engines registered", || client.ids().len() == 3);
    let ids = client
        .all()
        .execute("1 + 1")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(ids, vec![Value::Int(2); 3]);
    drop(idle);
}

/// A hub whose limit on open files leaves room for 8 engines (209 files,
/// set in the child before it starts) refuses the ninth and tenth engine's
/// registration at once, in one line that names the limit and the remedy,
/// and serves the eight.
#[test]
fn engines_past_the_hubs_limit_on_open_files_are_refused_naming_it() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let _watchdog = watchdog();
    let dir = std::env::temp_dir().join(format!("zpar-limit-{}", zpar_protocol::new_id()));
    let mut hub = Command::new(crate::support::zpar_bin());
    hub.args(["hub", "--profile-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        hub.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 209,
                rlim_max: 209,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut reaper = crate::support::Reaper::of(hub.spawn().expect("starting a hub"));
    let security = dir.join("security");
    wait_until("the hub writes its connection files", || {
        security.join("zpar-engine.json").exists() && security.join("zpar-client.json").exists()
    });
    let mut engines = Vec::new();
    for _ in 0..10 {
        let engine = Command::new(crate::support::zpar_bin())
            .args(["engine", "--timeout", "20", "--file"])
            .arg(security.join("zpar-engine.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting an engine");
        engines.push(engine);
    }
    let client = zpar::Client::from_file(&security.join("zpar-client.json")).unwrap();
    // The client's table catches up with engines that registered while it
    // connected (their notifications came before its subscription did).
    wait_until("the client sees 8 engines", || client.ids().len() == 8);
    wait_until("two engines were refused and ended", || {
        let mut ended = 0;
        for e in engines.iter_mut() {
            if e.try_wait().unwrap().is_some() {
                ended += 1;
            }
        }
        ended == 2
    });
    for mut e in engines {
        let Some(status) = e.try_wait().unwrap() else {
            reaper.0.push(e);
            continue;
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut e.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(
            err.contains("no room for another engine")
                && err.contains("ulimit -n) is 209")
                && err.contains("room for 8 engines"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let values = client
        .all()
        .execute("1 + 1")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(values, vec![Value::Int(2); 8]);
    drop(client);
    drop(reaper);
    let _ = std::fs::remove_dir_all(&dir);
}
