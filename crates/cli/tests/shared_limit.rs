//! Two `engager run --daemon` processes on one SQLite file with `[limits] shared = true`
//! send through the Twilio fake: together they keep to the one SMS rate (4 per second), and
//! the fake receives every message exactly once.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engager_domain::DeliveryState;
use engager_store::DeliveryFilter;
use engager_testkit::twilio::{FakeTwilio, FakeTwilioSetup};

const SID: &str = "AC00000000000000000000000000000002";
const TOKEN: &str = "shared-limit-auth-token";
const PER_SECOND: usize = 4;
const LEADS: usize = 24;

fn engager_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engager"));
    cmd.current_dir(dir)
        .env_remove("ENGAGER_CONFIG")
        .env_remove("ENGAGER_TEST_CRASH_POINTS")
        .env("ENGAGER_BEST_TIME__ENABLED", "false")
        .env("ENGAGER_HOLIDAYS__BUILTIN", "false");
    cmd
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

fn engager(dir: &Path, args: &[&str]) -> String {
    ok(engager_cmd(dir).args(args).output().expect("engager runs"))
}

/// A fixed-offset zone where it is now early afternoon, so SMS quiet hours do not interfere.
fn daytime_zone() -> String {
    let hour = chrono::Timelike::hour(&chrono::Utc::now()) as i32;
    let offset = (13 - hour + 36) % 24 - 12;
    if offset == 0 {
        "Etc/GMT".into()
    } else if offset > 0 {
        format!("Etc/GMT-{offset}")
    } else {
        format!("Etc/GMT+{}", -offset)
    }
}

fn setup(dir: &Path, api_url: &str) {
    engager(dir, &["init"]);
    let cfg = std::fs::read_to_string(dir.join("engager.toml")).unwrap();
    for needle in [
        "shared = false",
        "per_second = 1             # a long-code",
        "batch_size = 500",
    ] {
        assert!(
            cfg.contains(needle),
            "the example configuration lost {needle:?}"
        );
    }
    let cfg = cfg
        .replace("shared = false", "shared = true")
        .replace("max_jitter_minutes = 90", "max_jitter_minutes = 0")
        .replace("tick_seconds = 60", "tick_seconds = 1")
        // Small claims, so both daemons hold work at the same time.
        .replace("batch_size = 500", "batch_size = 2")
        .replace(
            "per_second = 1             # a long-code",
            &format!("per_second = {PER_SECOND}             # a long-code"),
        )
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
    for i in 0..LEADS {
        csv.push_str(&format!(
            "lead{i}@shared.example,Lead{i},+1212736{i:04},{zone},signup form\n"
        ));
    }
    std::fs::write(dir.join("leads.csv"), csv).unwrap();
    std::fs::write(
        dir.join("sms.toml"),
        "slug = \"sms\"\nname = \"SMS\"\n[window]\ndays = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"]\nstart = \"00:00\"\nend = \"23:59\"\n\
         [[steps]]\nname = \"hello\"\nchannels = [\"sms\"]\nbody = \"Hi {{ lead.first_name }}, a quick question from Acme.\"\n",
    )
    .unwrap();
    engager(dir, &["import", "leads.csv"]);
    engager(dir, &["campaign", "add", "sms.toml"]);
    engager(dir, &["enroll", "--campaign", "sms", "--all"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_one_rate_limit_and_send_nothing_twice() {
    let fake = FakeTwilio::start(FakeTwilioSetup::new(SID, TOKEN))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, fake.api_url());
    let mut daemons: Vec<_> = (0..2)
        .map(|_| {
            engager_cmd(d)
                .args(["run", "--daemon"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // The fake's log, sampled every 5 ms: when each accepted message appeared.
    let started = Instant::now();
    let mut seen_at: Vec<Duration> = Vec::new();
    while seen_at.len() < LEADS && started.elapsed() < Duration::from_secs(90) {
        let n = fake.accepted().len();
        while seen_at.len() < n {
            seen_at.push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for daemon in &mut daemons {
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    }
    let accepted = fake.accepted();
    assert_eq!(accepted.len(), LEADS, "every SMS went out");
    let mut per_number: HashMap<&str, usize> = HashMap::new();
    for m in &accepted {
        *per_number.entry(m.to.as_str()).or_default() += 1;
    }
    assert!(per_number.values().all(|n| *n == 1), "0 duplicates");
    // Permits are spaced 250 ms apart in the database; what the fake sees also carries each
    // request's own delay (process scheduling, HTTP) and this loop's 5 ms sampling. So: at
    // most PER_SECOND in any window of one second less 150 ms of such jitter, and never more
    // than one extra in a full second. (Two in-process limiters would allow 8 a second.)
    let most_within = |window: Duration| {
        let mut worst = 0;
        for (i, t) in seen_at.iter().enumerate() {
            let n = seen_at[i..]
                .iter()
                .take_while(|u| **u < *t + window)
                .count();
            worst = worst.max(n);
        }
        worst
    };
    let worst = most_within(Duration::from_millis(850));
    assert!(
        worst <= PER_SECOND,
        "{worst} SMS within 850 ms; the shared limit is {PER_SECOND}/s"
    );
    let worst_second = most_within(Duration::from_secs(1));
    assert!(
        worst_second <= PER_SECOND + 1,
        "{worst_second} SMS within one second; the shared limit is {PER_SECOND}/s"
    );
    let span = *seen_at.last().unwrap() - seen_at[0];
    let floor = Duration::from_millis((1000 / PER_SECOND as u64) * (LEADS as u64 - 1) - 300);
    assert!(
        span >= floor,
        "{LEADS} SMS in {span:?}, faster than {PER_SECOND}/s"
    );
    // Both daemons sent.
    let store = engager_store::open(&format!("sqlite:{}", d.join("engager.db").display()))
        .await
        .unwrap();
    let rows = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    assert!(rows.iter().all(|r| r.state == DeliveryState::Sent));
    let workers: std::collections::HashSet<_> =
        rows.iter().filter_map(|r| r.claimed_by.clone()).collect();
    assert_eq!(workers.len(), 2, "both daemons sent: {workers:?}");
    eprintln!(
        "two daemons, shared limit {PER_SECOND}/s: {LEADS} SMS in {span:?}, at most {worst} in any 850 ms and {worst_second} in any second, 0 duplicates"
    );
}
