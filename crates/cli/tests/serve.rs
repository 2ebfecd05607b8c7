//! `engager serve` end to end, with the real binary: Twilio (a faithful fake) posts signed
//! status callbacks to it, a lead texts STOP, a recipient clicks an unsubscribe link from a
//! real outbox email; follow-up `engager run`s send nothing more to them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engager_domain::EventKind;
use engager_store::{Store, SuppressionKey};
use engager_testkit::local_server::free_port;
use engager_testkit::twilio::{FakeTwilio, FakeTwilioSetup};
use serde_json::Value;

const SID: &str = "AC00000000000000000000000000000007";
const TOKEN: &str = "serve-test-auth-token";
const OUR_NUMBER: &str = "+14155550123";

/// The binary, sending as soon as a step is due: no best-hour search, no holidays, no
/// jitter, no minimum gap between touches (environment variables override engager.toml).
fn engager_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engager"));
    cmd.current_dir(dir)
        .env_remove("ENGAGER_CONFIG")
        .env("ENGAGER_BEST_TIME__ENABLED", "false")
        .env("ENGAGER_HOLIDAYS__BUILTIN", "false")
        .env("ENGAGER_TIMING__MAX_JITTER_MINUTES", "0")
        .env("ENGAGER_FREQUENCY__MIN_GAP_HOURS", "0")
        .env("ENGAGER_FREQUENCY__MAX_PER_WEEK", "20");
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

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&engager(dir, &all)).expect("--json prints JSON")
}

/// A fixed-offset zone where it is now early afternoon, so SMS quiet hours never hold sends.
fn daytime_zone() -> String {
    let hour = chrono::Timelike::hour(&chrono::Utc::now()) as i32;
    let offset = (13 - hour + 36) % 24 - 12;
    // Etc/GMT signs are inverted: Etc/GMT-5 is UTC+5.
    match offset {
        0 => "Etc/GMT".into(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

/// `engager init`, then the public base URL on `port`, the given channels, and `extra` TOML.
fn configure(dir: &Path, port: u16, channels: &str, extra: &str) {
    engager(dir, &["init"]);
    let cfg = std::fs::read_to_string(dir.join("engager.toml")).unwrap();
    let cfg = cfg
        .replace(
            "public_base_url = \"https://engager.acme-analytics.example\"",
            &format!("public_base_url = \"http://localhost:{port}\""),
        )
        .replace(
            "enabled = [\"email\", \"sms\", \"linkedin\"]",
            &format!("enabled = {channels}"),
        )
        .replace(
            "per_second = 1             # a long-code",
            "per_second = 1000          # a long-code",
        );
    assert!(cfg.contains(&format!("http://localhost:{port}")));
    std::fs::write(dir.join("engager.toml"), format!("{cfg}\n{extra}")).unwrap();
}

/// A running `engager serve`, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
}

impl Server {
    async fn start(dir: &Path, port: u16) -> Server {
        let child = engager_cmd(dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("engager serve starts");
        let server = Server { child };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if health.is_ok_and(|r| r.status() == 200) {
                return server;
            }
            assert!(Instant::now() < deadline, "engager serve did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then the exit status (the server stops gracefully and exits 0).
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "engager serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn store(dir: &Path) -> std::sync::Arc<dyn Store> {
    engager_store::open(&format!("sqlite:{}", dir.join("engager.db").display()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_stop_through_engager_serve_ends_sms_to_that_number() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let mut setup = FakeTwilioSetup::new(SID, TOKEN);
    setup.status_callbacks = true;
    let twilio = FakeTwilio::start(setup).await.unwrap();
    let status_url = format!("http://localhost:{port}/webhooks/twilio/status");
    configure(
        dir,
        port,
        "[\"sms\"]",
        &format!(
            "[channels.twilio]\naccount_sid = \"{SID}\"\nauth_token = \"{TOKEN}\"\nfrom = \"{OUR_NUMBER}\"\n\
             api_url = \"{}\"\nstatus_callback = \"{status_url}\"\n",
            twilio.api_url()
        ),
    );
    let zone = daytime_zone();
    let (ada, bob) = ("+12127360001", "+12127360002");
    std::fs::write(
        dir.join("leads.csv"),
        format!(
            "email,first_name,phone,timezone,sms_consent\nada@serve.example,Ada,{ada},{zone},signup form\nbob@serve.example,Bob,{bob},{zone},signup form\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("sms.toml"),
        "slug = \"sms\"\nname = \"SMS\"\n[window]\ndays = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]\nstart = \"00:00\"\nend = \"23:59\"\n\
         [[steps]]\nname = \"hello\"\nchannels = [\"sms\"]\nbody = \"Hi {{ lead.first_name }}, a quick question from Acme. Reply STOP to opt out.\"\n\
         [[steps]]\nname = \"again\"\nchannels = [\"sms\"]\nbody = \"Hi {{ lead.first_name }}, did you see my note?\"\n",
    )
    .unwrap();
    engager(dir, &["import", "leads.csv"]);
    engager(dir, &["campaign", "add", "sms.toml"]);
    engager(dir, &["enroll", "--campaign", "sms", "--all"]);
    let server = Server::start(dir, port).await;

    // Step 1 goes to both; Twilio's signed status callbacks reach the server.
    engager(dir, &["run"]);
    let sent_to = |n: &str| twilio.accepted().iter().filter(|m| m.to == n).count();
    assert_eq!(
        (sent_to(ada), sent_to(bob)),
        (1, 1),
        "{:?}",
        twilio.accepted()
    );
    let db = store(dir).await;
    let lead_of = |email: &'static str| {
        let db = db.clone();
        async move { db.lead_by_email(email).await.unwrap().unwrap().id }
    };
    let (ada_id, bob_id) = (
        lead_of("ada@serve.example").await,
        lead_of("bob@serve.example").await,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut delivered = true;
        for id in [ada_id, bob_id] {
            delivered &= db
                .events_for_lead(id)
                .await
                .unwrap()
                .iter()
                .any(|e| e.event.kind == EventKind::Delivered);
        }
        if delivered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the status callbacks did not arrive: {:?}",
            twilio.callbacks()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ada texts STOP: Twilio posts the signed inbound webhook to the server.
    let inbound_url = format!("http://localhost:{port}/webhooks/twilio/inbound");
    let stop = twilio.inbound(&inbound_url, ada, OUR_NUMBER, "STOP");
    let response = reqwest::Client::new()
        .post(&inbound_url)
        .header("X-Twilio-Signature", &stop.signature)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(stop.body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/xml"));
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("<Response></Response>"));
    // Forgeries are refused: Ada's signed STOP with Bob's number put in, and a STOP for Bob
    // signed with another auth token.
    let mut for_bob = stop.clone();
    for (name, value) in &mut for_bob.params {
        if name == "From" {
            *value = bob.to_owned();
        }
    }
    for signature in [
        stop.signature.clone(),
        engager_testkit::twilio::twilio_signature("wrong", &inbound_url, &for_bob.params),
    ] {
        let forged = reqwest::Client::new()
            .post(&inbound_url)
            .header("X-Twilio-Signature", signature)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(for_bob.body())
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403);
    }

    // The number is suppressed at once; explain shows the opt-out and the stopped sequence.
    assert_eq!(
        db.suppressed(&[SuppressionKey::Phone(ada.into())])
            .await
            .unwrap()
            .len(),
        1
    );
    let explain = json(dir, &["explain", "ada@serve.example"]);
    assert_eq!(explain["lead"]["status"], "unsubscribed", "{explain}");
    assert_eq!(explain["enrollments"][0]["state"], "stopped", "{explain}");
    assert!(
        explain["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "unsubscribed" && e["source"] == "webhook:twilio"),
        "{explain}"
    );
    let bob_explain = json(dir, &["explain", "bob@serve.example"]);
    assert_eq!(bob_explain["lead"]["status"], "active", "{bob_explain}");

    // The follow-up run sends step 2 to Bob only: nothing more to Ada's number.
    engager(dir, &["run"]);
    assert_eq!(
        (sent_to(ada), sent_to(bob)),
        (1, 2),
        "{:?}\n{}",
        twilio.accepted(),
        json(dir, &["explain", "bob@serve.example"])
    );
    let status = json(dir, &["status"]);
    assert!(status.is_object(), "{status}");

    let exit = server.stop();
    assert!(
        exit.success(),
        "engager serve exits cleanly on SIGTERM: {exit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unsubscribe_link_of_a_real_email_works_in_one_click_and_get_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    configure(dir, port, "[\"email\"]", "");
    let zone = daytime_zone();
    std::fs::write(
        dir.join("leads.csv"),
        format!("email,first_name,timezone\ncleo@serve.example,Cleo,{zone}\ndan@serve.example,Dan,{zone}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("mail.toml"),
        "slug = \"mail\"\nname = \"Mail\"\n[window]\ndays = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]\nstart = \"00:00\"\nend = \"23:59\"\n\
         [[steps]]\nname = \"hello\"\nchannels = [\"email\"]\nsubject = \"A question, {{ lead.first_name }}\"\nbody = \"Hi {{ lead.first_name }}, a quick question.\"\n\
         [[steps]]\nname = \"again\"\nchannels = [\"email\"]\nsubject = \"Following up\"\nbody = \"Hi {{ lead.first_name }}, following up.\"\n",
    )
    .unwrap();
    engager(dir, &["import", "leads.csv"]);
    engager(dir, &["campaign", "add", "mail.toml"]);
    engager(dir, &["enroll", "--campaign", "mail", "--all"]);
    engager(dir, &["run"]);
    // The link exactly as the email carries it, in its List-Unsubscribe header.
    let mut link = None;
    let mut stack = vec![dir.join("outbox")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "eml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text
                    .lines()
                    .any(|l| l.starts_with("To:") && l.contains("cleo@serve.example"))
                {
                    let header = text
                        .lines()
                        .find(|l| l.starts_with("List-Unsubscribe:"))
                        .expect("a List-Unsubscribe header")
                        .to_owned();
                    let start = header.find("<http").unwrap() + 1;
                    let end = start + header[start..].find('>').unwrap();
                    link = Some(header[start..end].to_owned());
                }
            }
        }
    }
    let link = link.expect("an email to cleo in the outbox");
    assert!(
        link.starts_with(&format!("http://localhost:{port}/u/")),
        "{link}"
    );
    assert!(
        !link.contains("cleo"),
        "no personal data in the URL: {link}"
    );
    let server = Server::start(dir, port).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A link scanner's GET (twice): a page, nothing changed.
    for _ in 0..2 {
        let page = http.get(&link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page
            .text()
            .await
            .unwrap()
            .contains("<form method=\"post\">"));
    }
    let db = store(dir).await;
    let cleo = SuppressionKey::Email("cleo@serve.example".into());
    assert!(db
        .suppressed(std::slice::from_ref(&cleo))
        .await
        .unwrap()
        .is_empty());
    // The mailbox provider's one-click POST.
    let post = http
        .post(&link)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200, "200, never a redirect");
    assert_eq!(db.suppressed(&[cleo]).await.unwrap().len(), 1);
    // A tampered link: 404.
    let tampered = format!("{}x", &link[..link.len() - 1]);
    let bad = http
        .post(&tampered)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 404);
    let explain = json(dir, &["explain", "cleo@serve.example"]);
    assert_eq!(explain["lead"]["status"], "unsubscribed", "{explain}");
    assert_eq!(explain["enrollments"][0]["state"], "stopped", "{explain}");
    // The next run sends Dan's follow-up and nothing to Cleo.
    let before = outbox_count(dir, "cleo@serve.example");
    engager(dir, &["run"]);
    assert_eq!(outbox_count(dir, "cleo@serve.example"), before);
    assert_eq!(outbox_count(dir, "dan@serve.example"), 2);
    assert!(server.stop().success());
}

fn outbox_count(dir: &Path, to: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.join("outbox")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "eml")
                && std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .any(|l| l.starts_with("To:") && l.contains(to))
            {
                n += 1;
            }
        }
    }
    n
}
