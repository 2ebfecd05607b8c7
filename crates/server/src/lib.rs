//! Engager's HTTP server (`engager serve`): what providers and recipients send back.
//!
//! Routes:
//! - `POST /webhooks/twilio/status`: Twilio status callbacks of our SMS (delivered,
//!   undelivered, failed, ...), applied monotonically and idempotently.
//! - `POST /webhooks/twilio/inbound`: inbound SMS: STOP and its synonyms suppress the number
//!   at once, START/UNSTOP lift that, HELP is answered with TwiML, anything else is a reply
//!   that stops the lead's sequences.
//! - `GET /u/{token}` shows a confirmation page and never changes anything (link scanners
//!   prefetch GETs); `POST /u/{token}` with `List-Unsubscribe=One-Click` unsubscribes (RFC
//!   8058 one-click; the page's button posts the same body).
//! - `GET /o/{token}.gif`: the open pixel (always a GIF; a genuine token records an open);
//!   `GET /c/{token}`: 302 to a tracked link's stored destination, 404 for anything else
//!   (`tracking`). Their events go through one batched writer, drained on shutdown.
//! - `GET /healthz`: 200 when the store answers, 503 otherwise.
//!
//! Invariants:
//! - A Twilio webhook is acted on only when its `X-Twilio-Signature` verifies against the
//!   public URL (`links.public_base_url`'s origin + the request's path and query); a forged
//!   one gets 403 and writes nothing.
//! - An unsubscribe token is an HMAC of the lead id (`engager_domain::links`): no personal data
//!   in the URL, no expiry (CAN-SPAM wants links working for 30 days at least), a token for one
//!   lead cannot act on another; a bad token gets 404 and writes nothing.
//! - Bodies are capped (`[server] max_body_bytes`) and every request has a deadline
//!   (`[server] request_timeout_secs`, 408 after it).
//! - The routes live under the path of `links.public_base_url` (usually `/`), so the signed
//!   URL is exactly the one Twilio called, behind a proxy that keeps the path.

#![forbid(unsafe_code)]

mod api;
pub mod dashboard;
pub mod latency;
mod metrics;
mod pages;
mod tracking;
mod twilio;
mod unsubscribe;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engager_engine::{Clock, EngineConfig, SystemClock};
use engager_store::Store;
use secrecy::SecretString;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

/// The route of Twilio status callbacks (point each message's `StatusCallback` here).
pub const TWILIO_STATUS_PATH: &str = "/webhooks/twilio/status";
/// The route of Twilio inbound messages (the number's "A message comes in" webhook).
pub const TWILIO_INBOUND_PATH: &str = "/webhooks/twilio/inbound";
/// The prefix of unsubscribe links (`<public_base_url>/u/<token>`, as the planner writes them).
pub const UNSUBSCRIBE_PREFIX: &str = "/u/";
/// The health check route.
pub const HEALTH_PATH: &str = "/healthz";
pub use metrics::{METRICS_PATH, READY_PATH};

/// Largest request body by default: Twilio's form posts are a few kilobytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default deadline of a request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The public base URL is not an absolute http(s) URL.
    #[error("invalid configuration at key `links.public_base_url`: {0:?} is not an http(s) URL")]
    BaseUrl(String),
    /// Serving failed.
    #[error("the server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// How Twilio's webhooks are checked.
#[derive(Debug, Clone)]
pub struct TwilioWebhooks {
    /// The account's auth token: the key of `X-Twilio-Signature`. Never printed.
    pub auth_token: SecretString,
    /// The `StatusCallback` URL configured for sends (`[channels.twilio] status_callback`),
    /// also accepted as the signed URL of status callbacks when it differs from the public
    /// base URL.
    pub status_callback: Option<String>,
}

/// Everything the routes need from the configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `links.public_base_url`: origin and path prefix of every route.
    pub public_base_url: String,
    /// `links.secret`: the key of unsubscribe tokens.
    pub link_secret: Vec<u8>,
    /// `links.previous_secrets`: earlier keys, still accepted for unsubscribe links so that a
    /// rotated secret does not break links already in people's mailboxes.
    pub previous_link_secrets: Vec<Vec<u8>>,
    /// The company named on pages and in the HELP reply.
    pub company: String,
    /// The HELP reply (CTIA: program name, contact, how to stop).
    pub help_reply: String,
    /// Twilio's webhooks; `None` answers them with 404.
    pub twilio: Option<TwilioWebhooks>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Deadline of a request.
    pub request_timeout: Duration,
}

impl ServerConfig {
    /// The server's view of the engine configuration, with default limits, the default HELP
    /// reply and no Twilio webhooks.
    pub fn from_engine(engine: &EngineConfig) -> Self {
        Self {
            public_base_url: engine.public_base_url.clone(),
            link_secret: engine.link_secret.clone(),
            previous_link_secrets: Vec::new(),
            company: engine.sender_company.clone(),
            help_reply: default_help_reply(
                &engine.sender_company,
                &engine.sender.name,
                engine.sender.email.as_str(),
            ),
            twilio: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The origin (`https://host[:port]`) and path prefix (`""` or `/prefix`) of the base URL.
    fn base(&self) -> Result<(String, String), ServerError> {
        let bad = || ServerError::BaseUrl(self.public_base_url.clone());
        let url = url::Url::parse(&self.public_base_url).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(bad());
        }
        let prefix = url.path().trim_end_matches('/').to_owned();
        Ok((url.origin().ascii_serialization(), prefix))
    }
}

/// The HELP reply used when none is configured: who writes, how to reach them, how to stop.
pub fn default_help_reply(company: &str, name: &str, email: &str) -> String {
    format!(
        "{company}: messages from {name}. Questions: {email}. Reply STOP to opt out. Msg & data rates may apply."
    )
}

/// What every handler shares.
#[derive(Clone)]
pub struct ServerState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Arc<ServerConfig>,
    /// The public origin, for signature checks.
    pub(crate) origin: Arc<str>,
    /// The path prefix of every route (`""` or `/prefix`).
    pub(crate) prefix: Arc<str>,
    /// The dashboard, when an admin token is configured.
    pub(crate) dashboard: Option<Arc<dashboard::DashboardConfig>>,
    /// HTTP request durations of this process.
    pub(crate) http_latency: Arc<latency::HttpLatency>,
    /// The open/click event writer.
    pub(crate) tracking: tracking::Tracker,
}

pub use tracking::{TrackingConfig, CLICK_PREFIX, OPEN_PREFIX};

impl ServerState {
    /// State on the system clock.
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Result<Self, ServerError> {
        Self::with_clock(store, config, Arc::new(SystemClock))
    }

    /// State on a given clock (tests).
    pub fn with_clock(
        store: Arc<dyn Store>,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let (origin, prefix) = config.base()?;
        let store_for_tracking = Arc::clone(&store);
        Ok(Self {
            store,
            clock,
            config: Arc::new(config),
            origin: origin.into(),
            prefix: prefix.into(),
            dashboard: None,
            http_latency: Arc::default(),
            tracking: tracking::Tracker::new(store_for_tracking, TrackingConfig::default()),
        })
    }

    /// Tunes open and click tracking (before serving).
    pub fn with_tracking(mut self, config: TrackingConfig) -> Self {
        self.tracking = tracking::Tracker::new(Arc::clone(&self.store), config);
        self
    }

    /// Waits until every open and click received so far is written to the store.
    pub async fn flush_tracking(&self) {
        self.tracking.flush(false).await;
    }

    /// Writes every open and click received so far and stops the writer (after serving).
    pub async fn drain_tracking(&self) {
        self.tracking.flush(true).await;
    }

    /// Enables the dashboard (`/dashboard`, behind the admin token).
    pub fn with_dashboard(mut self, dashboard: dashboard::DashboardConfig) -> Self {
        self.dashboard = Some(Arc::new(dashboard));
        self
    }

    /// The URL a route is reached at from outside, as Twilio signs it.
    pub(crate) fn public_url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.origin)
    }
}

/// The application: every route with its limits, under the base URL's path.
pub fn router(state: ServerState) -> Router {
    let config = Arc::clone(&state.config);
    let prefix = config.base().map(|(_, p)| p).unwrap_or_default();
    let routes = Router::new()
        .route(HEALTH_PATH, get(healthz))
        .route(metrics::READY_PATH, get(metrics::ready))
        .route(metrics::METRICS_PATH, get(metrics::metrics))
        .route(TWILIO_STATUS_PATH, post(twilio::status))
        .route(TWILIO_INBOUND_PATH, post(twilio::inbound))
        .route(api::CONVERSIONS_PATH, post(api::conversion))
        .route(
            &format!("{UNSUBSCRIBE_PREFIX}{{token}}"),
            get(unsubscribe::show).post(unsubscribe::one_click),
        )
        .merge(dashboard::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            latency::track,
        ));
    let app = if prefix.is_empty() {
        routes
    } else {
        // The health check stays at the root too, for probes that do not know the prefix.
        Router::new()
            .route(HEALTH_PATH, get(healthz))
            .nest(&prefix, routes)
    };
    app.fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state.clone())
        // The pixel and click redirect are the hot paths: their own lean stack.
        .merge(tracking::routes(&prefix, config.request_timeout).with_state(state))
}

/// Binds `addr` and serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve<F>(addr: SocketAddr, state: ServerState, shutdown: F) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    serve_on(listener, state, shutdown).await
}

/// Serves on a bound listener until `shutdown` completes (graceful: requests in flight end).
pub async fn serve_on<F>(
    listener: tokio::net::TcpListener,
    state: ServerState,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr()?;
    info!(%local, "Serving webhooks and unsubscribe links.");
    let tracking = state.clone();
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    // Requests in flight have ended: every open and click they queued is written before exit.
    tracking.drain_tracking().await;
    served?;
    info!(%local, "Server stopped.");
    Ok(())
}

async fn healthz(State(state): State<ServerState>) -> Response {
    match state.store.account_states().await {
        Ok(_) => Json(serde_json::json!({"status": "ok", "store": state.store.backend()}))
            .into_response(),
        Err(e) => {
            warn!(error = %e, "Health check: the store does not answer.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "status": "unavailable",
                    "store": state.store.backend(),
                    "error": e.to_string(),
                })),
            )
                .into_response()
        }
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Appends to the compliance audit log (opt-outs and consents). The change itself is already
/// committed; a failure here is logged, not answered with an error (the provider would retry
/// a change that is done).
pub(crate) async fn audit(state: &ServerState, action: &str, subject: String, detail: String) {
    let entry = engager_store::AuditEntry {
        at: state.clock.now(),
        action: action.to_owned(),
        subject,
        detail,
        actor: "server".to_owned(),
    };
    if let Err(e) = state.store.append_audit(&entry).await {
        warn!(error = %e, action, "Could not append to the compliance audit log.");
    }
}

/// A plain-text error answer naming the problem.
pub(crate) fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    let mut text = message.into();
    text.push('\n');
    (status, text).into_response()
}

/// The store failed: 500 (Twilio retries some webhooks; the page asks to try again).
pub(crate) fn store_failed(what: &str, error: &engager_store::StoreError) -> Response {
    warn!(%error, "{what}: the store failed.");
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{what}: the database is unavailable, try again later"),
    )
}
