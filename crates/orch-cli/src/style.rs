//! How orch looks on a terminal: colour, status words and marks, durations, one-line
//! text, and the result and warning lines of a finished phase. Shared by the plain
//! printer, the live view and the summary; it depends on none of them.

use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::time::Duration;

use clap::ValueEnum;
use orch_core::{PhaseStatus, Reason};

/// `--color`: whether status words are coloured.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

impl ColorChoice {
    /// Whether to colour what goes to stderr.
    pub fn enabled(self) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && !term_is_dumb()
                    && std::io::stderr().is_terminal()
            }
        }
    }
}

pub(crate) fn term_is_dumb() -> bool {
    std::env::var_os("TERM").is_some_and(|t| t == "dumb")
}

/// Whether the locale can show Unicode (spinner and bar glyphs); ASCII otherwise.
pub fn unicode_locale() -> bool {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("utf-8") || v.contains("utf8")
        })
}

/// Paints status words (and nothing else) when colour is on.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    color: bool,
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl Style {
    /// A style that colours when `color` is true.
    pub fn new(color: bool) -> Self {
        Self { color }
    }

    /// Whether it colours.
    pub fn color(self) -> bool {
        self.color
    }

    fn paint(self, text: &str, code: &str) -> String {
        if self.color && !text.is_empty() {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn code(status: PhaseStatus, allowed: bool) -> &'static str {
        match status {
            PhaseStatus::Succeeded => GREEN,
            PhaseStatus::Failed | PhaseStatus::TimedOut if allowed => YELLOW,
            PhaseStatus::Failed | PhaseStatus::TimedOut => RED,
            PhaseStatus::Cancelled | PhaseStatus::Blocked => YELLOW,
            PhaseStatus::Skipped | PhaseStatus::Running => CYAN,
        }
    }

    /// `text` (a status word) padded to `width`, coloured for `status`; the padding stays
    /// outside the colour so columns line up.
    pub fn status_padded(
        self,
        text: &str,
        status: PhaseStatus,
        allowed: bool,
        width: usize,
    ) -> String {
        let pad = width.saturating_sub(text.chars().count());
        format!(
            "{}{}",
            self.paint(text, Self::code(status, allowed)),
            " ".repeat(pad)
        )
    }

    /// A warning word (`retry`).
    pub fn warn(self, text: &str) -> String {
        self.paint(text, YELLOW)
    }

    /// The run's verdict word.
    pub fn verdict(self, text: &str, ok: bool) -> String {
        self.paint(text, if ok { GREEN } else { RED })
    }

    /// Secondary text (a phase's last log line in the live view).
    pub fn dim(self, text: &str) -> String {
        self.paint(text, DIM)
    }
}

/// The short status word of a finished-phase line.
pub fn mark(status: PhaseStatus, allowed: bool) -> &'static str {
    match status {
        PhaseStatus::Succeeded => "ok",
        PhaseStatus::Failed | PhaseStatus::TimedOut if allowed => "FAIL (allowed)",
        PhaseStatus::Failed => "FAIL",
        PhaseStatus::TimedOut => "TIMEOUT",
        PhaseStatus::Cancelled => "CANCEL",
        PhaseStatus::Skipped => "skip",
        PhaseStatus::Blocked => "BLOCKED",
        PhaseStatus::Running => "running",
    }
}

/// A duration as people read it: `250ms`, `3.4s`, `2m05s`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// `text` on one line without control characters: ANSI escape sequences are removed
/// (kept when `keep_ansi`), tabs become spaces, line breaks become ` `, other control
/// characters are dropped.
pub fn one_line(text: &str, keep_ansi: bool) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                let mut seq = String::from(c);
                // CSI: ESC [ params final (0x40..=0x7e); OSC: ESC ] ... BEL or ESC \.
                match chars.peek() {
                    Some('[') => {
                        seq.extend(chars.next());
                        while let Some(&n) = chars.peek() {
                            seq.push(n);
                            chars.next();
                            if ('\x40'..='\x7e').contains(&n) {
                                break;
                            }
                        }
                        // Only colour (SGR) may pass; cursor motion never does.
                        if keep_ansi && seq.ends_with('m') {
                            out.push_str(&seq);
                        }
                    }
                    Some(']') => {
                        while let Some(n) = chars.next() {
                            if n == '\x07' || (n == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                                break;
                            }
                        }
                    }
                    _ => {
                        chars.next();
                    }
                }
            }
            '\t' => out.push_str("    "),
            '\n' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Skips of phases that were never in play (left out by `--only`/`--from`): not worth a
/// line.
pub fn is_unselected(status: PhaseStatus, duration: Duration, cause: Option<&Reason>) -> bool {
    status == PhaseStatus::Skipped && duration.is_zero() && cause.is_some_and(Reason::is_unselected)
}

/// The one-line result of a finished phase, as the plain printer and the live view show it.
pub fn finished_line(
    style: Style,
    phase: &str,
    status: PhaseStatus,
    allowed: bool,
    attempts: u32,
    duration: Duration,
    reason: Option<&str>,
) -> String {
    let word = mark(status, allowed);
    let width = (word.len() + 1).max(8);
    let mut line = format!(
        "  {}{phase} ({})",
        style.status_padded(word, status, allowed, width),
        fmt_duration(duration)
    );
    if attempts > 1 {
        line.push_str(&format!(" after {attempts} attempts"));
    }
    if let Some(r) = reason {
        line.push_str(": ");
        line.push_str(&one_line(r, false));
    }
    line
}

/// `  warning build: log incomplete: ...`: something about a phase that did not change
/// its status.
pub fn warning_line(style: Style, phase: &str, warning: &str) -> String {
    format!(
        "  {} {phase}: {}",
        style.warn("warning"),
        one_line(warning, false)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_strips_control_characters() {
        assert_eq!(one_line("plain", false), "plain");
        assert_eq!(
            one_line("\x1b[1;31merror\x1b[0m: x\ty\r", false),
            "error: x    y"
        );
        assert_eq!(
            one_line("\x1b[1;31merror\x1b[0m\x1b[2K", true),
            "\x1b[1;31merror\x1b[0m"
        );
        assert_eq!(one_line("a\nb", false), "a b");
        assert_eq!(one_line("\x1b]0;title\x07text", false), "text");
        assert_eq!(one_line("\x1b]8;;http://x\x1b\\link", false), "link");
    }

    #[test]
    fn status_words_are_padded_outside_the_colour() {
        let plain = Style::new(false);
        assert_eq!(
            plain.status_padded("ok", PhaseStatus::Succeeded, false, 5),
            "ok   "
        );
        let color = Style::new(true);
        assert_eq!(
            color.status_padded("ok", PhaseStatus::Succeeded, false, 5),
            "\x1b[32mok\x1b[0m   "
        );
    }

    #[test]
    fn long_status_words_keep_a_space_before_the_phase() {
        let line = finished_line(
            Style::new(false),
            "lint",
            PhaseStatus::Failed,
            true,
            1,
            Duration::from_millis(5),
            None,
        );
        assert_eq!(line, "  FAIL (allowed) lint (5ms)");
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(3400)), "3.4s");
        assert_eq!(fmt_duration(Duration::from_secs(125)), "2m05s");
    }
}
