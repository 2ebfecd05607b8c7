//! LinkedIn steps as tasks, through the `engager` binary: `run` opens a task per LinkedIn
//! delivery, `tasks list|done|skip` work them, and a task left past its deadline is skipped
//! or falls back to the step's next channel at the next `run`. Time is set with the hidden
//! `--now` flag (an instant in the future, so the dispatcher's real clock never overtakes it).

use std::path::Path;
use std::process::{Command, Output};

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

const LEADS: &str = "email,first_name,company,country,timezone,linkedin_url\n\
ada@lovelace.example,Ada,Lovelace,GB,Europe/London,https://www.linkedin.com/in/ada\n\
bob@babbage.example,Bob,Babbage,GB,Europe/London,https://www.linkedin.com/in/bob\n\
cy@clarke.example,Cy,Clarke,IE,Europe/Dublin,https://www.linkedin.com/in/cy\n";

fn campaign(slug: &str, on_deadline: &str) -> String {
    format!(
        r#"
slug = "{slug}"
name = "LinkedIn first ({on_deadline})"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "connect"
channels = ["linkedin", "email"]
task_deadline = "2d"
on_deadline = "{on_deadline}"
subject = "Hello {{{{ lead.first_name }}}}"
body = "Hi {{{{ lead.first_name }}}}, glad to connect."
[[steps]]
name = "follow-up"
channels = ["email"]
delay_days = 3
subject = "Following up"
body = "Hi {{{{ lead.first_name }}}}, following up."
"#
    )
}

/// `engager init`, no jitter, the leads imported and the campaigns loaded; GB leads in the
/// first campaign, IE leads in the second.
fn setup(dir: &Path, first: (&str, &str), second: (&str, &str)) {
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
    std::fs::write(&path, config).unwrap();
    std::fs::write(dir.join("leads.csv"), LEADS).unwrap();
    ok(&engager(dir, &["import", "leads.csv"]));
    for (i, (slug, on_deadline)) in [first, second].into_iter().enumerate() {
        let file = format!("{slug}.toml");
        std::fs::write(dir.join(&file), campaign(slug, on_deadline)).unwrap();
        ok(&engager(dir, &["campaign", "add", &file]));
        let country = if i == 0 { "country=GB" } else { "country=IE" };
        ok(&engager(
            dir,
            &["enroll", "--campaign", slug, "--filter", country],
        ));
    }
}

const T0: &str = "2030-03-04T10:00:00Z";

fn at(hours: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339(T0).unwrap() + chrono::Duration::hours(hours))
        .with_timezone(&chrono::Utc)
        .to_rfc3339()
}

fn task_of<'a>(tasks: &'a Value, profile: &str) -> &'a Value {
    tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["profile_url"] == profile)
        .unwrap_or_else(|| panic!("no task for {profile} in {tasks}"))
}

fn explain(dir: &Path, email: &str) -> Value {
    json(&engager(dir, &["--json", "explain", email]))
}

#[test]
fn tasks_are_listed_done_with_or_without_a_reply_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, ("li", "skip"), ("li-ie", "skip"));

    let run = json(&engager(d, &["--json", "run", "--now", T0]));
    assert_eq!(run["tasks"]["opened"], 3, "{run}");
    assert_eq!(run["sent"], 0, "{run}");

    let tasks = json(&engager(d, &["--json", "tasks", "list", "--now", T0]));
    assert_eq!(tasks.as_array().unwrap().len(), 3, "{tasks}");
    let ada = task_of(&tasks, "https://www.linkedin.com/in/ada");
    assert_eq!(ada["state"], "open");
    assert_eq!(ada["kind"], "connection_note");
    assert_eq!(ada["message"], "Hi Ada, glad to connect.");
    assert_eq!(ada["on_deadline"], "skip");
    assert_eq!(ada["overdue"], false);
    let due = chrono::DateTime::parse_from_rfc3339(ada["due_at"].as_str().unwrap()).unwrap();
    assert_eq!(due, chrono::DateTime::parse_from_rfc3339(&at(48)).unwrap());
    let id = |t: &Value| t["id"].as_i64().unwrap().to_string();
    let (ada_id, bob_id, cy_id) = (
        id(ada),
        id(task_of(&tasks, "https://www.linkedin.com/in/bob")),
        id(task_of(&tasks, "https://www.linkedin.com/in/cy")),
    );
    // The table names the profile, the deadline and what to do.
    let table = ok(&engager(d, &["tasks", "list", "--now", T0]));
    assert!(table.contains("https://www.linkedin.com/in/ada"), "{table}");
    assert!(table.contains("engager tasks done"), "{table}");
    // While open, the delivery waits as `sending` (claimed by the task), never re-sent.
    let again = json(&engager(d, &["--json", "run", "--now", &at(1)]));
    assert_eq!(again["tasks"]["opened"], 0, "{again}");

    // Done: the delivery is sent, the sequence moves on to step 2.
    let done = json(&engager(
        d,
        &["--json", "tasks", "done", &ada_id, "--now", &at(2)],
    ));
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["replied"], false);
    let ada = explain(d, "ada@lovelace.example");
    assert_eq!(ada["enrollments"][0]["state"], "active", "{ada}");
    assert_eq!(ada["enrollments"][0]["current_step"], 2, "{ada}");
    let delivery = &ada["deliveries"][0];
    assert_eq!(delivery["channel"], "linkedin");
    assert_eq!(delivery["state"], "sent", "{ada}");

    // Done with a reply: the reply stops the sequence.
    let done = json(&engager(
        d,
        &[
            "--json",
            "tasks",
            "done",
            &bob_id,
            "--replied",
            "--now",
            &at(3),
        ],
    ));
    assert_eq!(done["replied"], true, "{done}");
    assert_eq!(done["enrollments_stopped"], 1, "{done}");
    let bob = explain(d, "bob@babbage.example");
    assert_eq!(bob["enrollments"][0]["state"], "stopped", "{bob}");
    assert_eq!(bob["enrollments"][0]["stop_reason"], "replied", "{bob}");
    let kinds: Vec<&str> = bob["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["sent", "replied"], "{bob}");

    // Skipped: cancelled, the sequence goes on with step 2.
    let skipped = json(&engager(
        d,
        &[
            "--json",
            "tasks",
            "skip",
            &cy_id,
            "--reason",
            "not on LinkedIn",
            "--now",
            &at(4),
        ],
    ));
    assert_eq!(skipped["state"], "skipped", "{skipped}");
    assert_eq!(skipped["note"], "not on LinkedIn");
    let cy = explain(d, "cy@clarke.example");
    assert_eq!(cy["enrollments"][0]["state"], "active", "{cy}");
    assert_eq!(cy["enrollments"][0]["current_step"], 2, "{cy}");
    assert_eq!(cy["deliveries"][0]["state"], "cancelled", "{cy}");

    // Closed tasks cannot change again; unknown ids are named.
    let out = engager(d, &["tasks", "done", &cy_id]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already skipped"), "{stderr}");
    let out = engager(d, &["tasks", "skip", "999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task 999"));

    let open = json(&engager(d, &["--json", "tasks", "list", "--now", &at(5)]));
    assert!(open.as_array().unwrap().is_empty(), "{open}");
    let all = json(&engager(
        d,
        &["--json", "tasks", "list", "--state", "all", "--now", &at(5)],
    ));
    let mut states: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    states.sort_unstable();
    assert_eq!(states, vec!["done", "done", "skipped"]);
}

#[test]
fn a_task_past_its_deadline_is_skipped_or_falls_back_to_the_next_channel() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // GB leads (Ada, Bob) fall back to email; the IE lead (Cy) is skipped.
    setup(d, ("li-fallback", "fallback"), ("li-skip", "skip"));
    let run = json(&engager(d, &["--json", "run", "--now", T0]));
    assert_eq!(run["tasks"]["opened"], 3, "{run}");

    let overdue = |hours: i64| {
        json(&engager(
            d,
            &["--json", "tasks", "list", "--overdue", "--now", &at(hours)],
        ))
    };
    assert!(overdue(24).as_array().unwrap().is_empty());
    let due_soon = json(&engager(
        d,
        &["--json", "tasks", "list", "--due", "--now", &at(24)],
    ));
    assert_eq!(due_soon.as_array().unwrap().len(), 3, "{due_soon}");
    let late = overdue(72);
    assert_eq!(late.as_array().unwrap().len(), 3, "{late}");
    assert!(late
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["overdue"] == true));

    // The next run handles the deadlines, then plans and sends the fallback emails.
    let run = json(&engager(d, &["--json", "run", "--now", &at(72)]));
    assert_eq!(run["tasks"]["fell_back"], 2, "{run}");
    assert_eq!(run["tasks"]["skipped_at_deadline"], 1, "{run}");
    assert_eq!(run["sent"], 2, "{run}");

    for email in ["ada@lovelace.example", "bob@babbage.example"] {
        let lead = explain(d, email);
        let deliveries = lead["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 2, "{lead}");
        let by = |channel: &str| {
            deliveries
                .iter()
                .find(|x| x["channel"] == channel)
                .unwrap_or_else(|| panic!("no {channel} delivery: {lead}"))
        };
        assert_eq!(by("linkedin")["state"], "cancelled", "{lead}");
        assert_eq!(by("linkedin")["step"], 1);
        assert_eq!(by("email")["state"], "sent", "{lead}");
        assert_eq!(by("email")["step"], 1);
        assert_eq!(lead["enrollments"][0]["current_step"], 2, "{lead}");
    }
    let cy = explain(d, "cy@clarke.example");
    assert_eq!(cy["deliveries"].as_array().unwrap().len(), 1, "{cy}");
    assert_eq!(cy["deliveries"][0]["state"], "cancelled", "{cy}");
    assert_eq!(cy["enrollments"][0]["state"], "active", "{cy}");
    assert_eq!(cy["enrollments"][0]["current_step"], 2, "{cy}");

    let all = json(&engager(
        d,
        &[
            "--json",
            "tasks",
            "list",
            "--state",
            "all",
            "--now",
            &at(73),
        ],
    ));
    let state_of = |profile: &str| task_of(&all, profile)["state"].as_str().unwrap().to_owned();
    assert_eq!(state_of("https://www.linkedin.com/in/ada"), "fell_back");
    assert_eq!(state_of("https://www.linkedin.com/in/bob"), "fell_back");
    assert_eq!(state_of("https://www.linkedin.com/in/cy"), "skipped");
    assert!(task_of(&all, "https://www.linkedin.com/in/cy")["note"]
        .as_str()
        .unwrap()
        .contains("deadline"));
    // Nothing is left to do, and nothing happens twice.
    let run = json(&engager(d, &["--json", "run", "--now", &at(74)]));
    assert_eq!(run["tasks"]["fell_back"], 0, "{run}");
    assert_eq!(run["sent"], 0, "{run}");
}
