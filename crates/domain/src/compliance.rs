//! The compliance gate: which legal regimes apply to a message, and whether the evidence we
//! hold (consent records, a documented legitimate interest, the sender's identity) allows it.
//!
//! Each regime is a [`Validator`]: it decides whether it applies from the lead's region and
//! the channel, and returns pass or fail with a reason that names the record it relied on.
//! [`check`] runs the enabled validators and returns a [`Verdict`], which the planner uses to
//! pass over a channel (or stop a lead that objected) and the dispatcher re-checks just
//! before sending; its [`Verdict::evidence`] is stored with every send.
//!
//! The rules follow `reference/protocols.md` §6: GDPR needs a lawful basis for EU/EEA/UK
//! leads and an objection (Art. 21) is absolute; CAN-SPAM needs sender identification, a
//! postal address and a working unsubscribe in every commercial email; TCPA/CTIA needs prior
//! express consent for texts to US numbers; CASL needs express or unexpired implied consent
//! for Canadian leads.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

use crate::campaign::Channel;
use crate::ids::LeadId;
use crate::lead::Lead;

/// A legal regime with its own validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Regime {
    /// EU/EEA/UK data protection: a lawful basis per lead; objections are absolute.
    Gdpr,
    /// US commercial email: sender identified, postal address, working opt-out.
    CanSpam,
    /// US texting: prior express consent (TCPA) and carrier rules (CTIA).
    Tcpa,
    /// Canada's anti-spam law: express or implied consent for email and texts.
    Casl,
}

impl Regime {
    /// Every regime Engager knows, in the order they are checked.
    pub const ALL: [Regime; 4] = [Regime::Gdpr, Regime::CanSpam, Regime::Tcpa, Regime::Casl];

    /// The configuration name (`gdpr`, `can_spam`, `tcpa`, `casl`).
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Gdpr => "gdpr",
            Regime::CanSpam => "can_spam",
            Regime::Tcpa => "tcpa",
            Regime::Casl => "casl",
        }
    }

    /// The name people know it by.
    pub fn label(self) -> &'static str {
        match self {
            Regime::Gdpr => "GDPR",
            Regime::CanSpam => "CAN-SPAM",
            Regime::Tcpa => "TCPA/CTIA",
            Regime::Casl => "CASL",
        }
    }
}

impl fmt::Display for Regime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Regime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "gdpr" => Ok(Regime::Gdpr),
            "can_spam" | "canspam" => Ok(Regime::CanSpam),
            "tcpa" | "ctia" | "tcpa/ctia" => Ok(Regime::Tcpa),
            "casl" => Ok(Regime::Casl),
            other => Err(format!(
                "unknown compliance regime {other:?}: expected gdpr, can_spam, tcpa or casl"
            )),
        }
    }
}

/// What a consent record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Basis {
    /// The person agreed (opt-in form, START by text, a signed agreement).
    Consent,
    /// GDPR Art. 6(1)(f): a documented legitimate-interest assessment (`reference`).
    LegitimateInterest,
    /// CASL implied consent (conspicuously published business address, an existing
    /// business relationship), valid until `expires_at`.
    Implied,
    /// The person withdrew consent for the channel (e.g. STOP); a later consent re-grants.
    Withdrawn,
    /// GDPR Art. 21 objection to direct marketing: absolute and permanent, every channel.
    Objection,
}

impl Basis {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Consent => "consent",
            Basis::LegitimateInterest => "legitimate_interest",
            Basis::Implied => "implied",
            Basis::Withdrawn => "withdrawn",
            Basis::Objection => "objection",
        }
    }
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Basis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace(['-', ' '], "_").as_str() {
            "consent" | "express" | "opt_in" => Ok(Basis::Consent),
            "legitimate_interest" | "li" => Ok(Basis::LegitimateInterest),
            "implied" => Ok(Basis::Implied),
            "withdrawn" | "withdrawal" => Ok(Basis::Withdrawn),
            "objection" => Ok(Basis::Objection),
            other => Err(format!(
                "unknown basis {other:?}: expected consent, legitimate_interest, implied, withdrawn or objection"
            )),
        }
    }
}

/// One piece of consent evidence about a lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// Stored id (0 for a record derived from the lead's own fields).
    pub id: i64,
    /// Whom it concerns.
    pub lead_id: LeadId,
    /// The channel it covers; `None` covers every channel.
    pub channel: Option<Channel>,
    /// What it says.
    pub basis: Basis,
    /// Where it came from: the form, file and line, the text message, the person.
    pub source: String,
    /// The legitimate-interest assessment, or another document reference.
    pub reference: Option<String>,
    /// The address or number it was given for; when set, it covers only that contact point.
    pub contact: Option<String>,
    /// When the person gave it (or the assessment was made).
    pub obtained_at: DateTime<Utc>,
    /// When it lapses (CASL implied consent: two years).
    pub expires_at: Option<DateTime<Utc>>,
}

impl ConsentRecord {
    /// A one-line description for traces and evidence.
    pub fn describe(&self) -> String {
        let when = if self.obtained_at == DateTime::<Utc>::UNIX_EPOCH {
            "date not recorded".to_owned()
        } else {
            self.obtained_at.format("%Y-%m-%d").to_string()
        };
        let mut s = if self.id > 0 {
            format!(
                "{} record #{} ({}, {when}",
                self.basis, self.id, self.source
            )
        } else {
            format!("{} ({}, {when}", self.basis, self.source)
        };
        if let Some(r) = &self.reference {
            s.push_str(&format!(", ref {r}"));
        }
        if let Some(e) = self.expires_at {
            s.push_str(&format!(", until {}", e.format("%Y-%m-%d")));
        }
        s.push(')');
        s
    }

    fn covers(&self, channel: Channel, contact: Option<&str>) -> bool {
        let channel_ok = self.channel.is_none_or(|c| c == channel);
        let contact_ok = match (&self.contact, contact) {
            (Some(recorded), Some(current)) => recorded.eq_ignore_ascii_case(current),
            (Some(_), None) => false,
            (None, _) => true,
        };
        channel_ok && contact_ok
    }
}

/// Company-wide compliance settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ComplianceRules {
    /// The regimes checked. Default: all of them.
    pub validators: Vec<Regime>,
    /// A company-wide, documented legitimate-interest assessment for B2B outreach to
    /// EU/EEA/UK leads (GDPR Art. 6(1)(f)); `None`: each lead needs its own basis.
    pub legitimate_interest: Option<String>,
    /// The channels the company-wide assessment covers (texts to EU numbers need consent
    /// under the ePrivacy rules, so SMS is not in the default).
    pub legitimate_interest_channels: Vec<Channel>,
    /// How long CASL implied consent lasts when a record gives no expiry (two years).
    pub implied_consent_days: i64,
    /// The sender's identity as configured, for CAN-SPAM and CTIA.
    pub sender: SenderIdentity,
}

impl Default for ComplianceRules {
    fn default() -> Self {
        Self {
            validators: Regime::ALL.to_vec(),
            legitimate_interest: None,
            legitimate_interest_channels: vec![Channel::Email, Channel::Linkedin],
            implied_consent_days: 730,
            sender: SenderIdentity::default(),
        }
    }
}

/// What identifies the sender in every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderIdentity {
    /// The From name.
    pub name: String,
    /// The company.
    pub company: String,
    /// The postal address in every email footer.
    pub postal_address: String,
    /// Whether a working unsubscribe endpoint is configured (an https base URL).
    pub unsubscribe_endpoint: bool,
}

/// One validator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The regime.
    pub regime: Regime,
    /// Whether the message may go.
    pub passed: bool,
    /// Why, naming the record relied on or missing.
    pub reason: String,
    /// The consent record relied on, if any.
    pub record: Option<i64>,
}

impl Check {
    fn pass(regime: Regime, reason: impl Into<String>, record: Option<i64>) -> Self {
        Self {
            regime,
            passed: true,
            reason: reason.into(),
            record,
        }
    }
    fn fail(regime: Regime, reason: impl Into<String>) -> Self {
        Self {
            regime,
            passed: false,
            reason: reason.into(),
            record: None,
        }
    }

    /// `GDPR: reason` / `GDPR refused: reason`.
    pub fn describe(&self) -> String {
        if self.passed {
            format!("{}: {}", self.regime, self.reason)
        } else {
            format!("{} refused: {}", self.regime, self.reason)
        }
    }
}

/// The answer of every validator that applies to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The channel checked.
    pub channel: Channel,
    /// Each applicable validator's answer, in [`Regime::ALL`] order.
    pub checks: Vec<Check>,
    /// An objection (Art. 21) on record: the lead is never contacted again, on any channel.
    pub objection: Option<ConsentRecord>,
}

impl Verdict {
    /// Whether every applicable validator passed (and there is no objection).
    pub fn allowed(&self) -> bool {
        self.objection.is_none() && self.checks.iter().all(|c| c.passed)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// One sentence for a trace: what was checked and on what evidence.
    pub fn describe(&self) -> String {
        if let Some(o) = &self.objection {
            return format!(
                "objection to direct marketing on record ({}): never contacted again",
                o.describe()
            );
        }
        if self.checks.is_empty() {
            return format!("no compliance regime applies to {} here", self.channel);
        }
        self.checks
            .iter()
            .map(Check::describe)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The regimes checked, by name, for the evidence record.
    pub fn regimes(&self) -> Vec<&'static str> {
        self.checks.iter().map(|c| c.regime.as_str()).collect()
    }
}

/// A pluggable rule set.
pub trait Validator {
    /// The regime it enforces.
    fn regime(&self) -> Regime;
    /// Whether it applies to this lead on this channel.
    fn applies(&self, lead: &Lead, channel: Channel) -> bool;
    /// Its answer, from the consent records we hold (newest decisions win).
    fn check(&self, input: &Input<'_>) -> Check;
}

/// What a validator sees.
pub struct Input<'a> {
    /// The lead.
    pub lead: &'a Lead,
    /// The channel of the message.
    pub channel: Channel,
    /// Every consent record we hold about the lead, oldest first.
    pub consents: &'a [ConsentRecord],
    /// Company-wide settings.
    pub rules: &'a ComplianceRules,
    /// The moment of the check.
    pub now: DateTime<Utc>,
}

impl Input<'_> {
    fn contact(&self) -> Option<String> {
        let p = &self.lead.profile;
        match self.channel {
            Channel::Email => p.email.as_ref().map(|e| e.as_str().to_owned()),
            Channel::Sms => p.phone.as_ref().map(|e| e.as_str().to_owned()),
            Channel::Linkedin => p.linkedin.as_ref().map(|e| e.to_string()),
        }
    }

    /// The newest record about this channel and contact point among `bases`, unless a later
    /// withdrawal cancels it.
    fn standing(&self, bases: &[Basis]) -> Option<&ConsentRecord> {
        let contact = self.contact();
        let mut best: Option<&ConsentRecord> = None;
        for r in self
            .consents
            .iter()
            .filter(|r| r.covers(self.channel, contact.as_deref()))
        {
            if r.expires_at.is_some_and(|e| e <= self.now) || r.obtained_at > self.now {
                continue;
            }
            if r.basis == Basis::Withdrawn {
                if best.is_some_and(|b| b.obtained_at <= r.obtained_at) {
                    best = None;
                }
                continue;
            }
            if bases.contains(&r.basis) && best.is_none_or(|b| b.obtained_at <= r.obtained_at) {
                best = Some(r);
            }
        }
        // A withdrawal newer than the best record cancels it even if it came first in the list.
        best.filter(|b| {
            !self.consents.iter().any(|w| {
                w.basis == Basis::Withdrawn
                    && w.covers(self.channel, contact.as_deref())
                    && w.obtained_at > b.obtained_at
                    && w.obtained_at <= self.now
            })
        })
    }

    fn withdrawn(&self) -> Option<&ConsentRecord> {
        let contact = self.contact();
        self.consents
            .iter()
            .filter(|r| r.basis == Basis::Withdrawn && r.covers(self.channel, contact.as_deref()))
            .filter(|r| r.obtained_at <= self.now)
            .max_by_key(|r| r.obtained_at)
    }
}

/// Whether the lead lives under a regime's territory: by country, else by phone region.
fn region(lead: &Lead) -> Option<&str> {
    lead.home_country()
}

fn in_gdpr_territory(lead: &Lead) -> bool {
    match &lead.profile.country {
        Some(c) => c.is_gdpr_territory(),
        None => lead
            .profile
            .phone
            .as_ref()
            .and_then(|p| p.region())
            .and_then(|r| crate::contact::CountryCode::parse(r).ok())
            .is_some_and(|c| c.is_gdpr_territory()),
    }
}

/// GDPR: a lawful basis for EU/EEA/UK leads.
pub struct Gdpr;

impl Validator for Gdpr {
    fn regime(&self) -> Regime {
        Regime::Gdpr
    }
    fn applies(&self, lead: &Lead, _channel: Channel) -> bool {
        in_gdpr_territory(lead)
    }
    fn check(&self, input: &Input<'_>) -> Check {
        if let Some(r) = input.standing(&[Basis::Consent, Basis::LegitimateInterest]) {
            return Check::pass(Regime::Gdpr, r.describe(), Some(r.id));
        }
        if let Some(w) = input.withdrawn() {
            return Check::fail(
                Regime::Gdpr,
                format!("consent for {} withdrawn ({})", input.channel, w.describe()),
            );
        }
        match &input.rules.legitimate_interest {
            Some(reference)
                if input
                    .rules
                    .legitimate_interest_channels
                    .contains(&input.channel) =>
            {
                Check::pass(
                    Regime::Gdpr,
                    format!("legitimate interest (company assessment {reference})"),
                    None,
                )
            }
            Some(_) => Check::fail(
                Regime::Gdpr,
                format!(
                    "no consent recorded for {} and the company's legitimate-interest assessment does not cover this channel",
                    input.channel
                ),
            ),
            None => Check::fail(
                Regime::Gdpr,
                "no lawful basis recorded for an EU/EEA/UK lead (record consent or a legitimate-interest assessment)",
            ),
        }
    }
}

/// CAN-SPAM: every commercial email identifies the sender, carries a postal address and a
/// working unsubscribe. The footer itself is checked on the rendered message (content gate).
pub struct CanSpam;

impl Validator for CanSpam {
    fn regime(&self) -> Regime {
        Regime::CanSpam
    }
    fn applies(&self, _lead: &Lead, channel: Channel) -> bool {
        channel == Channel::Email
    }
    fn check(&self, input: &Input<'_>) -> Check {
        let s = &input.rules.sender;
        let mut missing = Vec::new();
        if s.name.trim().is_empty() {
            missing.push("the sender's name");
        }
        if s.postal_address.trim().is_empty() {
            missing.push("a postal address");
        }
        if !s.unsubscribe_endpoint {
            missing.push("a working unsubscribe endpoint");
        }
        if missing.is_empty() {
            Check::pass(
                Regime::CanSpam,
                "sender identified, postal address and one-click unsubscribe in the footer",
                None,
            )
        } else {
            Check::fail(
                Regime::CanSpam,
                format!("the configuration lacks {}", missing.join(" and ")),
            )
        }
    }
}

/// TCPA/CTIA: texts to US numbers need prior express consent for that number.
pub struct Tcpa;

impl Validator for Tcpa {
    fn regime(&self) -> Regime {
        Regime::Tcpa
    }
    fn applies(&self, lead: &Lead, channel: Channel) -> bool {
        channel == Channel::Sms
            && lead
                .profile
                .phone
                .as_ref()
                .is_some_and(|p| p.region() == Some("US"))
    }
    fn check(&self, input: &Input<'_>) -> Check {
        if input.rules.sender.company.trim().is_empty() && input.rules.sender.name.trim().is_empty()
        {
            return Check::fail(
                Regime::Tcpa,
                "no sender name or company configured to identify the sender (CTIA)",
            );
        }
        match input.standing(&[Basis::Consent]) {
            Some(r) => Check::pass(
                Regime::Tcpa,
                format!("prior express consent for this number: {}", r.describe()),
                Some(r.id),
            ),
            None => match input.withdrawn() {
                Some(w) => Check::fail(
                    Regime::Tcpa,
                    format!("the number withdrew consent ({})", w.describe()),
                ),
                None => Check::fail(
                    Regime::Tcpa,
                    "no prior express consent recorded for this number",
                ),
            },
        }
    }
}

/// CASL: Canadian leads need express consent, or implied consent that has not lapsed.
pub struct Casl;

impl Validator for Casl {
    fn regime(&self) -> Regime {
        Regime::Casl
    }
    fn applies(&self, lead: &Lead, channel: Channel) -> bool {
        matches!(channel, Channel::Email | Channel::Sms) && region(lead) == Some("CA")
    }
    fn check(&self, input: &Input<'_>) -> Check {
        if let Some(r) = input.standing(&[Basis::Consent]) {
            return Check::pass(
                Regime::Casl,
                format!("express consent: {}", r.describe()),
                Some(r.id),
            );
        }
        if let Some(r) = input.standing(&[Basis::Implied]) {
            if r.obtained_at == DateTime::<Utc>::UNIX_EPOCH && r.expires_at.is_none() {
                return Check::fail(
                    Regime::Casl,
                    format!(
                        "implied consent without a date ({}): it lasts two years from when it arose; give consent_at",
                        r.describe()
                    ),
                );
            }
            let until = r
                .expires_at
                .unwrap_or(r.obtained_at + Duration::days(input.rules.implied_consent_days));
            if until > input.now {
                return Check::pass(
                    Regime::Casl,
                    format!(
                        "implied consent until {}: {}",
                        until.format("%Y-%m-%d"),
                        r.describe()
                    ),
                    Some(r.id),
                );
            }
            return Check::fail(
                Regime::Casl,
                format!(
                    "implied consent lapsed on {} ({})",
                    until.format("%Y-%m-%d"),
                    r.describe()
                ),
            );
        }
        Check::fail(
            Regime::Casl,
            "no express or implied consent recorded for a Canadian lead",
        )
    }
}

/// The validator of a regime.
pub fn validator(regime: Regime) -> &'static dyn Validator {
    match regime {
        Regime::Gdpr => &Gdpr,
        Regime::CanSpam => &CanSpam,
        Regime::Tcpa => &Tcpa,
        Regime::Casl => &Casl,
    }
}

/// The newest objection on record, if any: it blocks every channel for good.
pub fn objection(consents: &[ConsentRecord]) -> Option<&ConsentRecord> {
    consents
        .iter()
        .filter(|r| r.basis == Basis::Objection)
        .max_by_key(|r| r.obtained_at)
}

/// Runs every enabled validator that applies to a message to `lead` on `channel`.
pub fn check(
    rules: &ComplianceRules,
    lead: &Lead,
    channel: Channel,
    consents: &[ConsentRecord],
    now: DateTime<Utc>,
) -> Verdict {
    let objection = objection(consents).cloned();
    let input = Input {
        lead,
        channel,
        consents,
        rules,
        now,
    };
    let checks = Regime::ALL
        .iter()
        .filter(|r| rules.validators.contains(r))
        .map(|r| validator(*r))
        .filter(|v| v.applies(lead, channel))
        .map(|v| v.check(&input))
        .collect();
    Verdict {
        channel,
        checks,
        objection,
    }
}

/// Consent evidence a lead carries in its own imported fields (`email_consent`,
/// `sms_consent`: where it was given; `consent_at`: when, RFC 3339 or YYYY-MM-DD;
/// `lawful_basis` = `legitimate_interest` with `lia_reference`; `casl_implied`: why).
/// `imported_at` stands in for a missing date.
pub fn consents_from_fields(lead: &Lead, imported_at: DateTime<Utc>) -> Vec<ConsentRecord> {
    let custom = &lead.profile.custom;
    let when = custom
        .get("consent_at")
        .and_then(|v| parse_instant(v))
        .unwrap_or(imported_at);
    let source = |what: &str| format!("lead field {what} ({})", lead.profile.source);
    let mut out = Vec::new();
    let mut push = |channel: Option<Channel>,
                    basis: Basis,
                    src: String,
                    reference: Option<String>,
                    contact: Option<String>| {
        out.push(ConsentRecord {
            id: 0,
            lead_id: lead.id,
            channel,
            basis,
            source: src,
            reference,
            contact,
            obtained_at: when,
            expires_at: None,
        })
    };
    for (field, channel) in [
        ("email_consent", Channel::Email),
        ("sms_consent", Channel::Sms),
    ] {
        if let Some(v) = custom
            .get(field)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
        {
            if matches!(v.to_ascii_lowercase().as_str(), "no" | "false" | "0" | "n") {
                continue;
            }
            let contact = match channel {
                Channel::Sms => lead.profile.phone.as_ref().map(|p| p.as_str().to_owned()),
                _ => lead.profile.email.as_ref().map(|e| e.as_str().to_owned()),
            };
            push(
                Some(channel),
                Basis::Consent,
                format!("{}: {v}", source(field)),
                None,
                contact,
            );
        }
    }
    if let Some(v) = custom
        .get("casl_implied")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        push(
            None,
            Basis::Implied,
            format!("{}: {v}", source("casl_implied")),
            None,
            None,
        );
    }
    if custom
        .get("lawful_basis")
        .is_some_and(|b| b.trim().eq_ignore_ascii_case("legitimate_interest"))
    {
        let reference = custom
            .get("lia_reference")
            .cloned()
            .filter(|r| !r.trim().is_empty());
        push(
            None,
            Basis::LegitimateInterest,
            source("lawful_basis"),
            reference,
            None,
        );
    }
    out
}

fn parse_instant(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

/// A problem that stops a whole campaign until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignProblem {
    /// The regime it breaks.
    pub regime: Regime,
    /// The step it concerns (1-based in messages), if any.
    pub step: Option<usize>,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl fmt::Display for CampaignProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Some(s) => write!(f, "{} (step {}): {}", self.regime, s + 1, self.problem),
            None => write!(f, "{}: {}", self.regime, self.problem),
        }
    }
}

/// Checks a campaign against the configuration before anything of it is sent: problems that
/// would make every message of a step non-compliant. Any problem halts the campaign.
pub fn campaign_problems(
    rules: &ComplianceRules,
    campaign: &crate::Campaign,
) -> Vec<CampaignProblem> {
    let mut out = Vec::new();
    let s = &rules.sender;
    for (i, step) in campaign.steps.iter().enumerate() {
        let templates: Vec<&crate::campaign::StepTemplate> = std::iter::once(&step.template)
            .chain(step.variants.iter().map(|v| &v.template))
            .collect();
        if step.channels.contains(&Channel::Email) {
            if rules.validators.contains(&Regime::CanSpam) {
                if s.postal_address.trim().is_empty() {
                    out.push(CampaignProblem {
                        regime: Regime::CanSpam,
                        step: Some(i),
                        problem: "no postal address configured (sender.postal_address): every email must carry one".into(),
                    });
                }
                if !s.unsubscribe_endpoint {
                    out.push(CampaignProblem {
                        regime: Regime::CanSpam,
                        step: Some(i),
                        problem: "no working unsubscribe endpoint (links.public_base_url must be an https URL of `engager serve`)".into(),
                    });
                }
                if s.name.trim().is_empty() {
                    out.push(CampaignProblem {
                        regime: Regime::CanSpam,
                        step: Some(i),
                        problem: "no sender name configured (sender.name)".into(),
                    });
                }
            }
            for t in &templates {
                if let Some(subj) = &t.subject {
                    let lower = subj.trim_start().to_ascii_lowercase();
                    if ["re:", "fwd:", "fw:"].iter().any(|p| lower.starts_with(p)) {
                        out.push(CampaignProblem {
                            regime: Regime::CanSpam,
                            step: Some(i),
                            problem: format!(
                                "deceptive subject {subj:?}: a campaign message must not pose as a reply or forward"
                            ),
                        });
                    }
                }
                if let Some(html) = &t.html {
                    if hides_footer(html) {
                        out.push(CampaignProblem {
                            regime: Regime::CanSpam,
                            step: Some(i),
                            problem: "the HTML template hides what follows it (an unclosed comment, or display:none/visibility:hidden left open), so the unsubscribe link would not be visible".into(),
                        });
                    }
                }
            }
        }
        if step.channels.contains(&Channel::Sms)
            && (rules.validators.contains(&Regime::Tcpa))
            && s.company.trim().is_empty()
            && s.name.trim().is_empty()
        {
            out.push(CampaignProblem {
                regime: Regime::Tcpa,
                step: Some(i),
                problem: "no sender company or name to identify the sender in texts (CTIA)".into(),
            });
        }
    }
    out
}

/// Whether an HTML template would hide a footer appended after it.
fn hides_footer(html: &str) -> bool {
    let lower = html.to_ascii_lowercase();
    let unclosed_comment = lower
        .rfind("<!--")
        .is_some_and(|open| lower[open..].find("-->").is_none());
    // An element opened with display:none or visibility:hidden and never closed.
    let opens = |tag: &str| lower.matches(&format!("<{tag}")).count();
    let closes = |tag: &str| lower.matches(&format!("</{tag}")).count();
    let hidden_style = lower.contains("display:none")
        || lower.contains("display: none")
        || lower.contains("visibility:hidden")
        || lower.contains("visibility: hidden");
    let unbalanced = ["div", "span", "table", "td", "p"]
        .iter()
        .any(|t| opens(t) > closes(t));
    unclosed_comment || (hidden_style && unbalanced)
}

#[cfg(test)]
mod tests;
