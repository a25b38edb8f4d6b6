//! Writes gallery.html: what a notebook shows for the runtime's values (data summary,
//! ranked examples, image grids, a trained run with its curves, predictions, checks), so
//! they can be looked at outside Jupyter.
//!
//! Usage: cargo run --release -p recipe --example gallery [-- OUT.html]

use recipe::analysis::batch_preview;
use recipe::checks::{run_all, CheckContext};
use recipe::prelude::*;
use recipe::{Error, Result};

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "gallery.html".into());
    let data = Dataset::digits()?;
    let config = TrainConfig {
        model: ModelSpec::Mlp { hidden: vec![64] },
        lr: 1e-3,
        steps: 800,
        eval_every: 100,
        ..TrainConfig::default()
    };
    let seeds = Seeds::all(1);
    let trained = fit(
        &data,
        &config,
        &seeds,
        &RunOptions::default().unarchived().quiet(),
    )?;
    let mut sections: Vec<(&str, String)> = vec![
        ("Dataset::summary", data.summary()?.html()),
        ("Dataset::duplicates", data.duplicates().html()),
        (
            "Dataset::rank_by (ink)",
            data.rank_by("train", "ink", 5, |x, _| x.iter().map(|v| *v as f64).sum())?
                .html(),
        ),
        ("batch_preview (step 0, first 20)", {
            let mut grid = batch_preview(&data, &config, &seeds, 0)?;
            grid.images.truncate(20);
            grid.html()
        }),
        ("fit -> Trained", trained.html()),
        (
            "Trained::predictions",
            trained.predictions(&data, "test")?.html(),
        ),
        (
            "Trained::first_layer_weights",
            trained.first_layer_weights(&data)?.html(),
        ),
    ];
    let findings = run_all(&CheckContext {
        data: &data,
        config,
        seeds,
    })?;
    let checks: String = findings.iter().map(|f| f.html()).collect();
    sections.push(("checks::run_all", checks));
    let body: String = sections
        .iter()
        .map(|(title, html)| format!("<h2>{title}</h2>\n{html}\n"))
        .collect();
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>recipe gallery</title>\
         <style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 6px}}</style>\n{body}"
    );
    std::fs::write(&out, page).map_err(|e| Error::Io(out.clone().into(), e))?;
    println!("wrote {out}");
    Ok(())
}
