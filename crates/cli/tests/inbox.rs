//! Replies and bounces through the `engager` binary with `[channels.imap]` on a real Dovecot:
//! `engager inbox poll` reads the mailbox once and prints what it found, `engager run` polls
//! before planning, and nothing is read twice across processes (the cursor is in the store).

use std::path::Path;
use std::process::{Command, Output};

use engager_testkit::dovecot::{Dovecot, DovecotOptions, PASSWORD, USER};
use serde_json::Value;

fn engager(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engager"))
        .args(args)
        .current_dir(dir)
        .env_remove("ENGAGER_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("the engager binary runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "engager failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> Value {
    let stdout = ok(out);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

const LEADS: &str = "email,first_name,company,country,timezone\n\
ada@lovelace.example,Ada,Lovelace,GB,Europe/London\n\
ben@lovelace.example,Ben,Lovelace,GB,Europe/London\n\
cy@clarke.example,Cy,Clarke,GB,Europe/London\n";

const CAMPAIGN: &str = r#"
slug = "hello"
name = "Hello"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "hello"
channels = ["email"]
subject = "Hello {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}, a short note."
[[steps]]
name = "follow-up"
channels = ["email"]
delay_days = 3
subject = "Following up"
body = "Hi {{ lead.first_name }}, following up."
"#;

/// The Message-ID of the email the outbox wrote for a recipient.
fn message_id_to(dir: &Path, to: &str) -> String {
    for entry in std::fs::read_dir(dir.join("outbox/email")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if text.contains(&format!("To: {to}")) || text.contains(&format!("<{to}>")) {
            let line = text
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .unwrap();
            return line.split_once(':').unwrap().1.trim().to_owned();
        }
    }
    panic!("no email to {to} in the outbox");
}

fn reply(from: &str, id: &str, ours: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: maya@acme-analytics.example\r\nSubject: Re: Hello\r\n\
         Message-ID: {id}\r\nIn-Reply-To: {ours}\r\nReferences: {ours}\r\n{extra}\
         Content-Type: text/plain\r\n\r\nThanks!\r\n"
    )
    .into_bytes()
}

#[test]
fn inbox_poll_and_run_record_replies_once() {
    let Some(dovecot) = Dovecot::start(DovecotOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&engager(d, &["init"]));
    let path = d.join("engager.toml");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0")
        // The company documented its legitimate interest (GDPR) for B2B email to UK leads.
        .replace(
            "# legitimate_interest_reference = ",
            "legitimate_interest_reference = ",
        )
        .replace(
            "stop_company_on_reply = false",
            "stop_company_on_reply = true",
        );
    std::fs::write(
        &path,
        format!(
            "{config}\n[channels.imap]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
             username = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
            dovecot.port()
        ),
    )
    .unwrap();
    std::fs::write(d.join("leads.csv"), LEADS).unwrap();
    ok(&engager(d, &["import", "leads.csv"]));
    std::fs::write(d.join("hello.toml"), CAMPAIGN).unwrap();
    ok(&engager(d, &["campaign", "add", "hello.toml"]));
    ok(&engager(d, &["enroll", "--campaign", "hello", "--all"]));
    let run = json(&engager(d, &["--json", "run"]));
    assert_eq!(run["sent"], 3, "{run}");
    assert_eq!(run["inbound"]["read"], 0, "{run}");

    dovecot.deliver(
        "INBOX",
        &reply(
            "ada@lovelace.example",
            "<a1@lovelace.example>",
            &message_id_to(d, "ada@lovelace.example"),
            "",
        ),
    );
    dovecot.deliver(
        "INBOX",
        &reply(
            "cy@clarke.example",
            "<c1@clarke.example>",
            &message_id_to(d, "cy@clarke.example"),
            "Auto-Submitted: auto-replied\r\n",
        ),
    );
    dovecot.deliver(
        "INBOX",
        b"From: news@vendor.example\r\nSubject: Newsletter\r\nMessage-ID: <n1@vendor.example>\r\n\r\nHello\r\n",
    );

    let polled = json(&engager(d, &["--json", "inbox", "poll"]));
    assert_eq!(polled["read"], 3, "{polled}");
    assert_eq!(polled["replies"], 1, "{polled}");
    assert_eq!(polled["auto_replies"], 1, "{polled}");
    assert_eq!(polled["unmatched"], 1, "{polled}");
    assert_eq!(polled["recorded"], 2, "{polled}");
    let ada = json(&engager(d, &["--json", "explain", "ada@lovelace.example"]));
    assert_eq!(ada["enrollments"][0]["state"], "stopped", "{ada}");
    // Her colleague at the same company stops too.
    let ben = json(&engager(d, &["--json", "explain", "ben@lovelace.example"]));
    assert_eq!(
        ben["enrollments"][0]["stop_reason"], "company_replied",
        "{ben}"
    );
    let cy = json(&engager(d, &["--json", "explain", "cy@clarke.example"]));
    assert_eq!(cy["enrollments"][0]["state"], "active", "{cy}");
    assert!(cy["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "auto_replied"));

    // Another process reads nothing new; the table says so.
    let table = ok(&engager(d, &["inbox", "poll"]));
    assert!(table.contains("0 message(s) read"), "{table}");

    // `engager run` polls before planning: a hard bounce for Cy ends the lead.
    let ours = message_id_to(d, "cy@clarke.example");
    let dsn = format!(
        "From: MAILER-DAEMON@mx.clarke.example\r\nTo: maya@acme-analytics.example\r\n\
         Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <d1@mx.clarke.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.clarke.example\r\n\r\n\
         Final-Recipient: rfc822; cy@clarke.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
         --B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {ours}\r\n\r\n--B--\r\n"
    );
    dovecot.deliver("INBOX", dsn.as_bytes());
    let run = json(&engager(d, &["--json", "run"]));
    assert_eq!(run["inbound"]["hard_bounces"], 1, "{run}");
    let cy = json(&engager(d, &["--json", "explain", "cy@clarke.example"]));
    assert_eq!(cy["lead"]["status"], "bounced", "{cy}");
    assert_eq!(cy["enrollments"][0]["state"], "stopped", "{cy}");

    // Without a mailbox, `inbox poll` says what to configure.
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = text.split("[channels.imap]").next().unwrap().to_owned();
    std::fs::write(&path, cut).unwrap();
    let out = engager(d, &["inbox", "poll"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[channels.imap]"));
}

#[test]
fn the_daemon_reads_the_mailbox_every_poll_interval() {
    let Some(dovecot) = Dovecot::start(DovecotOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&engager(d, &["init"]));
    let path = d.join("engager.toml");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0")
        // The company documented its legitimate interest (GDPR) for B2B email to UK leads.
        .replace(
            "# legitimate_interest_reference = ",
            "legitimate_interest_reference = ",
        )
        .replace("poll_interval_seconds = 300", "poll_interval_seconds = 1");
    std::fs::write(
        &path,
        format!(
            "{config}\n[channels.imap]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
             username = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
            dovecot.port()
        ),
    )
    .unwrap();
    std::fs::write(d.join("leads.csv"), LEADS).unwrap();
    ok(&engager(d, &["import", "leads.csv"]));
    std::fs::write(d.join("hello.toml"), CAMPAIGN).unwrap();
    ok(&engager(d, &["campaign", "add", "hello.toml"]));
    ok(&engager(d, &["enroll", "--campaign", "hello", "--all"]));
    let run = json(&engager(d, &["--json", "run"]));
    assert_eq!(run["sent"], 3, "{run}");

    let mut daemon = Command::new(env!("CARGO_BIN_EXE_engager"))
        .args(["run", "--daemon"])
        .current_dir(d)
        .env_remove("ENGAGER_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    dovecot.deliver(
        "INBOX",
        &reply(
            "ada@lovelace.example",
            "<a1@lovelace.example>",
            &message_id_to(d, "ada@lovelace.example"),
            "",
        ),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut state = Value::Null;
    while std::time::Instant::now() < deadline {
        let ada = json(&engager(d, &["--json", "explain", "ada@lovelace.example"]));
        state = ada["enrollments"][0]["state"].clone();
        if state == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    daemon.kill().unwrap();
    let output = daemon.wait_with_output().unwrap();
    assert_eq!(
        state,
        "stopped",
        "the daemon did not record the reply: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
