//! Through the binary: replies classified by hand change the report's positive replies and
//! take effect (an unsubscribe request suppresses the address); A/B winners promoted and reset
//! by hand show in `ab list` and `ab results`, with clear errors for bad input.

use std::path::Path;

mod common;
use common::{engager_env, ok};

use serde_json::Value;

/// The binary with no holidays and no best-hour search, so sends go out today whatever the
/// date.
fn engager(dir: &Path, args: &[&str]) -> std::process::Output {
    engager_env(
        dir,
        args,
        &[
            ("ENGAGER_HOLIDAYS__BUILTIN", "false"),
            ("ENGAGER_BEST_TIME__ENABLED", "false"),
        ],
    )
}

fn json_ok(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(&engager(dir, args))).expect("--json prints JSON")
}

fn setup(d: &Path) {
    ok(&engager(d, &["init"]));
    let cfg = std::fs::read_to_string(d.join("engager.toml"))
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0");
    std::fs::write(d.join("engager.toml"), cfg).unwrap();
    let mut csv = String::from("email,first_name,country,time_zone\n");
    for i in 0..6 {
        csv.push_str(&format!(
            "lead{i}@northwind.example,L{i},US,America/Chicago\n"
        ));
    }
    std::fs::write(d.join("leads.csv"), csv).unwrap();
    std::fs::write(
        d.join("ab.toml"),
        "slug = \"ab\"\nname = \"AB\"\nbest_time = false\n[window]\ndays = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]\nstart = \"00:00\"\nend = \"23:59\"\n\
         [[steps]]\nname = \"hello\"\nchannels = [\"email\"]\nsubject = \"Hello {{ lead.first_name }}\"\nbody = \"Hi {{ lead.first_name }}.\"\n\
         [[steps.variants]]\nname = \"a\"\n[[steps.variants]]\nname = \"b\"\nsubject = \"Quick idea, {{ lead.first_name }}\"\n\
         [steps.experiment]\nmode = \"bandit\"\nauto_promote = true\n",
    )
    .unwrap();
    ok(&engager(d, &["import", "leads.csv"]));
    ok(&engager(d, &["campaign", "add", "ab.toml"]));
    ok(&engager(d, &["enroll", "--campaign", "ab", "--all"]));
    let ran = json_ok(d, &["run", "--json"]);
    assert_eq!(ran["sent"], 6, "{ran}");
}

fn totals(d: &Path) -> (u64, u64) {
    let r = json_ok(d, &["report", "--since", "2000-01-01", "--json"]);
    (
        r["total"]["replied"].as_u64().unwrap(),
        r["total"]["positive_replies"].as_u64().unwrap(),
    )
}

#[test]
fn replies_classified_by_hand_change_the_figures_and_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    for i in [0, 1] {
        ok(&engager(
            d,
            &["event", &format!("lead{i}@northwind.example"), "replied"],
        ));
    }
    assert_eq!(totals(d), (2, 2), "unclassified replies count as positive");
    let replies = json_ok(d, &["reply", "list", "--json"]);
    assert_eq!(replies.as_array().unwrap().len(), 2, "{replies}");
    assert!(replies[0]["class"].is_null());
    let event = replies[0]["event_id"].as_i64().unwrap().to_string();
    let done = json_ok(
        d,
        &[
            "reply",
            "classify",
            &event,
            "neutral",
            "--note",
            "asked who we are",
            "--json",
        ],
    );
    assert_eq!(done["class"], "neutral");
    assert!(done["previous"].is_null());
    assert_eq!(
        totals(d),
        (2, 1),
        "a neutral reply is a reply, not a positive one"
    );
    let listed = json_ok(d, &["reply", "list", "--json"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event_id"].as_i64() == event.parse().ok())
        .unwrap();
    assert_eq!(
        (
            row["class"].as_str(),
            row["classified_by"].as_str(),
            row["reason"].as_str()
        ),
        (Some("neutral"), Some("person"), Some("asked who we are"))
    );
    // The other lead's latest reply, by lead id: an unsubscribe request.
    let other = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event_id"].as_i64() != event.parse().ok())
        .unwrap();
    let lead = other["lead_id"].to_string();
    let unsub = json_ok(
        d,
        &[
            "reply",
            "classify",
            "--lead",
            &lead,
            "unsubscribe",
            "--json",
        ],
    );
    assert_eq!(unsub["suppressed"], true, "{unsub}");
    assert_eq!(unsub["kind"], "negative_reply");
    let r = json_ok(d, &["report", "--since", "2000-01-01", "--json"]);
    assert_eq!(r["total"]["positive_replies"], 0, "{r}");
    assert_eq!(r["total"]["unsubscribed"], 1, "{r}");
    // Bad input: a clear error naming what is wrong.
    let out = engager(d, &["reply", "classify", "999999", "positive"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reply event 999999 not found"), "{err}");
    let out = engager(d, &["reply", "classify", &event, "meh"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown reply class \"meh\""),
        "{err}"
    );
}

#[test]
fn a_winner_is_promoted_and_reset_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let listed = json_ok(d, &["ab", "list", "--json"]);
    assert_eq!(listed[0]["mode"], "bandit");
    assert_eq!(listed[0]["auto_promote"], true);
    assert!(listed[0]["decision"].is_null(), "{listed}");
    let promoted = json_ok(
        d,
        &[
            "ab",
            "promote",
            "ab",
            "1",
            "b",
            "--note",
            "sales prefers it",
            "--json",
        ],
    );
    assert_eq!(promoted["experiment"], "ab#1");
    assert_eq!(promoted["decision"]["state"], "promoted");
    assert_eq!(promoted["decision"]["variant"], "b");
    assert_eq!(promoted["decision"]["source"], "person");
    let results = json_ok(d, &["ab", "results", "ab", "--json"]);
    assert_eq!(results[0]["decision"]["variant"], "b", "{results}");
    let text = ok(&engager(d, &["ab", "results", "ab"]));
    assert!(
        text.contains("Decision: variant b promoted by hand"),
        "{text}"
    );
    let reset = json_ok(d, &["ab", "reset", "ab", "1", "--json"]);
    assert_eq!(reset["decision"]["state"], "reset");
    assert!(reset["decision"]["variant"].is_null());
    let listed = json_ok(d, &["ab", "list", "--json"]);
    assert_eq!(listed[0]["decision"]["state"], "reset");
    for (args, expected) in [
        (
            vec!["ab", "promote", "ab", "1", "zzz"],
            "experiment ab#1 has no variant \"zzz\" (its variants: a, b)",
        ),
        (
            vec!["ab", "promote", "ab", "2", "a"],
            "campaign ab has no step 2 (it has 1)",
        ),
        (
            vec!["ab", "reset", "nope", "1"],
            "\"nope\" is not a known campaign",
        ),
    ] {
        let out = engager(d, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expected),
            "{args:?}: {err}"
        );
    }
}
