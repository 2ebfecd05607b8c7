//! One-click unsubscribe (RFC 8058) at `<public_base_url>/u/<token>`.
//!
//! `POST` with `List-Unsubscribe=One-Click` (form-urlencoded or multipart/form-data) records
//! the opt-out: an `unsubscribed` event, which suppresses the lead's email address, stops its
//! sequences and cancels its pending deliveries in one transaction. It answers 200 with a
//! page, never a redirect, and needs no cookie or login: the token is the authority. A second
//! POST changes nothing. `GET` only shows a page whose button makes that POST.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use engager_domain::links::verify_lead_token;
use engager_domain::{EventKind, Lead};
use engager_store::{NewEvent, StoreError, SuppressionKey};
use tracing::{info, warn};

use crate::pages::{escape, invalid_link, page};
use crate::{plain, store_failed, ServerState};

/// The purpose the planner signs unsubscribe tokens for.
const PURPOSE: &str = "unsubscribe";
/// The one-click body (RFC 8058 §3.1).
const ONE_CLICK_NAME: &str = "List-Unsubscribe";
const ONE_CLICK_VALUE: &str = "One-Click";

/// The lead a token names, when the token is genuine and the lead still exists.
async fn lead_of(state: &ServerState, token: &str) -> Result<Option<Lead>, StoreError> {
    let config = &state.config;
    let Some(id) = std::iter::once(&config.link_secret)
        .chain(&config.previous_link_secrets)
        .find_map(|secret| verify_lead_token(secret, PURPOSE, token))
    else {
        return Ok(None);
    };
    state.store.lead(id).await
}

/// Whether the lead has unsubscribed already (its opt-out recorded and its email suppressed).
async fn already_unsubscribed(state: &ServerState, lead: &Lead) -> Result<bool, StoreError> {
    let recorded = state
        .store
        .events_for_lead(lead.id)
        .await?
        .iter()
        .any(|e| e.event.kind == EventKind::Unsubscribed);
    if !recorded {
        return Ok(false);
    }
    match &lead.profile.email {
        None => Ok(true),
        Some(email) => Ok(!state
            .store
            .suppressed(&[SuppressionKey::Email(email.as_str().to_owned())])
            .await?
            .is_empty()),
    }
}

fn done_page(company: &str) -> Response {
    page(
        StatusCode::OK,
        "You are unsubscribed",
        &format!(
            "<p>You will not receive any more emails from {}. Nothing else is needed.</p>",
            escape(company)
        ),
    )
}

/// `GET /u/{token}`: a confirmation page; never changes anything.
async fn page_get(state: &ServerState, token: &str) -> Response {
    let lead = match lead_of(state, token).await {
        Ok(Some(lead)) => lead,
        Ok(None) => return invalid_link(),
        Err(e) => return store_failed("Unsubscribe page", &e),
    };
    match already_unsubscribed(state, &lead).await {
        Ok(true) => done_page(&state.config.company),
        Ok(false) => page(
            StatusCode::OK,
            "Unsubscribe",
            &format!(
                "<p>Stop receiving emails from {}?</p>\
                 <form method=\"post\"><input type=\"hidden\" name=\"{ONE_CLICK_NAME}\" value=\"{ONE_CLICK_VALUE}\">\
                 <button type=\"submit\">Unsubscribe</button></form>",
                escape(&state.config.company)
            ),
        ),
        Err(e) => store_failed("Unsubscribe page", &e),
    }
}

/// Axum handler for `GET /u/{token}`.
pub(crate) async fn show(State(state): State<ServerState>, Path(token): Path<String>) -> Response {
    page_get(&state, &token).await
}

/// Whether the body is RFC 8058's `List-Unsubscribe=One-Click`, in either form encoding.
async fn is_one_click(headers: &HeaderMap, body: Bytes) -> Result<bool, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| format!("malformed multipart/form-data Content-Type: {e}"))?;
        let stream = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| format!("malformed multipart/form-data body: {e}"))?
        {
            if field.name() == Some(ONE_CLICK_NAME) {
                let value = field
                    .text()
                    .await
                    .map_err(|e| format!("malformed multipart/form-data body: {e}"))?;
                if value.trim() == ONE_CLICK_VALUE {
                    return Ok(true);
                }
            }
        }
        return Ok(false);
    }
    // application/x-www-form-urlencoded, which is also what a client sending no type means.
    Ok(url::form_urlencoded::parse(&body)
        .any(|(name, value)| name == ONE_CLICK_NAME && value.trim() == ONE_CLICK_VALUE))
}

/// `POST /u/{token}`: the one-click unsubscribe.
pub(crate) async fn one_click(
    State(state): State<ServerState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lead = match lead_of(&state, &token).await {
        Ok(Some(lead)) => lead,
        Ok(None) => {
            warn!("Unsubscribe POST with a token that does not verify; nothing written.");
            return invalid_link();
        }
        Err(e) => return store_failed("Unsubscribe", &e),
    };
    match is_one_click(&headers, body).await {
        Ok(true) => {}
        Ok(false) => return plain(
            StatusCode::BAD_REQUEST,
            "malformed unsubscribe request: the body must be List-Unsubscribe=One-Click (RFC 8058)",
        ),
        Err(problem) => return plain(StatusCode::BAD_REQUEST, problem),
    }
    match already_unsubscribed(&state, &lead).await {
        Ok(true) => return done_page(&state.config.company),
        Ok(false) => {}
        Err(e) => return store_failed("Unsubscribe", &e),
    }
    let recorded = state
        .store
        .record_event(&NewEvent {
            lead_id: lead.id,
            delivery_id: None,
            kind: EventKind::Unsubscribed,
            occurred_at: state.clock.now(),
            detail: serde_json::json!({"via": "one-click"}).to_string(),
            source: "one-click".to_owned(),
        })
        .await;
    match recorded {
        Ok(effects) => {
            info!(
                lead_id = %lead.id,
                suppressed = effects.suppressed,
                enrollments_stopped = effects.enrollments_stopped,
                deliveries_cancelled = effects.deliveries_cancelled,
                "One-click unsubscribe recorded."
            );
            crate::audit(
                &state,
                "opt_out",
                format!("lead:{}", lead.id),
                format!(
                    "one-click unsubscribe (RFC 8058): email {}, {} sequence(s) stopped, {} delivery(ies) cancelled",
                    if effects.suppressed { "suppressed" } else { "already suppressed" },
                    effects.enrollments_stopped,
                    effects.deliveries_cancelled
                ),
            )
            .await;
            done_page(&state.config.company)
        }
        Err(e) => store_failed("Unsubscribe", &e),
    }
}
