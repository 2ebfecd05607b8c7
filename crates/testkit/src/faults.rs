//! What the provider fakes share: a server whose handlers can drop the connection they are
//! answering, scripted faults, query parsing and percent-decoding.
//!
//! The server runs each connection with hyper directly (not `axum::serve`) so that a
//! handler can close its own connection without answering: that is how a fake plays "the
//! provider accepted the message, then the connection died", which a client must classify as
//! ambiguous.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// A failure a fake plays instead of (or around) its normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status, extra headers and JSON body, without processing the request.
    Respond {
        /// HTTP status.
        status: u16,
        /// Extra headers (e.g. `Retry-After`).
        headers: Vec<(String, String)>,
        /// The body (JSON).
        body: String,
    },
    /// Close the connection without processing the request or answering.
    DropBeforeAccept,
    /// Process the request (the message is accepted and logged), then close the connection
    /// without answering.
    DropAfterAccept,
    /// Process the request, then wait this long before answering (longer than the client's
    /// timeout plays "accepted, then the client timed out").
    StallAfterAccept(Duration),
    /// Wait this long, then process and answer normally.
    Delay(Duration),
}

impl Fault {
    /// An answer with a JSON body and no extra headers.
    pub fn status(status: u16, body: serde_json::Value) -> Self {
        Fault::Respond {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// An answer with a JSON body and a `Retry-After` header (seconds, decimals allowed).
    pub fn status_retry_after(status: u16, retry_after: &str, body: serde_json::Value) -> Self {
        Fault::Respond {
            status,
            headers: vec![("Retry-After".into(), retry_after.into())],
            body: body.to_string(),
        }
    }

    /// Whether the request is processed (the message accepted) under this fault.
    pub fn processes(&self) -> bool {
        matches!(
            self,
            Fault::DropAfterAccept | Fault::StallAfterAccept(_) | Fault::Delay(_)
        )
    }
}

/// Lets a handler close the connection it is answering.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionKill(Arc<Notify>);

impl ConnectionKill {
    /// Closes the connection; the caller should then never return.
    pub(crate) async fn drop_connection(&self) -> Response {
        self.0.notify_one();
        std::future::pending::<Response>().await
    }
}

/// Serves `router` on `127.0.0.1:0`; each request carries a [`ConnectionKill`] extension.
pub(crate) async fn serve(router: Router) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let router = router.clone();
            tokio::spawn(async move {
                let kill = Arc::new(Notify::new());
                let handle = ConnectionKill(Arc::clone(&kill));
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(handle.clone());
                        router.clone().oneshot(request)
                    },
                );
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    // Dropping the connection future closes the socket without an answer.
                    () = kill.notified() => {}
                }
            });
        }
    });
    Ok((address, server))
}

/// A JSON answer.
pub(crate) fn json_response(
    status: StatusCode,
    headers: &[(String, String)],
    body: String,
) -> Response {
    let mut response = (status, body).into_response();
    let map: &mut HeaderMap = response.headers_mut();
    map.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.insert(name, value);
        }
    }
    response
}

/// Plays a fault that answers without processing; `None` when the request must be processed.
pub(crate) async fn answer_without_processing(
    fault: &Fault,
    kill: &ConnectionKill,
) -> Option<Response> {
    match fault {
        Fault::Respond {
            status,
            headers,
            body,
        } => Some(json_response(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers,
            body.clone(),
        )),
        Fault::DropBeforeAccept => Some(kill.drop_connection().await),
        Fault::Delay(wait) => {
            tokio::time::sleep(*wait).await;
            None
        }
        Fault::DropAfterAccept | Fault::StallAfterAccept(_) => None,
    }
}

/// Plays the part of a fault that comes after processing.
pub(crate) async fn answer_after_processing(
    fault: Option<&Fault>,
    kill: &ConnectionKill,
    response: Response,
) -> Response {
    match fault {
        Some(Fault::DropAfterAccept) => kill.drop_connection().await,
        Some(Fault::StallAfterAccept(wait)) => {
            tokio::time::sleep(*wait).await;
            response
        }
        _ => response,
    }
}

/// Splits a query string into decoded pairs, in order.
pub(crate) fn parse_query(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

/// Decodes `%XX` escapes in a path segment (`+` stays a plus).
pub(crate) fn decode_path_segment(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A request a fake received, and the status it answered (0 when it dropped the connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The decoded path.
    pub path: String,
    /// The decoded query parameters.
    pub query: Vec<(String, String)>,
    /// The status answered; 0 when the connection was dropped without an answer.
    pub status: u16,
}
