//! What the helpers that run real local servers (the aiosmtpd SMTP sink, Dovecot) share:
//! whether a missing server is a failure or a loud skip, a self-signed certificate for their
//! TLS modes, and free loopback ports.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

/// Whether real mail servers must be present: in CI (`CI=true`) or when
/// `ENGAGER_REQUIRE_MAIL_SERVERS=1`. Then a missing server or tool fails the test.
pub fn mail_servers_required() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .map(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"))
            .unwrap_or(false)
    };
    set("CI") || set("ENGAGER_REQUIRE_MAIL_SERVERS")
}

/// A server or tool the test needs is missing: panics when servers are required, otherwise
/// prints a loud notice and returns `None` so the caller skips.
pub fn unavailable<T>(what: &str, why: &str) -> Option<T> {
    if mail_servers_required() {
        panic!(
            "{what} is required (CI=true or ENGAGER_REQUIRE_MAIL_SERVERS=1) but unavailable: {why}"
        );
    }
    eprintln!(
        "\n!!! {what} is unavailable: SKIPPING this test.\n!!! {why}\n\
         !!! Install it as .ci/run does (apt-get install dovecot-imapd; pip install aiosmtpd) to run it; CI always does.\n"
    );
    None
}

/// How a local server offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerTls {
    /// Plain text only.
    #[default]
    None,
    /// Plain text upgraded with STARTTLS (required before AUTH).
    Starttls,
    /// TLS from the first byte (SMTPS 465 / IMAPS 993 style).
    Implicit,
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM files.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The certificate (also the trust anchor a client must add).
    pub cert_path: PathBuf,
    /// Its private key.
    pub key_path: PathBuf,
}

impl SelfSigned {
    /// Generates a fresh key and certificate into `dir`.
    pub fn generate(dir: &Path) -> SelfSigned {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("generate a self-signed certificate");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, certified.cert.pem()).expect("write cert.pem");
        std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key.pem");
        SelfSigned {
            cert_path,
            key_path,
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Reads lines from a child's stdout until one starts with `prefix`; returns the rest.
pub(crate) fn wait_for_line(
    child: &mut Child,
    prefix: &'static str,
    timeout: Duration,
) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) => {
                    if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                        let _ = tx.send(Some(rest.trim().to_owned()));
                        // Keep draining so the child never blocks on a full pipe.
                        let _ = std::io::copy(&mut reader.by_ref(), &mut std::io::sink());
                        return;
                    }
                }
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(Some(rest)) => Ok(rest),
        Ok(None) => Err(format!("the process exited before printing {prefix:?}")),
        Err(_) => Err(format!("no {prefix:?} line within {timeout:?}")),
    }
}

/// Stops a child process started by a helper (SIGTERM, then SIGKILL after 5 s), and reaps it.
pub(crate) fn stop(child: &mut Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
