//! Reply and bounce polling against a real IMAP server (Debian's Dovecot, started by
//! engager-testkit on a free loopback port with its own configuration and Maildir).
//!
//! Without Dovecot installed these tests print a loud notice and skip, except in CI
//! (`CI=true` or `ENGAGER_REQUIRE_MAIL_SERVERS=1`), where they fail.

use engager_channels::imap::{ImapConfig, ImapError, ImapMailbox, UidMark};
use engager_channels::inbound::{BounceSeverity, InboundKind, OurReference};
use engager_domain::DeliveryId;
use engager_testkit::dovecot::{Dovecot, DovecotOptions, PASSWORD, USER};
use engager_testkit::local_server::ServerTls;
use futures_util::TryStreamExt;

fn ours(delivery: i64) -> String {
    engager_channels::email::message_id(DeliveryId(delivery), "intro", "acme.example")
}

fn reference(delivery: i64) -> OurReference {
    OurReference {
        message_id: ours(delivery),
        delivery_id: DeliveryId(delivery),
    }
}

fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

fn human_reply(delivery: i64) -> Vec<u8> {
    crlf(&format!(
        "Return-Path: <jane@example.com>\n\
         From: Jane Doe <jane@example.com>\n\
         To: Maya Chen <maya@acme.example>\n\
         Subject: Re: Quick question, Jane\n\
         Date: Tue, 03 Mar 2026 10:00:00 +0100\n\
         Message-ID: <CAJane.1@mail.example.com>\n\
         In-Reply-To: {id}\n\
         References: {id}\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\n\
         \n\
         Hi Maya, yes — let's talk on Thursday.\n\
         \n\
         > Hi Jane,\n",
        id = ours(delivery)
    ))
}

fn out_of_office(delivery: i64) -> Vec<u8> {
    crlf(&format!(
        "From: Tom Lee <tom@example.org>\n\
         To: maya@acme.example\n\
         Subject: Automatic reply: Quick question, Tom\n\
         Date: Tue, 03 Mar 2026 10:01:00 +0000\n\
         Message-ID: <oof.2@example.org>\n\
         In-Reply-To: {}\n\
         Auto-Submitted: auto-replied\n\
         X-Auto-Response-Suppress: All\n\
         Content-Type: text/plain\n\
         \n\
         I am out of the office until March 10.\n",
        ours(delivery)
    ))
}

fn dsn(delivery: i64, action: &str, status: &str, recipient: &str) -> Vec<u8> {
    crlf(&format!(
        "Return-Path: <>\n\
         From: MAILER-DAEMON@mx.acme.example (Mail Delivery System)\n\
         To: bounces@acme.example\n\
         Subject: Undelivered Mail Returned to Sender\n\
         Date: Tue, 03 Mar 2026 10:02:00 +0000\n\
         Message-ID: <20260303100200.ABC{delivery}@mx.acme.example>\n\
         Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status;\n\
         \tboundary=\"ABC.1772531720/mx.acme.example\"\n\
         \n\
         This is a MIME-encapsulated message.\n\
         \n\
         --ABC.1772531720/mx.acme.example\n\
         Content-Description: Notification\n\
         Content-Type: text/plain; charset=us-ascii\n\
         \n\
         This is the mail system at host mx.acme.example.\n\
         \n\
         --ABC.1772531720/mx.acme.example\n\
         Content-Description: Delivery report\n\
         Content-Type: message/delivery-status\n\
         \n\
         Reporting-MTA: dns; mx.acme.example\n\
         X-Postfix-Queue-ID: ABC{delivery}\n\
         Arrival-Date: Tue,  3 Mar 2026 10:01:58 +0000 (UTC)\n\
         \n\
         Final-Recipient: rfc822; {recipient}\n\
         Original-Recipient: rfc822;{recipient}\n\
         Action: {action}\n\
         Status: {status}\n\
         Remote-MTA: dns; mx.example.net\n\
         Diagnostic-Code: smtp; {code} {status} <{recipient}>: mailbox problem\n\
         \n\
         --ABC.1772531720/mx.acme.example\n\
         Content-Description: Undelivered Message Headers\n\
         Content-Type: text/rfc822-headers\n\
         \n\
         From: Maya Chen <maya@acme.example>\n\
         To: <{recipient}>\n\
         Subject: Quick question\n\
         Message-ID: {id}\n\
         X-Engager-Delivery: {delivery}\n\
         List-Unsubscribe-Post: List-Unsubscribe=One-Click\n\
         \n\
         --ABC.1772531720/mx.acme.example--\n",
        code = if status.starts_with('5') { 550 } else { 451 },
        id = ours(delivery)
    ))
}

fn unrelated() -> Vec<u8> {
    crlf(
        "From: newsletter@vendor.example\nTo: maya@acme.example\nSubject: Our spring offers\n\
         Message-ID: <n.1@vendor.example>\nDate: Tue, 03 Mar 2026 11:00:00 +0000\n\nHello!\n",
    )
}

fn config(dovecot: &Dovecot, extra: &str) -> ImapConfig {
    toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\ntimeout_seconds = 10\n{extra}",
        dovecot.port()
    ))
    .unwrap()
}

/// The flags of every message in INBOX, read with a separate client.
async fn flags(dovecot: &Dovecot) -> Vec<(u32, Vec<String>)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", dovecot.port()))
        .await
        .unwrap();
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap();
    let mut session = client.login(USER, PASSWORD).await.map_err(|e| e.0).unwrap();
    session.select("INBOX").await.unwrap();
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID FLAGS)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut out: Vec<(u32, Vec<String>)> = fetches
        .iter()
        .map(|f| {
            (
                f.uid.unwrap(),
                f.flags().map(|flag| format!("{flag:?}")).collect(),
            )
        })
        .collect();
    out.sort();
    session.logout().await.unwrap();
    out
}

#[tokio::test]
async fn replies_auto_replies_and_bounces_are_classified_and_polled_once() {
    let Some(dovecot) = Dovecot::start(DovecotOptions::default()) else {
        return;
    };
    dovecot.deliver("INBOX", &human_reply(41));
    dovecot.deliver("INBOX", &out_of_office(42));
    dovecot.deliver("INBOX", &dsn(43, "failed", "5.1.1", "gone@example.net"));
    dovecot.deliver("INBOX", &dsn(44, "delayed", "4.4.1", "slow@example.net"));
    dovecot.deliver("INBOX", &unrelated());
    let mailbox = ImapMailbox::new(&config(&dovecot, "")).unwrap();
    mailbox.health_check().await.unwrap();

    let polled = mailbox.poll(None).await.unwrap();
    assert!(!polled.more);
    let kinds: Vec<_> = polled
        .messages
        .iter()
        .map(|m| m.inbound.kind.clone())
        .collect();
    assert_eq!(kinds.len(), 5, "{kinds:#?}");
    assert_eq!(
        kinds[0],
        InboundKind::Reply {
            reference: reference(41)
        }
    );
    assert_eq!(
        kinds[1],
        InboundKind::AutoReply {
            reference: Some(reference(42)),
            signal: "Auto-Submitted: auto-replied".into()
        }
    );
    let InboundKind::Bounce(hard) = &kinds[2] else {
        panic!("{:?}", kinds[2])
    };
    assert_eq!(hard.severity, BounceSeverity::Hard);
    assert_eq!(hard.reference, Some(reference(43)));
    assert_eq!(hard.recipient.as_deref(), Some("gone@example.net"));
    assert_eq!(hard.status.as_deref(), Some("5.1.1"));
    let InboundKind::Bounce(soft) = &kinds[3] else {
        panic!("{:?}", kinds[3])
    };
    assert_eq!(soft.severity, BounceSeverity::Soft);
    assert_eq!(soft.reference, Some(reference(44)));
    assert_eq!(kinds[4], InboundKind::Unrelated);
    let first = &polled.messages[0];
    assert_eq!(first.inbound.from.as_deref(), Some("jane@example.com"));
    assert_eq!(
        first.inbound.message_id.as_deref(),
        Some("<CAJane.1@mail.example.com>")
    );
    assert!(first.received_at.is_some());
    let uids: Vec<u32> = polled.messages.iter().map(|m| m.uid).collect();
    assert!(uids.windows(2).all(|w| w[0] < w[1]), "{uids:?}");
    assert_eq!(polled.mark.last_uid, *uids.last().unwrap());

    // Reading changed nothing: a person still sees every message unread.
    assert!(
        flags(&dovecot).await.iter().all(|(_, f)| f.is_empty()),
        "{:?}",
        flags(&dovecot).await
    );

    // Above the mark there is nothing new until something arrives.
    let again = mailbox.poll(Some(polled.mark)).await.unwrap();
    assert!(again.messages.is_empty());
    assert_eq!(again.mark, polled.mark);
    dovecot.deliver("INBOX", &human_reply(45));
    let newer = mailbox.poll(Some(polled.mark)).await.unwrap();
    assert_eq!(newer.messages.len(), 1);
    assert_eq!(
        newer.messages[0].inbound.kind,
        InboundKind::Reply {
            reference: reference(45)
        }
    );

    // Once processed, messages are skipped even without a mark, and stay unread.
    mailbox
        .mark_processed(polled.mark.uid_validity, &uids)
        .await
        .unwrap();
    let rest = mailbox.poll(None).await.unwrap();
    assert_eq!(
        rest.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
        vec![newer.messages[0].uid]
    );
    for (uid, flags) in flags(&dovecot).await {
        let processed = uids.contains(&uid);
        assert_eq!(
            flags.iter().any(|f| f.contains("EngagerProcessed")),
            processed,
            "uid {uid}: {flags:?}"
        );
        assert!(
            !flags.iter().any(|f| f.contains("Seen")),
            "uid {uid}: {flags:?}"
        );
    }
    // A stale UIDVALIDITY marks nothing.
    mailbox
        .mark_processed(
            polled.mark.uid_validity.wrapping_add(1),
            &[newer.messages[0].uid],
        )
        .await
        .unwrap();
    assert_eq!(mailbox.poll(None).await.unwrap().messages.len(), 1);
}

#[tokio::test]
async fn batches_are_bounded_and_the_mark_advances_through_them() {
    let Some(dovecot) = Dovecot::start(DovecotOptions::default()) else {
        return;
    };
    for i in 0..5 {
        dovecot.deliver("INBOX", &human_reply(100 + i));
    }
    let mailbox = ImapMailbox::new(&config(&dovecot, "max_messages_per_poll = 2")).unwrap();
    let mut mark: Option<UidMark> = None;
    let mut seen = Vec::new();
    loop {
        let polled = mailbox.poll(mark).await.unwrap();
        assert!(polled.messages.len() <= 2);
        seen.extend(polled.messages.iter().map(|m| match &m.inbound.kind {
            InboundKind::Reply { reference } => reference.delivery_id.0,
            other => panic!("{other:?}"),
        }));
        mark = Some(polled.mark);
        if !polled.more {
            break;
        }
    }
    assert_eq!(seen, vec![100, 101, 102, 103, 104]);
}

#[tokio::test]
async fn seen_and_move_modes() {
    let Some(dovecot) = Dovecot::start(DovecotOptions::default()) else {
        return;
    };
    dovecot.deliver("INBOX", &human_reply(1));
    dovecot.deliver("INBOX", &human_reply(2));
    let seen = ImapMailbox::new(&config(&dovecot, "after_processing = \"seen\"")).unwrap();
    let polled = seen.poll(None).await.unwrap();
    assert_eq!(polled.messages.len(), 2);
    seen.mark_processed(polled.mark.uid_validity, &[polled.messages[0].uid])
        .await
        .unwrap();
    assert_eq!(seen.poll(None).await.unwrap().messages.len(), 1);

    let moving = ImapMailbox::new(&config(
        &dovecot,
        "after_processing = \"move\"\nprocessed_folder = \"Engager Processed\"",
    ))
    .unwrap();
    let polled = moving.poll(None).await.unwrap();
    assert_eq!(polled.messages.len(), 2);
    let uids: Vec<u32> = polled.messages.iter().map(|m| m.uid).collect();
    moving
        .mark_processed(polled.mark.uid_validity, &uids)
        .await
        .unwrap();
    assert!(moving.poll(None).await.unwrap().messages.is_empty());
    let archive = ImapMailbox::new(&config(&dovecot, "folder = \"Engager Processed\"")).unwrap();
    assert_eq!(archive.poll(None).await.unwrap().messages.len(), 2);
}

#[tokio::test]
async fn implicit_tls_and_starttls_with_a_private_ca() {
    for tls in [ServerTls::Implicit, ServerTls::Starttls] {
        let Some(dovecot) = Dovecot::start(DovecotOptions { tls }) else {
            return;
        };
        dovecot.deliver("INBOX", &human_reply(9));
        let security = if tls == ServerTls::Implicit {
            "tls"
        } else {
            "starttls"
        };
        let text = format!(
            "host = \"localhost\"\nport = {}\nsecurity = \"{security}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\nca_certificate_path = \"{}\"\ntimeout_seconds = 10\n",
            dovecot.port(),
            dovecot.ca_cert_path().unwrap().display()
        );
        let mailbox = ImapMailbox::new(&toml::from_str(&text).unwrap()).unwrap();
        let polled = mailbox
            .poll(None)
            .await
            .unwrap_or_else(|e| panic!("{tls:?}: {e}\n{}", dovecot.log()));
        assert_eq!(polled.messages.len(), 1, "{tls:?}");
        // Without the CA, the server is not trusted and the password is never sent.
        let untrusted = text
            .lines()
            .filter(|l| !l.starts_with("ca_certificate_path"))
            .collect::<Vec<_>>()
            .join("\n");
        let err = ImapMailbox::new(&toml::from_str(&untrusted).unwrap())
            .unwrap()
            .poll(None)
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{tls:?}: {err}");
        assert!(err.to_string().contains("certificate"), "{err}");
    }
}

#[tokio::test]
async fn a_wrong_password_or_folder_is_a_configuration_problem() {
    let Some(dovecot) = Dovecot::start(DovecotOptions::default()) else {
        return;
    };
    let text = format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nusername = \"{USER}\"\npassword = \"wrong\"\n",
        dovecot.port()
    );
    let err = ImapMailbox::new(&toml::from_str(&text).unwrap())
        .unwrap()
        .health_check()
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("channels.imap.password"), "{err}");
    assert!(!err.is_transient());
    let err = ImapMailbox::new(&config(&dovecot, "folder = \"Nope\""))
        .unwrap()
        .health_check()
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("channels.imap.folder"), "{err}");
    // Nothing listening: transient.
    let port = engager_testkit::local_server::free_port();
    let text = format!(
        "host = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nusername = \"u\"\npassword = \"p\"\n"
    );
    let err = ImapMailbox::new(&toml::from_str(&text).unwrap())
        .unwrap()
        .poll(None)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
}
