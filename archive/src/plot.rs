//! Plots for people and papers: curves as a self-contained SVG line plot (axes, legend,
//! title, and a caption that can carry the run ids behind the curves).

/// Escape text for XML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Curves (name, [(x, y)]) as an SVG line plot with axes, legend, title and an optional
/// caption under it (for a paper: the run ids behind the curves).
pub fn lines(
    series: &[(String, Vec<(f64, f64)>)],
    title: &str,
    x_label: &str,
    caption: Option<&str>,
) -> String {
    const COLORS: [&str; 8] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    let points = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (x, y) in points {
        (x0, x1, y0, y1) = (x0.min(*x), x1.max(*x), y0.min(*y), y1.max(*y));
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    let (w, h, left, top) = (420.0, 220.0, 48.0, 20.0);
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * w;
    let sy = |y: f64| top + h - (y - y0) / (y1 - y0) * h;
    let caption_height = if caption.is_some() { 18.0 } else { 0.0 };
    // The legend sits right of the plot, as wide as its longest name (~6.5 px a character).
    let legend = series
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0) as f64
        * 6.5
        + 16.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        left + w + legend.max(60.0),
        top + h + 36.0 + caption_height
    );
    svg += &format!(r#"<text x="{left}" y="13">{}</text>"#, escape(title));
    svg += &format!(
        r##"<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        svg += &format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        svg += &format!(
            r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
            left + w + 8.0,
            top + 12.0 + 14.0 * i as f64,
            escape(name)
        );
    }
    svg += &format!(
        r#"<text x="{}" y="{}" text-anchor="end">{y1:.4}</text><text x="{}" y="{}" text-anchor="end">{y0:.4}</text>"#,
        left - 4.0,
        top + 8.0,
        left - 4.0,
        top + h
    );
    svg += &format!(
        r#"<text x="{left}" y="{}">{x0}</text><text x="{}" y="{}" text-anchor="end">{x1} {}</text>"#,
        top + h + 14.0,
        left + w,
        top + h + 14.0,
        escape(x_label)
    );
    if let Some(caption) = caption {
        svg += &format!(
            r#"<text x="{left}" y="{}" font-size="10">{}</text>"#,
            top + h + 32.0,
            escape(caption)
        );
    }
    svg + "</svg>"
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plot_has_one_polyline_per_series_and_its_caption() {
        let series = vec![
            ("a<b".to_string(), vec![(0.0, 1.0), (1.0, 0.5)]),
            ("c".to_string(), vec![(0.0, f64::NAN), (1.0, 0.2)]),
        ];
        let svg = super::lines(&series, "loss", "step", Some("Runs: ab12, cd34"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(
            svg.contains("a&lt;b") && svg.contains("Runs: ab12, cd34") && svg.ends_with("</svg>")
        );
    }
}
