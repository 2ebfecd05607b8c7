//! The dashboard (`/dashboard`): what the campaigns achieved and how the machine is doing,
//! rendered on the server as HTML with inline SVG charts (no script, no external resource).
//!
//! Pages: overview (KPIs, funnel, sends and reply rates by day with intervals, campaigns and
//! channels), a page per campaign (steps, channels, variants with intervals and verdicts),
//! experiments and a page per experiment, deliverability (rates against the monitor's levels,
//! halts), compliance (opt-outs, suppressions, audit log, halts) and queue and channel health
//! (ledger by state, due queue age, circuits).
//!
//! Every figure comes from the code that computes it for the CLI: `engine::report::build`
//! (counts, rates, Wilson intervals, funnel), `domain::stats::judge` (A/B verdicts),
//! `engine::monitor::check` (deliverability, read-only here), and the store's ledger,
//! accounts, halts, suppression list and audit log.
//!
//! Access: see [`auth`]. Without an admin token every dashboard route answers 404 with a page
//! saying how to enable it.

// The error of the page helpers is the answer itself (a login redirect, a 401, an error page).
#![allow(clippy::result_large_err)]

pub(crate) mod auth;
mod compliance;
mod html;
mod pages;
mod svg;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use engager_domain::Channel;
use engager_engine::monitor::MonitorSettings;
use secrecy::SecretString;

pub use auth::{COOKIE, MIN_TOKEN_CHARS, SESSION_HOURS};

use crate::ServerState;
use html::esc;

/// The dashboard's base path (under the public base URL's path).
pub const DASHBOARD_PATH: &str = "/dashboard";

/// The dashboard's configuration.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// `[server] admin_token`: the bearer token and the key of session cookies. Never printed.
    pub admin_token: SecretString,
    /// The deliverability monitor's window and levels (`[deliverability]`).
    pub monitor: MonitorSettings,
    /// The enabled channels, for the deliverability panel.
    pub channels: Vec<Channel>,
    /// Every sending account of those channels (`channel:provider[:identity]`), for the
    /// per-account and per-domain rows of the deliverability panel.
    pub accounts: Vec<(Channel, String)>,
    /// The domain of `[sender].email`: the sending domain of email accounts named without one.
    pub sender_domain: Option<String>,
}

/// The dashboard's routes (merged into the server's router).
pub(crate) fn routes() -> Router<ServerState> {
    Router::new()
        .route(DASHBOARD_PATH, get(pages::overview))
        .route("/dashboard/login", get(login_form).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/campaigns", get(pages::campaigns))
        .route("/dashboard/campaigns/{slug}", get(pages::campaign))
        .route("/dashboard/experiments", get(pages::experiments))
        .route(
            "/dashboard/experiments/{slug}/{step}",
            get(pages::experiment),
        )
        .route("/dashboard/deliverability", get(pages::deliverability))
        .route("/dashboard/compliance", get(pages::compliance))
        .route("/dashboard/health", get(pages::health))
        .route("/dashboard/{*rest}", get(unknown_page))
}

impl ServerState {
    /// The dashboard's base URL path (`/prefix/dashboard`).
    pub(crate) fn dashboard_base(&self) -> String {
        format!("{}{DASHBOARD_PATH}", self.prefix)
    }

    /// Whether cookies get `Secure` (the public base URL is https).
    fn secure_cookies(&self) -> bool {
        self.origin.starts_with("https://")
    }
}

/// The answer when no admin token is configured.
pub(crate) fn disabled() -> Response {
    html::respond(
        StatusCode::NOT_FOUND,
        html::bare(
            "Dashboard disabled",
            "<h1>The dashboard is disabled</h1><p>To enable it, set <code>admin_token</code> in \
             the <code>[server]</code> section of <code>engager.toml</code> (or the environment \
             variable <code>ENGAGER_SERVER__ADMIN_TOKEN</code>) to a random string of at least 32 \
             characters, e.g. the output of <code>openssl rand -hex 32</code>, and restart \
             <code>engager serve</code>.</p>",
        ),
    )
}

/// The gate of every page: the configuration when the request may see it, else the answer
/// (disabled, login redirect, 401).
pub(crate) fn gate(
    state: &ServerState,
    headers: &HeaderMap,
    path_and_query: &str,
) -> Result<Arc<DashboardConfig>, Response> {
    let Some(config) = state.dashboard.clone() else {
        return Err(disabled());
    };
    match auth::access(&config.admin_token, headers, state.clock.now()) {
        auth::Access::Granted => Ok(config),
        auth::Access::Denied => Err((
            StatusCode::UNAUTHORIZED,
            [
                (
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"engager-dashboard\"",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            "the admin token is not valid\n",
        )
            .into_response()),
        auth::Access::Login => {
            let next: String =
                url::form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
            Err((
                StatusCode::SEE_OTHER,
                [
                    (
                        header::LOCATION,
                        format!("{}/login?next={next}", state.dashboard_base()),
                    ),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
            )
                .into_response())
        }
    }
}

/// Where to go after logging in: only a dashboard path (no open redirect).
fn safe_next(state: &ServerState, next: Option<&str>) -> String {
    let base = state.dashboard_base();
    match next {
        Some(n)
            if n.starts_with(&base)
                && matches!(n.as_bytes().get(base.len()), None | Some(b'/' | b'?'))
                && !n.contains("//")
                && !n.contains('\\') =>
        {
            n.to_owned()
        }
        _ => base,
    }
}

/// The parameters of a query string or form body.
pub(crate) fn params(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn login_page(
    state: &ServerState,
    status: StatusCode,
    next: &str,
    error: Option<&str>,
) -> Response {
    let error = error
        .map(|e| format!("<p class=\"bad\">{}</p>", esc(e)))
        .unwrap_or_default();
    html::respond(
        status,
        html::bare(
            "Log in",
            &format!(
                "<form class=\"login\" method=\"post\" action=\"{base}/login\">\
                 <h1>Engager dashboard</h1>{error}\
                 <label for=\"token\">Admin token</label>\
                 <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
                 <input type=\"hidden\" name=\"next\" value=\"{next}\">\
                 <button type=\"submit\">Log in</button>\
                 <p class=\"muted\">The token is <code>[server] admin_token</code>. A login lasts {SESSION_HOURS} hours.</p></form>",
                base = esc(&state.dashboard_base()),
                next = esc(next),
            ),
        ),
    )
}

async fn login_form(State(state): State<ServerState>, RawQuery(query): RawQuery) -> Response {
    if state.dashboard.is_none() {
        return disabled();
    }
    let params = params(query.as_deref());
    let next = safe_next(&state, param(&params, "next"));
    login_page(&state, StatusCode::OK, &next, None)
}

/// A POST from another site is refused: `Origin` (when sent) must be the public origin or
/// the host the request was sent to.
fn same_origin(state: &ServerState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if origin == &*state.origin {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

async fn login(State(state): State<ServerState>, headers: HeaderMap, body: String) -> Response {
    let Some(config) = state.dashboard.clone() else {
        return disabled();
    };
    if !same_origin(&state, &headers) {
        return crate::plain(StatusCode::FORBIDDEN, "cross-site login refused");
    }
    let params = params(Some(&body));
    let next = safe_next(&state, param(&params, "next"));
    let token = param(&params, "token").unwrap_or_default().trim();
    if !auth::token_matches(&config.admin_token, token) {
        tracing::warn!("Dashboard: a login with a wrong admin token.");
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That is not the admin token."),
        );
    }
    let session = auth::new_session(&config.admin_token, state.clock.now());
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                auth::set_cookie(
                    Some(&session),
                    &state.dashboard_base(),
                    state.secure_cookies(),
                ),
            ),
            (header::LOCATION, next),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

async fn logout(State(state): State<ServerState>, headers: HeaderMap) -> Response {
    if state.dashboard.is_none() {
        return disabled();
    }
    if !same_origin(&state, &headers) {
        return crate::plain(StatusCode::FORBIDDEN, "cross-site logout refused");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                auth::set_cookie(None, &state.dashboard_base(), state.secure_cookies()),
            ),
            (
                header::LOCATION,
                format!("{}/login", state.dashboard_base()),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

async fn unknown_page(
    State(state): State<ServerState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Err(r) = gate(&state, &headers, &uri.to_string()) {
        return r;
    }
    error_page(
        &state,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such dashboard page.",
    )
}

/// A signed-in error page naming the problem.
pub(crate) fn error_page(
    state: &ServerState,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    html::respond(
        status,
        html::page(
            &state.dashboard_base(),
            "-",
            title,
            &format!("<p class=\"bad\">{}</p>", esc(message)),
        ),
    )
}

/// The reporting period of a page (`?period=7d|30d|90d|365d|all`, default 30d).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Period {
    pub name: &'static str,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// The periods offered.
pub(crate) const PERIODS: [(&str, Option<i64>); 5] = [
    ("7d", Some(7)),
    ("30d", Some(30)),
    ("90d", Some(90)),
    ("365d", Some(365)),
    ("all", None),
];

impl Period {
    /// Parses `?period=`; the error names the parameter and the accepted values.
    pub(crate) fn parse(value: Option<&str>, now: DateTime<Utc>) -> Result<Period, String> {
        let value = value.unwrap_or("30d");
        let (name, days) = PERIODS
            .iter()
            .find(|(n, _)| *n == value)
            .copied()
            .ok_or_else(|| {
                format!(
                    "period={value:?} is not a known period: use one of {}",
                    PERIODS.map(|p| p.0).join(", ")
                )
            })?;
        Ok(Period {
            name,
            since: days.map_or(DateTime::<Utc>::UNIX_EPOCH, |d| now - Duration::days(d)),
            until: now,
        })
    }

    /// The period picker: links to the same page with each period.
    pub(crate) fn picker(&self, page_url: &str) -> String {
        let mut out = String::from("<p class=\"periods\">Period: ");
        for (name, _) in PERIODS {
            out.push_str(&format!(
                "<a href=\"{}?period={name}\"{}>{}</a>",
                esc(page_url),
                if name == self.name {
                    " class=\"on\""
                } else {
                    ""
                },
                if name == "all" {
                    "all time".to_owned()
                } else {
                    format!("last {name}")
                }
            ));
        }
        out.push_str(&format!(
            " <span class=\"muted\">({} – {})</span></p>",
            if self.since == DateTime::<Utc>::UNIX_EPOCH {
                "the beginning".to_owned()
            } else {
                html::time(self.since)
            },
            html::time(self.until)
        ));
        out
    }
}
