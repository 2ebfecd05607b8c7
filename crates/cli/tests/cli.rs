//! End-to-end tests of the `engager` binary, run the way a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use engager_domain::{Channel, DeliveryState, EventKind};
use engager_store::{DeliveryFilter, LeadFilter, Store, SuppressionKey};

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

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((
                    path.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn quickstart_is_byte_identical_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let first = ok(&engager(dir.path(), &["quickstart"]));
    let outbox_first = read_tree(&dir.path().join("engager-quickstart/outbox"));
    let second = ok(&engager(dir.path(), &["quickstart"]));
    let outbox_second = read_tree(&dir.path().join("engager-quickstart/outbox"));
    assert_eq!(
        first, second,
        "summary differs between runs with the same seed"
    );
    assert!(
        outbox_first == outbox_second,
        "outbox differs between runs with the same seed"
    );
    assert!(
        outbox_first.len() > 400,
        "the simulation should send hundreds of messages, got {}",
        outbox_first.len()
    );
    assert!(
        first.contains("rows rejected") && first.contains("Mars/Olympus_Mons"),
        "{first}"
    );
    // Another seed gives other engagement, so another outbox.
    ok(&engager(dir.path(), &["quickstart", "--seed", "7"]));
    assert!(
        read_tree(&dir.path().join("engager-quickstart/outbox")) != outbox_first,
        "the seed has no effect"
    );
}

#[test]
fn quickstart_refuses_to_replace_a_folder_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("engager-quickstart")).unwrap();
    std::fs::write(
        dir.path().join("engager-quickstart/precious.txt"),
        "keep me",
    )
    .unwrap();
    let out = engager(dir.path(), &["quickstart"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not made by `engager quickstart`"));
    assert!(dir.path().join("engager-quickstart/precious.txt").exists());
}

/// The simulated campaign obeys the rules a user relies on: replies stop sequences, opt-outs
/// and hard bounces suppress, every email carries the legal footer and one-click headers,
/// SMS only goes out in the recipient's daytime, nobody gets more than the weekly budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_obeys_stops_suppression_compliance_and_budget() {
    let dir = tempfile::tempdir().unwrap();
    ok(&engager(dir.path(), &["quickstart", "--seed", "11"]));
    let qs = dir.path().join("engager-quickstart");
    let store = engager_store::open(&format!("sqlite:{}", qs.join("engager.db").display()))
        .await
        .unwrap();
    let store: &dyn Store = store.as_ref();
    let deliveries = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    let leads = store.lead_ids(&LeadFilter::default()).await.unwrap();
    assert_eq!(leads.len(), 221);
    let (mut replies, mut optouts) = (0, 0);
    for lead_id in leads {
        let lead = store.lead(lead_id).await.unwrap().unwrap();
        let events = store.events_for_lead(lead_id).await.unwrap();
        let mine: Vec<_> = deliveries
            .iter()
            .filter(|d| d.lead_id == lead_id && d.state == DeliveryState::Sent)
            .collect();
        let mut sends: Vec<_> = mine.iter().map(|d| d.sent_at.unwrap()).collect();
        sends.sort();
        for (i, t) in sends.iter().enumerate() {
            let in_week = sends[..=i]
                .iter()
                .filter(|s| **s > *t - chrono::Duration::days(7))
                .count();
            assert!(
                in_week <= 3,
                "lead {lead_id} got {in_week} touches within 7 days"
            );
            if i > 0 {
                assert!(
                    *t - sends[i - 1] >= chrono::Duration::hours(48),
                    "lead {lead_id}: touches closer than the minimum gap"
                );
            }
        }
        for e in &events {
            let later = mine
                .iter()
                .filter(|d| d.sent_at.unwrap() > e.event.occurred_at)
                .count();
            match e.event.kind {
                EventKind::Replied => {
                    replies += 1;
                    assert_eq!(later, 0, "lead {lead_id} was contacted after replying");
                }
                EventKind::Unsubscribed | EventKind::HardBounce => {
                    optouts += 1;
                    assert_eq!(
                        later, 0,
                        "lead {lead_id} was contacted after {}",
                        e.event.kind
                    );
                    let d = deliveries
                        .iter()
                        .find(|d| Some(d.id) == e.event.delivery_id)
                        .unwrap();
                    let key = match d.channel {
                        Channel::Sms => SuppressionKey::Phone(d.to_address.clone()),
                        _ => SuppressionKey::Email(d.to_address.clone()),
                    };
                    assert_eq!(
                        store.suppressed(&[key]).await.unwrap().len(),
                        1,
                        "opt-out of lead {lead_id} not suppressed"
                    );
                }
                _ => {}
            }
        }
        for d in mine.iter().filter(|d| d.channel == Channel::Sms) {
            let (zone, _) =
                lead.time_zone(engager_domain::TimeZone::parse("America/New_York").unwrap());
            let local = d.sent_at.unwrap().with_timezone(&zone.tz());
            let hour = chrono::Timelike::hour(&local);
            assert!((8..21).contains(&hour), "SMS to lead {lead_id} at {local}");
        }
    }
    assert!(
        replies > 5 && optouts > 5,
        "the sandbox should produce replies ({replies}) and opt-outs ({optouts})"
    );
    for (name, bytes) in read_tree(&qs.join("outbox/email")) {
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace("=\r\n", "")
            .replace("\r\n ", " ");
        assert!(text.contains("List-Unsubscribe: <https://"), "{name}");
        assert!(
            text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{name}"
        );
        assert!(
            text.contains("548 Market St"),
            "{name} lacks the postal address"
        );
        assert!(!text.contains("{{"), "{name} has an unresolved variable");
    }
    for (name, bytes) in read_tree(&qs.join("outbox/sms")) {
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["has_stop_wording"], true, "{name}");
        assert!(doc["segments"].as_u64().unwrap() <= 3, "{name}");
    }
}

fn write_campaign(dir: &Path) -> PathBuf {
    let path = dir.join("always.toml");
    std::fs::write(
        &path,
        r#"
slug = "always"
name = "Always open"
# Send as soon as the window allows (not at the learned best hour), so one `run` sends.
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
name = "later"
channels = ["email"]
delay_days = 3
subject = "Again, {{ lead.first_name }}"
body = "Following up."
"#,
    )
    .unwrap();
    path
}

fn configured(dir: &Path) {
    ok(&engager(dir, &["init"]));
    let cfg = std::fs::read_to_string(dir.join("engager.toml"))
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0")
        // The company documented its legitimate interest (GDPR) for B2B email to EU leads.
        .replace(
            "# legitimate_interest_reference = ",
            "legitimate_interest_reference = ",
        );
    std::fs::write(dir.join("engager.toml"), cfg).unwrap();
}

#[test]
fn a_second_run_sends_nothing_new_and_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configured(d);
    let leads = examples().join("leads.csv");
    ok(&engager(d, &["import", leads.to_str().unwrap()]));
    ok(&engager(
        d,
        &["campaign", "add", write_campaign(d).to_str().unwrap()],
    ));
    ok(&engager(
        d,
        &["enroll", "--campaign", "always", "--filter", "country=GB"],
    ));
    let dry: serde_json::Value =
        serde_json::from_str(&ok(&engager(d, &["run", "--dry-run", "--json"]))).unwrap();
    let would = dry["would_plan"].as_array().unwrap().len();
    assert!(would > 10, "{dry}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&engager(d, &["status", "--json"]))).unwrap();
    assert_eq!(
        status["steps"].as_array().unwrap().len(),
        0,
        "a dry run wrote deliveries: {status}"
    );
    let limited: serde_json::Value =
        serde_json::from_str(&ok(&engager(d, &["run", "--limit", "4", "--json"]))).unwrap();
    assert_eq!(limited["planned"], 4);
    assert_eq!(limited["sent"], 4);
    let first: serde_json::Value =
        serde_json::from_str(&ok(&engager(d, &["run", "--json"]))).unwrap();
    assert_eq!(
        first["sent"].as_u64().unwrap() as usize,
        would - 4,
        "{first}"
    );
    let second: serde_json::Value =
        serde_json::from_str(&ok(&engager(d, &["run", "--json"]))).unwrap();
    assert_eq!(
        (second["planned"].as_u64(), second["sent"].as_u64()),
        (Some(0), Some(0)),
        "{second}"
    );
    assert_eq!(
        std::fs::read_dir(d.join("outbox/email")).unwrap().count(),
        would
    );
    let listed: serde_json::Value = serde_json::from_str(&ok(&engager(
        d,
        &[
            "outbox", "list", "--state", "sent", "--json", "--limit", "1000",
        ],
    )))
    .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), would);
    // explain shows every gate of the lead's evaluation.
    let email = listed[0]["to"].as_str().unwrap().to_owned();
    let explained = ok(&engager(d, &["explain", &email]));
    for gate in [
        "compliance",
        "frequency",
        "channel",
        "personalization",
        "content",
        "timing",
    ] {
        assert!(explained.contains(&format!("✓ {gate}")), "{explained}");
    }
    // A reply recorded by hand stops the sequence.
    let reply: serde_json::Value =
        serde_json::from_str(&ok(&engager(d, &["event", &email, "replied", "--json"]))).unwrap();
    assert_eq!(reply["enrollments_stopped"], 1);
}

#[test]
fn strict_import_writes_nothing_and_reports_each_rejected_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configured(d);
    let leads = examples().join("leads.csv");
    let out = engager(
        d,
        &["import", "--strict", "--json", leads.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<u64> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![37, 79, 116, 157, 172, 223]);
    assert_eq!(report["written"], false);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&engager(d, &["status", "--json"]))).unwrap();
    assert_eq!(
        status["leads"],
        serde_json::json!({}),
        "strict import wrote leads"
    );
    // A malformed row in JSONL is reported with file and line, the rest imported.
    std::fs::write(d.join("x.jsonl"), "{\"email\":\"a@b.example\",\"first_name\":\"A\"}\n{not json\n{\"email\":\"c@d.example\"}\n").unwrap();
    let out: serde_json::Value =
        serde_json::from_str(&ok(&engager(d, &["import", "x.jsonl", "--json"]))).unwrap();
    assert_eq!(out["inserted"], 2);
    assert_eq!(out["rejected"][0]["line"], 2);
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configured(d);
    let text = std::fs::read_to_string(d.join("engager.toml")).unwrap();
    std::fs::write(
        d.join("typo.toml"),
        text.replace("[frequency]", "[frequency]\nmax_per_weak = 2"),
    )
    .unwrap();
    let out = engager(d, &["--config", "typo.toml", "status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_per_weak"), "{err}");
    // Environment variables override the file and are validated the same way.
    let out = Command::new(env!("CARGO_BIN_EXE_engager"))
        .args(["status"])
        .current_dir(d)
        .env("ENGAGER_TIMING__DEFAULT_TIME_ZONE", "Mars/Base")
        .env("ENGAGER_TEST_DATABASE_URL", "postgres://ignored")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timing.default_time_zone") && err.contains("Mars/Base"),
        "{err}"
    );
    // The secret is never printed, even in errors.
    let secret_line = text
        .lines()
        .find(|l| l.starts_with("secret"))
        .unwrap()
        .to_owned();
    assert!(!err.contains(&secret_line[10..]), "{err}");
}

#[test]
fn daemon_reloads_on_sighup_and_keeps_the_old_config_when_the_new_one_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configured(d);
    let good = std::fs::read_to_string(d.join("engager.toml")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_engager"))
        .args(["run", "--daemon"])
        .current_dir(d)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let wait_for = |stderr: &mut std::io::BufReader<std::process::ChildStderr>, needle: &str| {
        use std::io::BufRead;
        let mut seen = String::new();
        for _ in 0..200 {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                break;
            }
            seen.push_str(&line);
            if line.contains(needle) {
                return seen;
            }
        }
        panic!("never saw {needle:?} in:\n{seen}");
    };
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    wait_for(&mut stderr, "daemon started");
    std::fs::write(
        d.join("engager.toml"),
        good.replace("max_per_week = 3", "max_per_week = \"lots\""),
    )
    .unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let seen = wait_for(&mut stderr, "keeping the old one");
    assert!(seen.contains("max_per_week"), "{seen}");
    std::fs::write(
        d.join("engager.toml"),
        good.replace("max_per_week = 3", "max_per_week = 2"),
    )
    .unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    wait_for(&mut stderr, "configuration reloaded");
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

/// `engager schedule` shows each enrollment's computed next slot with the zone and its
/// source, the window, the best-hour scores and the budget; "not interested" ends the
/// sequence and pauses the lead, which the schedule then shows.
#[test]
fn schedule_shows_the_next_slot_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configured(d);
    let leads = examples().join("leads.csv");
    ok(&engager(d, &["import", leads.to_str().unwrap()]));
    let campaign = examples().join("campaigns/spring-outreach.toml");
    ok(&engager(
        d,
        &["campaign", "add", campaign.to_str().unwrap()],
    ));
    ok(&engager(
        d,
        &[
            "enroll",
            "--campaign",
            "spring-outreach",
            "--filter",
            "country=US",
        ],
    ));
    // A New York lead enrolled just now (on the system clock): the intro goes out at a
    // best-scoring hour of the next open days, on a business day inside the window.
    let email = "ashley.davis@driftwood-diagnostics.example";
    let args = ["schedule", "--lead", email, "--json"];
    let out: serde_json::Value = serde_json::from_str(&ok(&engager(d, &args))).unwrap();
    assert_eq!(out["zone"]["name"], "America/New_York", "{out}");
    assert_eq!(out["zone"]["source"], "explicit");
    let next = &out["enrollments"][0]["next"];
    assert_eq!(next["outcome"], "planned", "{out}");
    let at_local = next["at_local"].as_str().unwrap();
    let hour: u32 = at_local[15..17].parse().unwrap();
    assert!(
        !at_local.starts_with("Sat") && !at_local.starts_with("Sun") && (9..17).contains(&hour),
        "{at_local}"
    );
    let timing = next["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "timing")
        .unwrap();
    let reason = timing["reason"].as_str().unwrap();
    assert!(
        reason.contains("zone America/New_York (explicit)")
            && reason.contains("best hour")
            && reason.contains("prior only"),
        "{timing}"
    );
    assert_eq!(out["budget"]["verdict"], "clear");
    assert_eq!(out["best_hours"]["top"][0]["hour"], 10);
    let text = ok(&engager(d, &args[..3]));
    assert!(text.contains("would be planned by email"), "{text}");
    assert!(text.contains("Best hours: tue 10:00 1.00"), "{text}");
    // As of a later instant the step is evaluated then.
    let later: serde_json::Value = serde_json::from_str(&ok(&engager(
        d,
        &[
            "schedule",
            "--lead",
            email,
            "--at",
            "2030-01-08T06:00:00Z",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(
        later["enrollments"][0]["next"]["at_local"]
            .as_str()
            .unwrap()
            .get(..14),
        Some("Tue 2030-01-08"),
        "{later}"
    );
    // Not interested: the sequence ends, the lead is paused.
    let marked: serde_json::Value = serde_json::from_str(&ok(&engager(
        d,
        &["event", email, "not_interested", "--json"],
    )))
    .unwrap();
    assert_eq!(marked["enrollments_stopped"], 1);
    let out: serde_json::Value =
        serde_json::from_str(&ok(&engager(d, &["schedule", "--lead", email, "--json"]))).unwrap();
    assert_eq!(out["enrollments"][0]["state"], "stopped");
    assert_eq!(out["budget"]["code"], "paused", "{out}");
    let err = engager(d, &["schedule", "--lead", email, "--campaign", "nope"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("no campaign \"nope\""));
}
