//! The `engager` binary with `[channels.smtp]` and `[channels.imap]` against real local
//! servers (aiosmtpd and Dovecot, from engager-testkit): `run` sends email through SMTP with
//! DKIM instead of the outbox, `doctor` checks both, and Graph + SMTP together fail at start.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use engager_channels::dkim::{generate_private_key_pem, DkimAlgorithm};
use engager_testkit::dovecot::{Dovecot, DovecotOptions};
use engager_testkit::smtp_sink::{SinkOptions, SmtpSink};
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

fn row<'a>(report: &'a Value, provider: &str) -> &'a Value {
    report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["provider"] == provider)
        .unwrap_or_else(|| panic!("no {provider} row in {report}"))
}

/// `engager init`, no jitter, plus the given sections appended.
fn configure(dir: &Path, sections: &str) -> PathBuf {
    ok(&engager(dir, &["init"]));
    let path = dir.join("engager.toml");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0")
        // The company documented its legitimate interest (GDPR) for B2B email to EU leads.
        .replace(
            "# legitimate_interest_reference = ",
            "legitimate_interest_reference = ",
        );
    std::fs::write(&path, format!("{config}\n{sections}")).unwrap();
    path
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from));
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn smtp_section(sink: &SmtpSink, password: &str) -> String {
    format!(
        "[channels.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
         username = \"maya\"\npassword = \"{password}\"\n\n\
         [channels.smtp.dkim]\ndomain = \"acme-analytics.example\"\nselector = \"s1\"\n\
         private_key_path = \"dkim.pem\"\n",
        sink.port()
    )
}

const CAMPAIGN: &str = r#"
slug = "always"
name = "Always open"
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
"#;

#[test]
fn run_sends_through_smtp_with_dkim_and_doctor_checks_it() {
    let Some(sink) = SmtpSink::start(SinkOptions {
        auth: Some(("maya".into(), "smtp-pass".into())),
        ..SinkOptions::default()
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("dkim.pem"),
        generate_private_key_pem(DkimAlgorithm::Ed25519).unwrap(),
    )
    .unwrap();
    configure(d, &smtp_section(&sink, "smtp-pass"));

    let report = json(&engager(d, &["--json", "doctor"]));
    assert_eq!(row(&report, "smtp")["status"], "ok", "{report}");
    assert_eq!(
        report["dkim_record"]["name"], "s1._domainkey.acme-analytics.example",
        "{report}"
    );
    assert!(report["dkim_record"]["value"]
        .as_str()
        .unwrap()
        .starts_with("v=DKIM1; k=ed25519; p="));

    let leads = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/leads.csv");
    ok(&engager(d, &["import", leads.to_str().unwrap()]));
    std::fs::write(d.join("always.toml"), CAMPAIGN).unwrap();
    ok(&engager(d, &["campaign", "add", "always.toml"]));
    ok(&engager(
        d,
        &["enroll", "--campaign", "always", "--filter", "country=GB"],
    ));
    let run = json(&engager(d, &["run", "--limit", "3", "--json"]));
    assert_eq!(run["sent"], 3, "{run}");
    let received = sink.wait_for_messages(3, Duration::from_secs(5));
    assert_eq!(received.len(), 3, "{}", sink.log());
    for message in &received {
        assert_eq!(message.login.as_deref(), Some("maya"));
        let text = message.text().replace("\r\n ", " ").replace("\r\n\t", " ");
        assert!(
            text.contains("DKIM-Signature: v=1; a=ed25519-sha256; d=acme-analytics.example; s=s1;"),
            "{text}"
        );
        assert!(
            text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{text}"
        );
        assert!(text.contains("Message-ID: <engager."), "{text}");
    }
    assert!(
        !d.join("outbox/email").exists()
            || std::fs::read_dir(d.join("outbox/email")).unwrap().count() == 0,
        "email went to the outbox instead of SMTP"
    );

    // A wrong password: doctor fails and names the keys to fix.
    replace_in(&d.join("engager.toml"), "\"smtp-pass\"", "\"wrong\"");
    let out = engager(d, &["--json", "doctor"]);
    assert!(!out.status.success());
    let report = json(&out);
    let smtp = row(&report, "smtp");
    assert_eq!(smtp["status"], "misconfigured", "{report}");
    assert!(
        smtp["detail"]
            .as_str()
            .unwrap()
            .contains("channels.smtp.password"),
        "{report}"
    );
}

#[test]
fn graph_and_smtp_together_fail_at_start_naming_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configure(
        d,
        "[channels.smtp]\nhost = \"smtp.acme-analytics.example\"\n\n\
         [channels.graph]\ntenant_id = \"contoso.example\"\nclient_id = \"c\"\n\
         client_secret = \"s\"\nmailbox = \"maya@acme-analytics.example\"\n",
    );
    let out = engager(d, &["status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("channels.graph") && stderr.contains("channels.smtp"),
        "{stderr}"
    );
}

#[test]
fn doctor_logs_in_to_the_imap_mailbox() {
    let Some(dovecot) = Dovecot::start(DovecotOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let section = |password: &str| {
        format!(
            "[channels.imap]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
             username = \"{}\"\npassword = \"{password}\"\n",
            dovecot.port(),
            engager_testkit::dovecot::USER
        )
    };
    configure(d, &section(engager_testkit::dovecot::PASSWORD));
    let report = json(&engager(d, &["--json", "doctor"]));
    assert_eq!(row(&report, "imap")["status"], "ok", "{report}");
    replace_in(
        &d.join("engager.toml"),
        engager_testkit::dovecot::PASSWORD,
        "wrong",
    );
    let out = engager(d, &["--json", "doctor"]);
    assert!(!out.status.success());
    let report = json(&out);
    assert_eq!(row(&report, "imap")["status"], "misconfigured", "{report}");
    assert!(
        row(&report, "imap")["detail"]
            .as_str()
            .unwrap()
            .contains("channels.imap.password"),
        "{report}"
    );
}
