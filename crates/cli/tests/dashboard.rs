//! The dashboard in a real headless Chromium (Debian's `chromium`), driven over the DevTools
//! protocol: `engager quickstart` seeds a database, `engager serve` runs with an admin token,
//! the browser logs in through the form, loads every page, and the test asserts that no page
//! logged a console error or threw, that the figures of `engager report` appear, and saves
//! full-page screenshots (PNG) in the test's temporary folder (their paths are printed; set
//! `ENGAGER_KEEP_SCREENSHOTS=1` to keep the folder).
//!
//! Without Chromium the test is skipped loudly, except in CI (`CI=true` or
//! `ENGAGER_REQUIRE_MAIL_SERVERS=1`, as `.ci/run` sets), where it fails.
//!
//! The DevTools client is a minimal WebSocket client (RFC 6455, text frames) in this file, so
//! the test adds no browser-automation crate to the build.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{engager, json, ok};
use engager_testkit::local_server::{free_port, unavailable};
use serde_json::{json, Value};

const ADMIN: &str = "chromium-test-admin-token-0123456789abcdef";

fn chromium_path() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// --- a minimal WebSocket client ---------------------------------------------------------------

struct WebSocket {
    stream: TcpStream,
}

impl WebSocket {
    fn connect(url: &str) -> WebSocket {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_once('/').expect("a path");
        let mut stream = TcpStream::connect(host).expect("DevTools accepts the connection");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("the handshake answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        WebSocket { stream }
    }

    fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mask = [0x3a, 0x91, 0x5c, 0x07];
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// The next whole text message (continuation frames joined; pings answered).
    fn receive(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream
                .read_exact(&mut head)
                .expect("a DevTools message within 60 s");
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).unwrap();
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).unwrap();
            match opcode {
                0x8 => panic!("DevTools closed the connection"),
                0x9 => {
                    // Ping: answer with a pong carrying the same data.
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    self.stream.write_all(&pong).unwrap();
                }
                0xa => {}
                _ => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).expect("UTF-8 text");
                    }
                }
            }
        }
    }
}

// --- the DevTools protocol ----------------------------------------------------------------------

struct Cdp {
    ws: WebSocket,
    next_id: u64,
    events: Vec<Value>,
    session: Option<String>,
}

impl Cdp {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            message["sessionId"] = json!(s);
        }
        self.ws.send(&message.to_string());
        loop {
            let m: Value = serde_json::from_str(&self.ws.receive()).unwrap();
            if m["id"].as_u64() == Some(id) {
                assert!(m.get("error").is_none(), "{method} failed: {m}");
                return m["result"].clone();
            }
            if m.get("method").is_some() {
                self.events.push(m);
            }
        }
    }

    /// Waits for an event of `method` (already received or coming), and removes it.
    fn wait_for(&mut self, method: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no {method} event within 60 s");
            let m: Value = serde_json::from_str(&self.ws.receive()).unwrap();
            if m["method"] == method {
                return m;
            }
            if m.get("method").is_some() {
                self.events.push(m);
            }
        }
    }

    fn evaluate(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression} threw: {r}"
        );
        r["result"]["value"].clone()
    }

    /// Navigates and waits for the load event.
    fn open(&mut self, url: &str) {
        self.events.retain(|e| e["method"] != "Page.loadEventFired");
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for("Page.loadEventFired");
    }

    /// The console errors, exceptions and browser log errors (failed loads, CSP violations)
    /// received so far, then forgets them.
    fn take_errors(&mut self) -> Vec<String> {
        // A round trip, so events the browser sent before it are read.
        self.evaluate("1");
        let errors = self
            .events
            .iter()
            .filter_map(|e| match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    Some(e["params"]["exceptionDetails"].to_string())
                }
                Some("Runtime.consoleAPICalled")
                    if matches!(e["params"]["type"].as_str(), Some("error" | "assert")) =>
                {
                    Some(e["params"]["args"].to_string())
                }
                Some("Log.entryAdded") if e["params"]["entry"]["level"] == "error" => {
                    Some(e["params"]["entry"].to_string())
                }
                _ => None,
            })
            .collect();
        self.events.retain(|e| {
            !matches!(
                e["method"].as_str(),
                Some("Runtime.exceptionThrown" | "Runtime.consoleAPICalled" | "Log.entryAdded")
            )
        });
        errors
    }

    /// A full-page PNG screenshot.
    fn screenshot(&mut self, path: &Path) {
        let height = self
            .evaluate("document.documentElement.scrollHeight")
            .as_f64()
            .unwrap_or(1200.0)
            .clamp(600.0, 8000.0);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": height as u64, "deviceScaleFactor": 1, "mobile": false}),
        );
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        println!("screenshot: {}", path.display());
    }
}

/// Starts headless Chromium with DevTools on a free port and attaches to a new page.
fn browser(chromium: &Path, profile: &Path) -> (Killed, Cdp) {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let child = Killed(child);
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("chromium prints its DevTools address within 60 s");
    let mut cdp = Cdp {
        ws: WebSocket::connect(&url),
        next_id: 0,
        events: Vec::new(),
        session: None,
    };
    let target = cdp.call("Target.createTarget", json!({"url": "about:blank"}));
    let attached = cdp.call(
        "Target.attachToTarget",
        json!({"targetId": target["targetId"], "flatten": true}),
    );
    cdp.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
    for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
        cdp.call(domain, json!({}));
    }
    (child, cdp)
}

fn wait_for_server(server: &mut Killed, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("engager serve exited with {status} (its errors are above)");
        }
        assert!(Instant::now() < deadline, "engager serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_dashboard_works_in_a_real_browser_without_console_errors() {
    let Some(chromium) = chromium_path().or_else(|| {
        unavailable(
            "Chromium (Debian package chromium)",
            "/usr/bin/chromium is missing",
        )
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ok(&engager(root, &["quickstart", "--dir", "qs"]));
    let config = root.join("qs/engager.toml");
    let config = config.to_str().unwrap();
    let report = json(&engager(
        root,
        &[
            "--config",
            config,
            "--json",
            "report",
            "--by",
            "campaign",
            "--since",
            "2000-01-01",
        ],
    ));
    let total = &report["total"];
    let sent = total["sent"].as_u64().unwrap();
    assert!(sent > 0, "the quickstart sent messages");

    let port = free_port();
    // links.public_base_url must be https except on localhost.
    let base = format!("http://localhost:{port}");
    let server = Command::new(env!("CARGO_BIN_EXE_engager"))
        .args([
            "--config",
            config,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(root)
        .env_remove("ENGAGER_CONFIG")
        .env("ENGAGER_SERVER__ADMIN_TOKEN", ADMIN)
        .env("ENGAGER_LINKS__PUBLIC_BASE_URL", &base)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("engager serve starts");
    let mut server = Killed(server);
    wait_for_server(&mut server, port);

    let profile = root.join("chromium-profile");
    let (_chromium, mut cdp) = browser(&chromium, &profile);

    // Not logged in: the dashboard sends the browser to the login form.
    cdp.open(&format!("{base}/dashboard?period=all"));
    assert_eq!(cdp.evaluate("location.pathname"), "/dashboard/login");
    assert_eq!(cdp.take_errors(), Vec::<String>::new());
    cdp.screenshot(&root.join("login.png"));
    // Log in through the form, as a person would (typing, then the button).
    cdp.call(
        "Emulation.setFocusEmulationEnabled",
        json!({"enabled": true}),
    );
    cdp.evaluate("document.getElementById('token').focus()");
    cdp.call("Input.insertText", json!({"text": ADMIN}));
    assert_eq!(
        cdp.evaluate("document.getElementById('token').value.length"),
        json!(ADMIN.len()),
        "the token was typed into the form"
    );
    cdp.events.retain(|e| e["method"] != "Page.loadEventFired");
    cdp.evaluate("document.querySelector('form.login button').click()");
    cdp.wait_for("Page.loadEventFired");
    assert_eq!(
        cdp.evaluate("location.pathname"),
        "/dashboard",
        "not logged in: {}",
        cdp.evaluate("document.body.textContent")
    );
    assert_eq!(cdp.evaluate("location.search"), "?period=all");
    let cookie_visible = cdp.evaluate("document.cookie");
    assert_eq!(cookie_visible, "", "the session cookie is HttpOnly");

    // The overview shows the report's figures.
    let text = cdp.evaluate("document.body.textContent");
    let text = text.as_str().unwrap();
    let delivered = total["delivered"].as_u64().unwrap();
    assert!(
        text.contains(&format!("Messages sent{sent}{delivered} delivered")),
        "sent/delivered tile missing:\n{text}"
    );
    let reply = total["rates"]["reply"]["rate"].as_f64().unwrap();
    assert!(
        text.contains(&format!("Reply rate{:.1}%", reply * 100.0)),
        "reply rate tile missing:\n{text}"
    );
    assert!(text.contains(&format!("Leads reached{}", total["leads"])));
    let svgs = cdp.evaluate("document.querySelectorAll('svg.chart').length");
    assert!(svgs.as_u64().unwrap() >= 4, "the overview draws its charts");
    assert_eq!(
        cdp.take_errors(),
        Vec::<String>::new(),
        "console errors on the overview"
    );
    cdp.screenshot(&root.join("overview.png"));

    let campaign = report["rows"][0]["key"].as_str().unwrap().to_owned();
    for (name, path, expect) in [
        (
            "campaign",
            format!("/dashboard/campaigns/{campaign}?period=all"),
            "Steps",
        ),
        (
            "experiments",
            "/dashboard/experiments".to_owned(),
            "Experiments",
        ),
        (
            "deliverability",
            "/dashboard/deliverability".to_owned(),
            "Rates against the levels",
        ),
        (
            "compliance",
            "/dashboard/compliance?period=all".to_owned(),
            "Audit log",
        ),
        (
            "health",
            "/dashboard/health".to_owned(),
            "Ledger by channel and state",
        ),
    ] {
        cdp.open(&format!("{base}{path}"));
        assert_eq!(
            cdp.evaluate("location.pathname"),
            path.split('?').next().unwrap(),
            "{name}: still logged in"
        );
        let text = cdp.evaluate("document.body.textContent");
        assert!(
            text.as_str().unwrap().contains(expect),
            "{name} lacks {expect:?}"
        );
        assert_eq!(
            cdp.take_errors(),
            Vec::<String>::new(),
            "console errors on {name}"
        );
        cdp.screenshot(&root.join(format!("{name}.png")));
    }
    // The compliance page shows the compliance report's sends.
    let compliance = json(&engager(
        root,
        &[
            "--config",
            config,
            "--json",
            "compliance",
            "report",
            "--since",
            "1970-01-01",
        ],
    ));
    let lines = compliance["sends"].as_array().expect("sends by channel");
    assert!(!lines.is_empty(), "the quickstart's sends carry evidence");
    cdp.open(&format!("{base}/dashboard/compliance?period=all"));
    let text = cdp.evaluate("document.body.textContent");
    for line in lines {
        let row = format!(
            "{}{}{}",
            line["channel"].as_str().unwrap(),
            line["provider"].as_str().unwrap(),
            line["sends"]
        );
        assert!(
            text.as_str().unwrap().contains(&row),
            "compliance evidence row {row} missing"
        );
    }
    assert_eq!(cdp.take_errors(), Vec::<String>::new());
    cdp.screenshot(&root.join("compliance.png"));

    // The campaign page shows the campaign's sends.
    cdp.open(&format!("{base}/dashboard/campaigns/{campaign}?period=all"));
    let text = cdp.evaluate("document.body.textContent");
    assert!(text
        .as_str()
        .unwrap()
        .contains(&format!("Messages sent{sent}")));

    // Logging out ends the session in the browser.
    cdp.evaluate("document.querySelector('header form button').click()");
    cdp.wait_for("Page.loadEventFired");
    assert_eq!(cdp.evaluate("location.pathname"), "/dashboard/login");
    cdp.open(&format!("{base}/dashboard/health"));
    assert_eq!(cdp.evaluate("location.pathname"), "/dashboard/login");
    assert_eq!(cdp.take_errors(), Vec::<String>::new());

    if std::env::var_os("ENGAGER_KEEP_SCREENSHOTS").is_some() {
        let kept = dir.keep();
        println!("screenshots kept in {}", kept.display());
    }
}

#[test]
fn a_short_admin_token_stops_serve_with_an_error_naming_the_key_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ok(&engager(root, &["init"]));
    let short = "too-short-secret-123";
    let out = common::engager_env(
        root,
        &["serve", "--listen", "127.0.0.1:0"],
        &[("ENGAGER_SERVER__ADMIN_TOKEN", short)],
    );
    assert!(!out.status.success(), "serve must refuse a short token");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("server.admin_token") && stderr.contains("at least 32"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(short) && !stdout.contains(short),
        "the token must never be printed"
    );
}
