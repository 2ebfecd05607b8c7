//! Email through an SMTP relay: lettre's SMTP client (STARTTLS or implicit TLS with rustls,
//! AUTH PLAIN/LOGIN), DKIM signing, and a small connection pool of our own.
//!
//! Invariants:
//! - **A connection is reused only after a complete transaction** (the final 250). Any error,
//!   timeout or cancellation drops it, so a half-finished transaction never meets the next
//!   message. (lettre's own pool recycles a connection whose send was cancelled by a timeout,
//!   and its tokio transport bounds only the TCP connect, so neither is used here.)
//! - **The outcome class follows the protocol phase.** Nothing of the message is on the wire
//!   before the server answers DATA with 354, so a lost connection or timeout up to there is
//!   `Transient`; once the message has been written, a lost connection or a missing final
//!   reply is `Ambiguous` (the server may have queued it).
//! - Replies map as RFC 5321 says: 4xx transient (421/450/451/452 retry), 5xx permanent
//!   (550/551/553 to RCPT: the recipient), except that refused credentials (530/534/535/538)
//!   and a server that refuses the session itself are `Config`: no message can go out.
//! - The provider reference of an accepted message is our Message-ID.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use engager_domain::Channel;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::Error as SmtpError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::dkim::{DkimConfig, DkimSigner};
use crate::mail_tls::{self, Security};
use crate::{email, Accepted, ChannelSender, DeliveryError, OutgoingMessage};

/// `[channels.smtp]`: the relay, its credentials, the pool and DKIM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Relay host name (also the name its TLS certificate must carry).
    pub host: String,
    /// Port; default 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none` (loopback hosts only).
    #[serde(default = "default_security")]
    pub security: Security,
    /// AUTH user name; no AUTH when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// AUTH password (prefer `ENGAGER_CHANNELS__SMTP__PASSWORD`).
    #[serde(default)]
    pub password: Option<SecretString>,
    /// Envelope sender (MAIL FROM, where bounces go); default: the From address. Point it at
    /// the mailbox `[channels.imap]` polls so bounces are seen.
    #[serde(default)]
    pub envelope_from: Option<String>,
    /// Name sent in EHLO; default: this machine's host name.
    #[serde(default)]
    pub hello_name: Option<String>,
    /// Most connections open at once (also the most messages in flight).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Time to connect, say hello, start TLS and authenticate, in seconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: f64,
    /// Time for the server to answer MAIL, RCPT or DATA, in seconds.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_seconds: f64,
    /// Time to write the message and get the final reply, in seconds. Past it the outcome is
    /// ambiguous.
    #[serde(default = "default_data_timeout")]
    pub data_timeout_seconds: f64,
    /// An idle pooled connection older than this is closed instead of reused, in seconds.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: f64,
    /// A PEM file of extra trusted CA certificates (a private relay's CA).
    #[serde(default)]
    pub ca_certificate_path: Option<PathBuf>,
    /// DKIM signing; strongly recommended (Gmail and Yahoo require it for bulk senders, and
    /// one-click unsubscribe needs it).
    #[serde(default)]
    pub dkim: Option<DkimConfig>,
}

fn default_security() -> Security {
    Security::Starttls
}
fn default_pool_size() -> usize {
    4
}
fn default_connect_timeout() -> f64 {
    30.0
}
fn default_command_timeout() -> f64 {
    60.0
}
fn default_data_timeout() -> f64 {
    120.0
}
fn default_idle_timeout() -> f64 {
    30.0
}

/// Sends email through an SMTP relay. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct SmtpChannel {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    port: u16,
    security: Security,
    /// STARTTLS: lettre upgrades the connection with these.
    tls: Option<TlsParameters>,
    /// Implicit TLS: the handshake is ours, before lettre reads the greeting.
    implicit_tls: Option<tokio_rustls::TlsConnector>,
    credentials: Option<Credentials>,
    username: Option<String>,
    envelope_from: Option<lettre::Address>,
    hello: ClientId,
    connect_timeout: Duration,
    command_timeout: Duration,
    data_timeout: Duration,
    idle_timeout: Duration,
    dkim: Option<DkimSigner>,
    idle: Mutex<Vec<(Session, Instant)>>,
    permits: Semaphore,
}

impl std::fmt::Debug for SmtpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("host", &self.inner.host)
            .field("port", &self.inner.port)
            .field("security", &self.inner.security)
            .field("username", &self.inner.username)
            .field("dkim", &self.inner.dkim.as_ref().map(|d| d.domain()))
            .finish_non_exhaustive()
    }
}

/// Where in the SMTP transaction something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Mail,
    Rcpt,
    Data,
    /// The message has been (or is being) written; the server may have it.
    Message,
}

impl Phase {
    fn describe(self) -> &'static str {
        match self {
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::Data => "DATA",
            Phase::Message => "the end of the message",
        }
    }
}

/// A failed transaction step.
#[derive(Debug)]
enum Failure {
    /// The server answered with a negative reply code.
    Reply(u16, String),
    /// The connection broke, or the server's answer could not be read.
    Lost(String),
    /// No answer in time.
    Timeout(Duration),
    /// lettre refused to send (e.g. 8-bit content to a server without 8BITMIME).
    Client(String),
}

fn seconds(value: f64, key: &str) -> Result<Duration, DeliveryError> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(config_error(format!(
            "invalid configuration at key `channels.smtp.{key}`: expected a positive number of seconds, got {value}"
        )))
    }
}

fn config_error(reason: String) -> DeliveryError {
    DeliveryError::Config { reason }
}

impl SmtpChannel {
    /// Builds the channel: checks the settings, loads the DKIM key and trusted CAs. No
    /// connection is made until [`ChannelSender::health_check`] or the first send.
    pub fn new(config: &SmtpConfig) -> Result<Self, DeliveryError> {
        if config.host.trim().is_empty() {
            return Err(config_error(
                "invalid configuration at key `channels.smtp.host`: a host is required".into(),
            ));
        }
        if config.security == Security::None && !mail_tls::is_loopback(&config.host) {
            return Err(config_error(format!(
                "invalid configuration at key `channels.smtp.security`: \"none\" (no encryption) is allowed only for a loopback host, not {:?}; use \"starttls\" or \"tls\"",
                config.host
            )));
        }
        if config.pool_size == 0 {
            return Err(config_error(
                "invalid configuration at key `channels.smtp.pool_size`: must be at least 1".into(),
            ));
        }
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            )),
            (None, None) => None,
            _ => {
                return Err(config_error(
                    "invalid configuration at keys `channels.smtp.username`/`channels.smtp.password`: set both or neither".into(),
                ))
            }
        };
        let ca_pem = config
            .ca_certificate_path
            .as_deref()
            .map(|path| mail_tls::read_ca(path, "channels.smtp.ca_certificate_path"))
            .transpose()
            .map_err(config_error)?;
        let implicit_tls = match config.security {
            Security::Tls => Some(tokio_rustls::TlsConnector::from(
                mail_tls::rustls_client(ca_pem.as_deref(), "channels.smtp.ca_certificate_path")
                    .map_err(config_error)?,
            )),
            Security::Starttls | Security::None => None,
        };
        let tls = match config.security {
            Security::None | Security::Tls => None,
            Security::Starttls => {
                let mut builder = TlsParameters::builder(config.host.clone());
                if let Some(pem) = &ca_pem {
                    let cert = Certificate::from_pem(pem).map_err(|e| {
                        config_error(format!(
                            "invalid configuration at key `channels.smtp.ca_certificate_path`: {e}"
                        ))
                    })?;
                    builder = builder.add_root_certificate(cert);
                }
                Some(
                    builder
                        .build_rustls()
                        .map_err(|e| config_error(format!("SMTP TLS setup: {e}")))?,
                )
            }
        };
        let envelope_from = config
            .envelope_from
            .as_deref()
            .map(|a| {
                a.parse::<lettre::Address>().map_err(|e| {
                    config_error(format!(
                        "invalid configuration at key `channels.smtp.envelope_from`: {a:?}: {e}"
                    ))
                })
            })
            .transpose()?;
        let hello = match &config.hello_name {
            Some(name) => ClientId::Domain(name.clone()),
            None => ClientId::default(),
        };
        let dkim = config
            .dkim
            .as_ref()
            .map(DkimSigner::load)
            .transpose()
            .map_err(config_error)?;
        Ok(Self {
            inner: Arc::new(Inner {
                host: config.host.clone(),
                port: config
                    .port
                    .unwrap_or_else(|| config.security.default_smtp_port()),
                security: config.security,
                tls,
                implicit_tls,
                credentials,
                username: config.username.clone(),
                envelope_from,
                hello,
                connect_timeout: seconds(
                    config.connect_timeout_seconds,
                    "connect_timeout_seconds",
                )?,
                command_timeout: seconds(
                    config.command_timeout_seconds,
                    "command_timeout_seconds",
                )?,
                data_timeout: seconds(config.data_timeout_seconds, "data_timeout_seconds")?,
                idle_timeout: seconds(config.idle_timeout_seconds, "idle_timeout_seconds")?,
                dkim,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(config.pool_size),
            }),
        })
    }

    /// The DNS TXT record (name, value) to publish for the DKIM key, when signing.
    pub fn dkim_dns_record(&self) -> Option<(String, String)> {
        self.inner.dkim.as_ref().map(DkimSigner::dns_record)
    }

    /// The message exactly as it goes on the wire (signed when DKIM is configured), and its
    /// envelope.
    pub fn render(&self, message: &OutgoingMessage) -> Result<(Envelope, Vec<u8>), DeliveryError> {
        if message.channel != Channel::Email {
            return Err(config_error(format!(
                "a {} message was routed to the SMTP channel",
                message.channel
            )));
        }
        let mut built = email::build_message(message)?;
        if let Some(dkim) = &self.inner.dkim {
            dkim.sign(&mut built);
        }
        let envelope = match &self.inner.envelope_from {
            Some(from) => Envelope::new(Some(from.clone()), built.envelope().to().to_vec())
                .map_err(|e| DeliveryError::Permanent {
                    reason: format!("cannot build the SMTP envelope: {e}"),
                })?,
            None => built.envelope().clone(),
        };
        Ok((envelope, built.formatted()))
    }

    fn endpoint(&self) -> String {
        format!("{}:{}", self.inner.host, self.inner.port)
    }

    /// Connects, says EHLO, starts TLS and authenticates.
    async fn connect(&self) -> Result<Session, DeliveryError> {
        let inner = &self.inner;
        let endpoint = self.endpoint();
        let transient = |reason: String| DeliveryError::Transient {
            reason,
            retry_after: None,
        };
        let setup = async {
            let tcp = TcpStream::connect((inner.host.as_str(), inner.port))
                .await
                .map_err(|e| transient(format!("cannot reach the SMTP server {endpoint}: {e}")))?;
            // lettre writes a message and its final "." separately; with Nagle's algorithm
            // the second write waits for the server's delayed ACK (40 ms a message).
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn AsyncTokioStream> = match &inner.implicit_tls {
                Some(connector) => {
                    let name = rustls::pki_types::ServerName::try_from(inner.host.clone())
                        .map_err(|e| {
                            config_error(format!(
                                "invalid configuration at key `channels.smtp.host`: {e}"
                            ))
                        })?;
                    let tls = connector.connect(name, tcp).await.map_err(|e| {
                        transient(format!("TLS with the SMTP server {endpoint} failed: {e}"))
                    })?;
                    Box::new(ImplicitTls(tls))
                }
                None => Box::new(tcp),
            };
            let session = async {
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(stream, &inner.hello).await?;
                if inner.security == Security::Starttls {
                    let params = inner.tls.clone().expect("TLS parameters for STARTTLS");
                    conn.starttls(params, &inner.hello).await?;
                }
                // lettre keeps only the EHLO keywords it knows, and PIPELINING is not one:
                // ask again (before AUTH, so the repeated EHLO cannot reset it).
                let ehlo = conn.command(Ehlo::new(inner.hello.clone())).await?;
                let pipelining = ehlo.message().skip(1).any(|line| {
                    line.split_whitespace()
                        .next()
                        .is_some_and(|k| k.eq_ignore_ascii_case("PIPELINING"))
                });
                if let Some(credentials) = &inner.credentials {
                    conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                        .await?;
                }
                Ok::<_, SmtpError>(Session { conn, pipelining })
            };
            session.await.map_err(|e| self.setup_error(&e))
        };
        tokio::time::timeout(inner.connect_timeout, setup)
            .await
            .unwrap_or_else(|_| {
                Err(transient(format!(
                    "no SMTP session with {endpoint} within {:?} (connect, greeting, TLS, AUTH)",
                    inner.connect_timeout
                )))
            })
    }

    /// Classifies a failure to open a session (nothing of any message was sent).
    fn setup_error(&self, e: &SmtpError) -> DeliveryError {
        let endpoint = self.endpoint();
        if let Some(code) = e.status().map(u16::from) {
            return match code {
                530 | 534 | 535 | 538 => config_error(format!(
                    "the SMTP server {endpoint} refused the credentials of user {:?} ({e}); check `channels.smtp.username` and `channels.smtp.password`",
                    self.inner.username.as_deref().unwrap_or("")
                )),
                400..=499 => DeliveryError::Transient {
                    reason: format!("the SMTP server {endpoint} turned the session away for now: {e}"),
                    retry_after: None,
                },
                _ => config_error(format!(
                    "the SMTP server {endpoint} refuses to take mail from us: {e}"
                )),
            };
        }
        if e.is_client() {
            // E.g. no STARTTLS offered (we never fall back to plain text) or no AUTH mechanism.
            return config_error(format!("SMTP session with {endpoint}: {e}"));
        }
        if e.is_tls() {
            return DeliveryError::Transient {
                reason: format!("TLS with the SMTP server {endpoint} failed: {e}"),
                retry_after: None,
            };
        }
        DeliveryError::Transient {
            reason: format!("cannot reach the SMTP server {endpoint}: {e}"),
            retry_after: None,
        }
    }

    fn take_idle(&self) -> Option<Session> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Close the connections idle too long (the server may have dropped them already).
        idle.retain(|(session, since)| {
            since.elapsed() < self.inner.idle_timeout && !session.conn.has_broken()
        });
        idle.pop().map(|(session, _)| session)
    }

    fn put_idle(&self, session: Session) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push((session, Instant::now()));
    }

    /// One SMTP transaction on an open connection, each step under its own deadline. With
    /// PIPELINING (RFC 2920) MAIL, RCPT and DATA go out in one write and their replies are
    /// read in order; the message itself is sent only after a 354, either way.
    async fn transaction(
        &self,
        session: &mut Session,
        envelope: &Envelope,
        body: &[u8],
    ) -> Result<String, (Phase, Failure)> {
        let command_timeout = self.inner.command_timeout;
        let conn = &mut session.conn;
        let mut options = Vec::new();
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err((
                    Phase::Mail,
                    Failure::Client(
                        "the server does not support SMTPUTF8 (non-ASCII address)".into(),
                    ),
                ));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !body.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err((
                    Phase::Mail,
                    Failure::Client("the server does not support 8BITMIME (8-bit message)".into()),
                ));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = Mail::new(envelope.from().cloned(), options);
        if session.pipelining {
            let mut batch = mail.to_string();
            for to in envelope.to() {
                batch.push_str(&Rcpt::new(to.clone(), vec![]).to_string());
            }
            batch.push_str(&Data.to_string());
            // The whole batch is written, then the MAIL reply read; RCPT and DATA follow.
            step(Phase::Mail, command_timeout, conn.command(Raw(&batch))).await?;
            for _ in envelope.to() {
                step(Phase::Rcpt, command_timeout, conn.read_response()).await?;
            }
            step(Phase::Data, command_timeout, conn.read_response()).await?;
        } else {
            step(Phase::Mail, command_timeout, conn.command(mail)).await?;
            for to in envelope.to() {
                step(
                    Phase::Rcpt,
                    command_timeout,
                    conn.command(Rcpt::new(to.clone(), vec![])),
                )
                .await?;
            }
            step(Phase::Data, command_timeout, conn.command(Data)).await?;
        }
        let data_timeout = self.inner.data_timeout;
        let reply = match data_block(body) {
            // The message and its final "." in one write (lettre's `message` makes two).
            Some(block) => step(Phase::Message, data_timeout, conn.command(Raw(&block))).await?,
            None => step(Phase::Message, data_timeout, conn.message(body)).await?,
        };
        Ok(reply.message().collect::<Vec<_>>().join(" "))
    }

    /// Sends on a pooled or new connection; a reused connection the server has closed
    /// meanwhile is replaced once (nothing was sent on it).
    async fn deliver(&self, envelope: &Envelope, body: &[u8]) -> Result<String, DeliveryError> {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| config_error("the SMTP channel is shut down".into()))?;
        let mut reused = self.take_idle();
        loop {
            let was_reused = reused.is_some();
            let mut session = match reused.take() {
                Some(session) => session,
                None => self.connect().await?,
            };
            match self.transaction(&mut session, envelope, body).await {
                Ok(reply) => {
                    self.put_idle(session);
                    return Ok(reply);
                }
                Err((Phase::Mail, Failure::Lost(_) | Failure::Timeout(_)))
                | Err((Phase::Mail, Failure::Reply(421, _)))
                    if was_reused =>
                {
                    debug!(endpoint = %self.endpoint(), "Pooled SMTP connection was closed by the server; reconnecting.");
                    drop(session);
                }
                Err((phase, failure)) => {
                    if matches!(failure, Failure::Reply(..)) && !session.pipelining {
                        // The session is intact: end it politely, in the background. (After
                        // a pipelined failure, replies may still be unread: just close.)
                        tokio::spawn(async move {
                            let _ =
                                tokio::time::timeout(Duration::from_secs(5), session.conn.quit())
                                    .await;
                        });
                    }
                    return Err(self.classify(phase, failure));
                }
            }
        }
    }

    fn classify(&self, phase: Phase, failure: Failure) -> DeliveryError {
        let at = phase.describe();
        let endpoint = self.endpoint();
        match failure {
            Failure::Reply(code, text) => {
                let reason = format!("{endpoint} answered {at} with {code} {text}");
                match (phase, code) {
                    // RFC 5321 4.5.3.1.10: a 552 to RCPT means too many recipients; try later.
                    (Phase::Rcpt, 552) => DeliveryError::Transient {
                        reason,
                        retry_after: None,
                    },
                    (_, 400..=499) => DeliveryError::Transient {
                        reason,
                        retry_after: None,
                    },
                    (Phase::Mail, 530 | 534 | 535 | 538) => config_error(format!(
                        "{reason}; check `channels.smtp.username` and `channels.smtp.password`"
                    )),
                    _ => DeliveryError::Permanent { reason },
                }
            }
            Failure::Client(reason) => DeliveryError::Permanent {
                reason: format!("{endpoint}: {reason}"),
            },
            Failure::Lost(why) if phase == Phase::Message => DeliveryError::Ambiguous {
                reason: format!(
                    "the connection to {endpoint} broke after the message was sent and before the final reply ({why}); the server may have accepted it"
                ),
            },
            Failure::Timeout(limit) if phase == Phase::Message => DeliveryError::Ambiguous {
                reason: format!(
                    "no final reply from {endpoint} within {limit:?} after the message was sent; the server may have accepted it"
                ),
            },
            Failure::Lost(why) => DeliveryError::Transient {
                reason: format!("the connection to {endpoint} broke at {at}, before the message was sent ({why})"),
                retry_after: None,
            },
            Failure::Timeout(limit) => DeliveryError::Transient {
                reason: format!("no answer from {endpoint} to {at} within {limit:?}; the message was not sent"),
                retry_after: None,
            },
        }
    }
}

/// An open, authenticated SMTP connection and what its server offers.
struct Session {
    conn: AsyncSmtpConnection,
    /// The server advertised PIPELINING (RFC 2920).
    pipelining: bool,
}

/// Text written as is by lettre's `command` (which writes, then reads one reply).
struct Raw<'a>(&'a str);

impl std::fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The DATA block exactly as lettre's `message` would send it — a "." opening a line is
/// doubled (RFC 5321 4.5.2) and "\r\n.\r\n" ends it — as one string; `None` when the
/// message is not UTF-8 (then lettre sends it).
fn data_block(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let mut out = String::with_capacity(text.len() + text.len() / 64 + 8);
    let mut line_start = true;
    let mut after_cr = false;
    for c in text.chars() {
        out.push(c);
        match c {
            '\r' => after_cr = true,
            '\n' if after_cr => {
                line_start = true;
                after_cr = false;
            }
            '.' if line_start && !after_cr => {
                out.push('.');
                line_start = false;
            }
            _ => {
                line_start = false;
                after_cr = false;
            }
        }
    }
    out.push_str("\r\n.\r\n");
    Some(out)
}

/// An implicit-TLS stream in the shape lettre drives.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for ImplicitTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// Runs one command under a deadline and sorts its failure.
async fn step<F>(
    phase: Phase,
    limit: Duration,
    command: F,
) -> Result<lettre::transport::smtp::response::Response, (Phase, Failure)>
where
    F: std::future::Future<Output = Result<lettre::transport::smtp::response::Response, SmtpError>>,
{
    match tokio::time::timeout(limit, command).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err((
            phase,
            match e.status() {
                Some(code) => Failure::Reply(
                    u16::from(code),
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                ),
                None if e.is_client() => Failure::Client(e.to_string()),
                None => Failure::Lost(e.to_string()),
            },
        )),
        Err(_) => Err((phase, Failure::Timeout(limit))),
    }
}

#[async_trait]
impl ChannelSender for SmtpChannel {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn name(&self) -> &str {
        "smtp"
    }

    /// Opens a session (connect, EHLO, TLS, AUTH) and closes it with QUIT.
    async fn health_check(&self) -> Result<(), DeliveryError> {
        let mut session = self.connect().await?;
        let _ = tokio::time::timeout(self.inner.command_timeout, session.conn.quit()).await;
        Ok(())
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, DeliveryError> {
        let (envelope, body) = self.render(message)?;
        let reply = self.deliver(&envelope, &body).await?;
        debug!(delivery_id = %message.delivery_id, %reply, "SMTP server accepted the message.");
        Ok(Accepted {
            provider_ref: message.message_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> SmtpConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn plain_text_is_refused_for_remote_hosts_and_errors_name_the_key() {
        let err = SmtpChannel::new(&config("host = \"smtp.example.com\"\nsecurity = \"none\""))
            .unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Config { reason } if reason.contains("channels.smtp.security")),
            "{err}"
        );
        SmtpChannel::new(&config(
            "host = \"127.0.0.1\"\nsecurity = \"none\"\nport = 2525",
        ))
        .unwrap();
        let err =
            SmtpChannel::new(&config("host = \"smtp.example.com\"\nusername = \"u\"")).unwrap_err();
        assert!(err.to_string().contains("channels.smtp.password"), "{err}");
        let err = SmtpChannel::new(&config(
            "host = \"smtp.example.com\"\ndata_timeout_seconds = 0",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("data_timeout_seconds"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_and_ports_follow_the_security_mode() {
        let err = toml::from_str::<SmtpConfig>("host = \"h\"\npasword = \"x\"").unwrap_err();
        assert!(err.to_string().contains("pasword"), "{err}");
        let c = SmtpChannel::new(&config("host = \"smtp.example.com\"")).unwrap();
        assert_eq!(c.inner.port, 587);
        let c =
            SmtpChannel::new(&config("host = \"smtp.example.com\"\nsecurity = \"tls\"")).unwrap();
        assert_eq!(c.inner.port, 465);
    }

    #[test]
    fn data_blocks_double_leading_dots_like_lettre() {
        let cases = [
            ("a\r\nb", "a\r\nb\r\n.\r\n"),
            (".start", "..start\r\n.\r\n"),
            ("a\r\n.b\r\n..c", "a\r\n..b\r\n...c\r\n.\r\n"),
            ("a\r.b", "a\r.b\r\n.\r\n"),
            ("a\n.b", "a\n.b\r\n.\r\n"),
            ("a\r\n\r\n.\r\n", "a\r\n\r\n..\r\n\r\n.\r\n"),
            ("é\r\n.ü", "é\r\n..ü\r\n.\r\n"),
        ];
        for (body, wire) in cases {
            assert_eq!(
                data_block(body.as_bytes()).as_deref(),
                Some(wire),
                "{body:?}"
            );
        }
        assert_eq!(data_block(&[0xff, b'a']), None);
    }

    #[test]
    fn the_password_never_appears_in_debug_output() {
        let cfg = config(
            "host = \"smtp.example.com\"\nusername = \"maya\"\npassword = \"hunter2-secret\"",
        );
        assert!(!format!("{cfg:?}").contains("hunter2-secret"));
        let channel = SmtpChannel::new(&cfg).unwrap();
        assert!(!format!("{channel:?}").contains("hunter2-secret"));
    }
}
