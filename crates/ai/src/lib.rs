//! Personalization: each step's templates rendered with minijinja for the lead (the
//! default, and the fallback), and AI personalization through any OpenAI-compatible model
//! ([`llm`]), with behaviour [`insights`], [`prompt`] building, a quality and brand
//! [`gate`], and the regenerate-or-fall-back chain ([`personalize`]).
//!
//! Invariants: rendering is strict — a variable that is missing for this lead is an error,
//! never an empty string in a sent message; templates run sandboxed (no file or environment
//! access, bounded work through minijinja's fuel, bounded output size); the same lead and
//! template always render the same text.

pub mod gate;
pub mod insights;
pub mod llm;
pub mod personalize;
pub mod prompt;

use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use engager_domain::campaign::StepTemplate;
use engager_domain::{Lead, TimeZone};
use minijinja::{Environment, UndefinedBehavior, Value};

/// Largest rendered part we accept, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Work budget of one render (minijinja fuel units), so a runaway loop cannot hang a run.
const FUEL: u64 = 50_000;

/// Why a template could not be rendered for a lead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template itself is malformed.
    #[error("template {name} does not compile: {reason}")]
    Syntax {
        /// Which template (`<campaign> step <n> subject|body|html`).
        name: String,
        /// The parser's message, with line.
        reason: String,
    },
    /// Rendering failed for this lead, e.g. an unresolved variable.
    #[error("template {name} cannot be rendered for this lead: {reason}")]
    Render {
        /// Which template.
        name: String,
        /// Why.
        reason: String,
    },
    /// The output is empty or too large.
    #[error("template {name} rendered {problem}")]
    Output {
        /// Which template.
        name: String,
        /// What is wrong with the output.
        problem: String,
    },
}

/// What a step's templates render to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Subject, when the step has one.
    pub subject: Option<String>,
    /// Text body.
    pub body_text: String,
    /// HTML body, when the step has one.
    pub body_html: Option<String>,
}

/// Facts about the sender available to templates as `sender.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderFacts {
    /// Sender's name.
    pub name: String,
    /// Sender's company.
    pub company: String,
}

/// Compiled templates of every step of every loaded campaign.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// `{{ one_of("Hi", "Hello", "Hey") }}`: spintax-style alternatives, one chosen by a stable
/// hash of (template, lead, alternatives), so a lead always gets the same wording and leads
/// get different ones.
fn one_of(
    state: &minijinja::State,
    alternatives: minijinja::value::Rest<Value>,
) -> Result<Value, minijinja::Error> {
    if alternatives.is_empty() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::MissingArgument,
            "one_of needs at least one alternative",
        ));
    }
    let seed = state
        .lookup("spin_seed")
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(0);
    let joined: Vec<String> = alternatives.iter().map(ToString::to_string).collect();
    let hash = engager_domain::stable_hash(&[
        b"one_of",
        state.name().as_bytes(),
        &seed.to_le_bytes(),
        joined.join("\u{1f}").as_bytes(),
    ]);
    let i = (engager_domain::unit_fraction(hash) * alternatives.len() as f64) as usize;
    Ok(alternatives[i.min(alternatives.len() - 1)].clone())
}

/// Adds the lead's behaviour insights to a template context, as `insights.*` (messages_sent,
/// opens, clicks, replies, channels_engaged, engaged_hour, negative_signals,
/// last_interaction, reference_previous, tone, …).
pub fn with_insights(context: Value, insights: &insights::Insights) -> Value {
    minijinja::context! {
        insights => Value::from_serialize(insights),
        ..context
    }
}

fn part_name(campaign: &str, step: usize, part: &str) -> String {
    format!("{campaign} step {} {part}", step + 1)
}

impl Templates {
    /// An empty, sandboxed, strict template set.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        // Plain-text messages: no HTML auto-escaping except in .html parts.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(" html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        env.set_keep_trailing_newline(true);
        env.add_function("one_of", one_of);
        Self { env }
    }

    /// Compiles a step's templates; a syntax error names the campaign, step, part and line.
    pub fn add_step(
        &mut self,
        campaign: &str,
        step: usize,
        template: &StepTemplate,
    ) -> Result<(), RenderError> {
        let parts = [
            ("subject", template.subject.as_deref()),
            ("body", Some(template.body.as_str())),
            ("html", template.html.as_deref()),
        ];
        for (part, source) in parts {
            if let Some(source) = source {
                let name = part_name(campaign, step, part);
                self.env
                    .add_template_owned(name.clone(), source.to_owned())
                    .map_err(|e| RenderError::Syntax {
                        name,
                        reason: e.to_string(),
                    })?;
            }
        }
        Ok(())
    }

    /// Renders a step for a lead.
    pub fn render(
        &self,
        campaign: &str,
        step: usize,
        template: &StepTemplate,
        context: &Value,
    ) -> Result<Rendered, RenderError> {
        let subject = template
            .subject
            .as_ref()
            .map(|_| self.render_part(campaign, step, "subject", context))
            .transpose()?
            .map(|s| s.trim().replace(['\r', '\n'], " "));
        let body_text = self.render_part(campaign, step, "body", context)?;
        let body_html = template
            .html
            .as_ref()
            .map(|_| self.render_part(campaign, step, "html", context))
            .transpose()?;
        Ok(Rendered {
            subject,
            body_text,
            body_html,
        })
    }

    fn render_part(
        &self,
        campaign: &str,
        step: usize,
        part: &str,
        context: &Value,
    ) -> Result<String, RenderError> {
        let name = part_name(campaign, step, part);
        let template = self
            .env
            .get_template(&name)
            .map_err(|e| RenderError::Syntax {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        let out = template.render(context).map_err(|e| {
            let mut reason = describe(&e);
            if e.kind() == minijinja::ErrorKind::UndefinedError {
                let mut missing: Vec<String> = template
                    .undeclared_variables(true)
                    .into_iter()
                    .filter(|path| !resolves(context, path))
                    .collect();
                missing.sort();
                if !missing.is_empty() {
                    reason = format!("{} not set for this lead ({reason})", missing.join(", "));
                }
            }
            RenderError::Render {
                name: name.clone(),
                reason,
            }
        })?;
        if out.trim().is_empty() {
            return Err(RenderError::Output {
                name,
                problem: "an empty text".into(),
            });
        }
        if out.len() > MAX_OUTPUT_BYTES {
            return Err(RenderError::Output {
                name,
                problem: format!(
                    "{} bytes, more than the {MAX_OUTPUT_BYTES} allowed",
                    out.len()
                ),
            });
        }
        if out.contains("{{") || out.contains("}}") {
            return Err(RenderError::Output {
                name,
                problem: "text that still contains template braces".into(),
            });
        }
        Ok(out)
    }
}

/// Whether a dotted path (`lead.title`) resolves to a defined value in the context.
fn resolves(context: &Value, path: &str) -> bool {
    let mut value = context.clone();
    for part in path.split('.') {
        match value.get_attr(part) {
            Ok(next) if !next.is_undefined() => value = next,
            _ => return false,
        }
    }
    true
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        s.push_str(": ");
        s.push_str(detail);
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
}

/// A greeting for the lead's local time of day.
pub fn greeting(local_hour: u32) -> &'static str {
    match local_hour {
        5..=11 => "Good morning",
        12..=17 => "Good afternoon",
        _ => "Hello",
    }
}

/// The short form of a company name: legal suffixes dropped ("Acme Analytics Inc." → "Acme Analytics").
pub fn company_short_name(company: &str) -> String {
    const SUFFIXES: [&str; 14] = [
        "inc", "inc.", "llc", "ltd", "ltd.", "gmbh", "ag", "sa", "s.a.", "bv", "b.v.", "plc",
        "corp", "corp.",
    ];
    let mut words: Vec<&str> = company.split_whitespace().collect();
    while words.len() > 1 {
        let last = words[words.len() - 1]
            .trim_end_matches(',')
            .to_ascii_lowercase();
        if SUFFIXES.contains(&last.as_str()) {
            words.pop();
        } else {
            break;
        }
    }
    words.join(" ").trim_end_matches(',').to_owned()
}

/// The template context for a lead: `lead.*` (only fields the lead has, so a missing one is
/// an error under strict rendering), `lead.custom.*`, `sender.*`, `greeting` and `step`
/// (and the seed `one_of` picks its alternative by).
pub fn lead_context(
    lead: &Lead,
    zone: TimeZone,
    now: DateTime<Utc>,
    sender: &SenderFacts,
    step: usize,
) -> Value {
    let p = &lead.profile;
    let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
    let mut put = |key: &'static str, value: Option<&str>| {
        if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
            fields.insert(key, Value::from(v));
        }
    };
    put("first_name", p.first_name.as_deref());
    put("last_name", p.last_name.as_deref());
    put("company", p.company.as_deref());
    put("title", p.title.as_deref());
    put("industry", p.industry.as_deref());
    put("city", p.city.as_deref());
    put("website", p.website.as_deref());
    put("country", p.country.as_ref().map(|c| c.as_str()));
    put("email", p.email.as_ref().map(|e| e.as_str()));
    let full_name = lead.display_name();
    fields.insert("full_name", Value::from(full_name));
    if let Some(company) = p.company.as_deref().filter(|c| !c.trim().is_empty()) {
        fields.insert("company_short", Value::from(company_short_name(company)));
    }
    let custom: BTreeMap<&str, Value> = p
        .custom
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.as_str(), Value::from(v.as_str())))
        .collect();
    fields.insert("custom", Value::from_serialize(&custom));
    let local_hour = now.with_timezone(&zone.tz()).hour();
    minijinja::context! {
        lead => Value::from_serialize(&fields),
        sender => minijinja::context! { name => sender.name.clone(), company => sender.company.clone() },
        greeting => greeting(local_hour),
        step => step + 1,
        spin_seed => lead.id.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engager_domain::{EmailAddress, LeadId, LeadStatus, NewLead};

    fn lead() -> Lead {
        let mut custom = BTreeMap::new();
        custom.insert(
            "custom_message".to_string(),
            "Congrats on the Denver office.".to_string(),
        );
        Lead {
            id: LeadId(1),
            status: LeadStatus::Active,
            profile: NewLead {
                email: Some(EmailAddress::parse("jane@northwind.example").unwrap()),
                first_name: Some("Jane".into()),
                company: Some("Northwind Analytics Inc.".into()),
                custom,
                source: "test".into(),
                ..NewLead::default()
            },
        }
    }

    fn step(subject: &str, body: &str) -> StepTemplate {
        StepTemplate {
            subject: Some(subject.into()),
            body: body.into(),
            html: None,
        }
    }

    fn render(subject: &str, body: &str) -> Result<Rendered, RenderError> {
        let mut t = Templates::new();
        let s = step(subject, body);
        t.add_step("c", 0, &s)?;
        let zone = TimeZone::parse("America/Denver").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-03-02T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let sender = SenderFacts {
            name: "Maya".into(),
            company: "Acme".into(),
        };
        t.render("c", 0, &s, &lead_context(&lead(), zone, now, &sender, 0))
    }

    #[test]
    fn renders_lead_fields_helpers_and_custom_fields() {
        let r = render(
            "{{ lead.first_name }}, a question about {{ lead.company_short }}",
            "{{ greeting }} {{ lead.first_name }},\n{{ lead.custom.custom_message }}\n— {{ sender.name }}",
        )
        .unwrap();
        assert_eq!(
            r.subject.as_deref(),
            Some("Jane, a question about Northwind Analytics")
        );
        assert_eq!(
            r.body_text,
            "Good morning Jane,\nCongrats on the Denver office.\n— Maya"
        );
    }

    #[test]
    fn one_of_picks_the_same_alternative_for_a_lead_and_varies_across_leads() {
        let mut t = Templates::new();
        t.add_step(
            "c",
            0,
            &StepTemplate {
                subject: None,
                body: "{{ one_of('Hi', 'Hello', 'Hey') }} {{ lead.first_name }}".into(),
                html: None,
            },
        )
        .unwrap();
        let zone = TimeZone::parse("America/New_York").unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-03T14:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let sender = SenderFacts {
            name: "Maya".into(),
            company: "Acme".into(),
        };
        let template = StepTemplate {
            subject: None,
            body: String::new(),
            html: None,
        };
        let mut seen = std::collections::BTreeMap::new();
        for id in 0..300 {
            let mut l = lead();
            l.id = LeadId(id);
            let ctx = lead_context(&l, zone, now, &sender, 0);
            let first = t.render("c", 0, &template, &ctx).unwrap().body_text;
            let again = t.render("c", 0, &template, &ctx).unwrap().body_text;
            assert_eq!(first, again, "the same lead gets the same wording");
            *seen.entry(first).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen.values().all(|n| *n > 60), "{seen:?}");
        let mut empty = Templates::new();
        empty
            .add_step(
                "c",
                0,
                &StepTemplate {
                    subject: None,
                    body: "{{ one_of() }}".into(),
                    html: None,
                },
            )
            .unwrap();
        let ctx = lead_context(&lead(), zone, now, &sender, 0);
        let err = empty.render("c", 0, &template, &ctx).unwrap_err();
        assert!(
            err.to_string()
                .contains("one_of needs at least one alternative"),
            "{err}"
        );
    }

    #[test]
    fn insights_are_available_to_templates() {
        let mut t = Templates::new();
        let template = StepTemplate {
            subject: None,
            body: "{% if insights.reference_previous %}Following up{% else %}Hello{% endif %} after {{ insights.messages_sent }} message(s)".into(),
            html: None,
        };
        t.add_step("c", 0, &template).unwrap();
        let zone = TimeZone::parse("America/New_York").unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-03T14:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let sender = SenderFacts {
            name: "Maya".into(),
            company: "Acme".into(),
        };
        let ctx = with_insights(
            lead_context(&lead(), zone, now, &sender, 0),
            &insights::Insights {
                messages_sent: 2,
                reference_previous: true,
                ..Default::default()
            },
        );
        let r = t.render("c", 0, &template, &ctx).unwrap();
        assert_eq!(r.body_text, "Following up after 2 message(s)");
        assert!(
            t.render(
                "c",
                0,
                &template,
                &lead_context(&lead(), zone, now, &sender, 0)
            )
            .is_err(),
            "without insights the template is an error, never empty text"
        );
    }

    #[test]
    fn a_missing_field_is_an_error_not_an_empty_string() {
        let err = render("Hi", "Hi {{ lead.first_name }} at {{ lead.title }}").unwrap_err();
        assert!(matches!(err, RenderError::Render { .. }), "{err}");
        assert!(err.to_string().contains("c step 1 body"), "{err}");
        assert!(
            err.to_string().contains("lead.title not set for this lead"),
            "{err}"
        );
        // ...but a template may choose a fallback explicitly.
        let ok = render("Hi", "Hi {{ lead.title | default('there') }}").unwrap();
        assert_eq!(ok.body_text, "Hi there");
    }

    #[test]
    fn syntax_errors_name_the_template_and_empty_output_is_refused() {
        assert!(matches!(
            render("Hi", "{% if %}").unwrap_err(),
            RenderError::Syntax { .. }
        ));
        assert!(matches!(
            render("Hi", "{{ '' }}").unwrap_err(),
            RenderError::Output { .. }
        ));
        assert!(matches!(
            render("Hi", "{{ '{{x}}' }}").unwrap_err(),
            RenderError::Output { .. }
        ));
    }

    #[test]
    fn runaway_templates_are_stopped() {
        let err = render(
            "Hi",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap_err();
        assert!(
            matches!(err, RenderError::Render { .. } | RenderError::Output { .. }),
            "{err}"
        );
    }

    #[test]
    fn company_short_names() {
        assert_eq!(company_short_name("Acme Analytics Inc."), "Acme Analytics");
        assert_eq!(company_short_name("Bramble GmbH"), "Bramble");
        assert_eq!(company_short_name("Inc"), "Inc");
    }
}
