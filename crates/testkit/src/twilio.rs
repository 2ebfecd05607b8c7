//! A faithful fake of Twilio Programmable Messaging (protocol notes §2) for tests.
//!
//! [`FakeTwilio::start`] serves one account on `127.0.0.1:<random port>`; configure clients
//! with [`FakeTwilio::api_url`] as the API root. It stops when dropped.
//!
//! What it enforces, as Twilio does:
//! - HTTP Basic auth `AccountSid:AuthToken` on every request, else 401 with error 20003 and
//!   `WWW-Authenticate: Basic`; a path account that is not the authenticated one, or that
//!   does not match `^AC[0-9a-fA-F]{32}$`, → 404 with 20404.
//! - `POST /2010-04-01/Accounts/{sid}/Messages.json`, form-encoded (repeated keys kept):
//!   `To` required (21604) and E.164 (21211); exactly one of `From` (21603 when neither;
//!   21212 when invalid) and `MessagingServiceSid` (21701 when malformed); one of `Body`,
//!   `MediaUrl`, `ContentSid` (21602); `Body` at most 1,600 characters (21617);
//!   `StatusCallback` a URL (21609); landlines → 21614; a recipient who replied STOP to the
//!   sender → 21610. Success is 201 with the Message resource as Twilio writes it:
//!   snake_case, RFC 2822 dates, `num_segments`/`num_media` as strings, `sid` `SM` + 32 hex,
//!   `status` `queued` (`accepted` and 0 segments through a Messaging Service).
//! - Error bodies are `{"code","message","more_info","status"}`.
//! - Optionally, at most `max_concurrent` requests in flight: one more gets 429 / 20429.
//! - With `status_callbacks`, each accepted message with a `StatusCallback` gets `sent`
//!   then `delivered` (or `undelivered` with an `ErrorCode` for numbers in `undeliverable`)
//!   POSTed to it, signed with `X-Twilio-Signature`.
//! - `GET /2010-04-01/Accounts/{sid}.json` returns the account (`status` `active`) and
//!   `GET .../Messages/{sid}.json` a message.
//!
//! For tests: [`FakeTwilio::fail_next`] scripts [`Fault`]s, [`FakeTwilio::set_latency`]
//! slows every request, [`FakeTwilio::inbound`] builds a signed inbound webhook (and
//! applies STOP/START to the opt-out store as Twilio does), and [`FakeTwilio::accepted`] is
//! the log of accepted messages — the oracle for "no duplicate send".

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::{Extension, Router};
use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;
use tokio::task::JoinHandle;

use crate::faults::{
    answer_after_processing, answer_without_processing, decode_path_segment, json_response,
    parse_query, serve, ConnectionKill, Fault, LoggedRequest,
};

/// How to set up a fake.
#[derive(Debug, Clone)]
pub struct FakeTwilioSetup {
    /// The account SID.
    pub account_sid: String,
    /// The auth token (Basic auth password and webhook signing key).
    pub auth_token: String,
    /// Numbers that are landlines (21614).
    pub landlines: Vec<String>,
    /// Numbers whose messages end `undelivered` with this error code (status callbacks).
    pub undeliverable: Vec<(String, u32)>,
    /// Requests allowed in flight; more get 429/20429.
    pub max_concurrent: Option<usize>,
    /// Whether status callbacks are posted.
    pub status_callbacks: bool,
    /// Added before every request is processed.
    pub latency: Duration,
}

impl FakeTwilioSetup {
    /// One account with no special numbers and no callbacks.
    pub fn new(account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            landlines: Vec::new(),
            undeliverable: Vec::new(),
            max_concurrent: None,
            status_callbacks: false,
            latency: Duration::ZERO,
        }
    }
}

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSms {
    /// Its SID (`SM...`).
    pub sid: String,
    /// Recipient.
    pub to: String,
    /// Sender number, when given.
    pub from: Option<String>,
    /// Messaging Service, when given.
    pub messaging_service_sid: Option<String>,
    /// Text.
    pub body: String,
    /// Segments, as Twilio counts them.
    pub num_segments: usize,
    /// Where statuses go.
    pub status_callback: Option<String>,
    /// Every form parameter received, in order.
    pub params: Vec<(String, String)>,
}

/// A webhook request as Twilio would send it: URL, form parameters and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedWebhook {
    /// The URL it was posted to.
    pub url: String,
    /// The form parameters.
    pub params: Vec<(String, String)>,
    /// The `X-Twilio-Signature` header value.
    pub signature: String,
}

impl SignedWebhook {
    /// The form-encoded body.
    pub fn body(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.params)
            .finish()
    }
}

/// Twilio's signature over a form POST, computed independently of the client code:
/// Base64(HMAC-SHA1(token, url + sorted name/value pairs)).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = params.iter().collect();
    pairs.sort();
    pairs.dedup();
    let mut data = url.to_owned();
    for (name, value) in pairs {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A running fake; the server stops when this is dropped.
#[derive(Debug)]
pub struct FakeTwilio {
    shared: Arc<Shared>,
    api_url: String,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    setup: FakeTwilioSetup,
    state: Mutex<TwilioState>,
    http: reqwest::Client,
}

#[derive(Debug)]
struct TwilioState {
    latency: Duration,
    next_id: u64,
    accepted: Vec<FakeSms>,
    opted_out: HashSet<(String, String)>,
    faults: VecDeque<Fault>,
    in_flight: usize,
    callbacks: Vec<SignedWebhook>,
    log: Vec<LoggedRequest>,
}

type Reply = (StatusCode, Vec<(String, String)>, Value);

fn twilio_error(status: StatusCode, code: u32, message: impl Into<String>) -> Reply {
    (
        status,
        Vec::new(),
        json!({
            "code": code,
            "message": message.into(),
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        }),
    )
}

fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].chars().all(|c| c.is_ascii_hexdigit())
}

fn is_e164(value: &str) -> bool {
    value.strip_prefix('+').is_some_and(|d| {
        (2..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()) && !d.starts_with('0')
    })
}

fn is_sender(value: &str) -> bool {
    is_e164(value)
        || (value.len() <= 11
            && !value.is_empty()
            && value.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
            && value.chars().any(|c| c.is_ascii_alphabetic()))
        || (value.len() >= 5 && value.len() <= 6 && value.chars().all(|c| c.is_ascii_digit()))
}

const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// Segments as carriers bill them: GSM-7 160/153 septets, else UCS-2 70/67 code units.
fn segments(body: &str) -> usize {
    let septets: Option<usize> = body.chars().try_fold(0usize, |n, c| {
        if GSM_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM_EXTENDED.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    });
    let (units, single, multi) = match septets {
        Some(n) => (n, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    match units {
        0 => 0,
        n if n <= single => 1,
        n => n.div_ceil(multi),
    }
}

fn rfc2822_now() -> String {
    Utc::now().format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

const OPT_OUT: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];
const OPT_IN: &[&str] = &["START", "YES", "UNSTOP"];
const HELP: &[&str] = &["HELP", "INFO"];

impl FakeTwilio {
    /// Starts the fake on `127.0.0.1:0` on the current tokio runtime.
    pub async fn start(setup: FakeTwilioSetup) -> std::io::Result<Self> {
        let state = TwilioState {
            latency: setup.latency,
            next_id: 1,
            accepted: Vec::new(),
            opted_out: HashSet::new(),
            faults: VecDeque::new(),
            in_flight: 0,
            callbacks: Vec::new(),
            log: Vec::new(),
        };
        let shared = Arc::new(Shared {
            setup,
            state: Mutex::new(state),
            http: reqwest::Client::new(),
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (address, server) = serve(router).await?;
        Ok(Self {
            shared,
            api_url: format!("http://{address}"),
            server,
        })
    }

    /// The API root to configure clients with (`http://127.0.0.1:PORT`).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Plays `fault` on the next request (faults queue in order).
    pub fn fail_next(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// Adds `latency` before every request is processed.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Records that `to` replied STOP to `from` (later sends from `from` get 21610).
    pub fn opt_out(&self, to: &str, from: &str) {
        self.shared
            .lock()
            .opted_out
            .insert((to.to_owned(), from.to_owned()));
    }

    /// Every accepted message, in order: the "no duplicate send" oracle.
    pub fn accepted(&self) -> Vec<FakeSms> {
        self.shared.lock().accepted.clone()
    }

    /// Every status callback posted so far.
    pub fn callbacks(&self) -> Vec<SignedWebhook> {
        self.shared.lock().callbacks.clone()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    /// The signed inbound-message webhook Twilio would post to `url` when `from` texts
    /// `body` to our number `to`. Opt-out keywords block the pair as Twilio does (later
    /// sends get 21610) and carry `OptOutType`; START/YES/UNSTOP lift the block.
    pub fn inbound(&self, url: &str, from: &str, to: &str, body: &str) -> SignedWebhook {
        let mut state = self.shared.lock();
        let n = state.next();
        let keyword = body.trim().to_uppercase();
        let mut params = vec![
            ("ToCountry".to_owned(), "US".to_owned()),
            ("SmsMessageSid".to_owned(), format!("SM{n:032x}")),
            ("NumMedia".to_owned(), "0".to_owned()),
            ("SmsSid".to_owned(), format!("SM{n:032x}")),
            ("SmsStatus".to_owned(), "received".to_owned()),
            ("Body".to_owned(), body.to_owned()),
            ("To".to_owned(), to.to_owned()),
            ("NumSegments".to_owned(), segments(body).max(1).to_string()),
            ("MessageSid".to_owned(), format!("SM{n:032x}")),
            (
                "AccountSid".to_owned(),
                self.shared.setup.account_sid.clone(),
            ),
            ("From".to_owned(), from.to_owned()),
            ("ApiVersion".to_owned(), "2010-04-01".to_owned()),
        ];
        let pair = (from.to_owned(), to.to_owned());
        if OPT_OUT.contains(&keyword.as_str()) {
            state.opted_out.insert(pair);
            params.push(("OptOutType".into(), "STOP".into()));
        } else if OPT_IN.contains(&keyword.as_str()) {
            state.opted_out.remove(&pair);
            params.push(("OptOutType".into(), "START".into()));
        } else if HELP.contains(&keyword.as_str()) {
            params.push(("OptOutType".into(), "HELP".into()));
        }
        let signature = twilio_signature(&self.shared.setup.auth_token, url, &params);
        SignedWebhook {
            url: url.to_owned(),
            params,
            signature,
        }
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, TwilioState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TwilioState {
    fn next(&mut self) -> u64 {
        let n = self.next_id;
        self.next_id += 1;
        n
    }
}

struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
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
    let log = |status: u16| LoggedRequest {
        method: method.to_string(),
        path: format!("/{}", path.join("/")),
        query: parse_query(uri.query().unwrap_or("")),
        status,
    };
    let (fault, latency, in_flight) = {
        let mut state = shared.lock();
        let fault = state.faults.pop_front();
        if let Some(limit) = shared.setup.max_concurrent {
            if state.in_flight >= limit {
                state.log.push(log(429));
                drop(state);
                let (status, headers, body) =
                    twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
                return json_response(status, &headers, body.to_string());
            }
        }
        state.in_flight += 1;
        (fault, state.latency, InFlight(Arc::clone(&shared)))
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
    let (status, extra, reply) = {
        let mut state = shared.lock();
        let reply = state.respond(&shared, &method, &path, &headers, &body);
        let logged = if matches!(fault, Some(Fault::DropAfterAccept)) {
            0
        } else {
            reply.0.as_u16()
        };
        state.log.push(log(logged));
        reply
    };
    let response = json_response(status, &extra, reply.to_string());
    let response = answer_after_processing(fault.as_ref(), &kill, response).await;
    drop(in_flight);
    response
}

impl TwilioState {
    fn respond(
        &mut self,
        shared: &Arc<Shared>,
        method: &Method,
        path: &[String],
        headers: &HeaderMap,
        body: &[u8],
    ) -> Reply {
        let setup = &shared.setup;
        let credentials = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let authenticated = credentials
            .as_deref()
            .and_then(|c| c.split_once(':'))
            .is_some_and(|(user, password)| {
                user == setup.account_sid && password == setup.auth_token
            });
        if !authenticated {
            let (status, mut headers, body) =
                twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
            headers.push((
                "WWW-Authenticate".into(),
                "Basic realm=\"Twilio API\"".into(),
            ));
            return (status, headers, body);
        }
        let path_str: Vec<&str> = path.iter().map(String::as_str).collect();
        let not_found = || {
            twilio_error(
                StatusCode::NOT_FOUND,
                20404,
                format!("The requested resource /{} was not found", path.join("/")),
            )
        };
        match (method.as_str(), path_str.as_slice()) {
            ("POST", ["2010-04-01", "Accounts", sid, "Messages.json"]) => {
                if *sid != setup.account_sid || !is_sid(sid, "AC") {
                    return not_found();
                }
                let is_form = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
                let params = if is_form {
                    parse_query(&String::from_utf8_lossy(body))
                } else {
                    Vec::new()
                };
                self.create(shared, params)
            }
            ("GET", ["2010-04-01", "Accounts", account]) => {
                if *account != format!("{}.json", setup.account_sid) {
                    return not_found();
                }
                (
                    StatusCode::OK,
                    Vec::new(),
                    json!({
                        "sid": setup.account_sid, "friendly_name": "Fake account", "status": "active",
                        "type": "Full", "date_created": rfc2822_now(), "date_updated": rfc2822_now(),
                        "uri": format!("/2010-04-01/Accounts/{}.json", setup.account_sid),
                    }),
                )
            }
            ("GET", ["2010-04-01", "Accounts", sid, "Messages", message]) => {
                if *sid != setup.account_sid {
                    return not_found();
                }
                let wanted = message.trim_end_matches(".json");
                match self.accepted.iter().find(|m| m.sid == wanted) {
                    Some(m) => (StatusCode::OK, Vec::new(), resource(setup, m, "queued")),
                    None => not_found(),
                }
            }
            _ => not_found(),
        }
    }

    fn create(&mut self, shared: &Arc<Shared>, params: Vec<(String, String)>) -> Reply {
        let setup = &shared.setup;
        let bad = |code: u32, message: String| twilio_error(StatusCode::BAD_REQUEST, code, message);
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let Some(to) = get("To") else {
            return bad(21604, "A 'To' phone number is required.".into());
        };
        let from = get("From");
        let service = get("MessagingServiceSid");
        match (&from, &service) {
            (None, None) => return bad(21603, "A 'From' phone number is required.".into()),
            (Some(_), Some(_)) => {
                return bad(21603, "Give exactly one of 'From' and 'MessagingServiceSid' (fake's reading of the conditional rule).".into())
            }
            (Some(f), None) if !is_sender(f) => {
                return bad(21212, format!("The 'From' number {f} is not a valid phone number, shortcode, or alphanumeric sender ID."))
            }
            (None, Some(s)) if !is_sid(s, "MG") => return bad(21701, format!("The Messaging Service Sid {s} is invalid.")),
            _ => {}
        }
        let body = get("Body");
        if body.as_deref().is_none_or(str::is_empty)
            && get("MediaUrl").is_none()
            && get("ContentSid").is_none()
        {
            return bad(21602, "Message body is required.".into());
        }
        let body = body.unwrap_or_default();
        if body.chars().count() > 1600 {
            return bad(
                21617,
                "The concatenated message body exceeds the 1600 character limit.".into(),
            );
        }
        if !is_e164(&to) {
            return bad(
                21211,
                format!("The 'To' number {to} is not a valid phone number."),
            );
        }
        let callback = get("StatusCallback");
        if let Some(url) = &callback {
            if !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                return bad(
                    21609,
                    format!("The StatusCallback URL {url} is not a valid URL."),
                );
            }
        }
        if setup.landlines.contains(&to) {
            return bad(
                21614,
                format!("'To' number {to} is not a valid mobile number"),
            );
        }
        let sender = from.clone().or_else(|| service.clone()).unwrap_or_default();
        if self.opted_out.contains(&(to.clone(), sender)) {
            return bad(21610, "Attempt to send to unsubscribed recipient".into());
        }
        let n = self.next();
        let sms = FakeSms {
            sid: format!("SM{n:032x}"),
            to,
            from,
            messaging_service_sid: service,
            num_segments: segments(&body),
            body,
            status_callback: callback,
            params,
        };
        let initial = if sms.messaging_service_sid.is_some() {
            "accepted"
        } else {
            "queued"
        };
        let reply = resource(setup, &sms, initial);
        if setup.status_callbacks {
            if let Some(url) = sms.status_callback.clone() {
                self.schedule_callbacks(shared, &sms, url);
            }
        }
        self.accepted.push(sms);
        (StatusCode::CREATED, Vec::new(), reply)
    }

    fn schedule_callbacks(&mut self, shared: &Arc<Shared>, sms: &FakeSms, url: String) {
        let setup = &shared.setup;
        let failure = setup
            .undeliverable
            .iter()
            .find(|(n, _)| *n == sms.to)
            .map(|(_, c)| *c);
        let mut statuses = vec![("sent", None)];
        statuses.push(match failure {
            Some(code) => ("undelivered", Some(code)),
            None => ("delivered", None),
        });
        let mut webhooks = Vec::new();
        for (status, code) in statuses {
            let mut params = vec![
                ("SmsSid".to_owned(), sms.sid.clone()),
                ("SmsStatus".to_owned(), status.to_owned()),
                ("MessageStatus".to_owned(), status.to_owned()),
                ("To".to_owned(), sms.to.clone()),
                ("MessageSid".to_owned(), sms.sid.clone()),
                ("AccountSid".to_owned(), setup.account_sid.clone()),
                ("From".to_owned(), sms.from.clone().unwrap_or_default()),
                ("ApiVersion".to_owned(), "2010-04-01".to_owned()),
            ];
            if let Some(code) = code {
                params.push(("ErrorCode".into(), code.to_string()));
            }
            let signature = twilio_signature(&setup.auth_token, &url, &params);
            webhooks.push(SignedWebhook {
                url: url.clone(),
                params,
                signature,
            });
        }
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            for webhook in webhooks {
                tokio::time::sleep(Duration::from_millis(5)).await;
                shared.lock().callbacks.push(webhook.clone());
                let _ = shared
                    .http
                    .post(&webhook.url)
                    .header("X-Twilio-Signature", &webhook.signature)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(webhook.body())
                    .send()
                    .await;
            }
        });
    }
}

fn resource(setup: &FakeTwilioSetup, sms: &FakeSms, status: &str) -> Value {
    let now = rfc2822_now();
    let segments = if status == "accepted" {
        0
    } else {
        sms.num_segments
    };
    json!({
        "account_sid": setup.account_sid,
        "api_version": "2010-04-01",
        "body": sms.body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": sms.from,
        "messaging_service_sid": sms.messaging_service_sid,
        "num_media": "0",
        "num_segments": segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sms.sid,
        "status": status,
        "subresource_uris": {"media": format!("/2010-04-01/Accounts/{}/Messages/{}/Media.json", setup.account_sid, sms.sid)},
        "to": sms.to,
        "uri": format!("/2010-04-01/Accounts/{}/Messages/{}.json", setup.account_sid, sms.sid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_counts() {
        assert_eq!(segments(""), 0);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&"é".repeat(160)), 1);
        assert_eq!(segments(&"ł".repeat(70)), 1);
        assert_eq!(segments(&"ł".repeat(71)), 2);
    }

    #[test]
    fn the_published_signature_vector() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }
}
