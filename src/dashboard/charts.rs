//! Charts drawn as SVG by the server: no script, nothing to download, and every number the chart
//! shows is also on its element (`data-series`, `data-key`, `data-value`, and a `<title>` that a
//! pointer or a screen reader gets), so a test or a person can read it back.

use std::fmt::Write;

use super::html::esc;
use crate::domain::report::grouped;

/// A named series of values, one per key, drawn in a fixed colour class.
pub struct Series<'a> {
    pub name: &'a str,
    pub label: &'a str,
    pub values: Vec<i64>,
}

const W: f64 = 760.0;
const H: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// A round upper bound for the axis: 1, 2 or 5 times a power of ten.
fn nice_max(max: i64) -> i64 {
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m) >= max.max(1) {
                return step.saturating_mul(m);
            }
        }
        step = step.saturating_mul(10);
    }
}

fn legend(series: &[Series<'_>]) -> String {
    let mut out = String::from("<ul class=\"legend\">");
    for s in series {
        let _ = write!(out, "<li><span class=\"swatch s-{}\"></span>{}</li>", esc(s.name), esc(s.label));
    }
    out.push_str("</ul>");
    out
}

/// Lines over `keys` (days, oldest first), labelled every few keys with `label(key)`.
pub fn lines(class: &str, title: &str, keys: &[String], series: &[Series<'_>]) -> String {
    let max = nice_max(series.iter().flat_map(|s| s.values.iter().copied()).max().unwrap_or(0));
    let n = keys.len().max(2) as f64;
    let x = |i: usize| LEFT + (W - LEFT - RIGHT) * i as f64 / (n - 1.0);
    let y = |v: i64| TOP + (H - TOP - BOTTOM) * (1.0 - v as f64 / max as f64);
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption><svg class=\"{class}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" data-max=\"{max}\">",
        esc(title),
        esc(title)
    );
    for t in 0..=4 {
        let v = max * t / 4;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            grouped(i128::from(v)),
            y = y(v)
        );
    }
    let every = (keys.len() / 6).max(1);
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let short = k.get(5..).unwrap_or(k);
        let _ = write!(svg, "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>", x(i), H - 8.0, esc(short));
    }
    for s in series {
        let points: Vec<String> = s.values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
        let _ = write!(svg, "<polyline class=\"line s-{}\" points=\"{}\"/>", esc(s.name), points.join(" "));
        for (i, v) in s.values.iter().enumerate() {
            let key = keys.get(i).map_or("", String::as_str);
            let _ = write!(
                svg,
                "<circle class=\"dot s-{name}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" data-series=\"{name}\" data-key=\"{key}\" data-value=\"{v}\"><title>{key}: {label} {}</title></circle>",
                x(i),
                y(*v),
                grouped(i128::from(*v)),
                name = esc(s.name),
                key = esc(key),
                label = esc(s.label),
            );
        }
    }
    svg.push_str("</svg>");
    svg.push_str(&legend(series));
    svg.push_str("</figure>");
    svg
}

/// Horizontal bars: one group per key (an event, a company), one bar per series.
pub fn bars(class: &str, title: &str, keys: &[String], series: &[Series<'_>]) -> String {
    let max = nice_max(series.iter().flat_map(|s| s.values.iter().copied()).max().unwrap_or(0));
    let bar = 9.0;
    let group = bar * series.len() as f64 + 10.0;
    let height = TOP + group * keys.len().max(1) as f64 + BOTTOM;
    let label_w = 150.0;
    let width = |v: i64| (W - label_w - RIGHT - 70.0) * v as f64 / max as f64;
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption><svg class=\"{class}\" viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"{}\" data-max=\"{max}\">",
        esc(title),
        esc(title)
    );
    if keys.is_empty() {
        let _ = write!(svg, "<text class=\"axis\" x=\"{}\" y=\"{}\">nothing in this period</text>", label_w, TOP + 14.0);
    }
    for (g, key) in keys.iter().enumerate() {
        let top = TOP + group * g as f64;
        let shown: String = key.chars().take(22).collect();
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            top + group / 2.0,
            esc(if key.is_empty() { "(no event)" } else { &shown })
        );
        for (i, s) in series.iter().enumerate() {
            let v = s.values.get(g).copied().unwrap_or(0);
            let y = top + bar * i as f64;
            let _ = write!(
                svg,
                "<rect class=\"bar s-{name}\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{}\" data-series=\"{name}\" data-key=\"{k}\" data-value=\"{v}\"><title>{k}: {label} {}</title></rect>",
                width(v).max(if v > 0 { 1.0 } else { 0.0 }),
                bar - 1.0,
                grouped(i128::from(v)),
                name = esc(s.name),
                k = esc(key),
                label = esc(s.label),
            );
            if v > 0 {
                let _ = write!(svg, "<text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{}</text>", label_w + width(v) + 4.0, y + bar - 1.5, grouped(i128::from(v)));
            }
        }
    }
    svg.push_str("</svg>");
    svg.push_str(&legend(series));
    svg.push_str("</figure>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(130), 200);
        assert_eq!(nice_max(4_000), 5_000);
    }

    #[test]
    fn every_point_carries_its_number() {
        let keys = vec!["2026-12-01".to_owned(), "2026-12-02".to_owned()];
        let svg = lines("c", "t", &keys, &[Series { name: "issued", label: "Issued", values: vec![5, 1200] }]);
        assert!(svg.contains(r#"data-series="issued" data-key="2026-12-02" data-value="1200""#), "{svg}");
        assert!(svg.contains("2026-12-02: Issued 1,200"));
    }
}
