//! The dashboard's pages. Each gathers its figures from the store and the engine's report,
//! statistics and monitor code, then renders them with [`super::html`] and [`super::svg`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use engager_domain::deliverability::Levels;
use engager_domain::stats::{
    judge, ExperimentRules, Proportion, VariantCounts, VariantResult, Verdict,
};
use engager_domain::{Channel, DeliveryState};
use engager_engine::report::{build, Dimension, Report, ReportRow};
use engager_engine::{monitor, Catalog};
use engager_store::{ReportFacts, ReportQuery};

use super::html::{self, esc, rate, tile};
use super::svg::{self, Estimate, Series};
use super::{error_page, gate, param, params, Period};
use crate::ServerState;

/// The confidence of every interval shown.
const CONFIDENCE: f64 = 0.95;

/// What every page starts with: the gate, the period and the page's own URL.
struct Ctx {
    state: ServerState,
    period: Period,
    base: String,
    now: DateTime<Utc>,
}

fn start(state: ServerState, headers: &HeaderMap, uri: &OriginalUri) -> Result<Ctx, Response> {
    let path_and_query = uri
        .0
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    gate(&state, headers, &path_and_query)?;
    let now = state.clock.now();
    let q = params(uri.0.query());
    let period = Period::parse(param(&q, "period"), now)
        .map_err(|e| error_page(&state, StatusCode::BAD_REQUEST, "Bad request", &e))?;
    let base = state.dashboard_base();
    Ok(Ctx {
        state,
        period,
        base,
        now,
    })
}

macro_rules! ctx {
    ($state:expr, $headers:expr, $uri:expr) => {
        match start($state, &$headers, &$uri) {
            Ok(c) => c,
            Err(r) => return r,
        }
    };
}

macro_rules! store {
    ($e:expr) => {
        match $e.await {
            Ok(v) => v,
            Err(e) => return crate::store_failed("The dashboard", &e),
        }
    };
}

impl Ctx {
    async fn facts(&self, campaign: Option<&str>) -> Result<ReportFacts, Response> {
        self.state
            .store
            .report_facts(&ReportQuery {
                campaign: campaign.map(str::to_owned),
                since: self.period.since,
                until: self.period.until,
            })
            .await
            .map_err(|e| crate::store_failed("The dashboard", &e))
    }

    fn page(&self, active: &str, title: &str, body: &str) -> Response {
        html::respond(StatusCode::OK, html::page(&self.base, active, title, body))
    }

    fn link(&self, path: &str, text: &str) -> String {
        format!(
            "<a href=\"{}{}?period={}\">{}</a>",
            esc(&self.base),
            esc(path),
            self.period.name,
            esc(text)
        )
    }
}

fn slug_path(slug: &str) -> String {
    url::form_urlencoded::byte_serialize(slug.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The rate cells of a report row: open, reply, positive reply, bounce, unsubscribe.
fn rate_cells(r: &ReportRow) -> Vec<String> {
    [
        "open",
        "click",
        "reply",
        "positive_reply",
        "bounce",
        "unsubscribe",
    ]
    .iter()
    .map(|k| rate(r.rates.get(k)))
    .collect()
}

const ROW_HEADERS: [&str; 11] = [
    "",
    "Leads",
    "Sent",
    "Open",
    "Click",
    "Reply",
    "Positive reply",
    "Bounce",
    "Unsubscribe",
    "Conversions",
    "Median h to reply",
];

fn report_table(report: &Report, first: &str, key_cell: impl Fn(&ReportRow) -> String) -> String {
    let mut headers = ROW_HEADERS;
    headers[0] = first;
    let mut rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| row_cells(r, key_cell(r)))
        .collect();
    if !report.rows.is_empty() {
        rows.push(row_cells(&report.total, "<b>Total</b>".into()));
    }
    html::table(&headers, &rows)
}

fn row_cells(r: &ReportRow, key: String) -> Vec<String> {
    let mut cells = vec![key, r.leads.to_string(), r.sent.to_string()];
    cells.extend(rate_cells(r));
    cells.push(r.conversions.to_string());
    cells.push(
        r.median_hours_to_reply
            .map_or_else(|| "–".into(), |h| format!("{h:.1}")),
    );
    cells
}

/// One entry per day from the first to the last day sent (missing days as zero sends), or
/// the days sent only when the span is longer than a year.
fn days(report: &Report) -> Vec<(String, Option<&ReportRow>)> {
    let by_key: BTreeMap<&str, &ReportRow> =
        report.rows.iter().map(|r| (r.key.as_str(), r)).collect();
    let parse = |k: &str| NaiveDate::parse_from_str(k, "%Y-%m-%d").ok();
    let (Some(first), Some(last)) = (
        report.rows.first().and_then(|r| parse(&r.key)),
        report.rows.last().and_then(|r| parse(&r.key)),
    ) else {
        return Vec::new();
    };
    if (last - first).num_days() > 366 {
        return report
            .rows
            .iter()
            .map(|r| (r.key.clone(), Some(r)))
            .collect();
    }
    first
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|d| {
            let key = d.format("%Y-%m-%d").to_string();
            let row = by_key.get(key.as_str()).copied();
            (key, row)
        })
        .collect()
}

fn daily_charts(by_day: &Report) -> String {
    let days = days(by_day);
    let labels: Vec<String> = days
        .iter()
        .map(|(k, _)| k.get(5..).unwrap_or(k).to_owned())
        .collect();
    let sends: Vec<(String, f64)> = days
        .iter()
        .map(|(k, r)| {
            (
                k.get(5..).unwrap_or(k).to_owned(),
                r.map_or(0.0, |r| r.sent as f64),
            )
        })
        .collect();
    let series = |name: &str, key: &str| Series {
        name: name.into(),
        values: days
            .iter()
            .map(|(_, r)| r.and_then(|r| r.rates.get(key)).map(|x| x.rate))
            .collect(),
        band: days
            .iter()
            .map(|(_, r)| r.and_then(|r| r.rates.get(key)).map(|x| (x.low, x.high)))
            .collect(),
    };
    format!(
        "<div class=\"grid2\"><div class=\"card\">{}</div><div class=\"card\">{}</div></div>",
        svg::bars("Messages sent per day (UTC)", &sends, svg::count),
        svg::lines(
            "Reply rates per day, with 95% intervals",
            &labels,
            &[
                series("reply", "reply"),
                series("positive reply", "positive_reply")
            ]
        )
    )
}

fn tiles(total: &ReportRow) -> String {
    let r = |k: &str| {
        total
            .rates
            .get(k)
            .map_or_else(|| "–".to_owned(), |x| svg::pct(x.rate))
    };
    let i = |k: &str| {
        total.rates.get(k).map_or_else(String::new, |x| {
            format!("95% [{:.1}–{:.1}]", x.low * 100.0, x.high * 100.0)
        })
    };
    let mut out = String::from("<div class=\"tiles\">");
    out.push_str(&tile("Leads reached", &total.leads.to_string(), ""));
    out.push_str(&tile(
        "Messages sent",
        &total.sent.to_string(),
        &format!("{} delivered", total.delivered),
    ));
    out.push_str(&tile("Reply rate", &r("reply"), &i("reply")));
    out.push_str(&tile(
        "Positive replies",
        &total.positive_replies.to_string(),
        &format!("{} {}", r("positive_reply"), i("positive_reply")),
    ));
    out.push_str(&tile(
        "Bounce rate",
        &r("bounce"),
        &format!("{} hard bounces", total.bounced),
    ));
    out.push_str(&tile(
        "Unsubscribes",
        &total.unsubscribed.to_string(),
        &format!("{} · {} complaints", r("unsubscribe"), total.complaints),
    ));
    out.push_str(&tile(
        "Conversions",
        &total.conversions.to_string(),
        &if total.conversion_value > 0.0 {
            format!("value {:.2}", total.conversion_value)
        } else {
            String::new()
        },
    ));
    out.push_str("</div>");
    out
}

fn funnel_chart(report: &Report) -> String {
    let items: Vec<(String, f64, String)> = report
        .funnel
        .iter()
        .map(|s| {
            (
                s.stage.to_owned(),
                s.leads as f64,
                format!("{} leads ({:.1}%)", s.leads, s.share * 100.0),
            )
        })
        .collect();
    svg::hbars("Lead funnel", &items)
}

/// `GET /dashboard`
pub(crate) async fn overview(
    State(state): State<ServerState>,
    headers: HeaderMap,
    uri: OriginalUri,
) -> Response {
    let c = ctx!(state, headers, uri);
    let facts = match c.facts(None).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let by_campaign = build(&facts, Dimension::Campaign, CONFIDENCE);
    let by_day = build(&facts, Dimension::Day, CONFIDENCE);
    let by_channel = build(&facts, Dimension::Channel, CONFIDENCE);
    let mut body = c.period.picker(&c.base);
    body.push_str(&tiles(&by_campaign.total));
    let _ = write!(
        body,
        "<div class=\"grid2\"><div class=\"card\">{}</div><div class=\"card\">{}</div></div>",
        funnel_chart(&by_campaign),
        svg::bars(
            "Messages sent by channel",
            &by_channel
                .rows
                .iter()
                .map(|r| (r.key.clone(), r.sent as f64))
                .collect::<Vec<_>>(),
            svg::count
        )
    );
    body.push_str(&daily_charts(&by_day));
    body.push_str("<h2>Campaigns</h2>");
    body.push_str(&report_table(&by_campaign, "Campaign", |r| {
        c.link(&format!("/campaigns/{}", slug_path(&r.key)), &r.key)
    }));
    body.push_str("<h2>Channels</h2>");
    body.push_str(&report_table(&by_channel, "Channel", |r| esc(&r.key)));
    for (dimension, title, first) in [
        (Dimension::Country, "Countries", "Country"),
        (Dimension::Industry, "Industries", "Industry"),
    ] {
        let mut report = build(&facts, dimension, CONFIDENCE);
        let more = report.rows.len().saturating_sub(10);
        report.rows.truncate(10);
        let _ = write!(body, "<h2>{title} (largest 10)</h2>");
        body.push_str(&report_table(&report, first, |r| esc(&r.key)));
        if more > 0 {
            let _ = write!(body, "<p class=\"muted\">{more} more in <code>engager report --by {dimension}</code>.</p>");
        }
    }
    let _ = write!(
        body,
        "<p class=\"muted\">Rates are per message sent, with Wilson {:.0}% intervals; the same figures as <code>engager report</code>.</p>",
        CONFIDENCE * 100.0
    );
    c.page("", "Overview", &body)
}

/// `GET /dashboard/campaigns`
pub(crate) async fn campaigns(
    State(state): State<ServerState>,
    headers: HeaderMap,
    uri: OriginalUri,
) -> Response {
    let c = ctx!(state, headers, uri);
    let known = store!(c.state.store.campaigns());
    let facts = match c.facts(None).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let report = build(&facts, Dimension::Campaign, CONFIDENCE);
    let rows: Vec<Vec<String>> = known
        .iter()
        .map(|k| {
            let row = report.rows.iter().find(|r| r.key == k.slug);
            vec![
                c.link(&format!("/campaigns/{}", slug_path(&k.slug)), &k.slug),
                esc(&k.name),
                row.map_or(0, |r| r.sent).to_string(),
                rate(row.and_then(|r| r.rates.get("reply"))),
                rate(row.and_then(|r| r.rates.get("positive_reply"))),
            ]
        })
        .collect();
    let mut body = c.period.picker(&format!("{}/campaigns", c.base));
    body.push_str(&html::table(
        &["Campaign", "Name", "Sent", "Reply", "Positive reply"],
        &rows,
    ));
    c.page("/campaigns", "Campaigns", &body)
}

/// An experiment's verdict as a sentence.
fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::NeedsMoreData { variant, missing } => {
            format!("needs more data: variant {variant} needs {missing} more sends")
        }
        Verdict::Winner { variant } => format!("variant {variant} wins"),
        Verdict::ControlHolds => "the control holds".to_owned(),
        Verdict::NoDifference => "no significant difference".to_owned(),
    }
}

fn verdict_class(v: &Verdict) -> &'static str {
    match v {
        Verdict::Winner { .. } => "ok",
        Verdict::NeedsMoreData { .. } => "muted",
        _ => "warn",
    }
}

/// One experiment judged as `engager ab results` judges it (positive replies, all time).
struct Judged {
    campaign: String,
    step: usize,
    step_name: String,
    experiment: String,
    subjects: Vec<Option<String>>,
    verdict: Verdict,
    results: Vec<VariantResult>,
}

/// Every experiment of `only` (or of every campaign), judged on the all-time variant report.
async fn judged(
    state: &ServerState,
    only: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(Vec<Judged>, Option<String>), Response> {
    let catalog = match Catalog::load(state.store.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            return Ok((
                Vec::new(),
                Some(format!(
                    "The campaign definitions could not be read, so experiments are not shown: {e}"
                )),
            ));
        }
    };
    let facts = state
        .store
        .report_facts(&ReportQuery {
            campaign: only.map(str::to_owned),
            since: DateTime::<Utc>::UNIX_EPOCH,
            until: now,
        })
        .await
        .map_err(|e| crate::store_failed("The dashboard", &e))?;
    let report = build(&facts, Dimension::Variant, CONFIDENCE);
    let rules = ExperimentRules {
        confidence: CONFIDENCE,
        ..ExperimentRules::default()
    };
    let mut out = Vec::new();
    for campaign in catalog.all() {
        if only.is_some_and(|s| s != campaign.slug) {
            continue;
        }
        for step in campaign.steps.iter().filter(|s| !s.variants.is_empty()) {
            let counts: Vec<VariantCounts> = step
                .variants
                .iter()
                .map(|v| {
                    let key = format!("{} #{} {}", campaign.slug, step.index + 1, v.name);
                    let row = report.rows.iter().find(|r| r.key == key);
                    VariantCounts {
                        name: v.name.clone(),
                        delivered: row.map_or(0, |r| r.sent),
                        wins: row.map_or(0, |r| r.positive_replies),
                        unsubscribes: row.map_or(0, |r| r.unsubscribed),
                        complaints: row.map_or(0, |r| r.complaints),
                    }
                })
                .collect();
            let (verdict, results) = judge(&counts, &rules);
            out.push(Judged {
                campaign: campaign.slug.clone(),
                step: step.index + 1,
                step_name: step.name.clone(),
                experiment: step.experiment(&campaign.slug),
                subjects: step
                    .variants
                    .iter()
                    .map(|v| v.template.subject.clone())
                    .collect(),
                verdict,
                results,
            });
        }
    }
    Ok((out, None))
}

fn variants_table(j: &Judged) -> String {
    let rows: Vec<Vec<String>> = j
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                format!(
                    "{}{}",
                    esc(&r.counts.name),
                    if i == 0 {
                        " <span class=\"muted\">(control)</span>"
                    } else {
                        ""
                    }
                ),
                format!(
                    "<span class=\"l\">{}</span>",
                    esc(j
                        .subjects
                        .get(i)
                        .cloned()
                        .flatten()
                        .as_deref()
                        .unwrap_or("–"))
                ),
                r.counts.delivered.to_string(),
                r.counts.wins.to_string(),
                match (r.rate, r.interval) {
                    (Some(x), Some(iv)) => format!(
                        "{:.1}% <span class=\"muted\">[{:.1}–{:.1}]</span>",
                        x * 100.0,
                        iv.low * 100.0,
                        iv.high * 100.0
                    ),
                    _ => "–".into(),
                },
                r.versus_control.map_or_else(
                    || "–".into(),
                    |t| format!("{:+.1} pts (p = {:.3})", t.difference * 100.0, t.p_value),
                ),
                r.counts.unsubscribes.to_string(),
                r.counts.complaints.to_string(),
                if r.guardrail_breaches.is_empty() {
                    "<span class=\"ok\">ok</span>".into()
                } else {
                    format!(
                        "<span class=\"bad\">{}</span>",
                        esc(&r.guardrail_breaches.join("; "))
                    )
                },
            ]
        })
        .collect();
    html::table(
        &[
            "Variant",
            "Subject",
            "Sent",
            "Positive replies",
            "Rate [95%]",
            "vs control",
            "Unsubscribes",
            "Complaints",
            "Guardrails",
        ],
        &rows,
    )
}

fn experiment_block(c: &Ctx, j: &Judged, link: bool) -> String {
    let title = format!("Experiment {} ({})", j.experiment, j.step_name);
    let heading = if link {
        c.link(
            &format!("/experiments/{}/{}", slug_path(&j.campaign), j.step),
            &title,
        )
    } else {
        // The experiment's own page: its title is the page's.
        String::new()
    };
    let heading = if heading.is_empty() {
        heading
    } else {
        format!("<h2>{heading}</h2>")
    };
    let estimates: Vec<Estimate> = j
        .results
        .iter()
        .map(|r| Estimate {
            label: r.counts.name.clone(),
            rate: r.rate,
            interval: r.interval.map(|i| (i.low, i.high)),
        })
        .collect();
    let control = j
        .results
        .first()
        .and_then(|r| r.rate)
        .map(|x| vec![("control".to_owned(), x)])
        .unwrap_or_default();
    format!(
        "{heading}<p>Verdict: <span class=\"{}\">{}</span> <span class=\"muted\">(judged on positive replies over all time, minimum {} sends per variant, as <code>engager ab results</code>)</span></p>{}<div class=\"card\">{}</div>",
        verdict_class(&j.verdict),
        esc(&verdict_text(&j.verdict)),
        ExperimentRules::default().min_sample,
        variants_table(j),
        svg::estimates("Positive reply rate by variant, with 95% intervals", &estimates, &control)
    )
}

/// `GET /dashboard/campaigns/{slug}`
pub(crate) async fn campaign(
    State(state): State<ServerState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    uri: OriginalUri,
) -> Response {
    let c = ctx!(state, headers, uri);
    let known = store!(c.state.store.campaigns());
    let Some(record) = known.iter().find(|k| k.slug == slug) else {
        return error_page(
            &c.state,
            StatusCode::NOT_FOUND,
            "Unknown campaign",
            &format!("There is no campaign {slug:?}."),
        );
    };
    let facts = match c.facts(Some(&slug)).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let by_step = build(&facts, Dimension::Step, CONFIDENCE);
    let by_channel = build(&facts, Dimension::Channel, CONFIDENCE);
    let by_variant = build(&facts, Dimension::Variant, CONFIDENCE);
    let by_day = build(&facts, Dimension::Day, CONFIDENCE);
    let (experiments, note) = match judged(&c.state, Some(&slug), c.now).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut body = format!("<p class=\"sub\">{}</p>", esc(&record.name));
    body.push_str(
        &c.period
            .picker(&format!("{}/campaigns/{}", c.base, slug_path(&slug))),
    );
    body.push_str(&tiles(&by_step.total));
    let _ = write!(
        body,
        "<div class=\"grid2\"><div class=\"card\">{}</div><div class=\"card\">{}</div></div>",
        funnel_chart(&by_step),
        svg::estimates(
            "Reply rate by step, with 95% intervals",
            &by_step
                .rows
                .iter()
                .map(|r| Estimate {
                    label: r.key.trim_start_matches(&slug).trim().to_owned(),
                    rate: r.rates.get("reply").map(|x| x.rate),
                    interval: r.rates.get("reply").map(|x| (x.low, x.high)),
                })
                .collect::<Vec<_>>(),
            &[],
        )
    );
    body.push_str(&daily_charts(&by_day));
    body.push_str("<h2>Steps</h2>");
    body.push_str(&report_table(&by_step, "Step", |r| esc(&r.key)));
    body.push_str("<h2>Channels</h2>");
    body.push_str(&report_table(&by_channel, "Channel", |r| esc(&r.key)));
    body.push_str("<h2>Variants in this period</h2>");
    body.push_str(&report_table(&by_variant, "Step and variant", |r| {
        esc(&r.key)
    }));
    if let Some(note) = note {
        let _ = write!(body, "<p class=\"note\">{}</p>", esc(&note));
    }
    for j in &experiments {
        body.push_str(&experiment_block(&c, j, true));
    }
    c.page("/campaigns", &format!("Campaign {slug}"), &body)
}

/// `GET /dashboard/experiments`
pub(crate) async fn experiments(
    State(state): State<ServerState>,
    headers: HeaderMap,
    uri: OriginalUri,
) -> Response {
    let c = ctx!(state, headers, uri);
    let (list, note) = match judged(&c.state, None, c.now).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut body = String::from("<p class=\"sub\">Every step that runs an A/B experiment, judged on positive replies over all time.</p>");
    if let Some(note) = note {
        let _ = write!(body, "<p class=\"note\">{}</p>", esc(&note));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|j| {
            vec![
                c.link(
                    &format!("/experiments/{}/{}", slug_path(&j.campaign), j.step),
                    &j.experiment,
                ),
                esc(&j.step_name),
                j.results.len().to_string(),
                j.results
                    .iter()
                    .map(|r| r.counts.delivered)
                    .sum::<u64>()
                    .to_string(),
                format!(
                    "<span class=\"{}\">{}</span>",
                    verdict_class(&j.verdict),
                    esc(&verdict_text(&j.verdict))
                ),
            ]
        })
        .collect();
    body.push_str(&html::table(
        &["Experiment", "Step", "Variants", "Sent", "Verdict"],
        &rows,
    ));
    c.page("/experiments", "Experiments", &body)
}

/// `GET /dashboard/experiments/{slug}/{step}`
pub(crate) async fn experiment(
    State(state): State<ServerState>,
    Path((slug, step)): Path<(String, String)>,
    headers: HeaderMap,
    uri: OriginalUri,
) -> Response {
    let c = ctx!(state, headers, uri);
    let (list, note) = match judged(&c.state, Some(&slug), c.now).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(j) = list.iter().find(|j| j.step.to_string() == step) else {
        let why = note
            .unwrap_or_else(|| format!("Step {step:?} of campaign {slug:?} runs no experiment."));
        return error_page(&c.state, StatusCode::NOT_FOUND, "Unknown experiment", &why);
    };
    let body = experiment_block(&c, j, false);
    c.page(
        "/experiments",
        &format!("Experiment {} ({})", j.experiment, j.step_name),
        &body,
    )
}

fn standing_class(s: &str) -> &'static str {
    match s {
        "healthy" => "ok",
        "warning" => "warn",
        "halted" => "bad",
        _ => "muted",
    }
}

/// `GET /dashboard/deliverability`
pub(crate) async fn deliverability(
    State(state): State<ServerState>,
    headers: HeaderMap,
    uri: OriginalUri,
) -> Response {
    let c = ctx!(state, headers, uri);
    let Some(config) = c.state.dashboard.clone() else {
        return super::disabled();
    };
    // Read-only: the monitor judges but neither halts nor alerts from here.
    let health = store!(monitor::check(
        c.state.store.as_ref(),
        &config.channels,
        &config.monitor,
        None,
        c.now,
        false
    ));
    let t = &config.monitor.thresholds;
    let levels = |l: &Levels| {
        format!(
            "<br><small class=\"muted\">warn {} · halt {}</small>",
            svg::pct(l.warn),
            svg::pct(l.halt)
        )
    };
    let mut body = format!(
        "<p class=\"sub\">Rolling window of {} days (or since the last resumption); rates are judged after {} sends. Monitor {}.</p>",
        config.monitor.window.num_days(),
        t.min_sample,
        if config.monitor.enabled { "enabled: it halts a channel above a halt level" } else { "<b>disabled</b>: figures only" }
    );
    let rows: Vec<Vec<String>> = health
        .iter()
        .map(|h| {
            let r = |n: u64| {
                Proportion::new(n, h.counts.sent)
                    .rate()
                    .map_or_else(|| "–".into(), svg::pct)
            };
            vec![
                esc(h.channel.as_str()),
                format!(
                    "<span class=\"{}\">{}</span>",
                    standing_class(h.assessment.standing.as_str()),
                    h.assessment.standing.as_str()
                ),
                html::time(h.since),
                h.counts.sent.to_string(),
                format!(
                    "{} ({}) {}",
                    r(h.counts.hard_bounces),
                    h.counts.hard_bounces,
                    levels(&t.hard_bounces)
                ),
                format!(
                    "{} ({}) {}",
                    r(h.counts.complaints),
                    h.counts.complaints,
                    levels(&t.complaints)
                ),
                format!(
                    "{} ({}) {}",
                    r(h.counts.unsubscribes),
                    h.counts.unsubscribes,
                    levels(&t.unsubscribes)
                ),
                r(h.counts.replies),
                format!("{:.0}%", h.assessment.rate_factor * 100.0),
            ]
        })
        .collect();
    body.push_str(&html::table(
        &[
            "Channel",
            "Standing",
            "Window from",
            "Sent",
            "Hard bounces",
            "Complaints",
            "Unsubscribes",
            "Replies",
            "Sending rate",
        ],
        &rows,
    ));
    let chart = |title: &str,
                 pick: fn(&engager_domain::deliverability::SendingCounts) -> u64,
                 l: &Levels| {
        let items: Vec<Estimate> = health
            .iter()
            .map(|h| {
                let p = Proportion::new(pick(&h.counts), h.counts.sent);
                Estimate {
                    label: h.channel.as_str().to_owned(),
                    rate: p.rate(),
                    interval: p.wilson(CONFIDENCE).map(|i| (i.low, i.high)),
                }
            })
            .collect();
        svg::estimates(
            title,
            &items,
            &[("warn".into(), l.warn), ("halt".into(), l.halt)],
        )
    };
    let _ = write!(
        body,
        "<h2>Rates against the levels</h2><div class=\"grid2\"><div class=\"card\">{}</div><div class=\"card\">{}</div><div class=\"card\">{}</div></div>",
        chart("Hard bounce rate", |c| c.hard_bounces, &t.hard_bounces),
        chart("Complaint rate", |c| c.complaints, &t.complaints),
        chart("Unsubscribe rate", |c| c.unsubscribes, &t.unsubscribes),
    );
    let findings: Vec<Vec<String>> = health
        .iter()
        .flat_map(|h| {
            h.assessment.findings.iter().map(move |f| {
                vec![
                    esc(h.channel.as_str()),
                    format!("<span class=\"l\">{}</span>", esc(&f.to_string())),
                ]
            })
        })
        .collect();
    body.push_str("<h2>Findings</h2>");
    body.push_str(&html::table(&["Channel", "Finding"], &findings));
    body.push_str("<h2>Halts</h2>");
    body.push_str(&halts_table(&store!(c.state.store.sending_halts())));
    // Accounts and sending domains the channels' rows do not already judge (several
    // accounts on a channel; a domain shared by some of them), read-only like the rows above.
    let senders = store!(monitor::check_senders(
        c.state.store.as_ref(),
        &config.accounts,
        config.sender_domain.as_deref(),
        &config.monitor,
        None,
        c.now,
        false
    ));
    if !senders.is_empty() {
        body.push_str("<h2>Per sending account and domain</h2>");
        body.push_str(&senders_table(&senders));
    }
    c.page("/deliverability", "Deliverability", &body)
}

/// One row per judged account or domain: its figures, verdict and halt, with the command
/// that lifts the halt.
fn senders_table(senders: &[monitor::SenderHealth]) -> String {
    let rows: Vec<Vec<String>> = senders
        .iter()
        .map(|h| {
            let r = |n: u64| {
                let rate = Proportion::new(n, h.counts.sent)
                    .rate()
                    .map_or_else(|| "–".into(), svg::pct);
                format!("{rate} ({n})")
            };
            let (kind, flag) = match h.kind {
                monitor::SenderKind::Account => ("account", "--account"),
                monitor::SenderKind::Domain => ("domain", "--domain"),
            };
            let halt = h.halt.as_ref().map_or_else(
                || "–".to_owned(),
                |x| {
                    format!(
                        "<span class=\"bad\">halted</span> {} <span class=\"l\">{}</span><br><small class=\"muted\">engager deliverability resume {flag} {}</small>",
                        html::time(x.changed_at),
                        esc(&x.reason),
                        esc(&h.name)
                    )
                },
            );
            vec![
                kind.to_owned(),
                esc(&h.name),
                esc(h.channel.as_str()),
                format!(
                    "<span class=\"{}\">{}</span>",
                    standing_class(h.assessment.standing.as_str()),
                    h.assessment.standing.as_str()
                ),
                html::time(h.since),
                h.counts.sent.to_string(),
                r(h.counts.hard_bounces),
                r(h.counts.complaints),
                r(h.counts.unsubscribes),
                halt,
            ]
        })
        .collect();
    html::table(
        &[
            "Kind",
            "Name",
            "Channel",
            "Standing",
            "Window from",
            "Sent",
            "Hard bounces",
            "Complaints",
            "Unsubscribes",
            "Halt",
        ],
        &rows,
    )
}

fn halts_table(halts: &[engager_store::SendingHalt]) -> String {
    let rows: Vec<Vec<String>> = halts
        .iter()
        .map(|h| {
            vec![
                esc(h.channel.as_str()),
                if h.halted {
                    "<span class=\"bad\">halted</span>".into()
                } else {
                    "<span class=\"ok\">resumed</span>".into()
                },
                format!("<span class=\"l\">{}</span>", esc(&h.reason)),
                esc(&h.changed_by),
                html::time(h.changed_at),
            ]
        })
        .collect();
    html::table(&["Channel", "State", "Reason or note", "By", "At"], &rows)
}

/// `GET /dashboard/compliance`
pub(crate) async fn compliance(
    State(state): State<ServerState>,
    headers: HeaderMap,
    uri: OriginalUri,
) -> Response {
    let c = ctx!(state, headers, uri);
    let facts = match c.facts(None).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let total = build(&facts, Dimension::Channel, CONFIDENCE);
    let suppressions = store!(c.state.store.suppression_list());
    let audit_since = c.period.since.max(c.now - Duration::days(90));
    let audit = store!(c.state.store.audit_log(audit_since));
    let halts = store!(c.state.store.sending_halts());
    let mut body = c.period.picker(&format!("{}/compliance", c.base));
    let added = suppressions
        .iter()
        .filter(|s| s.created_at >= c.period.since && s.created_at < c.period.until)
        .count();
    body.push_str("<div class=\"tiles\">");
    body.push_str(&tile(
        "Unsubscribes",
        &total.total.unsubscribed.to_string(),
        "of messages sent in the period",
    ));
    body.push_str(&tile(
        "Complaints",
        &total.total.complaints.to_string(),
        "of messages sent in the period",
    ));
    body.push_str(&tile(
        "Suppressed",
        &suppressions.len().to_string(),
        &format!("{added} added in the period"),
    ));
    body.push_str(&tile(
        "Channels halted",
        &halts.iter().filter(|h| h.halted).count().to_string(),
        "",
    ));
    body.push_str("</div>");
    let mut by_kind: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for s in &suppressions {
        let e = by_kind
            .entry((s.key.kind(), s.reason.as_str()))
            .or_default();
        e.0 += 1;
        if s.created_at >= c.period.since && s.created_at < c.period.until {
            e.1 += 1;
        }
    }
    let rows: Vec<Vec<String>> = by_kind
        .iter()
        .map(|((kind, reason), (all, recent))| {
            vec![esc(kind), esc(reason), all.to_string(), recent.to_string()]
        })
        .collect();
    body.push_str("<h2>Suppression list by kind and reason</h2>");
    body.push_str(&html::table(
        &["Kind", "Reason", "Entries", "Added in the period"],
        &rows,
    ));
    body.push_str("<h2>Opt-outs by channel</h2>");
    let rows: Vec<Vec<String>> = total
        .rows
        .iter()
        .map(|r| {
            vec![
                esc(&r.key),
                r.sent.to_string(),
                r.unsubscribed.to_string(),
                rate(r.rates.get("unsubscribe")),
                r.complaints.to_string(),
                rate(r.rates.get("complaint")),
            ]
        })
        .collect();
    body.push_str(&html::table(
        &[
            "Channel",
            "Sent",
            "Unsubscribes",
            "Unsubscribe rate",
            "Complaints",
            "Complaint rate",
        ],
        &rows,
    ));
    body.push_str("<h2>Compliance evidence</h2>");
    body.push_str(
        &super::compliance::evidence_section(c.state.store.as_ref(), c.period.since, c.now).await,
    );
    body.push_str("<h2>Halts</h2>");
    body.push_str(&halts_table(&halts));
    let _ = write!(
        body,
        "<h2>Audit log (latest 50 since {})</h2>",
        html::time(audit_since)
    );
    let rows: Vec<Vec<String>> = audit
        .iter()
        .rev()
        .take(50)
        .map(|e| {
            vec![
                html::time(e.at),
                esc(&e.action),
                esc(&e.subject),
                format!("<span class=\"l\">{}</span>", esc(&e.detail)),
                esc(&e.actor),
            ]
        })
        .collect();
    body.push_str(&html::table(
        &["At", "Action", "Subject", "Detail", "Actor"],
        &rows,
    ));
    c.page("/compliance", "Compliance", &body)
}

/// `GET /dashboard/health`
pub(crate) async fn health(
    State(state): State<ServerState>,
    headers: HeaderMap,
    uri: OriginalUri,
) -> Response {
    let c = ctx!(state, headers, uri);
    let ledger = store!(c.state.store.ledger_overview());
    let accounts = store!(c.state.store.account_states());
    let halts = store!(c.state.store.sending_halts());
    let mut body = String::from("<p class=\"sub\">The delivery ledger now (every process's work), the due queue and the sending accounts' circuits; the same figures as <code>/metrics</code>.</p>");
    let count = |ch: Option<Channel>, st: DeliveryState| -> u64 {
        ledger
            .iter()
            .filter(|r| ch.is_none_or(|c| r.channel == c) && r.state == st)
            .map(|r| r.count)
            .sum()
    };
    let _ = write!(
        body,
        "<div class=\"card\">{}</div>",
        svg::bars(
            "Deliveries in the ledger by state",
            &DeliveryState::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), count(None, *s) as f64))
                .collect::<Vec<_>>(),
            svg::count
        )
    );
    let mut headers_row = vec!["Channel"];
    headers_row.extend(DeliveryState::ALL.iter().map(|s| s.as_str()));
    headers_row.extend(["Due now", "Oldest due"]);
    let rows: Vec<Vec<String>> = Channel::ALL
        .iter()
        .map(|ch| {
            let mut row = vec![esc(ch.as_str())];
            row.extend(
                DeliveryState::ALL
                    .iter()
                    .map(|s| count(Some(*ch), *s).to_string()),
            );
            let (due, oldest) = crate::metrics::due_queue(&ledger, *ch, c.now);
            row.push(due.to_string());
            row.push(oldest.map_or_else(|| "–".into(), |t| age(c.now - t)));
            row
        })
        .collect();
    body.push_str("<h2>Ledger by channel and state</h2>");
    body.push_str(&html::table(&headers_row, &rows));
    body.push_str("<h2>Sending accounts (circuits)</h2>");
    let rows: Vec<Vec<String>> = accounts
        .iter()
        .map(|a| {
            let open = a.open_until.is_some_and(|u| u > c.now);
            vec![
                esc(&a.account),
                format!(
                    "<span class=\"{}\">{}</span>",
                    if open {
                        "bad"
                    } else if a.circuit == "closed" {
                        "ok"
                    } else {
                        "warn"
                    },
                    esc(&a.circuit)
                ),
                a.open_until.map_or_else(|| "–".into(), html::time),
                format!(
                    "<span class=\"l\">{}</span>",
                    esc(a.last_error.as_deref().unwrap_or("–"))
                ),
                html::time(a.updated_at),
            ]
        })
        .collect();
    body.push_str(&html::table(
        &["Account", "Circuit", "Open until", "Last error", "Changed"],
        &rows,
    ));
    body.push_str("<h2>Deliverability halts</h2>");
    body.push_str(&halts_table(&halts));
    c.page("/health", "Queue and channel health", &body)
}

fn age(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}
