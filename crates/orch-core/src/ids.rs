//! Typed identifiers: [`PhaseId`] and [`RunId`].

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::errors::IdError;

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The id of a phase: a non-empty string of `[A-Za-z0-9_-]`.
///
/// Cloning is cheap (a reference-counted string).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhaseId(Arc<str>);

impl PhaseId {
    /// Validates `id` and wraps it.
    ///
    /// ```
    /// use orch_core::PhaseId;
    /// assert!(PhaseId::new("unit-tests_2").is_ok());
    /// assert!(PhaseId::new("bad id").is_err());
    /// ```
    pub fn new(id: impl AsRef<str>) -> Result<Self, IdError> {
        let id = id.as_ref();
        if valid_id(id) {
            Ok(Self(Arc::from(id)))
        } else {
            Err(IdError {
                what: "phase",
                id: id.to_owned(),
            })
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for PhaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for PhaseId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PhaseId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for PhaseId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PhaseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PhaseId::new(s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for PhaseId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PhaseId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]+$",
            "description": "A phase id: letters, digits, `_` and `-`."
        })
    }
}

/// The id of one run, unique within a state directory.
///
/// New ids sort by start time: `20261121T201600Z-3f2a`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(Arc<str>);

impl RunId {
    /// Makes a fresh id from the current time and a random suffix.
    pub fn generate() -> Self {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        // `2026-11-21T20:16:00Z` -> `20261121T201600Z`.
        let compact: String = now.chars().filter(|c| *c != '-' && *c != ':').collect();
        Self(Arc::from(format!("{compact}-{:04x}", fastrand::u16(..))))
    }

    /// Validates an existing id (from the command line or a state directory).
    pub fn parse(id: impl AsRef<str>) -> Result<Self, IdError> {
        let id = id.as_ref();
        if valid_id(id) && id != "latest" {
            Ok(Self(Arc::from(id)))
        } else {
            Err(IdError {
                what: "run",
                id: id.to_owned(),
            })
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RunId::parse(s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for RunId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RunId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^[A-Za-z0-9_-]+$" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_ids_are_validated() {
        for ok in ["a", "A-b_9", "unit"] {
            assert!(PhaseId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a.b", "é", "a/b"] {
            assert!(PhaseId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_padded_and_aligned_as_strings_are() {
        // Tables line ids up with a width: a run record's ids are `PhaseId`s.
        let id = PhaseId::new("ab").unwrap();
        assert_eq!(
            format!("[{id:<5}] [{id:>5}] [{id:^6}]"),
            "[ab   ] [   ab] [  ab  ]"
        );
        let run = RunId::parse("20261121T201600Z-3f2a").unwrap();
        assert_eq!(format!("{run:>22}"), " 20261121T201600Z-3f2a");
    }

    #[test]
    fn generated_run_ids_are_valid_and_sortable() {
        let id = RunId::generate();
        assert!(RunId::parse(id.as_str()).is_ok(), "{id}");
        assert_eq!(id.as_str().len(), "20261121T201600Z-3f2a".len(), "{id}");
        assert!(RunId::parse("latest").is_err());
    }
}
