//! Looking at the data before training on it: summary statistics, exact duplicates (within
//! a split and across splits, i.e. leakage), corrupt examples, and examples ranked by any
//! per-example value with its histogram and the extremes shown.

use super::table::Scale;
use super::{f32_bytes, Dataset, Target};
use crate::show::{escape, html_table, image_grid, svg_histogram, Show};
use crate::{show_in_jupyter, Result};
use recipe_archive::export::format_number;
use std::collections::BTreeMap;

/// Counts, class balance and per-feature statistics.
#[derive(Clone, Debug)]
pub struct Summary {
    pub name: String,
    pub examples: usize,
    pub shape: Vec<usize>,
    /// Split -> size.
    pub splits: BTreeMap<String, usize>,
    /// (class name, count in train, count overall); none for a regression target.
    pub classes: Vec<(String, usize, usize)>,
    /// Largest over smallest class count (in train); NaN for a regression target.
    pub imbalance_ratio: f64,
    /// A regression target: its statistics, histogram and outliers.
    pub target: Option<TargetValues>,
    /// Over all features and examples.
    pub min: f32,
    pub max: f32,
    pub mean: f64,
    pub std: f64,
    /// Features that are constant across every example (dead pixels).
    pub constant_features: usize,
    /// What was made of the source, one line each: for a table the target, the features,
    /// the rows left out and the values fitted on the training split (see
    /// [`super::Fitted::lines`]); for any set, the dataset's notes (files skipped).
    pub table: Vec<String>,
}

/// A regression target as the summary shows it.
#[derive(Clone, Debug)]
pub struct TargetValues {
    /// The target column or array.
    pub name: String,
    /// Over the training split.
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
    /// Every example's value, for the histogram.
    pub values: Vec<f64>,
    /// (example, value) more than 3 training stds from the training mean, farthest first.
    pub outliers: Vec<(usize, f64)>,
}

/// Groups of identical examples (blake3 of their features).
#[derive(Clone, Debug)]
pub struct Duplicates {
    /// Groups of example indices with identical features, each with the split of each member.
    pub groups: Vec<Vec<(usize, String)>>,
}

impl Duplicates {
    /// Groups that span two or more splits: the same example in train and test (leakage).
    pub fn across_splits(&self) -> Vec<&Vec<(usize, String)>> {
        self.groups
            .iter()
            .filter(|g| g.iter().any(|(_, s)| *s != g[0].1))
            .collect()
    }
    /// Groups inside one split.
    pub fn within_splits(&self) -> Vec<&Vec<(usize, String)>> {
        self.groups
            .iter()
            .filter(|g| g.iter().all(|(_, s)| *s == g[0].1))
            .collect()
    }
}

/// Examples that cannot be right, by reason.
#[derive(Clone, Debug, Default)]
pub struct Corrupt {
    pub non_finite: Vec<usize>,
    pub out_of_range: Vec<usize>,
    pub constant: Vec<usize>,
    /// A label past the last class, or a regression target that is not finite.
    pub bad_label: Vec<usize>,
}

impl Corrupt {
    pub fn is_clean(&self) -> bool {
        self.non_finite.is_empty()
            && self.out_of_range.is_empty()
            && self.constant.is_empty()
            && self.bad_label.is_empty()
    }
}

/// The examples of a split ranked by a per-example value.
#[derive(Clone, Debug)]
pub struct Ranked {
    pub label: String,
    /// (example index, value), ascending.
    pub order: Vec<(usize, f64)>,
    images: Vec<(Vec<f32>, String)>,
    /// (height, width) of an image example; `None` for rows of a table, shown as text.
    image_shape: Option<(usize, usize)>,
    range: (f32, f32),
}

impl Dataset {
    /// Counts, the target (class balance and imbalance ratio; or a regression target's
    /// statistics, histogram and outliers) and feature statistics.
    pub fn summary(&self) -> Result<Summary> {
        let d = self.dim();
        let train = self.splits.get("train").map(Vec::as_slice).unwrap_or(&[]);
        // Classes to count: none for a regression, and none for text, whose character
        // frequencies the corpus view shows (`Dataset::corpus`).
        let (labels, classes) = match &self.target {
            Target::Classes { labels, names } => (labels.as_slice(), names.as_slice()),
            Target::Values { .. } | Target::Tokens { .. } => (&[][..], &[][..]),
        };
        let mut counts_all = vec![0usize; classes.len()];
        for &l in labels {
            if let Some(c) = counts_all.get_mut(l as usize) {
                *c += 1;
            }
        }
        let mut counts_train = vec![0usize; classes.len()];
        for &i in train.iter().filter(|&&i| i < labels.len()) {
            if let Some(c) = counts_train.get_mut(labels[i] as usize) {
                *c += 1;
            }
        }
        let nonzero: Vec<usize> = counts_train.iter().copied().filter(|&c| c > 0).collect();
        let imbalance_ratio = match (nonzero.iter().max(), nonzero.iter().min()) {
            (Some(&hi), Some(&lo)) => hi as f64 / lo as f64,
            _ => f64::NAN,
        };
        let (mut min, mut max, mut sum, mut sq) = (f32::INFINITY, f32::NEG_INFINITY, 0f64, 0f64);
        for &v in &self.features {
            min = min.min(v);
            max = max.max(v);
            sum += v as f64;
            sq += (v as f64) * (v as f64);
        }
        let n = self.features.len().max(1) as f64;
        let constant_features = (0..d)
            .filter(|&j| {
                let first = self.features.get(j).copied();
                (0..self.len()).all(|i| Some(self.features[i * d + j]) == first)
            })
            .count();
        Ok(Summary {
            name: self.name.clone(),
            examples: self.len(),
            shape: self.shape.clone(),
            splits: self
                .splits
                .iter()
                .map(|(k, v)| (k.clone(), v.len()))
                .collect(),
            classes: classes
                .iter()
                .enumerate()
                .map(|(c, name)| (name.clone(), counts_train[c], counts_all[c]))
                .collect(),
            imbalance_ratio,
            target: match &self.target {
                Target::Values { values, name } => {
                    let scale = self.table.as_ref().and_then(|t| t.target_scale);
                    Some(TargetValues::of(name, values, train, scale))
                }
                Target::Classes { .. } | Target::Tokens { .. } => None,
            },
            min,
            max,
            mean: sum / n,
            std: (sq / n - (sum / n).powi(2)).max(0.0).sqrt(),
            constant_features,
            table: (self.table.iter().flat_map(|t| t.lines()))
                .chain(self.notes.iter().cloned())
                .collect(),
        })
    }

    /// Exact duplicates by blake3 of each example's features.
    pub fn duplicates(&self) -> Duplicates {
        let mut split_of = vec![String::from("(none)"); self.len()];
        for (name, indices) in &self.splits {
            for &i in indices {
                split_of[i] = name.clone();
            }
        }
        let mut by_hash: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
        for i in 0..self.len() {
            by_hash
                .entry(*blake3::hash(f32_bytes(self.row(i))).as_bytes())
                .or_default()
                .push(i);
        }
        let groups = by_hash
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|g| g.into_iter().map(|i| (i, split_of[i].clone())).collect())
            .collect();
        Duplicates { groups }
    }

    /// Examples with NaN/inf, values outside the set's range, constant features, or a label
    /// past the last class.
    pub fn corrupt(&self) -> Corrupt {
        let (lo, hi) = self.value_range;
        let mut out = Corrupt::default();
        for i in 0..self.len() {
            let x = self.row(i);
            if x.iter().any(|v| !v.is_finite()) {
                out.non_finite.push(i);
            } else if x.iter().any(|&v| v < lo || v > hi) {
                out.out_of_range.push(i);
            }
            if x.len() > 1 && x.iter().all(|&v| v == x[0]) {
                out.constant.push(i);
            }
            let bad = match &self.target {
                Target::Classes { labels, names } => labels[i] as usize >= names.len(),
                Target::Values { values, .. } => !values[i].is_finite(),
                Target::Tokens {
                    next,
                    context,
                    vocab,
                } => (next[i * context..(i + 1) * context].iter())
                    .any(|&t| t as usize >= vocab.len()),
            };
            if bad {
                out.bad_label.push(i);
            }
        }
        out
    }

    /// Example i's target as a number: its class index, or its value (NaN for a text
    /// window, whose target is a sequence).
    fn target_number(&self, i: usize) -> f64 {
        match &self.target {
            Target::Classes { labels, .. } => labels[i] as f64,
            Target::Values { values, .. } => values[i] as f64,
            Target::Tokens { .. } => f64::NAN,
        }
    }

    /// Rank a table's rows of a split by one of its features, named as the summary names it
    /// (`flipper_length_mm`, or `island=Dream` for a one-hot category), in the values the
    /// model sees (standardised, with `.normalize()`); the regression target ranks by its
    /// name too, in its own units. An unknown name is an error listing the features.
    pub fn rank_by_feature(&self, split: &str, feature: &str, k: usize) -> Result<Ranked> {
        let table = self.table.as_ref().ok_or_else(|| {
            crate::Error::Invalid(format!(
                "{} is not a table: it has no named features; rank with rank_by(split, label, \
                 k, |x, target| ...)",
                self.name
            ))
        })?;
        if matches!(&self.target, Target::Values { name, .. } if name == feature) {
            return self.rank_by(split, feature, k, |_, target| self.in_units(target));
        }
        let column = table
            .features
            .iter()
            .position(|f| f == feature)
            .ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "{} has no feature {feature:?}; its features are {}",
                    self.name,
                    table.features.join(", ")
                ))
            })?;
        self.rank_by(split, feature, k, |x, _| x[column] as f64)
    }

    /// Rank a split's examples by `value(features, target)` (the target as a number: the
    /// class index, or the regression value): its histogram and the `k` lowest and highest
    /// examples are shown.
    pub fn rank_by(
        &self,
        split: &str,
        label: &str,
        k: usize,
        value: impl Fn(&[f32], f64) -> f64,
    ) -> Result<Ranked> {
        let mut order: Vec<(usize, f64)> = self
            .split(split)?
            .iter()
            .map(|&i| (i, value(self.row(i), self.target_number(i))))
            .collect();
        order.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let ends: Vec<(usize, f64)> = order
            .iter()
            .take(k)
            .chain(order.iter().rev().take(k).rev())
            .copied()
            .collect();
        let image_shape = (self.shape.len() == 3).then(|| self.image_shape());
        let images = ends
            .iter()
            .map(|&(i, v)| {
                (
                    self.row(i).to_vec(),
                    format!("#{i} {} {}", self.target_text(i), format_number(v)),
                )
            })
            .collect();
        Ok(Ranked {
            label: label.into(),
            order,
            images,
            image_shape,
            range: self.value_range,
        })
    }

    /// Keep the examples of a split for which `keep(features, target)` holds (the target as
    /// a number, as for [`Dataset::rank_by`]).
    pub fn filter(&self, split: &str, keep: impl Fn(&[f32], f64) -> bool) -> Result<Vec<usize>> {
        Ok(self
            .split(split)?
            .iter()
            .copied()
            .filter(|&i| keep(self.row(i), self.target_number(i)))
            .collect())
    }

    /// (rows, cols) of an example drawn as an image: the last two dims, or one row.
    pub fn image_shape(&self) -> (usize, usize) {
        match self.shape.as_slice() {
            [.., r, c] => (*r, *c),
            [c] => (1, *c),
            _ => (1, self.dim()),
        }
    }

    /// The examples at `indices` drawn as a grid of images captioned with their class.
    pub fn image_grid(&self, indices: &[usize]) -> ImageGrid {
        ImageGrid {
            images: indices
                .iter()
                .filter(|&&i| i < self.len())
                .map(|&i| {
                    (
                        self.row(i).to_vec(),
                        format!("#{i} {}", self.target_text(i)),
                    )
                })
                .collect(),
            shape: self.image_shape(),
            range: self.value_range,
        }
    }
}

/// Images with captions, shown as a grid.
#[derive(Clone, Debug)]
pub struct ImageGrid {
    pub images: Vec<(Vec<f32>, String)>,
    pub shape: (usize, usize),
    pub range: (f32, f32),
}

impl ImageGrid {
    /// A grid of arbitrary images (e.g. first-layer weights), each `shape` values.
    pub fn new(images: Vec<(Vec<f32>, String)>, shape: (usize, usize)) -> ImageGrid {
        let (lo, hi) = images
            .iter()
            .flat_map(|(p, _)| p.iter())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        ImageGrid {
            images,
            shape,
            range: (lo, hi),
        }
    }
}

fn ascii_image(pixels: &[f32], (rows, cols): (usize, usize), (lo, hi): (f32, f32)) -> String {
    const RAMP: &[u8] = b" .:-=+*#%@";
    let span = (hi - lo).max(f32::EPSILON);
    let mut out = String::new();
    for r in 0..rows {
        for c in 0..cols {
            let v = pixels.get(r * cols + c).copied().unwrap_or(0.0);
            let k = (((v - lo) / span).clamp(0.0, 1.0) * (RAMP.len() - 1) as f32).round() as usize;
            out.push(RAMP[k] as char);
        }
        out.push('\n');
    }
    out
}

impl Show for ImageGrid {
    fn text(&self) -> String {
        self.images
            .iter()
            .map(|(p, caption)| format!("{caption}\n{}", ascii_image(p, self.shape, self.range)))
            .collect::<Vec<_>>()
            .join("\n")
    }
    fn html(&self) -> String {
        let images: Vec<(&[f32], String)> = self
            .images
            .iter()
            .map(|(p, c)| (p.as_slice(), c.clone()))
            .collect();
        image_grid(&images, self.shape.0, self.shape.1, self.range, 10)
    }
}

impl TargetValues {
    /// Statistics over the training rows `train`, outliers over every example; in the
    /// target's own units when it was standardised with `scale`.
    fn of(name: &str, values: &[f32], train: &[usize], scale: Option<Scale>) -> TargetValues {
        let (offset, factor) = scale.map_or((0.0, 1.0), |s| (s.mean, s.std));
        let values: Vec<f64> = (values.iter())
            .map(|&v| v as f64 * factor + offset)
            .collect();
        let n = train.len().max(1) as f64;
        let mean = train.iter().map(|&i| values[i]).sum::<f64>() / n;
        let variance = (train.iter())
            .map(|&i| (values[i] - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = variance.sqrt();
        let (min, max) = (train.iter()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
            (lo.min(values[i]), hi.max(values[i]))
        });
        let mut outliers: Vec<(usize, f64)> = (values.iter().enumerate())
            .map(|(i, &v)| (i, v))
            .filter(|(_, v)| std > 0.0 && (v - mean).abs() > 3.0 * std)
            .collect();
        outliers.sort_by(|a, b| {
            ((b.1 - mean).abs())
                .total_cmp(&(a.1 - mean).abs())
                .then(a.0.cmp(&b.0))
        });
        TargetValues {
            name: name.to_string(),
            min,
            max,
            mean,
            std,
            values,
            outliers,
        }
    }

    fn headline(&self) -> String {
        let number = recipe_archive::export::format_number;
        let shown: Vec<String> = (self.outliers.iter().take(10))
            .map(|(i, v)| format!("#{i} {}", number(*v)))
            .collect();
        let outliers = match self.outliers.len() {
            0 => "no outliers (more than 3 std from the mean)".to_string(),
            n => format!(
                "{n} outliers more than 3 std from the mean: {}{}",
                shown.join(", "),
                if n > shown.len() { ", ..." } else { "" }
            ),
        };
        format!(
            "regression target {:?} over the training split: min {}, mean {}, max {}, std {}; {outliers}",
            self.name,
            number(self.min),
            number(self.mean),
            number(self.max),
            number(self.std)
        )
    }
}

impl Summary {
    fn class_rows(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let headers = ["class", "train", "all"].map(String::from).to_vec();
        let rows = self
            .classes
            .iter()
            .map(|(n, t, a)| vec![n.clone(), t.to_string(), a.to_string()])
            .collect();
        (headers, rows)
    }
    fn headline(&self) -> String {
        let balance = if self.classes.is_empty() {
            String::new()
        } else {
            format!("; class imbalance {:.2}x", self.imbalance_ratio)
        };
        format!(
            "{}: {} examples of shape {:?}; splits {}; values in [{:.3}, {:.3}], mean {:.3}, std {:.3}; {} constant features{balance}",
            self.name,
            self.examples,
            self.shape,
            self.splits.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
            self.min,
            self.max,
            self.mean,
            self.std,
            self.constant_features,
        )
    }
}

impl Show for Summary {
    fn text(&self) -> String {
        let (headers, rows) = self.class_rows();
        let mut out = self.headline() + "\n";
        for line in &self.table {
            out += &format!("{line}\n");
        }
        if let Some(target) = &self.target {
            return out + &target.headline() + "\n";
        }
        if rows.is_empty() {
            return out;
        }
        out += &format!("{:<14} {:>7} {:>7}\n", headers[0], headers[1], headers[2]);
        for r in rows {
            out += &format!("{:<14} {:>7} {:>7}\n", r[0], r[1], r[2]);
        }
        out
    }
    fn html(&self) -> String {
        let (headers, rows) = self.class_rows();
        let table: String = self
            .table
            .iter()
            .map(|line| format!("<li>{}</li>", escape(line)))
            .collect();
        let table = if table.is_empty() {
            table
        } else {
            format!("<ul>{table}</ul>")
        };
        let target = match &self.target {
            Some(t) => format!(
                "<p>{}</p>{}",
                escape(&t.headline()),
                svg_histogram(&t.values, 30, &t.name)
            ),
            None if rows.is_empty() => String::new(),
            None => html_table(&headers, &rows),
        };
        format!("<p>{}</p>{table}{target}", escape(&self.headline()))
    }
}

impl Show for Duplicates {
    fn text(&self) -> String {
        let (across, within) = (self.across_splits(), self.within_splits());
        let mut out = format!(
            "{} groups of identical examples: {} across splits (leakage), {} within a split\n",
            self.groups.len(),
            across.len(),
            within.len()
        );
        for g in across.iter().take(10) {
            out += &format!(
                "  across: {}\n",
                g.iter()
                    .map(|(i, s)| format!("#{i} ({s})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        out
    }
}

impl Show for Corrupt {
    fn text(&self) -> String {
        let list = |v: &Vec<usize>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                format!("{} (e.g. #{})", v.len(), v[0])
            }
        };
        format!(
            "corrupt examples: non-finite {}; out of range {}; constant {}; label past the last class {}\n",
            list(&self.non_finite),
            list(&self.out_of_range),
            list(&self.constant),
            list(&self.bad_label)
        )
    }
}

impl Show for Ranked {
    fn text(&self) -> String {
        let k = self.images.len() / 2;
        let fmt = |s: &[(usize, f64)]| {
            s.iter()
                .map(|(i, v)| format!("#{i}={}", format_number(*v)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "{} examples by {}: lowest {}; highest {}\n",
            self.order.len(),
            self.label,
            fmt(&self.order[..k.min(self.order.len())]),
            fmt(&self.order[self.order.len().saturating_sub(k)..])
        )
    }
    /// The histogram of the values, then the lowest and the highest examples as two groups,
    /// each captioned with what its numbers are.
    fn html(&self) -> String {
        let values: Vec<f64> = self.order.iter().map(|(_, v)| *v).collect();
        let k = self.images.len() / 2;
        let label = escape(&self.label);
        let group = |images: &[(Vec<f32>, String)]| {
            let images: Vec<(&[f32], String)> = images
                .iter()
                .map(|(p, c)| (p.as_slice(), c.clone()))
                .collect();
            match self.image_shape {
                Some((height, width)) => image_grid(&images, height, width, self.range, 10),
                None => {
                    let rows: Vec<Vec<String>> =
                        images.iter().map(|(_, c)| vec![c.clone()]).collect();
                    html_table(&[format!("example, target, {}", self.label)], &rows)
                }
            }
        };
        format!(
            "{}<p><b>The {k} lowest by {label}</b> (each: #example, its target, its \
             {label})</p>{}<p><b>The {k} highest by {label}</b></p>{}",
            svg_histogram(
                &values,
                30,
                &format!(
                    "{} over {} examples (bars: examples)",
                    self.label,
                    values.len()
                )
            ),
            group(&self.images[..k]),
            group(&self.images[k..]),
        )
    }
}

show_in_jupyter!(Summary, Duplicates, Corrupt, Ranked, ImageGrid);

#[cfg(test)]
mod tests {
    use crate::data::{Dataset, Target};
    use crate::show::Show;

    #[test]
    fn digits_summary_duplicates_and_corruption() {
        let mut d = Dataset::digits().unwrap();
        let s = d.summary().unwrap();
        assert_eq!(s.examples, 1797);
        assert!(
            s.imbalance_ratio >= 1.0 && s.imbalance_ratio < 1.5,
            "{}",
            s.imbalance_ratio
        );
        assert!(s.text().contains("digits: 1797 examples"));
        assert!(d.corrupt().is_clean());
        // Plant a NaN, an out-of-range value, a bad label and a train/test duplicate.
        let (train0, test0) = (d.split("train").unwrap()[0], d.split("test").unwrap()[0]);
        let copy = d.row(train0).to_vec();
        let dim = d.dim();
        d.features[test0 * dim..(test0 + 1) * dim].copy_from_slice(&copy);
        d.features[5 * dim] = f32::NAN;
        d.features[6 * dim] = 3.0;
        let Target::Classes { labels, .. } = &mut d.target else {
            panic!("digits have classes")
        };
        labels[7] = 42;
        let c = d.corrupt();
        assert_eq!(
            (
                c.non_finite.clone(),
                c.out_of_range.clone(),
                c.bad_label.clone()
            ),
            (vec![5], vec![6], vec![7])
        );
        let dups = d.duplicates();
        assert!(dups
            .across_splits()
            .iter()
            .any(|g| g.iter().any(|(i, _)| *i == test0) && g.iter().any(|(i, _)| *i == train0)));
    }

    #[test]
    fn rank_by_orders_and_shows_extremes() {
        let d = Dataset::digits().unwrap();
        let r = d
            .rank_by("train", "ink", 3, |x, _| x.iter().map(|&v| v as f64).sum())
            .unwrap();
        assert!(r.order.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(crate::show::Show::html(&r).contains("<img src=\"data:image/png;base64,"));
        let light = d
            .filter("train", |x, _| x.iter().sum::<f32>() < 10.0)
            .unwrap();
        assert!(light.len() < d.split("train").unwrap().len());
        let e = d
            .rank_by_feature("train", "ink", 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a table"), "{e}");
    }

    #[test]
    fn issue_27_a_tables_rows_rank_by_a_named_feature_or_the_regression_target() {
        let d = crate::train::testing::penguins_mass();
        let r = d.rank_by_feature("train", "flipper_length_mm", 2).unwrap();
        let column = d
            .table
            .as_ref()
            .unwrap()
            .features
            .iter()
            .position(|f| f == "flipper_length_mm")
            .unwrap();
        let (lowest, highest) = (r.order[0].0, r.order.last().unwrap().0);
        assert_eq!(r.order[0].1, d.row(lowest)[column] as f64);
        assert!(d.row(lowest)[column] < d.row(highest)[column]);
        let by_mass = d.rank_by_feature("test", "body_mass_g", 2).unwrap();
        assert!(by_mass.order.windows(2).all(|w| w[0].1 <= w[1].1));
        let html = crate::show::Show::html(&by_mass);
        assert!(
            html.contains("<table>") && html.contains("<td>#"),
            "rows, not pixels: {html}"
        );
        let e = d
            .rank_by_feature("train", "wings", 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no feature \"wings\"") && e.contains("bill_length_mm"),
            "{e}"
        );
    }
}
