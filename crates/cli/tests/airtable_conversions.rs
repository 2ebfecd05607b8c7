//! An Airtable status change marks a lead as converted, through the binary against the
//! Airtable fake: after a send, the record's `Engagement_Status` moves to "Meeting Booked";
//! the next sync records exactly one conversion (visible in `engager report`), and syncing
//! again records nothing new.

use std::path::Path;
use std::process::Command;

use engager_testkit::airtable::{FakeAirtable, FakeAirtableSetup, FakeRecord};
use serde_json::{json, Value};

const PAT: &str = "patConv.0123456789abcdef";

fn engager(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_engager"))
        .args(args)
        .current_dir(dir)
        .env_remove("ENGAGER_CONFIG")
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

fn record(id: &str, name: &str, email: &str) -> FakeRecord {
    FakeRecord::new(
        id,
        json!({
            "Name": name,
            "Email": email,
            "Company": "Northwind Analytics",
            "Country": "US",
            "Email_Confidence_Level": "Real",
            "Custom_Message": format!("Hi {name}, saw the Denver office news."),
            "Engagement_Status": "Auto-Send",
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_in_airtable_records_one_conversion() {
    let mut setup = FakeAirtableSetup::new("appConv00000000001", "Leads", PAT);
    setup.records = vec![
        record("rec001", "Jane Doe", "jane@northwind.example"),
        record("rec002", "Max Muster", "max@northwind.example"),
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
        "\n[airtable]\nbase_id = \"appConv00000000001\"\ntable = \"Leads\"\ntoken = \"{PAT}\"\napi_url = \"{}\"\ncompat_mode = true\n\
         conversion_statuses = {{ \"Meeting Booked\" = \"meeting\", \"Qualified\" = \"opportunity\" }}\n",
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
    assert_eq!(synced["conversions"]["recorded"], 0, "{synced}");
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

    // A person books a meeting with Jane and moves her record in Airtable.
    assert!(fake.set_field("rec001", "Engagement_Status", json!("Meeting Booked")));
    // A dry run says what would happen and writes nothing.
    let dry = ok_json(engager(d, &["airtable", "sync", "--dry-run", "--json"]));
    assert_eq!(dry["conversions"]["recorded"], 1, "{dry}");
    let synced = ok_json(engager(d, &["airtable", "sync", "--json"]));
    assert_eq!(synced["conversions"]["recorded"], 1, "{synced}");
    assert_eq!(synced["conversions"]["already_recorded"], 0, "{synced}");
    // Synced again (and again): nothing new.
    for _ in 0..2 {
        let again = ok_json(engager(d, &["airtable", "sync", "--json"]));
        assert_eq!(again["conversions"]["recorded"], 0, "{again}");
        assert_eq!(again["conversions"]["already_recorded"], 1, "{again}");
    }
    // Exactly one conversion in the report, credited to Jane's send.
    let report = ok_json(engager(d, &["report", "--since", "1d", "--json"]));
    assert_eq!(report["total"]["conversions"], 1, "{report}");
    // A status value that is not mapped converts nothing; an unknown record is named.
    assert!(fake.set_field("rec002", "Engagement_Status", json!("Replied")));
    let synced = ok_json(engager(d, &["airtable", "sync", "--json"]));
    assert_eq!(synced["conversions"]["recorded"], 0, "{synced}");
}
