//! The original engager's loop, end to end through the binary against the faithful Airtable
//! fake: sync the 4Runr base in compat mode, send, and write the status back.

use std::path::Path;
use std::process::Command;

use engager_testkit::airtable::{FakeAirtable, FakeAirtableSetup, FakeRecord};
use serde_json::{json, Value};

const PAT: &str = "patE2E.0123456789abcdef";

fn engager(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_engager"))
        .args(args)
        .current_dir(dir)
        .env_remove("ENGAGER_CONFIG")
        // Send as soon as due: no best-hour search, no holidays (the test runs any day).
        .env("ENGAGER_BEST_TIME__ENABLED", "false")
        .env("ENGAGER_HOLIDAYS__BUILTIN", "false")
        .output()
        .expect("engager runs")
}

fn ok_json(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn record(id: &str, name: &str, email: &str, confidence: &str, status: &str) -> FakeRecord {
    FakeRecord::new(
        id,
        json!({
            "Name": name,
            "Email": email,
            "Company": "Northwind Analytics",
            "Email_Confidence_Level": confidence,
            "Custom_Message": format!("Hi {name}, saw the Denver office news."),
            "Engagement_Status": status,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_send_and_write_back_like_the_original_engager() {
    let mut setup = FakeAirtableSetup::new("appE2E000000000001", "Leads", PAT);
    setup.records = vec![
        record(
            "rec001",
            "Jane Doe",
            "jane@northwind.example",
            "Real",
            "Auto-Send",
        ),
        record(
            "rec002",
            "Max Muster",
            "max@northwind.example",
            "Pattern",
            "Auto-Send",
        ),
        record(
            "rec003",
            "Guess Who",
            "guess@northwind.example",
            "Guess",
            "Auto-Send",
        ),
        record(
            "rec004",
            "Not Yet",
            "notyet@northwind.example",
            "Real",
            "Needs Review",
        ),
    ];
    setup.extra_fields = vec!["Date Messaged".into()];
    let fake = FakeAirtable::start(setup).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(engager(d, &["init"]).status.success());
    let mut cfg = std::fs::read_to_string(d.join("engager.toml"))
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0");
    cfg.push_str(&format!(
        "\n[airtable]\nbase_id = \"appE2E000000000001\"\ntable = \"Leads\"\ntoken = \"{PAT}\"\napi_url = \"{}\"\ncompat_mode = true\n",
        fake.base_url()
    ));
    std::fs::write(d.join("engager.toml"), cfg).unwrap();
    std::fs::write(
        d.join("c.toml"),
        "slug = \"a\"\nname = \"A\"\n[window]\ndays = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]\nstart = \"00:00\"\nend = \"23:59\"\n\
         [[steps]]\nname = \"m\"\nchannels = [\"email\"]\nsubject = \"A note for {{ lead.first_name }}\"\nbody = \"{{ lead.custom.custom_message }}\"\n",
    )
    .unwrap();

    let synced = ok_json(engager(d, &["airtable", "sync", "--json"]));
    assert_eq!(synced["fetched"], 2, "{synced}");
    assert_eq!(
        synced["ineligible"].as_array().unwrap().len(),
        2,
        "{synced}"
    );
    assert!(ok_json(engager(d, &["campaign", "add", "c.toml", "--json"]))["steps"] == 1);
    let enrolled = ok_json(engager(
        d,
        &[
            "enroll",
            "--campaign",
            "a",
            "--filter",
            "source=airtable:",
            "--json",
        ],
    ));
    assert_eq!(enrolled["enrolled"], 2);
    let ran = ok_json(engager(d, &["run", "--json"]));
    assert_eq!(ran["sent"], 2, "{ran}");
    assert_eq!(ran["written_back_to_airtable"], 2, "{ran}");

    let today = chrono::Utc::now().date_naive().to_string();
    for id in ["rec001", "rec002"] {
        let r = fake.record(id).unwrap();
        assert_eq!(r.fields["Engagement_Status"], "Sent", "{id}");
        assert_eq!(r.fields["Date Messaged"], today.as_str(), "{id}");
        assert_eq!(
            r.fields["Company"], "Northwind Analytics",
            "PATCH keeps the other fields"
        );
    }
    for id in ["rec003", "rec004"] {
        assert!(
            fake.record(id)
                .unwrap()
                .fields
                .get("Date Messaged")
                .is_none(),
            "{id} was not contacted"
        );
    }
    let eml = std::fs::read_dir(d.join("outbox/email"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(eml.len(), 2);
    assert!(
        eml.iter().any(|m| m.contains("saw the Denver office news")),
        "the Airtable custom message is the body"
    );
    // A second push finds nothing new: the ledger remembers what was written back.
    let pushed = ok_json(engager(d, &["airtable", "push", "--json"]));
    assert_eq!(pushed["written_back"], 0);

    // Max unsubscribes (here recorded by hand; the link, STOP or an inbox reply do the same):
    // the next push marks his record, once, and leaves Date Messaged as it was.
    assert!(
        engager(d, &["event", "max@northwind.example", "unsubscribed"])
            .status
            .success()
    );
    let pushed = ok_json(engager(d, &["airtable", "push", "--json"]));
    assert_eq!(pushed["written_back"], 1, "{pushed}");
    let max = fake.record("rec002").unwrap();
    assert_eq!(max.fields["Engagement_Status"], "Unsubscribed");
    assert_eq!(max.fields["Date Messaged"], today.as_str());
    assert_eq!(
        fake.record("rec001").unwrap().fields["Engagement_Status"],
        "Sent"
    );
    let pushed = ok_json(engager(d, &["airtable", "push", "--json"]));
    assert_eq!(pushed["written_back"], 0, "an opt-out is written back once");
}
