//! A phase's log: its output, redacted and split into lines, written to `logs/PHASE.log`
//! and sent as events.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::events::{EventBus, RunEvent, Stream};
use crate::ids::PhaseId;
use crate::redact::{Redactor, StreamRedactor};

/// Where a phase's output goes: the log file, and output events.
pub(crate) struct PhaseLog {
    phase: PhaseId,
    bus: EventBus,
    path: Option<LogPath>,
    state: Mutex<LogState>,
}

struct LogState {
    file: Option<BufWriter<File>>,
    /// The file was created (it may have stopped being written since).
    opened: bool,
    /// The first write (or open) that failed, and how many lines were lost.
    lost: Option<LogLoss>,
    streams: [StreamRedactor; 3],
}

/// Why a phase's log file is incomplete.
struct LogLoss {
    /// The I/O error, and whether it came when creating the file.
    error: std::io::Error,
    open: bool,
    /// Lines that could not be written after the error.
    lines: u64,
}

/// Where a phase's log goes, worked out when it first writes (most phases never do).
pub(crate) enum LogPath {
    /// This file.
    File(PathBuf),
    /// `RUN_DIR/logs/PHASE.log` of this run directory.
    RunDir(Arc<Path>),
}

impl LogPath {
    fn resolve(&self, phase: &PhaseId) -> PathBuf {
        match self {
            Self::File(p) => p.clone(),
            Self::RunDir(d) => d.join("logs").join(format!("{phase}.log")),
        }
    }
}

impl PhaseLog {
    pub(crate) fn new(
        phase: PhaseId,
        bus: EventBus,
        path: Option<LogPath>,
        redactor: &Redactor,
    ) -> Self {
        Self {
            phase,
            bus,
            path,
            state: Mutex::new(LogState {
                file: None,
                opened: false,
                lost: None,
                streams: [redactor.stream(), redactor.stream(), redactor.stream()],
            }),
        }
    }

    fn stream_index(stream: Stream) -> usize {
        match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::Log => 2,
        }
    }

    /// Whether the log file was written.
    pub(crate) fn wrote_file(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).opened
    }

    /// Writes what is buffered and says whether the log file is complete: `Some(why)`
    /// when a write failed (`incomplete: ERROR (N lines lost)` or `not written: ERROR`).
    pub(crate) fn close(&self) -> Option<String> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        if let Some(f) = &mut state.file
            && let Err(e) = f.flush()
        {
            Self::failed(state, e, false, 0);
        }
        let lost = state.lost.as_ref()?;
        let what = if lost.open {
            "not written"
        } else {
            "incomplete"
        };
        let mut text = format!("{what}: {}", lost.error);
        if lost.lines > 0 {
            text.push_str(&format!(
                " ({} line{} lost)",
                lost.lines,
                if lost.lines == 1 { "" } else { "s" }
            ));
        }
        Some(text)
    }

    /// A write failed: nothing more goes to the file (what follows would not line up), and
    /// the loss is kept for the phase's record and its `PhaseFinished` event.
    fn failed(state: &mut LogState, error: std::io::Error, open: bool, lines: u64) {
        // The buffer is dropped with what it holds: it could not be written.
        if let Some(f) = state.file.take() {
            let _ = f.into_parts();
        }
        match &mut state.lost {
            Some(l) => l.lines += lines,
            None => {
                state.lost = Some(LogLoss { error, open, lines });
            }
        }
    }

    pub(crate) fn push_log(&self, line: &str) {
        self.push(Stream::Log, line.as_bytes());
    }

    pub(super) fn push(&self, stream: Stream, chunk: &[u8]) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        let mut lines = Vec::new();
        state.streams[Self::stream_index(stream)].push(chunk, |l| lines.push(l.to_owned()));
        self.write_lines(state, stream, lines);
    }

    pub(super) fn finish(&self) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        for stream in [Stream::Stdout, Stream::Stderr, Stream::Log] {
            let mut lines = Vec::new();
            state.streams[Self::stream_index(stream)].finish(|l| lines.push(l.to_owned()));
            self.write_lines(state, stream, lines);
        }
        if let Some(f) = &mut state.file
            && let Err(e) = f.flush()
        {
            Self::failed(state, e, false, 0);
        }
    }

    fn write_lines(&self, state: &mut LogState, stream: Stream, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        if !state.opened
            && state.lost.is_none()
            && let Some(path) = &self.path
        {
            let path = path.resolve(&self.phase);
            let opened = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                });
            match opened {
                Ok(f) => {
                    state.file = Some(BufWriter::new(f));
                    state.opened = true;
                }
                Err(e) => Self::failed(state, e, true, 0),
            }
        }
        for line in lines {
            if let Some(f) = &mut state.file {
                if let Err(e) = writeln!(f, "{line}") {
                    // The line may be partly in the file: it counts as lost.
                    Self::failed(state, e, false, 1);
                }
            } else if let Some(lost) = &mut state.lost {
                lost.lines += 1;
            }
            if !self.bus.is_empty() {
                self.bus.emit(RunEvent::PhaseOutput {
                    phase: self.phase.clone(),
                    stream,
                    line,
                });
            }
        }
    }
}
