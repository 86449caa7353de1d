//! [`Secret`]: a string that never shows up in logs and is wiped when dropped.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret string (password, cluster secret, API token).
///
/// `Debug` and `Display` print `[redacted]`, so a `Config` can be logged with `{:?}`
/// without leaking anything. The value is only reachable through [`Secret::expose`], which
/// makes every use easy to find. Deserializes from a TOML string. Its bytes are overwritten
/// with zeros when it is dropped (copies made through `expose` are the caller's to wipe).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call this only where the value is actually needed.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for the empty string (the default).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `candidate` in time that depends only on the lengths, not on where the
    /// first differing byte is, so that checking a presented token leaks nothing about it.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        if ours.len() != candidate.len() {
            return false;
        }
        ours.iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_itself() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn matches_compares_whole_value() {
        let s = Secret::new("token");
        assert!(s.matches(b"token"));
        assert!(!s.matches(b"tokem"));
        assert!(!s.matches(b"toke"));
        assert!(!s.matches(b""));
        assert!(Secret::default().matches(b""));
    }

    #[test]
    fn deserializes_from_string() {
        let s: Secret = toml::Value::String("pw".into()).try_into().unwrap();
        assert_eq!(s.expose(), "pw");
        assert!(toml::Value::Integer(3).try_into::<Secret>().is_err());
    }
}
