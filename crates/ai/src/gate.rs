//! The quality and brand gate every AI-written message passes before it may be stored for
//! sending: length per channel, the lead's name and company where the template uses them,
//! no unresolved variables or placeholders, no link outside the allowed domains, no
//! forbidden phrase, no fake `Re:`/`Fwd:` subject, not a near-duplicate of the previous
//! message. Pure and cheap (it runs again on every cache hit).

use std::collections::HashSet;

use engager_domain::sms::{has_stop_wording, sms_segments};
use engager_domain::Channel;
use serde::{Deserialize, Serialize};

use crate::llm::Draft;

/// Phrases that spam filters and readers punish; always forbidden, on top of the configured ones.
pub const DEFAULT_SPAM_TRIGGERS: &[&str] = &[
    "act now",
    "100% free",
    "risk-free",
    "risk free",
    "no obligation",
    "click here",
    "limited time",
    "buy now",
    "order now",
    "call now",
    "apply now",
    "winner",
    "cash bonus",
    "earn money",
    "make money",
    "double your",
    "once in a lifetime",
    "as seen on",
    "special promotion",
    "no catch",
    "free money",
    "guaranteed",
    "urgent",
    "!!!",
    "$$$",
];

/// LinkedIn's limit for a connection-request note.
pub const LINKEDIN_NOTE_LIMIT: usize = 300;

/// The gate's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GateConfig {
    /// Domains links may point to (subdomains included); empty allows no link at all.
    pub allowed_link_domains: Vec<String>,
    /// Configured forbidden phrases (case-insensitive), added to [`DEFAULT_SPAM_TRIGGERS`].
    pub forbidden_phrases: Vec<String>,
    /// Word-trigram overlap with the previous message above which a draft is a near-duplicate.
    pub max_similarity: f64,
    /// Most SMS segments, footer included.
    pub max_sms_segments: usize,
    /// The sender's company (prefixed to SMS as the planner does).
    pub sender_company: String,
}

impl GateConfig {
    /// A stable text of every setting, part of the cache key.
    pub fn fingerprint(&self) -> String {
        format!(
            "domains={:?};phrases={:?};sim={};sms={};company={}",
            self.allowed_link_domains,
            self.forbidden_phrases,
            self.max_similarity,
            self.max_sms_segments,
            self.sender_company
        )
    }

    /// Length bounds of a channel: `(subject, body)` in characters.
    pub fn bounds(&self, channel: Channel) -> Bounds {
        match channel {
            Channel::Email => Bounds {
                subject: Some((3, 90)),
                body: (60, 1500),
            },
            // What remains of the segments once the planner adds the sender and STOP wording.
            Channel::Sms => Bounds {
                subject: None,
                body: (
                    10,
                    (self.max_sms_segments * 153).saturating_sub(self.sender_company.len() + 26),
                ),
            },
            Channel::Linkedin => Bounds {
                subject: None,
                body: (10, LINKEDIN_NOTE_LIMIT),
            },
        }
    }
}

/// Length bounds in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Subject bounds (email only).
    pub subject: Option<(usize, usize)>,
    /// Body bounds.
    pub body: (usize, usize),
}

/// What a draft is checked against besides the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckContext {
    /// The channel (`email`, `sms`, `linkedin`).
    pub channel: String,
    /// The lead's first name, when the step's template uses it.
    pub required_name: Option<String>,
    /// The lead's company (and its short form), when the step's template uses it.
    pub required_company: Option<(String, String)>,
    /// The previous message's body, when there was one.
    pub previous_body: Option<String>,
}

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Short name (`length`, `links`, ...).
    pub check: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found.
    pub detail: String,
}

/// Every check of one draft, and the share that passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// Passed checks over all checks, 0 to 1.
    pub score: f64,
    /// Each check.
    pub checks: Vec<CheckResult>,
}

impl GateReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The failed checks' details.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.check, c.detail))
            .collect()
    }
}

fn channel_of(name: &str) -> Channel {
    match name {
        "sms" => Channel::Sms,
        "linkedin" => Channel::Linkedin,
        _ => Channel::Email,
    }
}

/// Runs every check on a draft.
pub fn check(draft: &Draft, context: &CheckContext, config: &GateConfig) -> GateReport {
    let channel = channel_of(&context.channel);
    let mut checks = Vec::with_capacity(9);
    let mut push = |check: &str, problem: Option<String>, ok: &str| {
        checks.push(CheckResult {
            check: check.to_owned(),
            passed: problem.is_none(),
            detail: problem.unwrap_or_else(|| ok.to_owned()),
        });
    };
    let subject = draft.subject.trim();
    let body = draft.body.trim();
    let texts: Vec<&str> = if channel == Channel::Email {
        vec![subject, body]
    } else {
        vec![body]
    };

    // Length (and emptiness).
    let bounds = config.bounds(channel);
    let mut problems = Vec::new();
    let n = body.chars().count();
    if n < bounds.body.0 || n > bounds.body.1 {
        problems.push(format!(
            "body has {n} characters, expected {} to {}",
            bounds.body.0, bounds.body.1
        ));
    }
    if let Some((lo, hi)) = bounds.subject {
        let n = subject.chars().count();
        if n < lo || n > hi {
            problems.push(format!("subject has {n} characters, expected {lo} to {hi}"));
        }
        if subject.contains(['\n', '\r']) {
            problems.push("subject spans several lines".to_owned());
        }
    }
    if channel == Channel::Sms {
        let mut composed = body.to_owned();
        if !composed.contains(&config.sender_company) {
            composed = format!("{}: {composed}", config.sender_company);
        }
        if !has_stop_wording(&composed) {
            composed.push_str("\nReply STOP to opt out.");
        }
        let seg = sms_segments(&composed).segments;
        if seg > config.max_sms_segments {
            problems.push(format!(
                "{seg} SMS segments with the opt-out text, more than the {} allowed",
                config.max_sms_segments
            ));
        }
    }
    push(
        "length",
        (!problems.is_empty()).then(|| problems.join("; ")),
        "within the channel's bounds",
    );

    // Personal: name and company where the template uses them.
    let lower_body = body.to_lowercase();
    let mut missing = Vec::new();
    if let Some(name) = &context.required_name {
        if !lower_body.contains(&name.to_lowercase()) {
            missing.push(format!("the lead's first name {name:?}"));
        }
    }
    if let Some((company, short)) = &context.required_company {
        let all = texts.join("\n").to_lowercase();
        if !all.contains(&company.to_lowercase()) && !all.contains(&short.to_lowercase()) {
            missing.push(format!("the lead's company {short:?}"));
        }
    }
    push(
        "personal",
        (!missing.is_empty()).then(|| format!("missing {}", missing.join(" and "))),
        "name and company present where the template uses them",
    );

    // Unresolved variables and placeholders.
    let markup = texts.iter().any(|t| {
        t.contains("{{")
            || t.contains("}}")
            || t.contains("{%")
            || t.contains('{')
            || t.contains('}')
            || PLACEHOLDERS.iter().any(|p| t.to_lowercase().contains(p))
    });
    push(
        "variables",
        markup.then(|| "unresolved variable or placeholder".to_owned()),
        "no unresolved variable",
    );

    // Links.
    let off: Vec<String> = texts
        .iter()
        .flat_map(|t| link_hosts(t))
        .filter(|host| !domain_allowed(host, &config.allowed_link_domains))
        .collect();
    push(
        "links",
        (!off.is_empty()).then(|| format!("links outside the allowed domains: {}", off.join(", "))),
        "every link within the allowed domains",
    );

    // Forbidden phrases.
    let all_lower = texts.join("\n").to_lowercase();
    let found: Vec<String> = DEFAULT_SPAM_TRIGGERS
        .iter()
        .map(|p| p.to_string())
        .chain(config.forbidden_phrases.iter().map(|p| p.to_lowercase()))
        .filter(|p| !p.trim().is_empty() && contains_phrase(&all_lower, p))
        .collect();
    push(
        "phrases",
        (!found.is_empty()).then(|| format!("forbidden phrase(s): {}", found.join(", "))),
        "no forbidden phrase",
    );

    // Deceptive subject.
    let lower_subject = subject.to_ascii_lowercase();
    let fake = ["re:", "re :", "fwd:", "fw:", "aw:", "wg:"]
        .iter()
        .any(|p| lower_subject.starts_with(p));
    push(
        "subject",
        (channel == Channel::Email && fake)
            .then(|| format!("subject {subject:?} poses as a reply or forward")),
        "no fake Re:/Fwd:",
    );

    // Near-duplicate of the previous message.
    let similarity = context
        .previous_body
        .as_deref()
        .map(|previous| similarity(body, strip_footer(previous)))
        .unwrap_or(0.0);
    push(
        "novelty",
        (similarity > config.max_similarity).then(|| {
            format!(
                "{:.0}% the same as the previous message (at most {:.0}% allowed)",
                similarity * 100.0,
                config.max_similarity * 100.0
            )
        }),
        "not a near-duplicate of the previous message",
    );

    let passed = checks.iter().filter(|c| c.passed).count();
    let score = (passed as f64 / checks.len() as f64 * 100.0).round() / 100.0;
    GateReport { score, checks }
}

const PLACEHOLDERS: &[&str] = &[
    "[first name]",
    "[name]",
    "[company]",
    "[company name]",
    "<first name>",
    "<company>",
    "[your name]",
    "lorem ipsum",
];

/// A phrase found as whole words (so "urgent" does not match "insurgent").
fn contains_phrase(haystack: &str, phrase: &str) -> bool {
    let word = |c: char| c.is_alphanumeric();
    haystack.match_indices(phrase).any(|(i, _)| {
        let before = haystack[..i].chars().next_back();
        let after = haystack[i + phrase.len()..].chars().next();
        let edge_ok = |c: Option<char>, p: Option<char>| match (c, p) {
            (Some(c), Some(p)) if word(p) => !word(c),
            _ => true,
        };
        edge_ok(before, phrase.chars().next()) && edge_ok(after, phrase.chars().next_back())
    })
}

/// The hosts of the links in a text (`http://`, `https://` and `www.` forms).
pub fn link_hosts(text: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    let lower = text.to_lowercase();
    let mut rest = lower.as_str();
    loop {
        let next = ["http://", "https://", "www."]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min();
        let Some((i, prefix)) = next else { break };
        let start = if prefix == "www." {
            i
        } else {
            i + prefix.len()
        };
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || "/?#:)]>\"',;".contains(c))
            .unwrap_or(tail.len());
        let host = tail[..end].trim_end_matches('.').to_owned();
        if !host.is_empty() {
            hosts.push(host);
        }
        rest = &tail[end..];
    }
    hosts
}

fn domain_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim_start_matches("www.");
    allowed.iter().any(|d| {
        let d = d.trim().trim_start_matches("www.").to_lowercase();
        !d.is_empty() && (host == d || host.ends_with(&format!(".{d}")))
    })
}

fn strip_footer(body: &str) -> &str {
    body.split("\n\n--\n").next().unwrap_or(body)
}

fn shingles(text: &str) -> HashSet<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.len() < 3 {
        return words.into_iter().collect();
    }
    words.windows(3).map(|w| w.join(" ")).collect()
}

/// Jaccard overlap of word trigrams, 0 (nothing shared) to 1 (the same words).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (shingles(a), shingles(b));
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let shared = a.intersection(&b).count();
    shared as f64 / (a.len() + b.len() - shared) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GateConfig {
        GateConfig {
            allowed_link_domains: vec!["acme.example".into()],
            forbidden_phrases: vec!["synergy".into()],
            max_similarity: 0.6,
            max_sms_segments: 2,
            sender_company: "Acme".into(),
        }
    }

    fn context() -> CheckContext {
        CheckContext {
            channel: "email".into(),
            required_name: Some("Jane".into()),
            required_company: Some((
                "Northwind Analytics Inc.".into(),
                "Northwind Analytics".into(),
            )),
            previous_body: None,
        }
    }

    fn draft(subject: &str, body: &str) -> Draft {
        Draft {
            subject: subject.into(),
            body: body.into(),
            rationale: String::new(),
        }
    }

    const GOOD: &str = "Hi Jane, I saw Northwind Analytics opened a Denver office. Teams your size often lose a day a week to manual reporting; we cut that to an hour. Worth a short call next week? https://acme.example/demo";

    fn failed(d: &Draft, c: &CheckContext) -> Vec<String> {
        check(d, c, &config())
            .checks
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| c.check)
            .collect()
    }

    #[test]
    fn a_good_draft_passes_every_check() {
        let report = check(&draft("Denver and reporting", GOOD), &context(), &config());
        assert!(report.passed(), "{:?}", report.failures());
        assert_eq!(report.score, 1.0);
    }

    #[test]
    fn each_problem_fails_its_own_check() {
        let c = context();
        let cases: &[(&str, &str, &str)] = &[
            ("Hi", GOOD, "length"),
            ("Denver", &GOOD.replace("Jane", "there"), "personal"),
            (
                "Denver",
                &GOOD.replace("Northwind Analytics", "your team"),
                "personal",
            ),
            (
                "Denver",
                &GOOD.replace("Hi Jane", "Hi {{ lead.first_name }} Jane"),
                "variables",
            ),
            (
                "Denver",
                &GOOD.replace("Hi Jane", "Hi [First Name] Jane"),
                "variables",
            ),
            (
                "Denver",
                &GOOD.replace("acme.example", "evil.example"),
                "links",
            ),
            ("Denver", &format!("{GOOD} www.tracker.example/x"), "links"),
            ("Denver", &format!("{GOOD} Act now!"), "phrases"),
            ("Denver", &format!("{GOOD} Real synergy."), "phrases"),
            ("Re: our call", GOOD, "subject"),
            ("FWD: Denver", GOOD, "subject"),
        ];
        for (subject, body, expected) in cases {
            assert_eq!(
                failed(&draft(subject, body), &c),
                vec![*expected],
                "{subject} / {body}"
            );
        }
        let mut again = c.clone();
        again.previous_body = Some(format!("{GOOD}\n\n--\nMaya, Acme\n1 Main St"));
        assert_eq!(failed(&draft("Denver", GOOD), &again), vec!["novelty"]);
    }

    #[test]
    fn subdomains_are_allowed_and_whole_words_only_match() {
        let body = GOOD.replace("https://acme.example", "https://www.docs.acme.example");
        assert!(failed(&draft("Denver", &body), &context()).is_empty());
        let body = format!("{GOOD} The insurgent startups move fast.");
        assert!(failed(&draft("Denver", &body), &context()).is_empty());
    }

    #[test]
    fn sms_and_linkedin_lengths_count_what_is_added() {
        let mut c = context();
        c.channel = "sms".into();
        let long = format!("Hi Jane at Northwind Analytics, {}", "x".repeat(300));
        assert_eq!(failed(&draft("", &long), &c), vec!["length"]);
        c.channel = "linkedin".into();
        let note = format!("Hi Jane, Northwind Analytics {}", "word ".repeat(60));
        assert_eq!(failed(&draft("", &note), &c), vec!["length"]);
    }

    #[test]
    fn link_hosts_are_found_in_every_form() {
        assert_eq!(
            link_hosts("see (https://A.example/x), http://b.example. and www.c.example?q"),
            vec!["a.example", "b.example", "www.c.example"]
        );
    }
}
