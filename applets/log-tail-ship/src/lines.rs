//! Cutting a file's bytes into lines, as they arrive in reads of any size.
//!
//! Pure: no files, no clocks. A line split across reads is carried in
//! `partial` until its newline arrives; a line longer than the cap keeps its
//! first `max` bytes and the rest is discarded up to its newline, so one
//! huge line never costs more than `max` bytes of memory.

/// One complete line, as the cutter hands it on.
#[derive(Debug, PartialEq, Eq)]
pub struct Cut<'a> {
    /// The line without its newline, cleaned (see [`clean`]).
    pub text: &'a [u8],
    /// File offset of the line's first byte.
    pub start: u64,
    /// File offset just past its newline.
    pub end: u64,
    /// Longer than the cap: `text` holds its first `max` bytes.
    pub truncated: bool,
}

/// The state of one file's line being assembled.
#[derive(Debug, Default)]
pub struct LineCutter {
    /// Offset of the first byte of the line being assembled.
    pub line_start: u64,
    /// The line so far when a read ended mid-line (at most `max` bytes).
    partial: Vec<u8>,
    /// The current line outgrew the cap: drop bytes until its newline.
    discarding: bool,
}

impl LineCutter {
    pub fn at(offset: u64) -> LineCutter {
        LineCutter {
            line_start: offset,
            ..LineCutter::default()
        }
    }

    /// Forgets the line being assembled and starts again at `offset`.
    pub fn reset(&mut self, offset: u64) {
        *self = LineCutter::at(offset);
    }

    /// Whether a line is half read (its newline not seen yet).
    pub fn mid_line(&self) -> bool {
        !self.partial.is_empty() || self.discarding
    }

    /// Cuts `data`, read at file offset `base` (just after what was fed
    /// before), into lines capped at `max` bytes and hands each to `emit`.
    /// Stops and returns false as soon as `emit` does.
    pub fn feed(
        &mut self,
        data: &[u8],
        base: u64,
        max: usize,
        mut emit: impl FnMut(Cut) -> bool,
    ) -> bool {
        let mut rest = data;
        let mut off = base;
        loop {
            if !self.mid_line() {
                // Leading NULs: what a writer without O_APPEND leaves after a
                // copytruncate (it writes at its old offset into a sparse file).
                let nul = rest.iter().take_while(|b| **b == 0).count();
                if nul > 0 {
                    rest = &rest[nul..];
                    off += nul as u64;
                    self.line_start = off;
                }
            }
            let Some(i) = memchr::memchr(b'\n', rest) else {
                self.hold(rest, max);
                return true;
            };
            let end = off + i as u64 + 1;
            let start = self.line_start;
            let ok = if self.mid_line() {
                let truncated = self.hold(&rest[..i], max);
                let ok = emit(Cut {
                    text: clean(&self.partial, start),
                    start,
                    end,
                    truncated,
                });
                self.partial.clear();
                self.discarding = false;
                ok
            } else {
                let (text, truncated) = capped(&rest[..i], max);
                emit(Cut {
                    text: clean(text, start),
                    start,
                    end,
                    truncated,
                })
            };
            self.line_start = end;
            off = end;
            rest = &rest[i + 1..];
            if !ok {
                return false;
            }
        }
    }

    /// The unterminated last line, once, when the file is done with (its
    /// writer is gone): `end` is where the file ends.
    pub fn finish(&mut self, end: u64) -> Option<Cut<'_>> {
        if !self.mid_line() {
            return None;
        }
        let start = self.line_start;
        self.line_start = end;
        Some(Cut {
            text: clean(&self.partial, start),
            start,
            end,
            truncated: std::mem::take(&mut self.discarding),
        })
    }

    /// Appends to the partial line up to the cap. Returns whether anything
    /// of the line was (ever) dropped.
    fn hold(&mut self, bytes: &[u8], max: usize) -> bool {
        let room = max.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.partial.extend_from_slice(&bytes[..room]);
            self.discarding = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
        self.discarding
    }
}

/// The first `max` bytes of `line`, and whether that cut anything.
pub fn capped(line: &[u8], max: usize) -> (&[u8], bool) {
    if line.len() > max {
        (&line[..max], true)
    } else {
        (line, false)
    }
}

/// A line's text: without a trailing `\r`, and for the file's first line
/// (`start` 0) without a UTF-8 byte order mark (as Filebeat strips it).
pub fn clean(line: &[u8], start: u64) -> &[u8] {
    let line = match start {
        0 => line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line),
        _ => line,
    };
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (text, start, end, truncated) of every line, feeding `chunks` in turn.
    fn cut(chunks: &[&[u8]], max: usize) -> Vec<(String, u64, u64, bool)> {
        let mut c = LineCutter::default();
        let mut out = Vec::new();
        let mut base = 0;
        for chunk in chunks {
            assert!(c.feed(chunk, base, max, |l| {
                out.push((
                    String::from_utf8_lossy(l.text).into_owned(),
                    l.start,
                    l.end,
                    l.truncated,
                ));
                true
            }));
            base += chunk.len() as u64;
        }
        out
    }

    fn line(t: &str, start: u64, end: u64, truncated: bool) -> (String, u64, u64, bool) {
        (t.to_string(), start, end, truncated)
    }

    #[test]
    fn lines_split_across_reads_are_joined_with_their_offsets() {
        assert_eq!(
            cut(&[b"one\ntw", b"o\n", b"", b"three", b"\n"], 100),
            [
                line("one", 0, 4, false),
                line("two", 4, 8, false),
                line("three", 8, 14, false)
            ]
        );
    }

    #[test]
    fn nothing_to_finish_after_a_newline() {
        let mut c = LineCutter::default();
        assert!(c.feed(b"a\n", 0, 100, |_| true));
        assert!(c.finish(2).is_none());
    }

    #[test]
    fn a_line_without_its_newline_is_held() {
        let mut c = LineCutter::default();
        assert!(c.feed(b"a\npartial", 0, 100, |_| true));
        assert!(c.mid_line());
        assert_eq!(c.line_start, 2);
        let last = c.finish(9).unwrap();
        assert_eq!((last.text, last.start, last.end), (&b"partial"[..], 2, 9));
    }

    #[test]
    fn long_lines_are_capped_whole_or_across_reads() {
        assert_eq!(
            cut(&[b"abcdefgh\nxy\n"], 4),
            [line("abcd", 0, 9, true), line("xy", 9, 12, false)]
        );
        // The cap is hit in the middle of a held line, then more bytes of it
        // come in reads that are dropped until the newline.
        assert_eq!(
            cut(&[b"abc", b"defg", b"hij\nk\n"], 4),
            [line("abcd", 0, 11, true), line("k", 11, 13, false)]
        );
        // Exactly the cap is not truncated.
        assert_eq!(cut(&[b"ab", b"cd\n"], 4), [line("abcd", 0, 5, false)]);
        assert_eq!(capped(b"abc", 2), (&b"ab"[..], true));
    }

    #[test]
    fn leading_nul_bytes_before_a_line_are_skipped() {
        assert_eq!(cut(&[b"\0\0\0", b"\0x\n"], 100), [line("x", 4, 6, false)]);
        // NULs inside a line are the line's.
        assert_eq!(cut(&[b"a\0b\n"], 100), [line("a\0b", 0, 4, false)]);
    }

    #[test]
    fn stopping_mid_read_keeps_the_rest_unread() {
        let mut c = LineCutter::default();
        let mut seen = 0;
        assert!(!c.feed(b"a\nb\nc\n", 0, 10, |_| {
            seen += 1;
            false
        }));
        assert_eq!(seen, 1);
        assert_eq!(c.line_start, 2);
    }

    #[test]
    fn cleaning_drops_cr_and_a_bom_at_the_file_start_only() {
        assert_eq!(clean(b"\xef\xbb\xbfhi\r", 0), b"hi");
        assert_eq!(clean(b"\xef\xbb\xbfhi", 5), b"\xef\xbb\xbfhi");
        assert_eq!(clean(b"a\r\r", 3), b"a\r");
        assert_eq!(clean(b"", 0), b"");
    }
}
