//! Terminal output of `orch run`: the choice between the live view ([`crate::live`]) and
//! plain lines, and the plain line printer. How lines look is [`crate::style`]'s.
//!
//! Everything human goes to stderr; stdout is left to `--format json`.

use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex};

use clap::ValueEnum;
use orch_core::{Event, EventSink, PhaseStatus, Pipeline, RunEvent, Stream};

use crate::live::LiveProgress;
use crate::style::{
    ColorChoice, Style, finished_line, fmt_duration, is_unselected, one_line, term_is_dumb,
    warning_line,
};

/// `--progress`: how a run shows itself while it works.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// The live view when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// The live view, even when stderr is not a terminal.
    Live,
    /// One line per event, no control characters.
    Plain,
}

/// What the user asked for on the command line.
#[derive(Clone, Copy, Debug)]
pub struct OutputOptions {
    /// `--progress`.
    pub mode: ProgressMode,
    /// `--color`.
    pub color: ColorChoice,
    /// `-v`: stream every phase's output.
    pub verbose: bool,
    /// `-q`: only failures and the summary.
    pub quiet: bool,
}

/// The run's terminal output: plain lines or the live view.
pub enum Progress {
    /// One line per event.
    Plain(Arc<PlainProgress>),
    /// Spinners and an overall bar.
    Live(Arc<LiveProgress>),
}

impl Progress {
    /// The output `options` ask for, for a run of `pipeline`.
    pub fn new(options: OutputOptions, pipeline: &Pipeline) -> Self {
        let style = Style::new(options.color.enabled());
        let tty = std::io::stderr().is_terminal() && !term_is_dumb();
        let live = !options.quiet
            && match options.mode {
                ProgressMode::Plain => false,
                ProgressMode::Live => true,
                ProgressMode::Auto => tty,
            };
        if live {
            Self::Live(Arc::new(LiveProgress::new(
                style,
                options.verbose,
                pipeline,
            )))
        } else {
            Self::Plain(Arc::new(PlainProgress::new(
                options.verbose,
                options.quiet,
                style,
            )))
        }
    }

    /// The event sink to subscribe to the runner.
    pub fn sink(&self) -> Arc<dyn EventSink> {
        match self {
            Self::Plain(p) => p.clone(),
            Self::Live(l) => l.clone(),
        }
    }

    /// Prints a line now (above the live view).
    pub fn message(&self, text: &str) {
        match self {
            Self::Plain(p) => p.line(text),
            Self::Live(l) => l.message(text),
        }
    }

    /// Clears the live view; the terminal is left to the summary.
    pub fn finish(&self) {
        if let Self::Live(l) = self {
            l.finish();
        }
    }

    /// How status words are painted.
    pub fn style(&self) -> Style {
        match self {
            Self::Plain(p) => p.style,
            Self::Live(l) => l.style(),
        }
    }
}

/// Prints one line per event worth seeing, to stderr.
pub struct PlainProgress {
    verbose: bool,
    quiet: bool,
    style: Style,
    out: Mutex<std::io::Stderr>,
}

impl PlainProgress {
    /// A printer; `verbose` streams phase output, `quiet` prints failures only.
    pub fn new(verbose: bool, quiet: bool, style: Style) -> Self {
        Self {
            verbose,
            quiet,
            style,
            out: Mutex::new(std::io::stderr()),
        }
    }

    fn line(&self, text: &str) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{text}");
    }
}

impl EventSink for PlainProgress {
    fn on_event(&self, event: &Event) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = match &event.kind {
            RunEvent::RunStarted {
                run_id,
                pipeline,
                to_run,
                phases,
                ..
            } if !self.quiet => writeln!(
                out,
                "orch: running `{pipeline}` ({to_run} of {phases} phases), run {run_id}"
            ),
            RunEvent::PhaseOutput {
                phase,
                stream,
                line,
            } if self.verbose => {
                let tag = match stream {
                    Stream::Stderr => "!",
                    _ => "|",
                };
                writeln!(out, "{phase} {tag} {}", one_line(line, self.style.color()))
            }
            RunEvent::PhaseRetrying {
                phase,
                attempt,
                error,
                delay,
            } if !self.quiet => writeln!(
                out,
                "  {}   {phase}: attempt {attempt} failed ({}); next in {}",
                self.style.warn("retry"),
                one_line(error, false),
                fmt_duration(*delay)
            ),
            RunEvent::PhaseFinished {
                phase,
                status,
                attempts,
                duration,
                reason,
                cause,
                allowed_failure,
                warnings,
                ..
            } => {
                // Warnings are shown even with -q: something was not recorded.
                for w in warnings {
                    let _ = writeln!(out, "{}", warning_line(self.style, phase.as_str(), w));
                }
                let failure = status.is_failure() || *status == PhaseStatus::Blocked;
                if self.quiet && !failure {
                    return;
                }
                if !self.verbose && is_unselected(*status, *duration, cause.as_ref()) {
                    return;
                }
                writeln!(
                    out,
                    "{}",
                    finished_line(
                        self.style,
                        phase.as_str(),
                        *status,
                        *allowed_failure,
                        *attempts,
                        *duration,
                        reason.as_deref(),
                    )
                )
            }
            _ => Ok(()),
        };
    }
}
