//! The compliance panel's evidence section: a summary of the compliance report
//! (`engager compliance report`, built by `engager_engine::compliance::report`): sends by
//! channel and provider with the rules checked and the evidence they carried, refusals by
//! rule, sends missing evidence, halted campaigns and consent records written. The figures
//! are that report's; this module only renders them.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use engager_engine::Catalog;
use engager_store::Store;

use super::html::{esc, table};

/// Gaps listed at most (the CLI report lists them all).
const MAX_GAPS: usize = 20;

/// The evidence section for sends and decisions at or after `since`, as HTML; a note naming
/// the problem when the report cannot be built.
pub(crate) async fn evidence_section(
    store: &dyn Store,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> String {
    let catalog = match Catalog::load(store).await {
        Ok(c) => c,
        Err(e) => {
            return format!(
                "<p class=\"note\">The compliance report needs the campaign definitions, which could not be read: {}</p>",
                esc(&e.to_string())
            )
        }
    };
    let report = match engager_engine::compliance::report(store, &catalog, since, now).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "Dashboard: the compliance report failed.");
            return "<p class=\"note\">The compliance report is unavailable: the database did not answer.</p>".into();
        }
    };
    let mut out = String::from(
        "<p class=\"muted\">What each send was checked against and carried, as <code>engager compliance report</code> shows it for the same period.</p>",
    );
    let rows: Vec<Vec<String>> = report
        .sends
        .iter()
        .map(|s| {
            let email = s.channel == "email";
            let sms = s.channel == "sms";
            let applies = |yes: bool, n: u64| if yes { n.to_string() } else { "–".into() };
            vec![
                esc(&s.channel),
                esc(&s.provider),
                s.sends.to_string(),
                esc(&s
                    .regimes
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")),
                s.with_consent_record.to_string(),
                applies(email, s.with_footer),
                applies(email, s.with_one_click_header),
                applies(sms, s.with_stop_wording),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "Channel",
            "Provider",
            "Sends",
            "Rules checked",
            "On a consent record",
            "Footer",
            "One-click header",
            "STOP wording",
        ],
        &rows,
    ));
    let rows: Vec<Vec<String>> = report
        .blocks
        .iter()
        .map(|b| {
            vec![
                esc(&b.rule),
                b.decisions.to_string(),
                b.leads.to_string(),
                format!("<span class=\"l\">{}</span>", esc(&b.example)),
            ]
        })
        .collect();
    out.push_str("<h2>Refusals by rule</h2>");
    out.push_str(&table(&["Rule", "Decisions", "Leads", "Example"], &rows));
    let _ = write!(
        out,
        "<h2>Sends missing evidence ({})</h2>",
        report.gaps.len()
    );
    let rows: Vec<Vec<String>> = report
        .gaps
        .iter()
        .take(MAX_GAPS)
        .map(|g| {
            vec![
                format!("#{}", g.delivery_id),
                format!("lead {}", g.lead_id),
                esc(&g.channel),
                esc(&g.provider),
                format!("<span class=\"l\">{}</span>", esc(&g.missing)),
            ]
        })
        .collect();
    out.push_str(&table(
        &["Delivery", "Lead", "Channel", "Provider", "Missing"],
        &rows,
    ));
    if report.gaps.len() > MAX_GAPS {
        let _ = write!(
            out,
            "<p class=\"muted\">{} more in <code>engager compliance report</code>.</p>",
            report.gaps.len() - MAX_GAPS
        );
    }
    let rows: Vec<Vec<String>> = report
        .halted_campaigns
        .iter()
        .map(|(c, why)| vec![esc(c), format!("<span class=\"l\">{}</span>", esc(why))])
        .collect();
    out.push_str("<h2>Campaigns halted by compliance</h2>");
    out.push_str(&table(&["Campaign", "Why"], &rows));
    let rows: Vec<Vec<String>> = report
        .consents_recorded
        .iter()
        .map(|(basis, n)| vec![esc(basis), n.to_string()])
        .collect();
    out.push_str("<h2>Consent records written</h2>");
    out.push_str(&table(&["Basis", "Records"], &rows));
    out
}
