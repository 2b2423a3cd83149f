//! Progress output: bars on a terminal; on anything else (a log file, CI), where bars
//! are invisible, one plain line per second on stderr.

use std::io::IsTerminal;

use indicatif::ProgressStyle;

/// The bar style every command uses.
pub(crate) fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Says when to print the next plain progress line: never on a terminal (the bars
/// show progress), else once a second.
pub(crate) struct PlainLines {
    enabled: bool,
    next_s: f64,
}

impl PlainLines {
    /// Plain lines if stderr is not a terminal.
    pub(crate) fn for_stderr() -> PlainLines {
        PlainLines {
            enabled: !std::io::stderr().is_terminal(),
            next_s: 0.0,
        }
    }

    /// Whether plain lines are printed at all.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether a line is due at `t_s` seconds (and then the next is one second on).
    pub(crate) fn due(&mut self, t_s: f64) -> bool {
        if !self.enabled || t_s < self.next_s {
            return false;
        }
        self.next_s = t_s.floor() + 1.0;
        true
    }
}
