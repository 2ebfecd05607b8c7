//! Reply classification: positive, neutral, negative, out of office or a request to
//! unsubscribe — by the configured model (strict JSON, validated here), else by keyword rules,
//! or by a person (`engager reply classify`), who can always override.
//!
//! Invariants: classifying never loses a reply (a model failure falls back to the keyword
//! rules, and the reply is recorded either way); the model's answer is accepted only as a JSON
//! object with a known class and a reason; every classification is stored with who made it
//! and why, and changes the reply's event so reports, the frequency rules and the A/B verdicts
//! all see the same class.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use engager_ai::llm::{ChatMessage, LlmClient, LlmError};
use engager_domain::reply::{classify_by_keywords, ReplyClass};
use engager_store::{ClassifiedReply, ReplyClassification, ReplyRef, Store, StoreError};
use serde_json::{json, Value};
use tracing::warn;

/// The schema name sent with a classification request.
pub const CLASSIFICATION_SCHEMA_NAME: &str = "reply_classification";

/// The JSON schema of a classification (strict mode).
pub fn classification_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "class": {
                "type": "string",
                "enum": ReplyClass::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "description": "positive: interested (wants a call, demo or details); neutral: a person answered without interest or refusal; negative: not interested, wrong person, annoyed; out_of_office: automatic or away message; unsubscribe: asks to be removed or not contacted again."
            },
            "reason": {"type": "string", "description": "One short sentence: why this class."}
        },
        "required": ["class", "reason"],
        "additionalProperties": false
    })
}

/// Who classified a reply and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The class.
    pub class: ReplyClass,
    /// `llm` or `rules`.
    pub source: &'static str,
    /// The model's reason, or the rule that decided (with the model's error when it failed).
    pub reason: String,
}

/// Classifies replies with the model when one is configured, else with keyword rules.
#[derive(Debug, Clone, Default)]
pub struct ReplyClassifier {
    llm: Option<Arc<LlmClient>>,
}

impl ReplyClassifier {
    /// Keyword rules only.
    pub fn rules_only() -> Self {
        Self { llm: None }
    }

    /// The model first, the keyword rules when it fails.
    pub fn with_llm(client: Arc<LlmClient>) -> Self {
        Self { llm: Some(client) }
    }

    /// Whether a model is configured.
    pub fn uses_llm(&self) -> bool {
        self.llm.is_some()
    }

    /// Classifies a reply by its subject and text. Never fails: a model error (unreachable,
    /// refused, malformed or unknown class) falls back to the keyword rules, and the reason
    /// says so.
    pub async fn classify(&self, subject: &str, text: &str) -> Classification {
        let Some(llm) = &self.llm else {
            let (class, reason) = classify_by_keywords(subject, text);
            return Classification {
                class,
                source: "rules",
                reason,
            };
        };
        match ask(llm, subject, text).await {
            Ok((class, reason)) => Classification {
                class,
                source: "llm",
                reason,
            },
            Err(e) => {
                warn!(error = %e, "The model could not classify a reply; keyword rules used.");
                let (class, rule) = classify_by_keywords(subject, text);
                Classification {
                    class,
                    source: "rules",
                    reason: format!("{rule} (the model failed: {e})"),
                }
            }
        }
    }
}

async fn ask(llm: &LlmClient, subject: &str, text: &str) -> Result<(ReplyClass, String), LlmError> {
    let messages = [
        ChatMessage::system(
            "You classify replies to sales outreach emails. Answer with the JSON object the \
             schema describes: the class of the reply and one short sentence why. Quoted earlier \
             messages below the reply are context, not the reply.",
        ),
        ChatMessage::user(format!(
            "Subject: {subject}\n\nReply:\n{}",
            text.chars().take(3_000).collect::<String>()
        )),
    ];
    let answer = llm
        .complete_structured(
            &messages,
            CLASSIFICATION_SCHEMA_NAME,
            &classification_schema(),
        )
        .await?;
    validate_classification(&answer.value)
}

/// Checks the model's object: a known class and a non-empty reason.
pub fn validate_classification(value: &Value) -> Result<(ReplyClass, String), LlmError> {
    let class = value["class"]
        .as_str()
        .ok_or_else(|| LlmError::InvalidOutput("property \"class\" is not a string".into()))?;
    let class: ReplyClass =
        class
            .parse()
            .map_err(|e: engager_domain::reply::UnknownReplyClass| {
                LlmError::InvalidOutput(e.to_string())
            })?;
    let reason = value["reason"]
        .as_str()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| LlmError::InvalidOutput("property \"reason\" is empty".into()))?;
    Ok((class, reason.chars().take(300).collect()))
}

/// Stores a person's classification of a reply (an event id), with its effects.
pub async fn classify_by_person(
    store: &dyn Store,
    event_id: i64,
    class: ReplyClass,
    note: &str,
    now: DateTime<Utc>,
) -> Result<ClassifiedReply, StoreError> {
    store
        .classify_reply(&ReplyClassification {
            reply: ReplyRef::Event(event_id),
            class,
            source: "person".into(),
            reason: if note.trim().is_empty() {
                "classified by hand".into()
            } else {
                note.trim().to_owned()
            },
            at: now,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_known_class_with_a_reason_is_accepted() {
        assert_eq!(
            validate_classification(&json!({"class": "negative", "reason": "Says no thanks."}))
                .unwrap(),
            (ReplyClass::Negative, "Says no thanks.".to_owned())
        );
        for bad in [
            json!({"class": "maybe", "reason": "unsure"}),
            json!({"class": 3, "reason": "x"}),
            json!({"class": "positive", "reason": "  "}),
            json!({"class": "positive"}),
        ] {
            assert!(
                matches!(
                    validate_classification(&bad),
                    Err(LlmError::InvalidOutput(_))
                ),
                "{bad}"
            );
        }
    }
}
