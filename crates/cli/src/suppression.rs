//! `engager suppression list|add|import|export`: the do-not-contact list of email addresses,
//! phone numbers and whole domains, kept as normalized values.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use chrono::Utc;
use clap::Subcommand;
use engager_domain::{CountryCode, EmailAddress, PhoneE164};
use engager_store::{SuppressionKey, SuppressionRecord};
use serde_json::json;

use crate::commands::App;
use crate::output::{print_json, table, when};

/// `engager suppression`
#[derive(Debug, Subcommand)]
pub enum SuppressionCommand {
    /// The list (optionally one kind).
    List {
        /// Only email, phone or domain entries.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Add one entry: an email address, a phone number (E.164, or national with --region)
    /// or a domain (`@example.com` or `--kind domain`).
    Add {
        /// The value.
        value: String,
        /// email, phone or domain (guessed from the value when omitted).
        #[arg(long)]
        kind: Option<String>,
        /// Why.
        #[arg(long, default_value = "manual")]
        reason: String,
        /// Region of national phone numbers (e.g. US).
        #[arg(long)]
        region: Option<String>,
    },
    /// Import a CSV: `kind,value[,reason,source]` (the export's format), or columns named
    /// `email`, `phone` and/or `domain`. Every bad row is reported with its line.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Reason recorded for rows without one.
        #[arg(long, default_value = "imported")]
        reason: String,
        /// Region of national phone numbers (e.g. US).
        #[arg(long)]
        region: Option<String>,
        /// Write nothing when any row is bad.
        #[arg(long)]
        strict: bool,
    },
    /// Export the whole list as CSV (`kind,value,reason,source,created_at`).
    Export {
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Parses and normalizes one value of a kind (or guesses the kind).
fn parse_key(
    kind: Option<&str>,
    raw: &str,
    region: Option<&CountryCode>,
) -> Result<SuppressionKey, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("empty value".into());
    }
    let kind = match kind.map(|k| k.trim().to_ascii_lowercase()) {
        Some(k) if !k.is_empty() => k,
        _ if raw.starts_with('@') => "domain".into(),
        _ if raw.contains('@') => "email".into(),
        _ if raw.starts_with('+')
            || raw
                .chars()
                .all(|c| c.is_ascii_digit() || " -().".contains(c)) =>
        {
            "phone".into()
        }
        _ => "domain".into(),
    };
    match kind.as_str() {
        "email" => EmailAddress::parse(raw)
            .map(|e| SuppressionKey::Email(e.as_str().to_owned()))
            .map_err(|e| e.to_string()),
        "phone" => PhoneE164::parse(raw, region)
            .map(|p| SuppressionKey::Phone(p.as_str().to_owned()))
            .map_err(|e| e.to_string()),
        "domain" => {
            let d = raw
                .trim_start_matches('@')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let ok = d.contains('.')
                && d.len() <= 253
                && d.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if ok {
                Ok(SuppressionKey::Domain(d))
            } else {
                Err(format!("{raw:?} is not a domain name"))
            }
        }
        other => Err(format!(
            "unknown kind {other:?}: expected email, phone or domain"
        )),
    }
}

fn region(arg: Option<&str>) -> Result<Option<CountryCode>> {
    arg.map(|r| CountryCode::parse(r).map_err(|e| anyhow::anyhow!("--region {r:?}: {e}")))
        .transpose()
}

pub async fn run(app: &App, command: SuppressionCommand, json: bool) -> Result<ExitCode> {
    let now = Utc::now();
    match command {
        SuppressionCommand::List { kind } => {
            if let Some(k) = &kind {
                if !["email", "phone", "domain"].contains(&k.as_str()) {
                    bail!("--kind {k:?}: expected email, phone or domain");
                }
            }
            let list: Vec<SuppressionRecord> = app
                .store
                .suppression_list()
                .await?
                .into_iter()
                .filter(|s| kind.as_deref().is_none_or(|k| s.key.kind() == k))
                .collect();
            if json {
                print_json(&json!(list
                    .iter()
                    .map(|s| json!({"kind": s.key.kind(), "value": s.key.value(), "reason": s.reason, "source": s.source, "created_at": s.created_at.to_rfc3339()}))
                    .collect::<Vec<_>>()));
            } else {
                let mut t = table(&["Kind", "Value", "Reason", "Source", "Since"]);
                for s in &list {
                    t.add_row(vec![
                        s.key.kind().to_owned(),
                        s.key.value().to_owned(),
                        s.reason.clone(),
                        s.source.clone(),
                        when(s.created_at),
                    ]);
                }
                println!("{t}\n{} entr(ies).", list.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        SuppressionCommand::Add {
            value,
            kind,
            reason,
            region: r,
        } => {
            let key = parse_key(kind.as_deref(), &value, region(r.as_deref())?.as_ref())
                .map_err(|e| anyhow::anyhow!("{value:?}: {e}"))?;
            let added = app.store.add_suppression(&key, &reason, "cli", now).await?;
            if json {
                print_json(&json!({"kind": key.kind(), "value": key.value(), "added": added}));
            } else if added {
                println!(
                    "Suppressed {} {}: nothing more goes to it, in any campaign.",
                    key.kind(),
                    key.value()
                );
            } else {
                println!("{} {} was already suppressed.", key.kind(), key.value());
            }
            Ok(ExitCode::SUCCESS)
        }
        SuppressionCommand::Import {
            file,
            reason,
            region: r,
            strict,
        } => {
            let region = region(r.as_deref())?;
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .trim(csv::Trim::All)
                .from_path(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let headers: Vec<String> = reader
                .headers()
                .with_context(|| format!("{}: cannot read the header line", file.display()))?
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            let col = |name: &str| headers.iter().position(|h| h == name);
            let (kind_col, value_col) = (col("kind"), col("value"));
            let typed: Vec<(usize, &str)> = ["email", "phone", "domain"]
                .iter()
                .filter_map(|k| col(k).map(|i| (i, *k)))
                .collect();
            if value_col.is_none() && typed.is_empty() {
                bail!(
                    "{}: expected a header with kind and value, or with email, phone or domain columns (found: {})",
                    file.display(),
                    headers.join(", ")
                );
            }
            let source = format!(
                "import:{}",
                file.file_name().map_or_else(
                    || file.display().to_string(),
                    |f| f.to_string_lossy().into_owned()
                )
            );
            let mut entries = Vec::new();
            let mut rejected = Vec::new();
            for (i, row) in reader.records().enumerate() {
                let line = i + 2;
                let row = match row {
                    Ok(r) => r,
                    Err(e) => {
                        rejected
                            .push(json!({"line": line, "value": null, "reason": e.to_string()}));
                        continue;
                    }
                };
                let row_reason = col("reason")
                    .and_then(|c| row.get(c))
                    .filter(|r| !r.is_empty())
                    .unwrap_or(&reason)
                    .to_owned();
                let row_source = col("source")
                    .and_then(|c| row.get(c))
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| source.clone(), str::to_owned);
                let mut cells: Vec<(Option<&str>, &str)> = Vec::new();
                if let Some(v) = value_col {
                    cells.push((kind_col.and_then(|k| row.get(k)), row.get(v).unwrap_or("")));
                }
                for (c, k) in &typed {
                    if let Some(v) = row.get(*c).filter(|v| !v.is_empty()) {
                        cells.push((Some(k), v));
                    }
                }
                for (kind, value) in cells {
                    // Keyed hashes of erased people are exported as they are; they only
                    // match in the database that made them.
                    let key = if value.starts_with("hmac-sha256:") {
                        kind.and_then(|k| SuppressionKey::from_parts(k, value.to_owned()))
                            .ok_or_else(|| "a hashed value needs its kind".to_owned())
                    } else {
                        parse_key(kind, value, region.as_ref())
                    };
                    match key {
                        Ok(key) => entries.push(SuppressionRecord {
                            key,
                            reason: row_reason.clone(),
                            source: row_source.clone(),
                            created_at: now,
                        }),
                        Err(e) => rejected.push(json!({"line": line, "value": value, "reason": e})),
                    }
                }
            }
            let added = if strict && !rejected.is_empty() {
                0
            } else {
                app.store.add_suppressions(&entries).await?
            };
            if json {
                print_json(&json!({
                    "read": entries.len() + rejected.len(),
                    "added": added,
                    "already_listed": if strict && !rejected.is_empty() { 0 } else { entries.len() as u64 - added },
                    "rejected": rejected,
                    "written": !(strict && !rejected.is_empty()),
                }));
            } else {
                for r in &rejected {
                    eprintln!(
                        "{}:{}: {} ({})",
                        file.display(),
                        r["line"],
                        r["value"].as_str().unwrap_or(""),
                        r["reason"].as_str().unwrap_or("")
                    );
                }
                if strict && !rejected.is_empty() {
                    println!(
                        "{} bad row(s): nothing was written (--strict).",
                        rejected.len()
                    );
                } else {
                    println!(
                        "{added} entr(ies) added, {} already listed, {} rejected.",
                        entries.len() as u64 - added,
                        rejected.len()
                    );
                }
            }
            Ok(if rejected.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        SuppressionCommand::Export { out } => {
            let list = app.store.suppression_list().await?;
            let mut buffer = Vec::new();
            {
                let mut w = csv::Writer::from_writer(&mut buffer);
                w.write_record(["kind", "value", "reason", "source", "created_at"])?;
                for s in &list {
                    w.write_record([
                        s.key.kind(),
                        s.key.value(),
                        s.reason.as_str(),
                        s.source.as_str(),
                        &s.created_at.to_rfc3339(),
                    ])?;
                }
                w.flush()?;
            }
            match out {
                Some(path) => {
                    std::fs::write(&path, &buffer)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    if json {
                        print_json(
                            &json!({"entries": list.len(), "written_to": path.display().to_string()}),
                        );
                    } else {
                        println!("Wrote {} entr(ies) to {}.", list.len(), path.display());
                    }
                }
                None => print!("{}", String::from_utf8_lossy(&buffer)),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_normalized_and_kinds_guessed() {
        let us = CountryCode::parse("US").unwrap();
        let cases = [
            (
                None,
                " Ada@Example.COM ",
                Ok(SuppressionKey::Email("ada@example.com".into())),
            ),
            (
                None,
                "@Spam.Example.",
                Ok(SuppressionKey::Domain("spam.example".into())),
            ),
            (
                Some("domain"),
                "Acme.example",
                Ok(SuppressionKey::Domain("acme.example".into())),
            ),
            (
                None,
                "+1 (415) 555-0100",
                Ok(SuppressionKey::Phone("+14155550100".into())),
            ),
            (
                Some("phone"),
                "(415) 555-0100",
                Ok(SuppressionKey::Phone("+14155550100".into())),
            ),
        ];
        for (kind, raw, expected) in cases {
            assert_eq!(parse_key(kind, raw, Some(&us)), expected, "{raw}");
        }
        assert!(parse_key(Some("fax"), "123", None)
            .unwrap_err()
            .contains("unknown kind \"fax\""));
        assert!(parse_key(None, "not a domain!", None)
            .unwrap_err()
            .contains("is not a domain name"));
        assert!(parse_key(None, "", None).unwrap_err().contains("empty"));
    }
}
