//! Mailbox rotation through the binary: `[[channels.smtp.accounts]]` with two From
//! addresses on one relay (a local aiosmtpd), per-account daily caps, the account of each
//! delivery in `engager deliveries accounts` / `engager status`, and `engager doctor`
//! checking each account.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{engager, json, ok};
use engager_testkit::smtp_sink::{SinkOptions, SmtpSink};
use serde_json::Value;

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

const MAYA: &str = "maya@acme-analytics.example";
const SAM: &str = "sam@acme-analytics.example";

fn account<'a>(rows: &'a Value, name: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["account"] == name)
        .unwrap_or_else(|| panic!("no {name} in {rows}"))
}

#[test]
fn two_smtp_accounts_rotate_within_their_own_caps() {
    let Some(sink) = SmtpSink::start(SinkOptions {
        auth: Some(("relay".into(), "relay-pass".into())),
        ..SinkOptions::default()
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&engager(d, &["init"]));
    let path = d.join("engager.toml");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0")
        // Whatever today is, no lead's public holiday holds its message back.
        .replace("builtin = true", "builtin = false");
    std::fs::write(
        &path,
        format!(
            "{config}\n[channels.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
             username = \"relay\"\npassword = \"relay-pass\"\n\n\
             [[channels.smtp.accounts]]\nfrom = \"{MAYA}\"\ndaily_cap = 2\n\n\
             [[channels.smtp.accounts]]\nfrom = \"{SAM}\"\ndaily_cap = 2\n",
            sink.port()
        ),
    )
    .unwrap();

    // doctor logs in once per account.
    let report = json(&engager(d, &["--json", "doctor"]));
    for name in [format!("smtp:{MAYA}"), format!("smtp:{SAM}")] {
        let row = report["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["provider"] == name.as_str())
            .unwrap_or_else(|| panic!("no {name} in {report}"));
        assert_eq!(row["status"], "ok", "{report}");
    }

    let leads = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/leads.csv");
    ok(&engager(d, &["import", leads.to_str().unwrap()]));
    std::fs::write(d.join("always.toml"), CAMPAIGN).unwrap();
    ok(&engager(d, &["campaign", "add", "always.toml"]));
    ok(&engager(
        d,
        &[
            "enroll",
            "--campaign",
            "always",
            "--filter",
            "country=US",
            "--limit",
            "5",
        ],
    ));
    let run = json(&engager(d, &["run", "--json"]));
    assert_eq!(run["sent"], 4, "two accounts with a cap of 2 each: {run}");
    let received = sink.wait_for_messages(4, Duration::from_secs(5));
    assert_eq!(received.len(), 4, "{}", sink.log());
    let from = |who: &str| {
        received
            .iter()
            .filter(|m| {
                m.text()
                    .lines()
                    .any(|l| l.starts_with("From:") && l.contains(&format!("<{who}>")))
            })
            .count()
    };
    assert_eq!(
        from(MAYA),
        2,
        "{:?}",
        received.iter().map(|m| m.text()).collect::<Vec<_>>()
    );
    assert_eq!(from(SAM), 2);
    assert!(received.iter().all(|m| m.login.as_deref() == Some("relay")));

    // The fifth waits for tomorrow; a second run sends nothing more.
    let again = json(&engager(d, &["run", "--json"]));
    assert_eq!(again["sent"], 0, "{again}");
    assert_eq!(sink.messages().len(), 4);

    let rows = json(&engager(d, &["--json", "deliveries", "accounts"]));
    for who in [MAYA, SAM] {
        let a = account(&rows, &format!("email:smtp:{who}"));
        assert_eq!(a["sent_today"], 2, "{rows}");
        assert_eq!(a["cap_today"], 2, "{rows}");
        assert_eq!(a["left_today"], 0, "{rows}");
        assert_eq!(a["circuit"], "closed", "{rows}");
    }
    let status = json(&engager(d, &["--json", "status"]));
    let a = account(&status["accounts"], &format!("email:smtp:{SAM}"));
    assert_eq!(a["sent_today"], 2, "{status}");
    let text = ok(&engager(d, &["deliveries", "accounts"]));
    assert!(text.contains(&format!("email:smtp:{MAYA}")), "{text}");
}
