//! Twilio's webhooks: status callbacks of our SMS and inbound messages.

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use engager_channels::twilio::webhook::{
    self, InboundIntent, InboundSms, MessageStatus, StatusCallback, SIGNATURE_HEADER,
};
use engager_domain::EventKind;
use engager_store::{
    NewEvent, SmsAction, SmsInbound, SmsMessage, SmsStatusChange, StoreError, SuppressionKey,
};
use secrecy::ExposeSecret;
use tracing::{info, warn};

use crate::{plain, store_failed, ServerState, TwilioWebhooks};

/// Where events and suppressions from these webhooks say they came from.
const SOURCE: &str = "webhook:twilio";

/// Twilio's error for a recipient who replied STOP to this sender.
const OPTED_OUT: u32 = 21610;

/// Error codes that say the number itself cannot receive SMS: it is suppressed (other channels
/// go on). 21211 invalid number, 21614 not a mobile number, 30004 blocked by the recipient or
/// carrier, 30005 unknown or inactive number, 30006 landline or unreachable carrier.
/// 30003 (handset off or out of coverage), 30007 (carrier filtering) and 30008 (unknown) may
/// pass on a later try, so they are soft.
const PERMANENT_NUMBER_CODES: &[u32] = &[21211, 21614, 30004, 30005, 30006];

/// How many times a status is re-read when another callback for the same message wins the race.
const MAX_STATUS_RACES: usize = 5;

/// Why a webhook is refused before anything is written: the status and the words naming
/// the problem.
struct Rejection(StatusCode, String);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        plain(self.0, self.1)
    }
}

/// Reads the form body of a webhook, or the answer naming what is wrong with it.
fn form_params(headers: &HeaderMap, body: &Bytes) -> Result<Vec<(String, String)>, Rejection> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/x-www-form-urlencoded" {
        return Err(Rejection(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "expected a Content-Type of application/x-www-form-urlencoded, got {content_type:?}"
            ),
        ));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(Rejection(
            StatusCode::BAD_REQUEST,
            "malformed form body: it is not UTF-8".into(),
        ));
    }
    Ok(webhook::parse_form(body))
}

/// Checks `X-Twilio-Signature` against the URLs Twilio may have signed; logs and answers 403
/// when it does not verify.
fn verify(
    state: &ServerState,
    twilio: &TwilioWebhooks,
    path_and_query: &str,
    extra_url: Option<&str>,
    headers: &HeaderMap,
    params: &[(String, String)],
    route: &str,
) -> Result<(), Rejection> {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let token = twilio.auth_token.expose_secret();
    let url = state.public_url(path_and_query);
    let ok = webhook::verify_signature(token, &url, params, signature).is_ok()
        || extra_url.is_some_and(|u| {
            u != url && webhook::verify_signature(token, u, params, signature).is_ok()
        });
    if ok {
        return Ok(());
    }
    warn!(
        route,
        url = %url,
        signature_present = signature.is_some(),
        "Rejected a Twilio webhook: X-Twilio-Signature is missing or does not match the auth token and URL; nothing was written."
    );
    Err(Rejection(
        StatusCode::FORBIDDEN,
        "the X-Twilio-Signature header is missing or does not match".into(),
    ))
}

fn twilio_or_404(state: &ServerState) -> Result<&TwilioWebhooks, Rejection> {
    state.config.twilio.as_ref().ok_or_else(|| {
        warn!("A Twilio webhook arrived but [channels.twilio] is not configured.");
        Rejection(
            StatusCode::NOT_FOUND,
            "Twilio is not configured on this server ([channels.twilio])".into(),
        )
    })
}

/// `POST /webhooks/twilio/status`
pub(crate) async fn status(
    State(state): State<ServerState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let twilio = match twilio_or_404(&state) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let params = match form_params(&headers, &body) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    if let Err(r) = verify(
        &state,
        twilio,
        path,
        twilio.status_callback.as_deref(),
        &headers,
        &params,
        "status",
    ) {
        return r.into_response();
    }
    let callback = match StatusCallback::from_params(&params) {
        Ok(c) => c,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("malformed status callback: {e}"),
            )
        }
    };
    match apply_status(&state, &callback).await {
        Ok(result) => {
            let (word, current) = match &result {
                StatusResult::Applied => ("applied", Some(callback.status.as_str().to_owned())),
                StatusResult::Stale(current) => ("stale", current.clone()),
                StatusResult::UnknownMessage => ("unknown_message", None),
            };
            if matches!(result, StatusResult::Applied) && callback.error_code == Some(OPTED_OUT) {
                if let Ok(Some(message)) = state.store.sms_message(&callback.message_sid).await {
                    crate::audit(
                        &state,
                        "opt_out",
                        format!("lead:{}", message.lead_id),
                        "Twilio error 21610 (the recipient replied STOP to this sender): number suppressed".into(),
                    )
                    .await;
                }
            }
            match result {
                StatusResult::Applied => info!(
                    message_sid = %callback.message_sid,
                    status = callback.status.as_str(),
                    error_code = ?callback.error_code,
                    "Twilio status applied."
                ),
                StatusResult::Stale(_) => info!(
                    message_sid = %callback.message_sid,
                    status = callback.status.as_str(),
                    current = ?current,
                    "Twilio status ignored: the message is already at this status or a later one."
                ),
                StatusResult::UnknownMessage => warn!(
                    message_sid = %callback.message_sid,
                    status = callback.status.as_str(),
                    "Twilio status for a message that is not in the ledger; nothing written."
                ),
            }
            Json(serde_json::json!({
                "result": word,
                "message_sid": callback.message_sid,
                "status": current,
            }))
            .into_response()
        }
        Err(e) => store_failed("Twilio status callback", &e),
    }
}

enum StatusResult {
    Applied,
    /// Not an advance on the current status (a replay, or a late earlier status).
    Stale(Option<String>),
    UnknownMessage,
}

async fn apply_status(
    state: &ServerState,
    callback: &StatusCallback,
) -> Result<StatusResult, StoreError> {
    for _ in 0..MAX_STATUS_RACES {
        let Some(message) = state.store.sms_message(&callback.message_sid).await? else {
            return Ok(StatusResult::UnknownMessage);
        };
        let current = match message.status.as_deref().map(MessageStatus::parse) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                return Err(StoreError::Corrupt {
                    table: "sms_statuses",
                    column: "status",
                    reason: e.to_string(),
                })
            }
        };
        if !callback.status.advances(current) {
            return Ok(StatusResult::Stale(message.status));
        }
        let change = status_change(&message, callback, state.clock.now());
        if state.store.apply_sms_status(&change).await? {
            return Ok(StatusResult::Applied);
        }
    }
    Err(StoreError::Task(format!(
        "the status of {} kept changing under concurrent callbacks",
        callback.message_sid
    )))
}

/// What a new status means for the ledger: an event (delivered, opted out, bounced), a
/// suppression for a number that can never receive SMS, and a note on the delivery.
fn status_change(
    message: &SmsMessage,
    callback: &StatusCallback,
    now: chrono::DateTime<chrono::Utc>,
) -> SmsStatusChange {
    let mut detail = serde_json::json!({
        "message_sid": callback.message_sid,
        "status": callback.status.as_str(),
    });
    if let Some(code) = callback.error_code {
        detail["error_code"] = code.into();
    }
    let mut kind = None;
    let mut suppress = None;
    let mut note = None;
    match callback.status {
        MessageStatus::Delivered => kind = Some(EventKind::Delivered),
        MessageStatus::Undelivered | MessageStatus::Failed => {
            let code = callback.error_code;
            note = Some(match code {
                Some(c) => format!("twilio {}, error {c}", callback.status.as_str()),
                None => format!("twilio {}", callback.status.as_str()),
            });
            match code {
                Some(OPTED_OUT) => {
                    // The recipient replied STOP to this sender: an opt-out, everywhere. The
                    // event's effects suppress the delivery's number and stop the sequences.
                    detail["opt_out"] = true.into();
                    kind = Some(EventKind::Unsubscribed);
                }
                Some(c) if PERMANENT_NUMBER_CODES.contains(&c) => {
                    // The number cannot receive SMS: suppress it; the lead's other channels
                    // go on (a hard bounce would end the lead everywhere).
                    detail["permanent"] = true.into();
                    kind = Some(EventKind::SoftBounce);
                    suppress = Some((
                        SuppressionKey::Phone(message.to_address.clone()),
                        format!("sms_undeliverable:{c}"),
                    ));
                }
                _ => {
                    detail["permanent"] = false.into();
                    kind = Some(EventKind::SoftBounce);
                }
            }
        }
        MessageStatus::Canceled => note = Some("twilio canceled".to_owned()),
        _ => {}
    }
    SmsStatusChange {
        delivery_id: message.delivery_id,
        message_sid: callback.message_sid.clone(),
        expected: message.status.clone(),
        status: callback.status.as_str().to_owned(),
        error_code: callback.error_code,
        event: kind.map(|kind| NewEvent {
            lead_id: message.lead_id,
            delivery_id: Some(message.delivery_id),
            kind,
            occurred_at: now,
            detail: detail.to_string(),
            source: SOURCE.to_owned(),
        }),
        suppress,
        delivery_note: note,
        source: SOURCE.to_owned(),
        now,
    }
}

/// `POST /webhooks/twilio/inbound`
pub(crate) async fn inbound(
    State(state): State<ServerState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let twilio = match twilio_or_404(&state) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let params = match form_params(&headers, &body) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    if let Err(r) = verify(&state, twilio, path, None, &headers, &params, "inbound") {
        return r.into_response();
    }
    let sms = match InboundSms::from_params(&params) {
        Ok(s) => s,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("malformed inbound message: {e}"),
            )
        }
    };
    let action = match sms.intent {
        InboundIntent::OptOut => SmsAction::OptOut,
        InboundIntent::OptIn => SmsAction::OptIn,
        InboundIntent::Help => SmsAction::Help,
        InboundIntent::Reply => SmsAction::Reply,
    };
    let applied = state
        .store
        .apply_sms_inbound(&SmsInbound {
            message_sid: sms.message_sid.clone(),
            from: sms.from.trim().to_owned(),
            to: sms.to.trim().to_owned(),
            body: sms.body.clone(),
            action,
            source: SOURCE.to_owned(),
            now: state.clock.now(),
        })
        .await;
    let outcome = match applied {
        Ok(o) => o,
        Err(e) => return store_failed("Twilio inbound message", &e),
    };
    info!(
        message_sid = %sms.message_sid,
        action = action.as_str(),
        duplicate = outcome.duplicate,
        leads = outcome.leads.len(),
        suppressed = outcome.suppressed,
        lifted = outcome.lifted,
        enrollments_stopped = outcome.enrollments_stopped,
        deliveries_cancelled = outcome.deliveries_cancelled,
        "Inbound SMS applied."
    );
    if !outcome.duplicate && matches!(action, SmsAction::OptOut | SmsAction::OptIn) {
        let (what, detail) = match action {
            SmsAction::OptOut => (
                "opt_out",
                format!(
                    "SMS opt-out keyword: number suppressed, {} sequence(s) stopped, {} delivery(ies) cancelled",
                    outcome.enrollments_stopped, outcome.deliveries_cancelled
                ),
            ),
            _ => (
                "consent",
                format!(
                    "SMS opt-in keyword (re-consent): number suppression {}",
                    if outcome.lifted { "lifted" } else { "absent" }
                ),
            ),
        };
        // Subjects are ids, never numbers: the leads with the number, else the message.
        let subjects: Vec<String> = if outcome.leads.is_empty() {
            vec![format!("sms:{}", sms.message_sid)]
        } else {
            outcome.leads.iter().map(|l| format!("lead:{l}")).collect()
        };
        for subject in subjects {
            crate::audit(&state, what, subject, detail.clone()).await;
        }
    }
    match action {
        SmsAction::Help => twiml(Some(&state.config.help_reply)),
        // Twilio confirms STOP and START itself on long codes and toll-free numbers; a reply
        // gets no automatic answer.
        _ => twiml(None),
    }
}

/// A TwiML answer: one reply message, or none.
fn twiml(message: Option<&str>) -> Response {
    let body = match message {
        Some(text) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
            crate::pages::escape(text)
        ),
        None => webhook::EMPTY_TWIML.to_owned(),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}
