//! A small YAML value tree over `serde-saphyr` that keeps what Compose checks need:
//! repeated keys (so duplicates can be reported instead of failing the parse) and the line
//! of every key. Anchors, aliases and `<<` merge keys are resolved by the parser.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A parsed YAML node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Yaml {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    /// Entries in document order, duplicates included; merged entries follow explicit ones.
    Map(Vec<(Key, Yaml)>),
}

/// A mapping key as text, with its 1-based line (0 when unknown).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Key {
    pub text: String,
    pub line: u64,
}

impl Yaml {
    /// Parses a document. Duplicate keys are kept (see [`Yaml::duplicates`]).
    pub fn parse(text: &str) -> Result<Yaml, ParseFailure> {
        let options = serde_saphyr::options! {
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        };
        serde_saphyr::from_str_with_options::<Yaml>(text, options).map_err(|e| {
            let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
            // The rendered error carries a snippet; keep the first line, it says what.
            let message = e
                .to_string()
                .lines()
                .next()
                .unwrap_or("invalid YAML")
                .trim_start_matches("error: ")
                .to_owned();
            ParseFailure { line, message }
        })
    }

    /// The value of `key`, for mappings; of repeated keys the last one wins (merged
    /// entries never repeat an explicit key: the parser drops the merged one).
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The entry named `key` with its key, for mappings (last one wins).
    pub fn entry(&self, key: &str) -> Option<(&Key, &Yaml)> {
        match self {
            Yaml::Map(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.text == key)
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// Entries of a mapping in document order, one per key (the last of repeated keys).
    pub fn entries(&self) -> Vec<(&Key, &Yaml)> {
        match self {
            Yaml::Map(entries) => entries
                .iter()
                .enumerate()
                .filter(|(i, (k, _))| !entries[i + 1..].iter().any(|(k2, _)| k2.text == k.text))
                .map(|(_, (k, v))| (k, v))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A scalar as text (`null` is `None`).
    pub fn scalar(&self) -> Option<String> {
        match self {
            Yaml::Bool(b) => Some(b.to_string()),
            Yaml::Int(i) => Some(i.to_string()),
            Yaml::Float(f) => Some(f.to_string()),
            Yaml::Str(s) => Some(s.clone()),
            Yaml::Null | Yaml::Seq(_) | Yaml::Map(_) => None,
        }
    }

    /// Whether this is a mapping.
    pub fn is_map(&self) -> bool {
        matches!(self, Yaml::Map(_))
    }

    /// Every repeated key: a dotted path to the mapping, the key, and the line of the repeat.
    pub fn duplicates(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        self.collect_duplicates("", &mut out);
        out
    }

    fn collect_duplicates(&self, path: &str, out: &mut Vec<(String, String, u64)>) {
        match self {
            Yaml::Map(entries) => {
                let mut seen: Vec<&str> = Vec::new();
                for (k, v) in entries {
                    if seen.contains(&k.text.as_str()) {
                        out.push((path.to_owned(), k.text.clone(), k.line));
                    } else {
                        seen.push(&k.text);
                    }
                    let child = if path.is_empty() {
                        k.text.clone()
                    } else {
                        format!("{path}.{}", k.text)
                    };
                    v.collect_duplicates(&child, out);
                }
            }
            Yaml::Seq(items) => {
                for (i, v) in items.iter().enumerate() {
                    v.collect_duplicates(&format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    /// Calls `f` with every string scalar (values, not keys) and the line of the nearest key.
    pub fn visit_strings(&self, line: u64, f: &mut dyn FnMut(&str, u64)) {
        match self {
            Yaml::Str(s) => f(s, line),
            Yaml::Seq(items) => items.iter().for_each(|v| v.visit_strings(line, f)),
            Yaml::Map(entries) => entries.iter().for_each(|(k, v)| v.visit_strings(k.line, f)),
            _ => {}
        }
    }
}

/// Why a YAML document did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParseFailure {
    pub line: Option<u64>,
    pub message: String,
}

struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Yaml::deserialize(d)?;
        Ok(KeyText(match value {
            Yaml::Null => "null".to_owned(),
            Yaml::Seq(_) | Yaml::Map(_) => "<complex key>".to_owned(),
            other => other.scalar().unwrap_or_default(),
        }))
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Yaml, E> {
        Ok(i128::try_from(v).map_or_else(|_| Yaml::Str(v.to_string()), Yaml::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Yaml, E> {
        Ok(Yaml::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_none<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Yaml::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<serde_saphyr::Spanned<KeyText>>()? {
            let value = map.next_value()?;
            entries.push((
                Key {
                    text: key.value.0,
                    line: key.referenced.line(),
                },
                value,
            ));
        }
        Ok(Yaml::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_duplicates_and_resolves_merges() {
        let y = Yaml::parse(
            "x-base: &base\n  restart: always\nservices:\n  api:\n    <<: *base\n    image: a\n    image: b\n",
        )
        .unwrap();
        let api = y.get("services").and_then(|s| s.get("api")).unwrap();
        assert_eq!(
            api.get("restart").and_then(Yaml::scalar).as_deref(),
            Some("always")
        );
        assert_eq!(
            y.duplicates(),
            vec![("services.api".to_owned(), "image".to_owned(), 7)]
        );
    }

    #[test]
    fn reports_the_line_of_a_syntax_error() {
        let e = Yaml::parse("services:\n  a: [1,\n  b: {\n").unwrap_err();
        assert!(e.line.is_some(), "{e:?}");
        assert!(!e.message.is_empty());
    }
}
