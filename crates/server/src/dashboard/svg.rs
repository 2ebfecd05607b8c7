//! Server-side SVG charts: bars, horizontal bars, lines with interval bands and rates with
//! interval whiskers against reference lines. Every text is escaped; no script, no external
//! resource. Sizes are in the viewBox, and the charts scale to the page's width.

use std::fmt::Write as _;

use crate::pages::escape;

const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 44.0;

/// Colours of series, in order.
pub(crate) const PALETTE: [&str; 6] = [
    "#2f6fdf", "#e07b24", "#2a9d63", "#b4427f", "#7a5cc9", "#8a8f98",
];

/// A percentage with one decimal (`0.1234` → `12.3%`).
pub(crate) fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// A percentage with as many decimals as an axis ending at `max` needs for distinct ticks.
fn pct_for(max: f64) -> fn(f64) -> String {
    if max < 0.004 {
        |v| format!("{:.3}%", v * 100.0)
    } else if max < 0.04 {
        |v| format!("{:.2}%", v * 100.0)
    } else {
        pct
    }
}

/// A count.
pub(crate) fn count(v: f64) -> String {
    format!("{}", v.round() as i64)
}

/// The top of an axis with four gridlines at or above `v`: four times a round step
/// (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k), so every gridline's label is round too.
fn nice_ceiling(v: f64) -> f64 {
    4.0 * nice_step(v / 4.0)
}

/// The smallest round step at or above `v`.
fn nice_step(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 0.25;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if step * magnitude >= v * 0.999_999 {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn open(out: &mut String, title: &str, height: f64) {
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {height}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title>{t}</title>\
         <text x=\"{LEFT}\" y=\"18\" class=\"ct\">{t}</text>",
        t = escape(title)
    );
}

/// The value axis (left) with four gridlines from 0 to `max`.
fn y_axis(out: &mut String, max: f64, fmt: fn(f64) -> String) {
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = TOP + (H - TOP - BOTTOM) * (1.0 - f64::from(i) / 4.0);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" class=\"yl\">{label}</text>",
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            label = escape(&fmt(v))
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{b}\" class=\"axis\"/>\
         <line x1=\"{LEFT}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\" class=\"axis\"/>",
        b = H - BOTTOM,
        r = W - RIGHT
    );
}

/// Category labels under the plot, thinned to at most about 12.
fn x_labels(out: &mut String, labels: &[String], x_of: impl Fn(usize) -> f64) {
    let every = labels.len().div_ceil(12).max(1);
    let shown = labels.len().div_ceil(every);
    // Long labels in narrow slots alternate between two rows so they do not overlap.
    let longest = labels
        .iter()
        .map(|l| l.chars().count().min(14))
        .max()
        .unwrap_or(0);
    let slot = (W - LEFT - RIGHT) / shown.max(1) as f64;
    let stagger = longest as f64 * 6.0 > slot;
    for (i, label) in labels.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let short: String = if label.chars().count() > 14 {
            label.chars().take(13).chain(std::iter::once('…')).collect()
        } else {
            label.clone()
        };
        let _ = write!(
            out,
            "<text x=\"{x:.1}\" y=\"{y}\" class=\"xl\">{t}</text>",
            x = x_of(i),
            y = H - BOTTOM
                + if stagger && (i / every) % 2 == 1 {
                    28.0
                } else {
                    16.0
                },
            t = escape(&short)
        );
    }
}

fn empty(title: &str) -> String {
    let mut out = String::new();
    open(&mut out, title, 80.0);
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"52\" class=\"none\">No data in this period.</text></svg>"
    );
    out
}

/// Vertical bars, one per item.
pub(crate) fn bars(title: &str, items: &[(String, f64)], fmt: fn(f64) -> String) -> String {
    if items.is_empty() {
        return empty(title);
    }
    let top = items.iter().map(|i| i.1).fold(0.0, f64::max);
    // Counts get whole-number gridlines.
    let max = 4.0 * nice_step(top / 4.0).max(1.0).ceil();
    let mut out = String::new();
    open(&mut out, title, H);
    y_axis(&mut out, max, fmt);
    let slot = (W - LEFT - RIGHT) / items.len() as f64;
    let width = (slot * 0.7).max(1.0);
    let plot_h = H - TOP - BOTTOM;
    for (i, (label, v)) in items.iter().enumerate() {
        let h = plot_h * (v / max).clamp(0.0, 1.0);
        let x = LEFT + slot * i as f64 + (slot - width) / 2.0;
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{h:.1}\" fill=\"{c}\"><title>{t}: {v}</title></rect>",
            y = H - BOTTOM - h,
            c = PALETTE[0],
            t = escape(label),
            v = escape(&fmt(*v))
        );
    }
    x_labels(
        &mut out,
        &items.iter().map(|i| i.0.clone()).collect::<Vec<_>>(),
        |i| LEFT + slot * (i as f64 + 0.5),
    );
    out.push_str("</svg>");
    out
}

/// Horizontal bars with their label and value text (a funnel).
pub(crate) fn hbars(title: &str, items: &[(String, f64, String)]) -> String {
    if items.is_empty() {
        return empty(title);
    }
    let row = 30.0;
    let height = TOP + row * items.len() as f64 + 10.0;
    let max = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1e-9);
    let label_w = 130.0;
    let plot_w = W - label_w - RIGHT - 150.0;
    let mut out = String::new();
    open(&mut out, title, height);
    for (i, (label, v, text)) in items.iter().enumerate() {
        let y = TOP + row * i as f64;
        let w = (plot_w * v / max).max(1.0);
        let _ = write!(
            out,
            "<text x=\"{lx}\" y=\"{ty:.1}\" class=\"yl\">{l}</text>\
             <rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{bh}\" fill=\"{c}\"/>\
             <text x=\"{vx:.1}\" y=\"{ty:.1}\" class=\"vl\">{t}</text>",
            lx = label_w - 8.0,
            ty = y + 15.0,
            l = escape(label),
            bh = row - 8.0,
            c = PALETTE[i % PALETTE.len()],
            vx = label_w + w + 6.0,
            t = escape(text)
        );
    }
    out.push_str("</svg>");
    out
}

/// One line of a line chart, with an optional interval band.
pub(crate) struct Series {
    /// The legend's name.
    pub name: String,
    /// One value per label (gaps allowed).
    pub values: Vec<Option<f64>>,
    /// The interval around each value.
    pub band: Vec<Option<(f64, f64)>>,
}

/// Lines over categories (days), each with its interval band, values as percentages.
pub(crate) fn lines(title: &str, labels: &[String], series: &[Series]) -> String {
    let top = series
        .iter()
        .flat_map(|s| {
            s.values
                .iter()
                .flatten()
                .copied()
                .chain(s.band.iter().flatten().map(|b| b.1))
        })
        .fold(0.0, f64::max);
    if labels.is_empty()
        || top <= 0.0 && series.iter().all(|s| s.values.iter().all(Option::is_none))
    {
        return empty(title);
    }
    let max = nice_ceiling(top.min(1.0)).min(1.0);
    let mut out = String::new();
    open(&mut out, title, H);
    y_axis(&mut out, max, pct);
    let n = labels.len();
    let step = if n > 1 {
        (W - LEFT - RIGHT - 20.0) / (n - 1) as f64
    } else {
        0.0
    };
    let x_of = |i: usize| LEFT + 10.0 + step * i as f64;
    let y_of = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v / max).clamp(0.0, 1.0));
    for (k, s) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        // The band: upper edge left to right, lower edge back, per run of known values.
        let mut runs: Vec<Vec<(usize, (f64, f64))>> = vec![Vec::new()];
        for (i, b) in s.band.iter().enumerate() {
            match b {
                Some(b) => runs.last_mut().into_iter().for_each(|r| r.push((i, *b))),
                None => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let mut points: Vec<String> = run
                .iter()
                .map(|(i, b)| format!("{:.1},{:.1}", x_of(*i), y_of(b.1)))
                .collect();
            points.extend(
                run.iter()
                    .rev()
                    .map(|(i, b)| format!("{:.1},{:.1}", x_of(*i), y_of(b.0))),
            );
            if run.len() == 1 {
                let (i, b) = run[0];
                let _ = write!(
                    out,
                    "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{a:.1}\" y2=\"{z:.1}\" stroke=\"{colour}\" stroke-opacity=\"0.35\" stroke-width=\"6\"/>",
                    x = x_of(i),
                    a = y_of(b.1),
                    z = y_of(b.0)
                );
            } else {
                let _ = write!(
                    out,
                    "<polygon points=\"{}\" fill=\"{colour}\" fill-opacity=\"0.15\"/>",
                    points.join(" ")
                );
            }
        }
        let mut path = String::new();
        let mut pen_down = false;
        for (i, v) in s.values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x_of(i),
                        y_of(*v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = write!(
            out,
            "<path d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            path.trim_end()
        );
        for (i, v) in s.values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"><title>{} {}: {}</title></circle>",
                    x_of(i),
                    y_of(*v),
                    escape(&s.name),
                    escape(&labels[i]),
                    pct(*v)
                );
            }
        }
        let lx = LEFT + 230.0 * k as f64;
        let _ = write!(
            out,
            "<rect x=\"{lx:.1}\" y=\"{ry}\" width=\"12\" height=\"4\" fill=\"{colour}\"/>\
             <text x=\"{tx:.1}\" y=\"{ty}\" class=\"lg\">{name} (shaded: 95% interval)</text>",
            ry = H - 12.0,
            ty = H - 6.0,
            tx = lx + 16.0,
            name = escape(&s.name)
        );
    }
    x_labels(&mut out, labels, x_of);
    out.push_str("</svg>");
    out
}

/// A rate with its interval.
pub(crate) struct Estimate {
    /// The label.
    pub label: String,
    /// The rate (None before any data).
    pub rate: Option<f64>,
    /// Its interval.
    pub interval: Option<(f64, f64)>,
}

/// Rates as dots with interval whiskers, one row each, against reference lines (the
/// control's rate, warn and halt levels).
pub(crate) fn estimates(title: &str, items: &[Estimate], references: &[(String, f64)]) -> String {
    if items.is_empty() {
        return empty(title);
    }
    let row = 28.0;
    let label_w = 150.0;
    let height = TOP + 18.0 + row * items.len() as f64 + 24.0;
    let top = items
        .iter()
        .flat_map(|e| e.rate.into_iter().chain(e.interval.map(|i| i.1)))
        .chain(references.iter().map(|r| r.1))
        .fold(0.0, f64::max);
    let max = nice_ceiling(top.clamp(0.001, 1.0)).min(1.0);
    let plot_w = W - label_w - RIGHT - 10.0;
    let x_of = |v: f64| label_w + plot_w * (v / max).clamp(0.0, 1.0);
    let bottom = TOP + 18.0 + row * items.len() as f64;
    let mut out = String::new();
    open(&mut out, title, height);
    let fmt = pct_for(max);
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{bottom}\" class=\"grid\"/>\
             <text x=\"{x:.1}\" y=\"{ty}\" class=\"xl\">{t}</text>",
            x = x_of(v),
            ty = bottom + 16.0,
            t = fmt(v)
        );
    }
    for (k, (name, v)) in references.iter().enumerate() {
        let colour = ["#8a8f98", "#d9a400", "#c0392b"][k % 3];
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{bottom}\" stroke=\"{colour}\" stroke-dasharray=\"4 3\" stroke-width=\"1.5\"/>\
             <text x=\"{x:.1}\" y=\"{ty}\" class=\"ref\" fill=\"{colour}\"{anchor}>{t}</text>",
            x = x_of(*v),
            anchor = if x_of(*v) > W - 90.0 { " text-anchor=\"end\"" } else { "" },
            ty = TOP + 10.0 + 10.0 * k as f64,
            t = escape(&format!("{name} {}", fmt(*v)))
        );
    }
    for (i, e) in items.iter().enumerate() {
        let y = TOP + 18.0 + row * i as f64 + row / 2.0;
        let _ = write!(
            out,
            "<text x=\"{lx}\" y=\"{ty:.1}\" class=\"yl\">{l}</text>",
            lx = label_w - 8.0,
            ty = y + 4.0,
            l = escape(&e.label)
        );
        if let Some((lo, hi)) = e.interval {
            let _ = write!(
                out,
                "<line x1=\"{a:.1}\" x2=\"{b:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{c}\" stroke-width=\"2\"/>\
                 <line x1=\"{a:.1}\" x2=\"{a:.1}\" y1=\"{y1:.1}\" y2=\"{y2:.1}\" stroke=\"{c}\" stroke-width=\"2\"/>\
                 <line x1=\"{b:.1}\" x2=\"{b:.1}\" y1=\"{y1:.1}\" y2=\"{y2:.1}\" stroke=\"{c}\" stroke-width=\"2\"/>",
                a = x_of(lo),
                b = x_of(hi),
                y1 = y - 5.0,
                y2 = y + 5.0,
                c = PALETTE[0]
            );
        }
        match e.rate {
            Some(r) => {
                let _ = write!(
                    out,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4.5\" fill=\"{c}\"><title>{l}: {t}</title></circle>",
                    x = x_of(r),
                    c = PALETTE[1],
                    l = escape(&e.label),
                    t = fmt(r)
                );
            }
            None => {
                let _ = write!(
                    out,
                    "<text x=\"{x}\" y=\"{ty:.1}\" class=\"none\">no sends</text>",
                    x = label_w + 4.0,
                    ty = y + 4.0
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 8.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(218.0), 240.0);
        assert!((nice_ceiling(0.031) - 0.032).abs() < 1e-12);
        assert!((nice_ceiling(0.22) - 0.24).abs() < 1e-12);
    }

    #[test]
    fn labels_are_escaped_and_bars_scale_to_the_axis() {
        let svg = bars(
            "Sends <per> day",
            &[("<script>".into(), 6.0), ("b".into(), 12.0)],
            count,
        );
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"));
        assert!(svg.contains("Sends &lt;per&gt; day"));
        // The larger bar fills the plot (axis max 12): height = H - TOP - BOTTOM.
        assert!(
            svg.contains(&format!("height=\"{:.1}\"", H - TOP - BOTTOM)),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("height=\"{:.1}\"", (H - TOP - BOTTOM) / 2.0)),
            "{svg}"
        );
    }
}
