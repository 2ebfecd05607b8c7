//! The SMTP channel against a real SMTP server (aiosmtpd, started by engager-testkit on a free
//! loopback port): AUTH, STARTTLS and implicit TLS, DKIM verified by an independent verifier
//! (mail-auth), the mapping of every reply class, and the connection pool.
//!
//! Without aiosmtpd installed these tests print a loud notice and skip, except in CI
//! (`CI=true` or `ENGAGER_REQUIRE_MAIL_SERVERS=1`), where they fail.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use engager_channels::smtp::{SmtpChannel, SmtpConfig};
use engager_channels::{ChannelSender, DeliveryError, OutgoingMessage, Sender, Unsubscribe};
use engager_domain::{Channel, DeliveryId, EmailAddress, LeadId};
use engager_testkit::local_server::ServerTls;
use engager_testkit::smtp_sink::{SinkMessage, SinkOptions, SmtpSink};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};

const USER: &str = "maya@acme.example";
const PASSWORD: &str = "smtp-test-password";

fn message(delivery: i64, to: &str) -> OutgoingMessage {
    OutgoingMessage {
        delivery_id: DeliveryId(delivery),
        lead_id: LeadId(3),
        campaign: "intro".into(),
        step_index: 0,
        channel: Channel::Email,
        to: to.into(),
        to_name: Some("Jane Doe".into()),
        subject: Some("Quick question, Jane".into()),
        body_text: "Hi Jane,\n\nA short note.\n\n.\nA line with only a dot above.\n".into(),
        body_html: Some("<p>Hi Jane,</p><p>A short note.</p>".into()),
        date: DateTime::parse_from_rfc3339("2026-03-02T09:15:00Z")
            .unwrap()
            .with_timezone(&Utc),
        message_id: engager_channels::email::message_id(
            DeliveryId(delivery),
            "intro",
            "acme.example",
        ),
        sender: Sender {
            name: "Maya Chen".into(),
            email: EmailAddress::parse(USER).unwrap(),
            postal_address: "1 Main St, Springfield".into(),
            sms_from: None,
        },
        unsubscribe: Some(Unsubscribe {
            url: "https://engager.acme.example/u/OPAQUE-TOKEN".into(),
            mailto: Some("mailto:unsubscribe@acme.example?subject=unsubscribe".into()),
        }),
        due_by: None,
    }
}

fn config(sink: &SmtpSink, extra: &str) -> SmtpConfig {
    let text = format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n{extra}",
        sink.port()
    );
    toml::from_str(&text).unwrap()
}

fn with_auth(password: &str) -> String {
    format!("username = \"{USER}\"\npassword = \"{password}\"\n")
}

fn auth_sink() -> Option<SmtpSink> {
    SmtpSink::start(SinkOptions {
        auth: Some((USER.into(), PASSWORD.into())),
        ..SinkOptions::default()
    })
}

/// One RSA-2048 key for the whole file (generating it is the slow part).
fn rsa_pem() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    })
}

fn ed25519_pem() -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let seed: [u8; 32] = rand::random();
    ed25519_dalek::SigningKey::from_bytes(&seed)
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string()
}

fn dkim_section(dir: &Path, pem: &str) -> String {
    let path = dir.join("dkim.pem");
    std::fs::write(&path, pem).unwrap();
    format!(
        "[dkim]\ndomain = \"acme.example\"\nselector = \"s2026\"\nprivate_key_path = \"{}\"\n",
        path.display()
    )
}

/// A DNS cache holding exactly the key record: the verifier finds it without any network.
struct KeyCache(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for KeyCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// Verifies the DKIM signatures of `raw` with mail-auth, the key record served from memory
/// (and a resolver pointed at loopback, so a miss can never leave the machine).
async fn verify_dkim(raw: &[u8], record_name: &str, record_value: &str) -> Vec<DkimResult> {
    let key = DomainKey::parse(record_value.as_bytes()).expect("a valid DKIM key record");
    let cache = KeyCache(Mutex::new(HashMap::from([(
        format!("{}.", record_name.to_ascii_lowercase()).into_boxed_str(),
        Txt::DomainKey(Arc::new(key)),
    )])));
    let resolver = MessageAuthenticator::new(
        ResolverConfig::from_name_servers(vec![NameServerConfig::udp_and_tcp(
            "127.0.0.1".parse().unwrap(),
        )]),
        ResolverOpts::default(),
    )
    .unwrap();
    let parsed = AuthenticatedMessage::parse(raw).expect("parse the received message");
    resolver
        .verify_dkim(Parameters::new(&parsed).with_txt_cache(&cache))
        .await
        .iter()
        .map(|o| o.result().clone())
        .collect()
}

/// The tags of the DKIM-Signature header, unfolded.
fn dkim_tags(text: &str) -> HashMap<String, String> {
    let unfolded = text.replace("\r\n ", " ").replace("\r\n\t", " ");
    let line = unfolded
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("dkim-signature:"))
        .expect("a DKIM-Signature header");
    line.split_once(':')
        .unwrap()
        .1
        .split(';')
        .filter_map(|tag| {
            let (k, v) = tag.split_once('=')?;
            Some((
                k.trim().to_owned(),
                v.split_whitespace().collect::<String>(),
            ))
        })
        .collect()
}

fn only_message(sink: &SmtpSink) -> SinkMessage {
    let messages = sink.wait_for_messages(1, Duration::from_secs(5));
    assert_eq!(messages.len(), 1, "{}", sink.log());
    messages.into_iter().next().unwrap()
}

#[tokio::test]
async fn sends_with_auth_and_an_rsa_dkim_signature_that_covers_the_one_click_headers() {
    let Some(sink) = auth_sink() else { return };
    let dir = tempfile::tempdir().unwrap();
    let channel = SmtpChannel::new(&config(
        &sink,
        &format!(
            "{}{}",
            with_auth(PASSWORD),
            dkim_section(dir.path(), rsa_pem())
        ),
    ))
    .unwrap();
    channel.health_check().await.unwrap();
    let m = message(42, "jane@example.com");
    let accepted = channel.send(&m).await.unwrap();
    assert_eq!(
        accepted.provider_ref, m.message_id,
        "the provider reference is our Message-ID"
    );

    let received = only_message(&sink);
    assert_eq!(received.mail_from, USER);
    assert_eq!(received.rcpt_tos, vec!["jane@example.com".to_owned()]);
    assert_eq!(received.login.as_deref(), Some(USER));
    let text = received.text();
    assert!(
        text.contains("\r\n.\r\nA line with only a dot above."),
        "a line holding a single dot survives dot-stuffing"
    );

    let tags = dkim_tags(&text);
    assert_eq!(tags["a"], "rsa-sha256");
    assert_eq!(tags["d"], "acme.example");
    assert_eq!(tags["s"], "s2026");
    let signed: Vec<String> = tags["h"]
        .split(':')
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for header in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(
            signed.iter().any(|h| h == header),
            "h= lacks {header}: {signed:?}"
        );
    }

    let (name, value) = channel.dkim_dns_record().unwrap();
    assert_eq!(name, "s2026._domainkey.acme.example");
    assert_eq!(
        verify_dkim(&received.data, &name, &value).await,
        vec![DkimResult::Pass],
        "mail-auth verifies the signature of what the server received"
    );
    // The signature really protects the one-click headers: changing one breaks it.
    let tampered = text.replace(
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks",
    );
    assert_ne!(tampered, text);
    let results = verify_dkim(tampered.as_bytes(), &name, &value).await;
    assert!(
        !results.contains(&DkimResult::Pass),
        "a changed List-Unsubscribe-Post must fail verification: {results:?}"
    );
}

#[tokio::test]
async fn ed25519_dkim_signatures_verify_too() {
    let Some(sink) = auth_sink() else { return };
    let dir = tempfile::tempdir().unwrap();
    let channel = SmtpChannel::new(&config(
        &sink,
        &format!(
            "{}{}",
            with_auth(PASSWORD),
            dkim_section(dir.path(), &ed25519_pem())
        ),
    ))
    .unwrap();
    channel.send(&message(7, "jane@example.com")).await.unwrap();
    let received = only_message(&sink);
    assert_eq!(dkim_tags(&received.text())["a"], "ed25519-sha256");
    let (name, value) = channel.dkim_dns_record().unwrap();
    assert_eq!(
        verify_dkim(&received.data, &name, &value).await,
        vec![DkimResult::Pass]
    );
}

#[tokio::test]
async fn starttls_and_implicit_tls_with_a_private_ca() {
    for tls in [ServerTls::Starttls, ServerTls::Implicit] {
        let Some(sink) = SmtpSink::start(SinkOptions {
            auth: Some((USER.into(), PASSWORD.into())),
            tls,
            ..SinkOptions::default()
        }) else {
            return;
        };
        let security = if tls == ServerTls::Starttls {
            "starttls"
        } else {
            "tls"
        };
        let text = format!(
            "host = \"localhost\"\nport = {}\nsecurity = \"{security}\"\nca_certificate_path = \"{}\"\n{}",
            sink.port(),
            sink.ca_cert_path().unwrap().display(),
            with_auth(PASSWORD)
        );
        let channel = SmtpChannel::new(&toml::from_str(&text).unwrap()).unwrap();
        channel.health_check().await.unwrap();
        channel.send(&message(1, "jane@example.com")).await.unwrap();
        let received = only_message(&sink);
        assert!(received.tls, "{tls:?}: the session was encrypted");
        assert_eq!(received.login.as_deref(), Some(USER), "{tls:?}");

        // Without the private CA the certificate is not trusted: no mail goes out in clear.
        let untrusted = format!(
            "host = \"localhost\"\nport = {}\nsecurity = \"{security}\"\n{}",
            sink.port(),
            with_auth(PASSWORD)
        );
        let channel = SmtpChannel::new(&toml::from_str(&untrusted).unwrap()).unwrap();
        let err = channel
            .send(&message(2, "jane@example.com"))
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{tls:?}: {err}");
        assert!(err.to_string().contains("certificate"), "{err}");
        assert_eq!(sink.messages().len(), 1);
    }
}

#[tokio::test]
async fn starttls_is_required_never_skipped() {
    let Some(sink) = SmtpSink::start(SinkOptions::default()) else {
        return;
    };
    // "starttls" against a server that does not offer it: refuse rather than send in clear.
    let text = format!(
        "host = \"localhost\"\nport = {}\nsecurity = \"starttls\"\n",
        sink.port()
    );
    let channel = SmtpChannel::new(&toml::from_str(&text).unwrap()).unwrap();
    let err = channel
        .send(&message(1, "jane@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Config { .. }), "{err}");
    assert!(err.to_string().contains("STARTTLS"), "{err}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_wrong_password_is_a_config_error_that_says_so() {
    let Some(sink) = auth_sink() else { return };
    let channel = SmtpChannel::new(&config(&sink, &with_auth("not-the-password"))).unwrap();
    for err in [
        channel.health_check().await.unwrap_err(),
        channel
            .send(&message(1, "jane@example.com"))
            .await
            .unwrap_err(),
    ] {
        let DeliveryError::Config { reason } = &err else {
            panic!("expected a configuration error, got {err:?}");
        };
        assert!(reason.contains("refused the credentials"), "{reason}");
        assert!(reason.contains("535"), "{reason}");
        assert!(reason.contains("channels.smtp.password"), "{reason}");
        assert!(!reason.contains("not-the-password"), "{reason}");
    }
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn unreachable_servers_are_transient() {
    // Nothing listens on a port we just had and released.
    let port = engager_testkit::local_server::free_port();
    let text = format!("host = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\n");
    let channel = SmtpChannel::new(&toml::from_str(&text).unwrap()).unwrap();
    let err = channel.health_check().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let err = channel
        .send(&message(1, "jane@example.com"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn every_reply_class_maps_to_what_the_dispatcher_needs() {
    // With PIPELINING (the sink's default, as on real relays) and without it.
    for no_pipelining in [false, true] {
        reply_classes(no_pipelining).await;
    }
}

async fn reply_classes(no_pipelining: bool) {
    let Some(sink) = SmtpSink::start(SinkOptions {
        auth: Some((USER.into(), PASSWORD.into())),
        no_pipelining,
        ..SinkOptions::default()
    }) else {
        return;
    };
    let channel = SmtpChannel::new(&config(
        &sink,
        &format!("{}data_timeout_seconds = 1.5\n", with_auth(PASSWORD)),
    ))
    .unwrap();
    #[derive(Debug, PartialEq)]
    enum Class {
        Transient,
        Permanent,
        Ambiguous,
    }
    let cases = [
        ("rcpt-421@example.com", Class::Transient),
        ("rcpt-450@example.com", Class::Transient),
        ("rcpt-451@example.com", Class::Transient),
        ("rcpt-452@example.com", Class::Transient),
        ("rcpt-552@example.com", Class::Transient),
        ("rcpt-550@example.com", Class::Permanent),
        ("rcpt-551@example.com", Class::Permanent),
        ("rcpt-553@example.com", Class::Permanent),
        ("rcpt-554@example.com", Class::Permanent),
        ("data-451@example.com", Class::Transient),
        ("data-554@example.com", Class::Permanent),
        ("drop-at-rcpt@example.com", Class::Transient),
        ("drop-after-data@example.com", Class::Ambiguous),
        ("stall-after-data@example.com", Class::Ambiguous),
    ];
    for (i, (to, expected)) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let err = channel
            .send(&message(100 + i as i64, to))
            .await
            .expect_err(to);
        let to = format!("{to} (pipelining: {})", !no_pipelining);
        let to = to.as_str();
        let class = match &err {
            DeliveryError::Transient { .. } => Class::Transient,
            DeliveryError::Permanent { .. } => Class::Permanent,
            DeliveryError::Ambiguous { .. } => Class::Ambiguous,
            other => panic!("{to}: unexpected {other:?}"),
        };
        assert_eq!(class, expected, "{to}: {err}");
        if let Some(code) = to.strip_prefix("rcpt-").or(to.strip_prefix("data-")) {
            assert!(err.to_string().contains(&code[..3]), "{to}: {err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{to} took {:?}",
            started.elapsed()
        );
        // After any failure the pool still delivers.
        channel
            .send(&message(500 + i as i64, "jane@example.com"))
            .await
            .unwrap_or_else(|e| panic!("after {to}: {e}"));
    }
    let delivered: Vec<_> = sink
        .messages()
        .into_iter()
        .map(|m| m.rcpt_tos[0].clone())
        .collect();
    assert!(
        delivered.iter().all(|to| to == "jane@example.com"),
        "only the good sends were stored: {delivered:?}"
    );
}

#[tokio::test]
async fn the_pool_reuses_connections_and_replaces_ones_the_server_closed() {
    let Some(sink) = SmtpSink::start(SinkOptions {
        auth: Some((USER.into(), PASSWORD.into())),
        idle_timeout: Some(Duration::from_millis(700)),
        ..SinkOptions::default()
    }) else {
        return;
    };
    let channel = SmtpChannel::new(&config(
        &sink,
        &format!("{}pool_size = 2\n", with_auth(PASSWORD)),
    ))
    .unwrap();
    for i in 0..5 {
        channel.send(&message(i, "jane@example.com")).await.unwrap();
    }
    let ports: Vec<_> = sink.messages().iter().map(|m| m.peer_port).collect();
    assert!(
        ports.iter().all(|p| p.is_some() && *p == ports[0]),
        "one connection carried every sequential send: {ports:?}"
    );
    // The server closes the idle connection; the next send notices and reconnects.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    channel
        .send(&message(10, "jane@example.com"))
        .await
        .unwrap();
    // Concurrent sends never open more connections than the pool allows.
    let sends = (0..12).map(|i| {
        let channel = channel.clone();
        async move { channel.send(&message(20 + i, "jane@example.com")).await }
    });
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    let messages = sink.messages();
    assert_eq!(messages.len(), 18);
    let mut concurrent_ports: Vec<_> = messages[6..].iter().map(|m| m.peer_port).collect();
    concurrent_ports.sort();
    concurrent_ports.dedup();
    assert!(concurrent_ports.len() <= 2, "{concurrent_ports:?}");
}
