//! Data-subject rights: which tables and columns hold personal data, how a person's rows are
//! found, and how they are erased; the keyed hash that keeps an erased person suppressed; the
//! append-only audit log's records.
//!
//! Every column of every table is classified below, personal or not; a test fails when a
//! migration adds a column that is not, so a new personal-data column cannot slip past
//! `engager gdpr export` and `engager gdpr erase`.

use chrono::{DateTime, Utc};
use engager_domain::LeadId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How a table's rows are tied to one person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The table is `leads`: the row whose `id` is the lead.
    LeadRow,
    /// Rows whose `lead_id` is the lead.
    LeadId,
    /// Rows whose given column holds the lead's phone number.
    Phone(&'static str),
    /// Suppression entries of the lead's email address or phone number.
    Suppression,
    /// Not tied to a person.
    None,
}

/// What erasure does to a person's rows of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erase {
    /// `UPDATE … SET <clause>`: personal columns blanked, the row kept so counts and the
    /// ledger's history stay whole.
    Blank(&'static str),
    /// The rows are deleted.
    Delete,
    /// Suppression values become their keyed hash.
    HashSuppression,
    /// Nothing (the table holds no personal data).
    Nothing,
}

/// One table's classification.
#[derive(Debug, Clone, Copy)]
pub struct TableRule {
    /// Table name.
    pub table: &'static str,
    /// How its rows belong to a person.
    pub link: Link,
    /// Columns that hold personal data.
    pub personal: &'static [&'static str],
    /// Every other column.
    pub other: &'static [&'static str],
    /// What erasure does.
    pub erase: Erase,
}

/// Every table Engager stores, classified. Tables of the storage machinery itself
/// (`schema_migrations`, `counters`, `store_secrets`) are listed as not personal.
pub const TABLES: &[TableRule] = &[
    TableRule {
        table: "reply_classifications",
        link: Link::LeadId,
        personal: &["reason"],
        other: &["event_id", "lead_id", "class", "source", "classified_at"],
        erase: Erase::Blank("reason = ''"),
    },
    TableRule {
        table: "experiment_decisions",
        link: Link::None,
        personal: &[],
        other: &["experiment", "state", "variant", "source", "reason", "decided_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "leads",
        link: Link::LeadRow,
        personal: &[
            "email", "phone", "phone_region", "linkedin_url", "first_name", "last_name",
            "company", "title", "city", "website", "custom_json", "source_ref",
        ],
        other: &["id", "industry", "country", "time_zone", "source", "status", "created_at", "updated_at"],
        erase: Erase::Blank(
            "email = NULL, phone = NULL, phone_region = NULL, linkedin_url = NULL, first_name = NULL, \
             last_name = NULL, company = NULL, title = NULL, city = NULL, website = NULL, \
             custom_json = '{}', source_ref = NULL, status = 'erased'",
        ),
    },
    TableRule {
        table: "deliveries",
        link: Link::LeadId,
        personal: &["to_address", "subject", "body_text", "body_html", "last_error"],
        other: &[
            "id", "enrollment_id", "campaign_id", "lead_id", "step_index", "channel", "state",
            "send_at", "attempts", "fencing_token", "lease_until", "claimed_by", "next_attempt_at",
            "provider_ref", "sent_at", "written_back_at", "created_at", "updated_at", "variant",
            "account",
        ],
        erase: Erase::Blank(
            "to_address = '', subject = NULL, body_text = '', body_html = NULL, last_error = NULL",
        ),
    },
    TableRule {
        table: "traces",
        link: Link::LeadId,
        personal: &["gates_json"],
        other: &[
            "id", "enrollment_id", "campaign_id", "lead_id", "step_index", "evaluated_at",
            "outcome", "code", "channel", "at",
        ],
        erase: Erase::Blank("gates_json = '[]'"),
    },
    TableRule {
        table: "events",
        link: Link::LeadId,
        personal: &["detail", "external_id"],
        other: &["id", "lead_id", "delivery_id", "kind", "occurred_at", "source"],
        // The machine flag of an open or click is not personal and keeps reports right.
        erase: Erase::Blank(
            "detail = CASE WHEN detail LIKE '%\"automated\":true%' THEN '{\"automated\":true}' ELSE '{}' END, \
             external_id = NULL",
        ),
    },
    TableRule {
        table: "enrollments",
        link: Link::LeadId,
        personal: &[],
        other: &[
            "id", "campaign_id", "lead_id", "state", "current_step", "next_due_at", "stop_reason",
            "enrolled_at", "updated_at",
        ],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "tasks",
        link: Link::LeadId,
        personal: &["profile_url", "body", "note"],
        other: &[
            "id", "delivery_id", "enrollment_id", "campaign_id", "lead_id", "step_index",
            "channel", "kind", "state", "due_at", "on_deadline", "fencing_token", "created_at",
            "closed_at",
        ],
        erase: Erase::Blank("profile_url = '', body = '', note = NULL"),
    },
    TableRule {
        table: "sms_inbound",
        link: Link::Phone("from_number"),
        personal: &["from_number", "body"],
        other: &["message_sid", "to_number", "action", "received_at"],
        erase: Erase::Delete,
    },
    TableRule {
        table: "suppressions",
        link: Link::Suppression,
        personal: &["value"],
        other: &["kind", "reason", "source", "created_at"],
        erase: Erase::HashSuppression,
    },
    TableRule {
        table: "ai_cache",
        link: Link::LeadId,
        personal: &["outcome"],
        other: &["key", "model", "created_at", "lead_id"],
        erase: Erase::Delete,
    },
    TableRule {
        table: "tracked_links",
        link: Link::LeadId,
        personal: &["url"],
        other: &["delivery_id", "link_index", "lead_id", "created_at"],
        erase: Erase::Delete,
    },
    TableRule {
        table: "campaigns",
        link: Link::None,
        personal: &[],
        other: &["id", "slug", "name", "definition", "created_at", "updated_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "sms_statuses",
        link: Link::None,
        personal: &[],
        other: &["message_sid", "delivery_id", "status", "error_code", "updated_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "inbound_cursors",
        link: Link::None,
        personal: &[],
        other: &["source", "uid_validity", "last_uid", "last_received_at", "updated_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "account_states",
        link: Link::None,
        personal: &[],
        other: &["account", "circuit", "open_until", "last_error", "updated_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "rate_buckets",
        link: Link::None,
        personal: &[],
        other: &["bucket", "tat", "count", "updated_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "consents",
        link: Link::LeadId,
        personal: &["source", "reference", "contact"],
        other: &["id", "lead_id", "channel", "basis", "obtained_at", "expires_at", "recorded_at"],
        // The basis, channel and dates stay (what allowed each past send); whom and from
        // where go. An objection also lives on as the hashed suppression entry.
        erase: Erase::Blank("source = 'erased', reference = NULL, contact = NULL"),
    },
    TableRule {
        table: "compliance_evidence",
        link: Link::LeadId,
        personal: &["checks_json"],
        other: &[
            "delivery_id", "lead_id", "checked_at", "provider", "regimes", "consent_id",
            "footer_postal", "footer_unsubscribe", "one_click_header", "stop_wording",
        ],
        erase: Erase::Blank("checks_json = '[]'"),
    },
    TableRule {
        table: "opt_out_writebacks",
        link: Link::LeadId,
        personal: &[],
        other: &["lead_id", "written_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "campaign_halts",
        link: Link::None,
        personal: &[],
        other: &["campaign_id", "halted", "reason", "changed_by", "changed_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "account_halts",
        link: Link::None,
        personal: &[],
        other: &["key", "halted", "reason", "changed_by", "changed_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "sending_halts",
        link: Link::None,
        personal: &[],
        other: &["channel", "halted", "reason", "changed_by", "changed_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "audit_log",
        link: Link::None,
        personal: &[],
        other: &["id", "at", "action", "subject", "detail", "actor"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "store_secrets",
        link: Link::None,
        personal: &[],
        other: &["name", "value"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "schema_migrations",
        link: Link::None,
        personal: &[],
        other: &["version", "applied_at"],
        erase: Erase::Nothing,
    },
    TableRule {
        table: "counters",
        link: Link::None,
        personal: &[],
        other: &["name", "value"],
        erase: Erase::Nothing,
    },
];

/// The classification of a table, if it has one.
pub fn rule(table: &str) -> Option<&'static TableRule> {
    TABLES.iter().find(|t| t.table == table)
}

/// The name of the per-database key of the suppression hash in `store_secrets`.
pub(crate) const SUPPRESSION_KEY: &str = "suppression_key";

/// The keyed hash an erased person's suppression entry keeps instead of the address or
/// number: HMAC-SHA256 over kind and value with the database's own random key, so the entry
/// still matches that address (the person stays suppressed) without storing it.
pub fn suppression_hash(key: &[u8], kind: &str, value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(kind.as_bytes());
    mac.update(b"\0");
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(12 + 64);
    out.push_str("hmac-sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A fresh random key (hex) for the suppression hash.
pub(crate) fn new_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an erasure changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureReport {
    /// The lead erased.
    pub lead_id: Option<LeadId>,
    /// Rows blanked or deleted, per table.
    pub rows: Vec<(String, u64)>,
    /// Suppression entries now kept as a keyed hash.
    pub suppressions_hashed: u64,
}

/// One entry of the append-only compliance audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// What: `erasure`, `export`, `opt_out`, `consent`, `halt`, `override`, …
    pub action: String,
    /// Whom it concerns, as a keyed hash or an id, never a plain address.
    pub subject: String,
    /// What happened, without personal data.
    pub detail: String,
    /// Who did it (`cli`, `server`, `monitor`, a person's note).
    pub actor: String,
}

/// How long message texts and event details are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionCutoffs {
    /// Messages (subject and body) of finished deliveries older than this are blanked.
    pub bodies_before: DateTime<Utc>,
    /// Event details, decision-trace gates, SMS received, AI drafts and closed tasks' texts
    /// older than this are blanked or deleted.
    pub details_before: DateTime<Utc>,
}

/// What a retention pass changed (or would, in a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Per table, rows blanked or deleted.
    pub rows: Vec<(String, u64)>,
}

/// The retention statements, in both backends' placeholder style (`?1`/`$1` is the bodies
/// cutoff, `?2`/`$2` the details cutoff, both in epoch milliseconds): (table, predicate, SET
/// clause or `None` to delete). Only finished deliveries lose their text; counts and states
/// are kept for reports.
pub(crate) const RETENTION: &[(&str, &str, Option<&str>)] = &[
    (
        "deliveries",
        "state IN ('sent', 'failed', 'cancelled') AND COALESCE(sent_at, updated_at) < {1} \
         AND (subject IS NOT NULL OR body_text <> '' OR body_html IS NOT NULL)",
        Some("subject = NULL, body_text = '', body_html = NULL"),
    ),
    // An open's or click's machine flag outlives its detail, so old reports keep excluding it.
    (
        "events",
        "occurred_at < {2} AND detail NOT IN ('{}', '{\"automated\":true}')",
        Some("detail = CASE WHEN detail LIKE '%\"automated\":true%' THEN '{\"automated\":true}' ELSE '{}' END"),
    ),
    ("traces", "evaluated_at < {2} AND gates_json <> '[]'", Some("gates_json = '[]'")),
    ("sms_inbound", "received_at < {2}", None),
    ("ai_cache", "created_at < {2}", None),
    (
        "tasks",
        "state <> 'open' AND COALESCE(closed_at, created_at) < {2} AND (body <> '' OR note IS NOT NULL)",
        Some("body = '', note = NULL"),
    ),
];
