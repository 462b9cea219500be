//! Typed identifiers and names: [`PhaseId`], [`RunId`], a phase's [`KindName`] and the
//! [`Needs`] of a phase.

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

/// The name of a phase's kind (`command`, `gate`, `docker.build`, ...), as a phase and
/// its record hold it.
///
/// Cloning is cheap (a reference-counted string): every record of a run shares its
/// phase's. It compares with, and reads as, a plain string.
///
/// ```
/// use orch_core::ids::KindName;
/// let kind = KindName::from("docker.build");
/// assert_eq!(kind, "docker.build");
/// assert!(kind.starts_with("docker."));
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KindName(Arc<str>);

impl KindName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for KindName {
    /// The empty name (a phase built in code names its kind).
    fn default() -> Self {
        Self(Arc::from(""))
    }
}

impl From<&str> for KindName {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl From<String> for KindName {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

impl From<&String> for KindName {
    fn from(s: &String) -> Self {
        Self(Arc::from(s.as_str()))
    }
}

impl From<KindName> for String {
    fn from(k: KindName) -> Self {
        k.0.as_ref().to_owned()
    }
}

impl std::ops::Deref for KindName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for KindName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for KindName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for KindName {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<KindName> for &str {
    fn eq(&self, other: &KindName) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<KindName> for str {
    fn eq(&self, other: &KindName) -> bool {
        self == &*other.0
    }
}

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for KindName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for KindName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for KindName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

impl schemars::JsonSchema for KindName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "String".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(g)
    }
    fn inline_schema() -> bool {
        true
    }
}

/// The phases a phase needs, in declaration order.
///
/// Cloning is cheap (one shared list): every record of a run shares its phase's. It reads
/// as a slice of [`PhaseId`]s.
///
/// ```
/// use orch_core::PhaseId;
/// use orch_core::ids::Needs;
/// let needs: Needs = ["build", "lint"].iter().map(|i| PhaseId::new(i).unwrap()).collect();
/// assert_eq!(needs.len(), 2);
/// assert!(needs.iter().any(|n| n.as_str() == "lint"));
/// assert!(Needs::default().is_empty());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Needs(Arc<[PhaseId]>);

impl Needs {
    /// The list to change in place (copied first if it is shared).
    pub(crate) fn make_mut(&mut self) -> &mut [PhaseId] {
        if Arc::get_mut(&mut self.0).is_none() {
            self.0 = self.0.iter().cloned().collect();
        }
        Arc::get_mut(&mut self.0).unwrap_or_default()
    }
}

impl Default for Needs {
    fn default() -> Self {
        Self(Arc::new([]))
    }
}

impl std::ops::Deref for Needs {
    type Target = [PhaseId];
    fn deref(&self) -> &[PhaseId] {
        &self.0
    }
}

impl From<Vec<PhaseId>> for Needs {
    fn from(v: Vec<PhaseId>) -> Self {
        Self(Arc::from(v))
    }
}

impl FromIterator<PhaseId> for Needs {
    fn from_iter<I: IntoIterator<Item = PhaseId>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Needs {
    type Item = &'a PhaseId;
    type IntoIter = std::slice::Iter<'a, PhaseId>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<const N: usize> PartialEq<[PhaseId; N]> for Needs {
    fn eq(&self, other: &[PhaseId; N]) -> bool {
        *self.0 == other[..]
    }
}

impl PartialEq<[PhaseId]> for Needs {
    fn eq(&self, other: &[PhaseId]) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<Vec<PhaseId>> for Needs {
    fn eq(&self, other: &Vec<PhaseId>) -> bool {
        *self.0 == other[..]
    }
}

impl fmt::Debug for Needs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl Serialize for Needs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for Needs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<PhaseId>::deserialize(d).map(Self::from)
    }
}

impl schemars::JsonSchema for Needs {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Needs".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Vec::<PhaseId>::json_schema(g)
    }
    fn inline_schema() -> bool {
        true
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
