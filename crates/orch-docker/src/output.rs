//! Outputs printed by a container: lines `::orch-output KEY=VALUE` on its stdout become
//! the phase's outputs and are kept out of the log (in every `docker.run`, local or on a
//! swarm).

use std::collections::BTreeMap;

use orch_core::{PhaseContext, Stream};

/// What starts an output line.
pub const MARKER: &str = "::orch-output ";

/// The longest output line kept (a longer one is logged as it is, not taken as an output).
const MAX_LINE: usize = 64 * 1024;

/// Splits a container's stdout into log text and output lines.
///
/// Text reaches the log as soon as it cannot start an output line any more; only a line
/// that begins like one is held until its end.
#[derive(Debug, Default)]
pub(crate) struct OutputLines {
    /// The start of a stdout line that may still be an output line.
    pending: Vec<u8>,
    /// Whether stdout is at the start of a line.
    at_line_start: bool,
    outputs: BTreeMap<String, String>,
}

impl OutputLines {
    pub(crate) fn new() -> Self {
        Self {
            at_line_start: true,
            ..Self::default()
        }
    }

    /// Takes a chunk of the container's output.
    pub(crate) fn push(&mut self, ctx: &PhaseContext, stream: Stream, chunk: &[u8]) {
        if stream != Stream::Stdout {
            ctx.output(stream, chunk);
            return;
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            if !self.at_line_start && self.pending.is_empty() {
                // In the middle of an ordinary line: pass it through up to its end.
                match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        ctx.output(stream, &rest[..=i]);
                        self.at_line_start = true;
                        rest = &rest[i + 1..];
                    }
                    None => {
                        ctx.output(stream, rest);
                        return;
                    }
                }
                continue;
            }
            // At the start of a line (or holding one that may be an output line).
            let end = rest.iter().position(|&b| b == b'\n');
            let take = end.map_or(rest.len(), |i| i + 1);
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.at_line_start = false;
            if end.is_some() {
                let line = std::mem::take(&mut self.pending);
                self.line(ctx, &line);
                self.at_line_start = true;
            } else if !could_be_marker(&self.pending) || self.pending.len() > MAX_LINE {
                ctx.output(stream, &std::mem::take(&mut self.pending));
            }
        }
    }

    /// Ends the stream: a last line without a newline is taken too.
    pub(crate) fn finish(&mut self, ctx: &PhaseContext) {
        let line = std::mem::take(&mut self.pending);
        if !line.is_empty() {
            self.line(ctx, &line);
        }
        self.at_line_start = true;
    }

    /// The outputs seen so far.
    pub(crate) fn outputs(&self) -> &BTreeMap<String, String> {
        &self.outputs
    }

    /// One whole stdout line (with its newline, if it had one).
    fn line(&mut self, ctx: &PhaseContext, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let body = text.trim_end_matches('\n').trim_end_matches('\r');
        let Some(pair) = body.strip_prefix(MARKER) else {
            ctx.output(Stream::Stdout, line);
            return;
        };
        match pair.split_once('=') {
            Some((key, value)) if valid_key(key) => {
                self.outputs.insert(key.to_owned(), value.to_owned());
            }
            _ => ctx.log(format!(
                "ignored a `{}` line: expected `KEY=VALUE` with a key of letters, digits, `_`, `-` or `.`",
                MARKER.trim_end()
            )),
        }
    }
}

/// Whether `start` is a prefix of an output line (or the marker is a prefix of it).
fn could_be_marker(start: &[u8]) -> bool {
    let m = MARKER.as_bytes();
    let n = start.len().min(m.len());
    start[..n] == m[..n]
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use orch_core::{EventSink, PhaseId, RunEvent};

    use super::*;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl EventSink for Lines {
        fn on_event(&self, event: &orch_core::Event) {
            if let RunEvent::PhaseOutput { line, .. } = &event.kind {
                self.0.lock().unwrap().push(line.clone());
            }
        }
    }

    /// Feeds `chunks` to a filter; returns the log lines and the outputs.
    fn check(chunks: &[&str]) -> (Vec<String>, BTreeMap<String, String>) {
        let lines = Arc::new(Lines::default());
        let ctx = PhaseContext::builder(PhaseId::new("p").unwrap(), "/")
            .sink(lines.clone())
            .build();
        let mut f = OutputLines::new();
        for c in chunks {
            f.push(&ctx, Stream::Stdout, c.as_bytes());
        }
        f.finish(&ctx);
        ctx.flush_output();
        let got = lines.0.lock().unwrap().clone();
        (got, f.outputs().clone())
    }

    #[test]
    fn output_lines_become_outputs_and_stay_out_of_the_log() {
        let (log, out) = check(&["hello\n::orch-output a=1\nbye\n"]);
        assert_eq!(log, ["hello", "bye"]);
        assert_eq!(out, BTreeMap::from([("a".into(), "1".into())]));
    }

    #[test]
    fn lines_split_across_chunks_are_recognised() {
        let (log, out) = check(&[
            "::orch",
            "-output ver",
            "sion=1.2",
            ".0\r\nplain",
            " text\n::orch-output last=x=y",
        ]);
        assert_eq!(log, ["plain text"]);
        assert_eq!(
            out,
            BTreeMap::from([
                ("version".into(), "1.2.0".into()),
                ("last".into(), "x=y".into())
            ])
        );
    }

    #[test]
    fn look_alikes_and_bad_lines_are_logged() {
        let (log, out) = check(&[
            ":: not an output\n",
            "x ::orch-output a=1\n",
            "::orch-output novalue\n",
            "::orch-output bad key=1\n",
        ]);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(log[0], ":: not an output");
        assert_eq!(log[1], "x ::orch-output a=1");
        assert!(
            log[2].starts_with("ignored a `::orch-output` line"),
            "{log:?}"
        );
        assert_eq!(log.len(), 4);
    }
}
