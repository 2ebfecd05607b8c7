//! The compliance gate through the binary: consent records added, imported (bad rows named by
//! line), listed and objected to; `engager run` sends only what the rules allow; the report
//! lists sends, refusals and gaps; a deceptive campaign is halted until fixed and resumed.

mod common;

use std::path::Path;

use common::{engager, json, ok};

const LEADS: &str = "email,first_name,company,country,timezone,phone\n\
ada@us.example,Ada,Lovelace Inc,US,America/New_York,+12125550143\n\
bob@us.example,Bob,Babbage Inc,US,America/New_York,+12125550144\n\
jana@de.example,Jana,Bramble GmbH,DE,Europe/Berlin,\n\
otto@de.example,Otto,Kessel GmbH,DE,Europe/Berlin,\n";

fn campaign(subject: &str) -> String {
    format!(
        r#"
slug = "gate"
name = "Gate"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "text-or-mail"
channels = ["sms", "email"]
subject = "{subject}"
body = "Hi {{{{ lead.first_name }}}}, a quick question about forecasting."
"#
    )
}

fn setup(d: &Path) {
    ok(&engager(d, &["init"]));
    let cfg = std::fs::read_to_string(d.join("engager.toml"))
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0");
    std::fs::write(d.join("engager.toml"), cfg).unwrap();
    std::fs::write(d.join("leads.csv"), LEADS).unwrap();
    ok(&engager(d, &["import", "leads.csv"]));
}

/// A Wednesday at 18:00 UTC (afternoon in New York, evening in Berlin: inside SMS hours),
/// two months or more after enrolment, in a month without public holidays on Wednesdays in
/// the US or Germany.
fn now_plus(minutes: i64) -> String {
    use chrono::Datelike;
    let mut day = chrono::Utc::now().date_naive() + chrono::Duration::days(60);
    while day.weekday() != chrono::Weekday::Wed || matches!(day.month(), 1 | 5 | 7 | 10 | 11 | 12) {
        day += chrono::Duration::days(1);
    }
    (day.and_hms_opt(18, 0, 0).unwrap().and_utc() + chrono::Duration::minutes(minutes)).to_rfc3339()
}

fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

#[test]
fn consent_decides_the_channel_and_the_report_shows_the_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    std::fs::write(
        d.join("gate.toml"),
        campaign("A question, {{ lead.first_name }}"),
    )
    .unwrap();
    ok(&engager(d, &["campaign", "add", "gate.toml"]));
    // Consent from a file: one good row, three bad ones named by line.
    std::fs::write(
        d.join("consents.csv"),
        "email,channel,basis,source,obtained_at\n\
         ada@us.example,sms,consent,pricing page SMS checkbox,2026-02-01\n\
         nobody@nowhere.example,sms,consent,form,2026-02-01\n\
         bob@us.example,fax,consent,form,2026-02-01\n\
         jana@de.example,email,legitimate_interest,LIA,2026-02-01\n",
    )
    .unwrap();
    let out = engager(d, &["--json", "consent", "import", "consents.csv"]);
    assert_eq!(out.status.code(), Some(2), "bad rows exit 2");
    let report = json(&out);
    assert_eq!(report["written"], 1, "{report}");
    let lines: Vec<u64> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4, 5], "{report}");
    let text = report.to_string();
    assert!(
        text.contains("nobody@nowhere.example")
            && text.contains("fax")
            && text.contains("reference"),
        "{text}"
    );
    // --strict writes nothing when a row is bad.
    let strict = engager(
        d,
        &["--json", "consent", "import", "consents.csv", "--strict"],
    );
    assert_eq!(json(&strict)["written"], 0);
    // Jana: consent for email by hand; Otto objects.
    ok(&engager(
        d,
        &[
            "consent",
            "add",
            "--lead",
            "jana@de.example",
            "--channel",
            "email",
            "--source",
            "webinar signup",
            "--obtained-at",
            "2026-02-10",
        ],
    ));
    let objection = json(&engager(
        d,
        &[
            "--json",
            "consent",
            "object",
            "--lead",
            "otto@de.example",
            "--source",
            "email to privacy@",
        ],
    ));
    assert_eq!(objection["suppressed"], 1, "{objection}");
    // A legitimate interest needs its assessment's reference.
    let bad = engager(
        d,
        &[
            "consent",
            "add",
            "--lead",
            "bob@us.example",
            "--basis",
            "legitimate_interest",
            "--source",
            "x",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--reference"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let listed = json(&engager(
        d,
        &["--json", "consent", "list", "--lead", "ada@us.example"],
    ));
    assert_eq!(listed["records"][0]["basis"], "consent");
    assert!(listed["records"][0]["source"]
        .as_str()
        .unwrap()
        .contains("consents.csv line 2"));

    ok(&engager(d, &["enroll", "--campaign", "gate", "--all"]));
    let now = now_plus(0);
    let run = json(&engager(d, &["--json", "run", "--now", &now]));
    assert_eq!(run["sent"], 3, "{run}");
    assert_eq!(run["outcomes"]["stopped:objected"], 1, "{run}");

    let outbox = json(&engager(d, &["--json", "outbox", "list"]));
    let channel_of = |email_or_phone: &str| -> String {
        outbox
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["to"].as_str() == Some(email_or_phone))
            .map(|r| r["channel"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(
        channel_of("+12125550143"),
        "sms",
        "Ada consented to texts: {outbox}"
    );
    assert_eq!(
        channel_of("bob@us.example"),
        "email",
        "Bob did not: email instead"
    );
    assert_eq!(channel_of("jana@de.example"), "email");
    assert_eq!(channel_of("otto@de.example"), "");

    let explain = ok(&engager(d, &["explain", "bob@us.example"]));
    assert!(
        explain.contains("TCPA/CTIA refused: no prior express consent"),
        "{explain}"
    );

    let report = json(&engager(
        d,
        &["--json", "compliance", "report", "--since", &today()],
    ));
    let sends = report["sends"].as_array().unwrap();
    let sms = sends.iter().find(|s| s["channel"] == "sms").unwrap();
    assert_eq!(sms["sends"], 1);
    assert_eq!(sms["with_consent_record"], 1);
    assert_eq!(sms["with_stop_wording"], 1);
    let email = sends.iter().find(|s| s["channel"] == "email").unwrap();
    assert_eq!(email["sends"], 2);
    assert_eq!(email["with_footer"], 2);
    assert_eq!(
        email["with_one_click_header"], 2,
        "the outbox writes RFC 8058 headers"
    );
    assert_eq!(email["regimes"]["gdpr"], 1);
    assert!(report["gaps"].as_array().unwrap().is_empty(), "{report}");
    let rules: Vec<&str> = report["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"TCPA/CTIA") && rules.contains(&"objection (GDPR Art. 21)"),
        "{rules:?}"
    );
    let table = ok(&engager(d, &["compliance", "report", "--since", &today()]));
    assert!(
        table.contains("Refused by rule") && table.contains("Gaps: none"),
        "{table}"
    );
}

#[test]
fn a_deceptive_campaign_is_halted_until_fixed_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    std::fs::write(
        d.join("gate.toml"),
        campaign("Re: our call, {{ lead.first_name }}"),
    )
    .unwrap();
    ok(&engager(d, &["campaign", "add", "gate.toml"]));
    ok(&engager(d, &["enroll", "--campaign", "gate", "--all"]));
    let check = engager(d, &["compliance", "check"]);
    assert_eq!(check.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&check.stdout).contains("deceptive subject"));
    let now = now_plus(0);
    let run = engager(d, &["--json", "run", "--now", &now]);
    assert!(run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("HALTED"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(json(&run)["sent"], 0);
    let report = engager(d, &["--json", "compliance", "report", "--since", &today()]);
    assert_eq!(report.status.code(), Some(2));
    assert_eq!(json(&report)["halted_campaigns"][0][0], "gate");
    // Not while the subject still poses as a reply.
    let refused = engager(d, &["compliance", "resume", "gate"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("deceptive subject"));
    // Fixed, resumed, sent.
    std::fs::write(
        d.join("gate.toml"),
        campaign("A question, {{ lead.first_name }}"),
    )
    .unwrap();
    ok(&engager(d, &["campaign", "add", "gate.toml"]));
    ok(&engager(
        d,
        &["compliance", "resume", "gate", "--note", "subject fixed"],
    ));
    let later = now_plus(20);
    let run = json(&engager(d, &["--json", "run", "--now", &later]));
    assert!(run["sent"].as_u64().unwrap() >= 1, "{run}");
    let audit = ok(&engager(d, &["gdpr", "audit", "--since", "2026-01-01"]));
    assert!(
        audit.contains("halt") && audit.contains("override"),
        "{audit}"
    );
}
