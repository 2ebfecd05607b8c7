//! The JSON API for systems around Engager (a CRM, a booking tool): conversions.
//!
//! `POST /api/v1/conversions` with `Authorization: Bearer <[server] admin_token>` and a JSON
//! body `{"lead": 42 | "ada@example.com", "value": 1200.0, "kind": "meeting", "note": "…",
//! "external_id": "crm-opportunity-9"}` records a conversion, exactly as `engager convert`
//! does: the lead's sequences stop and reports attribute it to the lead's last message. With
//! an `external_id`, a retried request records nothing new (200 with `"duplicate": true`).
//! Without an admin token the API answers 404; a wrong token 401; a bad body 400 naming the
//! field; an unknown lead 404.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use engager_domain::{EventKind, LeadId};
use engager_store::NewEvent;
use serde_json::{json, Value};
use tracing::warn;

use crate::dashboard::auth::token_matches;
use crate::ServerState;

/// The conversions route.
pub const CONVERSIONS_PATH: &str = "/api/v1/conversions";

fn answer(code: StatusCode, body: Value) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn bad(field: &str, reason: &str) -> Response {
    answer(
        StatusCode::BAD_REQUEST,
        json!({"error": format!("field `{field}`: {reason}"), "field": field}),
    )
}

/// `POST /api/v1/conversions`
pub(crate) async fn conversion(
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(dashboard) = state.dashboard.as_ref() else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"error": "the API is disabled: set [server] admin_token"}),
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if presented.is_empty() || !token_matches(&dashboard.admin_token, presented) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            json!({"error": "a valid `Authorization: Bearer <admin token>` header is required"})
                .to_string(),
        )
            .into_response();
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !is_json {
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": "expected Content-Type: application/json"}),
        );
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad("(body)", "expected a JSON object"),
        Err(e) => return bad("(body)", &format!("not valid JSON: {e}")),
    };
    let known = ["lead", "value", "kind", "note", "external_id"];
    if let Some(k) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !known.contains(&k.as_str())))
    {
        return bad(
            k,
            &format!("unknown field; expected one of {}", known.join(", ")),
        );
    }
    let value = match &body["value"] {
        Value::Null => None,
        Value::Number(n) => match n.as_f64() {
            Some(v) if v.is_finite() && v >= 0.0 => Some(v),
            _ => return bad("value", "expected an amount of 0 or more"),
        },
        _ => return bad("value", "expected a number"),
    };
    let text = |name: &str, max: usize| -> Result<Option<String>, Response> {
        match &body[name] {
            Value::Null => Ok(None),
            Value::String(s) if s.chars().count() <= max => Ok(Some(s.clone())),
            Value::String(_) => Err(bad(name, &format!("longer than {max} characters"))),
            _ => Err(bad(name, "expected a string")),
        }
    };
    let (kind, note, external_id) = match (
        text("kind", 64),
        text("note", 2000),
        text("external_id", 200),
    ) {
        (Ok(k), Ok(n), Ok(e)) => (k, n, e),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let found = match &body["lead"] {
        Value::Number(n) => match n.as_i64() {
            Some(id) => state.store.lead(LeadId(id)).await,
            None => return bad("lead", "expected a lead id or an email address"),
        },
        Value::String(email) if email.contains('@') => {
            state
                .store
                .lead_by_email(&email.trim().to_lowercase())
                .await
        }
        Value::Null => return bad("lead", "required: the lead's id or email address"),
        _ => return bad("lead", "expected a lead id or an email address"),
    };
    let lead = match found {
        Ok(Some(lead)) => lead,
        Ok(None) => {
            return answer(
                StatusCode::NOT_FOUND,
                json!({"error": "no such lead", "field": "lead"}),
            )
        }
        Err(e) => {
            warn!(error = %e, "Recording a conversion failed.");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the database could not be reached; retry"}),
            );
        }
    };
    let event = NewEvent {
        lead_id: lead.id,
        delivery_id: None,
        kind: EventKind::Converted,
        occurred_at: state.clock.now(),
        detail: json!({"value": value, "kind": kind, "note": note}).to_string(),
        source: "api".into(),
    };
    let recorded = match &external_id {
        Some(id) => state
            .store
            .record_external_event(&event, &format!("api:conversion:{id}"))
            .await
            .map(|effects| effects.map(|e| (e.enrollments_stopped, e.deliveries_cancelled))),
        None => state
            .store
            .record_event(&event)
            .await
            .map(|e| Some((e.enrollments_stopped, e.deliveries_cancelled))),
    };
    match recorded {
        Ok(Some((stopped, cancelled))) => answer(
            StatusCode::CREATED,
            json!({"lead_id": lead.id.0, "kind": "converted", "value": value,
                   "enrollments_stopped": stopped, "deliveries_cancelled": cancelled, "duplicate": false}),
        ),
        Ok(None) => answer(
            StatusCode::OK,
            json!({"lead_id": lead.id.0, "kind": "converted", "duplicate": true}),
        ),
        Err(e) => {
            warn!(error = %e, "Recording a conversion failed.");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the database could not be reached; retry"}),
            )
        }
    }
}
