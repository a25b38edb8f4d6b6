//! The live progress of a training loop: a line and a loss plot that update in place in a
//! notebook (through a [`DisplayHandle`]), a `\r` line on stderr in a terminal.
//!
//! Shared by [`crate::train::fit`] and [`crate::track::Tracker::show_progress`]. It only
//! shows: it archives nothing and decides nothing about the run.

use crate::notebook::DisplayHandle;
use crate::show::Show;
use std::time::{Duration, Instant};

/// At most this many points of the training curve are kept: beyond it the plot would not
/// show more, so a long run keeps every n-th step.
const MAX_POINTS: usize = 2000;
/// The line is redrawn at most this often (the last step is always drawn): a notebook
/// front end that repaints on every step slows the loop it is showing.
const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// The progress of one run towards `steps` steps.
pub(crate) struct Progress {
    name: String,
    steps: usize,
    /// Steps done so far (the last step seen, plus one).
    step: usize,
    train: Vec<(f64, f64)>,
    val: Vec<(f64, f64)>,
    handle: Option<DisplayHandle>,
    last_drawn: Instant,
    /// The step count the last drawing showed.
    drawn_step: Option<usize>,
}

impl Progress {
    /// The progress of the run `name`, which will take `steps` steps. Nothing shows until
    /// the first [`Progress::show_now_and_then`].
    pub(crate) fn new(name: &str, steps: usize) -> Progress {
        Progress {
            name: name.into(),
            steps,
            step: 0,
            train: Vec::new(),
            val: Vec::new(),
            handle: None,
            last_drawn: Instant::now(),
            drawn_step: None,
        }
    }

    /// The training loss of `step` (counted from 0).
    pub(crate) fn train_loss(&mut self, step: usize, loss: f64) {
        self.step = self.step.max(step + 1);
        if self.steps <= MAX_POINTS || step % self.steps.div_ceil(MAX_POINTS) == 0 {
            self.train.push((step as f64, loss));
        }
    }

    /// A validation loss measured at `step`.
    pub(crate) fn val_loss(&mut self, step: usize, loss: f64) {
        self.step = self.step.max(step + 1);
        self.val.push((step as f64, loss));
    }

    /// The steps the run will take.
    pub(crate) fn steps(&self) -> usize {
        self.steps
    }

    /// Redraw if [`REDRAW_EVERY`] has passed since the last time, or always when `last`.
    pub(crate) fn show_now_and_then(&mut self, last: bool) {
        if last || self.last_drawn.elapsed() > REDRAW_EVERY {
            self.last_drawn = Instant::now();
            self.show();
        }
    }

    /// Redraw now.
    pub(crate) fn show(&mut self) {
        self.drawn_step = Some(self.step);
        if !crate::notebook::attached() {
            eprint!("\r{}   ", self.line());
            return;
        }
        let series = vec![
            ("train_loss".to_string(), self.train.clone()),
            ("val_loss".to_string(), self.val.clone()),
        ];
        let view = ProgressView(
            self.line(),
            crate::show::svg_lines(&series, &format!("{}: loss", self.name), "step"),
        );
        match &self.handle {
            Some(h) => h.update(&view),
            None => self.handle = Some(DisplayHandle::new(&view)),
        }
    }

    /// The run is over: draw its last step (an interrupt or an early stop can come between
    /// two redraws); in a terminal, end the `\r` line.
    pub(crate) fn finish(&mut self) {
        if self.drawn_step != Some(self.step) {
            self.show();
        }
        if !crate::notebook::attached() {
            eprintln!();
        }
    }

    fn line(&self) -> String {
        // Four significant digits: a loss of 3e-6 reads 3.000e-6, not 0.0000.
        let last = |s: &[(f64, f64)]| {
            s.last().map_or("-".to_string(), |p| {
                recipe_archive::export::format_number(p.1)
            })
        };
        format!(
            "{} step {}/{} train_loss {} val_loss {}",
            self.name,
            self.step,
            self.steps,
            last(&self.train),
            last(&self.val)
        )
    }
}

/// A progress line with its loss plot.
struct ProgressView(String, String);

impl Show for ProgressView {
    fn text(&self) -> String {
        self.0.clone()
    }
    fn html(&self) -> String {
        format!(
            "<div><code>{}</code><br>{}</div>",
            crate::show::escape(&self.0),
            self.1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_steps_from_one_and_shows_the_last_losses() {
        let mut p = Progress::new("mlp", 100);
        assert_eq!(p.line(), "mlp step 0/100 train_loss - val_loss -");
        p.train_loss(0, 2.5);
        p.train_loss(9, 1.25);
        p.val_loss(9, 1.5);
        assert_eq!(p.line(), "mlp step 10/100 train_loss 1.250 val_loss 1.500");
        p.train_loss(10, 3e-6);
        assert!(p.line().contains("train_loss 3.000e-6"), "{}", p.line());
        // A validation loss logged for an earlier step does not move the count back.
        p.val_loss(4, 1.75);
        assert!(p.line().starts_with("mlp step 11/100"), "{}", p.line());
    }

    #[test]
    fn a_long_run_keeps_at_most_about_two_thousand_training_points() {
        let mut p = Progress::new("long", 10_000);
        for step in 0..10_000 {
            p.train_loss(step, 1.0);
        }
        // Every 5th step of 10,000.
        assert_eq!(p.train.len(), 2000);
        assert_eq!(p.train[1].0, 5.0);
    }
}
