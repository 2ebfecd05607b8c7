//! Prompt building: the brand voice and company knowledge, the lead's profile and custom
//! fields, the behaviour insights, the step, the channel's constraints and the A/B angle.
//!
//! Invariant: the prompt is a pure function of its inputs and contains no clock reading, so
//! the cache key (a hash of the model, [`PROMPT_VERSION`] and the prompt) is reproducible.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use engager_domain::{Channel, Lead};

use crate::gate::GateConfig;
use crate::insights::Insights;
use crate::{company_short_name, SenderFacts};

/// Version of the prompt template; part of the cache key, so changing the wording below
/// invalidates cached drafts.
pub const PROMPT_VERSION: &str = "engager-prompt-v1";

/// The brand's voice and knowledge, read once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Brand {
    /// How the brand writes.
    pub voice: String,
    /// What the company offers, proof points, facts the model may use.
    pub knowledge: String,
}

/// A brand file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the brand {what} file {}: {source}", path.display())]
pub struct BrandError {
    /// `voice` or `knowledge`.
    pub what: &'static str,
    /// The path.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

impl Brand {
    /// Reads both files.
    pub fn load(voice: &Path, knowledge: &Path) -> Result<Self, BrandError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| BrandError {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Self {
            voice: read("voice", voice)?,
            knowledge: read("knowledge", knowledge)?,
        })
    }
}

/// Everything a prompt is built from.
#[derive(Debug, Clone)]
pub struct PromptInput<'a> {
    /// The lead.
    pub lead: &'a Lead,
    /// The sender.
    pub sender: &'a SenderFacts,
    /// What the history says.
    pub insights: &'a Insights,
    /// Campaign name.
    pub campaign: &'a str,
    /// Step index (0-based).
    pub step_index: usize,
    /// Number of steps in the campaign.
    pub step_count: usize,
    /// The step's name.
    pub step_name: &'a str,
    /// The channel chosen for this send.
    pub channel: Channel,
    /// The step's template rendered for this lead: the campaign's intent, offer and call to
    /// action, to be rewritten for the person.
    pub template_subject: Option<&'a str>,
    /// The rendered template body.
    pub template_body: &'a str,
    /// The angle of the step (or of its A/B variant), if it has one.
    pub angle: Option<&'a str>,
}

/// A system and a user message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// Instructions, voice and knowledge.
    pub system: String,
    /// The lead, the insights and the task.
    pub user: String,
}

/// Builds the prompt.
pub fn build_prompt(brand: &Brand, gate: &GateConfig, input: &PromptInput<'_>) -> Prompt {
    let mut system = String::with_capacity(2048 + brand.voice.len() + brand.knowledge.len());
    let _ = write!(
        system,
        "You write one outreach message at a time for {company}, sent by {name}. \
         Write as {name}, a real person, to one specific person. \
         Use only facts given here; never invent numbers, customers, events or links. \
         No placeholders, no template variables, no sign-off or footer (the signature, postal address and \
         opt-out text are added automatically). Never pose as a reply or forward (no \"Re:\" or \"Fwd:\"). \
         Answer with a JSON object with the keys subject, body and rationale only.\n\n\
         ## Brand voice\n{voice}\n\n## Company knowledge\n{knowledge}\n",
        company = input.sender.company,
        name = input.sender.name,
        voice = brand.voice.trim(),
        knowledge = brand.knowledge.trim(),
    );
    if !gate.allowed_link_domains.is_empty() {
        let _ = write!(
            system,
            "\nLinks may only point to: {}.\n",
            gate.allowed_link_domains.join(", ")
        );
    } else {
        system.push_str("\nDo not include any link.\n");
    }

    let mut user = String::with_capacity(2048);
    let p = &input.lead.profile;
    user.push_str("## Lead\n");
    let mut field = |key: &str, value: Option<&str>| {
        if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
            let _ = writeln!(user, "- {key}: {v}");
        }
    };
    field("first_name", p.first_name.as_deref());
    field("last_name", p.last_name.as_deref());
    field("title", p.title.as_deref());
    field("company", p.company.as_deref());
    let short = p.company.as_deref().map(company_short_name);
    field("company_short", short.as_deref());
    field("industry", p.industry.as_deref());
    field("city", p.city.as_deref());
    field("country", p.country.as_ref().map(|c| c.as_str()));
    field("website", p.website.as_deref());
    for (key, value) in &p.custom {
        field(&format!("custom.{key}"), Some(value.as_str()));
    }

    user.push_str("\n## What we know from their history\n");
    for line in input.insights.lines() {
        let _ = writeln!(user, "- {line}");
    }

    let _ = write!(
        user,
        "\n## Task\nCampaign \"{}\", step {} of {} (\"{}\"): ",
        input.campaign,
        input.step_index + 1,
        input.step_count,
        input.step_name
    );
    if input.step_index == 0 {
        user.push_str(
            "the first touch; introduce yourself and the reason to talk in one or two sentences.\n",
        );
    } else {
        let _ = writeln!(
            user,
            "follow-up {}; do not repeat the earlier message{}.",
            input.step_index,
            if input.insights.reference_previous {
                ", refer to it naturally in a few words"
            } else {
                ""
            }
        );
    }
    if let Some(angle) = input.angle {
        let _ = writeln!(user, "Angle for this message: {angle}");
    }
    let bounds = gate.bounds(input.channel);
    match input.channel {
        Channel::Email => {
            let (lo, hi) = bounds.subject.unwrap_or((3, 90));
            let _ = writeln!(
                user,
                "Channel: email. Subject {lo} to {hi} characters, plain and specific. Body {} to {} characters of plain text, short paragraphs, one clear question at the end.",
                bounds.body.0, bounds.body.1
            );
        }
        Channel::Sms => {
            let _ = writeln!(
                user,
                "Channel: SMS. subject must be \"\". Body at most {} characters (the company name and \"Reply STOP to opt out.\" are added after it), no emoji.",
                bounds.body.1
            );
        }
        Channel::Linkedin => {
            let _ = writeln!(
                user,
                "Channel: LinkedIn connection note. subject must be \"\". Body at most {} characters, no links.",
                bounds.body.1
            );
        }
    }
    user.push_str("Adapt the tone to the history above, within the brand voice.\n");
    user.push_str("\n## The campaign's message for this step (keep its offer and call to action; rewrite it for this person)\n");
    if let Some(subject) = input.template_subject {
        let _ = writeln!(user, "Subject: {subject}");
    }
    user.push_str(input.template_body.trim());
    user.push('\n');
    Prompt { system, user }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insights::Insights;
    use engager_domain::{LeadId, LeadStatus, NewLead};

    #[test]
    fn the_prompt_names_the_lead_the_step_and_the_constraints() {
        let lead = Lead {
            id: LeadId(1),
            status: LeadStatus::Active,
            profile: NewLead {
                first_name: Some("Jane".into()),
                company: Some("Northwind Inc.".into()),
                ..NewLead::default()
            },
        };
        let sender = SenderFacts {
            name: "Maya".into(),
            company: "Acme".into(),
        };
        let gate = GateConfig {
            allowed_link_domains: vec![],
            forbidden_phrases: vec![],
            max_similarity: 0.6,
            max_sms_segments: 2,
            sender_company: "Acme".into(),
        };
        let insights = Insights {
            tone: "friendly and concise".into(),
            ..Insights::default()
        };
        let input = PromptInput {
            lead: &lead,
            sender: &sender,
            insights: &insights,
            campaign: "Spring",
            step_index: 1,
            step_count: 3,
            step_name: "bump",
            channel: Channel::Sms,
            template_subject: None,
            template_body: "Hi Jane, any thoughts?",
            angle: Some("cost savings"),
        };
        let p = build_prompt(&Brand::default(), &gate, &input);
        assert!(p.system.contains("Do not include any link"));
        assert!(p.user.contains("- first_name: Jane"));
        assert!(p.user.contains("- company_short: Northwind"));
        assert!(p.user.contains("step 2 of 3"));
        assert!(p.user.contains("follow-up 1"));
        assert!(p.user.contains("Angle for this message: cost savings"));
        assert!(p.user.contains("Channel: SMS"));
    }
}
