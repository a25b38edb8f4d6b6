//! How values look: as text in a terminal, as HTML (SVG plots, PNG images) in Jupyter.
//!
//! Every displayable type implements [`Show`]. In a notebook, the kernel calls the type's
//! `evcxr_display` (added by [`show_in_jupyter!`]), which prints the HTML inside evcxr's
//! `EVCXR_BEGIN_CONTENT` markers; anywhere else `Display` gives the text.

/// A value a person would rather look at than read.
pub trait Show {
    /// Plain text for a terminal.
    fn text(&self) -> String;
    /// HTML (may embed SVG) for Jupyter.
    fn html(&self) -> String {
        format!("<pre>{}</pre>", escape(&self.text()))
    }
}

/// Text shows as itself (preformatted in a notebook).
impl Show for String {
    fn text(&self) -> String {
        self.clone()
    }
}

/// HTML of your own, for [`display`] or a [`DisplayHandle`](crate::notebook::DisplayHandle).
#[derive(Clone, Debug)]
pub struct Html(pub String);

impl Show for Html {
    fn text(&self) -> String {
        self.0.clone()
    }
    fn html(&self) -> String {
        self.0.clone()
    }
}

/// Send a value to the notebook now (mid-cell), or print its text outside one.
pub fn display(value: &dyn Show) {
    if crate::notebook::attached() {
        crate::notebook::display_now(value);
    } else if in_notebook() {
        println!(
            "EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT",
            value.html()
        );
    } else {
        println!("{}", value.text());
    }
}

/// Whether output goes to a notebook kernel (evcxr sets `EVCXR_IS_RUNTIME`).
pub fn in_notebook() -> bool {
    std::env::var_os("EVCXR_IS_RUNTIME").is_some()
}

/// HTML-escape text.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Any `Debug` value as a cell's result, in one compile. For a cell ending in an
/// expression the kernel first compiles `(value).evcxr_display();` and, only when that does
/// not compile, the whole cell again with `{:?}` (a second compile of about 0.1 s). With
/// this trait in the prelude the first compile succeeds and prints what the second would
/// have. Types with their own `evcxr_display` ([`show_in_jupyter!`]) keep theirs: inherent
/// methods come before trait methods.
pub trait DebugResult {
    fn evcxr_display(&self);
}

impl<T: std::fmt::Debug + ?Sized> DebugResult for T {
    fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT text/plain\n{self:?}\nEVCXR_END_CONTENT");
    }
}

/// Give a [`Show`] type `Display` (its text) and `evcxr_display` (its text and its HTML, so
/// a console client or a notebook converted to markdown shows the text where a browser
/// shows the HTML).
#[macro_export]
macro_rules! show_in_jupyter {
    ($($t:ty),* $(,)?) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&$crate::show::Show::text(self))
            }
        }
        impl $t {
            /// Called by the kernel to show this value as the result of a cell.
            pub fn evcxr_display(&self) {
                println!("EVCXR_BEGIN_CONTENT text/plain\n{}\nEVCXR_END_CONTENT", $crate::show::Show::text(self).trim_end());
                println!("EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT", $crate::show::Show::html(self));
            }
        }
    )*};
}

/// A JSON value for people: numbers with four significant digits, lists and objects inline.
pub fn compact_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => recipe_archive::export::format_number(f),
            _ => n.to_string(),
        },
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(compact_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A text table rendered as HTML.
pub fn html_table(headers: &[String], rows: &[Vec<String>]) -> String {
    html_table_with(headers, rows, escape)
}

/// A text table rendered as HTML, each cell's text made HTML by `cell`.
pub fn html_table_with(
    headers: &[String],
    rows: &[Vec<String>],
    cell: impl Fn(&str) -> String,
) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in headers {
        out += &format!("<th>{}</th>", escape(h));
    }
    out += "</tr></thead><tbody>";
    for row in rows {
        out += "<tr>";
        for c in row {
            out += &format!("<td>{}</td>", cell(c));
        }
        out += "</tr>";
    }
    out + "</tbody></table>"
}

/// A histogram of values as an SVG bar chart (`bins` bars between the smallest and the
/// largest finite value), with ticks on both axes.
pub fn svg_histogram(values: &[f64], bins: usize, title: &str) -> String {
    use recipe_archive::plot::Axis;
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = recipe_archive::plot::span(finite.iter().copied());
    let bins = bins.max(1);
    let mut counts = vec![0usize; bins];
    for v in &finite {
        let k = (((v - lo) / (hi - lo)) * bins as f64) as usize;
        counts[k.min(bins - 1)] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let (w, h, left, top) = (360.0, 140.0, 44.0, 20.0);
    // Counts are whole: at least five on the count axis, so its ticks are 1 apart or more.
    let (x_axis, y_axis) = (Axis::linear(lo, hi), Axis::linear(0.0, max.max(5.0)));
    let sx = |x: f64| left + x_axis.fraction(x) * w;
    let sy = |y: f64| top + h - y_axis.fraction(y) * h;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        left + w + 12.0,
        top + h + 34.0
    );
    svg += &format!(
        r#"<text x="{left}" y="12" font-weight="bold">{}</text>"#,
        escape(title)
    );
    svg += &recipe_archive::plot::y_grid(&y_axis, left, w, sy);
    let width = (hi - lo) / bins as f64;
    for (i, c) in counts.iter().enumerate() {
        let (x0, x1) = (sx(lo + i as f64 * width), sx(lo + (i + 1) as f64 * width));
        svg += &format!(
            r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4878a8"><title>{} from {} to {}</title></rect>"##,
            sy(*c as f64),
            (x1 - x0 - 1.0).max(0.5),
            top + h - sy(*c as f64),
            c,
            recipe_archive::export::format_number(lo + i as f64 * width),
            recipe_archive::export::format_number(lo + (i + 1) as f64 * width),
        );
    }
    for (tick, text) in x_axis.ticks() {
        let x = sx(tick);
        svg += &format!(
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="#999"/><text x="{x:.1}" y="{}" text-anchor="middle">{text}</text>"##,
            top + h,
            top + h + 4.0,
            top + h + 16.0
        );
    }
    svg += &format!(
        r##"<line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="#999"/></svg>"##,
        left + w,
        top + h,
        top + h
    );
    svg
}

/// Curves (name, [(x, y)]) as an SVG line plot with axes, legend and title.
pub fn svg_lines(series: &[(String, Vec<(f64, f64)>)], title: &str, x_label: &str) -> String {
    recipe_archive::plot::lines(series, title, x_label, None)
}

/// Images with captions, `per_row` to a row: each image one 8-bit PNG (one pixel per value,
/// darker is higher, as ink on paper; a value that is not finite is red), embedded in the
/// HTML and scaled up by the browser with `image-rendering: pixelated`. A 28x28 image is a
/// few hundred bytes, so a grid of dozens stays well under 100 KB.
pub fn image_grid(
    images: &[(&[f32], String)],
    rows: usize,
    cols: usize,
    range: (f32, f32),
    per_row: usize,
) -> String {
    use base64::Engine;
    let scale = (64 / rows.max(cols).max(1)).max(2);
    let span = (range.1 - range.0).max(f32::EPSILON);
    let cells: String = images
        .iter()
        .map(|(pixels, caption)| {
            let mut rgb = Vec::with_capacity(rows * cols * 3);
            for k in 0..rows * cols {
                let v = pixels.get(k).copied().unwrap_or(f32::NAN);
                if v.is_finite() {
                    let g = (255.0 * (1.0 - ((v - range.0) / span).clamp(0.0, 1.0))) as u8;
                    rgb.extend([g, g, g]);
                } else {
                    rgb.extend([220, 0, 0]);
                }
            }
            let image = match png(&rgb, cols, rows) {
                Ok(bytes) => format!(
                    r#"<img src="data:image/png;base64,{}" width="{}" height="{}" style="image-rendering:pixelated;display:block" alt="{}">"#,
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                    cols * scale,
                    rows * scale,
                    escape(caption)
                ),
                // Said where the image would be, never a blank square.
                Err(e) => format!("<div>image not shown: {}</div>", escape(&e.to_string())),
            };
            format!(
                r#"<figure style="margin:0">{image}<figcaption>{}</figcaption></figure>"#,
                escape(caption)
            )
        })
        .collect();
    format!(
        r#"<div style="display:grid;grid-template-columns:repeat({},max-content);gap:6px 8px;font:10px sans-serif">{cells}</div>"#,
        per_row.max(1).min(images.len().max(1))
    )
}

/// An RGB image as PNG bytes; gray when every pixel is (a third of the size).
fn png(rgb: &[u8], width: usize, height: usize) -> image::ImageResult<Vec<u8>> {
    use image::ImageEncoder;
    let gray = rgb.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]);
    let (bytes, kind) = if gray {
        let luma: Vec<u8> = rgb.chunks(3).map(|p| p[0]).collect();
        (luma, image::ExtendedColorType::L8)
    } else {
        (rgb.to_vec(), image::ExtendedColorType::Rgb8)
    };
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(
        &bytes,
        width as u32,
        height as u32,
        kind,
    )?;
    Ok(out)
}

crate::show_in_jupyter!(Html);

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// The first image embedded in `html`, decoded.
    fn first_png(html: &str) -> image::DynamicImage {
        let src = html
            .split("base64,")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(src)
            .unwrap();
        image::load_from_memory(&bytes).unwrap()
    }

    #[test]
    fn issue_23_an_image_grid_is_one_small_png_per_image_with_the_same_pixels() {
        // 48 Fashion-MNIST-sized images of noise (the worst case for compression).
        let mut rng = crate::Rng::stream(1, "grid");
        let images: Vec<Vec<f32>> = (0..48)
            .map(|_| (0..28 * 28).map(|_| rng.uniform() as f32).collect())
            .collect();
        let captioned: Vec<(&[f32], String)> = (images.iter())
            .enumerate()
            .map(|(k, v)| (v.as_slice(), format!("#{k} <b>")))
            .collect();
        let html = image_grid(&captioned, 28, 28, (0.0, 1.0), 10);
        assert!(html.len() < 100_000, "{} bytes", html.len());
        assert_eq!(html.matches("<img").count(), 48);
        assert!(html.contains("#0 &lt;b&gt;") && html.contains("pixelated"));
        // The first PNG decodes to the image's pixels: 8-bit gray, darker is higher.
        let decoded = first_png(&html).to_luma8();
        assert_eq!(decoded.dimensions(), (28, 28));
        for (k, g) in decoded.pixels().enumerate() {
            assert_eq!(g.0[0], (255.0 * (1.0 - images[0][k])) as u8);
        }
        // A value that is not finite shows red (an RGB image).
        let bad = [f32::NAN; 4];
        let html = image_grid(&[(&bad[..], "nan".into())], 2, 2, (0.0, 1.0), 1);
        let decoded = first_png(&html).to_rgb8();
        assert_eq!(decoded.get_pixel(0, 0).0, [220, 0, 0]);
    }
}
