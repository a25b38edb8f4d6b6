//! A model's summary: each parameter's name, shape and count, the total, and the output
//! shape for one batch, for a zoo model or a net of your own. Built from the model as the
//! trainer builds it (the same seeded builder), so what it lists is what training updates.

use crate::data::Dataset;
use crate::models::ModelSpec;
use crate::params::Params;
use crate::show::{escape, html_table, Show};
use crate::{show_in_jupyter, Error, Result};
use candle_core::Device;

/// What [`ModelSpec::summary`] shows.
#[derive(Clone, Debug)]
pub struct ModelSummary {
    pub name: String,
    /// (name, shape, scalars), sorted by name.
    pub parameters: Vec<(String, Vec<usize>, usize)>,
    pub total: usize,
    /// Shape of a batch going in and of the model's output for it.
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
}

/// Examples in the batch the summary runs the model on.
const BATCH: usize = 2;

impl ModelSpec {
    /// Build this model for `data` and run it on a batch of two training examples: its
    /// parameters, their total and the output shape. An error when the output is not one
    /// score per class for each example (what training would fail on at its first step).
    pub fn summary(&self, data: &Dataset) -> Result<ModelSummary> {
        let params = Params::new(0);
        let model = self.build(&data.shape, data.task().outputs(), 0.0, 0, &params)?;
        let train = data.split("train")?;
        let indices: Vec<usize> = train.iter().copied().take(BATCH).collect();
        let (x, _) = data.batch(&indices, &Device::Cpu)?;
        let output = model.forward(&x, false).map_err(|e| {
            Error::Invalid(format!(
                "{} fails on a batch of shape {:?}: {e}",
                self.label(),
                x.dims()
            ))
        })?;
        let expected = [indices.len(), data.task().outputs()];
        if output.dims() != expected {
            return Err(Error::Invalid(format!(
                "{} returns shape {:?} for a batch of shape {:?}; training needs {expected:?} \
                 (for {} of {})",
                self.label(),
                output.dims(),
                x.dims(),
                data.task().describe(),
                data.name
            )));
        }
        let parameters: Vec<(String, Vec<usize>, usize)> = params
            .vars()
            .into_iter()
            .map(|(name, var)| (name, var.dims().to_vec(), var.elem_count()))
            .collect();
        Ok(ModelSummary {
            name: self.label(),
            total: parameters.iter().map(|p| p.2).sum(),
            parameters,
            input_shape: x.dims().to_vec(),
            output_shape: output.dims().to_vec(),
        })
    }
}

impl ModelSummary {
    fn rows(&self) -> Vec<[String; 3]> {
        self.parameters
            .iter()
            .map(|(name, shape, count)| [name.clone(), format!("{shape:?}"), count.to_string()])
            .collect()
    }
}

impl Show for ModelSummary {
    fn text(&self) -> String {
        let rows = self.rows();
        let width = |col: usize, header: &str| {
            rows.iter()
                .map(|r| r[col].len())
                .chain([header.len()])
                .max()
                .unwrap_or(0)
        };
        let (w0, w1, w2) = (width(0, "parameter"), width(1, "shape"), width(2, "count"));
        let mut out = format!(
            "{}: {} parameters\n{:w0$}  {:w1$}  {:>w2$}\n",
            self.name, self.total, "parameter", "shape", "count"
        );
        for [name, shape, count] in &rows {
            out += &format!("{name:w0$}  {shape:w1$}  {count:>w2$}\n");
        }
        out += &format!(
            "output: {:?} for a batch of {:?}",
            self.output_shape, self.input_shape
        );
        out
    }

    fn html(&self) -> String {
        let headers = ["parameter", "shape", "count"].map(String::from);
        let mut rows: Vec<Vec<String>> = self.rows().into_iter().map(Vec::from).collect();
        rows.push(vec!["total".into(), String::new(), self.total.to_string()]);
        format!(
            "<p><b>{}</b>: {} parameters; output {:?} for a batch of {:?}</p>{}",
            escape(&self.name),
            self.total,
            self.output_shape,
            self.input_shape,
            html_table(&headers, &rows)
        )
    }
}

show_in_jupyter!(ModelSummary);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zoo_mlp_lists_its_parameters_and_output_shape() {
        let data = Dataset::digits().unwrap();
        let s = ModelSpec::Mlp { hidden: vec![16] }.summary(&data).unwrap();
        let names: Vec<&str> = s.parameters.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            names,
            ["fc1.bias", "fc1.weight", "head.bias", "head.weight"]
        );
        assert_eq!(s.total, 64 * 16 + 16 + 16 * 10 + 10);
        assert_eq!(s.input_shape, [2, 1, 8, 8]);
        assert_eq!(s.output_shape, [2, 10]);
        let text = s.text();
        let line = text.lines().find(|l| l.starts_with("fc1.weight")).unwrap();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            ["fc1.weight", "[16,", "64]", "1024"]
        );
        assert!(
            text.starts_with("mlp[16]: 1210 parameters")
                && text.ends_with("output: [2, 10] for a batch of [2, 1, 8, 8]"),
            "{text}"
        );
    }
}
