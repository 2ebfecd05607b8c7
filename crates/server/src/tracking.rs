//! Open pixel (`GET /o/{token}.gif`) and click redirect (`GET /c/{token}`).
//!
//! - The pixel is always a 1×1 transparent GIF with no-cache headers, whatever the token (a
//!   bad token learns nothing: no oracle); a genuine token records an open.
//! - A click redirects (302) only to the destination stored under the token's (delivery,
//!   link), never to anything taken from the request; a tampered, unknown or open token
//!   gets 404. Query strings are ignored.
//! - `HEAD` answers the same status and headers and records nothing (link checkers probe
//!   with it; a person's client does not).
//! - Handlers never write to the database: they hand each event to one writer task through a
//!   bounded channel (awaiting room when it is full, never dropping) and answer. The writer
//!   flags machine activity and inserts batches in one transaction each, every
//!   `flush_interval` or `batch_size` events; shutdown drains the channel.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration as StdDuration;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use engager_domain::tracking::{
    all_links_burst, classify_request, too_soon, verify_click_token, verify_open_token,
    MachineReason, Signals,
};
use engager_domain::{DeliveryId, EventKind};
use engager_store::{NewEvent, Store, TrackingTarget};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, error, warn};

use crate::{plain, store_failed, ServerState};

/// The prefix of open pixels.
pub const OPEN_PREFIX: &str = engager_domain::tracking::OPEN_PREFIX;
/// The prefix of tracked links.
pub const CLICK_PREFIX: &str = engager_domain::tracking::CLICK_PREFIX;

/// A 1×1 transparent GIF (43 bytes).
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// What the tracking endpoints and their writer are tuned by (`[tracking]` in engager.toml).
#[derive(Debug, Clone)]
pub struct TrackingConfig {
    /// Opens and clicks this soon after the send are a machine's.
    pub machine_window: Duration,
    /// Most events per transaction.
    pub batch_size: usize,
    /// Longest wait before a batch is written.
    pub flush_interval: StdDuration,
    /// Events waiting for the writer before handlers wait for room.
    pub queue: usize,
    /// Take the client address from `X-Forwarded-For` (behind a reverse proxy).
    pub trust_forwarded_for: bool,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            machine_window: Duration::seconds(10),
            batch_size: 500,
            flush_interval: StdDuration::from_millis(50),
            queue: 10_000,
            trust_forwarded_for: false,
        }
    }
}

/// The tracking routes under the base URL's path. They skip the other routes' stack (request
/// logs, body limits, the latency histogram): GETs without a body, answered from memory (an
/// open) or one indexed read (a click), at mail-campaign volumes; the request deadline stays.
pub(crate) fn routes(prefix: &str, timeout: StdDuration) -> Router<ServerState> {
    let routes = Router::new()
        .route(&format!("{OPEN_PREFIX}{{token}}"), get(open))
        .route(&format!("{CLICK_PREFIX}{{token}}"), get(click))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    if prefix.is_empty() {
        routes
    } else {
        Router::new().nest(prefix, routes)
    }
}

/// One open or click, as its handler saw it.
#[derive(Debug, Clone)]
struct Hit {
    delivery: DeliveryId,
    /// The link's index for a click; `None` for an open.
    link: Option<u32>,
    at: DateTime<Utc>,
    /// A flag from the request alone (address, user agent).
    reason: Option<MachineReason>,
}

enum Msg {
    Hit(Hit),
    /// Write everything queued, then answer (and stop, when `close`).
    Flush {
        done: oneshot::Sender<()>,
        close: bool,
    },
}

/// The handle of the writer, shared by every handler. The writer starts with the first
/// event, on the runtime that serves.
#[derive(Clone)]
pub(crate) struct Tracker {
    inner: Arc<Inner>,
}

struct Inner {
    config: TrackingConfig,
    store: Arc<dyn Store>,
    tx: OnceLock<mpsc::Sender<Msg>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Cuts the writer's wait short when a flush is asked for.
    wake: Arc<Notify>,
}

impl Tracker {
    pub(crate) fn new(store: Arc<dyn Store>, config: TrackingConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                tx: OnceLock::new(),
                task: Mutex::new(None),
                wake: Arc::new(Notify::new()),
            }),
        }
    }

    pub(crate) fn config(&self) -> &TrackingConfig {
        &self.inner.config
    }

    fn sender(&self) -> &mpsc::Sender<Msg> {
        self.inner.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.inner.config.queue.max(1));
            let writer = Writer {
                store: Arc::clone(&self.inner.store),
                config: self.inner.config.clone(),
                recent: HashMap::new(),
            };
            let task = tokio::spawn(writer.run(rx, Arc::clone(&self.inner.wake)));
            *self.inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
            tx
        })
    }

    /// Queues an event, waiting for room when the queue is full.
    async fn push(&self, hit: Hit) {
        let tx = self.sender();
        if tx.capacity() == 0 {
            // Full: the writer writes what it holds now instead of waiting out its interval.
            self.inner.wake.notify_one();
        }
        if tx.send(Msg::Hit(hit)).await.is_err() {
            error!("Tracking: the event writer has stopped; an open or click was not recorded.");
        }
    }

    /// Waits until every event queued so far is written.
    pub(crate) async fn flush(&self, close: bool) {
        let Some(tx) = self.inner.tx.get() else {
            return;
        };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush { done, close }).await.is_ok() {
            self.inner.wake.notify_one();
            let _ = wait.await;
        }
        if close {
            let task = self
                .inner
                .task
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(task) = task {
                let _ = task.await;
            }
        }
    }
}

/// A click remembered for the "every link within a second" rule.
struct RecentClick {
    link: u32,
    at: DateTime<Utc>,
    event: EventRef,
    automated: bool,
}

/// Where a remembered click's event is.
#[derive(Clone, Copy)]
enum EventRef {
    /// In the batch being written, at this index.
    Pending(usize),
    /// Stored, with this id.
    Stored(i64),
}

struct Writer {
    store: Arc<dyn Store>,
    config: TrackingConfig,
    recent: HashMap<DeliveryId, Vec<RecentClick>>,
}

impl Writer {
    /// Waits for a first event, lets the batch fill for `flush_interval` (one timer, no
    /// wake-up per event) unless it fills sooner, a flush is asked for or the queue is full
    /// (a handler waiting for room wakes it), then writes it.
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, wake: Arc<Notify>) {
        use mpsc::error::TryRecvError;
        let mut batch: Vec<Hit> = Vec::with_capacity(self.config.batch_size);
        loop {
            let mut control = None;
            let mut closed = false;
            match rx.recv().await {
                None => closed = true,
                Some(Msg::Hit(hit)) => batch.push(hit),
                Some(Msg::Flush { done, close }) => control = Some((done, close)),
            }
            let deadline = tokio::time::Instant::now() + self.config.flush_interval;
            // The queue is emptied into the batch every tick at least, so handlers waiting for
            // room wait a tick, not the whole interval.
            let tick = self.config.flush_interval.min(StdDuration::from_millis(10));
            let mut woken = false;
            while control.is_none() && !closed {
                while batch.len() < self.config.batch_size {
                    match rx.try_recv() {
                        Ok(Msg::Hit(hit)) => batch.push(hit),
                        Ok(Msg::Flush { done, close }) => {
                            control = Some((done, close));
                            break;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                let now = tokio::time::Instant::now();
                if control.is_some()
                    || closed
                    || woken
                    || batch.len() >= self.config.batch_size
                    || now >= deadline
                {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until((now + tick).min(deadline)) => {}
                    _ = wake.notified() => woken = true,
                }
            }
            let closing = closed || control.as_ref().is_some_and(|(_, close)| *close);
            self.write(&mut batch, closing).await;
            if let Some((done, close)) = control {
                let _ = done.send(());
                if close {
                    return;
                }
            }
            if closed {
                return;
            }
        }
    }

    /// Writes a batch; on a store failure, tries again with backoff (the batch stays
    /// queued, and handlers wait once the channel fills), at most a few times when closing.
    async fn write(&mut self, batch: &mut Vec<Hit>, closing: bool) {
        if batch.is_empty() {
            return;
        }
        let mut delay = StdDuration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_write(batch).await {
                Ok(()) => {
                    batch.clear();
                    return;
                }
                Err(e) if closing && attempt >= 5 => {
                    error!(error = %e, lost = batch.len(), "Tracking: the store failed while shutting down; these opens and clicks are lost.");
                    batch.clear();
                    return;
                }
                Err(e) => {
                    warn!(error = %e, queued = batch.len(), "Tracking: could not write opens and clicks; retrying.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(StdDuration::from_secs(5));
                }
            }
        }
    }

    async fn try_write(&mut self, batch: &[Hit]) -> Result<(), engager_store::StoreError> {
        let mut ids: Vec<DeliveryId> = batch.iter().map(|h| h.delivery).collect();
        ids.sort_unstable_by_key(|d| d.0);
        ids.dedup();
        // A failed attempt's clicks are about to be processed again.
        for recent in self.recent.values_mut() {
            recent.retain(|c| matches!(c.event, EventRef::Stored(_)));
        }
        let targets = self.store.tracking_targets(&ids).await?;
        let mut events: Vec<NewEvent> = Vec::with_capacity(batch.len());
        let mut reflag: Vec<(i64, String)> = Vec::new();
        for hit in batch {
            let Some(target) = targets.get(&hit.delivery) else {
                debug!(
                    delivery_id = hit.delivery.0,
                    "Tracking: the delivery is gone; event skipped."
                );
                continue;
            };
            let mut reason = hit.reason.or_else(|| {
                too_soon(target.sent_at, hit.at, self.config.machine_window)
                    .then_some(MachineReason::TooSoon)
            });
            if let Some(link) = hit.link {
                let recent = self.recent.entry(hit.delivery).or_default();
                recent.retain(|c| hit.at - c.at <= Duration::seconds(2));
                recent.push(RecentClick {
                    link,
                    at: hit.at,
                    event: EventRef::Pending(events.len()),
                    automated: reason.is_some(),
                });
                let clicks: Vec<(u32, DateTime<Utc>)> =
                    recent.iter().map(|c| (c.link, c.at)).collect();
                if all_links_burst(&clicks, target.links, hit.at) {
                    reason = Some(MachineReason::AllLinks);
                    // The earlier clicks of the burst were a machine's too.
                    for c in recent.iter_mut() {
                        if c.automated || hit.at - c.at > Duration::seconds(1) {
                            continue;
                        }
                        c.automated = true;
                        let detail = detail(Some(c.link), Some(MachineReason::AllLinks));
                        match c.event {
                            EventRef::Stored(id) => reflag.push((id, detail)),
                            // Still in this batch: fixed before it is written.
                            EventRef::Pending(i) => {
                                if let Some(e) = events.get_mut(i) {
                                    e.detail = detail;
                                }
                            }
                        }
                    }
                }
                if let Some(last) = recent.last_mut() {
                    last.automated = reason.is_some();
                }
            }
            events.push(event(target, hit, reason));
        }
        let written = self.store.record_tracking_events(&events, &reflag).await?;
        for c in self.recent.values_mut().flatten() {
            if let EventRef::Pending(i) = c.event {
                match written.get(i) {
                    Some(id) => c.event = EventRef::Stored(*id),
                    None => c.automated = true, // not written: never re-flagged
                }
            }
        }
        // Forget deliveries with no click in the last seconds.
        if let Some(newest) = batch.iter().map(|h| h.at).max() {
            self.recent
                .retain(|_, r| r.iter().any(|c| newest - c.at <= Duration::seconds(2)));
        }
        Ok(())
    }
}

/// An event's detail: the machine flag (always present, so reports can tell), its reason, and
/// for a click the link's index. Compact JSON: `"automated":true` is matched as written.
fn detail(link: Option<u32>, reason: Option<MachineReason>) -> String {
    // Written by hand (every value is a bool, a number or a fixed ASCII name): this runs for
    // every event.
    let mut d = String::with_capacity(64);
    d.push_str(if reason.is_some() {
        "{\"automated\":true"
    } else {
        "{\"automated\":false"
    });
    if let Some(link) = link {
        d.push_str(",\"link\":");
        d.push_str(&link.to_string());
    }
    if let Some(r) = reason {
        d.push_str(",\"reason\":\"");
        d.push_str(r.as_str());
        d.push('"');
    }
    d.push('}');
    d
}

fn event(target: &TrackingTarget, hit: &Hit, reason: Option<MachineReason>) -> NewEvent {
    NewEvent {
        lead_id: target.lead_id,
        delivery_id: Some(hit.delivery),
        kind: if hit.link.is_some() {
            EventKind::Clicked
        } else {
            EventKind::Opened
        },
        occurred_at: hit.at,
        detail: detail(hit.link, reason),
        source: "tracking".to_owned(),
    }
}

/// The client's address: the connection's, or `X-Forwarded-For`'s first when trusted.
fn client_ip(state: &ServerState, request: &Request) -> Option<IpAddr> {
    if state.tracking.config().trust_forwarded_for {
        let forwarded = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn request_flag(state: &ServerState, request: &Request, open: bool) -> Option<MachineReason> {
    let signals = Signals {
        user_agent: request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        ip: client_ip(state, request),
    };
    classify_request(&signals, open)
}

fn no_cache(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, private, max-age=0"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn pixel() -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"))],
        PIXEL,
    )
        .into_response();
    no_cache(response.headers_mut());
    response
}

/// `GET|HEAD /o/{token}` (`.gif` optional).
pub(crate) async fn open(
    State(state): State<ServerState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let token = token.strip_suffix(".gif").unwrap_or(&token);
    if let Some(delivery) = secrets(&state).find_map(|s| verify_open_token(s, token)) {
        if request.method() == Method::GET {
            let reason = request_flag(&state, &request, true);
            state
                .tracking
                .push(Hit {
                    delivery,
                    link: None,
                    at: state.clock.now(),
                    reason,
                })
                .await;
        }
    }
    pixel()
}

/// `links.secret`, then `links.previous_secrets`: links already sent survive a rotation.
fn secrets(state: &ServerState) -> impl Iterator<Item = &[u8]> {
    std::iter::once(state.config.link_secret.as_slice())
        .chain(state.config.previous_link_secrets.iter().map(Vec::as_slice))
}

fn link_not_found() -> Response {
    let mut response = plain(StatusCode::NOT_FOUND, "not found: this link is not valid");
    no_cache(response.headers_mut());
    response
}

/// `GET|HEAD /c/{token}`: 302 to the stored destination, 404 otherwise.
pub(crate) async fn click(
    State(state): State<ServerState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let Some((delivery, index)) = secrets(&state).find_map(|s| verify_click_token(s, &token))
    else {
        return link_not_found();
    };
    let url = match state.store.tracked_link(delivery, index).await {
        Ok(Some(url)) => url,
        Ok(None) => return link_not_found(),
        Err(e) => return store_failed("Tracked link", &e),
    };
    // Only ever an absolute http(s) URL that was stored when the message was sent.
    let location = match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => HeaderValue::from_str(u.as_str()),
        _ => return link_not_found(),
    };
    let Ok(location) = location else {
        return link_not_found();
    };
    if request.method() == Method::GET {
        let reason = request_flag(&state, &request, false);
        state
            .tracking
            .push(Hit {
                delivery,
                link: Some(index),
                at: state.clock.now(),
                reason,
            })
            .await;
    }
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    no_cache(response.headers_mut());
    response
}
