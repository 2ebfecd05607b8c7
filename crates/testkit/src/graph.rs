//! A faithful fake of Microsoft Graph's token and mail endpoints (protocol notes §1) for tests.
//!
//! [`FakeGraph::start`] serves one tenant, one app registration and one mailbox on
//! `127.0.0.1:<random port>`: the identity platform's token endpoint at
//! [`FakeGraph::authority_url`] and Graph v1.0 at [`FakeGraph::graph_url`]. It stops when
//! dropped.
//!
//! What it enforces, as Graph does:
//! - Token endpoint (`POST /{tenant}/oauth2/v2.0/token`): a form body (or HTTP Basic client
//!   authentication), `grant_type=client_credentials`, the one scope
//!   `https://graph.microsoft.com/.default` (else 400 `invalid_scope`), the client id (else
//!   400 `unauthorized_client`, AADSTS700016), the secret (else 401 `invalid_client`,
//!   AADSTS7000215), the tenant (else 400 `invalid_request`, AADSTS90002). Tokens are
//!   JWT-shaped with a `roles` claim and expire after `token_lifetime`.
//! - `Authorization: Bearer` on every Graph request: missing, unknown, revoked or expired →
//!   401 `InvalidAuthenticationToken`. The token's roles gate each route: creating and
//!   deleting need `Mail.ReadWrite`, sending needs `Mail.Send`, reading needs `Mail.Read`
//!   or `Mail.ReadWrite`; else 403 `ErrorAccessDenied`.
//! - At most `max_concurrent_per_mailbox` (4) requests in flight per mailbox; one more gets
//!   429 `ApplicationThrottled` ("MailboxConcurrency") with `Retry-After`.
//! - Messages (`POST messages`, `sendMail`): JSON only, known message properties only (else
//!   400 `RequestBodyRead`), `body.contentType` Text or HTML, recipients as
//!   `{"emailAddress":{"address","name"}}`, `internetMessageHeaders` names starting with
//!   `x-`/`X-` (else 400 `InvalidInternetMessageHeader`) and at most 5 of them (else 400
//!   `InvalidInternetMessageHeaderCollection`). A created draft gets an `id`,
//!   `internetMessageId` and `conversationId` (201); `/send` (202, empty body, needs
//!   `Content-Length`, else 411) checks the recipients (400 `ErrorInvalidRecipients`),
//!   moves the message to Sent Items and logs it as sent.
//! - Listing (`messages`, `mailFolders/{inbox|drafts|sentitems}/messages`): `$top` 1–1000
//!   (default 10), `$skip`, `$select` (`internetMessageHeaders` only when selected),
//!   `$orderby` (whose property must come first in `$filter`, else 400 `InefficientFilter`),
//!   `$filter` with `eq ne gt ge lt le` clauses joined by `and` on `receivedDateTime`,
//!   `sentDateTime`, `createdDateTime`, `conversationId`, `internetMessageId`, `subject`,
//!   `isDraft`, `isRead`; `@odata.nextLink` while more remain; `Prefer:
//!   outlook.body-content-type="text"` turns HTML bodies into text.
//!
//! Not supported: attachments, `$search`, `$expand`, delta queries, subscriptions,
//! `createReply`, the recipients-per-day limit, id changes on move (ids behave as immutable
//! ids).
//!
//! For tests: [`FakeGraph::fail_next`] scripts [`Fault`]s per endpoint,
//! [`FakeGraph::set_latency`] slows every request, [`FakeGraph::revoke_tokens`] and
//! [`FakeGraph::set_roles`] change what tokens allow, [`FakeGraph::deliver_reply`] and
//! friends fill the inbox, and [`FakeGraph::sent`] is the log of accepted sends — the
//! oracle for "no duplicate send".

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::{Extension, Router};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::faults::{
    answer_after_processing, answer_without_processing, decode_path_segment, json_response,
    parse_query, serve, ConnectionKill, Fault, LoggedRequest,
};

/// The only scope the client-credentials grant accepts here.
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";

/// How to set up a fake.
#[derive(Debug, Clone)]
pub struct FakeGraphSetup {
    /// The tenant (GUID or domain) in the token URL.
    pub tenant_id: String,
    /// The app registration's client id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: String,
    /// The mailbox's user principal name.
    pub mailbox: String,
    /// The mailbox's object id (accepted in place of the UPN).
    pub mailbox_id: String,
    /// The application permissions in issued tokens.
    pub roles: Vec<String>,
    /// How long a token is valid (`expires_in`).
    pub token_lifetime: Duration,
    /// Requests allowed in flight per mailbox.
    pub max_concurrent_per_mailbox: usize,
    /// Added before every request is processed.
    pub latency: Duration,
}

impl FakeGraphSetup {
    /// One tenant, app and mailbox, with `Mail.Send` and `Mail.ReadWrite` granted.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        mailbox: impl Into<String>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            mailbox: mailbox.into(),
            mailbox_id: "0b1d2c3e-0000-4000-8000-00000000beef".into(),
            roles: vec!["Mail.Send".into(), "Mail.ReadWrite".into()],
            token_lifetime: Duration::from_secs(3599),
            max_concurrent_per_mailbox: 4,
            latency: Duration::ZERO,
        }
    }
}

/// The endpoint a scripted fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphEndpoint {
    /// The token endpoint.
    Token,
    /// `POST /users/{id}/messages` (create a draft).
    CreateMessage,
    /// `POST /users/{id}/messages/{id}/send`.
    SendDraft,
    /// `POST /users/{id}/sendMail`.
    SendMail,
    /// Any message listing.
    ListMessages,
    /// Whatever request comes next.
    Any,
}

/// A message in the fake mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMessage {
    /// Graph's id.
    pub id: String,
    /// `drafts`, `sentitems` or `inbox`.
    pub folder: String,
    /// Whether it is still a draft.
    pub is_draft: bool,
    /// Its Message-ID.
    pub internet_message_id: String,
    /// Its conversation id.
    pub conversation_id: String,
    /// Subject.
    pub subject: String,
    /// `text` or `html`.
    pub body_type: String,
    /// Body content.
    pub body: String,
    /// Sender address.
    pub from: String,
    /// Recipient addresses (to).
    pub to: Vec<String>,
    /// Recipient display names, parallel to `to`.
    pub to_names: Vec<Option<String>>,
    /// Internet headers (custom `X-` headers for ours; all headers for inbound).
    pub headers: Vec<(String, String)>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was received (for ours: created or sent).
    pub received_at: DateTime<Utc>,
    /// When it was sent.
    pub sent_at: Option<DateTime<Utc>>,
}

impl FakeMessage {
    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running fake; the server stops when this is dropped.
#[derive(Debug)]
pub struct FakeGraph {
    shared: Arc<Shared>,
    origin: String,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    setup: FakeGraphSetup,
    state: Mutex<GraphState>,
}

#[derive(Debug)]
struct IssuedToken {
    expires_at: Instant,
    roles: Vec<String>,
}

#[derive(Debug)]
struct GraphState {
    latency: Duration,
    roles: Vec<String>,
    tokens: HashMap<String, IssuedToken>,
    token_requests: usize,
    next_id: u64,
    messages: Vec<FakeMessage>,
    sent: Vec<FakeMessage>,
    faults: VecDeque<(GraphEndpoint, Fault)>,
    in_flight: usize,
    peak_in_flight: usize,
    throttled: usize,
    log: Vec<LoggedRequest>,
}

type Reply = (StatusCode, Vec<(String, String)>, Value);

fn graph_error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    (
        status,
        Vec::new(),
        json!({"error": {
            "code": code,
            "message": message.into(),
            "innerError": {"date": now, "request-id": "00000000-0000-4000-8000-000000000000", "client-request-id": "00000000-0000-4000-8000-000000000000"}
        }}),
    )
}

fn token_error(status: StatusCode, error: &str, code: u32, description: String) -> Reply {
    (
        status,
        Vec::new(),
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}\r\nTrace ID: 0000\r\nCorrelation ID: 0000\r\nTimestamp: {}", Utc::now().format("%Y-%m-%d %H:%M:%SZ")),
            "error_codes": [code],
            "timestamp": Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": "00000000-0000-4000-8000-000000000000",
            "correlation_id": "00000000-0000-4000-8000-000000000000",
        }),
    )
}

/// The properties of `microsoft.graph.message` a client may send.
const MESSAGE_PROPERTIES: &[&str] = &[
    "subject",
    "body",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "internetMessageHeaders",
    "importance",
    "from",
    "sender",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "categories",
    "singleValueExtendedProperties",
];

/// Exchange's cap on custom internet headers per message.
const MAX_CUSTOM_HEADERS: usize = 5;

impl FakeGraph {
    /// Starts the fake on `127.0.0.1:0` on the current tokio runtime.
    pub async fn start(setup: FakeGraphSetup) -> std::io::Result<Self> {
        let state = GraphState {
            latency: setup.latency,
            roles: setup.roles.clone(),
            tokens: HashMap::new(),
            token_requests: 0,
            next_id: 1,
            messages: Vec::new(),
            sent: Vec::new(),
            faults: VecDeque::new(),
            in_flight: 0,
            peak_in_flight: 0,
            throttled: 0,
            log: Vec::new(),
        };
        let shared = Arc::new(Shared {
            setup,
            state: Mutex::new(state),
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (address, server) = serve(router).await?;
        Ok(Self {
            shared,
            origin: format!("http://{address}"),
            server,
        })
    }

    /// The identity platform root to configure clients with (`http://127.0.0.1:PORT`).
    pub fn authority_url(&self) -> &str {
        &self.origin
    }

    /// The Graph root including the version (`http://127.0.0.1:PORT/v1.0`).
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.origin)
    }

    /// The setup the fake was started with.
    pub fn setup(&self) -> &FakeGraphSetup {
        &self.shared.setup
    }

    /// Plays `fault` on the next request to `endpoint` (faults queue in order).
    pub fn fail_next(&self, endpoint: GraphEndpoint, fault: Fault) {
        self.shared.lock().faults.push_back((endpoint, fault));
    }

    /// Adds `latency` before every request is processed.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// The roles of tokens issued from now on (tokens already issued keep theirs).
    pub fn set_roles(&self, roles: &[&str]) {
        self.shared.lock().roles = roles.iter().map(|r| (*r).to_owned()).collect();
    }

    /// Invalidates every token issued so far (as if the secret was rotated).
    pub fn revoke_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// How many token requests were answered with a token.
    pub fn tokens_issued(&self) -> usize {
        self.shared.lock().token_requests
    }

    /// Every message the mailbox accepted for sending, in order: the "no duplicate send" oracle.
    pub fn sent(&self) -> Vec<FakeMessage> {
        self.shared.lock().sent.clone()
    }

    /// Every message in the mailbox now (drafts, sent items, inbox).
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.shared.lock().messages.clone()
    }

    /// The most requests that were in flight at once for the mailbox.
    pub fn peak_concurrency(&self) -> usize {
        self.shared.lock().peak_in_flight
    }

    /// How many requests were refused for exceeding the mailbox's concurrency limit.
    pub fn throttled(&self) -> usize {
        self.shared.lock().throttled
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    /// Puts a message in the inbox, received at `received_at`.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver(
        &self,
        from: &str,
        subject: &str,
        body: &str,
        headers: &[(&str, &str)],
        conversation_id: Option<&str>,
        received_at: DateTime<Utc>,
    ) -> FakeMessage {
        let mut state = self.shared.lock();
        let n = state.next();
        let message = FakeMessage {
            id: message_id(n),
            folder: "inbox".into(),
            is_draft: false,
            internet_message_id: format!("<inbound.{n:06}@mail.example.net>"),
            conversation_id: conversation_id.map_or_else(|| conversation(n), str::to_owned),
            subject: subject.into(),
            body_type: "text".into(),
            body: body.into(),
            from: from.into(),
            to: vec![self.shared.setup.mailbox.clone()],
            to_names: vec![None],
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            created_at: received_at,
            received_at,
            sent_at: Some(received_at),
        };
        state.messages.push(message.clone());
        message
    }

    /// A person's reply to one of our sent messages: same conversation, `In-Reply-To` and
    /// `References` pointing at it.
    pub fn deliver_reply(
        &self,
        to: &FakeMessage,
        from: &str,
        body: &str,
        received_at: DateTime<Utc>,
    ) -> FakeMessage {
        self.deliver(
            from,
            &format!("RE: {}", to.subject),
            body,
            &[
                ("In-Reply-To", &to.internet_message_id),
                ("References", &to.internet_message_id),
                ("Content-Type", "text/plain; charset=\"utf-8\""),
            ],
            Some(&to.conversation_id),
            received_at,
        )
    }

    /// An out-of-office answer to one of our sent messages.
    pub fn deliver_auto_reply(&self, to: &FakeMessage, received_at: DateTime<Utc>) -> FakeMessage {
        let from = to.to.first().cloned().unwrap_or_default();
        self.deliver(
            &from,
            &format!("Automatic reply: {}", to.subject),
            "I am out of the office until Monday.",
            &[
                ("Auto-Submitted", "auto-replied"),
                ("X-Auto-Response-Suppress", "All"),
                ("In-Reply-To", &to.internet_message_id),
            ],
            Some(&to.conversation_id),
            received_at,
        )
    }

    /// An Exchange Online non-delivery report for one of our sent messages, with the
    /// enhanced status code `status` (e.g. `5.1.10`).
    pub fn deliver_bounce(
        &self,
        to: &FakeMessage,
        status: &str,
        received_at: DateTime<Utc>,
    ) -> FakeMessage {
        let recipient = to.to.first().cloned().unwrap_or_default();
        let delivery = to
            .header("X-Engager-Delivery")
            .unwrap_or_default()
            .to_owned();
        let body = format!(
            "Your message to {recipient} couldn't be delivered.\r\n\
             Diagnostic information for administrators:\r\n\
             Remote server returned '550 {status} RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'\r\n\
             Original message headers:\r\n\
             Message-ID: {}\r\nX-Engager-Delivery: {delivery}\r\n",
            to.internet_message_id
        );
        self.deliver(
            "postmaster@outlook.com",
            &format!("Undeliverable: {}", to.subject),
            &body,
            &[
                ("X-MS-Exchange-Message-Is-Ndr", ""),
                (
                    "Content-Type",
                    "multipart/report; report-type=delivery-status; boundary=\"b\"",
                ),
                ("In-Reply-To", &to.internet_message_id),
                ("References", &to.internet_message_id),
            ],
            Some(&to.conversation_id),
            received_at,
        )
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn message_id(n: u64) -> String {
    format!("AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A-FAKE{n:010}")
}

fn conversation(n: u64) -> String {
    format!("AAQkADFAKECONV{n:010}")
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, GraphState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl GraphState {
    fn next(&mut self) -> u64 {
        let n = self.next_id;
        self.next_id += 1;
        n
    }

    fn take_fault(&mut self, endpoint: GraphEndpoint) -> Option<Fault> {
        let index = self
            .faults
            .iter()
            .position(|(e, _)| *e == endpoint || *e == GraphEndpoint::Any)?;
        self.faults.remove(index).map(|(_, f)| f)
    }
}

/// Counts a request in flight for the mailbox until dropped (also when the client goes away).
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Token { tenant: String },
    Mail { user: String, rest: Vec<String> },
    Unknown,
}

fn route(path: &[String]) -> Route {
    match path {
        [tenant, oauth, v2, token] if oauth == "oauth2" && v2 == "v2.0" && token == "token" => {
            Route::Token {
                tenant: tenant.clone(),
            }
        }
        [version, users, user, rest @ ..] if version == "v1.0" && users == "users" => Route::Mail {
            user: user.clone(),
            rest: rest.to_vec(),
        },
        _ => Route::Unknown,
    }
}

fn endpoint(method: &Method, route: &Route) -> GraphEndpoint {
    match route {
        Route::Token { .. } => GraphEndpoint::Token,
        Route::Mail { rest, .. } => match (
            method.as_str(),
            rest.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
        ) {
            ("POST", ["messages"]) => GraphEndpoint::CreateMessage,
            ("POST", ["messages", _, "send"]) => GraphEndpoint::SendDraft,
            ("POST", ["sendMail"]) => GraphEndpoint::SendMail,
            ("GET", ["messages"]) | ("GET", ["mailFolders", _, "messages"]) => {
                GraphEndpoint::ListMessages
            }
            _ => GraphEndpoint::Any,
        },
        Route::Unknown => GraphEndpoint::Any,
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(kill): Extension<ConnectionKill>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path: Vec<String> = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode_path_segment)
        .collect();
    let query = parse_query(uri.query().unwrap_or(""));
    let route = route(&path);
    let endpoint = endpoint(&method, &route);
    let log = |status: u16| LoggedRequest {
        method: method.to_string(),
        path: format!("/{}", path.join("/")),
        query: query.clone(),
        status,
    };

    let (fault, latency, in_flight) = {
        let mut state = shared.lock();
        let fault = state.take_fault(endpoint);
        let mut in_flight = None;
        if matches!(route, Route::Mail { .. }) {
            if state.in_flight >= shared.setup.max_concurrent_per_mailbox {
                state.throttled += 1;
                state.log.push(log(429));
                drop(state);
                let (status, headers, body) = graph_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                );
                let mut headers = headers;
                headers.push(("Retry-After".into(), "1".into()));
                return json_response(status, &headers, body.to_string());
            }
            state.in_flight += 1;
            state.peak_in_flight = state.peak_in_flight.max(state.in_flight);
            in_flight = Some(InFlight(Arc::clone(&shared)));
        }
        (fault, state.latency, in_flight)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(fault) = &fault {
        if !fault.processes() {
            let status = match fault {
                Fault::Respond { status, .. } => *status,
                _ => 0,
            };
            shared.lock().log.push(log(status));
        }
        if let Some(response) = answer_without_processing(fault, &kill).await {
            return response;
        }
    }
    let prefer_text = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("outlook.body-content-type=\"text\""));
    let (status, extra, reply) = {
        let mut state = shared.lock();
        let reply = match &route {
            Route::Token { tenant } => state.token(&shared.setup, tenant, &headers, &body),
            Route::Mail { user, rest } => state.mail(
                &shared.setup,
                &method,
                user,
                rest,
                &query,
                &headers,
                &body,
                prefer_text,
            ),
            Route::Unknown => graph_error(
                StatusCode::NOT_FOUND,
                "BadRequest",
                format!("Invalid version or resource: {}", uri.path()),
            ),
        };
        let logged = if matches!(fault, Some(Fault::DropAfterAccept)) {
            0
        } else {
            reply.0.as_u16()
        };
        state.log.push(log(logged));
        reply
    };
    let body = if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
        String::new()
    } else {
        reply.to_string()
    };
    let response = json_response(status, &extra, body);
    let response = answer_after_processing(fault.as_ref(), &kill, response).await;
    drop(in_flight);
    response
}

fn form_value<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl GraphState {
    fn token(
        &mut self,
        setup: &FakeGraphSetup,
        tenant: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Reply {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return token_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.".into(),
            );
        }
        if !tenant.eq_ignore_ascii_case(&setup.tenant_id) {
            return token_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
                format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
            );
        }
        let form = parse_query(&String::from_utf8_lossy(body));
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
        match form_value(&form, "grant_type") {
            Some("client_credentials") => {}
            Some(other) => {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    70003,
                    format!("The app requested an unsupported grant type '{other}'."),
                )
            }
            None => {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'grant_type'.".into(),
                )
            }
        }
        let client_id = form_value(&form, "client_id")
            .map(str::to_owned)
            .or_else(|| basic.as_ref().map(|(u, _)| u.clone()));
        let secret = form_value(&form, "client_secret")
            .map(str::to_owned)
            .or_else(|| basic.as_ref().map(|(_, p)| p.clone()));
        let Some(client_id) = client_id else {
            return token_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.".into(),
            );
        };
        if client_id != setup.client_id {
            return token_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
            );
        }
        match form_value(&form, "scope") {
            Some(GRAPH_DEFAULT_SCOPE) => {}
            scope => {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    70011,
                    format!("The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.", scope.unwrap_or_default()),
                )
            }
        }
        if secret.as_deref() != Some(setup.client_secret.as_str()) {
            return token_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
            );
        }
        let n = self.next();
        self.token_requests += 1;
        let lifetime = setup.token_lifetime;
        let claims = json!({
            "aud": "https://graph.microsoft.com",
            "tid": setup.tenant_id,
            "appid": setup.client_id,
            "roles": self.roles,
            "exp": Utc::now().timestamp() + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2),
            "jti": n,
        });
        let token = format!(
            "{}.{}.{}",
            b64url(br#"{"typ":"JWT","alg":"none"}"#),
            b64url(claims.to_string().as_bytes()),
            b64url(format!("fake-signature-{n}").as_bytes())
        );
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                expires_at: Instant::now() + lifetime,
                roles: self.roles.clone(),
            },
        );
        (
            StatusCode::OK,
            Vec::new(),
            json!({"token_type": "Bearer", "expires_in": lifetime.as_secs(), "ext_expires_in": lifetime.as_secs(), "access_token": token}),
        )
    }

    /// The roles of the request's token, or the 401 to answer.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Vec<String>, Reply> {
        let unauthorized = |message: &str| {
            let (status, mut headers, body) = graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
            );
            headers.push(("WWW-Authenticate".into(), "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\"".into()));
            (status, headers, body)
        };
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(unauthorized("Access token is empty."));
        };
        match self.tokens.get(token) {
            None => Err(unauthorized(
                "Access token validation failure. Invalid audience.",
            )),
            Some(issued) if Instant::now() >= issued.expires_at => Err(unauthorized(
                "Lifetime validation failed, the token is expired.",
            )),
            Some(issued) => Ok(issued.roles.clone()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn mail(
        &mut self,
        setup: &FakeGraphSetup,
        method: &Method,
        user: &str,
        rest: &[String],
        query: &[(String, String)],
        headers: &HeaderMap,
        body: &[u8],
        prefer_text: bool,
    ) -> Reply {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1")
            .to_owned();
        let host = host.as_str();
        let roles = match self.authenticate(headers) {
            Ok(roles) => roles,
            Err(reply) => return reply,
        };
        if !user.eq_ignore_ascii_case(&setup.mailbox)
            && !user.eq_ignore_ascii_case(&setup.mailbox_id)
        {
            return graph_error(
                StatusCode::NOT_FOUND,
                "ErrorInvalidUser",
                format!("The requested user '{user}' is invalid."),
            );
        }
        let has = |role: &str| roles.iter().any(|r| r == role);
        let can_read = has("Mail.Read") || has("Mail.ReadWrite");
        let denied = || {
            graph_error(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            )
        };
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        match (method.as_str(), rest.as_slice()) {
            ("POST", ["messages"]) => {
                if !has("Mail.ReadWrite") {
                    return denied();
                }
                match json_body(headers, body) {
                    Ok(message) => self.create(setup, &message),
                    Err(reply) => reply,
                }
            }
            ("POST", ["sendMail"]) => {
                if !has("Mail.Send") {
                    return denied();
                }
                match json_body(headers, body) {
                    Ok(request) => self.send_mail(setup, &request),
                    Err(reply) => reply,
                }
            }
            ("POST", ["messages", id, "send"]) => {
                if !has("Mail.Send") {
                    return denied();
                }
                if headers.get(header::CONTENT_LENGTH).is_none() {
                    return graph_error(
                        StatusCode::LENGTH_REQUIRED,
                        "LengthRequired",
                        "Content-Length is required.",
                    );
                }
                self.send_draft(id)
            }
            ("GET", ["messages", id]) => {
                if !can_read {
                    return denied();
                }
                match self.messages.iter().find(|m| m.id == *id) {
                    Some(m) => (StatusCode::OK, Vec::new(), to_json(m, None, prefer_text)),
                    None => not_found(),
                }
            }
            ("DELETE", ["messages", id]) => {
                if !has("Mail.ReadWrite") {
                    return denied();
                }
                match self.messages.iter().position(|m| m.id == *id) {
                    Some(index) => {
                        self.messages.remove(index);
                        (StatusCode::NO_CONTENT, Vec::new(), Value::Null)
                    }
                    None => not_found(),
                }
            }
            ("GET", ["messages"]) => {
                if !can_read {
                    return denied();
                }
                self.list(host, user, None, query, prefer_text)
            }
            ("GET", ["mailFolders", folder]) => {
                if !can_read {
                    return denied();
                }
                match well_known(folder) {
                    Some(folder) => (
                        StatusCode::OK,
                        Vec::new(),
                        json!({"id": folder, "displayName": folder, "totalItemCount": self.messages.iter().filter(|m| m.folder == folder).count()}),
                    ),
                    None => not_found(),
                }
            }
            ("GET", ["mailFolders", folder, "messages"]) => {
                if !can_read {
                    return denied();
                }
                match well_known(folder) {
                    Some(folder) => self.list(host, user, Some(folder), query, prefer_text),
                    None => not_found(),
                }
            }
            (_, segments) => graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "Resource not found for the segment '{}'.",
                    segments.first().copied().unwrap_or_default()
                ),
            ),
        }
    }

    fn create(&mut self, setup: &FakeGraphSetup, body: &Value) -> Reply {
        let parsed = match parse_message(body) {
            Ok(parsed) => parsed,
            Err(reply) => return reply,
        };
        let n = self.next();
        let now = Utc::now();
        let domain = setup
            .mailbox
            .rsplit_once('@')
            .map_or("fake.onmicrosoft.com", |(_, d)| d);
        let message = FakeMessage {
            id: message_id(n),
            folder: "drafts".into(),
            is_draft: true,
            internet_message_id: format!(
                "<FAKE{n:06}MB{:04}.fake@{}>",
                n % 9973,
                domain.replace('.', "-") + ".prod.outlook.com"
            ),
            conversation_id: conversation(n),
            subject: parsed.subject,
            body_type: parsed.body_type,
            body: parsed.body,
            from: setup.mailbox.clone(),
            to: parsed.to,
            to_names: parsed.to_names,
            headers: parsed.headers,
            created_at: now,
            received_at: now,
            sent_at: None,
        };
        let reply = to_json(&message, None, false);
        self.messages.push(message);
        (StatusCode::CREATED, Vec::new(), reply)
    }

    fn send_draft(&mut self, id: &str) -> Reply {
        let Some(index) = self.messages.iter().position(|m| m.id == id && m.is_draft) else {
            return not_found();
        };
        if let Err(reply) = check_recipients(&self.messages[index].to) {
            return reply;
        }
        let now = Utc::now();
        let message = &mut self.messages[index];
        message.is_draft = false;
        message.folder = "sentitems".into();
        message.sent_at = Some(now);
        message.received_at = now;
        let sent = message.clone();
        self.sent.push(sent);
        (StatusCode::ACCEPTED, Vec::new(), Value::Null)
    }

    fn send_mail(&mut self, setup: &FakeGraphSetup, request: &Value) -> Reply {
        let Some(object) = request.as_object() else {
            return request_body_read("The request body must be a JSON object.");
        };
        if let Some(unknown) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "message" | "saveToSentItems"))
        {
            return request_body_read(&format!(
                "The property '{unknown}' does not exist on type 'microsoft.graph.sendMail'."
            ));
        }
        let Some(message) = object.get("message") else {
            return request_body_read("The parameter 'message' is missing.");
        };
        let (status, _, created) = self.create(setup, message);
        if status != StatusCode::CREATED {
            return (status, Vec::new(), created);
        }
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        let reply = self.send_draft(&id);
        if reply.0 != StatusCode::ACCEPTED {
            self.messages.retain(|m| m.id != id);
        }
        if object.get("saveToSentItems") == Some(&Value::Bool(false)) {
            self.messages.retain(|m| m.id != id);
        }
        reply
    }

    fn list(
        &self,
        host: &str,
        user: &str,
        folder: Option<&str>,
        query: &[(String, String)],
        prefer_text: bool,
    ) -> Reply {
        let bad = |message: String| graph_error(StatusCode::BAD_REQUEST, "BadRequest", message);
        let mut top = 10usize;
        let mut skip = 0usize;
        let mut select: Option<Vec<String>> = None;
        let mut filter: Vec<Clause> = Vec::new();
        let mut order: Option<(String, bool)> = None;
        for (name, value) in query {
            match name.as_str() {
                "$top" => match value.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => top = n,
                    _ => {
                        return bad(format!(
                            "Invalid value '{value}' for $top: expected 1 to 1000."
                        ))
                    }
                },
                "$skip" => match value.parse() {
                    Ok(n) => skip = n,
                    Err(_) => return bad(format!("Invalid value '{value}' for $skip.")),
                },
                "$select" => select = Some(value.split(',').map(|s| s.trim().to_owned()).collect()),
                "$filter" => match parse_filter(value) {
                    Ok(clauses) => filter = clauses,
                    Err(message) => return bad(message),
                },
                "$orderby" => {
                    let mut words = value.split_whitespace();
                    let property = words.next().unwrap_or_default().to_owned();
                    let descending = match words.next() {
                        None | Some("asc") => false,
                        Some("desc") => true,
                        Some(other) => {
                            return bad(format!("Invalid $orderby direction '{other}'."))
                        }
                    };
                    if property_kind(&property).is_none() {
                        return bad(format!("Could not find a property named '{property}' on type 'microsoft.graph.message'."));
                    }
                    order = Some((property, descending));
                }
                other => {
                    return bad(format!(
                        "Query option '{other}' is not supported by the fake."
                    ))
                }
            }
        }
        if let (Some((property, _)), Some(first)) = (&order, filter.first()) {
            if first.property != *property {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "InefficientFilter",
                    "The restriction or sort order is too complex for this operation.",
                );
            }
        }
        let mut matching: Vec<&FakeMessage> = self
            .messages
            .iter()
            .filter(|m| folder.is_none_or(|f| m.folder == f))
            .filter(|m| filter.iter().all(|c| c.matches(m)))
            .collect();
        let (property, descending) = order.unwrap_or_else(|| ("receivedDateTime".into(), true));
        matching.sort_by(|a, b| {
            let ordering = property_value(a, &property).cmp(&property_value(b, &property));
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
        let page: Vec<Value> = matching
            .iter()
            .skip(skip)
            .take(top)
            .map(|m| to_json(m, select.as_deref(), prefer_text))
            .collect();
        let base = match folder {
            Some(f) => format!("users/{user}/mailFolders/{f}/messages"),
            None => format!("users/{user}/messages"),
        };
        let mut reply = json!({
            "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{base}"),
            "value": page,
        });
        if skip + top < matching.len() {
            let mut next: Vec<(String, String)> = query
                .iter()
                .filter(|(n, _)| n != "$skip")
                .cloned()
                .collect();
            next.push(("$skip".into(), (skip + top).to_string()));
            let encoded: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(next)
                .finish();
            reply["@odata.nextLink"] =
                Value::String(format!("http://{host}/v1.0/{base}?{encoded}"));
        }
        (StatusCode::OK, Vec::new(), reply)
    }
}

fn well_known(folder: &str) -> Option<&'static str> {
    match folder.to_ascii_lowercase().as_str() {
        "inbox" => Some("inbox"),
        "drafts" => Some("drafts"),
        "sentitems" => Some("sentitems"),
        _ => None,
    }
}

fn not_found() -> Reply {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

fn request_body_read(message: &str) -> Reply {
    graph_error(StatusCode::BAD_REQUEST, "RequestBodyRead", message)
}

fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Reply> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(graph_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Content-Type must be application/json for this request.",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| request_body_read(&format!("Invalid JSON in the request body: {e}")))
}

struct ParsedMessage {
    subject: String,
    body_type: String,
    body: String,
    to: Vec<String>,
    to_names: Vec<Option<String>>,
    headers: Vec<(String, String)>,
}

fn parse_recipients(value: &Value, property: &str) -> Result<Vec<(String, Option<String>)>, Reply> {
    let invalid = || {
        request_body_read(&format!("Cannot read the value of '{property}': expected an array of {{\"emailAddress\": {{\"address\", \"name\"}}}}."))
    };
    let Some(items) = value.as_array() else {
        return Err(invalid());
    };
    items
        .iter()
        .map(|item| {
            let object = item.as_object().ok_or_else(invalid)?;
            if object.keys().any(|k| k != "emailAddress") {
                return Err(invalid());
            }
            let email = object
                .get("emailAddress")
                .and_then(Value::as_object)
                .ok_or_else(invalid)?;
            if email.keys().any(|k| k != "address" && k != "name") {
                return Err(invalid());
            }
            let address = email
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(invalid)?;
            let name = match email.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(invalid()),
            };
            Ok((address.to_owned(), name))
        })
        .collect()
}

fn parse_message(value: &Value) -> Result<ParsedMessage, Reply> {
    let Some(object) = value.as_object() else {
        return Err(request_body_read("The request body must be a JSON object."));
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !MESSAGE_PROPERTIES.contains(&k.as_str()))
    {
        return Err(request_body_read(&format!(
            "The property '{unknown}' does not exist on type 'microsoft.graph.message'. Make sure to only use property names that are defined by the type or mark the type as open type."
        )));
    }
    let subject = match object.get("subject") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(request_body_read(
                "Cannot convert the value of 'subject' to a string.",
            ))
        }
    };
    let (body_type, body) = match object.get("body") {
        None | Some(Value::Null) => ("text".to_owned(), String::new()),
        Some(Value::Object(b)) => {
            if let Some(unknown) = b
                .keys()
                .find(|k| !matches!(k.as_str(), "contentType" | "content"))
            {
                return Err(request_body_read(&format!(
                    "The property '{unknown}' does not exist on type 'microsoft.graph.itemBody'."
                )));
            }
            let kind = match b
                .get("contentType")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("text") => "text",
                Some("html") => "html",
                Some(other) => {
                    return Err(request_body_read(&format!(
                        "Requested value '{other}' was not found."
                    )))
                }
            };
            let content = match b.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(request_body_read(
                        "Cannot convert the value of 'content' to a string.",
                    ))
                }
            };
            (kind.to_owned(), content)
        }
        Some(_) => {
            return Err(request_body_read(
                "Cannot read the value of 'body' as an itemBody.",
            ))
        }
    };
    let mut to = Vec::new();
    if let Some(value) = object.get("toRecipients") {
        to = parse_recipients(value, "toRecipients")?;
    }
    for property in ["ccRecipients", "bccRecipients", "replyTo"] {
        if let Some(value) = object.get(property) {
            parse_recipients(value, property)?;
        }
    }
    let mut headers = Vec::new();
    if let Some(value) = object.get("internetMessageHeaders") {
        let items = value.as_array().ok_or_else(|| {
            request_body_read(
                "Cannot read the value of 'internetMessageHeaders': expected an array.",
            )
        })?;
        for item in items {
            let name = item.get("name").and_then(Value::as_str);
            let header_value = item.get("value").and_then(Value::as_str);
            let (Some(name), Some(header_value)) = (name, header_value) else {
                return Err(request_body_read(
                    "Each internet message header needs a string 'name' and 'value'.",
                ));
            };
            if !(name.starts_with("x-") || name.starts_with("X-")) {
                return Err(graph_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidInternetMessageHeader",
                    format!(
                        "The internet message header name '{name}' should start with 'x-' or 'X-'."
                    ),
                ));
            }
            headers.push((name.to_owned(), header_value.to_owned()));
        }
        if headers.len() > MAX_CUSTOM_HEADERS {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                "InvalidInternetMessageHeaderCollection",
                "Maximum number of headers in one message should be less than or equal to 5.",
            ));
        }
    }
    let (to, to_names) = to.into_iter().unzip();
    Ok(ParsedMessage {
        subject,
        body_type,
        body,
        to,
        to_names,
        headers,
    })
}

fn check_recipients(to: &[String]) -> Result<(), Reply> {
    if to.is_empty() {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRecipients",
            "At least one recipient is required, but none were found.",
        ));
    }
    for address in to {
        let valid = address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !address.contains(char::is_whitespace)
        });
        if !valid {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidRecipients",
                format!("At least one recipient isn't valid., Recipient '{address}' is not resolved. All recipients must be resolved before a message can be submitted."),
            ));
        }
    }
    Ok(())
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn to_json(m: &FakeMessage, select: Option<&[String]>, prefer_text: bool) -> Value {
    let address = |a: &str, name: Option<&str>| json!({"emailAddress": {"name": name.unwrap_or(a), "address": a}});
    let (body_type, body) = if prefer_text && m.body_type == "html" {
        ("text", strip_tags(&m.body))
    } else {
        (m.body_type.as_str(), m.body.clone())
    };
    let preview: String = strip_tags(&m.body).chars().take(255).collect();
    let mut full = Map::new();
    full.insert(
        "@odata.etag".into(),
        json!(format!("W/\"CQAAABYAAAD{}\"", m.id.len())),
    );
    full.insert("id".into(), json!(m.id));
    full.insert("createdDateTime".into(), json!(time(m.created_at)));
    full.insert(
        "lastModifiedDateTime".into(),
        json!(time(m.sent_at.unwrap_or(m.created_at))),
    );
    full.insert("receivedDateTime".into(), json!(time(m.received_at)));
    full.insert("sentDateTime".into(), json!(m.sent_at.map(time)));
    full.insert("hasAttachments".into(), json!(false));
    full.insert("internetMessageId".into(), json!(m.internet_message_id));
    full.insert("subject".into(), json!(m.subject));
    full.insert("bodyPreview".into(), json!(preview));
    full.insert("importance".into(), json!("normal"));
    full.insert("parentFolderId".into(), json!(m.folder));
    full.insert("conversationId".into(), json!(m.conversation_id));
    full.insert("isRead".into(), json!(m.folder != "inbox"));
    full.insert("isDraft".into(), json!(m.is_draft));
    full.insert(
        "body".into(),
        json!({"contentType": body_type, "content": body}),
    );
    full.insert("sender".into(), address(&m.from, None));
    full.insert("from".into(), address(&m.from, None));
    full.insert(
        "toRecipients".into(),
        Value::Array(
            m.to.iter()
                .zip(m.to_names.iter().chain(std::iter::repeat(&None)))
                .map(|(a, n)| address(a, n.as_deref()))
                .collect(),
        ),
    );
    full.insert("ccRecipients".into(), json!([]));
    full.insert("bccRecipients".into(), json!([]));
    full.insert("replyTo".into(), json!([]));
    let headers: Vec<Value> = m
        .headers
        .iter()
        .map(|(n, v)| json!({"name": n, "value": v}))
        .collect();
    match select {
        None => Value::Object(full),
        Some(fields) => {
            let mut picked = Map::new();
            picked.insert("@odata.etag".into(), full["@odata.etag"].clone());
            picked.insert("id".into(), full["id"].clone());
            for field in fields {
                if field == "internetMessageHeaders" {
                    picked.insert(field.clone(), Value::Array(headers.clone()));
                } else if let Some(value) = full.get(field) {
                    picked.insert(field.clone(), value.clone());
                }
            }
            Value::Object(picked)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Time,
    Text,
    Bool,
}

fn property_kind(property: &str) -> Option<Kind> {
    match property {
        "receivedDateTime" | "sentDateTime" | "createdDateTime" => Some(Kind::Time),
        "conversationId" | "internetMessageId" | "subject" => Some(Kind::Text),
        "isDraft" | "isRead" => Some(Kind::Bool),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Literal {
    Null,
    Time(DateTime<Utc>),
    Text(String),
    Bool(bool),
}

fn property_value(m: &FakeMessage, property: &str) -> Literal {
    match property {
        "receivedDateTime" => Literal::Time(m.received_at),
        "sentDateTime" => m.sent_at.map_or(Literal::Null, Literal::Time),
        "createdDateTime" => Literal::Time(m.created_at),
        "conversationId" => Literal::Text(m.conversation_id.clone()),
        "internetMessageId" => Literal::Text(m.internet_message_id.clone()),
        "subject" => Literal::Text(m.subject.clone()),
        "isDraft" => Literal::Bool(m.is_draft),
        "isRead" => Literal::Bool(m.folder != "inbox"),
        _ => Literal::Null,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone)]
struct Clause {
    property: String,
    op: Op,
    value: Literal,
}

impl Clause {
    fn matches(&self, m: &FakeMessage) -> bool {
        let actual = property_value(m, &self.property);
        if actual == Literal::Null {
            return self.op == Op::Ne;
        }
        let ordering = actual.cmp(&self.value);
        match self.op {
            Op::Eq => ordering.is_eq(),
            Op::Ne => ordering.is_ne(),
            Op::Gt => ordering.is_gt(),
            Op::Ge => ordering.is_ge(),
            Op::Lt => ordering.is_lt(),
            Op::Le => ordering.is_le(),
        }
    }
}

/// Splits on ` and ` outside quoted strings.
fn split_and(filter: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut rest = filter;
    while let Some(c) = rest.chars().next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted && rest.starts_with(" and ") {
            parts.push(std::mem::take(&mut current));
            rest = &rest[5..];
            continue;
        }
        current.push(c);
        rest = &rest[c.len_utf8()..];
    }
    parts.push(current);
    parts
}

fn parse_filter(filter: &str) -> Result<Vec<Clause>, String> {
    let invalid = || format!("Invalid filter clause: {filter}");
    split_and(filter.trim())
        .into_iter()
        .map(|clause| {
            let clause = clause.trim();
            let (property, rest) = clause.split_once(' ').ok_or_else(invalid)?;
            let (op, value) = rest.trim_start().split_once(' ').ok_or_else(invalid)?;
            let kind = property_kind(property)
                .ok_or_else(|| format!("Could not find a property named '{property}' on type 'microsoft.graph.message'."))?;
            let op = match op {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "lt" => Op::Lt,
                "le" => Op::Le,
                _ => return Err(invalid()),
            };
            let value = value.trim();
            let literal = match kind {
                Kind::Text => {
                    let inner = value
                        .strip_prefix('\'')
                        .and_then(|v| v.strip_suffix('\''))
                        .ok_or_else(invalid)?;
                    Literal::Text(inner.replace("''", "'"))
                }
                Kind::Time => Literal::Time(
                    DateTime::parse_from_rfc3339(value)
                        .map_err(|_| format!("The DateTimeOffset text '{value}' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within valid range."))?
                        .with_timezone(&Utc),
                ),
                Kind::Bool => match value {
                    "true" => Literal::Bool(true),
                    "false" => Literal::Bool(false),
                    _ => return Err(invalid()),
                },
            };
            Ok(Clause {
                property: property.to_owned(),
                op,
                value: literal,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_split_outside_quotes() {
        let clauses = parse_filter(
            "receivedDateTime ge 2026-01-01T00:00:00Z and subject eq 'salt and pepper'",
        )
        .unwrap();
        assert_eq!(clauses.len(), 2);
        assert_eq!(clauses[1].value, Literal::Text("salt and pepper".into()));
        assert!(parse_filter("bogus eq 'x'").is_err());
        assert!(parse_filter("receivedDateTime ge yesterday").is_err());
        assert_eq!(
            parse_filter("subject eq 'it''s'").unwrap()[0].value,
            Literal::Text("it's".into())
        );
    }
}
