//! What validation reports: [`Diagnostic`]s, the [`ConfigError`] that carries them, and the
//! did-you-mean matcher for misspelled keys.

use std::fmt;
use std::path::PathBuf;

/// How bad a [`Diagnostic`] is. Any `Error` refuses the file; warnings are printed and the
/// node starts anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// What kind of problem a [`Diagnostic`] is, for callers (and tests) that act on the kind
/// rather than on the wording of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// The file could not be read.
    Unreadable,
    /// The text is not valid TOML. The diagnostic has a [`Location`].
    Syntax,
    /// A key or section that WolfScale does not know.
    UnknownKey,
    /// A required key is absent (including one required by another key, such as `tls_key`
    /// when `tls_cert` is set).
    MissingKey,
    /// A value of the wrong TOML type (`port = "abc"`).
    WrongType,
    /// A number outside its documented bounds.
    OutOfRange,
    /// A value of the right type that does not parse (an address, an empty name).
    InvalidValue,
    /// A path that does not exist or is not a file.
    FileNotFound,
    /// Two settings that contradict each other (a peer that is this node, a peer listed
    /// twice, two listeners on one port).
    Conflict,
    /// A legal setting that is probably a mistake (always a warning).
    Discouraged,
}

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` in `text`. Columns count characters, not bytes.
    /// Offsets past the end, or inside a character, are clamped rather than trusted.
    pub(crate) fn of_offset(text: &str, offset: usize) -> Location {
        let before = &text.as_bytes()[..offset.min(text.len())];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        // Count characters by skipping UTF-8 continuation bytes.
        let column = 1 + before[line_start..]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        Location { line, column }
    }
}

/// One problem found in a config file: which file, which key, what is wrong.
///
/// Displays as one line, for example
///
/// ```text
/// error: wolfscale.toml:3:1: node.dvertise_address: unknown key (did you mean `advertise_address`?)
/// ```
///
/// The `:line:column` part is present when the key could be located in the text; the key
/// part is absent when `key` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The config file, as it was named when loading (or `<memory>`).
    pub file: PathBuf,
    /// The dotted key (`node.advertise_address`, `cluster.peers[1]`, or just the section
    /// name). Empty when the problem is not about one key (unreadable file, TOML syntax).
    pub key: String,
    /// The reason, carrying the offending value where there is one.
    pub message: String,
    /// For unknown keys: the closest known key. A bare name (`advertise_address`) when it is
    /// in the same section, a dotted one (`cluster.peers`) when it lives elsewhere.
    pub suggestion: Option<String>,
    pub problem: Problem,
    /// Where in the file, when known.
    pub location: Option<Location>,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.file.display())?;
        if let Some(loc) = self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(suggestion) = &self.suggestion {
            write!(f, " (did you mean `{suggestion}`?)")?;
        }
        Ok(())
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// At least one error diagnostic. `diagnostics` holds the warnings too, in file order;
    /// `Display` lists only the errors, one per line, after a summary line.
    #[error("{}", ErrorList { path, diagnostics })]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// Every diagnostic (errors and warnings); empty for [`ConfigError::Read`].
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ConfigError::Read { path, .. } | ConfigError::Invalid { path, .. } => path,
        }
    }
}

struct ErrorList<'a> {
    path: &'a std::path::Path,
    diagnostics: &'a [Diagnostic],
}

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.diagnostics.iter().filter(|d| d.is_error());
        let n = errors.clone().count();
        write!(
            f,
            "{}: invalid configuration ({n} error{})",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for d in errors {
            write!(f, "\n{d}")?;
        }
        Ok(())
    }
}

/// The candidate closest to `typo` by edit distance, if it is close enough to be a plausible
/// misspelling. Case and `-` versus `_` are ignored, so `Bind-Address` finds `bind_address`.
pub(crate) fn closest<'a>(
    typo: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let typo = normalize(typo);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&typo, &normalize(c)), c))
        .filter(|&(distance, c)| is_plausible(distance, typo.chars().count().max(c.len())))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

fn normalize(key: &str) -> String {
    key.to_ascii_lowercase().replace('-', "_")
}

/// One edit in three characters: `databse`→`database` and `bind_addr`→`bind_address`
/// qualify, `host`→`port` does not.
fn is_plausible(distance: usize, len: usize) -> bool {
    distance == 0 || distance * 3 <= len.max(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos() {
        let keys = ["id", "bind_address", "advertise_address", "data_dir"];
        assert_eq!(closest("dvertise_address", keys), Some("advertise_address"));
        assert_eq!(closest("bind-address", keys), Some("bind_address"));
        assert_eq!(closest("Bind_Addr", keys), Some("bind_address"));
        assert_eq!(closest("ids", keys), Some("id"));
        assert_eq!(closest("datadir", keys), Some("data_dir"));
        assert_eq!(closest("completely_else", keys), None);
        assert_eq!(closest("x", keys), None);
        let sections = ["node", "database", "wal", "cluster", "api", "proxy"];
        assert_eq!(closest("databse", sections), Some("database"));
        assert_eq!(closest("proxi", sections), Some("proxy"));
        assert_eq!(closest("host", ["port"]), None);
    }

    #[test]
    fn location_counts_lines_and_chars() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(
            Location::of_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        assert_eq!(
            Location::of_offset(text, 6),
            Location { line: 2, column: 1 }
        );
        // "é" is two bytes but one column.
        assert_eq!(
            Location::of_offset(text, 9),
            Location { line: 2, column: 3 }
        );
        // Out of range and mid-character offsets do not panic.
        let _ = Location::of_offset(text, 8);
        assert_eq!(Location::of_offset(text, 1000).line, 3);
    }

    #[test]
    fn display_has_file_key_reason_and_hint() {
        let d = Diagnostic {
            severity: Severity::Error,
            file: PathBuf::from("wolfscale.toml"),
            key: "node.dvertise_address".into(),
            message: "unknown key".into(),
            suggestion: Some("advertise_address".into()),
            problem: Problem::UnknownKey,
            location: None,
        };
        assert_eq!(
            d.to_string(),
            "error: wolfscale.toml: node.dvertise_address: unknown key (did you mean `advertise_address`?)"
        );
        let d = Diagnostic {
            location: Some(Location { line: 3, column: 1 }),
            ..d
        };
        assert!(d
            .to_string()
            .starts_with("error: wolfscale.toml:3:1: node."));
    }
}
