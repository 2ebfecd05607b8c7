//! `engager doctor` with the real binary against the Graph and Twilio fakes.

use std::path::Path;
use std::process::Command;

use engager_testkit::graph::{FakeGraph, FakeGraphSetup};
use engager_testkit::twilio::{FakeTwilio, FakeTwilioSetup};
use serde_json::Value;

const SID: &str = "AC0123456789abcdef0123456789abcdef";

fn write_config(
    dir: &Path,
    graph: &FakeGraph,
    twilio: &FakeTwilio,
    secret: &str,
) -> std::path::PathBuf {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/engager.example.toml"),
    )
    .unwrap();
    let config = format!(
        "{example}\n[channels.graph]\ntenant_id = \"contoso.example\"\nclient_id = \"client-1\"\n\
         client_secret = \"{secret}\"\nmailbox = \"maya@acme-analytics.example\"\n\
         authority_url = \"{}\"\ngraph_url = \"{}\"\n\n[channels.twilio]\naccount_sid = \"{SID}\"\n\
         auth_token = \"twilio-token\"\nfrom = \"+14155550123\"\napi_url = \"{}\"\n",
        graph.authority_url(),
        graph.graph_url(),
        twilio.api_url(),
    );
    let path = dir.join("engager.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn doctor(config: &Path) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_engager"))
        .env_remove("ENGAGER_CONFIG")
        .args(["--json", "--config"])
        .arg(config)
        .arg("doctor")
        .output()
        .expect("engager runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), report)
}

fn row<'a>(report: &'a Value, provider: &str) -> &'a Value {
    report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["provider"] == provider)
        .unwrap_or_else(|| panic!("no {provider} row in {report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reports_what_works_and_what_is_misconfigured() {
    let graph = FakeGraph::start(FakeGraphSetup::new(
        "contoso.example",
        "client-1",
        "graph-secret",
        "maya@acme-analytics.example",
    ))
    .await
    .unwrap();
    let twilio = FakeTwilio::start(FakeTwilioSetup::new(SID, "twilio-token"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    let good = write_config(dir.path(), &graph, &twilio, "graph-secret");
    let (success, report) = tokio::task::spawn_blocking(move || doctor(&good))
        .await
        .unwrap();
    assert!(success, "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(row(&report, "graph")["status"], "ok");
    assert_eq!(row(&report, "twilio")["status"], "ok");
    assert_eq!(row(&report, "outbox")["channel"], "linkedin");

    let bad = write_config(dir.path(), &graph, &twilio, "wrong-secret");
    let (success, report) = tokio::task::spawn_blocking(move || doctor(&bad))
        .await
        .unwrap();
    assert!(!success, "{report}");
    let graph_row = row(&report, "graph");
    assert_eq!(graph_row["status"], "misconfigured");
    assert!(
        graph_row["detail"]
            .as_str()
            .unwrap()
            .contains("AADSTS7000215"),
        "{graph_row}"
    );
    assert!(
        !report.to_string().contains("wrong-secret"),
        "the secret leaked: {report}"
    );
    assert_eq!(row(&report, "twilio")["status"], "ok");

    graph.set_roles(&["Mail.ReadWrite"]);
    let no_send = write_config(dir.path(), &graph, &twilio, "graph-secret");
    let (success, report) = tokio::task::spawn_blocking(move || doctor(&no_send))
        .await
        .unwrap();
    assert!(!success);
    assert!(
        row(&report, "graph")["detail"]
            .as_str()
            .unwrap()
            .contains("Mail.Send"),
        "{report}"
    );
}
