//! A client for any OpenAI-compatible `POST {base_url}/chat/completions` endpoint (OpenAI,
//! Azure OpenAI, Ollama, vLLM, llama.cpp server), asking for structured output.
//!
//! Invariants: the API key is a `secrecy` string, never in `Debug`, logs or errors; the model's
//! JSON is re-validated locally (local servers may not enforce the schema); a 429
//! `rate_limit_exceeded` is retried after the wait its headers give, at most `max_retries`
//! times and never longer than `max_retry_wait` per wait, while `insufficient_quota` is final;
//! the per-run token budget is checked before every call, so AI use stops once it is spent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The URL type of [`LlmConfig::base_url`].
pub use reqwest::Url;

/// Where and how to reach the model.
#[derive(Clone)]
pub struct LlmConfig {
    /// API root ending in `/v1` (`https://api.openai.com/v1`, `http://localhost:11434/v1`).
    pub base_url: reqwest::Url,
    /// Model name sent in every request.
    pub model: String,
    /// Bearer key; local servers may need none.
    pub api_key: Option<SecretString>,
    /// Send the key in this header instead of `Authorization: Bearer` (Azure OpenAI's v1
    /// endpoint takes `api-key`).
    pub api_key_header: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Sampling temperature.
    pub temperature: f32,
    /// Retries of a 429 `rate_limit_exceeded` or a 5xx.
    pub max_retries: u32,
    /// Longest single wait before a retry; a longer reset gives up instead.
    pub max_retry_wait: Duration,
    /// Most tokens (prompt + completion) this run may use; `None` is unbounded.
    pub budget_tokens: Option<u64>,
    /// Most completion tokens per request.
    pub max_completion_tokens: u32,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url.as_str())
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("budget_tokens", &self.budget_tokens)
            .finish_non_exhaustive()
    }
}

impl LlmConfig {
    /// A configuration with the defaults for everything but the endpoint and model.
    pub fn new(base_url: reqwest::Url, model: impl Into<String>) -> Self {
        Self {
            base_url,
            model: model.into(),
            api_key: None,
            api_key_header: None,
            timeout: Duration::from_secs(30),
            temperature: 0.4,
            max_retries: 3,
            max_retry_wait: Duration::from_secs(20),
            budget_tokens: None,
            max_completion_tokens: 800,
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system",
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user",
            content: content.into(),
        }
    }
    /// An assistant message (a previous answer, when asking for a corrected one).
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant",
            content: content.into(),
        }
    }
}

/// What the model wrote, after local validation against the schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    /// Subject line (empty for SMS and LinkedIn).
    pub subject: String,
    /// Message body.
    pub body: String,
    /// Why the model wrote it this way (kept for the trace, never sent).
    pub rationale: String,
}

/// Tokens one request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// A successful completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The validated draft.
    pub draft: Draft,
    /// The raw JSON text the model returned (for a regeneration turn).
    pub raw: String,
    /// Tokens used.
    pub usage: Usage,
    /// 429s waited out before this answer.
    pub retries: u32,
}

/// A successful structured completion (not a draft).
#[derive(Debug, Clone, PartialEq)]
pub struct StructuredCompletion {
    /// The JSON object the model returned, with exactly the schema's properties.
    pub value: Value,
    /// Tokens used.
    pub usage: Usage,
    /// 429s waited out before this answer.
    pub retries: u32,
}

/// Why a completion did not produce a draft.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The model declined (`message.refusal`).
    #[error("the model refused: {0}")]
    Refused(String),
    /// The content is not JSON matching the schema.
    #[error("the model's output does not match the schema: {0}")]
    InvalidOutput(String),
    /// 429 `rate_limit_exceeded` after every retry, or with a reset beyond the longest wait.
    #[error("rate limited by the provider: {0}")]
    RateLimited(String),
    /// 429 `insufficient_quota`: needs a person (billing); never retried.
    #[error("the provider account has no quota left: {0}")]
    QuotaExhausted(String),
    /// This run's token budget is spent.
    #[error("the run's AI token budget ({limit} tokens) is spent")]
    BudgetExhausted {
        /// The budget.
        limit: u64,
    },
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Any other HTTP error, with the provider's error message.
    #[error("HTTP {status}: {message}")]
    Http {
        /// Status.
        status: u16,
        /// The provider's `error.message` (or the start of the body).
        message: String,
    },
    /// The connection failed.
    #[error("could not reach the model endpoint: {0}")]
    Transport(String),
}

impl LlmError {
    /// Whether the result depends on the moment (rate limit, quota, budget, network), so it
    /// must not be cached: a later run may get a draft.
    pub fn is_transient(&self) -> bool {
        !matches!(self, LlmError::Refused(_) | LlmError::InvalidOutput(_))
    }

    /// A short code for traces and reports.
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::Refused(_) => "refused",
            LlmError::InvalidOutput(_) => "invalid_output",
            LlmError::RateLimited(_) => "rate_limited",
            LlmError::QuotaExhausted(_) => "insufficient_quota",
            LlmError::BudgetExhausted { .. } => "budget_exhausted",
            LlmError::Timeout(_) => "timeout",
            LlmError::Http { .. } => "http_error",
            LlmError::Transport(_) => "unreachable",
        }
    }
}

/// The schema name sent with `response_format`.
pub const SCHEMA_NAME: &str = "personalized_message";

/// The JSON schema of a draft (strict mode: every property required, nothing else allowed).
pub fn draft_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "subject": {"type": "string", "description": "Email subject line; empty string for SMS and LinkedIn."},
            "body": {"type": "string", "description": "The message body, plain text, without signature footer."},
            "rationale": {"type": "string", "description": "One sentence: why this angle for this lead."}
        },
        "required": ["subject", "body", "rationale"],
        "additionalProperties": false
    })
}

/// The token budget of one run, shared by every request of the client.
#[derive(Debug, Default)]
pub struct TokenBudget {
    limit: Option<u64>,
    used: AtomicU64,
}

impl TokenBudget {
    /// A budget of `limit` tokens (`None`: unbounded).
    pub fn new(limit: Option<u64>) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }
    /// Tokens used so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
    /// Whether another request may start.
    pub fn check(&self) -> Result<(), LlmError> {
        match self.limit {
            Some(limit) if self.used() >= limit => Err(LlmError::BudgetExhausted { limit }),
            _ => Ok(()),
        }
    }
    fn spend(&self, tokens: u64) {
        self.used.fetch_add(tokens, Ordering::Relaxed);
    }
}

/// The client. Cheap to clone; clones share the connection pool and the budget.
#[derive(Clone, Debug)]
pub struct LlmClient {
    config: Arc<LlmConfig>,
    http: reqwest::Client,
    budget: Arc<TokenBudget>,
}

impl LlmClient {
    /// A client with a fresh budget.
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        let budget = Arc::new(TokenBudget::new(config.budget_tokens));
        Ok(Self {
            config: Arc::new(config),
            http,
            budget,
        })
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// The run's budget.
    pub fn budget(&self) -> &TokenBudget {
        &self.budget
    }

    /// The request body for `messages` (also what tests and `preview` show).
    pub fn request_body(&self, messages: &[ChatMessage]) -> Value {
        json!({
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_completion_tokens": self.config.max_completion_tokens,
            "n": 1,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "strict": true, "schema": draft_schema()}
            }
        })
    }

    fn endpoint(&self) -> String {
        format!(
            "{}/chat/completions",
            self.config.base_url.as_str().trim_end_matches('/')
        )
    }

    /// Asks for one draft; retries 429 `rate_limit_exceeded` and 5xx within the bounds.
    pub async fn complete(&self, messages: &[ChatMessage]) -> Result<Completion, LlmError> {
        let body = self.request_body(messages);
        let (text, retries) = self.post(&body).await?;
        let (completion, usage) = parse_completion(&text)?;
        self.budget.spend(usage.total());
        completion.map(|(draft, raw)| Completion {
            draft,
            raw,
            usage,
            retries,
        })
    }

    /// The request body of a structured call with another schema than the draft's (strict
    /// mode: the caller's schema must require every property and forbid others).
    pub fn structured_request_body(
        &self,
        messages: &[ChatMessage],
        schema_name: &str,
        schema: &Value,
    ) -> Value {
        json!({
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_completion_tokens": self.config.max_completion_tokens,
            "n": 1,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "strict": true, "schema": schema}
            }
        })
    }

    /// Asks for one JSON object matching `schema` (reply classification, narratives), with the
    /// same retries and budget as drafts. The caller validates the object's values; this
    /// checks that the content is a JSON object with exactly the schema's properties.
    pub async fn complete_structured(
        &self,
        messages: &[ChatMessage],
        schema_name: &str,
        schema: &Value,
    ) -> Result<StructuredCompletion, LlmError> {
        let body = self.structured_request_body(messages, schema_name, schema);
        let (text, retries) = self.post(&body).await?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| LlmError::InvalidOutput(format!("the response is not JSON: {e}")))?;
        let usage = Usage {
            prompt_tokens: value["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            completion_tokens: value["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        };
        self.budget.spend(usage.total());
        let message = &value["choices"][0]["message"];
        if message.is_null() {
            return Err(LlmError::InvalidOutput(
                "the response has no choices[0].message".into(),
            ));
        }
        if let Some(refusal) = message["refusal"].as_str().filter(|r| !r.trim().is_empty()) {
            return Err(LlmError::Refused(refusal.to_owned()));
        }
        if value["choices"][0]["finish_reason"].as_str() == Some("length") {
            return Err(LlmError::InvalidOutput(
                "the answer was cut off at the token limit".into(),
            ));
        }
        let content = message["content"]
            .as_str()
            .ok_or_else(|| LlmError::InvalidOutput("message.content is empty".into()))?;
        let parsed: Value = serde_json::from_str(content.trim())
            .map_err(|e| LlmError::InvalidOutput(format!("content is not JSON: {e}")))?;
        let Value::Object(map) = &parsed else {
            return Err(LlmError::InvalidOutput(
                "content is not a JSON object".into(),
            ));
        };
        let properties = schema["properties"].as_object();
        for key in map.keys() {
            if !properties.is_some_and(|p| p.contains_key(key)) {
                return Err(LlmError::InvalidOutput(format!(
                    "unexpected property {key:?}"
                )));
            }
        }
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap_or("");
            if !map.contains_key(key) {
                return Err(LlmError::InvalidOutput(format!("property {key:?} missing")));
            }
        }
        Ok(StructuredCompletion {
            value: parsed,
            usage,
            retries,
        })
    }

    /// Posts a request body; returns the successful response's text and the retries it took.
    async fn post(&self, body: &Value) -> Result<(String, u32), LlmError> {
        self.budget.check()?;
        let mut retries = 0;
        loop {
            let mut request = self.http.post(self.endpoint()).json(body);
            if let Some(key) = &self.config.api_key {
                request = match &self.config.api_key_header {
                    Some(header) => request.header(header.as_str(), key.expose_secret()),
                    None => request.bearer_auth(key.expose_secret()),
                };
            }
            let response = request.send().await.map_err(|e| self.transport(e))?;
            let status = response.status();
            let headers = response.headers().clone();
            let text = response.text().await.map_err(|e| self.transport(e))?;
            if status.is_success() {
                return Ok((text, retries));
            }
            let error = ProviderError::parse(&text);
            let retryable = match status.as_u16() {
                429 if error.is_quota() => {
                    return Err(LlmError::QuotaExhausted(error.message));
                }
                429 | 500 | 502 | 503 | 504 | 408 => {
                    headers.get("x-should-retry").and_then(|v| v.to_str().ok()) != Some("false")
                }
                _ => false,
            };
            if !retryable || retries >= self.config.max_retries {
                return Err(if status.as_u16() == 429 {
                    LlmError::RateLimited(format!("{} (after {retries} retries)", error.message))
                } else {
                    LlmError::Http {
                        status: status.as_u16(),
                        message: error.message,
                    }
                });
            }
            let wait = retry_wait(&headers).unwrap_or_else(|| backoff(retries));
            if wait > self.config.max_retry_wait {
                return Err(LlmError::RateLimited(format!(
                    "{}; the provider asks to wait {wait:?}, longer than the {:?} allowed",
                    error.message, self.config.max_retry_wait
                )));
            }
            tracing::warn!(
                status = status.as_u16(),
                wait_ms = wait.as_millis() as u64,
                retry = retries + 1,
                "Model endpoint asked us to slow down; retrying."
            );
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }

    fn transport(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.config.timeout)
        } else {
            // Without the URL: it is ours, and keeps errors short.
            LlmError::Transport(e.without_url().to_string())
        }
    }
}

/// The provider's `{"error":{"message","type","param","code"}}`.
struct ProviderError {
    message: String,
    kind: Option<String>,
    code: Option<String>,
}

impl ProviderError {
    fn parse(text: &str) -> Self {
        let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let error = &value["error"];
        let field = |name: &str| error[name].as_str().map(str::to_owned);
        Self {
            message: field("message").unwrap_or_else(|| text.chars().take(200).collect()),
            kind: field("type"),
            code: field("code"),
        }
    }

    fn is_quota(&self) -> bool {
        self.kind.as_deref() == Some("insufficient_quota")
            || self.code.as_deref() == Some("insufficient_quota")
    }
}

type Parsed = Result<(Draft, String), LlmError>;

/// Parses a chat.completion body: the usage always, then the draft, a refusal or why the
/// content does not match the schema.
fn parse_completion(text: &str) -> Result<(Parsed, Usage), LlmError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| LlmError::InvalidOutput(format!("the response is not JSON: {e}")))?;
    let usage = Usage {
        prompt_tokens: value["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: value["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    };
    let message = &value["choices"][0]["message"];
    if message.is_null() {
        return Err(LlmError::InvalidOutput(
            "the response has no choices[0].message".into(),
        ));
    }
    if let Some(refusal) = message["refusal"].as_str().filter(|r| !r.trim().is_empty()) {
        return Ok((Err(LlmError::Refused(refusal.to_owned())), usage));
    }
    if value["choices"][0]["finish_reason"].as_str() == Some("length") {
        return Ok((
            Err(LlmError::InvalidOutput(
                "the answer was cut off at the token limit".into(),
            )),
            usage,
        ));
    }
    let Some(content) = message["content"].as_str() else {
        return Ok((
            Err(LlmError::InvalidOutput("message.content is empty".into())),
            usage,
        ));
    };
    Ok((
        validate_draft(content).map(|d| (d, content.to_owned())),
        usage,
    ))
}

/// Validates the model's content against [`draft_schema`] locally.
pub fn validate_draft(content: &str) -> Result<Draft, LlmError> {
    let value: Value = serde_json::from_str(content.trim())
        .map_err(|e| LlmError::InvalidOutput(format!("content is not JSON: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(LlmError::InvalidOutput(
            "content is not a JSON object".into(),
        ));
    };
    for key in map.keys() {
        if !["subject", "body", "rationale"].contains(&key.as_str()) {
            return Err(LlmError::InvalidOutput(format!(
                "unexpected property {key:?}"
            )));
        }
    }
    let field = |name: &str| -> Result<String, LlmError> {
        map.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                LlmError::InvalidOutput(format!("property {name:?} missing or not a string"))
            })
    };
    Ok(Draft {
        subject: field("subject")?,
        body: field("body")?,
        rationale: field("rationale")?,
    })
}

/// The wait a 429 or 5xx asks for: `retry-after-ms`, then `retry-after` (seconds), then the
/// larger of the `x-ratelimit-reset-*` durations.
pub fn retry_wait(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    if let Some(s) = get("retry-after").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(s.max(0.0)));
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| get(h).and_then(parse_reset))
        .max()
}

/// Parses OpenAI's reset durations: `12ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
pub fn parse_reset(text: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            0.001
        } else {
            match c {
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                _ => return None,
            }
        };
        total += number.parse::<f64>().ok()? * unit;
        number.clear();
        any = true;
    }
    (any && number.is_empty()).then(|| Duration::from_secs_f64(total))
}

fn backoff(retry: u32) -> Duration {
    Duration::from_millis(500u64 << retry.min(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_durations_parse_as_openai_writes_them() {
        assert_eq!(parse_reset("12ms"), Some(Duration::from_millis(12)));
        assert_eq!(parse_reset("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_reset("soon"), None);
        assert_eq!(parse_reset("12"), None);
    }

    #[test]
    fn drafts_are_validated_locally() {
        assert!(validate_draft(r#"{"subject":"s","body":"b","rationale":"r"}"#).is_ok());
        assert!(validate_draft(r#"{"subject":"s","body":"b"}"#).is_err());
        assert!(validate_draft(r#"{"subject":"s","body":"b","rationale":"r","x":1}"#).is_err());
        assert!(validate_draft(r#"{"subject":"s","body":3,"rationale":"r"}"#).is_err());
        assert!(validate_draft("Sure! Here is your email").is_err());
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let mut config = LlmConfig::new("http://127.0.0.1:1/v1".parse().unwrap(), "m");
        config.api_key = Some(SecretString::from("sk-very-secret"));
        assert!(!format!("{config:?}").contains("sk-very-secret"));
    }
}
