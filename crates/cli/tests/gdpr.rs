//! `engager gdpr export|erase|audit` on the quickstart's database, the way an operator
//! answers a data-subject request.

use std::path::Path;

mod common;
use common::{engager, ok};

use engager_domain::DeliveryState;
use engager_store::{DeliveryFilter, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_erase_and_audit_a_person() {
    let dir = tempfile::tempdir().unwrap();
    ok(&engager(dir.path(), &["quickstart", "--seed", "3"]));
    let qs = dir.path().join("engager-quickstart");
    let store = engager_store::open(&format!("sqlite:{}", qs.join("engager.db").display()))
        .await
        .unwrap();
    let store: &dyn Store = store.as_ref();
    // A person who got email (and so has outbox files).
    let sent: Vec<_> = store
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.state == DeliveryState::Sent && d.channel == engager_domain::Channel::Email)
        .collect();
    let lead_id = sent[0].lead_id;
    let lead = store.lead(lead_id).await.unwrap().unwrap();
    let email = lead.profile.email.as_ref().unwrap().to_string();
    let mine: Vec<_> = sent.iter().filter(|d| d.lead_id == lead_id).collect();
    let all_ids: Vec<i64> = store
        .deliveries(&DeliveryFilter {
            lead: Some(lead_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|d| d.id.0)
        .collect();
    let outbox_files = |id: i64| {
        std::fs::read_dir(qs.join("outbox/email"))
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{id:08}-"))
            })
            .count()
    };
    assert!(mine.iter().all(|d| outbox_files(d.id.0) == 1));
    // Every file of the person's messages, on any channel.
    let all_files = || {
        let mut n = 0;
        for channel in ["email", "sms", "linkedin"] {
            let Ok(entries) = std::fs::read_dir(qs.join("outbox").join(channel)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(id) = name[..8.min(name.len())].parse::<i64>() {
                    n += usize::from(all_ids.contains(&id));
                }
            }
        }
        n
    };

    // Export: everything about the person, by email address, to a file.
    ok(&engager(
        &qs,
        &["gdpr", "export", &email, "--out", "export.json"],
    ));
    let export: serde_json::Value =
        serde_json::from_slice(&std::fs::read(qs.join("export.json")).unwrap()).unwrap();
    assert_eq!(export["lead_id"], lead_id.0);
    assert_eq!(export["tables"]["leads"][0]["email"], email.as_str());
    assert_eq!(
        export["tables"]["deliveries"].as_array().unwrap().len(),
        store
            .deliveries(&DeliveryFilter {
                lead: Some(lead_id),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    );

    // Erase needs --yes, then removes the data and the outbox files.
    let files_before = all_files();
    assert!(files_before >= mine.len());
    let refused = engager(&qs, &["gdpr", "erase", &email]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let erased: serde_json::Value = serde_json::from_str(&ok(&engager(
        &qs,
        &[
            "--json",
            "gdpr",
            "erase",
            &email,
            "--yes",
            "--reason",
            "email request #42",
        ],
    )))
    .unwrap();
    assert_eq!(erased["outbox_files_removed"], files_before as u64);
    assert_eq!(all_files(), 0);
    let lead = store.lead(lead_id).await.unwrap().unwrap();
    assert!(lead.profile.email.is_none() && lead.profile.first_name.is_none());
    let db = std::fs::read(qs.join("engager.db")).unwrap();
    assert!(
        !db.windows(email.len()).any(|w| w == email.as_bytes()),
        "the address is gone from the database file"
    );
    // Still suppressed: a re-import of the same person is never contacted.
    let hits = store
        .suppressed(&[engager_store::SuppressionKey::Email(email.clone())])
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    // The lead can no longer be found by its address, and a second erasure is refused.
    let again = engager(&qs, &["gdpr", "erase", &lead_id.0.to_string(), "--yes"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already erased"));

    // The audit log has the export and the erasure, without the address.
    let audit = ok(&engager(&qs, &["--json", "gdpr", "audit"]));
    let log: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["export", "erasure"]);
    assert_eq!(log[1]["detail"], "email request #42");
    assert!(!audit.contains(&email));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_blanks_old_messages_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    ok(&engager(
        dir.path(),
        &["quickstart", "--seed", "3", "--days", "3"],
    ));
    let qs = dir.path().join("engager-quickstart");
    let store = engager_store::open(&format!("sqlite:{}", qs.join("engager.db").display()))
        .await
        .unwrap();
    let store: &dyn Store = store.as_ref();
    let finished = store
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|d| {
            matches!(
                d.state,
                DeliveryState::Sent | DeliveryState::Failed | DeliveryState::Cancelled
            )
        })
        .count();
    assert!(finished > 0);
    // The quickstart's messages are months old, past the 180-day default.
    let rows = |out: &str| -> u64 {
        let doc: serde_json::Value = serde_json::from_str(out).unwrap();
        doc["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["table"] == "deliveries")
            .unwrap()["rows"]
            .as_u64()
            .unwrap()
    };
    let dry = ok(&engager(&qs, &["--json", "gdpr", "retention", "--dry-run"]));
    assert_eq!(rows(&dry), finished as u64);
    let audit = ok(&engager(&qs, &["--json", "gdpr", "audit"]));
    assert_eq!(audit.trim(), "[]", "a dry run is not audited");
    let done = ok(&engager(&qs, &["--json", "gdpr", "retention"]));
    assert_eq!(rows(&done), finished as u64);
    let after = store.deliveries(&DeliveryFilter::default()).await.unwrap();
    assert!(after
        .iter()
        .filter(|d| d.state == DeliveryState::Sent)
        .all(|d| d.body_text.is_empty() && d.subject.is_none()));
    let audit: serde_json::Value = serde_json::from_str(&ok(&engager(
        &qs,
        &["--json", "gdpr", "audit", "--since", "1d"],
    )))
    .unwrap();
    assert_eq!(audit[0]["action"], "retention");
    // A zero-day policy is refused, naming the key.
    let bad = common::engager_env(
        &qs,
        &["gdpr", "retention"],
        &[("ENGAGER_RETENTION__DETAIL_DAYS", "0")],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`retention.detail_days`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppression_lists_import_export_and_hold_queued_sends() {
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().to_path_buf();
    ok(&engager(&qs, &["init"]));
    let campaign =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/campaigns/spring-outreach.toml");
    ok(&engager(
        &qs,
        &["campaign", "add", campaign.to_str().unwrap()],
    ));
    let store = engager_store::open(&format!("sqlite:{}", qs.join("engager.db").display()))
        .await
        .unwrap();
    let store: &dyn Store = store.as_ref();
    // A new lead, planned on a Saturday for the Monday (the campaign's window is weekdays).
    std::fs::write(
        qs.join("new.csv"),
        "email,first_name,company,country,timezone,email_consent\nnina@fresh-four.example,Nina,Fresh Four,DE,Europe/Berlin,webinar signup\n",
    )
    .unwrap();
    ok(&engager(&qs, &["import", "new.csv"]));
    ok(&engager(
        &qs,
        &["enroll", "--campaign", "spring-outreach", "--all"],
    ));
    let mut saturday = chrono::Utc::now().date_naive() + chrono::Duration::days(30);
    while chrono::Datelike::weekday(&saturday) != chrono::Weekday::Sat {
        saturday += chrono::Duration::days(1);
    }
    let saturday = saturday.and_hms_opt(12, 0, 0).unwrap().and_utc();
    ok(&engager(&qs, &["run", "--now", &saturday.to_rfc3339()]));
    let queued: Vec<_> = store
        .deliveries(&DeliveryFilter {
            state: Some(DeliveryState::Planned),
            channel: Some(engager_domain::Channel::Email),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "planned for Monday");
    let target = &queued[0];
    let before = store.suppression_list().await.unwrap().len();

    // A file with a bad row: reported by line; --strict writes nothing.
    std::fs::write(
        qs.join("dnc.csv"),
        format!(
            "email,phone,domain\n{},,\nnot-an-address,,\n,+1 415 555 0101,\n,,@Competitor.Example\n",
            target.to_address.to_uppercase()
        ),
    )
    .unwrap();
    let strict = engager(&qs, &["suppression", "import", "dnc.csv", "--strict"]);
    assert_eq!(strict.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("dnc.csv:3: not-an-address"));
    assert_eq!(store.suppression_list().await.unwrap().len(), before);
    let imported: serde_json::Value = serde_json::from_slice(
        &engager(&qs, &["--json", "suppression", "import", "dnc.csv"]).stdout,
    )
    .unwrap();
    assert_eq!(imported["added"], 3);
    assert_eq!(imported["rejected"][0]["line"], 3);
    let list: serde_json::Value = serde_json::from_str(&ok(&engager(
        &qs,
        &["--json", "suppression", "list", "--kind", "domain"],
    )))
    .unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["value"] == "competitor.example" && s["source"] == "import:dnc.csv"));

    // The queued email to the now-suppressed address is never sent.
    let tuesday = (saturday + chrono::Duration::days(3)).to_rfc3339();
    ok(&engager(&qs, &["run", "--now", &tuesday]));
    let after = store
        .deliveries(&DeliveryFilter {
            lead: Some(target.lead_id),
            ..Default::default()
        })
        .await
        .unwrap();
    let row = after.iter().find(|d| d.id == target.id).unwrap();
    assert_eq!(row.state, DeliveryState::Cancelled, "{row:?}");
    assert!(row
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("suppressed"));

    // Export → import elsewhere round-trips every entry.
    ok(&engager(
        &qs,
        &["suppression", "export", "--out", "all.csv"],
    ));
    let other = tempfile::tempdir().unwrap();
    let other_qs = other.path().to_path_buf();
    ok(&engager(&other_qs, &["init"]));
    std::fs::copy(qs.join("all.csv"), other_qs.join("all.csv")).unwrap();
    ok(&engager(&other_qs, &["suppression", "import", "all.csv"]));
    let exported = |d: &Path| -> Vec<String> {
        let text = ok(&engager(d, &["suppression", "export"]));
        let mut lines: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .collect();
        lines.sort();
        lines
    };
    let mine = exported(&qs);
    let theirs = exported(&other_qs);
    assert!(
        mine.iter().all(|l| theirs.contains(l)),
        "every entry arrives: {mine:?} vs {theirs:?}"
    );

    // A single add guesses the kind and normalizes.
    let added: serde_json::Value = serde_json::from_str(&ok(&engager(
        &qs,
        &[
            "--json",
            "suppression",
            "add",
            "(415) 555-0102",
            "--region",
            "US",
        ],
    )))
    .unwrap();
    assert_eq!(added["kind"], "phone");
    assert_eq!(added["value"], "+14155550102");
}
