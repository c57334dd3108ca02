//! `zpar dashboard` in a real browser: Debian's `chromium`, headless,
//! reads the page of a live cluster of 4 engines. A page loads with the
//! latest snapshot drawn, and then follows server-sent events; the browser
//! reads the page once loaded (`--dump-dom`), so each check loads it anew,
//! and the event stream is read off the socket.
//!
//! Needs `chromium` (`.ci/run` installs it). Outside CI a test without it
//! prints why and passes; with `CI` set it fails instead.

use crate::support::{self, zpar_bin, Reaper, WAIT};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zpar::Value;

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The page as the browser has it once loaded.
fn dom(browser: &PathBuf, url: &str) -> String {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--dump-dom",
        url,
    ]);
    let out = support::output_within(cmd, WAIT, "chromium --dump-dom");
    assert!(out.status.success(), "chromium failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET path` on the dashboard's port: what comes back until `enough`
/// says so (or `bound` passes; the server may keep the connection open).
fn http_get(port: u16, path: &str, bound: Duration, enough: impl Fn(&str) -> bool) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the dashboard's port");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + bound;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !enough(&String::from_utf8_lossy(&text)) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn the_dashboard_shows_a_live_cluster_in_a_real_browser() {
    let _watchdog = support::watchdog();
    let Some(browser) = chromium() else {
        support::skip_unless_ci(
            "the dashboard test",
            "no chromium (apt-get install chromium)",
        );
        return;
    };
    let (cluster, client) = support::cluster(4);
    let mut dashboard = Command::new(zpar_bin())
        .args(["dashboard", "--file"])
        .arg(cluster.profile().client_file())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting zpar dashboard");
    let stdout = dashboard.stdout.take().unwrap();
    let _reaper = Reaper::of(dashboard);
    let mut url = String::new();
    BufReader::new(stdout).read_line(&mut url).unwrap();
    let url = url.trim().to_string();
    let (base, token) = url.split_once("?token=").expect("a URL with a token");
    let port: u16 = base
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .expect("a port in the URL");

    // Without the token, or with another, nothing is served.
    for path in ["/", "/?token=wrong", "/events", "/snapshot?token=x"] {
        let answer = http_get(port, path, WAIT, |t| t.contains("token"));
        assert!(answer.starts_with("HTTP/1.1 403"), "{path}: {answer}");
        assert!(
            !answer.contains("zpar dashboard</title>"),
            "{path}: {answer}"
        );
    }
    // The stream pushes a snapshot a second.
    let started = Instant::now();
    let events = http_get(port, &format!("/events?token={token}"), WAIT, |t| {
        t.matches("\ndata: {").count() >= 2
    });
    let pushed = events.matches("\ndata: {").count();
    assert!(
        pushed >= 2,
        "{pushed} events in {:?}: {events:.500}",
        started.elapsed()
    );

    // The engines appear.
    support::wait_until("the page shows 4 idle engines", || {
        dom(&browser, &url).matches("data-state=\"idle\"").count() == 4
    });

    // Each engine's memory and last heartbeat, and the hub's memory.
    support::wait_until("the page shows each engine's RSS and the hub's", || {
        let page = dom(&browser, &url);
        page.matches("<td class=\"rss\">").count() == 4
            && !page.contains("<td class=\"rss\">–")
            && page.matches(" s ago</td>").count() == 4
            && page.contains("<b id=\"hub-rss\">")
            && !page.contains("<b id=\"hub-rss\">–")
    });

    // 200 tasks are 200 bars.
    let lb = client.load_balanced();
    let results: Vec<_> = (0..200)
        .map(|i| lb.apply("|x| x * 2", vec![Value::Int(i)]).unwrap())
        .collect();
    for r in &results {
        r.get_timeout(WAIT).unwrap();
    }
    let mut page = String::new();
    support::wait_until("the task stream shows 200 bars", || {
        page = dom(&browser, &url);
        page.matches("class=\"task task-ok\"").count() >= 200
    });
    assert_eq!(page.matches("class=\"task task-ok\"").count(), 200, "bars");

    // A screenshot of the page, kept as the test's artifact.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let mut cmd = Command::new(&browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1100,1000",
    ])
    .arg(format!("--screenshot={}", shot.display()))
    .arg(&url);
    let out = support::output_within(cmd, WAIT, "chromium --screenshot");
    assert!(
        out.status.success() && shot.exists(),
        "no screenshot: {out:?}"
    );
    eprintln!("dashboard screenshot: {}", shot.display());

    // A killed engine is pushed as dead within 4 s, and its row shows it.
    let mut cluster = cluster;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /events?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    cluster.kill_engine(2).unwrap();
    let killed = Instant::now();
    let dead = "{\"id\":2,\"host\":\"127.0.0.1\",\"state\":\"dead\"";
    let mut pushed = Vec::new();
    let mut buf = [0u8; 16384];
    while !String::from_utf8_lossy(&pushed).contains(dead) {
        let left = (killed + WAIT).saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "engine 2 was never pushed as dead");
        stream.set_read_timeout(Some(left)).unwrap();
        let n = stream.read(&mut buf).expect("the event stream");
        assert!(n > 0, "the event stream ended");
        pushed.extend_from_slice(&buf[..n]);
    }
    let after = killed.elapsed();
    assert!(
        after <= Duration::from_secs(4),
        "engine 2 was pushed as dead {after:?} after the kill"
    );
    assert!(
        dom(&browser, &url).contains("data-engine=\"2\" data-state=\"dead\""),
        "the page does not show engine 2 dead"
    );
}
