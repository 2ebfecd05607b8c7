//! Reliability proofs against a faithful fake of Twilio's Messages API, with the real
//! `engager` binary: SIGKILL at random moments and at named crash points, then the fake's log
//! of accepted messages is compared with the ledger.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use engager_domain::DeliveryState;
use engager_store::DeliveryFilter;
use engager_testkit::twilio::{FakeTwilio, FakeTwilioSetup};

const SID: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "crash-test-auth-token";

/// The binary, configured to send as soon as a delivery is due: no best-hour search and no
/// holidays (set through environment variables, which override engager.toml).
fn engager_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engager"));
    cmd.current_dir(dir)
        .env_remove("ENGAGER_CONFIG")
        .env_remove("ENGAGER_TEST_CRASH_POINTS")
        .env("ENGAGER_BEST_TIME__ENABLED", "false")
        .env("ENGAGER_HOLIDAYS__BUILTIN", "false");
    cmd
}

fn engager(dir: &Path, args: &[&str]) -> std::process::Output {
    engager_cmd(dir).args(args).output().expect("engager runs")
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fixed-offset zone where it is now daytime, so SMS quiet hours do not hold the test up.
fn daytime_zone() -> String {
    let hour = chrono::Timelike::hour(&chrono::Utc::now()) as i32;
    let offset = (13 - hour + 36) % 24 - 12; // local hour 13 (±1 after an hour of testing)
                                             // Etc/GMT signs are inverted: Etc/GMT-5 is UTC+5.
    if offset == 0 {
        "Etc/GMT".into()
    } else if offset > 0 {
        format!("Etc/GMT-{offset}")
    } else {
        format!("Etc/GMT+{}", -offset)
    }
}

/// Writes a configuration sending SMS through the fake, fast leases, no pacing limits.
fn setup(dir: &Path, api_url: &str, leads: usize) {
    ok(engager(dir, &["init"]));
    let cfg = std::fs::read_to_string(dir.join("engager.toml")).unwrap();
    let cfg = cfg
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0")
        .replace("lease_seconds = 300", "lease_seconds = 2")
        .replace("retry_base_seconds = 60", "retry_base_seconds = 1")
        .replace("retry_max_seconds = 3600", "retry_max_seconds = 2")
        .replace("tick_seconds = 60", "tick_seconds = 1")
        .replace(
            "per_second = 1             # a long-code",
            "per_second = 10000       # a long-code",
        )
        .replace("daily_cap = 2000", "daily_cap = 1000000")
        .replace(
            "enabled = [\"email\", \"sms\", \"linkedin\"]",
            "enabled = [\"sms\"]",
        );
    let cfg = format!(
        "{cfg}\n[channels.twilio]\naccount_sid = \"{SID}\"\nauth_token = \"{TOKEN}\"\nfrom = \"+14155550123\"\napi_url = \"{api_url}\"\nrequest_timeout_secs = 5\n"
    );
    std::fs::write(dir.join("engager.toml"), cfg).unwrap();
    let zone = daytime_zone();
    // Each number opted in to texts (TCPA: prior express consent).
    let mut csv = String::from("email,first_name,phone,timezone,sms_consent\n");
    for i in 0..leads {
        csv.push_str(&format!(
            "lead{i}@crash.example,Lead{i},+1212736{i:04},{zone},signup form\n"
        ));
    }
    std::fs::write(dir.join("leads.csv"), csv).unwrap();
    std::fs::write(
        dir.join("sms.toml"),
        "slug = \"sms\"\nname = \"SMS\"\n[window]\ndays = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]\nstart = \"00:00\"\nend = \"23:59\"\n\
         [[steps]]\nname = \"hello\"\nchannels = [\"sms\"]\nbody = \"Hi {{ lead.first_name }}, a quick question from Acme.\"\n",
    )
    .unwrap();
    ok(engager(dir, &["import", "leads.csv"]));
    ok(engager(dir, &["campaign", "add", "sms.toml"]));
    ok(engager(dir, &["enroll", "--campaign", "sms", "--all"]));
}

fn pending(states: &HashMap<DeliveryState, usize>) -> usize {
    [
        DeliveryState::Planned,
        DeliveryState::Claimed,
        DeliveryState::Sending,
        DeliveryState::RetryWait,
    ]
    .iter()
    .map(|s| states.get(s).copied().unwrap_or(0))
    .sum()
}

async fn ledger(
    dir: &Path,
) -> (
    Vec<engager_store::DeliveryRecord>,
    HashMap<DeliveryState, usize>,
) {
    let store = engager_store::open(&format!("sqlite:{}", dir.join("engager.db").display()))
        .await
        .unwrap();
    let rows = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    let mut states = HashMap::new();
    for d in &rows {
        *states.entry(d.state).or_insert(0) += 1;
    }
    (rows, states)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_sends_nothing_twice() {
    const LEADS: usize = 2000;
    let mut setup_fake = FakeTwilioSetup::new(SID, TOKEN);
    setup_fake.latency = Duration::from_millis(8);
    let fake = FakeTwilio::start(setup_fake).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, fake.api_url(), LEADS);

    // Kill the daemon again and again: at random moments, and at the named crash points
    // (after claim, after the row is `sending` but before the request, after the provider
    // answered but before the outcome is recorded).
    let mut kills = 0;
    let mut aborts = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..26 {
        let mut cmd = engager_cmd(d);
        cmd.args(["run", "--daemon"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if round % 2 == 1 {
            cmd.env(
                "ENGAGER_TEST_CRASH_POINTS",
                "after_claim:0.01,after_begin_send:0.01,after_response:0.01",
            );
        }
        let mut child = cmd.spawn().unwrap();
        let wait_ms = 150 + next() % 600;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        match child.try_wait().unwrap() {
            Some(_) => aborts += 1,
            None => {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
        }
        child.wait().unwrap();
    }
    assert!(kills + aborts >= 20, "{kills} kills + {aborts} aborts");

    // Let leases expire and finish the work with a well-behaved run.
    let mut states = HashMap::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        ok(engager(d, &["run"]));
        let (_, s) = ledger(d).await;
        states = s;
        if pending(&states) == 0 {
            break;
        }
    }
    let (rows, _) = ledger(d).await;
    assert_eq!(rows.len(), LEADS, "one ledger row per lead and step");
    assert_eq!(pending(&states), 0, "rows still pending: {states:?}");

    // The oracle: what the provider accepted.
    let accepted = fake.accepted();
    let mut per_number: HashMap<String, Vec<String>> = HashMap::new();
    for m in &accepted {
        per_number
            .entry(m.to.clone())
            .or_default()
            .push(m.sid.clone());
    }
    let duplicates: Vec<_> = per_number
        .iter()
        .filter(|(_, sids)| sids.len() > 1)
        .collect();
    assert!(
        duplicates.is_empty(),
        "{} numbers got the message twice: {:?}",
        duplicates.len(),
        duplicates.iter().take(5).collect::<Vec<_>>()
    );
    let mut unknown_accepted = 0;
    for row in &rows {
        let at_fake = per_number.get(&row.to_address);
        match row.state {
            DeliveryState::Sent => {
                let sids = at_fake.unwrap_or_else(|| {
                    panic!("delivery {} is sent but the provider never got it", row.id)
                });
                assert_eq!(
                    row.provider_ref.as_deref(),
                    Some(sids[0].as_str()),
                    "delivery {}",
                    row.id
                );
            }
            DeliveryState::Unknown => unknown_accepted += usize::from(at_fake.is_some()),
            DeliveryState::Failed | DeliveryState::Cancelled => {
                assert!(
                    at_fake.is_none(),
                    "delivery {} is {} but the provider accepted it",
                    row.id,
                    row.state
                )
            }
            other => panic!("delivery {} left in {other}", row.id),
        }
    }
    let sent = states.get(&DeliveryState::Sent).copied().unwrap_or(0);
    let unknown = states.get(&DeliveryState::Unknown).copied().unwrap_or(0);
    eprintln!(
        "crash test: {kills} SIGKILLs + {aborts} crash-point aborts; {sent} sent, {unknown} unknown ({unknown_accepted} of them accepted by the provider), {} accepted in all, 0 duplicates",
        accepted.len()
    );
    assert_eq!(
        sent + unknown_accepted,
        accepted.len(),
        "every accepted message is `sent` or, if its answer was lost, `unknown`"
    );
    assert!(
        sent > LEADS / 2,
        "most deliveries should go out: {states:?}"
    );
    // The person's side: an unknown delivery is listed and can be resolved.
    let listed: serde_json::Value =
        serde_json::from_str(&ok(engager(d, &["deliveries", "unknown", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), unknown.min(100));
    if let Some(first) = listed.as_array().unwrap().first() {
        let id = first["id"].as_i64().unwrap().to_string();
        ok(engager(d, &["deliveries", "resolve", &id, "--drop"]));
        let again = engager(d, &["deliveries", "resolve", &id, "--sent"]);
        assert!(
            !again.status.success(),
            "a resolved delivery cannot be resolved again"
        );
    }
}

/// Two dispatchers on one database never send the same delivery twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_on_one_database_send_each_message_once() {
    const LEADS: usize = 600;
    let mut setup_fake = FakeTwilioSetup::new(SID, TOKEN);
    setup_fake.latency = Duration::from_millis(5);
    let fake = FakeTwilio::start(setup_fake).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, fake.api_url(), LEADS);
    let spawn = || {
        engager_cmd(d)
            .args(["run", "--daemon"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if fake.accepted().len() >= LEADS {
            break;
        }
    }
    for child in [&mut a, &mut b] {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
    }
    let accepted = fake.accepted();
    let mut seen = std::collections::HashSet::new();
    for m in &accepted {
        assert!(seen.insert(m.to.clone()), "{} got two messages", m.to);
    }
    assert_eq!(accepted.len(), LEADS);
    let (_, states) = ledger(d).await;
    assert_eq!(
        states.get(&DeliveryState::Sent).copied(),
        Some(LEADS),
        "{states:?}"
    );
}
