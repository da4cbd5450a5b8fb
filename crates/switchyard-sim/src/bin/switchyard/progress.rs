//! A progress bar on stderr for runs that last: it appears only after a second, and never
//! when stderr is not a terminal (indicatif's stderr target hides itself then), so piped
//! or captured output holds no control codes.
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a run goes before its bar is drawn.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A bar over `total` units, hidden for its first second.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    shown: bool,
    msg: String,
}

impl Progress {
    /// A bar counting `unit` (e.g. "tasks") up to `total`.
    pub fn new(total: u64, unit: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        let template = format!("{{msg:>16}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{eta}} left)");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self {
            bar,
            started: Instant::now(),
            shown: false,
            msg: String::new(),
        }
    }

    /// Moves the bar to `pos`, labelled `msg`.
    pub fn set(&mut self, pos: u64, msg: &str) {
        if !self.shown && self.started.elapsed() >= SHOW_AFTER {
            self.shown = true;
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        if self.shown && self.msg != msg {
            msg.clone_into(&mut self.msg);
            self.bar.set_message(self.msg.clone());
        }
        self.bar.set_position(pos);
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
