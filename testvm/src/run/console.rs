//! The harness's own copy of the serial console: every byte with the host time it arrived,
//! so a match found later by rexpect (which drains its buffer and polls every 100 ms) can be
//! placed on its line and timed to the read that delivered it.

use std::io::{self, Read};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use regex::Regex;

/// Everything the console printed so far.
#[derive(Debug, Default)]
pub(crate) struct Transcript {
    bytes: Vec<u8>,
    /// `(end offset, time since start)` of every read, in order.
    arrivals: Vec<(usize, Duration)>,
}

/// A transcript shared between the reader thread and the harness.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedTranscript(Arc<Mutex<Transcript>>);

impl SharedTranscript {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Transcript> {
        // A panicking reader thread leaves complete data behind: appends are not torn.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A reader that copies what passes through it into a transcript.
#[derive(Debug)]
pub(crate) struct TeeReader<R> {
    inner: R,
    transcript: SharedTranscript,
    start: Instant,
}

impl<R> TeeReader<R> {
    pub(crate) fn new(inner: R, transcript: SharedTranscript, start: Instant) -> Self {
        TeeReader {
            inner,
            transcript,
            start,
        }
    }
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            // rexpect's reader thread retries after any error but EIO, forever: a broken
            // socket (QEMU killed mid-write) must look like the end of the console instead.
            Err(_) => 0,
        };
        if n > 0 {
            let elapsed = self.start.elapsed();
            let mut transcript = self.transcript.lock();
            transcript.bytes.extend_from_slice(&buf[..n]);
            let end = transcript.bytes.len();
            transcript.arrivals.push((end, elapsed));
        }
        Ok(n)
    }
}

impl Transcript {
    /// The whole transcript as text (the console is Latin-1 at heart; invalid UTF-8 is
    /// replaced, never dropped).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// When the byte before `end` arrived.
    pub(crate) fn arrival_of(&self, end: usize) -> Option<Duration> {
        let index = self
            .arrivals
            .partition_point(|(chunk_end, _)| *chunk_end < end);
        self.arrivals.get(index).map(|(_, at)| *at)
    }

    /// The line holding bytes `start..end`, without line endings; the part after the match
    /// is whatever has arrived so far.
    pub(crate) fn line_around(&self, start: usize, end: usize) -> String {
        line_around(&self.bytes, start, end)
    }

    /// The text of the line holding byte `start`, up to it.
    pub(crate) fn line_before(&self, start: usize) -> String {
        let start = start.min(self.bytes.len());
        let line_start = self.bytes[..start]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        clean(&self.bytes[line_start..start])
    }

    /// The last `count` lines.
    pub(crate) fn tail(&self, count: usize) -> String {
        tail(&self.bytes, count)
    }
}

fn line_around(bytes: &[u8], start: usize, end: usize) -> String {
    let start = start.min(bytes.len());
    let end = end.clamp(start, bytes.len());
    let line_start = bytes[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    // A match may itself end in a newline; the line is the one it started on.
    let search_from = if end > start && bytes[end - 1] == b'\n' {
        end - 1
    } else {
        end
    };
    let line_end = bytes[search_from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| search_from + i);
    clean(&bytes[line_start..line_end])
}

fn tail(bytes: &[u8], count: usize) -> String {
    let text = latin1(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.len().saturating_sub(count);
    lines[first..]
        .iter()
        .map(|line| line.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Bytes as rexpect sees them: one char per byte (Latin-1), carriage returns dropped.
fn clean(bytes: &[u8]) -> String {
    latin1(bytes).replace('\r', "")
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The printk timestamp at the start of a console line: `[    2.345678] …` → 2.345678.
pub(crate) fn printk_seconds(line: &str) -> Option<f64> {
    // The kernel prints `[%5lu.%06lu] ` (kernel/printk/printk.c, print_time); a `<N>` level
    // prefix appears with some console settings. A kernel line that cuts into systemd's
    // animated status line ("A start job is running…") comes after its ANSI erase-line escape.
    static PRINTK_TIME: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^(?:\s|\x1b\[[0-9;]*[A-Za-z])*(?:<\d+>)?\[\s*(\d+\.\d+)\]")
            .expect("a valid regex")
    });
    let captures = PRINTK_TIME.captures(line)?;
    captures[1].parse().ok()
}

/// The guest time of a match on console `line`, `before` being the line's text up to the
/// match: the line's printk timestamp ([`printk_seconds`]), or else the last one before the
/// match. A kernel-log line can land behind output that has no newline yet: a getty's
/// `login: ` prompt, a status line systemd is still drawing.
pub(crate) fn printk_seconds_of_match(line: &str, before: &str) -> Option<f64> {
    static PRINTK_TIME_ANYWHERE: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| Regex::new(r"\[\s*(\d+\.\d+)\] ").expect("a valid regex"));
    printk_seconds(line).or_else(|| {
        let last = PRINTK_TIME_ANYWHERE.captures_iter(before).last()?;
        last[1].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_line(text: &str, needle: &str, expected: &str) {
        let start = text.find(needle).unwrap();
        assert_eq!(
            line_around(text.as_bytes(), start, start + needle.len()),
            expected
        );
    }

    #[test]
    fn finds_the_line_of_a_match() {
        let console = "[    0.000000] Linux\r\n[    2.345678] Run /init as init process\r\n$ ";
        check_line(
            console,
            "Run /init",
            "[    2.345678] Run /init as init process",
        );
        check_line(console, "Linux\r\n", "[    0.000000] Linux");
        check_line(console, "$", "$ ");
        check_line("partial line so far", "line", "partial line so far");
    }

    fn check_time(line: &str, expected: Option<f64>) {
        assert_eq!(printk_seconds(line), expected, "{line:?}");
    }

    #[test]
    fn parses_printk_timestamps() {
        check_time("[    2.345678] Run /init as init process", Some(2.345678));
        check_time("[12345.000001] x", Some(12345.000001));
        check_time("<6>[    0.500000] x", Some(0.5));
        check_time("storage-init: mounted /boot", None);
        check_time("echo [ 1.0] later", None);
        check_time(
            "\x1b[K[   58.411985] systemd[1]: Reached target initrd-root-fs.target",
            Some(58.411985),
        );
        check_time("\r\x1b[0;32m OK [ 1.0] x", None);
    }

    #[test]
    fn times_a_kernel_line_behind_a_prompt() {
        let line = "initoverlayfs login: [  129.371604] initoverlayfs-test: report boot=x";
        let before = &line[..line.find("initoverlayfs-test").unwrap()];
        assert_eq!(printk_seconds_of_match(line, before), Some(129.371604));
        let line = "[    1.500000] a [    2.000000] b";
        assert_eq!(
            printk_seconds_of_match(line, &line[..line.len() - 1]),
            Some(1.5),
            "the line's own timestamp first"
        );
        assert_eq!(printk_seconds_of_match("login: report", "login: "), None);
    }

    #[test]
    fn times_a_match_by_the_read_that_delivered_it() {
        let transcript = Transcript {
            bytes: b"abcdefgh".to_vec(),
            arrivals: vec![
                (3, Duration::from_millis(10)),
                (8, Duration::from_millis(20)),
            ],
        };
        assert_eq!(transcript.arrival_of(3), Some(Duration::from_millis(10)));
        assert_eq!(transcript.arrival_of(4), Some(Duration::from_millis(20)));
        assert_eq!(transcript.arrival_of(9), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\r\nb\r\nc\r\nd", 2), "c\nd");
        assert_eq!(tail(b"a\n", 5), "a");
    }
}
