//! A zero-copy MariaDB lexer.
//!
//! It turns one COM_QUERY payload (after [`super::versioned::expand`]) into a
//! flat list of [`Token`]s that borrow from the text. Comments and whitespace
//! are dropped. It knows just enough of MariaDB's lexical rules for
//! classification: `'…'`/`"…"` strings with backslash escapes and doubled
//! quotes (the default `sql_mode`), `` `…` `` identifiers, `@user` and
//! `@@system` variables, `-- `, `#` and `/* */` comments.
//!
//! We use our own lexer rather than sqlparser's tokenizer because this runs on
//! every query: sqlparser allocates a `String` per token, this allocates one
//! `Vec` per payload. It works on bytes and only cuts at ASCII bytes, so every
//! slice is valid UTF-8, and it never panics, whatever the input.

/// What a token is; its text says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An unquoted identifier or keyword.
    Word,
    /// A `` `quoted` `` identifier.
    QuotedIdent,
    /// A `'…'` or `"…"` string literal, quotes included.
    Str,
    /// Anything that starts with a digit.
    Number,
    /// `@name`, `@'name'`, `` @`name` ``.
    UserVar,
    /// `@@name`, `@@global.name`, `@@session.name`.
    SysVar,
    /// A `?` placeholder.
    Param,
    /// One punctuation byte, or `:=`.
    Punct,
}

/// One token: its kind and its text, borrowed from the source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    pub kind: Kind,
    pub text: &'a str,
    /// Byte offset of `text` in the source.
    pub start: usize,
}

impl Token<'_> {
    /// Byte offset just past the token.
    pub fn end(&self) -> usize {
        self.start + self.text.len()
    }

    /// True when this is the unquoted keyword `kw` (ASCII case-insensitive).
    pub fn is_word(&self, kw: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(kw)
    }

    /// True when this is the punctuation `p`.
    pub fn is_punct(&self, p: &str) -> bool {
        self.kind == Kind::Punct && self.text == p
    }

    /// The upper-cased text of a word, for `match`ing keywords; "" for
    /// anything else, and for words too long to be a keyword.
    pub fn keyword(&self) -> Upper {
        if self.kind == Kind::Word {
            Upper::of(self.text)
        } else {
            Upper::default()
        }
    }
}

/// A short upper-cased copy of a word on the stack, so that keyword matching
/// does not allocate.
#[derive(Default)]
pub(crate) struct Upper {
    buf: [u8; 32],
    len: usize,
}

impl Upper {
    /// Upper-cases `s`, or gives "" when `s` is longer than any keyword or is
    /// not ASCII.
    pub fn of(s: &str) -> Self {
        let mut up = Upper::default();
        if s.len() <= up.buf.len() && s.is_ascii() {
            up.buf[..s.len()].copy_from_slice(s.as_bytes());
            up.buf[..s.len()].make_ascii_uppercase();
            up.len = s.len();
        }
        up
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// Splits `src` into tokens.
pub(crate) fn lex(src: &str) -> Vec<Token<'_>> {
    let mut lexer = Lexer {
        src,
        bytes: src.as_bytes(),
        pos: 0,
        out: Vec::with_capacity(src.len() / 4 + 4),
    };
    lexer.run();
    lexer.out
}

struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    out: Vec<Token<'a>>,
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl<'a> Lexer<'a> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn run(&mut self) {
        while let Some(b) = self.peek(0) {
            let start = self.pos;
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.pos += 1,
                b'#' => self.skip_line(),
                b'-' if self.is_dash_comment() => self.skip_line(),
                b'/' if self.peek(1) == Some(b'*') => self.skip_block_comment(),
                b'\'' | b'"' => {
                    self.skip_quoted(b);
                    self.push(Kind::Str, start);
                }
                b'`' => {
                    self.skip_quoted(b);
                    self.push(Kind::QuotedIdent, start);
                }
                b'@' => self.variable(start),
                b'?' => {
                    self.pos += 1;
                    self.push(Kind::Param, start);
                }
                b'0'..=b'9' => {
                    self.skip_ident();
                    self.push(Kind::Number, start);
                }
                b':' if self.peek(1) == Some(b'=') => {
                    self.pos += 2;
                    self.push(Kind::Punct, start);
                }
                _ if is_ident_byte(b) => {
                    self.skip_ident();
                    self.push(Kind::Word, start);
                }
                // Not an identifier byte, so ASCII: a one-byte cut is safe.
                _ => {
                    self.pos += 1;
                    self.push(Kind::Punct, start);
                }
            }
        }
    }

    fn push(&mut self, kind: Kind, start: usize) {
        let end = self.pos.min(self.bytes.len());
        if let Some(text) = self.src.get(start..end) {
            self.out.push(Token { kind, text, start });
        }
    }

    /// `--` starts a comment only when followed by whitespace, a control
    /// character or the end of input (MariaDB's rule: `1--1` is arithmetic).
    fn is_dash_comment(&self) -> bool {
        self.peek(1) == Some(b'-') && self.peek(2).is_none_or(|c| c <= b' ')
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.peek(0) {
            self.pos += 1;
            if b == b'\n' {
                break;
            }
        }
    }

    /// Skips `/* … */`; an unterminated comment runs to the end.
    fn skip_block_comment(&mut self) {
        self.pos += 2;
        while let Some(b) = self.peek(0) {
            if b == b'*' && self.peek(1) == Some(b'/') {
                self.pos += 2;
                return;
            }
            self.pos += 1;
        }
    }

    /// Skips a quoted string or identifier opened by `quote`. A doubled quote
    /// is an escaped quote; in strings, so is a backslash escape.
    fn skip_quoted(&mut self, quote: u8) {
        self.pos += 1;
        while let Some(b) = self.peek(0) {
            if b == b'\\' && quote != b'`' {
                self.pos = (self.pos + 2).min(self.bytes.len());
            } else if b == quote {
                self.pos += 1;
                if self.peek(0) != Some(quote) {
                    return;
                }
                self.pos += 1;
            } else {
                self.pos += 1;
            }
        }
    }

    fn skip_ident(&mut self) {
        while self.peek(0).is_some_and(is_ident_byte) {
            self.pos += 1;
        }
    }

    /// `@@[scope.]name` or `@name` / `@'name'` / `` @`name` ``.
    fn variable(&mut self, start: usize) {
        self.pos += 1;
        if self.peek(0) == Some(b'@') {
            self.pos += 1;
            while self.peek(0).is_some_and(|b| is_ident_byte(b) || b == b'.') {
                self.pos += 1;
            }
            self.push(Kind::SysVar, start);
            return;
        }
        match self.peek(0) {
            Some(q @ (b'\'' | b'"' | b'`')) => self.skip_quoted(q),
            _ => {
                while self.peek(0).is_some_and(|b| is_ident_byte(b) || b == b'.') {
                    self.pos += 1;
                }
            }
        }
        self.push(Kind::UserVar, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        lex(sql).into_iter().map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn words_strings_and_punctuation() {
        assert_eq!(
            kinds("SELECT a FROM `t` WHERE b = 'x''y' AND c=?"),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Word, "a"),
                (Kind::Word, "FROM"),
                (Kind::QuotedIdent, "`t`"),
                (Kind::Word, "WHERE"),
                (Kind::Word, "b"),
                (Kind::Punct, "="),
                (Kind::Str, "'x''y'"),
                (Kind::Word, "AND"),
                (Kind::Word, "c"),
                (Kind::Punct, "="),
                (Kind::Param, "?"),
            ]
        );
    }

    #[test]
    fn comments_are_dropped() {
        let sql = "SELECT 1 -- c\n# d\n/* e; */ , 2 /* unterminated";
        assert_eq!(
            kinds(sql),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Number, "1"),
                (Kind::Punct, ","),
                (Kind::Number, "2"),
            ]
        );
        assert_eq!(kinds("1--1").len(), 4);
    }

    #[test]
    fn backslash_escapes_do_not_end_strings() {
        assert_eq!(kinds(r"'a\'b;c'"), vec![(Kind::Str, r"'a\'b;c'")]);
        assert_eq!(kinds("'abc\\"), vec![(Kind::Str, "'abc\\")]);
    }

    #[test]
    fn variables() {
        assert_eq!(
            kinds("SET @a := @@global.server_id, @'q r' = 1"),
            vec![
                (Kind::Word, "SET"),
                (Kind::UserVar, "@a"),
                (Kind::Punct, ":="),
                (Kind::SysVar, "@@global.server_id"),
                (Kind::Punct, ","),
                (Kind::UserVar, "@'q r'"),
                (Kind::Punct, "="),
                (Kind::Number, "1"),
            ]
        );
    }

    #[test]
    fn non_ascii_identifiers_and_cut_input() {
        assert_eq!(
            kinds("SELECT größe"),
            vec![(Kind::Word, "SELECT"), (Kind::Word, "größe")]
        );
        for sql in ["'é\\", "`é", "@'é", "\\é", "é'"] {
            let _ = lex(sql);
        }
    }
}
