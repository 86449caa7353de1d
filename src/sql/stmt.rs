//! One statement of a payload: its tokens and the text they span.

use super::lexer::Token;

/// A statement as the classifiers see it.
#[derive(Clone, Copy)]
pub(crate) struct Stmt<'a> {
    /// The whole (expanded) payload the tokens point into.
    src: &'a str,
    /// The statement's tokens, without the closing `;`.
    pub toks: &'a [Token<'a>],
}

impl<'a> Stmt<'a> {
    pub fn new(src: &'a str, toks: &'a [Token<'a>]) -> Self {
        Stmt { src, toks }
    }

    /// The whole payload the tokens point into.
    pub fn src(&self) -> &'a str {
        self.src
    }

    /// The statement's source text, from its first token to its last.
    pub fn text(&self) -> &'a str {
        match (self.toks.first(), self.toks.last()) {
            (Some(a), Some(b)) => self.src.get(a.start..b.end()).unwrap_or(""),
            _ => "",
        }
    }

    /// The statement made of the tokens from `i` on (for `SET STATEMENT … FOR
    /// <stmt>` and `ANALYZE <stmt>`).
    pub fn from(&self, i: usize) -> Stmt<'a> {
        Stmt {
            src: self.src,
            toks: self.toks.get(i..).unwrap_or_default(),
        }
    }

    /// The token at `i`, if any.
    pub fn tok(&self, i: usize) -> Option<&'a Token<'a>> {
        self.toks.get(i)
    }

    /// True when the token at `i` is the keyword `kw`.
    pub fn word_at(&self, i: usize, kw: &str) -> bool {
        self.tok(i).is_some_and(|t| t.is_word(kw))
    }

    /// The upper-cased keyword at `i` ("" when it is not a word).
    pub fn keyword_at(&self, i: usize) -> super::lexer::Upper {
        self.tok(i).map(Token::keyword).unwrap_or_default()
    }

    /// Index of the first token at or after `from` that is the keyword `kw`.
    pub fn find_word(&self, from: usize, kw: &str) -> Option<usize> {
        self.toks
            .iter()
            .skip(from)
            .position(|t| t.is_word(kw))
            .map(|p| p + from)
    }
}

impl Stmt<'_> {
    /// True when the word at `i` is called as a function: `name(` and not
    /// `schema.name(` (a stored function of that schema).
    pub fn is_call(&self, i: usize) -> bool {
        let opens = self.tok(i + 1).is_some_and(|t| t.is_punct("("));
        let qualified = i
            .checked_sub(1)
            .and_then(|p| self.tok(p))
            .is_some_and(|t| t.is_punct("."));
        opens && !qualified
    }

    /// Index just past the parenthesised group opening at `open`, or the
    /// statement's length when it is not closed.
    pub fn skip_parens(&self, open: usize) -> usize {
        let mut depth = 0usize;
        for (i, t) in self.toks.iter().enumerate().skip(open) {
            if t.is_punct("(") {
                depth += 1;
            } else if t.is_punct(")") {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
        }
        self.toks.len()
    }
}
