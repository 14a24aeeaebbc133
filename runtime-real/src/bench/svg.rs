//! A small SVG line-chart writer for the bench reports: panels stacked vertically, each
//! with axes, ticks, a legend and one polyline per series. Plain text, no dependency;
//! a browser or any markdown viewer shows the file.

use std::fmt::Write as _;

/// Width of the image, px.
const WIDTH_PX: f64 = 760.0;
/// Height of one panel, px.
const PANEL_PX: f64 = 300.0;
/// Margins inside a panel: left, right, top, bottom, px.
const MARGIN_PX: (f64, f64, f64, f64) = (70.0, 20.0, 40.0, 50.0);
/// Colours of successive series.
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// One line of a panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points in data coordinates.
    pub points: Vec<(f64, f64)>,
    /// Dashed line (for a second broker's series of the same figure).
    pub dashed: bool,
}

/// How the x axis maps data to pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum XScale {
    /// Linear between the data's bounds.
    Linear,
    /// Percentiles in "nines": x ↦ −log10(1 − x/100), ticked at 50, 90, 99, 99.9, ….
    Nines,
}

/// One chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// Title above the chart.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// X mapping.
    pub x_scale: XScale,
    /// The lines.
    pub series: Vec<Series>,
}

/// Renders `panels` stacked into one SVG document.
pub fn render(panels: &[Panel]) -> String {
    let height = PANEL_PX * panels.len().max(1) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" viewBox="0 0 {WIDTH_PX} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, panel) in panels.iter().enumerate() {
        render_panel(&mut svg, panel, PANEL_PX * i as f64);
    }
    svg.push_str("</svg>\n");
    svg
}

fn x_value(scale: XScale, x: f64) -> f64 {
    match scale {
        XScale::Linear => x,
        XScale::Nines => -(1.0 - (x / 100.0).min(0.999_999_9)).log10(),
    }
}

fn render_panel(svg: &mut String, panel: &Panel, top: f64) {
    let (ml, mr, mt, mb) = MARGIN_PX;
    let (left, right) = (ml, WIDTH_PX - mr);
    let (y_top, y_bottom) = (top + mt, top + PANEL_PX - mb);
    let points = panel.series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in points {
        let x = x_value(panel.x_scale, x);
        if x.is_finite() && y.is_finite() {
            x_min = x_min.min(x);
            x_max = x_max.max(x);
            y_max = y_max.max(y);
        }
    }
    if !x_min.is_finite() {
        (x_min, x_max) = (0.0, 1.0);
    }
    if panel.x_scale == XScale::Nines {
        x_min = x_min.min(x_value(XScale::Nines, 50.0));
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let y_max = nice_ceiling(y_max);
    let px = |x: f64| left + (x - x_min) / (x_max - x_min) * (right - left);
    let py = |y: f64| y_bottom - y / y_max * (y_bottom - y_top);

    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        (left + right) / 2.0,
        top + 22.0,
        escape(&panel.title)
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{left}\" y=\"{y_top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>",
        right - left,
        y_bottom - y_top
    );
    // Y ticks: five steps.
    for step in 0..=5 {
        let y = y_max * f64::from(step) / 5.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{right}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{1}\" y=\"{2:.1}\" text-anchor=\"end\">{3}</text>",
            py(y),
            left - 6.0,
            py(y) + 4.0,
            format_tick(y)
        );
    }
    // X ticks.
    for (x, label) in x_ticks(panel.x_scale, x_min, x_max) {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{y_bottom}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#444\"/><text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\">{3}</text>",
            px(x),
            y_bottom + 5.0,
            y_bottom + 18.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        y_bottom + 38.0,
        escape(&panel.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
        (y_top + y_bottom) / 2.0,
        escape(&panel.y_label)
    );
    for (i, series) in panel.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut coords = String::new();
        for &(x, y) in &series.points {
            let x = x_value(panel.x_scale, x);
            if x.is_finite() && y.is_finite() {
                let _ = write!(coords, "{:.1},{:.1} ", px(x), py(y));
            }
        }
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash} points="{}"/>"#,
            coords.trim_end()
        );
        let legend_y = y_top + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{3}" y="{4}">{5}</text>"#,
            left + 10.0,
            legend_y,
            left + 34.0,
            left + 40.0,
            legend_y + 4.0,
            escape(&series.name)
        );
    }
}

/// Ticks of the x axis in transformed coordinates with their labels.
fn x_ticks(scale: XScale, x_min: f64, x_max: f64) -> Vec<(f64, String)> {
    match scale {
        XScale::Nines => ["50", "90", "99", "99.9", "99.99", "99.999"]
            .iter()
            .filter_map(|label| {
                let p: f64 = label.parse().ok()?;
                let x = x_value(scale, p);
                (x >= x_min - 1e-9 && x <= x_max + 1e-9).then(|| (x, format!("{label}%")))
            })
            .collect(),
        XScale::Linear => {
            let step = nice_ceiling((x_max - x_min) / 6.0);
            let mut ticks = Vec::new();
            let mut x = (x_min / step).ceil() * step;
            while x <= x_max + 1e-9 && ticks.len() < 20 {
                ticks.push((x, format_tick(x)));
                x += step;
            }
            ticks
        }
    }
}

/// The smallest 1, 2 or 5 × 10^k at or above `value` (1 for zero or less).
fn nice_ceiling(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    for factor in [1.0, 2.0, 5.0, 10.0] {
        if factor * magnitude >= value * (1.0 - 1e-12) {
            return factor * magnitude;
        }
    }
    10.0 * magnitude
}

fn format_tick(value: f64) -> String {
    if value == 0.0 || value.abs() >= 10.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// Text escaped for XML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_panels_with_lines_and_escaped_text() {
        let panels = [
            Panel {
                title: "latency <over> time & more".to_string(),
                x_label: "second".to_string(),
                y_label: "ms".to_string(),
                x_scale: XScale::Linear,
                series: vec![
                    Series {
                        name: "p99".to_string(),
                        points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, 1.5)],
                        dashed: false,
                    },
                    Series {
                        name: "peer p99".to_string(),
                        points: vec![(0.0, 3.0), (1.0, f64::NAN)],
                        dashed: true,
                    },
                ],
            },
            Panel {
                title: "distribution".to_string(),
                x_label: "percentile".to_string(),
                y_label: "ms".to_string(),
                x_scale: XScale::Nines,
                series: vec![Series {
                    name: "oxbow".to_string(),
                    points: vec![(50.0, 1.0), (99.0, 2.0), (99.9, 4.0)],
                    dashed: false,
                }],
            },
        ];
        let svg = render(&panels);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("latency &lt;over&gt; time &amp; more"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains(">99.9%<"));
        // The NaN point is left out, not written.
        assert!(!svg.contains("NaN"));
        // The panels stack: the image is two panels tall.
        assert!(svg.contains(&format!("height=\"{}\"", 2.0 * PANEL_PX)));
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(0.04), 0.05);
        assert_eq!(escape("a\"b"), "a&quot;b");
    }
}
