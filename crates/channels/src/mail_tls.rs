//! Transport security shared by the SMTP and IMAP clients: the `security` setting, the
//! loopback-only rule for plain text, and the trusted roots (webpki's public roots plus an
//! optional private CA from `ca_certificate_path`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

/// How a mail connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (SMTP submissions port 465, IMAPS 993).
    Tls,
    /// Plain text upgraded with STARTTLS before anything else is sent (SMTP 587, IMAP 143).
    Starttls,
    /// No encryption; allowed only to a loopback host (a local relay or test server).
    None,
}

impl Security {
    /// The usual SMTP port for this mode.
    pub fn default_smtp_port(self) -> u16 {
        match self {
            Security::Tls => 465,
            Security::Starttls => 587,
            Security::None => 25,
        }
    }

    /// The usual IMAP port for this mode.
    pub fn default_imap_port(self) -> u16 {
        match self {
            Security::Tls => 993,
            Security::Starttls | Security::None => 143,
        }
    }
}

/// Whether `host` names this machine (`localhost` or a loopback address).
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a PEM file of extra trusted certificates.
pub(crate) fn read_ca(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "invalid configuration at key `{key}`: cannot read {}: {e}",
            path.display()
        )
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "invalid configuration at key `{key}`: {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(pem)
}

/// A rustls client configuration: public web PKI roots plus the extra PEM certificates.
pub(crate) fn rustls_client(
    extra_ca_pem: Option<&[u8]>,
    key: &str,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| {
                format!("invalid configuration at key `{key}`: a certificate cannot be read: {e}")
            })?;
            roots.add(cert).map_err(|e| {
                format!("invalid configuration at key `{key}`: a certificate is not usable as a root: {e}")
            })?;
        }
    }
    // An explicit provider: rustls picks none by itself when more than one is compiled in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_count_as_local() {
        for host in [
            "localhost",
            "127.0.0.1",
            "127.8.9.1",
            "::1",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "smtp.example.com",
            "10.0.0.1",
            "192.168.1.2",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
