//! The dashboard's HTML: the page frame (navigation, period picker, logout), tables and
//! formatting. Every text from data goes through [`esc`]; cells are HTML built from
//! escaped parts.

use std::fmt::Write as _;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use engager_engine::report::Rate;

pub(crate) use crate::pages::escape as esc;

const STYLE: &str = "\
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2430;background:#f4f6f9}\
header{background:#1f2a44;color:#fff;padding:.6rem 1.2rem;display:flex;align-items:center;gap:1.2rem;flex-wrap:wrap}\
header b{font-size:1.05rem;letter-spacing:.02em}header nav{display:flex;gap:.2rem;flex-wrap:wrap}\
header nav a{color:#cdd6ea;text-decoration:none;padding:.3rem .6rem;border-radius:4px}\
header nav a.on,header nav a:hover{background:#33416a;color:#fff}\
header form{margin-left:auto}header button{background:none;border:1px solid #6b7a9f;color:#dfe6f5;border-radius:4px;padding:.25rem .7rem;cursor:pointer}\
main{max-width:1180px;margin:0 auto;padding:1rem 1.2rem 3rem}\
h1{font-size:1.35rem;margin:.6rem 0 .2rem}h2{font-size:1.05rem;margin:1.6rem 0 .5rem}\
.sub{color:#5b6475;margin:0 0 .8rem}.periods a{margin-right:.5rem}.periods a.on{font-weight:700;color:#1f2430;text-decoration:none}\
a{color:#2359c4}\
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.7rem;margin:.8rem 0}\
.tile{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:.6rem .8rem}\
.tile .k{color:#5b6475;font-size:.8rem;text-transform:uppercase;letter-spacing:.03em}.tile .v{font-size:1.4rem;font-weight:650}\
.tile .i{color:#5b6475;font-size:.8rem}\
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1rem}\
.card{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:.6rem .8rem;overflow-x:auto}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:.3rem .55rem;font-size:13px;border-bottom:1px solid #e6e9ef;text-align:left;white-space:nowrap;vertical-align:top}\
th{background:#eef1f6;font-weight:600;font-size:.85rem}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
td .l{white-space:normal;display:inline-block;min-width:12rem;max-width:36rem}\
.ok{color:#1e7d4f;font-weight:600}.warn{color:#a66b00;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#6b7385}\
.note{background:#fff8e1;border:1px solid #f0d58a;border-radius:6px;padding:.5rem .8rem}\
svg.chart{width:100%;max-width:760px;height:auto;display:block}svg .ct{font-size:13px;font-weight:600;fill:#1f2430}\
svg .grid{stroke:#e3e7ee}svg .axis{stroke:#8a93a5}svg .yl{font-size:11px;fill:#5b6475;text-anchor:end}\
svg .xl{font-size:10.5px;fill:#5b6475;text-anchor:middle}svg .vl{font-size:11.5px;fill:#1f2430}\
svg .lg{font-size:11px;fill:#1f2430}svg .ref{font-size:10.5px}svg .none{font-size:12px;fill:#6b7385}\
form.login{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:1.2rem;max-width:26rem;margin:3rem auto}\
form.login input{width:100%;padding:.5rem;font-size:1rem;margin:.4rem 0 .8rem;border:1px solid #b9c0cc;border-radius:4px}\
form.login button{padding:.5rem 1.2rem;font-size:1rem;background:#2359c4;color:#fff;border:0;border-radius:4px;cursor:pointer}";

/// The pages of the navigation: (path under /dashboard, label).
const NAV: [(&str, &str); 6] = [
    ("", "Overview"),
    ("/experiments", "Experiments"),
    ("/deliverability", "Deliverability"),
    ("/compliance", "Compliance"),
    ("/health", "Queue & channels"),
    ("/campaigns", "Campaigns"),
];

/// The security headers of every dashboard answer: no script at all, styles inline only,
/// no framing, no caching, no referrer to other sites.
pub(crate) fn respond(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // `same-origin`, not `no-referrer`: with no-referrer browsers send `Origin: null`
            // on the login and logout POSTs, which the cross-site check must refuse.
            (header::REFERRER_POLICY, "same-origin"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ],
        html,
    )
        .into_response()
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><link rel=\"icon\" href=\"data:,\">\
         <title>{} · Engager</title><style>{STYLE}</style></head>",
        esc(title)
    )
}

/// A signed-in page: header with navigation and logout, then `body`.
pub(crate) fn page(base: &str, active: &str, title: &str, body: &str) -> String {
    let mut nav = String::new();
    for (path, label) in NAV {
        let _ = write!(
            nav,
            "<a href=\"{base}{path}\"{on}>{label}</a>",
            base = esc(base),
            on = if path == active { " class=\"on\"" } else { "" }
        );
    }
    format!(
        "{}<body><header><b>Engager</b><nav>{nav}</nav>\
         <form method=\"post\" action=\"{}/logout\"><button type=\"submit\">Log out</button></form></header>\
         <main><h1>{}</h1>{body}</main></body></html>\n",
        head(title),
        esc(base),
        esc(title)
    )
}

/// A page outside the session (login, disabled, errors).
pub(crate) fn bare(title: &str, body: &str) -> String {
    format!(
        "{}<body><header><b>Engager</b></header><main>{body}</main></body></html>\n",
        head(title)
    )
}

/// Whether a cell shows a number (right-aligned): it starts with a digit, a sign or `–`.
fn numeric(cell: &str) -> bool {
    cell.chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '–'))
}

/// A table: header texts (escaped here) and rows of cell HTML. Columns whose cells are
/// numbers are right-aligned.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let numeric_column =
        |i: usize| !rows.is_empty() && rows.iter().all(|r| r.get(i).is_none_or(|c| numeric(c)));
    let mut out = String::from("<div class=\"card\"><table><thead><tr>");
    for (i, h) in headers.iter().enumerate() {
        let class = if numeric_column(i) {
            " class=\"n\""
        } else {
            ""
        };
        let _ = write!(out, "<th{class}>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td class=\"l muted\" colspan=\"{}\">Nothing to show.</td></tr>",
            headers.len()
        );
    }
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            if numeric(cell) {
                let _ = write!(out, "<td class=\"n\">{cell}</td>");
            } else {
                let _ = write!(out, "<td>{cell}</td>");
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// `12.3% [10.1–14.8]`, or `–` without sends.
pub(crate) fn rate(r: Option<&Rate>) -> String {
    match r {
        Some(r) => format!(
            "{:.1}%<br><small class=\"muted\">[{:.1}–{:.1}]</small>",
            r.rate * 100.0,
            r.low * 100.0,
            r.high * 100.0
        ),
        None => "–".into(),
    }
}

/// A key figure tile.
pub(crate) fn tile(key: &str, value: &str, detail: &str) -> String {
    format!(
        "<div class=\"tile\"><div class=\"k\">{}</div><div class=\"v\">{}</div><div class=\"i\">{}</div></div>",
        esc(key),
        esc(value),
        detail
    )
}

/// A time for tables (UTC, minutes).
pub(crate) fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}
