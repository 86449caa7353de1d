//! Executable comments: `/*! … */` and `/*M! … */`.
//!
//! MariaDB runs the content of `/*!NNNNN … */` (and of the MariaDB-only
//! `/*M!NNNNNN … */`) when its version is at least `NNNNN`; without a version
//! number it always runs it. mysqldump wraps half of its output this way, so
//! `/*!40101 SET NAMES utf8 */` must classify as a `SET`.
//!
//! [`expand`] blanks out the comment markers (same byte length, so offsets do
//! not move) and leaves comments for newer servers as plain comments, which
//! the lexer then skips. We assume the server is MariaDB 11.x: anything up to
//! [`SERVER_VERSION`] runs; `/*M!999999\- enable the sandbox mode */` does not.

use std::borrow::Cow;

/// The version (`MMmmpp`) we assume the backend has when deciding whether an
/// executable comment runs.
pub(crate) const SERVER_VERSION: u32 = 11_99_99;

/// Returns `src` with the markers of every executable comment that
/// [`SERVER_VERSION`] would run replaced by spaces.
pub(crate) fn expand(src: &str) -> Cow<'_, str> {
    if !src.contains("/*!") && !src.contains("/*M!") {
        return Cow::Borrowed(src);
    }
    let mut out = src.as_bytes().to_vec();
    Expander {
        bytes: src.as_bytes(),
        out: &mut out,
        pos: 0,
        in_executable: false,
    }
    .run();
    // Only ASCII bytes were replaced by ASCII spaces, so this cannot fail;
    // if it ever did, the unexpanded text is still a safe answer.
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(src),
    }
}

struct Expander<'a> {
    bytes: &'a [u8],
    out: &'a mut Vec<u8>,
    pos: usize,
    in_executable: bool,
}

impl Expander<'_> {
    fn at(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn blank(&mut self, from: usize, to: usize) {
        let to = to.min(self.out.len());
        if let Some(span) = self.out.get_mut(from..to) {
            span.fill(b' ');
        }
    }

    fn run(&mut self) {
        while let Some(b) = self.at(self.pos) {
            match b {
                b'\'' | b'"' | b'`' => self.skip_quoted(b),
                b'#' => self.skip_line(),
                b'-' if self.at(self.pos + 1) == Some(b'-')
                    && self.at(self.pos + 2).is_none_or(|c| c <= b' ') =>
                {
                    self.skip_line()
                }
                b'*' if self.in_executable && self.at(self.pos + 1) == Some(b'/') => {
                    self.blank(self.pos, self.pos + 2);
                    self.in_executable = false;
                    self.pos += 2;
                }
                b'/' if self.at(self.pos + 1) == Some(b'*') => self.comment(),
                _ => self.pos += 1,
            }
        }
    }

    /// At `/*`: opens an executable comment or skips a plain one.
    fn comment(&mut self) {
        let start = self.pos;
        let marker = match (self.at(start + 2), self.at(start + 3)) {
            (Some(b'!'), _) => 3,
            (Some(b'M'), Some(b'!')) => 4,
            _ => return self.skip_block(),
        };
        if self.in_executable {
            // MariaDB does not nest them; treat the inner one as text.
            self.pos += marker;
            return;
        }
        let (version, digits) = self.version(start + marker);
        if version.is_some_and(|v| v > SERVER_VERSION) {
            return self.skip_block();
        }
        self.blank(start, start + marker + digits);
        self.pos = start + marker + digits;
        self.in_executable = true;
    }

    /// Reads an optional 5- or 6-digit version number at `at`.
    fn version(&self, at: usize) -> (Option<u32>, usize) {
        let digits = (0..6)
            .take_while(|i| self.at(at + i).is_some_and(|b| b.is_ascii_digit()))
            .count();
        if digits < 5 {
            return (None, 0);
        }
        let number = self.bytes[at..at + digits]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        (Some(number), digits)
    }

    fn skip_block(&mut self) {
        self.pos += 2;
        while let Some(b) = self.at(self.pos) {
            self.pos += 1;
            if b == b'*' && self.at(self.pos) == Some(b'/') {
                self.pos += 1;
                return;
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.at(self.pos) {
            self.pos += 1;
            if b == b'\n' {
                return;
            }
        }
    }

    fn skip_quoted(&mut self, quote: u8) {
        self.pos += 1;
        while let Some(b) = self.at(self.pos) {
            self.pos += 1;
            if b == b'\\' && quote != b'`' {
                self.pos += 1;
            } else if b == quote {
                if self.at(self.pos) != Some(quote) {
                    return;
                }
                self.pos += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(expand("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn versioned_content_is_kept() {
        assert_eq!(
            expand("/*!40101 SET NAMES utf8 */").trim(),
            "SET NAMES utf8"
        );
        assert_eq!(expand("/*M!100100 SET x=1 */").trim(), "SET x=1");
        assert_eq!(expand("/*! SET x=1*/").trim(), "SET x=1");
        assert_eq!(
            expand("/*!50001 CREATE */ /*!50001 VIEW v AS SELECT 1 */")
                .split_whitespace()
                .count(),
            6
        );
    }

    #[test]
    fn future_versions_stay_comments() {
        let s = expand("/*M!999999\\- enable the sandbox mode */ SELECT 1");
        assert!(s.starts_with("/*M!999999"));
    }

    #[test]
    fn markers_inside_strings_and_comments_are_untouched() {
        let sql = "SELECT '/*!1 x */' -- /*! y */\n, 1 /* /*! z */";
        assert_eq!(expand(sql), sql);
    }

    #[test]
    fn lengths_are_preserved() {
        let sql = "/*!40101 SET a=1 */; /*M!100100 SET b=2 */";
        assert_eq!(expand(sql).len(), sql.len());
    }
}
