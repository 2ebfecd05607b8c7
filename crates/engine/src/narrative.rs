//! `engager recommend --narrative`: the recommendations rewritten as a short narrative by the
//! configured model, accepted only when every number in it appears in the evidence given to
//! the model; otherwise the plain list stands and the reason is said.

use engager_ai::llm::{ChatMessage, LlmClient};
use serde_json::{json, Value};

use crate::analytics::Recommendation;

/// The schema name sent with a narrative request.
pub const NARRATIVE_SCHEMA_NAME: &str = "recommendation_narrative";

/// Most characters a narrative may have.
pub const MAX_NARRATIVE_CHARS: usize = 1_200;

/// The JSON schema of a narrative (strict mode).
pub fn narrative_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "narrative": {
                "type": "string",
                "description": "A short narrative (at most 120 words) of the recommendations, using only numbers that appear in them, written exactly as they appear."
            }
        },
        "required": ["narrative"],
        "additionalProperties": false
    })
}

/// What became of the narrative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Narrative {
    /// The model's narrative, every number checked against the evidence.
    Accepted(String),
    /// The model answered, but the narrative was rejected (numbers not in the evidence, empty,
    /// too long); the plain list stands.
    Rejected {
        /// Why.
        reason: String,
        /// What the model wrote.
        text: String,
    },
    /// The model could not be asked or gave no usable answer; the plain list stands.
    Failed(String),
}

/// The evidence the model gets: each recommendation's action and evidence, numbered.
pub fn evidence_text(recs: &[Recommendation]) -> String {
    recs.iter()
        .enumerate()
        .map(|(i, r)| format!("{}. {} — {}", i + 1, r.action, r.evidence))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The numbers of a text, as written ("12.7", "300", "0.004"); a thousands separator
/// ("1,200") is read as one number.
pub fn numbers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let mut n = String::new();
            while i < chars.len() {
                let c = chars[i];
                let next_digit = chars.get(i + 1).is_some_and(|d| d.is_ascii_digit());
                if c.is_ascii_digit() || (c == '.' && next_digit) {
                    n.push(c);
                } else if c == ','
                    && chars
                        .get(i + 1..i + 4)
                        .is_some_and(|d| d.iter().all(char::is_ascii_digit))
                    && !chars.get(i + 4).is_some_and(|d| d.is_ascii_digit())
                {
                    // "1,200": a thousands separator.
                } else {
                    break;
                }
                i += 1;
            }
            out.push(n);
        } else {
            i += 1;
        }
    }
    out
}

/// The numbers of `narrative` that do not appear in `evidence` (compared by value, so "0.50"
/// matches "0.5"). The numbering of the list (1, 2, …, up to the number of recommendations) is
/// allowed.
pub fn unsupported_numbers(narrative: &str, evidence: &str, items: usize) -> Vec<String> {
    let known: Vec<f64> = numbers(evidence)
        .iter()
        .filter_map(|n| n.parse::<f64>().ok())
        .collect();
    let mut missing: Vec<String> = numbers(narrative)
        .into_iter()
        .filter(|n| {
            let Ok(v) = n.parse::<f64>() else {
                return true;
            };
            let ordinal = v.fract() == 0.0 && v >= 1.0 && v <= items as f64;
            !ordinal && !known.iter().any(|k| (k - v).abs() < 1e-9)
        })
        .collect();
    missing.dedup();
    missing
}

/// Asks the model for a narrative of the recommendations and checks it.
pub async fn narrate(llm: &LlmClient, recs: &[Recommendation]) -> Narrative {
    if recs.is_empty() {
        return Narrative::Failed("no recommendation to narrate".into());
    }
    let evidence = evidence_text(recs);
    let messages = [
        ChatMessage::system(
            "You turn a sales-outreach analysis into a short narrative for a sales manager: at \
             most 120 words, plain prose, no list. Use only numbers that appear in the \
             recommendations, written exactly as they appear there; never compute, round or \
             invent a number.",
        ),
        ChatMessage::user(format!("Recommendations:\n{evidence}")),
    ];
    let answer = match llm
        .complete_structured(&messages, NARRATIVE_SCHEMA_NAME, &narrative_schema())
        .await
    {
        Ok(a) => a,
        Err(e) => return Narrative::Failed(e.to_string()),
    };
    let Some(text) = answer.value["narrative"].as_str().map(str::trim) else {
        return Narrative::Failed("the model's \"narrative\" is not a string".into());
    };
    check(text, &evidence, recs.len())
}

/// Accepts a narrative only when it is non-empty, not too long, and every number in it
/// appears in the evidence.
pub fn check(text: &str, evidence: &str, items: usize) -> Narrative {
    if text.is_empty() {
        return Narrative::Rejected {
            reason: "the narrative is empty".into(),
            text: String::new(),
        };
    }
    if text.chars().count() > MAX_NARRATIVE_CHARS {
        return Narrative::Rejected {
            reason: format!(
                "the narrative has {} characters, more than {MAX_NARRATIVE_CHARS}",
                text.chars().count()
            ),
            text: text.to_owned(),
        };
    }
    let missing = unsupported_numbers(text, evidence, items);
    if !missing.is_empty() {
        return Narrative::Rejected {
            reason: format!(
                "it states number(s) not in the evidence: {}",
                missing.join(", ")
            ),
            text: text.to_owned(),
        };
    }
    Narrative::Accepted(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_as_written() {
        assert_eq!(
            numbers("sms 12.7% (38 of 300) vs 1,200 sends; p = 0.004. Step 2."),
            vec!["12.7", "38", "300", "1200", "0.004", "2"]
        );
        assert!(numbers("no figures here").is_empty());
    }

    #[test]
    fn only_numbers_from_the_evidence_pass() {
        let evidence = "1. Prefer sms for SaaS — positive replies: sms 12.7% (38 of 300) vs email 3.3% (10 of 300) (p = 0.000)\n2. Stop DE — at most 0.50%";
        let good = "For SaaS, texts drew 12.7% positive replies against 3.3% by email, from 300 sends each; Germany, at 0.5% at best, is not worth it (point 2).";
        assert_eq!(check(good, evidence, 2), Narrative::Accepted(good.into()));
        let invented = "Texts are almost 4 times better: 12.7% vs 3.3%.";
        match check(invented, evidence, 2) {
            Narrative::Rejected { reason, .. } => {
                assert!(reason.ends_with("not in the evidence: 4"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let rounded = "Texts drew 13% positive replies.";
        assert!(matches!(
            check(rounded, evidence, 2),
            Narrative::Rejected { .. }
        ));
        assert!(matches!(check("", evidence, 2), Narrative::Rejected { .. }));
    }
}
