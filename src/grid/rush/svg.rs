//! The chart of a run, as a self-contained SVG.
//!
//! Two panels over one time axis (real seconds since the start of the run):
//!
//! 1. **Requests per second**, as a moving average: offered, accepted,
//!    refused and curtailed (accepted below the requested power).
//! 2. **Utilisation**: each substation's power over its limit as the
//!    balancer last sampled it, the whole grid's, and the offered load over
//!    the grid's capacity (dashed), in percent.
//!
//! [`Layout`] places everything: each legend sits to the right of its plot,
//! never over a line, and each time axis has ticks with labels below its
//! plot. The tests check those rectangles, so a change of sizes cannot make
//! the legend cover the data again.

use std::fmt::Write as _;

use super::report::{moving_average, Bucket, GridSample};

/// An axis-aligned rectangle, SVG user units (y grows downwards).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

impl Rect {
    /// Right edge.
    pub fn right(&self) -> f64 {
        self.x + self.w
    }

    /// Bottom edge.
    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }

    /// Whether the two share any interior point.
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.right() && o.x < self.right() && self.y < o.bottom() && o.y < self.bottom()
    }

    /// Whether `o` lies entirely inside.
    pub fn contains(&self, o: &Rect) -> bool {
        o.x >= self.x && o.y >= self.y && o.right() <= self.right() && o.bottom() <= self.bottom()
    }
}

/// Where each part of the chart goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// The whole picture.
    pub canvas: Rect,
    /// Plot area of the requests panel.
    pub requests: Rect,
    /// Its legend.
    pub requests_legend: Rect,
    /// Plot area of the utilisation panel.
    pub utilisation: Rect,
    /// Its legend.
    pub utilisation_legend: Rect,
}

const LEFT: f64 = 70.0;
const PLOT_W: f64 = 680.0;
const GAP: f64 = 20.0;
const LEGEND_W: f64 = 220.0;
const PANEL_H: f64 = 220.0;
const LINE_H: f64 = 18.0;
/// Room under a plot for tick labels and the axis title.
const AXIS_H: f64 = 50.0;

impl Layout {
    /// A layout for legends of `requests_entries` and `utilisation_entries`
    /// lines.
    pub fn new(requests_entries: usize, utilisation_entries: usize) -> Layout {
        let legend_h = |n: usize| 10.0 + LINE_H * n as f64;
        let legend_x = LEFT + PLOT_W + GAP;
        let requests = Rect {
            x: LEFT,
            y: 50.0,
            w: PLOT_W,
            h: PANEL_H,
        };
        let requests_legend = Rect {
            x: legend_x,
            y: requests.y,
            w: LEGEND_W,
            h: legend_h(requests_entries),
        };
        let top = requests.bottom().max(requests_legend.bottom()) + AXIS_H + 30.0;
        let utilisation = Rect {
            x: LEFT,
            y: top,
            w: PLOT_W,
            h: PANEL_H,
        };
        let utilisation_legend = Rect {
            x: legend_x,
            y: utilisation.y,
            w: LEGEND_W,
            h: legend_h(utilisation_entries),
        };
        let bottom = (utilisation.bottom() + AXIS_H).max(utilisation_legend.bottom()) + 10.0;
        Layout {
            canvas: Rect {
                x: 0.0,
                y: 0.0,
                w: legend_x + LEGEND_W + 10.0,
                h: bottom,
            },
            requests,
            requests_legend,
            utilisation,
            utilisation_legend,
        }
    }
}

/// Ticks from 0 to at least `max` at a round step (1, 2, 2.5 or 5 times a
/// power of ten), about `target` of them; the last tick is the axis top.
pub fn nice_ticks(max: f64, target: usize) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// What to draw.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    /// Title line.
    pub title: &'a str,
    /// Per-second request counts.
    pub series: &'a [Bucket],
    /// Polls of the balancer's `/status`.
    pub samples: &'a [GridSample],
    /// The grid's capacity, kW, for the offered-load line.
    pub capacity_kw: Option<f64>,
    /// Width of the moving average of the request rates, in buckets.
    pub smooth: usize,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

struct Line {
    label: String,
    color: &'static str,
    dash: bool,
    width: f64,
    points: Vec<(f64, f64)>,
}

/// Renders the chart.
pub fn render(c: &Chart<'_>) -> String {
    let bucket_s = match c.series {
        [a, b, ..] => b.t_s - a.t_s,
        _ => 1.0,
    };
    // Rates plotted at the middle of their bucket.
    let mid = |b: &Bucket| b.t_s + bucket_s / 2.0;
    let rate_line = |label: &str, color, f: fn(&Bucket) -> u32| {
        let raw: Vec<f64> = c
            .series
            .iter()
            .map(|b| f64::from(f(b)) / bucket_s)
            .collect();
        let smooth = moving_average(&raw, c.smooth.max(1));
        Line {
            label: label.to_string(),
            color,
            dash: false,
            width: 1.8,
            points: c.series.iter().map(mid).zip(smooth).collect(),
        }
    };
    let requests = vec![
        rate_line("offered", "#444444", |b| b.offered),
        rate_line("accepted", "#2ca02c", |b| b.accepted),
        rate_line("refused (503)", "#d62728", |b| b.refused),
        rate_line("curtailed", "#ff7f0e", |b| b.curtailed),
    ];

    let mut names: Vec<&String> = c
        .samples
        .iter()
        .flat_map(|s| s.substations.keys())
        .collect();
    names.sort();
    names.dedup();
    let mut utilisation: Vec<Line> = names
        .iter()
        .enumerate()
        .map(|(i, name)| Line {
            label: (*name).clone(),
            color: COLORS[i % COLORS.len()],
            dash: false,
            width: 1.5,
            points: c
                .samples
                .iter()
                .filter_map(|s| {
                    s.substations
                        .get(*name)
                        .and_then(|x| x.utilization())
                        .map(|u| (s.t_s, 100.0 * u))
                })
                .collect(),
        })
        .collect();
    utilisation.push(Line {
        label: "whole grid".into(),
        color: "#000000",
        dash: false,
        width: 2.5,
        points: c
            .samples
            .iter()
            .filter_map(|s| s.capacity_w().map(|cap| (s.t_s, 100.0 * s.power_w() / cap)))
            .collect(),
    });
    if let Some(cap) = c.capacity_kw.filter(|&k| k > 0.0) {
        let offered: Vec<f64> = c.series.iter().map(|b| b.offered_kw).collect();
        let smooth = moving_average(&offered, 20);
        utilisation.push(Line {
            label: "offered load (20 s avg)".into(),
            color: "#7f7f7f",
            dash: true,
            width: 2.0,
            points: c
                .series
                .iter()
                .map(mid)
                .zip(smooth.iter().map(|kw| 100.0 * kw / cap))
                .collect(),
        });
    }

    let layout = Layout::new(requests.len(), utilisation.len());
    let t_max = c
        .series
        .last()
        .map(|b| b.t_s + bucket_s)
        .into_iter()
        .chain(c.samples.last().map(|s| s.t_s))
        .fold(1.0, f64::max);
    let x_ticks = nice_ticks(t_max, 10);
    let x_top = x_ticks.last().copied().unwrap_or(t_max);

    let mut out = String::new();
    let (w, h) = (layout.canvas.w, layout.canvas.h);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        layout.requests.x + layout.requests.w / 2.0,
        xml_escape(c.title)
    );
    let rate_max = requests
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    panel(
        &mut out,
        layout.requests,
        layout.requests_legend,
        "requests per second",
        &format!("{}-s moving average", c.smooth.max(1)),
        &requests,
        (&x_ticks, x_top),
        &nice_ticks(rate_max, 5),
        "",
    );
    let util_max = utilisation
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(100.0, f64::max);
    panel(
        &mut out,
        layout.utilisation,
        layout.utilisation_legend,
        "utilisation (power / limit)",
        "substations as the balancer sampled them",
        &utilisation,
        (&x_ticks, x_top),
        &nice_ticks(util_max, 5),
        "%",
    );
    out.push_str("</svg>\n");
    out
}

#[allow(clippy::too_many_arguments)]
fn panel(
    out: &mut String,
    r: Rect,
    legend: Rect,
    title: &str,
    subtitle: &str,
    lines: &[Line],
    (x_ticks, x_top): (&[f64], f64),
    y_ticks: &[f64],
    y_unit: &str,
) {
    let y_top = y_ticks.last().copied().unwrap_or(1.0).max(1e-9);
    let x = |t: f64| r.x + r.w * t / x_top;
    let y = |v: f64| r.bottom() - r.h * v.clamp(0.0, y_top) / y_top;
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text><text x="{:.1}" y="{:.1}" fill="#666" text-anchor="end">{}</text>"##,
        r.x,
        r.y - 8.0,
        xml_escape(title),
        r.right(),
        r.y - 8.0,
        xml_escape(subtitle)
    );
    for &v in y_ticks {
        let yv = y(v);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" stroke=\"#e5e5e5\"/><text class=\"tick-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}{y_unit}</text>",
            r.x,
            r.right(),
            r.x - 6.0,
            yv + 4.0,
            fmt_tick(v),
        );
    }
    for &t in x_ticks {
        let xt = x(t);
        let _ = writeln!(
            out,
            "<line class=\"tick\" x1=\"{xt:.1}\" x2=\"{xt:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/><text class=\"tick-label\" x=\"{xt:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            r.bottom(),
            r.bottom() + 5.0,
            r.bottom() + 18.0,
            fmt_tick(t)
        );
    }
    let _ = writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#333\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time (s)</text>",
        r.x,
        r.y,
        r.w,
        r.h,
        r.x + r.w / 2.0,
        r.bottom() + 36.0
    );
    for l in lines {
        let points: Vec<String> = l
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="{}"{} points="{}"/>"#,
            l.color,
            l.width,
            if l.dash {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            },
            points.join(" ")
        );
    }
    let _ = writeln!(
        out,
        "<g class=\"legend\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"white\" stroke=\"#ccc\"/>",
        legend.x, legend.y, legend.w, legend.h
    );
    for (i, l) in lines.iter().enumerate() {
        let ly = legend.y + 5.0 + LINE_H * (i as f64 + 0.5);
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{}" stroke-width="{}"{}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            legend.x + 8.0,
            legend.x + 32.0,
            l.color,
            l.width,
            if l.dash {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            },
            legend.x + 40.0,
            ly + 4.0,
            xml_escape(&l.label)
        );
    }
    out.push_str("</g>\n");
}

fn fmt_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::grid::rush::report::SubstationSample;

    fn data(substations: usize) -> (Vec<Bucket>, Vec<GridSample>) {
        let series = (0..120)
            .map(|i| Bucket {
                t_s: f64::from(i),
                offered: 6,
                accepted: 5,
                refused: 1,
                curtailed: 2,
                errors: 0,
                offered_kw: 2000.0,
            })
            .collect();
        let samples = (0..120)
            .map(|i| GridSample {
                t_s: f64::from(i),
                substations: (0..substations)
                    .map(|k| {
                        (
                            format!("substation{k}"),
                            SubstationSample {
                                healthy: true,
                                power_w: Some(1000.0 * f64::from(i)),
                                capacity_w: Some(300_000.0),
                                estimated_utilization: None,
                            },
                        )
                    })
                    .collect::<BTreeMap<_, _>>(),
            })
            .collect();
        (series, samples)
    }

    #[test]
    fn legends_lie_outside_the_plots_and_inside_the_canvas() {
        for n in [0, 4, 30] {
            let l = Layout::new(4, n + 2);
            for legend in [l.requests_legend, l.utilisation_legend] {
                for plot in [l.requests, l.utilisation] {
                    assert!(!legend.overlaps(&plot), "{legend:?} over {plot:?} ({n})");
                }
                assert!(l.canvas.contains(&legend), "{legend:?} off the canvas");
            }
            assert!(!l.requests.overlaps(&l.utilisation));
            // Room for the tick labels and the axis title under each plot.
            assert!(l.utilisation.y - l.requests.bottom() >= AXIS_H);
            assert!(l.canvas.bottom() - l.utilisation.bottom() >= AXIS_H);
        }
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(120.0, 10),
            [0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0]
        );
        assert_eq!(
            nice_ticks(95.0, 10),
            [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
        );
        assert_eq!(nice_ticks(7.3, 5), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(nice_ticks(100.0, 5), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(nice_ticks(0.0, 5).last(), Some(&1.0));
        for max in [0.3, 1.0, 13.0, 99.0, 123.5, 4000.0] {
            let t = nice_ticks(max, 5);
            assert!(t.len() >= 2 && t[0] == 0.0, "{max}: {t:?}");
            assert!(*t.last().unwrap() >= max, "{max}: {t:?}");
        }
    }

    #[test]
    fn the_chart_has_both_panels_ticks_and_legends() {
        let (series, samples) = data(4);
        let svg = render(&Chart {
            title: "rush <hour>",
            series: &series,
            samples: &samples,
            capacity_kw: Some(1200.0),
            smooth: 5,
        });
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("rush &lt;hour&gt;"));
        // Time ticks 0..120 every 20 s under both plots, labelled.
        assert_eq!(svg.matches("<line class=\"tick\"").count(), 2 * 7);
        assert!(svg.contains(">60</text>") && svg.contains(">120</text>"));
        assert_eq!(svg.matches(">time (s)</text>").count(), 2);
        assert_eq!(svg.matches("<g class=\"legend\">").count(), 2);
        for label in [
            "offered",
            "accepted",
            "refused (503)",
            "curtailed",
            "substation3",
            "whole grid",
            "offered load (20 s avg)",
        ] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
        // 4 rates, 4 substations, the grid, the offered load.
        assert_eq!(svg.matches("<polyline").count(), 10);
        // Offered 2000 kW of 1200 kW capacity: the axis reaches past 166%.
        assert!(
            svg.contains(">180%</text>") || svg.contains(">200%</text>"),
            "{svg}"
        );
        // Every legend entry's text starts right of every plot.
        let l = Layout::new(4, 6);
        assert!(l.requests_legend.x > l.requests.right());
    }

    #[test]
    fn an_empty_run_still_renders() {
        let svg = render(&Chart {
            title: "nothing",
            series: &[],
            samples: &[],
            capacity_kw: None,
            smooth: 5,
        });
        assert!(svg.contains("</svg>") && svg.contains("class=\"tick\""));
        assert!(!svg.contains("NaN"));
    }
}
