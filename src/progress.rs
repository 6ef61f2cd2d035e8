//! Progress bars with throughput and time left, for training epochs, evaluation passes,
//! feature extraction and downloads (indicatif). They draw on stderr only when it is a terminal
//! and `--quiet` is not given; otherwise they draw nothing, and commands keep their one line
//! per epoch or file on stdout.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// What a bar counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Batches, samples or clips: shown as `done/total`, items per second.
    Items,
    /// Bytes: shown with binary prefixes, bytes per second.
    Bytes,
}

/// One progress bar; invisible when not drawing.
pub struct Progress {
    bar: ProgressBar,
    message_shown: Option<Instant>,
}

impl Progress {
    /// How often a message that costs something to compute (a device read) is refreshed.
    const MESSAGE_INTERVAL: Duration = Duration::from_millis(500);

    /// A bar of `total` units labelled `label`; drawn only on a terminal and when not `quiet`.
    pub fn new(label: &str, total: u64, unit: Unit, quiet: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total), draw_target(quiet));
        let counts = match unit {
            Unit::Items => "{pos}/{len} {per_sec}",
            Unit::Bytes => "{bytes}/{total_bytes} {bytes_per_sec}",
        };
        let template = format!("{{prefix}} [{{bar:24}}] {counts}, {{eta}} left {{msg}}");
        bar.set_style(ProgressStyle::with_template(&template).expect("a valid template").progress_chars("#>-"));
        bar.set_prefix(label.to_string());
        Progress { bar, message_shown: None }
    }

    /// Whether the bar draws anything (so that a caller can skip computing its message).
    pub fn is_drawn(&self) -> bool {
        !self.bar.is_hidden()
    }

    pub fn set_position(&self, done: u64) {
        self.bar.set_position(done);
    }

    pub fn advance(&self, by: u64) {
        self.bar.inc(by);
    }

    /// Sets the message from `message()` at most every half second, and on the last unit.
    pub fn refresh_message(&mut self, message: impl FnOnce() -> String) {
        let last = self.bar.length().is_some_and(|total| self.bar.position() >= total);
        let due = self.message_shown.is_none_or(|at| at.elapsed() >= Self::MESSAGE_INTERVAL);
        if self.is_drawn() && (due || last) {
            self.message_shown = Some(Instant::now());
            self.bar.set_message(message());
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn draw_target(quiet: bool) -> ProgressDrawTarget {
    if quiet || !std::io::stderr().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    }
}
