//! Opaque signed tokens for links sent to leads (unsubscribe), so that no personal data
//! appears in a URL and a token for one lead can never act on another.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::LeadId;

type HmacSha256 = Hmac<Sha256>;

/// Tag length in bytes: 128 bits, enough that guessing a valid token is hopeless.
const TAG_LEN: usize = 16;

fn tag(secret: &[u8], purpose: &str, lead: LeadId) -> [u8; TAG_LEN] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(purpose.as_bytes());
    mac.update(&lead.0.to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&full[..TAG_LEN]);
    out
}

/// An opaque token naming a lead for one purpose (e.g. `unsubscribe`).
pub fn lead_token(secret: &[u8], purpose: &str, lead: LeadId) -> String {
    let mut bytes = Vec::with_capacity(8 + TAG_LEN);
    bytes.extend_from_slice(&lead.0.to_be_bytes());
    bytes.extend_from_slice(&tag(secret, purpose, lead));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The lead a token names, if the token is genuine for this purpose and secret.
pub fn verify_lead_token(secret: &[u8], purpose: &str, token: &str) -> Option<LeadId> {
    let bytes = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
    if bytes.len() != 8 + TAG_LEN {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[..8]);
    let lead = LeadId(i64::from_be_bytes(id));
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(purpose.as_bytes());
    mac.update(&lead.0.to_be_bytes());
    // verify_truncated_left compares in constant time.
    mac.verify_truncated_left(&bytes[8..]).ok()?;
    Some(lead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_lead_purpose_and_secret() {
        let t = lead_token(b"secret", "unsubscribe", LeadId(42));
        assert_eq!(
            verify_lead_token(b"secret", "unsubscribe", &t),
            Some(LeadId(42))
        );
        assert_eq!(verify_lead_token(b"other", "unsubscribe", &t), None);
        assert_eq!(verify_lead_token(b"secret", "click", &t), None);
        let mut forged = URL_SAFE_NO_PAD.decode(&t).unwrap();
        forged[7] ^= 1; // point the token at lead 43, keeping the tag
        assert_eq!(
            verify_lead_token(b"secret", "unsubscribe", &URL_SAFE_NO_PAD.encode(forged)),
            None
        );
        assert_eq!(
            verify_lead_token(b"secret", "unsubscribe", "not-a-token"),
            None
        );
    }
}
