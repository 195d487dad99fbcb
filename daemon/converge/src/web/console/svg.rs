//! The reports' charts: a metric's weekly values as bars, drawn on the
//! server as SVG (no script, no library), with the value on each bar so the
//! chart reads without hovering.

use maud::{Markup, html};

/// One week's bar: its label (the Monday, `11-02`), its value (hours or a
/// share from 0 to 1; `None` when the week has no sample) and samples.
pub struct Bar {
    pub label: String,
    pub value: Option<f64>,
    pub samples: i64,
}

/// How values read: hours (`12.5h`) or a percentage.
#[derive(Clone, Copy)]
pub enum Unit {
    Hours,
    Share,
}

impl Unit {
    pub fn text(self, value: f64) -> String {
        match self {
            Unit::Hours if value >= 100.0 => format!("{value:.0}h"),
            Unit::Hours => format!("{value:.1}h"),
            Unit::Share => format!("{:.0}%", value * 100.0),
        }
    }
}

const WIDTH: f64 = 420.0;
const HEIGHT: f64 = 150.0;
const TOP: f64 = 18.0;
const BOTTOM: f64 = 22.0;
const LEFT: f64 = 6.0;

/// A bar chart of `bars`, scaled to the largest value (a share to 100%).
pub fn bars(title: &str, bars: &[Bar], unit: Unit) -> Markup {
    let max = match unit {
        Unit::Share => 1.0,
        Unit::Hours => bars
            .iter()
            .filter_map(|b| b.value)
            .fold(0.0_f64, f64::max)
            .max(1.0),
    };
    let slot = (WIDTH - LEFT * 2.0) / bars.len().max(1) as f64;
    let bar_width = (slot * 0.7).min(48.0);
    let plot = HEIGHT - TOP - BOTTOM;
    let base = HEIGHT - BOTTOM;
    // Narrow slots label every other week, counting from the latest.
    let every = if slot < 36.0 { 2 } else { 1 };
    let labelled = |i: usize| (bars.len() - 1 - i).is_multiple_of(every);
    html! {
        svg.chart viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
            title { (title) }
            line x1=(LEFT) y1=(base) x2=(WIDTH - LEFT) y2=(base) class="axis" {}
            @for (i, bar) in bars.iter().enumerate() {
                @let x = LEFT + slot * i as f64 + (slot - bar_width) / 2.0;
                @let middle = x + bar_width / 2.0;
                @match bar.value {
                    Some(value) => {
                        @let height = (value / max * plot).max(1.0);
                        rect x=(fmt(x)) y=(fmt(base - height)) width=(fmt(bar_width)) height=(fmt(height)) class="bar" {
                            title { (bar.label) ": " (unit.text(value)) " (" (bar.samples) " samples)" }
                        }
                        text x=(fmt(middle)) y=(fmt(base - height - 4.0)) class="value" { (unit.text(value)) }
                    }
                    None => {
                        text x=(fmt(middle)) y=(fmt(base - 4.0)) class="none" { "–" }
                    }
                }
                @if labelled(i) {
                    text x=(fmt(middle)) y=(fmt(HEIGHT - 6.0)) class="label" { (bar.label) }
                }
            }
        }
    }
}

/// Coordinates with one decimal: small, stable output.
fn fmt(value: f64) -> String {
    format!("{value:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_show_each_value() {
        let chart = bars(
            "review_time",
            &[
                Bar {
                    label: "11-02".into(),
                    value: Some(10.0),
                    samples: 3,
                },
                Bar {
                    label: "11-09".into(),
                    value: None,
                    samples: 0,
                },
                Bar {
                    label: "11-16".into(),
                    value: Some(5.0),
                    samples: 1,
                },
            ],
            Unit::Hours,
        )
        .into_string();
        // The tallest bar fills the plot (150 - 18 - 22 = 110), the other half of it.
        assert!(chart.contains(r#"height="110.0""#), "{chart}");
        assert!(chart.contains(r#"height="55.0""#), "{chart}");
        assert!(
            chart.contains(">10.0h<") && chart.contains(">5.0h<"),
            "{chart}"
        );
        assert!(chart.contains(">–<"), "an empty week is marked: {chart}");
        assert!(chart.contains("11-02: 10.0h (3 samples)"), "{chart}");
    }

    #[test]
    fn shares_scale_to_one_hundred_percent() {
        let chart = bars(
            "rework_rate",
            &[Bar {
                label: "11-02".into(),
                value: Some(0.25),
                samples: 4,
            }],
            Unit::Share,
        )
        .into_string();
        assert!(chart.contains(r#"height="27.5""#), "{chart}");
        assert!(chart.contains(">25%<"), "{chart}");
    }

    #[test]
    fn titles_are_escaped() {
        let chart = bars("<script>", &[], Unit::Share).into_string();
        assert!(!chart.contains("<script>"), "{chart}");
    }
}
