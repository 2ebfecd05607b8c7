//! A real SMTP server for tests: the aiosmtpd script in
//! `crates/channels/tests/support/smtp_sink.py`, started on a free loopback port in its own
//! temporary directory and stopped when the [`SmtpSink`] is dropped. Every accepted message is
//! kept byte for byte with its envelope; recipients such as `rcpt-451@…` or
//! `drop-after-data@…` script the server's answers (see the script's header).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::local_server::{self, SelfSigned, ServerTls};

/// The sink's Python source, also used by `engager bench smtp`.
pub const SCRIPT: &str = include_str!("../../channels/tests/support/smtp_sink.py");

/// How to start the sink.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Require AUTH (PLAIN or LOGIN) with this user and password.
    pub auth: Option<(String, String)>,
    /// TLS mode; a self-signed certificate is generated for it.
    pub tls: ServerTls,
    /// Count messages without storing them (for load tests).
    pub discard: bool,
    /// Close a session idle this long (aiosmtpd's default is 300 s).
    pub idle_timeout: Option<Duration>,
    /// Do not advertise PIPELINING (RFC 2920), which the sink offers by default like real
    /// relays.
    pub no_pipelining: bool,
}

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct SinkMessage {
    /// MAIL FROM.
    pub mail_from: String,
    /// RCPT TO addresses.
    pub rcpt_tos: Vec<String>,
    /// The AUTH login of the session, if any.
    pub login: Option<String>,
    /// Whether the session was encrypted (STARTTLS or implicit TLS).
    pub tls: bool,
    /// The client's port: messages with the same one came over the same connection.
    pub peer_port: Option<u16>,
    /// The message as received.
    pub data: Vec<u8>,
}

impl SinkMessage {
    /// The message as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A running sink.
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    cert: Option<SelfSigned>,
}

/// The Python interpreter: `ENGAGER_PYTHON` or `python3`.
pub fn python() -> String {
    std::env::var("ENGAGER_PYTHON").unwrap_or_else(|_| "python3".into())
}

impl SmtpSink {
    /// Starts a sink. `None` means aiosmtpd is missing and the test should skip (never in CI,
    /// where that panics instead).
    pub fn start(options: SinkOptions) -> Option<SmtpSink> {
        let probe = Command::new(python())
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match probe {
            Ok(s) if s.success() => {}
            Ok(_) => return local_server::unavailable("The aiosmtpd SMTP sink", "`python3 -c 'import aiosmtpd'` failed: the PyPI package aiosmtpd is not installed."),
            Err(e) => return local_server::unavailable("The aiosmtpd SMTP sink", &format!("cannot run {}: {e}", python())),
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let script = dir.path().join("smtp_sink.py");
        std::fs::write(&script, SCRIPT).expect("write the sink script");
        let messages = dir.path().join("messages");
        std::fs::create_dir(&messages).expect("messages directory");
        let mut command = Command::new(python());
        command
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0", "--exit-on-stdin-eof"])
            .arg("--dir")
            .arg(&messages);
        if options.discard {
            command.arg("--discard");
        }
        if options.no_pipelining {
            command.arg("--no-pipelining");
        }
        if let Some(idle) = options.idle_timeout {
            command
                .arg("--idle-timeout")
                .arg(idle.as_secs_f64().to_string());
        }
        if let Some((user, password)) = &options.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        let cert = match options.tls {
            ServerTls::None => None,
            tls => {
                let cert = SelfSigned::generate(dir.path());
                command
                    .arg("--tls-cert")
                    .arg(&cert.cert_path)
                    .arg("--tls-key")
                    .arg(&cert.key_path);
                if tls == ServerTls::Implicit {
                    command.arg("--implicit-tls");
                }
                Some(cert)
            }
        };
        let log = std::fs::File::create(dir.path().join("sink.log")).expect("sink log");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn the SMTP sink");
        let port = match local_server::wait_for_line(&mut child, "READY", Duration::from_secs(30)) {
            Ok(port) => port.parse().expect("READY <port>"),
            Err(e) => {
                local_server::stop(&mut child);
                let log = std::fs::read_to_string(dir.path().join("sink.log")).unwrap_or_default();
                panic!("the SMTP sink did not start: {e}\n{log}");
            }
        };
        Some(SmtpSink {
            child,
            port,
            dir,
            cert,
        })
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The certificate a client must trust (TLS modes only).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.cert.as_ref().map(|c| c.cert_path.as_path())
    }

    fn messages_dir(&self) -> PathBuf {
        self.dir.path().join("messages")
    }

    /// Every stored message, in arrival order.
    pub fn messages(&self) -> Vec<SinkMessage> {
        let mut metas: Vec<PathBuf> = std::fs::read_dir(self.messages_dir())
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        metas.sort();
        metas
            .into_iter()
            .map(|meta| {
                let doc: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&meta).expect("read envelope"))
                        .expect("envelope JSON");
                SinkMessage {
                    mail_from: doc["mail_from"].as_str().unwrap_or_default().to_owned(),
                    rcpt_tos: doc["rcpt_tos"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    login: doc["login"].as_str().map(str::to_owned),
                    tls: doc["tls"].as_bool().unwrap_or(false),
                    peer_port: doc["peer_port"]
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok()),
                    data: std::fs::read(meta.with_extension("eml")).expect("read message"),
                }
            })
            .collect()
    }

    /// Waits until at least `count` messages are stored (at most `timeout`).
    pub fn wait_for_messages(&self, count: usize, timeout: Duration) -> Vec<SinkMessage> {
        let start = Instant::now();
        loop {
            let messages = self.messages();
            if messages.len() >= count || start.elapsed() > timeout {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sink's own log (aiosmtpd warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sink.log")).unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        local_server::stop(&mut self.child);
    }
}
