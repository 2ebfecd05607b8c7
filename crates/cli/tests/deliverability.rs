//! The deliverability monitor end to end: a bounce rate above the halt level halts email,
//! raises exactly one alert across runs, holds the queued email (nothing sent, nothing
//! burned), and a person's `resume` lets it go out again.

use std::path::Path;

mod common;
use common::{json, ok};

use chrono::{Duration, Utc};
use engager_domain::{Channel, DeliveryState, EventKind};
use engager_store::{DeliveryFilter, LeadFilter, Store};

/// The monitor's levels for this test: the quickstart's simulated bounce rate (a few percent)
/// is above a 2% halt level, and the window covers the whole simulation.
const ENV: [(&str, &str); 4] = [
    ("ENGAGER_DELIVERABILITY__WINDOW_DAYS", "3650"),
    ("ENGAGER_DELIVERABILITY__BOUNCE_WARN_PERCENT", "1"),
    ("ENGAGER_DELIVERABILITY__BOUNCE_HALT_PERCENT", "2"),
    ("ENGAGER_DELIVERABILITY__MIN_SAMPLE", "50"),
];

fn engager(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut env = ENV.to_vec();
    env.push(("ENGAGER_TELEMETRY__LEVEL", "warn"));
    common::engager_env(dir, args, &env)
}

fn email_row(show: &serde_json::Value) -> serde_json::Value {
    show["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "email")
        .cloned()
        .expect("email is watched")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_spike_halts_email_alerts_once_and_resume_lets_it_go() {
    let dir = tempfile::tempdir().unwrap();
    ok(&engager(dir.path(), &["quickstart", "--seed", "5"]));
    let qs = dir.path().join("engager-quickstart");
    let store = engager_store::open(&format!("sqlite:{}", qs.join("engager.db").display()))
        .await
        .unwrap();
    let store: &dyn Store = store.as_ref();

    // What the monitor must see, counted independently.
    let before = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    let sent_email: Vec<_> = before
        .clone()
        .into_iter()
        .filter(|d| d.state == DeliveryState::Sent && d.channel == Channel::Email)
        .collect();
    let mut bounced = 0u64;
    for lead in store.lead_ids(&LeadFilter::default()).await.unwrap() {
        for e in store.events_for_lead(lead).await.unwrap() {
            if e.event.kind == EventKind::HardBounce
                && sent_email.iter().any(|d| Some(d.id) == e.event.delivery_id)
            {
                bounced += 1;
            }
        }
    }
    let rate = bounced as f64 / sent_email.len() as f64;
    assert!(
        rate > 0.02,
        "the simulation's bounce rate ({rate}) must exceed the test's halt level"
    );

    // A read-only look: the figures, and "halted" as a verdict, but nothing stored yet.
    let show = engager(&qs, &["--json", "deliverability", "show"]);
    let email = email_row(&json(&show));
    assert_eq!(email["sent"], sent_email.len() as u64);
    assert_eq!(email["hard_bounces"], bounced);
    assert_eq!(email["standing"], "halted");
    assert!(email["halt"].is_null(), "showing never halts");
    assert!(email["findings"][0]
        .as_str()
        .unwrap()
        .starts_with("hard bounces"));

    // New leads to write to, so there is email to hold.
    std::fs::write(
        qs.join("new.csv"),
        "email,first_name,company,country,timezone\n\
         ana@fresh-one.example,Ana,Fresh One,DE,Europe/Berlin\n\
         ben@fresh-two.example,Ben,Fresh Two,US,America/Chicago\n\
         cho@fresh-three.example,Cho,Fresh Three,GB,Europe/London\n",
    )
    .unwrap();
    ok(&engager(&qs, &["import", "new.csv"]));
    ok(&engager(
        &qs,
        &["enroll", "--campaign", "spring-outreach", "--all"],
    ));

    // Runs over a few days halt email, raise one alert in all, and send no email.
    let mut stderr = String::new();
    for days in [30, 31, 32, 33] {
        let at = (Utc::now() + Duration::days(days)).to_rfc3339();
        let run = engager(&qs, &["--json", "run", "--now", &at]);
        ok(&run);
        stderr.push_str(&String::from_utf8_lossy(&run.stderr));
    }
    assert_eq!(stderr.matches("sending_halted").count(), 1, "{stderr}");
    let after = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    let sent_after = after
        .iter()
        .filter(|d| d.state == DeliveryState::Sent && d.channel == Channel::Email)
        .count();
    assert_eq!(sent_after, sent_email.len(), "no email while halted");
    let failed = |rows: &[engager_store::DeliveryRecord]| {
        rows.iter()
            .filter(|d| d.channel == Channel::Email && d.state == DeliveryState::Failed)
            .count()
    };
    assert_eq!(
        failed(&after),
        failed(&before),
        "a halt never burns a delivery"
    );

    // The halt is stored: `show` exits 2 and names it.
    let show = engager(&qs, &["--json", "deliverability", "show"]);
    assert_eq!(show.status.code(), Some(2));
    let email = email_row(&json(&show));
    assert_eq!(email["halt"]["by"], "monitor");
    let table =
        String::from_utf8_lossy(&engager(&qs, &["deliverability", "show"]).stdout).into_owned();
    assert!(
        table.contains("HALTED") && table.contains("deliverability resume email"),
        "{table}"
    );

    // A person resumes: the window restarts, and the queued email goes out.
    let resumed = json(&engager(
        &qs,
        &[
            "--json",
            "deliverability",
            "resume",
            "email",
            "--note",
            "list cleaned",
        ],
    ));
    assert_eq!(resumed["resumed"], true);
    let again = json(&engager(
        &qs,
        &["--json", "deliverability", "resume", "email"],
    ));
    assert_eq!(again["resumed"], false);
    for days in [36, 37, 38, 39, 40] {
        let at = (Utc::now() + Duration::days(days)).to_rfc3339();
        ok(&engager(&qs, &["--json", "run", "--now", &at]));
    }
    let sent_final = store
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap()
        .iter()
        .filter(|d| d.state == DeliveryState::Sent && d.channel == Channel::Email)
        .count();
    assert!(
        sent_final > sent_email.len(),
        "email flows again after resume"
    );
}

#[test]
fn invalid_levels_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    ok(&engager(
        dir.path(),
        &["quickstart", "--seed", "5", "--days", "1"],
    ));
    let qs = dir.path().join("engager-quickstart");
    let out = common::engager_env(
        &qs,
        &["deliverability", "show"],
        &[
            ("ENGAGER_DELIVERABILITY__COMPLAINT_WARN_PERCENT", "0.5"),
            ("ENGAGER_DELIVERABILITY__COMPLAINT_HALT_PERCENT", "0.3"),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`deliverability.complaint_warn_percent`"),
        "{stderr}"
    );
    let out = engager(&qs, &["deliverability", "resume", "fax"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected email, sms or linkedin"));
}
