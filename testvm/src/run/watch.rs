//! Races one milestone against the fatal patterns on the console with rexpect's `exp_any`,
//! and places every match on its console line with its host and guest times.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rexpect::error::Error as ExpectError;
use rexpect::session::{ReadUntil, StreamSession, spawn_stream};

use super::console::{SharedTranscript, printk_seconds_of_match};
use super::error::InfraError;
use super::report::MilestoneReached;
use super::spec::{Fatal, Milestone, SEND_LINE_END};

/// How long one `exp_any` call waits before the deadline is checked again. rexpect fixes a
/// session's timeout at creation, so per-milestone timeouts are built from short calls; the
/// buffer survives a timed-out call, so nothing is lost between them.
const EXPECT_SLICE_MS: u64 = 250;

/// What the console showed.
#[derive(Debug)]
pub(crate) enum Seen {
    /// The milestone matched.
    Milestone(MilestoneReached),
    /// A fatal pattern matched first.
    Fatal { name: String, line: String },
    /// The console closed: QEMU exited.
    Eof,
    /// Nothing matched in time.
    Timeout(Duration),
}

/// The console session and the harness's position in it.
pub(crate) struct Watcher {
    session: StreamSession<UnixStream>,
    transcript: SharedTranscript,
    start: Instant,
    fatal: Vec<Fatal>,
    /// Bytes rexpect has handed out (and dropped from its buffer) so far.
    consumed: usize,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    pub(crate) fn new<R: Read + Send + 'static>(
        reader: R,
        writer: UnixStream,
        transcript: SharedTranscript,
        start: Instant,
        fatal: &[Fatal],
    ) -> Self {
        Watcher {
            session: spawn_stream(reader, writer, Some(EXPECT_SLICE_MS)),
            transcript,
            start,
            fatal: fatal.to_vec(),
            consumed: 0,
        }
    }

    /// Waits up to `timeout` for `milestone` (or, with `None`, for the console to close),
    /// whichever of it, a fatal pattern or EOF comes first.
    pub(crate) fn wait_for(
        &mut self,
        milestone: Option<&Milestone>,
        timeout: Duration,
    ) -> Result<Seen, InfraError> {
        let deadline = Instant::now() + timeout;
        loop {
            let needles: Vec<ReadUntil> = self
                .fatal
                .iter()
                .map(|f| &f.pattern)
                .chain(milestone.map(|m| &m.pattern))
                .map(|pattern| ReadUntil::Regex(pattern.clone()))
                .collect();
            match self.session.exp_any(needles) {
                Ok((before, matched)) => {
                    let start = self.consumed + before.chars().count();
                    let end = start + matched.chars().count();
                    self.consumed = end;
                    return Ok(self.classify(milestone, &matched, start, end));
                }
                Err(ExpectError::Timeout { .. }) if Instant::now() < deadline => {}
                Err(ExpectError::Timeout { .. }) => return Ok(Seen::Timeout(timeout)),
                Err(ExpectError::EOF { got, .. }) => return Ok(self.fatal_in_rest(&got)),
                Err(other) => {
                    return Err(InfraError::Io {
                        what: "reading the console",
                        source: std::io::Error::other(other.to_string()),
                    });
                }
            }
        }
    }

    /// Waits for `milestone` as [`Watcher::wait_for`] does; once it matched, types its
    /// [`Milestone::send`] text, if any, at once (a prompt waits for its answer and may give
    /// up), and records it in the [`MilestoneReached`].
    pub(crate) fn reach(&mut self, milestone: &Milestone) -> Result<Seen, InfraError> {
        let seen = self.wait_for(Some(milestone), milestone.timeout)?;
        match (seen, &milestone.send) {
            (Seen::Milestone(mut reached), Some(text)) => {
                self.send_line(text)?;
                reached.sent = Some(text.clone());
                Ok(Seen::Milestone(reached))
            }
            (seen, _) => Ok(seen),
        }
    }

    /// Which needle matched `matched`: a fatal pattern wins over the milestone.
    fn classify(
        &self,
        milestone: Option<&Milestone>,
        matched: &str,
        start: usize,
        end: usize,
    ) -> Seen {
        let transcript = self.transcript.lock();
        let line = transcript.line_around(start, end);
        if let Some(fatal) = self.fatal.iter().find(|f| f.pattern.is_match(matched)) {
            return Seen::Fatal {
                name: fatal.name.clone(),
                line,
            };
        }
        let milestone = milestone.expect("only fatal patterns are raced without a milestone");
        let host = transcript
            .arrival_of(end)
            .unwrap_or_else(|| self.start.elapsed());
        Seen::Milestone(MilestoneReached {
            name: milestone.name.clone(),
            host_ms: u64::try_from(host.as_millis()).unwrap_or(u64::MAX),
            guest_s: printk_seconds_of_match(&line, &transcript.line_before(start)),
            line,
            sent: None,
            bytes_read: None,
            read_requests: None,
        })
    }

    /// At EOF, rexpect returns what it had not matched: a fatal pattern there still counts
    /// (a panic message printed just before QEMU exits).
    fn fatal_in_rest(&mut self, rest: &str) -> Seen {
        let first = self
            .fatal
            .iter()
            .filter_map(|f| f.pattern.find(rest).map(|m| (m, f)))
            .min_by_key(|(m, _)| m.start());
        let Some((found, fatal)) = first else {
            return Seen::Eof;
        };
        let start = self.consumed + rest[..found.start()].chars().count();
        let end = start + found.as_str().chars().count();
        Seen::Fatal {
            name: fatal.name.clone(),
            line: self.transcript.lock().line_around(start, end),
        }
    }

    /// Types `text` and [`SEND_LINE_END`] on the console, flushed. rexpect's writer is a
    /// `LineWriter` that takes a short line whole into its buffer; anything less is an error.
    pub(crate) fn send_line(&mut self, text: &str) -> Result<(), InfraError> {
        let line = format!("{text}{SEND_LINE_END}");
        let error = |detail: String| InfraError::Io {
            what: "typing on the console",
            source: std::io::Error::other(detail),
        };
        let written = self.session.send(&line).map_err(|e| error(e.to_string()))?;
        if written != line.len() {
            return Err(error(format!(
                "{written} of {} bytes taken by the console writer",
                line.len()
            )));
        }
        self.session.flush().map_err(|e| error(e.to_string()))
    }

    /// The shared transcript of everything read so far.
    pub(crate) fn transcript(&self) -> SharedTranscript {
        self.transcript.clone()
    }

    /// The last `lines` console lines.
    pub(crate) fn console_tail(&self, lines: usize) -> String {
        self.transcript.lock().tail(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::console::TeeReader;
    use std::io::{BufRead, BufReader, Read, Write};

    /// A watcher on one end of a socket pair; the other end plays the guest's console.
    fn watcher() -> (Watcher, UnixStream) {
        let (harness, guest) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let transcript = SharedTranscript::default();
        let reader = TeeReader::new(harness.try_clone().unwrap(), transcript.clone(), start);
        let fatal = [Fatal::new("panic", "Kernel panic").unwrap()];
        (
            Watcher::new(reader, harness, transcript, start, &fatal),
            guest,
        )
    }

    /// Nothing (more) waits to be read on the guest's end.
    fn assert_nothing_typed(guest: &mut UnixStream) {
        guest.set_nonblocking(true).unwrap();
        let mut rest = [0u8; 16];
        let read = guest.read(&mut rest);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "typed: {read:?}"
        );
    }

    #[test]
    fn a_milestone_with_send_answers_its_prompt() {
        let (mut watcher, mut guest) = watcher();
        guest
            .write_all(b"[    7.5] Please enter passphrase for disk root: ")
            .unwrap();
        let prompt = Milestone::new(
            "passphrase",
            "Please enter passphrase",
            Duration::from_secs(5),
        )
        .unwrap()
        .then_send("test key");
        let Seen::Milestone(reached) = watcher.reach(&prompt).unwrap() else {
            panic!("the prompt was on the console");
        };
        assert_eq!(reached.sent.as_deref(), Some("test key"));
        assert_eq!(reached.guest_s, Some(7.5));
        let mut typed = String::new();
        BufReader::new(&mut guest).read_line(&mut typed).unwrap();
        assert_eq!(typed, format!("test key{SEND_LINE_END}"));

        // Without `send`, nothing is typed and nothing recorded.
        guest.write_all(b"\nunlocked\n").unwrap();
        let quiet = Milestone::new("unlocked", "unlocked", Duration::from_secs(5)).unwrap();
        let Seen::Milestone(reached) = watcher.reach(&quiet).unwrap() else {
            panic!("the line was on the console");
        };
        assert_eq!(reached.sent, None);
        assert_nothing_typed(&mut guest);
    }

    #[test]
    fn a_fatal_line_before_the_prompt_sends_nothing() {
        let (mut watcher, mut guest) = watcher();
        guest.write_all(b"Kernel panic - not syncing\n").unwrap();
        let prompt = Milestone::new("passphrase", "Please enter", Duration::from_secs(5))
            .unwrap()
            .then_send("test key");
        assert!(matches!(
            watcher.reach(&prompt).unwrap(),
            Seen::Fatal { .. }
        ));
        assert_nothing_typed(&mut guest);
    }
}
