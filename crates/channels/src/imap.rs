//! Replies and bounces read from a mailbox over IMAP (async-imap on tokio, rustls), each
//! message classified by [`crate::inbound::classify`].
//!
//! Invariants:
//! - **Reading changes nothing.** Messages are fetched with `BODY.PEEK[]`, so the person who
//!   owns the mailbox still sees them unread. Only [`ImapMailbox::mark_processed`], called by
//!   the engine after it recorded the events, changes the mailbox.
//! - **Progress is a UID high-water mark** (UIDVALIDITY + last UID) kept by the caller: a poll
//!   returns only messages above it, and a new UIDVALIDITY starts again from the first message.
//!   "Not yet processed" is a keyword (`$EngagerProcessed`) rather than `\Seen` by default,
//!   because a person may open a reply before the poller runs and it must still count.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_imap::{Client, Session};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::inbound::{self, Inbound};
use crate::mail_tls::{self, Security};

/// The keyword that marks a message as processed in `after_processing = "keyword"` mode.
pub const PROCESSED_KEYWORD: &str = "$EngagerProcessed";

/// What happens to a message once its events are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AfterProcessing {
    /// Add the `$EngagerProcessed` keyword; the message stays where it is, unread.
    #[default]
    Keyword,
    /// Mark it read (`\Seen`). Only messages not yet read are polled, so a reply a person
    /// opens before the poller runs is missed: use for a mailbox nobody reads.
    Seen,
    /// Move it to `processed_folder` (created when missing).
    Move,
}

/// `[channels.imap]`: the mailbox replies and bounces arrive in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// Server host name (also the name its TLS certificate must carry).
    pub host: String,
    /// Port; default 993 for `tls`, 143 otherwise.
    #[serde(default)]
    pub port: Option<u16>,
    /// `tls` (default), `starttls` or `none` (loopback hosts only).
    #[serde(default = "default_security")]
    pub security: Security,
    /// Login name.
    pub username: String,
    /// Password (prefer `ENGAGER_CHANNELS__IMAP__PASSWORD`).
    pub password: SecretString,
    /// The folder to poll.
    #[serde(default = "default_folder")]
    pub folder: String,
    /// `keyword` (default), `seen` or `move`.
    #[serde(default)]
    pub after_processing: AfterProcessing,
    /// Destination folder for `after_processing = "move"`.
    #[serde(default)]
    pub processed_folder: Option<String>,
    /// Most messages fetched per poll.
    #[serde(default = "default_batch")]
    pub max_messages_per_poll: usize,
    /// Time for each step (connect, login, each command), in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// A PEM file of extra trusted CA certificates.
    #[serde(default)]
    pub ca_certificate_path: Option<PathBuf>,
}

fn default_security() -> Security {
    Security::Tls
}
fn default_folder() -> String {
    "INBOX".into()
}
fn default_batch() -> usize {
    200
}
fn default_timeout() -> f64 {
    30.0
}

/// Why a poll failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImapError {
    /// The server could not be reached or the connection broke; try again at the next poll.
    #[error("IMAP server unavailable: {0}")]
    Unavailable(String),
    /// The login was refused: fix the configuration.
    #[error("IMAP login refused: {0}")]
    Auth(String),
    /// The settings are wrong (folder missing, plain text to a remote host, ...).
    #[error("IMAP configuration: {0}")]
    Config(String),
    /// The server answered something unexpected.
    #[error("IMAP protocol error: {0}")]
    Protocol(String),
}

impl ImapError {
    /// Whether the next poll may succeed without a configuration change.
    pub fn is_transient(&self) -> bool {
        matches!(self, ImapError::Unavailable(_) | ImapError::Protocol(_))
    }
}

/// How far polling has come in a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidMark {
    /// The folder's UIDVALIDITY; UIDs mean nothing across a change of it.
    pub uid_validity: u32,
    /// The highest UID already handed out.
    pub last_uid: u32,
}

/// One fetched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxMessage {
    /// Its UID in the folder.
    pub uid: u32,
    /// When the server received it (INTERNALDATE).
    pub received_at: Option<DateTime<Utc>>,
    /// What it is.
    pub inbound: Inbound,
}

/// The result of a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Polled {
    /// The mark to pass to the next poll once these messages are recorded.
    pub mark: UidMark,
    /// New messages, in UID order.
    pub messages: Vec<MailboxMessage>,
    /// Whether more messages wait beyond `max_messages_per_poll`.
    pub more: bool,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Io for T {}
type Stream = Box<dyn Io>;

/// A mailbox polled for replies and bounces.
pub struct ImapMailbox {
    host: String,
    port: u16,
    security: Security,
    username: String,
    password: SecretString,
    folder: String,
    after: AfterProcessing,
    processed_folder: Option<String>,
    batch: usize,
    timeout: Duration,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl fmt::Debug for ImapMailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapMailbox")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl ImapMailbox {
    /// Checks the settings and prepares TLS; connects only when used.
    pub fn new(config: &ImapConfig) -> Result<Self, ImapError> {
        let key = |k: &str, what: String| {
            ImapError::Config(format!(
                "invalid configuration at key `channels.imap.{k}`: {what}"
            ))
        };
        if config.host.trim().is_empty() {
            return Err(key("host", "a host is required".into()));
        }
        if config.security == Security::None && !mail_tls::is_loopback(&config.host) {
            return Err(key("security", format!("\"none\" (no encryption) is allowed only for a loopback host, not {:?}; use \"tls\" or \"starttls\"", config.host)));
        }
        if config.after_processing == AfterProcessing::Move
            && config
                .processed_folder
                .as_deref()
                .is_none_or(|f| f.trim().is_empty())
        {
            return Err(key(
                "processed_folder",
                "required when after_processing = \"move\"".into(),
            ));
        }
        if config.max_messages_per_poll == 0 {
            return Err(key("max_messages_per_poll", "must be at least 1".into()));
        }
        if !(config.timeout_seconds.is_finite() && config.timeout_seconds > 0.0) {
            return Err(key(
                "timeout_seconds",
                format!("expected a positive number, got {}", config.timeout_seconds),
            ));
        }
        let tls = match config.security {
            Security::None => None,
            Security::Tls | Security::Starttls => {
                let ca = config
                    .ca_certificate_path
                    .as_deref()
                    .map(|p| mail_tls::read_ca(p, "channels.imap.ca_certificate_path"))
                    .transpose()
                    .map_err(ImapError::Config)?;
                let client =
                    mail_tls::rustls_client(ca.as_deref(), "channels.imap.ca_certificate_path")
                        .map_err(ImapError::Config)?;
                Some(tokio_rustls::TlsConnector::from(client))
            }
        };
        Ok(Self {
            host: config.host.clone(),
            port: config
                .port
                .unwrap_or_else(|| config.security.default_imap_port()),
            security: config.security,
            username: config.username.clone(),
            password: config.password.clone(),
            folder: config.folder.clone(),
            after: config.after_processing,
            processed_folder: config.processed_folder.clone(),
            batch: config.max_messages_per_poll,
            timeout: Duration::from_secs_f64(config.timeout_seconds),
            tls,
        })
    }

    fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn timed<T, F>(&self, what: &str, future: F) -> Result<T, ImapError>
    where
        F: std::future::Future<Output = Result<T, ImapError>>,
    {
        tokio::time::timeout(self.timeout, future)
            .await
            .map_err(|_| {
                ImapError::Unavailable(format!(
                    "{} did not answer {what} within {:?}",
                    self.endpoint(),
                    self.timeout
                ))
            })?
    }

    fn io_error(&self, what: &str, e: impl fmt::Display) -> ImapError {
        ImapError::Unavailable(format!("{what} with {}: {e}", self.endpoint()))
    }

    fn command_error(&self, what: &str, e: async_imap::error::Error) -> ImapError {
        use async_imap::error::Error;
        match e {
            Error::Io(e) => self.io_error(what, e),
            Error::ConnectionLost => self.io_error(what, "connection lost"),
            Error::No(text) | Error::Bad(text) => {
                ImapError::Protocol(format!("{} refused {what}: {text}", self.endpoint()))
            }
            other => ImapError::Protocol(format!("{what} with {}: {other}", self.endpoint())),
        }
    }

    async fn tls_wrap<S>(&self, stream: S) -> Result<Stream, ImapError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug + 'static,
    {
        let connector = self.tls.as_ref().expect("TLS connector for a TLS mode");
        let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| {
            ImapError::Config(format!(
                "invalid configuration at key `channels.imap.host`: {e}"
            ))
        })?;
        let tls = self
            .timed("the TLS handshake", async {
                connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| self.io_error("TLS", e))
            })
            .await?;
        Ok(Box::new(tls))
    }

    /// Connects, secures and logs in.
    async fn session(&self) -> Result<Session<Stream>, ImapError> {
        let tcp = self
            .timed("a connection", async {
                TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|e| self.io_error("connecting", e))
            })
            .await?;
        let stream: Stream = match self.security {
            Security::None => Box::new(tcp),
            Security::Tls => self.tls_wrap(tcp).await?,
            Security::Starttls => {
                let mut client = Client::new(tcp);
                self.greeting(&mut client).await?;
                self.timed("STARTTLS", async {
                    client
                        .run_command_and_check_ok("STARTTLS", None)
                        .await
                        .map_err(|e| match e {
                            async_imap::error::Error::No(t) | async_imap::error::Error::Bad(t) => {
                                ImapError::Config(format!("{} does not offer STARTTLS ({t}); set `channels.imap.security`", self.endpoint()))
                            }
                            other => self.command_error("STARTTLS", other),
                        })
                })
                .await?;
                self.tls_wrap(client.into_inner()).await?
            }
        };
        let mut client = Client::new(stream);
        if self.security != Security::Starttls {
            self.greeting(&mut client).await?;
        }
        let login = client.login(&self.username, self.password.expose_secret());
        match tokio::time::timeout(self.timeout, login).await {
            Err(_) => Err(ImapError::Unavailable(format!(
                "{} did not answer LOGIN within {:?}",
                self.endpoint(),
                self.timeout
            ))),
            Ok(Ok(session)) => Ok(session),
            Ok(Err((async_imap::error::Error::No(text), _))) => Err(ImapError::Auth(format!(
                "{} refused the login of {:?}: {text}; check `channels.imap.username` and `channels.imap.password`",
                self.endpoint(),
                self.username
            ))),
            Ok(Err((e, _))) => Err(self.command_error("LOGIN", e)),
        }
    }

    async fn greeting<S>(&self, client: &mut Client<S>) -> Result<(), ImapError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug,
    {
        let greeting = self
            .timed("with a greeting", async {
                client
                    .read_response()
                    .await
                    .map_err(|e| self.io_error("reading the greeting", e))
            })
            .await?;
        match greeting {
            Some(response)
                if matches!(
                    response.parsed(),
                    async_imap::imap_proto::Response::Data {
                        status: async_imap::imap_proto::Status::Bye,
                        ..
                    }
                ) =>
            {
                Err(ImapError::Unavailable(format!(
                    "{} said BYE at connect",
                    self.endpoint()
                )))
            }
            Some(_) => Ok(()),
            None => Err(ImapError::Unavailable(format!(
                "{} closed the connection before greeting",
                self.endpoint()
            ))),
        }
    }

    async fn select(&self, session: &mut Session<Stream>) -> Result<u32, ImapError> {
        let mailbox = self
            .timed("SELECT", async {
                session.select(&self.folder).await.map_err(|e| match e {
                    async_imap::error::Error::No(text) => ImapError::Config(format!(
                        "invalid configuration at key `channels.imap.folder`: {} has no folder {:?} ({text})",
                        self.endpoint(),
                        self.folder
                    )),
                    other => self.command_error("SELECT", other),
                })
            })
            .await?;
        mailbox.uid_validity.ok_or_else(|| {
            ImapError::Protocol(format!(
                "{} gave no UIDVALIDITY for {:?}",
                self.endpoint(),
                self.folder
            ))
        })
    }

    /// Logs in and opens the folder (used at start and by `engager doctor`).
    pub async fn health_check(&self) -> Result<(), ImapError> {
        let mut session = self.session().await?;
        self.select(&mut session).await?;
        let _ = tokio::time::timeout(self.timeout, session.logout()).await;
        Ok(())
    }

    /// Fetches and classifies the messages above `since` that are not yet processed, at most
    /// `max_messages_per_poll` of them. Changes nothing in the mailbox.
    pub async fn poll(&self, since: Option<UidMark>) -> Result<Polled, ImapError> {
        let mut session = self.session().await?;
        let uid_validity = self.select(&mut session).await?;
        let last_uid = match since {
            Some(mark) if mark.uid_validity == uid_validity => mark.last_uid,
            _ => 0,
        };
        let first = last_uid.saturating_add(1);
        let query = match self.after {
            AfterProcessing::Keyword => format!("UID {first}:* UNKEYWORD {PROCESSED_KEYWORD}"),
            AfterProcessing::Seen => format!("UID {first}:* UNSEEN"),
            AfterProcessing::Move => format!("UID {first}:*"),
        };
        let found = self
            .timed("SEARCH", async {
                session
                    .uid_search(&query)
                    .await
                    .map_err(|e| self.command_error("UID SEARCH", e))
            })
            .await?;
        // `n:*` always matches the highest UID, even one below n.
        let mut uids: Vec<u32> = found.into_iter().filter(|uid| *uid >= first).collect();
        uids.sort_unstable();
        let more = uids.len() > self.batch;
        uids.truncate(self.batch);
        let mut messages = Vec::with_capacity(uids.len());
        if !uids.is_empty() {
            let fetches: Vec<_> = self
                .timed("FETCH", async {
                    let stream = session
                        .uid_fetch(uid_set(&uids), "(UID INTERNALDATE BODY.PEEK[])")
                        .await
                        .map_err(|e| self.command_error("UID FETCH", e))?;
                    stream
                        .try_collect()
                        .await
                        .map_err(|e| self.command_error("UID FETCH", e))
                })
                .await?;
            for fetch in &fetches {
                let (Some(uid), Some(body)) = (fetch.uid, fetch.body()) else {
                    continue;
                };
                messages.push(MailboxMessage {
                    uid,
                    received_at: fetch.internal_date().map(|d| d.with_timezone(&Utc)),
                    inbound: inbound::classify(body),
                });
            }
            messages.sort_by_key(|m| m.uid);
        }
        let _ = tokio::time::timeout(self.timeout, session.logout()).await;
        Ok(Polled {
            mark: UidMark {
                uid_validity,
                last_uid: uids.last().copied().unwrap_or(last_uid),
            },
            messages,
            more,
        })
    }

    /// Marks messages as processed (keyword, `\Seen`, or moved), after their events are
    /// recorded. Does nothing when the folder's UIDVALIDITY is no longer `uid_validity`.
    pub async fn mark_processed(&self, uid_validity: u32, uids: &[u32]) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let mut session = self.session().await?;
        if self.select(&mut session).await? != uid_validity {
            let _ = tokio::time::timeout(self.timeout, session.logout()).await;
            return Ok(());
        }
        let set = uid_set(uids);
        match self.after {
            AfterProcessing::Keyword | AfterProcessing::Seen => {
                let flag = if self.after == AfterProcessing::Keyword {
                    PROCESSED_KEYWORD
                } else {
                    "\\Seen"
                };
                self.timed("STORE", async {
                    let stream = session
                        .uid_store(&set, format!("+FLAGS.SILENT ({flag})"))
                        .await
                        .map_err(|e| self.command_error("UID STORE", e))?;
                    stream
                        .try_collect::<Vec<_>>()
                        .await
                        .map_err(|e| self.command_error("UID STORE", e))?;
                    Ok(())
                })
                .await?;
            }
            AfterProcessing::Move => {
                let folder = self.processed_folder.clone().unwrap_or_default();
                self.timed("MOVE", async {
                    if let Err(e) = session.uid_mv(&set, &folder).await {
                        // The folder may not exist yet: create it and try once more.
                        if !matches!(e, async_imap::error::Error::No(_)) {
                            return Err(self.command_error("UID MOVE", e));
                        }
                        session
                            .create(&folder)
                            .await
                            .map_err(|e| self.command_error("CREATE", e))?;
                        session
                            .uid_mv(&set, &folder)
                            .await
                            .map_err(|e| self.command_error("UID MOVE", e))?;
                    }
                    Ok(())
                })
                .await?;
            }
        }
        let _ = tokio::time::timeout(self.timeout, session.logout()).await;
        Ok(())
    }
}

impl Clone for ImapMailbox {
    fn clone(&self) -> Self {
        Self {
            host: self.host.clone(),
            port: self.port,
            security: self.security,
            username: self.username.clone(),
            password: self.password.clone(),
            folder: self.folder.clone(),
            after: self.after,
            processed_folder: self.processed_folder.clone(),
            batch: self.batch,
            timeout: self.timeout,
            tls: self.tls.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_errors_name_the_key() {
        let parse = |t: &str| toml::from_str::<ImapConfig>(t).unwrap();
        let err = ImapMailbox::new(&parse(
            "host = \"imap.example.com\"\nsecurity = \"none\"\nusername = \"u\"\npassword = \"p\"",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("channels.imap.security"), "{err}");
        let err = ImapMailbox::new(&parse(
            "host = \"imap.example.com\"\nusername = \"u\"\npassword = \"p\"\nafter_processing = \"move\"",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("processed_folder"), "{err}");
        let ok = ImapMailbox::new(&parse(
            "host = \"imap.example.com\"\nusername = \"u\"\npassword = \"secret-pw\"",
        ))
        .unwrap();
        assert_eq!(ok.port, 993);
        assert!(!format!("{ok:?}").contains("secret-pw"));
        assert!(toml::from_str::<ImapConfig>(
            "host = \"h\"\nusername = \"u\"\npassword = \"p\"\nfolder_name = \"x\""
        )
        .is_err());
    }
}
