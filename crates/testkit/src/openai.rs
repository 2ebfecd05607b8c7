//! A fake OpenAI-compatible chat-completions server (protocol notes §5) for tests.
//!
//! [`FakeOpenAi::start`] serves `POST /v1/chat/completions` on `127.0.0.1:<random port>`;
//! configure clients with [`FakeOpenAi::base_url`] (which ends in `/v1`). It stops when dropped.
//!
//! What it enforces, as the API does, answering with the OpenAI error shape
//! `{"error":{"message","type","param","code"}}`:
//! - `Authorization: Bearer <key>` when the fake has a key, else 401 `invalid_api_key`;
//! - a JSON body (`Content-Type: application/json`), else 400 `invalid_request_error`;
//! - `model` a non-empty string (404 `model_not_found` for a model it does not serve);
//!   `messages` a non-empty array of objects with `role` in
//!   `system|developer|user|assistant|tool` and a `content` string (or array of parts);
//!   `temperature` a number in 0..=2; `n` an integer ≥ 1; `max_completion_tokens` /
//!   `max_tokens` integers ≥ 1; `stream` a boolean (streaming is not served: 400);
//! - `response_format` of type `text`, `json_object` or `json_schema`; a `json_schema` needs
//!   an object with a `name` of `[a-zA-Z0-9_-]{1,64}` and a `schema` object, and with
//!   `strict: true` every property listed in `required` and `additionalProperties: false`.
//!
//! A valid request gets the next scripted [`Reply`] (or, when none is queued, the default
//! responder's), as a `chat.completion` with `usage` counts. Every request is recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::faults::{json_response, serve};

/// What the fake answers to one valid request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A completion whose content is this JSON value, serialized.
    Json(Value),
    /// A completion whose content is this text verbatim (e.g. invalid JSON).
    Content(String),
    /// A completion with `content: null` and this `refusal`.
    Refusal(String),
    /// 429 `rate_limit_exceeded` with `retry-after-ms` and `x-ratelimit-reset-requests`.
    RateLimited {
        /// Milliseconds to wait.
        retry_after_ms: u64,
    },
    /// 429 `insufficient_quota` (no `Retry-After`: it needs a person).
    InsufficientQuota,
    /// 500 `server_error`.
    ServerError,
    /// Wait, then answer with the inner reply.
    Slow(Duration, Box<Reply>),
}

/// A request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The path.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The parsed body (`Null` when it was not JSON).
    pub body: Value,
    /// The request's headers (names lower-case), for checking how the key was sent.
    pub headers: Vec<(String, String)>,
}

type Responder = dyn Fn(&Value) -> Reply + Send + Sync;

/// A running fake; the server stops when this is dropped.
pub struct FakeOpenAi {
    shared: Arc<Shared>,
    base_url: String,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeOpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOpenAi")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

struct Shared {
    api_key: Option<String>,
    models: Vec<String>,
    state: Mutex<Book>,
}

struct Book {
    script: VecDeque<Reply>,
    responder: Arc<Responder>,
    log: Vec<RecordedRequest>,
    next_id: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Book> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FakeOpenAi {
    /// Starts the fake on the current tokio runtime. `api_key`: the bearer it requires
    /// (`None` accepts any or none, like Ollama); `models`: the models it serves (empty: any).
    pub async fn start(api_key: Option<&str>, models: &[&str]) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            api_key: api_key.map(str::to_owned),
            models: models.iter().map(|m| m.to_string()).collect(),
            state: Mutex::new(Book {
                script: VecDeque::new(),
                responder: Arc::new(default_reply),
                log: Vec::new(),
                next_id: 1,
            }),
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (address, server) = serve(router).await?;
        Ok(Self {
            shared,
            base_url: format!("http://{address}/v1"),
            server,
        })
    }

    /// The API root to configure clients with (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Queues a reply for the next valid request (replies queue in order).
    pub fn reply_next(&self, reply: Reply) {
        self.shared.lock().script.push_back(reply);
    }

    /// Replaces the default responder, used when no reply is queued.
    pub fn respond_with(&self, responder: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        self.shared.lock().responder = Arc::new(responder);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.clone()
    }

    /// How many requests reached the completions endpoint.
    pub fn request_count(&self) -> usize {
        self.shared.lock().log.len()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The default answer: a message built from the `- first_name:` and `- company_short:` (or
/// `- company:`) lines of the last user message, so it names the lead the way a model would.
pub fn default_reply(request: &Value) -> Reply {
    let user = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let first_user = request["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or(user);
    let field = |key: &str| {
        first_user
            .lines()
            .find_map(|l| l.strip_prefix(&format!("- {key}: ")))
            .map(str::trim)
    };
    let name = field("first_name").unwrap_or("there");
    let company = field("company_short")
        .or_else(|| field("company"))
        .unwrap_or("your team");
    let sms = first_user.contains("Channel: SMS") || first_user.contains("Channel: LinkedIn");
    let subject = if sms {
        String::new()
    } else {
        format!("A faster week for {company}")
    };
    let body = if sms {
        format!(
            "Hi {name}, quick idea for {company}: reporting in an hour, not a day. Open to a chat?"
        )
    } else {
        format!(
            "Hi {name},\n\nTeams like {company} usually spend a day a week stitching reports together. \
             We help them get that down to an hour, without changing their tools.\n\n\
             Would a 15-minute call next week be useful?"
        )
    };
    Reply::Json(json!({
        "subject": subject,
        "body": body,
        "rationale": format!("Short, specific to {company}, one question."),
    }))
}

fn openai_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Response {
    json_response(
        status,
        &[],
        json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
            .to_string(),
    )
}

fn invalid(param: &str, message: &str) -> Response {
    openai_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        None,
        Some(param),
        message,
    )
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (response, status) = answer(&shared, &method, &path, &headers, &parsed, &body).await;
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    shared.lock().log.push(RecordedRequest {
        path,
        status,
        body: parsed,
        headers,
    });
    response
}

async fn answer(
    shared: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
    raw: &Bytes,
) -> (Response, u16) {
    let done = |r: Response| {
        let s = r.status().as_u16();
        (r, s)
    };
    if path != "/v1/chat/completions" {
        return done(openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("unknown_url"),
            None,
            &format!("Unknown request URL: {method} {path}."),
        ));
    }
    if method != Method::POST {
        return done(openai_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            None,
            None,
            &format!("Invalid method for URL ({method} {path})"),
        ));
    }
    if let Some(key) = &shared.api_key {
        // OpenAI takes a bearer token; Azure OpenAI's v1 endpoint also an `api-key` header.
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()));
        if given != Some(key.as_str()) {
            return done(openai_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                None,
                "Incorrect API key provided.",
            ));
        }
    }
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type || body.is_null() && !raw.is_empty() {
        return done(invalid(
            "body",
            "We could not parse the JSON body of your request. The API expects a JSON payload with Content-Type: application/json.",
        ));
    }
    if let Err(response) = validate(body) {
        return done(response);
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    if !shared.models.is_empty() && !shared.models.contains(&model) {
        return done(openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            Some("model"),
            &format!("The model `{model}` does not exist or you do not have access to it."),
        ));
    }
    let reply = {
        let mut state = shared.lock();
        match state.script.pop_front() {
            Some(reply) => reply,
            None => (state.responder)(body),
        }
    };
    let id = {
        let mut state = shared.lock();
        state.next_id += 1;
        state.next_id
    };
    done(play(reply, body, &model, id).await)
}

async fn play(mut reply: Reply, request: &Value, model: &str, id: u64) -> Response {
    while let Reply::Slow(wait, inner) = reply {
        tokio::time::sleep(wait).await;
        reply = *inner;
    }
    let (content, refusal) = match reply {
        Reply::Json(value) => (Some(value.to_string()), None),
        Reply::Content(text) => (Some(text), None),
        Reply::Refusal(text) => (None, Some(text)),
        Reply::RateLimited { retry_after_ms } => {
            let mut response = openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                Some("rate_limit_exceeded"),
                None,
                "Rate limit reached for requests. Please try again shortly.",
            );
            let h = response.headers_mut();
            let seconds = retry_after_ms.div_ceil(1000).max(1).to_string();
            for (name, value) in [
                ("retry-after-ms", retry_after_ms.to_string()),
                ("retry-after", seconds),
                ("x-ratelimit-limit-requests", "60".to_owned()),
                ("x-ratelimit-remaining-requests", "0".to_owned()),
                ("x-ratelimit-reset-requests", format!("{retry_after_ms}ms")),
            ] {
                if let Ok(v) = value.parse() {
                    h.insert(name, v);
                }
            }
            return response;
        }
        Reply::InsufficientQuota => {
            return openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                Some("insufficient_quota"),
                None,
                "You exceeded your current quota, please check your plan and billing details.",
            )
        }
        Reply::ServerError => {
            return openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                None,
                "The server had an error while processing your request.",
            )
        }
        Reply::Slow(..) => unreachable!("unwrapped above"),
    };
    let prompt_chars: usize = request["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["content"].as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    let completion_chars = content
        .as_deref()
        .or(refusal.as_deref())
        .map_or(0, str::len);
    let (prompt_tokens, completion_tokens) =
        (prompt_chars.div_ceil(4), completion_chars.div_ceil(4));
    let mut response = json_response(
        StatusCode::OK,
        &[],
        json!({
            "id": format!("chatcmpl-fake{id:08}"),
            "object": "chat.completion",
            "created": 1_767_225_600u64 + id,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fake"
        })
        .to_string(),
    );
    let h = response.headers_mut();
    for (name, value) in [
        ("x-request-id", format!("req_fake{id:08}")),
        ("x-ratelimit-limit-requests", "60".to_owned()),
        ("x-ratelimit-remaining-requests", "59".to_owned()),
        ("x-ratelimit-reset-requests", "1s".to_owned()),
    ] {
        if let Ok(v) = value.parse() {
            h.insert(name, v);
        }
    }
    response
}

/// Checks a body against the chat-completions request shape.
#[allow(clippy::result_large_err)]
fn validate(body: &Value) -> Result<(), Response> {
    let Some(object) = body.as_object() else {
        return Err(invalid("body", "The request body must be a JSON object."));
    };
    match object.get("model").and_then(Value::as_str) {
        Some(m) if !m.trim().is_empty() => {}
        _ => return Err(invalid("model", "you must provide a model parameter")),
    }
    let Some(messages) = object.get("messages").and_then(Value::as_array) else {
        return Err(invalid(
            "messages",
            "Missing required parameter: 'messages'.",
        ));
    };
    if messages.is_empty() {
        return Err(invalid(
            "messages",
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if !["system", "developer", "user", "assistant", "tool"].contains(&role) {
            return Err(invalid(
                &format!("messages.[{i}].role"),
                &format!("Invalid value: '{role}'. Supported values are: 'system', 'developer', 'user', 'assistant', and 'tool'."),
            ));
        }
        let content_ok = match &m["content"] {
            Value::String(_) => true,
            Value::Array(parts) => parts.iter().all(|p| p["type"].is_string()),
            Value::Null => role == "assistant",
            _ => false,
        };
        if !content_ok {
            return Err(invalid(
                &format!("messages.[{i}].content"),
                "Invalid type for content: expected a string or an array of content parts.",
            ));
        }
    }
    if let Some(t) = object.get("temperature") {
        if !t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) {
            return Err(invalid(
                "temperature",
                "Invalid 'temperature': expected a number between 0 and 2.",
            ));
        }
    }
    for key in ["n", "max_completion_tokens", "max_tokens"] {
        if let Some(v) = object.get(key) {
            if v.as_u64().is_none_or(|n| n < 1) {
                return Err(invalid(
                    key,
                    &format!("Invalid '{key}': expected an integer >= 1."),
                ));
            }
        }
    }
    if let Some(stream) = object.get("stream") {
        match stream.as_bool() {
            Some(false) => {}
            Some(true) => {
                return Err(invalid(
                    "stream",
                    "This fake does not stream; send stream: false.",
                ))
            }
            None => return Err(invalid("stream", "Invalid 'stream': expected a boolean.")),
        }
    }
    if let Some(format) = object.get("response_format") {
        validate_response_format(format)?;
    }
    Ok(())
}

#[allow(clippy::result_large_err)]
fn validate_response_format(format: &Value) -> Result<(), Response> {
    match format["type"].as_str() {
        Some("text") | Some("json_object") => Ok(()),
        Some("json_schema") => {
            let Some(spec) = format.get("json_schema").filter(|s| s.is_object()) else {
                return Err(invalid(
                    "response_format.json_schema",
                    "Missing required parameter: 'response_format.json_schema'.",
                ));
            };
            let name = spec["name"].as_str().unwrap_or("");
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    "response_format.json_schema.name",
                    "Invalid 'response_format.json_schema.name': must match ^[a-zA-Z0-9_-]{1,64}$.",
                ));
            }
            let schema = &spec["schema"];
            if !schema.is_object() {
                return Err(invalid(
                    "response_format.json_schema.schema",
                    "Invalid 'response_format.json_schema.schema': expected an object.",
                ));
            }
            if spec["strict"] == Value::Bool(true) {
                strict_schema(schema, "response_format.json_schema.schema")?;
            }
            Ok(())
        }
        _ => Err(invalid(
            "response_format.type",
            "Invalid 'response_format.type': expected one of 'text', 'json_object', 'json_schema'.",
        )),
    }
}

/// Strict mode's subset: every object lists all its properties in `required` and sets
/// `additionalProperties: false`.
#[allow(clippy::result_large_err)]
fn strict_schema(schema: &Value, at: &str) -> Result<(), Response> {
    if schema["type"] == "object" {
        let properties = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(missing) = properties.keys().find(|k| !required.contains(&k.as_str())) {
            return Err(invalid(
                at,
                &format!("Invalid schema for response_format: In context=(), 'required' is required to be supplied and to be an array including every key in properties. Missing '{missing}'."),
            ));
        }
        if schema["additionalProperties"] != Value::Bool(false) {
            return Err(invalid(
                at,
                "Invalid schema for response_format: In context=(), 'additionalProperties' is required to be supplied and to be false.",
            ));
        }
        for (key, value) in &properties {
            strict_schema(value, &format!("{at}.properties.{key}"))?;
        }
    }
    Ok(())
}
