//! Open and click tracking end to end with the real binary: a campaign with `[tracking]` is
//! sent by `engager run` into the outbox, the pixel and the link of the real email are
//! requested from `engager serve`, and SIGTERM writes the events its writer still held.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engager_domain::EventKind;
use engager_testkit::local_server::free_port;

const BROWSER: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15";

fn engager_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engager"));
    cmd.current_dir(dir)
        .env_remove("ENGAGER_CONFIG")
        .env("ENGAGER_BEST_TIME__ENABLED", "false")
        .env("ENGAGER_HOLIDAYS__BUILTIN", "false")
        .env("ENGAGER_TIMING__MAX_JITTER_MINUTES", "0")
        .env("ENGAGER_FREQUENCY__MIN_GAP_HOURS", "0");
    cmd
}

fn engager(dir: &Path, args: &[&str]) -> String {
    let out = engager_cmd(dir).args(args).output().expect("engager runs");
    assert!(
        out.status.success(),
        "engager {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `.eml` files of the outbox.
fn emails(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("outbox")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "eml") {
                out.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    out
}

/// The first URL in `text` starting with `prefix`.
fn url_after(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"));
    let len = text[start..]
        .find(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
        .unwrap_or(text.len() - start);
    text[start..start + len].to_owned()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracked_email_sent_by_run_is_opened_and_clicked_through_serve() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    engager(dir, &["init"]);
    let cfg = std::fs::read_to_string(dir.join("engager.toml")).unwrap();
    let cfg = cfg
        .replace(
            "public_base_url = \"https://engager.acme-analytics.example\"",
            &format!("public_base_url = \"http://localhost:{port}\""),
        )
        .replace(
            "enabled = [\"email\", \"sms\", \"linkedin\"]",
            "enabled = [\"email\"]",
        );
    std::fs::write(dir.join("engager.toml"), cfg).unwrap();
    std::fs::write(
        dir.join("leads.csv"),
        "email,first_name,timezone\nkim@track.example,Kim,Etc/GMT\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tracked.toml"),
        "slug = \"tracked\"\nname = \"Tracked\"\n[tracking]\nopens = true\nclicks = true\n\
         [window]\ndays = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]\nstart = \"00:00\"\nend = \"23:59\"\n\
         [[steps]]\nname = \"hello\"\nchannels = [\"email\"]\nsubject = \"A question, {{ lead.first_name }}\"\n\
         body = \"Hi {{ lead.first_name }}, the write-up: https://docs.acme.example/write-up\"\n\
         html = \"<p>Hi {{ lead.first_name }}, <a href=\\\"https://docs.acme.example/write-up\\\">the write-up</a>.</p>\"\n",
    )
    .unwrap();
    engager(dir, &["import", "leads.csv"]);
    engager(dir, &["campaign", "add", "tracked.toml"]);
    engager(dir, &["enroll", "--campaign", "tracked", "--all"]);
    engager(dir, &["run"]);
    let mails = emails(dir);
    assert_eq!(mails.len(), 1);
    let eml = mails[0]
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(
        !eml.contains("docs.acme.example"),
        "the destination is not in the email:\n{eml}"
    );
    let base = format!("http://localhost:{port}");
    let click = url_after(&eml, &format!("{base}/c/"));
    let pixel = url_after(&eml, &format!("{base}/o/"));
    assert!(pixel.ends_with(".gif"), "{pixel}");
    assert!(url_after(&eml, &format!("{base}/u/")).len() > base.len() + 3);

    // The writer would wait a minute before writing: only the shutdown can write in time.
    let child = engager_cmd(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("ENGAGER_TRACKING__FLUSH_MS", "10000")
        .env("ENGAGER_TRACKING__BATCH_SIZE", "100000")
        .env("ENGAGER_TRACKING__MACHINE_WINDOW_SECS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("engager serve starts");
    let mut server = Server(child);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "engager serve did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let local = |url: &str| url.replace("localhost", "127.0.0.1");
    let open = http
        .get(local(&pixel))
        .header("User-Agent", BROWSER)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    assert_eq!(open.headers()["content-type"], "image/gif");
    let go = http
        .get(local(&click))
        .header("User-Agent", BROWSER)
        .send()
        .await
        .unwrap();
    assert_eq!(go.status(), 302);
    assert_eq!(
        go.headers()["location"],
        "https://docs.acme.example/write-up"
    );
    let forged = http
        .get(format!(
            "{}?url=https://evil.example",
            local(&click).replace("/c/", "/c/x")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);
    assert!(forged.headers().get("location").is_none());

    let db = engager_store::open(&format!("sqlite:{}", dir.join("engager.db").display()))
        .await
        .unwrap();
    let lead = db
        .lead_ids(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let tracked = |events: Vec<engager_store::EventRecord>| -> Vec<(EventKind, String)> {
        events
            .into_iter()
            .filter(|e| matches!(e.event.kind, EventKind::Opened | EventKind::Clicked))
            .map(|e| (e.event.kind, e.event.detail))
            .collect()
    };
    assert!(
        tracked(db.events_for_lead(lead).await.unwrap()).is_empty(),
        "still in the writer's batch"
    );
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "engager serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert_eq!(
        tracked(db.events_for_lead(lead).await.unwrap()),
        vec![
            (EventKind::Opened, "{\"automated\":false}".to_owned()),
            (
                EventKind::Clicked,
                "{\"automated\":false,\"link\":0}".to_owned()
            ),
        ]
    );
}
