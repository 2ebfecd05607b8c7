//! The planner sees the deliverability monitor's account and domain halts: when every sending
//! account of a channel is halted (each, or through its sending domain), a step planned on
//! that channel falls back to its next channel, and the trace says why; while one account
//! can still send, the channel is planned as usual.

mod common;

use std::path::Path;
use std::process::Output;

use chrono::Utc;
use common::{json, ok};
use engager_store::AccountHalt;

const MAYA: &str = "maya@acme-analytics.example";
const SAM: &str = "sam@acme-analytics.example";

const CAMPAIGN: &str = r#"
slug = "reach"
name = "Reach"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "hello"
channels = ["email", "linkedin"]
subject = "Hello {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}, a short note."
"#;

fn engager(dir: &Path, args: &[&str]) -> Output {
    common::engager_env(dir, args, &[("ENGAGER_TELEMETRY__LEVEL", "warn")])
}

/// The channel of each planned message of a dry run.
fn planned_channels(dir: &Path) -> Vec<String> {
    let run = json(&engager(dir, &["--json", "run", "--dry-run"]));
    run["would_plan"]
        .as_array()
        .unwrap_or_else(|| panic!("no plans in {run}"))
        .iter()
        .map(|p| p["channel"].as_str().unwrap().to_owned())
        .collect()
}

async fn halt(dir: &Path, key: &str, halted: bool) {
    let store = engager_store::open(&format!("sqlite:{}", dir.join("engager.db").display()))
        .await
        .unwrap();
    store
        .set_account_halt(&AccountHalt {
            key: key.to_owned(),
            halted,
            reason: "hard bounces 12.0% over 50 sends (halt at 5%)".into(),
            changed_by: if halted { "monitor" } else { "person" }.into(),
            changed_at: Utc::now(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_every_account_is_halted_is_planned_around() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&engager(d, &["init"]));
    let path = d.join("engager.toml");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0")
        .replace("builtin = true", "builtin = false");
    // Two SMTP accounts on one sending domain (planning never connects to the relay).
    std::fs::write(
        &path,
        format!(
            "{config}\n[channels.smtp]\nhost = \"127.0.0.1\"\nport = 9\nsecurity = \"none\"\n\n\
             [[channels.smtp.accounts]]\nfrom = \"{MAYA}\"\n\n\
             [[channels.smtp.accounts]]\nfrom = \"{SAM}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("leads.csv"),
        "email,first_name,country,timezone,linkedin_url\n\
         ada@northwind.example,Ada,US,America/New_York,https://www.linkedin.com/in/ada-lovelace-1\n\
         bo@contoso.example,Bo,US,America/Chicago,https://www.linkedin.com/in/bo-chen-2\n",
    )
    .unwrap();
    ok(&engager(d, &["import", "leads.csv"]));
    std::fs::write(d.join("reach.toml"), CAMPAIGN).unwrap();
    ok(&engager(d, &["campaign", "add", "reach.toml"]));
    ok(&engager(d, &["enroll", "--campaign", "reach", "--all"]));
    assert_eq!(planned_channels(d), ["email", "email"]);

    // One account halted: the other still sends, email is planned.
    let maya = format!("account:email:smtp:{MAYA}");
    halt(d, &maya, true).await;
    assert_eq!(planned_channels(d), ["email", "email"]);

    // Both halted: the step falls back to LinkedIn, and the trace says why.
    let sam = format!("account:email:smtp:{SAM}");
    halt(d, &sam, true).await;
    assert_eq!(planned_channels(d), ["linkedin", "linkedin"]);
    ok(&engager(d, &["run", "--limit", "1"]));
    let explain =
        String::from_utf8_lossy(&engager(d, &["explain", "ada@northwind.example"]).stdout)
            .into_owned();
    assert!(
        explain.contains("every sending account halted")
            && explain.contains(&format!("email:smtp:{MAYA} (hard bounces"))
            && explain.contains("linkedin"),
        "{explain}"
    );

    // A person resumes Sam's account: email again.
    ok(&engager(
        d,
        &[
            "deliverability",
            "resume",
            "--account",
            &format!("email:smtp:{SAM}"),
        ],
    ));
    assert_eq!(planned_channels(d), ["email"]);

    // The shared sending domain halted: both accounts are out through it.
    halt(d, &maya, false).await;
    halt(d, "domain:acme-analytics.example", true).await;
    let plans = planned_channels(d);
    assert_eq!(plans, ["linkedin"]);
}
