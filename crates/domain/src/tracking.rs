//! Open and click tracking: per-delivery signed tokens, link rewriting and the flags that tell
//! machine activity (mail privacy proxies, security scanners) from a person's.
//!
//! Tokens follow `links`: an id and an HMAC-SHA256 tag truncated to 128 bits, URL-safe base64,
//! no personal data. An open token names a delivery; a click token names a delivery and the
//! index of one of its links. The destination of a click is never in the URL: it is stored
//! server-side under (delivery, index), so a tampered token has nothing to redirect to.

use std::collections::HashMap;
use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::DeliveryId;

type HmacSha256 = Hmac<Sha256>;

/// Tag length in bytes: 128 bits.
const TAG_LEN: usize = 16;
/// The path prefix of open pixels (`<public_base_url>/o/<token>.gif`).
pub const OPEN_PREFIX: &str = "/o/";
/// The path prefix of tracked links (`<public_base_url>/c/<token>`).
pub const CLICK_PREFIX: &str = "/c/";

/// Per-campaign tracking (`[tracking]` in a campaign file). Both are off unless the campaign
/// turns them on: tracking changes what is sent (a pixel, rewritten links), which costs
/// deliverability on cold mail and needs a lawful basis in some countries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackingSettings {
    /// Append an open pixel to the HTML part.
    pub opens: bool,
    /// Rewrite http(s) links to go through the click redirect.
    pub clicks: bool,
}

impl TrackingSettings {
    /// Whether anything is tracked.
    pub fn any(&self) -> bool {
        self.opens || self.clicks
    }
}

/// What a token is for; part of the signed message, so a token of one purpose never
/// verifies as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Open,
    Click,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Open => b"tracking:open\0",
            Purpose::Click => b"tracking:click\0",
        }
    }
}

fn mac(secret: &[u8], purpose: Purpose, payload: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(purpose.label());
    mac.update(payload);
    mac
}

fn sign(secret: &[u8], purpose: Purpose, payload: &[u8]) -> String {
    let full = mac(secret, purpose, payload).finalize().into_bytes();
    let mut bytes = Vec::with_capacity(payload.len() + TAG_LEN);
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&full[..TAG_LEN]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The payload of a genuine token of `purpose` and `payload_len` bytes.
fn verify(secret: &[u8], purpose: Purpose, payload_len: usize, token: &str) -> Option<Vec<u8>> {
    if token.len() > 64 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
    if bytes.len() != payload_len + TAG_LEN {
        return None;
    }
    let (payload, tag) = bytes.split_at(payload_len);
    // verify_truncated_left compares in constant time.
    mac(secret, purpose, payload)
        .verify_truncated_left(tag)
        .ok()?;
    Some(payload.to_vec())
}

/// The open-pixel token of a delivery.
pub fn open_token(secret: &[u8], delivery: DeliveryId) -> String {
    sign(secret, Purpose::Open, &delivery.0.to_be_bytes())
}

/// The delivery an open token names, if it is genuine.
pub fn verify_open_token(secret: &[u8], token: &str) -> Option<DeliveryId> {
    let payload = verify(secret, Purpose::Open, 8, token)?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&payload);
    Some(DeliveryId(i64::from_be_bytes(id)))
}

/// The click token of link `index` of a delivery.
pub fn click_token(secret: &[u8], delivery: DeliveryId, index: u32) -> String {
    let mut payload = [0u8; 12];
    payload[..8].copy_from_slice(&delivery.0.to_be_bytes());
    payload[8..].copy_from_slice(&index.to_be_bytes());
    sign(secret, Purpose::Click, &payload)
}

/// The delivery and link index a click token names, if it is genuine.
pub fn verify_click_token(secret: &[u8], token: &str) -> Option<(DeliveryId, u32)> {
    let payload = verify(secret, Purpose::Click, 12, token)?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&payload[..8]);
    let mut index = [0u8; 4];
    index.copy_from_slice(&payload[8..]);
    Some((
        DeliveryId(i64::from_be_bytes(id)),
        u32::from_be_bytes(index),
    ))
}

/// A message's bodies with tracking applied, and the links to store server-side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// The plain-text body, links rewritten when click tracking is on.
    pub body_text: String,
    /// The HTML body, links rewritten and pixel appended as configured.
    pub body_html: Option<String>,
    /// (index, destination) of every rewritten link, in order of first appearance.
    pub links: Vec<(u32, String)>,
    /// Whether an open pixel was appended.
    pub pixel: bool,
}

impl Tracked {
    /// Whether anything changed.
    pub fn changed(&self, body_text: &str, body_html: Option<&str>) -> bool {
        self.body_text != body_text || self.body_html.as_deref() != body_html
    }
}

/// Applies a campaign's tracking to a message of one delivery. Deterministic and idempotent:
/// links already pointing at `base_url` (the unsubscribe link, links rewritten by an earlier
/// attempt) are left alone and a pixel already present is not added again, so a retry sends
/// the same bytes and the same tokens.
pub fn apply(
    settings: TrackingSettings,
    base_url: &str,
    secret: &[u8],
    delivery: DeliveryId,
    body_text: &str,
    body_html: Option<&str>,
) -> Tracked {
    let base = base_url.trim_end_matches('/');
    let mut rewriter = Rewriter {
        base,
        secret,
        delivery,
        index: HashMap::new(),
        links: Vec::new(),
    };
    let (text, html) = if settings.clicks {
        (
            rewriter.text(body_text),
            body_html.map(|h| rewriter.html(h)),
        )
    } else {
        (body_text.to_owned(), body_html.map(str::to_owned))
    };
    let mut pixel = false;
    let html = html.map(|mut h| {
        let open_prefix = format!("{base}{OPEN_PREFIX}");
        if settings.opens && !h.contains(&open_prefix) {
            let img = format!(
                "<img src=\"{open_prefix}{}.gif\" width=\"1\" height=\"1\" alt=\"\" style=\"border:0;width:1px;height:1px\">",
                open_token(secret, delivery)
            );
            match h.to_ascii_lowercase().rfind("</body>") {
                Some(at) => h.insert_str(at, &img),
                None => h.push_str(&img),
            }
            pixel = true;
        }
        h
    });
    Tracked {
        body_text: text,
        body_html: html,
        links: rewriter.links,
        pixel,
    }
}

struct Rewriter<'a> {
    base: &'a str,
    secret: &'a [u8],
    delivery: DeliveryId,
    index: HashMap<String, u32>,
    links: Vec<(u32, String)>,
}

impl Rewriter<'_> {
    /// The tracking URL of a destination, or `None` when it must stay as it is.
    fn tracked(&mut self, url: &str) -> Option<String> {
        if !is_trackable(url, self.base) {
            return None;
        }
        let next = self.links.len() as u32;
        let i = *self.index.entry(url.to_owned()).or_insert(next);
        if i == next {
            self.links.push((i, url.to_owned()));
        }
        Some(format!(
            "{}{CLICK_PREFIX}{}",
            self.base,
            click_token(self.secret, self.delivery, i)
        ))
    }

    /// Plain text: every bare http(s) URL.
    fn text(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 64);
        let mut rest = 0;
        let mut i = 0;
        while i < s.len() {
            if let Some(end) = url_at(s, i) {
                out.push_str(&s[rest..i]);
                match self.tracked(&s[i..end]) {
                    Some(t) => out.push_str(&t),
                    None => out.push_str(&s[i..end]),
                }
                rest = end;
                i = end;
            } else {
                i += s[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
        out.push_str(&s[rest..]);
        out
    }

    /// HTML: the values of `href` attributes that are http(s) URLs.
    fn html(&mut self, s: &str) -> String {
        let lower = s.to_ascii_lowercase();
        let bytes = s.as_bytes();
        let mut out = String::with_capacity(s.len() + 64);
        let mut rest = 0;
        let mut from = 0;
        while let Some(found) = lower[from..].find("href") {
            let at = from + found;
            from = at + 4;
            // An attribute: preceded by white space, followed by `=` and a value.
            if at == 0 || !bytes[at - 1].is_ascii_whitespace() {
                continue;
            }
            let mut j = at + 4;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if j >= bytes.len() || bytes[j] != b'=' {
                continue;
            }
            j += 1;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if j >= bytes.len() {
                break;
            }
            let (start, end) = match bytes[j] {
                q @ (b'"' | b'\'') => match s[j + 1..].find(q as char) {
                    Some(len) => (j + 1, j + 1 + len),
                    None => break,
                },
                _ => {
                    let len = s[j..]
                        .find(|c: char| c.is_ascii_whitespace() || c == '>')
                        .unwrap_or(s.len() - j);
                    (j, j + len)
                }
            };
            let raw = &s[start..end];
            let url = unescape_attr(raw.trim());
            if let Some(t) = self.tracked(&url) {
                out.push_str(&s[rest..start]);
                out.push_str(&t);
                rest = end;
            }
            from = end;
        }
        out.push_str(&s[rest..]);
        out
    }
}

/// Whether a link is an absolute http(s) URL that is not one of ours.
fn is_trackable(url: &str, base: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return false;
    }
    if url == base || url.starts_with(&format!("{base}/")) || url.starts_with(&format!("{base}?")) {
        return false;
    }
    matches!(url::Url::parse(url), Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()))
}

/// The end of an http(s) URL starting at byte `i` of plain text, if one starts there.
fn url_at(s: &str, i: usize) -> Option<usize> {
    let head = s
        .get(i..i + 8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let scheme = if head.starts_with("https://") {
        8
    } else if head.starts_with("http://") {
        7
    } else {
        return None;
    };
    if i > 0 {
        let prev = s[..i].chars().next_back()?;
        if prev.is_alphanumeric() || prev == '/' || prev == '=' {
            return None;
        }
    }
    let len = s[i..]
        .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '`'))
        .unwrap_or(s.len() - i);
    let mut url = &s[i..i + len];
    // Punctuation that ends a sentence is not part of the link; a closing bracket only when
    // the URL did not open it.
    while let Some(last) = url.chars().next_back() {
        let strip = match last {
            '.' | ',' | ';' | ':' | '!' | '?' | '\'' | '*' => true,
            ')' => url.matches('(').count() < url.matches(')').count(),
            ']' => url.matches('[').count() < url.matches(']').count(),
            '}' => url.matches('{').count() < url.matches('}').count(),
            _ => false,
        };
        if !strip {
            break;
        }
        url = &url[..url.len() - last.len_utf8()];
    }
    (url.len() > scheme).then_some(i + url.len())
}

/// Decodes the entities that appear in URLs in attribute values.
fn unescape_attr(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    s.replace("&amp;", "&")
        .replace("&#38;", "&")
        .replace("&#x26;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

/// Why an open or click is taken for a machine's rather than a person's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineReason {
    /// Apple Mail Privacy Protection fetched the pixel (Apple's proxy address or signature).
    AppleMpp,
    /// A security gateway or link scanner (named by its user agent).
    Scanner,
    /// No user agent, or an HTTP library's or crawler's.
    Automated,
    /// Within the configured seconds of the send: faster than people read.
    TooSoon,
    /// Every link of the message clicked within a second.
    AllLinks,
}

impl MachineReason {
    /// The name stored in the event's detail (`"reason"`).
    pub fn as_str(self) -> &'static str {
        match self {
            MachineReason::AppleMpp => "apple_mpp",
            MachineReason::Scanner => "security_scanner",
            MachineReason::Automated => "automated_client",
            MachineReason::TooSoon => "too_soon_after_send",
            MachineReason::AllLinks => "all_links_at_once",
        }
    }
}

/// Apple's address block, from which Mail Privacy Protection's image proxy fetches (Apple's
/// published egress list is within 17.0.0.0/8, which Apple owns whole).
const APPLE_V4: (u8, u8) = (17, 8);

/// User-agent fragments (lower case) of security gateways and link scanners.
pub const SCANNER_AGENTS: &[&str] = &[
    "barracuda",
    "mimecast",
    "proofpoint",
    "urldefense",
    "ironport",
    "symantec",
    "messagelabs",
    "forcepoint",
    "sophos",
    "trendmicro",
    "fireeye",
    "zscaler",
    "checkpoint",
    "safelinks",
    "bitdefender",
    "kaspersky",
    "microsoft office existence discovery",
];

/// User-agent fragments (lower case) of HTTP libraries, headless browsers and crawlers.
pub const AUTOMATED_AGENTS: &[&str] = &[
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww-perl",
    "httpclient",
    "headlesschrome",
    "phantomjs",
    "bot/",
    "bot;",
    "crawler",
    "spider",
    "+http",
];

/// What a request says about its sender.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals<'a> {
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// The client's address.
    pub ip: Option<IpAddr>,
}

/// Flags from the request alone (address and user agent). `open` tells the pixel from a
/// click: Apple's proxy only fetches images.
pub fn classify_request(signals: &Signals<'_>, open: bool) -> Option<MachineReason> {
    let ua = signals.user_agent.map(str::trim).unwrap_or("");
    let lower = ua.to_ascii_lowercase();
    if open {
        let apple_ip = match signals.ip {
            Some(IpAddr::V4(v4)) => v4.octets()[0] == APPLE_V4.0,
            Some(IpAddr::V6(v6)) => v6
                .to_ipv4_mapped()
                .is_some_and(|v4| v4.octets()[0] == APPLE_V4.0),
            None => false,
        };
        // MPP's fetches also carry a bare "Mozilla/5.0", which no real mail client sends.
        if apple_ip || ua == "Mozilla/5.0" {
            return Some(MachineReason::AppleMpp);
        }
    }
    if SCANNER_AGENTS.iter().any(|s| lower.contains(s)) {
        return Some(MachineReason::Scanner);
    }
    if ua.is_empty() || AUTOMATED_AGENTS.iter().any(|s| lower.contains(s)) {
        return Some(MachineReason::Automated);
    }
    None
}

/// Whether an event at `at` came within `window` of the send, or before the send was even
/// recorded (`sent_at` unknown or later: scanners act while the message is being delivered).
pub fn too_soon(sent_at: Option<DateTime<Utc>>, at: DateTime<Utc>, window: Duration) -> bool {
    sent_at.is_none_or(|s| at - s < window)
}

/// Whether the clicks of one message (link index, time), the newest at `at`, cover all of
/// its `links` (two or more) within one second.
pub fn all_links_burst(clicks: &[(u32, DateTime<Utc>)], links: u32, at: DateTime<Utc>) -> bool {
    if links < 2 {
        return false;
    }
    let mut seen: Vec<u32> = clicks
        .iter()
        .filter(|(_, t)| *t <= at && at - *t <= Duration::seconds(1))
        .map(|(i, _)| *i)
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len() as u32 >= links
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";
    const BASE: &str = "https://t.example.com";

    #[test]
    fn tokens_verify_only_for_their_purpose_delivery_and_secret() {
        let open = open_token(SECRET, DeliveryId(7));
        assert_eq!(verify_open_token(SECRET, &open), Some(DeliveryId(7)));
        assert_eq!(verify_open_token(b"another secret!!", &open), None);
        assert_eq!(verify_click_token(SECRET, &open), None);
        let click = click_token(SECRET, DeliveryId(7), 3);
        assert_eq!(verify_click_token(SECRET, &click), Some((DeliveryId(7), 3)));
        assert_eq!(verify_open_token(SECRET, &click), None);
        // Pointing the token at another link or delivery breaks the tag.
        let mut forged = URL_SAFE_NO_PAD.decode(&click).unwrap();
        forged[11] ^= 1;
        assert_eq!(
            verify_click_token(SECRET, &URL_SAFE_NO_PAD.encode(&forged)),
            None
        );
        let mut forged = URL_SAFE_NO_PAD.decode(&open).unwrap();
        forged[7] ^= 1;
        assert_eq!(
            verify_open_token(SECRET, &URL_SAFE_NO_PAD.encode(&forged)),
            None
        );
        // An unsubscribe token of the same length is not an open token.
        let unsubscribe = crate::links::lead_token(SECRET, "unsubscribe", crate::LeadId(7));
        assert_eq!(verify_open_token(SECRET, &unsubscribe), None);
        assert_eq!(verify_click_token(SECRET, "x".repeat(500).as_str()), None);
    }

    #[test]
    fn click_rewriting_covers_text_and_html_but_not_our_links() {
        let text = "See https://example.com/a?x=1&y=2. Or (https://example.com/b).\n\
                    Unsubscribe: https://t.example.com/u/TOKEN\nmailto:me@example.com";
        let html = "<p><a href=\"https://example.com/a?x=1&amp;y=2\">a</a> \
                    <a class=x href='http://example.com/c'>c</a> \
                    <a href=\"https://t.example.com/u/TOKEN\">unsubscribe</a></p></body>";
        let t = apply(
            TrackingSettings {
                opens: true,
                clicks: true,
            },
            BASE,
            SECRET,
            DeliveryId(9),
            text,
            Some(html),
        );
        assert_eq!(
            t.links,
            vec![
                (0, "https://example.com/a?x=1&y=2".to_owned()),
                (1, "https://example.com/b".to_owned()),
                (2, "http://example.com/c".to_owned()),
            ]
        );
        let c0 = format!("{BASE}/c/{}", click_token(SECRET, DeliveryId(9), 0));
        let c1 = format!("{BASE}/c/{}", click_token(SECRET, DeliveryId(9), 1));
        assert!(
            t.body_text.contains(&format!("See {c0}. Or ({c1}).")),
            "{}",
            t.body_text
        );
        assert!(t.body_text.contains("https://t.example.com/u/TOKEN"));
        assert!(!t.body_text.contains("example.com/a"));
        let html = t.body_html.as_deref().unwrap();
        assert!(html.contains(&format!("href=\"{c0}\"")), "{html}");
        assert!(html.contains("href=\"https://t.example.com/u/TOKEN\""));
        assert!(!html.contains("http://example.com/c"));
        let pixel = format!("{BASE}/o/{}.gif", open_token(SECRET, DeliveryId(9)));
        assert!(html.contains(&pixel) && html.ends_with("</body>"), "{html}");
        assert!(t.pixel);
        // No destination and no personal data in any tracking URL.
        assert!(!c0.contains("example.com/a"));

        // Applying again changes nothing: a retry sends the same message.
        let again = apply(
            TrackingSettings {
                opens: true,
                clicks: true,
            },
            BASE,
            SECRET,
            DeliveryId(9),
            &t.body_text,
            t.body_html.as_deref(),
        );
        assert!(!again.changed(&t.body_text, t.body_html.as_deref()));
        assert!(again.links.is_empty() && !again.pixel);
    }

    #[test]
    fn disabled_tracking_leaves_the_message_alone() {
        let text = "Read https://example.com/x";
        let html = "<a href=\"https://example.com/x\">x</a>";
        let off = apply(
            TrackingSettings::default(),
            BASE,
            SECRET,
            DeliveryId(1),
            text,
            Some(html),
        );
        assert!(!off.changed(text, Some(html)) && off.links.is_empty() && !off.pixel);
        let opens_only = apply(
            TrackingSettings {
                opens: true,
                clicks: false,
            },
            BASE,
            SECRET,
            DeliveryId(1),
            text,
            Some(html),
        );
        assert_eq!(opens_only.body_text, text);
        assert!(opens_only.pixel && opens_only.links.is_empty());
        // No HTML part, no pixel.
        let plain = apply(
            TrackingSettings {
                opens: true,
                clicks: true,
            },
            BASE,
            SECRET,
            DeliveryId(1),
            text,
            None,
        );
        assert!(!plain.pixel && plain.body_html.is_none() && plain.links.len() == 1);
    }

    #[test]
    fn machine_activity_is_recognized() {
        let ip = |s: &str| Some(s.parse().unwrap());
        let browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36";
        let person = Signals {
            user_agent: Some(browser),
            ip: ip("203.0.113.9"),
        };
        assert_eq!(classify_request(&person, true), None);
        assert_eq!(classify_request(&person, false), None);
        let mpp = Signals {
            user_agent: Some("Mozilla/5.0"),
            ip: ip("198.51.100.1"),
        };
        assert_eq!(classify_request(&mpp, true), Some(MachineReason::AppleMpp));
        let apple = Signals {
            user_agent: Some(browser),
            ip: ip("17.58.1.2"),
        };
        assert_eq!(
            classify_request(&apple, true),
            Some(MachineReason::AppleMpp)
        );
        let scanner = Signals {
            user_agent: Some("Mozilla/5.0 Barracuda/1.0"),
            ip: None,
        };
        assert_eq!(
            classify_request(&scanner, false),
            Some(MachineReason::Scanner)
        );
        let curl = Signals {
            user_agent: Some("curl/8.5.0"),
            ip: None,
        };
        assert_eq!(
            classify_request(&curl, false),
            Some(MachineReason::Automated)
        );
        assert_eq!(
            classify_request(&Signals::default(), false),
            Some(MachineReason::Automated)
        );

        let sent = DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let w = Duration::seconds(10);
        assert!(too_soon(Some(sent), sent + Duration::seconds(3), w));
        assert!(!too_soon(Some(sent), sent + Duration::seconds(10), w));
        assert!(too_soon(None, sent, w));
        assert!(too_soon(Some(sent), sent - Duration::seconds(1), w));

        let at = sent + Duration::minutes(30);
        let burst = [
            (0, at - Duration::milliseconds(400)),
            (1, at - Duration::milliseconds(100)),
            (2, at),
        ];
        assert!(all_links_burst(&burst, 3, at));
        assert!(!all_links_burst(&burst[1..], 3, at));
        let slow = [
            (0, at - Duration::seconds(5)),
            (1, at - Duration::milliseconds(100)),
            (2, at),
        ];
        assert!(!all_links_burst(&slow, 3, at));
        assert!(
            !all_links_burst(&[(0, at)], 1, at),
            "one link clicked is a person's click"
        );
    }
}
