//! The live view of `orch run` on a terminal: one line per running phase (spinner,
//! elapsed time, attempt, last log line) above an overall bar (done / total, failures);
//! finished phases scroll above as one-line results.
//!
//! Events only record what happened (under a mutex, quickly: the engine calls sinks from
//! its tasks); one drawing thread turns that into terminal output about twelve times a
//! second, so a phase that writes a flood of output never waits for the terminal.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use orch_core::{Event, EventSink, PhaseStatus, Pipeline, Reason, RunEvent, Stream};

use crate::style::{
    Style, finished_line, fmt_duration, is_unselected, one_line, unicode_locale, warning_line,
};

/// How often the view is redrawn.
const FRAME: Duration = Duration::from_millis(80);
/// Most phase lines shown at once (the rest are counted on the overall line).
const MAX_PHASE_LINES: usize = 24;

/// The live view: an [`EventSink`] plus the thread that draws it.
pub struct LiveProgress {
    shared: Arc<Shared>,
    drawer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    style: Style,
    verbose: bool,
}

#[derive(Default)]
struct State {
    /// Set by `RunStarted`.
    started: Option<Instant>,
    total: u64,
    done: u64,
    failed: u64,
    running: Vec<Running>,
    /// Lines to print above the view at the next frame.
    pending: Vec<String>,
    stop: bool,
}

#[derive(Clone)]
struct Running {
    id: String,
    since: Instant,
    attempt: u32,
    last: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LiveProgress {
    /// Starts the view for a run of `pipeline`, drawn on stderr (terminal or not:
    /// `--progress live` into a pipe draws too).
    pub fn new(style: Style, verbose: bool, pipeline: &Pipeline) -> Self {
        let retries: HashMap<String, u32> = pipeline
            .nodes()
            .iter()
            .map(|n| (n.spec.id.to_string(), n.spec.retry_limit()))
            .collect();
        let id_width = pipeline
            .nodes()
            .iter()
            .map(|n| n.spec.id.as_str().chars().count())
            .max()
            .unwrap_or(8)
            .clamp(8, 32);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            style,
            verbose,
        });
        let target = ProgressDrawTarget::term_like_with_hz(
            Box::new(Screen::new(Box::new(console::Term::buffered_stderr()))),
            20,
        );
        let drawer = Drawer {
            shared: shared.clone(),
            multi: MultiProgress::with_draw_target(target),
            overall: None,
            bars: HashMap::new(),
            retries,
            id_width,
            unicode: unicode_locale(),
        };
        let handle = std::thread::Builder::new()
            .name("orch-live".into())
            .spawn(move || drawer.run())
            .ok();
        Self {
            shared,
            drawer: Mutex::new(handle),
        }
    }

    /// How status words are painted.
    pub fn style(&self) -> Style {
        self.shared.style
    }

    /// Prints `text` above the view (at once, once the view is gone).
    pub fn message(&self, text: &str) {
        let mut st = self.shared.lock();
        if st.stop {
            drop(st);
            crate::output::errln!("{text}");
        } else {
            st.pending.push(text.to_owned());
        }
    }

    /// Prints what is pending, clears the view and stops drawing. Idempotent.
    pub fn finish(&self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        let handle = self.drawer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for LiveProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl EventSink for LiveProgress {
    fn on_event(&self, event: &Event) {
        let style = self.shared.style;
        let mut st = self.shared.lock();
        match &event.kind {
            RunEvent::RunStarted {
                run_id,
                pipeline,
                to_run,
                phases,
                ..
            } => {
                st.started = Some(Instant::now());
                st.total = *to_run as u64;
                st.pending.push(format!(
                    "orch: running `{pipeline}` ({to_run} of {phases} phases), run {run_id}"
                ));
            }
            RunEvent::PhaseStarted { phase, attempt, .. } => {
                if let Some(r) = st.running.iter_mut().find(|r| r.id == phase.as_str()) {
                    r.attempt = *attempt;
                    r.last.clear();
                } else {
                    st.running.push(Running {
                        id: phase.to_string(),
                        since: Instant::now(),
                        attempt: *attempt,
                        last: String::new(),
                    });
                }
            }
            RunEvent::PhaseOutput {
                phase,
                stream,
                line,
            } => {
                if line.trim().is_empty() && !self.shared.verbose {
                    return;
                }
                if let Some(r) = st.running.iter_mut().find(|r| r.id == phase.as_str()) {
                    r.last = one_line(line, false).trim().to_owned();
                }
                if self.shared.verbose {
                    let tag = if *stream == Stream::Stderr { "!" } else { "|" };
                    let text = format!("{phase} {tag} {}", one_line(line, style.color()));
                    st.pending.push(text);
                }
            }
            RunEvent::PhaseRetrying {
                phase,
                attempt,
                error,
                delay,
            } => {
                let text = format!(
                    "  {}   {phase}: attempt {attempt} failed ({}); next in {}",
                    style.warn("retry"),
                    one_line(error, false),
                    fmt_duration(*delay)
                );
                st.pending.push(text);
                if let Some(r) = st.running.iter_mut().find(|r| r.id == phase.as_str()) {
                    r.last = format!("attempt {attempt} failed; next in {}", fmt_duration(*delay));
                }
            }
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
                st.running.retain(|r| r.id != phase.as_str());
                for w in warnings {
                    let line = warning_line(style, phase.as_str(), w);
                    st.pending.push(line);
                }
                let unselected = is_unselected(*status, *duration, cause.as_ref());
                let resumed = *status == PhaseStatus::Skipped
                    && cause.as_ref().and_then(Reason::done_in).is_some();
                if !unselected && !resumed {
                    st.done += 1;
                    st.total = st.total.max(st.done);
                }
                if (status.is_failure() && !allowed_failure) || *status == PhaseStatus::Blocked {
                    st.failed += 1;
                }
                if !unselected || self.shared.verbose {
                    st.pending.push(finished_line(
                        style,
                        phase.as_str(),
                        *status,
                        *allowed_failure,
                        *attempts,
                        *duration,
                        reason.as_deref(),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// The drawing thread's side: the indicatif objects, touched by nobody else.
struct Drawer {
    shared: Arc<Shared>,
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    bars: HashMap<String, ProgressBar>,
    retries: HashMap<String, u32>,
    id_width: usize,
    unicode: bool,
}

struct Frame {
    started: Option<Instant>,
    total: u64,
    done: u64,
    failed: u64,
    running: Vec<Running>,
    lines: Vec<String>,
    stop: bool,
}

impl Drawer {
    fn run(mut self) {
        loop {
            let frame = {
                let mut st = self.shared.lock();
                if !st.stop {
                    st = self
                        .shared
                        .wake
                        .wait_timeout(st, FRAME)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                Frame {
                    started: st.started,
                    total: st.total,
                    done: st.done,
                    failed: st.failed,
                    running: st.running.clone(),
                    lines: std::mem::take(&mut st.pending),
                    stop: st.stop,
                }
            };
            if frame.stop {
                self.close(&frame.lines);
                return;
            }
            self.draw(frame);
        }
    }

    fn spinner_style(&self) -> ProgressStyle {
        let style = ProgressStyle::with_template("{spinner} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        if self.unicode {
            style.tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
        } else {
            style.tick_chars("|/-\\ ")
        }
    }

    fn overall_style(&self) -> ProgressStyle {
        let style = ProgressStyle::with_template("[{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        if self.unicode {
            style.progress_chars("█▉▊▋▌▍▎▏ ")
        } else {
            style.progress_chars("=> ")
        }
    }

    fn print(&self, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        self.multi.suspend(|| {
            let mut err = std::io::stderr().lock();
            for l in lines {
                let _ = writeln!(err, "{l}");
            }
            let _ = err.flush();
        });
    }

    fn draw(&mut self, frame: Frame) {
        // Finished phases leave first, so their result line replaces their spinner.
        let visible: Vec<&Running> = frame.running.iter().take(self.max_lines()).collect();
        let gone: Vec<String> = self
            .bars
            .keys()
            .filter(|id| !visible.iter().any(|r| &r.id == *id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(bar) = self.bars.remove(&id) {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
        }
        self.print(&frame.lines);
        let Some(started) = frame.started else {
            return;
        };
        let overall = match &self.overall {
            Some(o) => o.clone(),
            None => {
                let o = self
                    .multi
                    .add(ProgressBar::new(frame.total).with_style(self.overall_style()));
                self.overall = Some(o.clone());
                o
            }
        };
        for r in &visible {
            let bar = match self.bars.get(&r.id) {
                Some(b) => b.clone(),
                None => {
                    let b = self.multi.insert_before(
                        &overall,
                        ProgressBar::new_spinner().with_style(self.spinner_style()),
                    );
                    self.bars.insert(r.id.clone(), b.clone());
                    b
                }
            };
            bar.set_message(self.phase_line(r));
            bar.tick();
        }
        let mut msg = format!("{} running", frame.running.len());
        if frame.running.len() > visible.len() {
            msg.push_str(&format!(
                " ({} not shown)",
                frame.running.len() - visible.len()
            ));
        }
        if frame.failed > 0 {
            let failed = self.shared.style.status_padded(
                &format!("{} failed", frame.failed),
                PhaseStatus::Failed,
                false,
                0,
            );
            msg.push_str(&format!(" · {failed}"));
        }
        msg.push_str(&format!(" · {}", fmt_elapsed(started.elapsed())));
        overall.set_length(frame.total);
        overall.set_position(frame.done);
        overall.set_message(msg);
        overall.tick();
    }

    fn max_lines(&self) -> usize {
        let (rows, _) = console::Term::stderr().size();
        usize::from(rows)
            .saturating_sub(3)
            .clamp(1, MAX_PHASE_LINES)
    }

    fn phase_line(&self, r: &Running) -> String {
        let mut line = format!(
            "{:<w$}  {:>6}",
            r.id,
            fmt_elapsed(r.since.elapsed()),
            w = self.id_width
        );
        let retries = self.retries.get(&r.id).copied().unwrap_or(0);
        if retries > 0 || r.attempt > 1 {
            line.push_str(&format!(
                "  attempt {}/{}",
                r.attempt,
                (retries + 1).max(r.attempt)
            ));
        }
        if !r.last.is_empty() {
            line.push_str("  ");
            line.push_str(&self.shared.style.dim(&r.last));
        }
        line
    }

    /// Last frame: results still pending are printed and the view is erased.
    fn close(&mut self, lines: &[String]) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        if let Some(o) = self.overall.take() {
            o.finish_and_clear();
            self.multi.remove(&o);
        }
        let _ = self.multi.clear();
        self.print(lines);
    }
}

/// Elapsed time on a ticking line: whole seconds past ten, so the line does not jitter.
fn fmt_elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s < 10 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// Stderr as indicatif's terminal, two columns narrower than it is.
///
/// indicatif pads every line to the full width and lets the terminal wrap to the next one;
/// the cursor then waits in the last column, where the `^C` a terminal echoes on an
/// interrupt wraps and scrolls the screen by a line, leaving a stale copy of the view
/// behind. Here lines are two columns short, and the wrap is an explicit `\r\n` written
/// before the next line's text (never after the last line, so indicatif's count of lines to
/// move up stays right). Draws also when stderr is not a terminal (`--progress live`).
#[derive(Debug)]
struct Screen {
    inner: Box<dyn TermLike>,
    state: Mutex<Wrap>,
}

/// Where indicatif is in writing a line: each line is its text, then its padding.
#[derive(Debug, Default, Clone, Copy)]
struct Wrap {
    /// The next write is a line's padding.
    padding_next: bool,
    /// A line was completed: the next text starts on the next line.
    newline_due: bool,
}

impl Screen {
    fn new(inner: Box<dyn TermLike>) -> Self {
        Self {
            inner,
            state: Mutex::new(Wrap::default()),
        }
    }

    fn wrap(&self) -> MutexGuard<'_, Wrap> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cursor moved: no line is half written.
    fn reset(&self) {
        *self.wrap() = Wrap::default();
    }
}

impl TermLike for Screen {
    fn width(&self) -> u16 {
        self.inner.width().saturating_sub(2).max(20)
    }
    fn height(&self) -> u16 {
        self.inner.height()
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.reset();
        self.inner.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.reset();
        self.inner.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.reset();
        self.inner.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.reset();
        self.inner.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let due = std::mem::take(&mut *self.wrap()).newline_due;
        if due {
            self.inner.write_str("\r\n")?;
        }
        self.inner.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let mut w = self.wrap();
        if w.padding_next {
            w.padding_next = false;
            w.newline_due = true;
        } else {
            if w.newline_due {
                self.inner.write_str("\r\n")?;
            }
            w.newline_due = false;
            w.padding_next = true;
        }
        drop(w);
        self.inner.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.reset();
        self.inner.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what reaches the terminal.
    #[derive(Debug, Default, Clone)]
    struct Recorder(Arc<Mutex<String>>);

    impl TermLike for Recorder {
        fn width(&self) -> u16 {
            40
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            self.write_str(&format!("<up {n}>"))
        }
        fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
            self.write_str(&format!("<down {n}>"))
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.write_str("<clear>")
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_narrower_and_wrap_explicitly_between_lines_only() {
        let rec = Recorder::default();
        let screen = Screen::new(Box::new(rec.clone()));
        assert_eq!(screen.width(), 38);
        // A frame of two lines as indicatif writes it: text, padding; text, padding.
        for s in ["one", "   ", "two", ""] {
            screen.write_str(s).unwrap_or_default();
        }
        // The next frame moves up over it and draws again.
        screen.move_cursor_up(1).unwrap_or_default();
        screen.clear_line().unwrap_or_default();
        for s in ["three", " "] {
            screen.write_str(s).unwrap_or_default();
        }
        let seen = rec.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(seen, "one   \r\ntwo<up 1><clear>three ");
    }

    #[test]
    fn elapsed_is_steady() {
        assert_eq!(fmt_elapsed(Duration::from_millis(3400)), "3.4s");
        assert_eq!(fmt_elapsed(Duration::from_millis(12_900)), "12s");
        assert_eq!(fmt_elapsed(Duration::from_secs(61)), "1m01s");
        assert_eq!(fmt_elapsed(Duration::from_secs(3720)), "1h02m");
    }
}
