//! End to end: `engager run` with `[ai]` pointed at the fake OpenAI-compatible server writes
//! AI text to the outbox, and a re-run of the same plan reuses the cache (the fake sees no new
//! request). Also `engager preview`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use engager_testkit::openai::FakeOpenAi;

const KEY: &str = "sk-e2e-test";

fn engager(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engager"))
        .args(args)
        .current_dir(dir)
        .env_remove("ENGAGER_CONFIG")
        .env("ENGAGER_AI__API_KEY", KEY)
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

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn project(dir: &Path, base_url: &str) {
    ok(&engager(dir, &["init"]));
    let brand = examples().join("brand");
    let cfg = std::fs::read_to_string(dir.join("engager.toml"))
        .unwrap()
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0")
        // The company documented its legitimate interest (GDPR) for B2B email to EU leads.
        .replace(
            "# legitimate_interest_reference = ",
            "legitimate_interest_reference = ",
        )
        .replace(
            "enabled = false\nbase_url = \"https://api.openai.com/v1\"",
            &format!("enabled = true\nbase_url = \"{base_url}\""),
        )
        .replace("model = \"gpt-4o-mini\"", "model = \"gpt-test\"")
        .replace(
            "# voice_file = \"examples/brand/voice.md\"",
            &format!("voice_file = \"{}\"", brand.join("voice.md").display()),
        )
        .replace(
            "# knowledge_file = \"examples/brand/knowledge.md\"",
            &format!(
                "knowledge_file = \"{}\"",
                brand.join("knowledge.md").display()
            ),
        );
    assert!(
        cfg.contains("enabled = true\nbase_url"),
        "the [ai] section changed shape"
    );
    std::fs::write(dir.join("engager.toml"), cfg).unwrap();
    let campaign = dir.join("hello.toml");
    std::fs::write(
        &campaign,
        r#"
slug = "hello"
name = "Hello"
best_time = false
[window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "23:59"
[[steps]]
name = "intro"
channels = ["email"]
subject = "Hello {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}, a short note about {{ lead.company }}."
"#,
    )
    .unwrap();
    let leads = examples().join("leads.csv");
    ok(&engager(dir, &["import", leads.to_str().unwrap()]));
    ok(&engager(
        dir,
        &["campaign", "add", campaign.to_str().unwrap()],
    ));
    ok(&engager(
        dir,
        &["enroll", "--campaign", "hello", "--filter", "country=GB"],
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_writes_ai_text_and_a_replan_reuses_the_cache() {
    let fake = FakeOpenAi::start(Some(KEY), &["gpt-test"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    project(d, fake.base_url());

    // Planning (a dry run) drafts every message once.
    let dry = json(&engager(d, &["run", "--dry-run", "--json"]));
    let planned = dry["would_plan"].as_array().unwrap().len() as u64;
    assert!(planned > 5, "{dry}");
    assert_eq!(dry["ai"]["generated"], planned, "{dry}");
    assert_eq!(dry["ai"]["accepted"], planned, "{dry}");
    assert_eq!(dry["ai"]["cache_hits"], 0, "{dry}");
    let calls = fake.request_count() as u64;
    assert_eq!(calls, planned);
    for p in dry["would_plan"].as_array().unwrap() {
        assert!(
            p["summary"]
                .as_str()
                .unwrap()
                .starts_with("A faster week for"),
            "{p}"
        );
    }
    // Every request carried the brand voice, the knowledge and the lead.
    let first = &fake.requests()[0].body;
    let system = first["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("how we write") && system.contains("Proof points"));
    let user = first["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("- first_name: ") && user.contains("step 1 of 1"));

    // The real run plans the same messages: all from the cache, no new model call.
    let run = json(&engager(d, &["run", "--json"]));
    assert_eq!(run["planned"], planned, "{run}");
    assert_eq!(run["sent"], planned, "{run}");
    assert_eq!(run["ai"]["cache_hits"], planned, "{run}");
    assert_eq!(run["ai"]["generated"], 0, "{run}");
    assert_eq!(
        fake.request_count() as u64,
        calls,
        "the fake saw a new request"
    );

    // The outbox holds the AI text, with the compliance footer the planner adds.
    let mut files = 0;
    for entry in std::fs::read_dir(d.join("outbox/email")).unwrap() {
        // Undo quoted-printable soft line breaks.
        let text = std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .replace("=\r\n", "")
            .replace("=\n", "");
        assert!(text.contains("A faster week for"), "{text}");
        assert!(text.contains("stitching reports together"), "{text}");
        assert!(
            !text.contains("a short note about"),
            "template text sent: {text}"
        );
        assert!(text.contains("Unsubscribe"), "{text}");
        files += 1;
    }
    assert_eq!(files as u64, planned);

    // explain shows the AI outcome in the personalization gate.
    let listed = json(&engager(
        d,
        &["outbox", "list", "--state", "sent", "--json"],
    ));
    let email = listed[0]["to"].as_str().unwrap().to_owned();
    let explained = ok(&engager(d, &["explain", &email]));
    assert!(
        explained.contains("AI draft accepted (score 1.00"),
        "{explained}"
    );
    assert!(
        explained.contains("Insights: 1 message(s) sent; 0 open(s)"),
        "{explained}"
    );

    // preview: the lead's history changed (one message sent), so the inputs and the key are
    // new. The fake writes the same text again, which the gate's novelty check refuses twice
    // (draft and regeneration): the template is the outcome, and it is cached too.
    let args = [
        "preview",
        "--lead",
        &email,
        "--campaign",
        "hello",
        "--step",
        "1",
        "--json",
    ];
    let shown = json(&engager(d, &args));
    assert_eq!(shown["source"], "model", "{shown}");
    assert_eq!(shown["outcome"]["outcome"], "fallback", "{shown}");
    assert_eq!(shown["outcome"]["code"], "gate_failed", "{shown}");
    assert!(shown["outcome"]["reason"]
        .as_str()
        .unwrap()
        .contains("novelty: 100% the same as the previous message"));
    assert_eq!(shown["insights"]["messages_sent"], 1, "{shown}");
    assert!(shown["prompt"]["user"]
        .as_str()
        .unwrap()
        .contains("earlier: "));
    assert_eq!(fake.request_count() as u64, calls + 2);
    let again = json(&engager(d, &args));
    assert_eq!(again["source"], "cache", "{again}");
    assert_eq!(again["cache_key"], shown["cache_key"]);
    assert_eq!(fake.request_count() as u64, calls + 2);
    let text = ok(&engager(d, &args[..7]));
    for part in [
        "Insights:",
        "--- system ---",
        "--- user ---",
        "Checks (score 0.86)",
        "✓ links",
        "✗ novelty",
        "Template (the fallback):",
        "Nothing was planned or sent.",
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_keeps_failing_the_gate_falls_back_to_the_template() {
    let fake = FakeOpenAi::start(Some(KEY), &[]).await.unwrap();
    fake.respond_with(|_| {
        engager_testkit::openai::Reply::Json(serde_json::json!({
            "subject": "Re: our call",
            "body": "ACT NOW!!! Visit https://spam.example to claim your prize, it is guaranteed.",
            "rationale": "bad"
        }))
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    project(d, fake.base_url());
    let run = json(&engager(d, &["run", "--json", "--limit", "3"]));
    assert_eq!(run["planned"], 3, "{run}");
    assert_eq!(run["ai"]["fallbacks"], 3, "{run}");
    // Two calls each: the first draft and the regeneration with the failures fed back.
    assert_eq!(fake.request_count(), 6);
    for entry in std::fs::read_dir(d.join("outbox/email")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .replace("=\r\n", "")
            .replace("=\n", "");
        assert!(text.contains("a short note about"), "{text}");
        assert!(!text.contains("spam.example"), "{text}");
    }
}

/// Review mode: AI text waits for a person; approve, edit (checked), reject (template) and
/// drop each do what they say, and nothing unreviewed is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_mode_holds_ai_text_until_a_person_decides() {
    let fake = FakeOpenAi::start(Some(KEY), &["gpt-test"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    project(d, fake.base_url());
    let campaign = d.join("hello.toml");
    let text = std::fs::read_to_string(&campaign).unwrap();
    std::fs::write(
        &campaign,
        text.replace("best_time = false", "best_time = false\nreview = true")
            .replace(
                "name = \"intro\"",
                "name = \"intro\"\nangle = \"a question about their week\"",
            ),
    )
    .unwrap();
    ok(&engager(
        d,
        &["campaign", "add", campaign.to_str().unwrap()],
    ));

    let run = json(&engager(d, &["run", "--json"]));
    let planned = run["planned"].as_u64().unwrap();
    assert!(planned >= 4, "{run}");
    let user = fake.requests()[0].body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        user.contains("Angle for this message: a question about their week"),
        "the step's angle reaches the model: {user}"
    );
    assert_eq!(run["sent"], 0, "nothing unreviewed is sent: {run}");
    let list = json(&engager(d, &["review", "list", "--json"]));
    let held = list.as_array().unwrap();
    assert_eq!(held.len() as u64, planned);
    assert!(held[0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("A faster week for"));
    let ids: Vec<String> = held.iter().map(|h| h["id"].to_string()).collect();

    // Approve as written; edit with a broken text (refused), then a good one; reject to the
    // template; drop the last.
    ok(&engager(d, &["review", "approve", &ids[0]]));
    let bad = engager(
        d,
        &[
            "review",
            "edit",
            &ids[1],
            "--body",
            "Hi {{ lead.first_name }}",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fails the content checks"));
    ok(&engager(
        d,
        &[
            "review",
            "edit",
            &ids[1],
            "--subject",
            "A note for you",
            "--body",
            "Hello, a short note from us.",
        ],
    ));
    ok(&engager(d, &["review", "reject", &ids[2]]));
    ok(&engager(
        d,
        &[
            "review",
            "reject",
            &ids[3],
            "--drop",
            "--reason",
            "off-brand",
        ],
    ));
    let again = engager(d, &["review", "approve", &ids[3]]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not waiting for review"));

    let run = json(&engager(d, &["run", "--json"]));
    assert_eq!(run["sent"], 3, "approved, edited and template: {run}");
    let outbox = d.join("outbox/email");
    let mut texts = Vec::new();
    for e in std::fs::read_dir(&outbox).unwrap().flatten() {
        texts.push(
            String::from_utf8(std::fs::read(e.path()).unwrap())
                .unwrap()
                .replace("=\r\n", "")
                .replace("\r\n", "\n"),
        );
    }
    assert_eq!(texts.len(), 3);
    assert!(texts.iter().any(
        |t| t.contains("Subject: A note for you") && t.contains("Hello, a short note from us.")
    ));
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Subject: Hello ") && t.contains("a short note about")),
        "the template went out for the rejected one"
    );
    assert!(
        texts.iter().all(|t| t.contains("Unsubscribe")),
        "every message has its footer"
    );
    let left = json(&engager(d, &["review", "list", "--json"]));
    assert_eq!(left.as_array().unwrap().len() as u64, planned - 4);
}
