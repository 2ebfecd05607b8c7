//! Access to the dashboard: the admin token as `Authorization: Bearer <token>`, or a session
//! cookie from the login form.
//!
//! The cookie holds `<expiry>.<HMAC-SHA256(admin token, expiry)>`, never the token: it is
//! HttpOnly, SameSite=Strict (no cross-site request carries it, which with POST-only state
//! changes makes the dashboard CSRF-safe), Secure when the public base URL is https, and
//! expires after [`SESSION_HOURS`]. Changing the admin token ends every session.
//! Every comparison runs in constant time (`Mac::verify_slice`).

use axum::http::{header, HeaderMap};
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "engager_dashboard";
/// The shortest admin token accepted.
pub const MIN_TOKEN_CHARS: usize = 32;
/// How long a login lasts.
pub const SESSION_HOURS: i64 = 12;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A valid bearer token or session.
    Granted,
    /// No credentials (or an expired session): the login page.
    Login,
    /// A wrong bearer token: 401.
    Denied,
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// Whether `presented` is the admin token, in constant time (both are hashed under a fixed
/// key first, so neither the length nor a prefix leaks through timing).
pub(crate) fn token_matches(admin: &SecretString, presented: &str) -> bool {
    const KEY: &[u8] = b"engager dashboard token check";
    let expected = mac(KEY)
        .chain_update(admin.expose_secret().as_bytes())
        .finalize()
        .into_bytes();
    mac(KEY)
        .chain_update(presented.as_bytes())
        .verify_slice(&expected)
        .is_ok()
}

fn session_mac(admin: &SecretString, expires: i64) -> HmacSha256 {
    mac(admin.expose_secret().as_bytes())
        .chain_update(format!("engager dashboard session v1 {expires}"))
}

/// A session value valid until `now + SESSION_HOURS`.
pub(crate) fn new_session(admin: &SecretString, now: DateTime<Utc>) -> String {
    let expires = (now + Duration::hours(SESSION_HOURS)).timestamp();
    let tag = session_mac(admin, expires).finalize().into_bytes();
    format!("{expires}.{}", hex::encode(tag))
}

/// Whether a session value is ours and not expired.
pub(crate) fn session_valid(admin: &SecretString, value: &str, now: DateTime<Utc>) -> bool {
    let Some((expires, tag)) = value.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(tag)) = (expires.parse::<i64>(), hex::decode(tag)) else {
        return false;
    };
    expires > now.timestamp() && session_mac(admin, expires).verify_slice(&tag).is_ok()
}

/// The value of a cookie in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Judges a request's credentials.
pub(crate) fn access(admin: &SecretString, headers: &HeaderMap, now: DateTime<Utc>) -> Access {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let presented = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        return match presented {
            Some(t) if token_matches(admin, t) => Access::Granted,
            _ => Access::Denied,
        };
    }
    match cookie(headers, COOKIE) {
        Some(v) if session_valid(admin, v, now) => Access::Granted,
        _ => Access::Login,
    }
}

/// The `Set-Cookie` value of a session (or, with `None`, one that deletes it).
pub(crate) fn set_cookie(value: Option<&str>, path: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            SESSION_HOURS * 3600
        ),
        None => format!("{COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn admin() -> SecretString {
        "an-admin-token-of-at-least-32-characters".into()
    }

    #[test]
    fn sessions_verify_until_they_expire_and_only_under_their_token() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0).unwrap();
        let s = new_session(&admin(), now);
        assert!(
            !s.contains("an-admin-token"),
            "the token is not in the cookie"
        );
        assert!(session_valid(
            &admin(),
            &s,
            now + Duration::hours(SESSION_HOURS - 1)
        ));
        assert!(!session_valid(
            &admin(),
            &s,
            now + Duration::hours(SESSION_HOURS)
        ));
        let other: SecretString = "another-admin-token-of-32-characters-x".into();
        assert!(!session_valid(&other, &s, now));
        // A later expiry with the old tag does not verify.
        let (exp, tag) = s.split_once('.').unwrap();
        let forged = format!("{}.{tag}", exp.parse::<i64>().unwrap() + 3600);
        assert!(!session_valid(&admin(), &forged, now));
        assert!(!session_valid(&admin(), "garbage", now));
    }

    #[test]
    fn bearer_tokens_and_cookies_are_judged() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0).unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(access(&admin(), &h, now), Access::Login);
        h.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert_eq!(access(&admin(), &h, now), Access::Denied);
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {}", admin().expose_secret())
                .parse()
                .unwrap(),
        );
        assert_eq!(access(&admin(), &h, now), Access::Granted);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; {COOKIE}={}", new_session(&admin(), now))
                .parse()
                .unwrap(),
        );
        assert_eq!(access(&admin(), &h, now), Access::Granted);
        assert!(token_matches(
            &admin(),
            "an-admin-token-of-at-least-32-characters"
        ));
        assert!(!token_matches(
            &admin(),
            "an-admin-token-of-at-least-32-character"
        ));
    }
}
