//! Validated identifiers. Raw strings from the outside world become an [`AgentId`] or a
//! [`StepId`] only through their checking constructors.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest identifier accepted for agents, teams and custom dimensions.
pub const MAX_ID_LEN: usize = 128;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // the fields are named for what they hold
pub enum IdError {
    /// The string was empty.
    #[error("{what} is empty; give a name of 1 to {MAX_ID_LEN} characters")]
    Empty { what: &'static str },
    /// The string was too long.
    #[error("{what} {value:?} is {len} characters long; the limit is {MAX_ID_LEN}")]
    TooLong {
        what: &'static str,
        value: String,
        len: usize,
    },
    /// The string held a character outside the allowed set.
    #[error("{what} {value:?} contains {found:?} at position {position}; use letters, digits, '.', '_', '-' or ':'")]
    BadChar {
        what: &'static str,
        value: String,
        found: char,
        position: usize,
    },
    /// A custom dimension tried to take a built-in dimension's name.
    #[error("custom dimension {0:?} clashes with a built-in dimension; pick another name")]
    Reserved(String),
    /// A step id did not have the `s-<number>` shape.
    #[error("step id {0:?} is not of the form s-<number>, e.g. s-17")]
    BadStepId(String),
}

pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            what,
            value: value.chars().take(MAX_ID_LEN).collect(),
            len: value.len(),
        });
    }
    for (position, found) in value.chars().enumerate() {
        if !(found.is_ascii_alphanumeric() || matches!(found, '.' | '_' | '-' | ':')) {
            return Err(IdError::BadChar {
                what,
                value: value.to_string(),
                found,
                position,
            });
        }
    }
    Ok(())
}

/// The name of a governed agent: 1..=128 characters of `[A-Za-z0-9._:-]`.
///
/// Cheap to clone (shared string), so events and decisions can carry it freely.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(Arc<str>);

impl AgentId {
    /// Checks `value` and makes an id of it.
    pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
        let value = value.as_ref();
        check_name("agent id", value)?;
        Ok(Self(Arc::from(value)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({})", self.0)
    }
}

impl FromStr for AgentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for AgentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        AgentId::new(raw).map_err(serde::de::Error::custom)
    }
}

/// A step's number within its agent, shown as `s-<n>`. Numbers start at 1 and only grow.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(u64);

impl StepId {
    /// The step with sequence number `seq` (1-based).
    pub const fn from_seq(seq: u64) -> Self {
        Self(seq)
    }

    /// The sequence number.
    pub const fn seq(self) -> u64 {
        self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s-{}", self.0)
    }
}

impl fmt::Debug for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s-{}", self.0)
    }
}

impl FromStr for StepId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("s-")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .map(StepId)
            .ok_or_else(|| IdError::BadStepId(s.to_string()))
    }
}

impl Serialize for StepId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// Lower-case hex of bytes (`[0xab, 0x01]` -> `"ab01"`): how digests, hashes and random
/// tokens are written everywhere in warden. The one hex encoder of the workspace.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The bytes of lower-case or upper-case hex text (the inverse of [`hex`]); `None` for an odd
/// length or a character that is not a hex digit.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_writes_two_lower_case_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f, 0xff]), "00ab0fff");
        assert_eq!(hex(&[]), "");
        assert_eq!(unhex("00ab0FFF"), Some(vec![0x00, 0xab, 0x0f, 0xff]));
        assert_eq!(unhex(""), Some(vec![]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+1"), None);
    }

    #[test]
    fn agent_id_rejects_bad_characters_with_position() {
        let err = AgentId::new("bad id").unwrap_err();
        assert_eq!(
            err,
            IdError::BadChar {
                what: "agent id",
                value: "bad id".into(),
                found: ' ',
                position: 3
            }
        );
        assert!(AgentId::new("").is_err());
        assert!(AgentId::new("a".repeat(129)).is_err());
        assert_eq!(
            AgentId::new("team-a:worker_1.x").unwrap().as_str(),
            "team-a:worker_1.x"
        );
    }

    #[test]
    fn step_id_round_trips_through_text() {
        let id: StepId = "s-91".parse().unwrap();
        assert_eq!(id.seq(), 91);
        assert_eq!(id.to_string(), "s-91");
        assert!("s-0".parse::<StepId>().is_err());
        assert!("91".parse::<StepId>().is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"s-91\"");
    }
}
