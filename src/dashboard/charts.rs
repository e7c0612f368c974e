//! Charts drawn as SVG by the server: no script, nothing to download, and every number the chart
//! shows is also on its element (`data-series`, `data-key`, `data-value`, and a `<title>` that a
//! pointer or a screen reader gets), so a test or a person can read it back.

use super::html::{Markup, html};
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

fn legend(series: &[Series<'_>]) -> Markup {
    html! { ul class="legend" { @for s in series { li { span class={ "swatch s-" (s.name) } {} (s.label) } } } }
}

/// A coordinate with one decimal.
fn at(v: f64) -> String {
    format!("{v:.1}")
}

/// The frame of a chart: its caption, the SVG drawing (`height` tall) and the legend.
fn figure(class: &str, title: &str, height: f64, max: i64, drawing: Markup, series: &[Series<'_>]) -> Markup {
    html! {
        figure class="chart" {
            figcaption { (title) }
            svg class=(class) viewBox={ "0 0 " (W) " " (height) } role="img" aria-label=(title) data-max=(max) { (drawing) }
            (legend(series))
        }
    }
}

/// Lines over `keys` (days, oldest first), labelled every few keys with `label(key)`.
pub fn lines(class: &str, title: &str, keys: &[String], series: &[Series<'_>]) -> Markup {
    let max = nice_max(series.iter().flat_map(|s| s.values.iter().copied()).max().unwrap_or(0));
    let n = keys.len().max(2) as f64;
    let x = |i: usize| LEFT + (W - LEFT - RIGHT) * i as f64 / (n - 1.0);
    let y = |v: i64| TOP + (H - TOP - BOTTOM) * (1.0 - v as f64 / max as f64);
    let every = (keys.len() / 6).max(1);
    let drawing = html! {
        @for t in 0..=4 {
            @let v = max * t / 4;
            line class="grid" x1=(LEFT) x2=(W - RIGHT) y1=(at(y(v))) y2=(at(y(v))) {}
            text class="axis" x=(LEFT - 6.0) y=(at(y(v) + 4.0)) text-anchor="end" { (grouped(i128::from(v))) }
        }
        @for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % every == 0) {
            text class="axis" x=(at(x(i))) y=(H - 8.0) text-anchor="middle" { (k.get(5..).unwrap_or(k)) }
        }
        @for s in series {
            polyline class={ "line s-" (s.name) } points=(s.values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect::<Vec<_>>().join(" ")) {}
            @for (i, v) in s.values.iter().enumerate() {
                @let key = keys.get(i).map_or("", String::as_str);
                circle class={ "dot s-" (s.name) } cx=(at(x(i))) cy=(at(y(*v))) r="2.5" data-series=(s.name) data-key=(key) data-value=(v) {
                    title { (key) ": " (s.label) " " (grouped(i128::from(*v))) }
                }
            }
        }
    };
    figure(class, title, H, max, drawing, series)
}

/// Horizontal bars: one group per key (an event, a company), one bar per series.
pub fn bars(class: &str, title: &str, keys: &[String], series: &[Series<'_>]) -> Markup {
    let max = nice_max(series.iter().flat_map(|s| s.values.iter().copied()).max().unwrap_or(0));
    let bar = 9.0;
    let group = bar * series.len() as f64 + 10.0;
    let height = TOP + group * keys.len().max(1) as f64 + BOTTOM;
    let label_w = 150.0;
    let width = |v: i64| (W - label_w - RIGHT - 70.0) * v as f64 / max as f64;
    let drawing = html! {
        @if keys.is_empty() {
            text class="axis" x=(label_w) y=(TOP + 14.0) { "nothing in this period" }
        }
        @for (g, key) in keys.iter().enumerate() {
            @let top = TOP + group * g as f64;
            @let shown: String = key.chars().take(22).collect();
            text class="axis" x=(label_w - 8.0) y=(at(top + group / 2.0)) text-anchor="end" { (if key.is_empty() { "(no event)" } else { &shown }) }
            @for (i, s) in series.iter().enumerate() {
                @let v = s.values.get(g).copied().unwrap_or(0);
                @let y = top + bar * i as f64;
                rect class={ "bar s-" (s.name) } x=(label_w) y=(at(y)) width=(at(width(v).max(if v > 0 { 1.0 } else { 0.0 }))) height=(bar - 1.0)
                    data-series=(s.name) data-key=(key) data-value=(v) {
                    title { (key) ": " (s.label) " " (grouped(i128::from(v))) }
                }
                @if v > 0 {
                    text class="value" x=(at(label_w + width(v) + 4.0)) y=(at(y + bar - 1.5)) { (grouped(i128::from(v))) }
                }
            }
        }
    };
    figure(class, title, height, max, drawing, series)
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
        let svg = lines("c", "t", &keys, &[Series { name: "issued", label: "Issued", values: vec![5, 1200] }]).into_string();
        assert!(svg.contains(r#"data-series="issued" data-key="2026-12-02" data-value="1200""#), "{svg}");
        assert!(svg.contains("2026-12-02: Issued 1,200"));
    }
}
