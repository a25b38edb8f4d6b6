//! Plots for people and papers: curves as a self-contained SVG line plot with ticks, grid
//! lines, a legend naming each curve, a title, and a caption that can carry the run ids
//! behind the curves.
//!
//! The y axis is linear, or logarithmic where the values span more than two decades (a loss
//! that falls from 2.3 to 0.001 is a straight line on a log axis and a flat one on a linear
//! axis); [`YScale`] chooses either by hand. Ticks fall on round numbers: 1, 2 or 5 times a
//! power of ten on a linear axis, powers of ten on a log axis.

/// How the y axis is scaled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum YScale {
    /// Log where every value is positive and the largest is over 100 times the smallest.
    #[default]
    Auto,
    Linear,
    Log,
}

/// What a plot says besides its curves.
#[derive(Clone, Debug, Default)]
pub struct Labels<'a> {
    pub title: &'a str,
    pub x: &'a str,
    /// Under the plot, for a paper: the run ids behind the curves.
    pub caption: Option<&'a str>,
    pub y_scale: YScale,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];
/// The plot area's width and height, and the margins that hold the y tick labels (left)
/// and the title (top).
const W: f64 = 420.0;
const H: f64 = 220.0;
const LEFT: f64 = 58.0;
const TOP: f64 = 24.0;

/// Escape text for XML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Curves (name, [(x, y)]) as an SVG line plot on an automatic y scale: see [`plot`].
pub fn lines(
    series: &[(String, Vec<(f64, f64)>)],
    title: &str,
    x_label: &str,
    caption: Option<&str>,
) -> String {
    plot(
        series,
        &Labels {
            title,
            x: x_label,
            caption,
            y_scale: YScale::Auto,
        },
    )
}

/// Curves (name, [(x, y)]) as an SVG line plot. Points that are not finite (and, on a log
/// axis, values that are not positive) are left out of the line.
pub fn plot(series: &[(String, Vec<(f64, f64)>)], labels: &Labels) -> String {
    let finite = || {
        series
            .iter()
            .flat_map(|(_, p)| p.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (x0, x1) = span(finite().map(|p| p.0));
    let (y0, y1) = span(finite().map(|p| p.1));
    // A log axis needs a positive value to start from; without one the axis is linear.
    let smallest_positive = (finite().map(|p| p.1))
        .filter(|y| *y > 0.0)
        .fold(f64::INFINITY, f64::min);
    let log = smallest_positive.is_finite()
        && match labels.y_scale {
            YScale::Linear => false,
            YScale::Log => true,
            YScale::Auto => y0 > 0.0 && y1 / y0 > 100.0,
        };
    let x_axis = Axis::linear(x0, x1);
    let y_axis = if log {
        Axis::log(smallest_positive, y1)
    } else {
        Axis::linear(y0, y1)
    };
    let sx = |x: f64| LEFT + x_axis.fraction(x) * W;
    let sy = |y: f64| TOP + H - y_axis.fraction(y) * H;

    let legend_width = series
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0) as f64
        * 6.5
        + 30.0;
    let caption_height = if labels.caption.is_some() { 18.0 } else { 0.0 };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        LEFT + W + legend_width.max(60.0),
        TOP + H + 40.0 + caption_height
    );
    let scale_note = if log { " (log scale)" } else { "" };
    svg += &format!(
        r#"<text x="{LEFT}" y="14" font-weight="bold">{}{scale_note}</text>"#,
        escape(labels.title)
    );

    // Grid lines and tick labels.
    svg += &y_grid(&y_axis, LEFT, W, sy);
    for (tick, text) in x_axis.ticks() {
        let x = sx(tick);
        svg += &format!(
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#e4e4e4"/><text x="{x:.1}" y="{}" text-anchor="middle">{text}</text>"##,
            TOP + H,
            TOP + H + 14.0
        );
    }
    svg += &format!(
        r##"<rect x="{LEFT}" y="{TOP}" width="{W}" height="{H}" fill="none" stroke="#999"/>"##
    );
    svg += &format!(
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + W / 2.0,
        TOP + H + 30.0,
        escape(labels.x)
    );

    // Curves, and the legend naming each.
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log || *y > 0.0))
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        svg += &format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        let y = TOP + 10.0 + 15.0 * i as f64;
        svg += &format!(
            r#"<line x1="{}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/><text x="{}" y="{:.1}">{}</text>"#,
            LEFT + W + 8.0,
            LEFT + W + 22.0,
            y - 4.0,
            y - 4.0,
            LEFT + W + 26.0,
            y,
            escape(name)
        );
    }
    if let Some(caption) = labels.caption {
        svg += &format!(
            r#"<text x="{LEFT}" y="{}" font-size="10">{}</text>"#,
            TOP + H + 48.0,
            escape(caption)
        );
    }
    svg + "</svg>"
}

/// Horizontal grid lines across a plot from `left` to `left + width` at the ticks of
/// `axis`, each labelled on the left; `y` maps a value to its pixel row.
pub fn y_grid(axis: &Axis, left: f64, width: f64, y: impl Fn(f64) -> f64) -> String {
    axis.ticks()
        .into_iter()
        .map(|(tick, text)| {
            let y = y(tick);
            format!(
                r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{text}</text>"##,
                left + width,
                left - 4.0,
                y + 4.0
            )
        })
        .collect()
}

/// The smallest and largest of `values`, widened where they are equal or absent.
pub fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    match (lo.is_finite(), hi > lo) {
        (false, _) => (0.0, 1.0),
        (true, false) => (lo - 0.5, hi + 0.5),
        (true, true) => (lo, hi),
    }
}

/// An axis from `lo` to `hi`, widened to round numbers, with its ticks.
pub struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    step: f64,
}

impl Axis {
    /// A linear axis covering `lo..=hi`, its ends on ticks 1, 2 or 5 times a power of ten
    /// apart (about five ticks).
    pub fn linear(lo: f64, hi: f64) -> Axis {
        let step = nice_step((hi - lo) / 5.0);
        Axis {
            lo: (lo / step).floor() * step,
            hi: (hi / step).ceil() * step,
            log: false,
            step,
        }
    }

    /// A log axis covering `lo..=hi` (both positive), its ends on powers of ten.
    pub fn log(lo: f64, hi: f64) -> Axis {
        let (lo, hi) = (lo.log10().floor(), hi.log10().ceil());
        let decades = (hi - lo).max(1.0);
        // Every decade up to six, then every second or third; the top is a tick too.
        let step = (decades / 6.0).ceil();
        Axis {
            lo,
            hi: lo + step * (decades / step).ceil(),
            log: true,
            step,
        }
    }

    /// Where `v` sits along the axis, 0 at its start and 1 at its end.
    pub fn fraction(&self, v: f64) -> f64 {
        let v = if self.log { v.log10() } else { v };
        (v - self.lo) / (self.hi - self.lo)
    }

    /// The ticks (value, label) from the start of the axis to its end.
    pub fn ticks(&self) -> Vec<(f64, String)> {
        let n = ((self.hi - self.lo) / self.step).round() as i64;
        (0..=n)
            .map(|i| {
                let at = self.lo + i as f64 * self.step;
                if self.log {
                    (10f64.powf(at), power_of_ten(at.round() as i32))
                } else {
                    (at, tick_label(at, self.step))
                }
            })
            .collect()
    }
}

/// The round step (1, 2 or 5 times a power of ten) nearest above `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    let m = raw / power;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// A linear tick's label: as many decimals as the step needs, in powers of ten when the
/// numbers are very large or very small.
fn tick_label(v: f64, step: f64) -> String {
    if v.abs() < step * 1e-9 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let step_magnitude = step.log10().floor() as i32;
    if !(-4..6).contains(&magnitude) {
        // As many digits after the first as tell ticks one step apart: 1e6, 1.00005e6.
        let digits = (magnitude - step_magnitude).max(0) as usize;
        return format!("{v:.digits$e}");
    }
    let decimals = (-step_magnitude).max(0) as usize;
    format!("{v:.decimals$}")
}

/// 10^k as a person writes it: 0.01, 1, 100, or 1e-5 and 1e6 beyond.
fn power_of_ten(k: i32) -> String {
    match k {
        -3..=0 => format!("{:.*}", (-k) as usize, 10f64.powi(k)),
        1..=4 => format!("{}", 10i64.pow(k as u32)),
        _ => format!("1e{k}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_has_one_polyline_per_series_and_its_caption() {
        let series = vec![
            ("a<b".to_string(), vec![(0.0, 1.0), (1.0, 0.5)]),
            ("c".to_string(), vec![(0.0, f64::NAN), (1.0, 0.2)]),
        ];
        let svg = lines(&series, "loss", "step", Some("Runs: ab12, cd34"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(
            svg.contains("a&lt;b") && svg.contains("Runs: ab12, cd34") && svg.ends_with("</svg>")
        );
        assert!(!svg.contains("log scale"), "0.2..1 is one decade");
    }

    #[test]
    fn linear_ticks_are_round_numbers_that_cover_the_data() {
        let axis = Axis::linear(0.013, 2.31);
        let labels: Vec<String> = axis.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0", "0.5", "1.0", "1.5", "2.0", "2.5"]);
        let steps = Axis::linear(0.0, 1200.0);
        let labels: Vec<String> = steps.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0", "500", "1000", "1500"]);
        assert_eq!(Axis::linear(-3e-6, 3e-6).ticks()[0].1, "-4e-6");
    }

    #[test]
    fn a_loss_spanning_more_than_two_decades_gets_a_log_axis() {
        let falling: Vec<(f64, f64)> = (0..100).map(|s| (s as f64, 2.3 * 0.9f64.powi(s))).collect();
        let svg = lines(
            &[("train_loss".into(), falling.clone())],
            "loss",
            "step",
            None,
        );
        assert!(svg.contains("loss (log scale)"), "{svg}");
        for decade in ["1e-5", "0.001", "0.1", "10"] {
            assert!(
                svg.contains(&format!(">{decade}</text>")),
                "tick {decade}: {svg}"
            );
        }
        // By hand, the other way round.
        let linear = plot(
            &[("train_loss".into(), falling)],
            &Labels {
                title: "loss",
                x: "step",
                caption: None,
                y_scale: YScale::Linear,
            },
        );
        assert!(!linear.contains("log scale"));
        let axis = Axis::log(3e-4, 2.3);
        let labels: Vec<String> = axis.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["1e-4", "0.001", "0.01", "0.1", "1", "10"]);
        assert!((axis.fraction(1e-4)).abs() < 1e-12 && (axis.fraction(10.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_flat_or_empty_plot_still_has_an_axis() {
        assert_eq!(span([0.5, 0.5].into_iter()), (0.0, 1.0));
        assert_eq!(span(std::iter::empty()), (0.0, 1.0));
        let svg = lines(&[("x".into(), vec![])], "nothing", "step", None);
        assert!(
            svg.contains(">0</text>") && svg.contains(">1.0</text>"),
            "{svg}"
        );
        // A log axis asked of values that are all zero stays linear and readable.
        let zeros = plot(
            &[("x".into(), vec![(0.0, 0.0), (1.0, 0.0)])],
            &Labels {
                title: "zero",
                x: "step",
                caption: None,
                y_scale: YScale::Log,
            },
        );
        assert!(
            !zeros.contains("NaN") && !zeros.contains("log scale"),
            "{zeros}"
        );
    }

    #[test]
    fn every_tick_is_inside_the_axis_and_labelled_apart() {
        // Seven decades at a tick every second decade: the top is a tick, not past one.
        let axis = Axis::log(1e-5, 50.0);
        let ticks = axis.ticks();
        assert!(ticks
            .iter()
            .all(|(v, _)| (0.0..=1.0 + 1e-12).contains(&axis.fraction(*v))));
        assert!((axis.fraction(ticks.last().unwrap().0) - 1.0).abs() < 1e-12);
        let big = Axis::linear(1_000_000.0, 1_000_050.0);
        let labels: Vec<String> = big.ticks().into_iter().map(|t| t.1).collect();
        let distinct: std::collections::BTreeSet<&String> = labels.iter().collect();
        assert_eq!(distinct.len(), labels.len(), "{labels:?}");
    }
}
