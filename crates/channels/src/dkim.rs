//! DKIM signing of outgoing SMTP mail (RFC 6376), with lettre's signer.
//!
//! Invariant: the signature covers `List-Unsubscribe` and `List-Unsubscribe-Post`, because
//! mailbox providers honour RFC 8058 one-click unsubscribe only when a valid DKIM signature
//! covers both headers. A header named in `h=` but absent from a message is signed as empty,
//! so nobody can add it later without breaking the signature.

use std::path::PathBuf;

use base64::Engine as _;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig as LettreDkimConfig,
    DkimSigningAlgorithm, DkimSigningKey,
};
use lettre::message::header::HeaderName;
use lettre::Message;
use serde::Deserialize;

/// The headers every signature covers, in `h=` order.
///
/// `Content-Type` is deliberately absent: lettre writes it (and Content-Transfer-Encoding) as
/// part of the MIME body, so its signer cannot see it and a signature naming it fails
/// verification (caught by the mail-auth test in `tests/smtp.rs`).
pub const SIGNED_HEADERS: [&str; 8] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// `[channels.smtp.dkim]`: the signing domain, selector and private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// The signing domain (`d=`), normally the From address's domain (DMARC alignment).
    pub domain: String,
    /// The selector (`s=`): the public key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// A PEM private key: RSA (PKCS#1 or PKCS#8, at least 1024 bits; 2048 recommended) or
    /// Ed25519 (PKCS#8).
    pub private_key_path: PathBuf,
}

/// The key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    /// rsa-sha256.
    Rsa,
    /// ed25519-sha256 (RFC 8463).
    Ed25519,
}

/// A loaded signing key, ready to sign messages.
#[derive(Debug)]
pub struct DkimSigner {
    config: LettreDkimConfig,
    domain: String,
    selector: String,
    algorithm: DkimAlgorithm,
    public_key: String,
}

impl DkimSigner {
    /// Reads the key file named by the configuration. Errors name the configuration key.
    pub fn load(config: &DkimConfig) -> Result<Self, String> {
        let key = "channels.smtp.dkim.private_key_path";
        let pem = std::fs::read_to_string(&config.private_key_path).map_err(|e| {
            format!(
                "invalid configuration at key `{key}`: cannot read {}: {e}",
                config.private_key_path.display()
            )
        })?;
        Self::from_pem(&config.domain, &config.selector, &pem).map_err(|e| {
            format!(
                "invalid configuration at key `{key}` ({}): {e}",
                config.private_key_path.display()
            )
        })
    }

    /// A signer from a PEM private key.
    pub fn from_pem(domain: &str, selector: &str, pem: &str) -> Result<Self, String> {
        use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;

        if domain.trim().is_empty() || selector.trim().is_empty() {
            return Err("DKIM needs a domain and a selector".into());
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let pkcs8 = pem.contains("-----BEGIN PRIVATE KEY-----");
        let rsa_key = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            Some(
                rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                    .map_err(|e| format!("not a usable RSA private key: {e}"))?,
            )
        } else if pkcs8 {
            rsa::RsaPrivateKey::from_pkcs8_pem(pem).ok()
        } else {
            None
        };
        let (signing_key, algorithm, public_key) = if let Some(key) = rsa_key {
            let bits = key.size() * 8;
            if bits < 1024 {
                return Err(format!(
                    "the RSA key has {bits} bits; DKIM verifiers reject keys under 1024 bits (RFC 8301), use 2048"
                ));
            }
            let pkcs1 = key
                .to_pkcs1_pem(LineEnding::LF)
                .map_err(|e| format!("cannot re-encode the RSA key: {e}"))?;
            let signing = DkimSigningKey::new(&pkcs1, DkimSigningAlgorithm::Rsa)
                .map_err(|e| format!("lettre refused the RSA key: {e}"))?;
            let public = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| format!("cannot encode the public key: {e}"))?;
            (signing, DkimAlgorithm::Rsa, b64.encode(public.as_bytes()))
        } else if pkcs8 {
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
                .map_err(|e| format!("the PKCS#8 key is neither RSA nor Ed25519: {e}"))?;
            let signing =
                DkimSigningKey::new(&b64.encode(key.to_bytes()), DkimSigningAlgorithm::Ed25519)
                    .map_err(|e| format!("lettre refused the Ed25519 key: {e}"))?;
            (
                signing,
                DkimAlgorithm::Ed25519,
                b64.encode(key.verifying_key().as_bytes()),
            )
        } else if pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err("the key is encrypted; store it decrypted (e.g. `openssl pkey -in key.pem -out plain.pem`) with file mode 0600".into());
        } else {
            return Err(
                "expected a PEM private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)".into(),
            );
        };
        let headers = SIGNED_HEADERS
            .iter()
            .map(|h| HeaderName::new_from_ascii_str(h))
            .collect();
        // Relaxed canonicalization survives the re-folding and whitespace changes relays make.
        let config = LettreDkimConfig::new(
            selector.to_owned(),
            domain.to_owned(),
            signing_key,
            headers,
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        );
        Ok(Self {
            config,
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            algorithm,
            public_key,
        })
    }

    /// Adds the `DKIM-Signature` header.
    pub fn sign(&self, message: &mut Message) {
        message.sign(&self.config);
    }

    /// The signing domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> DkimAlgorithm {
        self.algorithm
    }

    /// The DNS TXT record to publish: its name and its value.
    pub fn dns_record(&self) -> (String, String) {
        let k = match self.algorithm {
            DkimAlgorithm::Rsa => "rsa",
            DkimAlgorithm::Ed25519 => "ed25519",
        };
        (
            format!("{}._domainkey.{}", self.selector, self.domain),
            format!("v=DKIM1; k={k}; p={}", self.public_key),
        )
    }
}

/// A new private key in PEM (PKCS#8): RSA-2048 or Ed25519. For `engager bench smtp` and for
/// setting up a sender; publish [`DkimSigner::dns_record`] of the loaded key.
pub fn generate_private_key_pem(algorithm: DkimAlgorithm) -> Result<String, String> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let pem = match algorithm {
        DkimAlgorithm::Rsa => rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .map_err(|e| format!("RSA key generation: {e}"))?
            .to_pkcs8_pem(LineEnding::LF),
        DkimAlgorithm::Ed25519 => {
            let seed: [u8; 32] = rand::random();
            ed25519_dalek::SigningKey::from_bytes(&seed).to_pkcs8_pem(LineEnding::LF)
        }
    };
    pem.map(|p| p.to_string())
        .map_err(|e| format!("PEM encoding: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_key_with_a_reason() {
        let err = DkimSigner::from_pem("acme.example", "s1", "hello").unwrap_err();
        assert!(err.contains("expected a PEM private key"), "{err}");
        let err = DkimSigner::from_pem(
            "acme.example",
            "s1",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.contains("encrypted"), "{err}");
        let err = DkimSigner::load(&DkimConfig {
            domain: "acme.example".into(),
            selector: "s1".into(),
            private_key_path: "/nonexistent/dkim.pem".into(),
        })
        .unwrap_err();
        assert!(
            err.contains("channels.smtp.dkim.private_key_path") && err.contains("/nonexistent"),
            "{err}"
        );
    }

    #[test]
    fn ed25519_pkcs8_keys_load_and_publish_their_public_key() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let pem = key
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string();
        let signer = DkimSigner::from_pem("acme.example", "s1", &pem).unwrap();
        assert_eq!(signer.algorithm(), DkimAlgorithm::Ed25519);
        let (name, value) = signer.dns_record();
        assert_eq!(name, "s1._domainkey.acme.example");
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(
            value,
            format!(
                "v=DKIM1; k=ed25519; p={}",
                b64.encode(key.verifying_key().as_bytes())
            )
        );
    }
}
