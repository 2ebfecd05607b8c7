//! The AI personalizer: prompt → model → gate → one regeneration with the failures fed back →
//! otherwise a fallback to the step's template. The caller (the planner) caches the outcome
//! under [`cache_key`] so a re-run is reproducible and free.
//!
//! Invariant: an [`DraftOutcome::Accepted`] draft passed every gate check; anything else is
//! a fallback, and the template is used.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::gate::{check, CheckContext, GateConfig, GateReport};
use crate::llm::{ChatMessage, Draft, LlmClient, LlmError, Usage};
use crate::prompt::{Brand, Prompt, PROMPT_VERSION};

/// What personalization decided for one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DraftOutcome {
    /// The model's draft passed the gate: send it.
    Accepted {
        /// The draft.
        draft: Draft,
        /// Model calls it took (1, or 2 after a regeneration).
        attempts: u32,
        /// The gate's report on it.
        report: GateReport,
    },
    /// Use the step's template.
    Fallback {
        /// Short code (`gate_failed`, `refused`, `rate_limited`, ...).
        code: String,
        /// Why, for the trace.
        reason: String,
        /// Model calls made.
        attempts: u32,
        /// The gate's report on the last draft, when there was one.
        report: Option<GateReport>,
    },
}

impl DraftOutcome {
    /// The accepted draft, if any.
    pub fn draft(&self) -> Option<&Draft> {
        match self {
            DraftOutcome::Accepted { draft, .. } => Some(draft),
            DraftOutcome::Fallback { .. } => None,
        }
    }

    /// One sentence for the trace.
    pub fn describe(&self) -> String {
        match self {
            DraftOutcome::Accepted {
                attempts, report, ..
            } => format!(
                "AI draft accepted (score {:.2}, {} check(s) passed{})",
                report.score,
                report.checks.len(),
                if *attempts > 1 {
                    ", after one regeneration"
                } else {
                    ""
                }
            ),
            DraftOutcome::Fallback { reason, report, .. } => {
                let score = report
                    .as_ref()
                    .map(|r| format!(" (score {:.2})", r.score))
                    .unwrap_or_default();
                format!("AI fell back to the template: {reason}{score}")
            }
        }
    }
}

/// One generation: its outcome, whether it may be cached, and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The outcome.
    pub outcome: DraftOutcome,
    /// False when the outcome depends on the moment (rate limit, quota, budget, network):
    /// a later run should try again.
    pub cacheable: bool,
    /// Tokens used.
    pub usage: Usage,
}

/// The personalizer: a client, the brand and the gate.
#[derive(Debug, Clone)]
pub struct AiPersonalizer {
    client: LlmClient,
    brand: Brand,
    gate: GateConfig,
}

impl AiPersonalizer {
    /// A personalizer.
    pub fn new(client: LlmClient, brand: Brand, gate: GateConfig) -> Self {
        Self {
            client,
            brand,
            gate,
        }
    }

    /// The client (model name, budget).
    pub fn client(&self) -> &LlmClient {
        &self.client
    }

    /// The brand files.
    pub fn brand(&self) -> &Brand {
        &self.brand
    }

    /// The gate settings.
    pub fn gate(&self) -> &GateConfig {
        &self.gate
    }

    /// The cache key of a prompt and its check context under this model and gate.
    pub fn cache_key(&self, prompt: &Prompt, context: &CheckContext) -> String {
        cache_key(self.client.model(), prompt, context, &self.gate)
    }

    /// Generates a checked draft, regenerating once with the failures fed back.
    pub async fn generate(&self, prompt: &Prompt, context: &CheckContext) -> Generated {
        let mut messages = vec![
            ChatMessage::system(prompt.system.clone()),
            ChatMessage::user(prompt.user.clone()),
        ];
        let mut usage = Usage::default();
        let mut last_report = None;
        let mut last_problem = String::new();
        for attempt in 1..=2u32 {
            let result = self.client.complete(&messages).await;
            let problem = match result {
                Ok(completion) => {
                    usage.prompt_tokens += completion.usage.prompt_tokens;
                    usage.completion_tokens += completion.usage.completion_tokens;
                    let report = check(&completion.draft, context, &self.gate);
                    if report.passed() {
                        return Generated {
                            outcome: DraftOutcome::Accepted {
                                draft: completion.draft,
                                attempts: attempt,
                                report,
                            },
                            cacheable: true,
                            usage,
                        };
                    }
                    let failures = report.failures();
                    messages.push(ChatMessage::assistant(completion.raw));
                    last_report = Some(report);
                    format!("the draft failed these checks: {}", failures.join("; "))
                }
                Err(LlmError::InvalidOutput(why)) => {
                    last_report = None;
                    format!("the answer was not a JSON object matching the schema ({why})")
                }
                Err(error) => {
                    return Generated {
                        outcome: DraftOutcome::Fallback {
                            code: error.code().to_owned(),
                            reason: error.to_string(),
                            attempts: attempt,
                            report: last_report,
                        },
                        cacheable: !error.is_transient(),
                        usage,
                    };
                }
            };
            messages.push(ChatMessage::user(format!(
                "Rewrite the message: {problem}. Fix every point and answer with the JSON object only."
            )));
            last_problem = problem;
        }
        Generated {
            outcome: DraftOutcome::Fallback {
                code: if last_report.is_some() {
                    "gate_failed".to_owned()
                } else {
                    "invalid_output".to_owned()
                },
                reason: format!("after one regeneration, {last_problem}"),
                attempts: 2,
                report: last_report,
            },
            cacheable: true,
            usage,
        }
    }
}

/// The cache key: a SHA-256 over the model, the prompt version, the whole prompt (which
/// holds every input: brand, lead, insights, step, channel, template), the check context and
/// the gate settings.
pub fn cache_key(
    model: &str,
    prompt: &Prompt,
    context: &CheckContext,
    gate: &GateConfig,
) -> String {
    let mut hash = Sha256::new();
    for part in [
        model,
        PROMPT_VERSION,
        &prompt.system,
        &prompt.user,
        &serde_json::to_string(context).unwrap_or_default(),
        &gate.fingerprint(),
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(hash.finalize())
}
