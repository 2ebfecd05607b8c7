//! The deliverability monitor per sending account through the binary: two SMTP accounts on
//! one relay (a local aiosmtpd), a hard bounce on one of them halts that account alone (one
//! alert, stored), `engager deliverability show` lists it per account and exits 2, and
//! `engager deliverability resume --account` lifts it.

mod common;

use std::path::Path;
use std::process::Output;

use chrono::Utc;
use common::{json, ok};
use engager_domain::{DeliveryState, EventKind};
use engager_store::{DeliveryFilter, NewEvent};
use engager_testkit::smtp_sink::{SinkOptions, SmtpSink};

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

/// Levels for this test: one bounce in Maya's two sends (50%) is a halt, one in the
/// channel's twelve (8.3%) is under the warn level of 9%.
fn engager(dir: &Path, args: &[&str]) -> Output {
    common::engager_env(
        dir,
        args,
        &[
            ("ENGAGER_DELIVERABILITY__MIN_SAMPLE", "2"),
            ("ENGAGER_DELIVERABILITY__BOUNCE_WARN_PERCENT", "9"),
            ("ENGAGER_DELIVERABILITY__BOUNCE_HALT_PERCENT", "10"),
            ("ENGAGER_TELEMETRY__LEVEL", "warn"),
        ],
    )
}

fn row<'a>(show: &'a serde_json::Value, list: &str, name: &str) -> &'a serde_json::Value {
    show[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name || r["channel"] == name)
        .unwrap_or_else(|| panic!("no {name} in {show}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_on_one_account_halts_it_alone_until_resume_account() {
    let Some(sink) = SmtpSink::start(SinkOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&engager(d, &["init"]));
    let path = d.join("engager.toml");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0")
        .replace("builtin = true", "builtin = false");
    std::fs::write(
        &path,
        format!(
            "{config}\n[channels.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\n\
             [[channels.smtp.accounts]]\nfrom = \"{MAYA}\"\ndaily_cap = 2\n\n\
             [[channels.smtp.accounts]]\nfrom = \"{SAM}\"\ndaily_cap = 10\n",
            sink.port()
        ),
    )
    .unwrap();
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
            "12",
        ],
    ));
    let run = json(&engager(d, &["run", "--json"]));
    assert_eq!(run["sent"], 12, "{run}");
    let maya = format!("email:smtp:{MAYA}");
    let sam = format!("email:smtp:{SAM}");

    // A hard bounce of one of Maya's two sends.
    let store = engager_store::open(&format!("sqlite:{}", d.join("engager.db").display()))
        .await
        .unwrap();
    let rows = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    let sent_by = |who: &str| {
        rows.iter()
            .filter(|r| r.state == DeliveryState::Sent && r.account.as_deref() == Some(who))
            .count()
    };
    assert_eq!((sent_by(&maya), sent_by(&sam)), (2, 10));
    let bounced = rows
        .iter()
        .find(|r| r.account.as_deref() == Some(maya.as_str()))
        .unwrap();
    store
        .record_event(&NewEvent {
            lead_id: bounced.lead_id,
            delivery_id: Some(bounced.id),
            kind: EventKind::HardBounce,
            occurred_at: Utc::now(),
            detail: "{}".into(),
            source: "test".into(),
        })
        .await
        .unwrap();

    // Looking never halts: the verdict is shown, nothing is stored.
    let look = engager(d, &["--json", "deliverability", "show"]);
    assert_eq!(look.status.code(), Some(0));
    let look = json(&look);
    assert_eq!(row(&look, "accounts", &maya)["standing"], "halted");
    assert!(row(&look, "accounts", &maya)["halt"].is_null());

    // Two runs: one halt of Maya's account, one alert; email and Sam stay open.
    let mut stderr = String::new();
    for _ in 0..2 {
        let run = engager(d, &["--json", "run"]);
        ok(&run);
        stderr.push_str(&String::from_utf8_lossy(&run.stderr));
    }
    assert_eq!(
        stderr
            .matches("Alert raised. kind=\"sending_halted\"")
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("account=account:{maya}")),
        "{stderr}"
    );

    let show = engager(d, &["--json", "deliverability", "show"]);
    assert_eq!(show.status.code(), Some(2), "a halted account exits 2");
    let show = json(&show);
    let m = row(&show, "accounts", &maya);
    assert_eq!(m["standing"], "halted", "{show}");
    assert_eq!(m["halt"]["by"], "monitor");
    assert_eq!(
        (m["sent"].as_u64(), m["hard_bounces"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(row(&show, "accounts", &sam)["standing"], "healthy");
    assert_eq!(row(&show, "channels", "email")["standing"], "healthy");
    assert!(row(&show, "channels", "email")["halt"].is_null());
    assert_eq!(
        show["domains"].as_array().unwrap().len(),
        0,
        "both accounts are the whole channel: the channel's row judges the domain"
    );
    let table =
        String::from_utf8_lossy(&engager(d, &["deliverability", "show"]).stdout).into_owned();
    assert!(
        table.contains("HALTED") && table.contains(&format!("resume --account {maya}")),
        "{table}"
    );

    // Resume: by account; a wrong name changes nothing; no target is an error.
    let wrong = json(&engager(
        d,
        &[
            "--json",
            "deliverability",
            "resume",
            "--account",
            "email:smtp:nobody@x.example",
        ],
    ));
    assert_eq!(wrong["resumed"], false);
    let none = engager(d, &["deliverability", "resume"]);
    assert!(!none.status.success());
    let resumed = json(&engager(
        d,
        &[
            "--json",
            "deliverability",
            "resume",
            "--account",
            &maya,
            "--note",
            "list cleaned",
        ],
    ));
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["key"], format!("account:{maya}"));
    let after = engager(d, &["--json", "deliverability", "show"]);
    assert_eq!(after.status.code(), Some(0));
    let after = json(&after);
    let m = row(&after, "accounts", &maya);
    assert!(m["halt"].is_null());
    assert_eq!(m["sent"], 0, "the window starts again at the resumption");
}
