//! RFC 5322 message building shared by every email channel.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;
use sha2::{Digest, Sha256};

use crate::{DeliveryError, OutgoingMessage};

/// Our Message-ID for a delivery: stable, unique per delivery, in the sender's domain.
pub fn message_id(
    delivery: engager_domain::DeliveryId,
    campaign: &str,
    sender_domain: &str,
) -> String {
    let digest = Sha256::digest(format!("{campaign}/{delivery}").as_bytes());
    format!(
        "<engager.{delivery}.{}@{sender_domain}>",
        hex::encode(&digest[..6])
    )
}

fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// Builds the RFC 5322 message: From, To, Subject, Date, Message-ID, the RFC 8058
/// `List-Unsubscribe` and `List-Unsubscribe-Post` headers, our `X-Engager-Delivery` header,
/// and a text body (plus HTML as `multipart/alternative` when present).
pub fn build_message(msg: &OutgoingMessage) -> Result<Message, DeliveryError> {
    let permanent = |reason: String| DeliveryError::Permanent { reason };
    let from = Mailbox::new(
        Some(msg.sender.name.clone()),
        msg.sender
            .email
            .as_str()
            .parse()
            .map_err(|e| DeliveryError::Config {
                reason: format!("sender address: {e}"),
            })?,
    );
    let to = Mailbox::new(
        msg.to_name.clone(),
        msg.to
            .parse()
            .map_err(|e| permanent(format!("recipient address {:?}: {e}", msg.to)))?,
    );
    let subject = msg
        .subject
        .clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| permanent("an email needs a subject".into()))?;
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .date(msg.date.into())
        .message_id(Some(msg.message_id.clone()))
        .raw_header(raw_header(
            "X-Engager-Delivery",
            msg.delivery_id.to_string(),
        ));
    if let Some(unsub) = &msg.unsubscribe {
        let mut value = format!("<{}>", unsub.url);
        if let Some(mailto) = &unsub.mailto {
            value.push_str(&format!(", <{mailto}>"));
        }
        builder = builder
            .raw_header(raw_header("List-Unsubscribe", value))
            .raw_header(raw_header(
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".into(),
            ));
    }
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(msg.body_text.clone());
    let result = match &msg.body_html {
        Some(html) => {
            // A boundary derived from the Message-ID keeps the file byte-identical across runs.
            let boundary = format!(
                "engager-{}",
                hex::encode(&Sha256::digest(msg.message_id.as_bytes())[..12])
            );
            builder.multipart(
                MultiPart::alternative()
                    .boundary(boundary)
                    .singlepart(text)
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html.clone()),
                    ),
            )
        }
        None => builder.singlepart(text),
    };
    result.map_err(|e| permanent(format!("cannot build the message: {e}")))
}
