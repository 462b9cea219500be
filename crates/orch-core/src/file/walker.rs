//! The typed walk over spanned TOML values: each reader checks one value, records a located
//! problem when it is wrong, and returns what it could read.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{BACKOFF_KEYS, Key, Span, Value, is_env_name};
use crate::diagnostics::{Diagnostic, did_you_mean};
use crate::spec::Backoff;

pub(super) struct Walker {
    pub(super) diags: Vec<Diagnostic>,
    pub(super) text: Arc<str>,
    /// Each phase's tables are together in `text` (see [`super::pieces::layout`]).
    pub(super) sections: bool,
}

impl Walker {
    pub(super) fn err(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::at(Some(span), message));
    }

    pub(super) fn unknown_key(&mut self, key: &Key<'_>, table: &str, known: &[&str]) {
        let mut d = Diagnostic::at(
            Some(key.span()),
            format!("unknown key `{}` in {table}", key.get_ref()),
        );
        if let Some(help) = did_you_mean(key.get_ref(), known.iter().copied()) {
            d = d.with_help(help);
        } else {
            d = d.with_help(format!("expected one of: {}", known.join(", ")));
        }
        self.diags.push(d);
    }

    pub(super) fn table<'a, 'i>(
        &mut self,
        v: &'a Value<'i>,
        what: &str,
    ) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be a table, not {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn string(&mut self, v: &Value<'_>, what: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be a string, not {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, v: &Value<'_>, what: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be true or false, not {}", other.type_str()),
                );
                None
            }
        }
    }

    /// An integer in `min..=max`; one out of range is an error at its position, never
    /// clamped (a clamped value could land on a meaning of its own).
    pub(super) fn integer_in(
        &mut self,
        v: &Value<'_>,
        what: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.err(
                v.span(),
                format!("{what} must be an integer, not {}", v.get_ref().type_str()),
            );
            return None;
        };
        let text = i.as_str().replace('_', "");
        // Past i128 the text is only ever too large (TOML integers carry no sign for other
        // radixes, and a negative one this long is below any minimum).
        let n = i128::from_str_radix(&text, i.radix()).unwrap_or(if text.starts_with('-') {
            i128::MIN
        } else {
            i128::MAX
        });
        if n < i128::from(min) {
            self.err(
                v.span(),
                format!("{what} must be at least {min}, not {}", i.as_str()),
            );
            None
        } else if n > i128::from(max) {
            self.err(
                v.span(),
                format!("{what} must be at most {max}, not {}", i.as_str()),
            );
            None
        } else {
            i64::try_from(n).ok()
        }
    }

    pub(super) fn float(&mut self, v: &Value<'_>, what: &str) -> Option<f64> {
        match v.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse().ok(),
            DeValue::Integer(i) => i.as_str().replace('_', "").parse().ok(),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be a number, not {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn duration(&mut self, v: &Value<'_>, what: &str) -> Option<Duration> {
        let s = self.string(v, what)?;
        match humantime::parse_duration(s.trim()) {
            Ok(d) => Some(d),
            Err(_) => {
                let mut d =
                    Diagnostic::at(Some(v.span()), format!("{what} \"{s}\" is not a duration"));
                d = d.with_help("use a number with a unit: \"250ms\", \"30s\", \"10m\", \"1h\"");
                self.diags.push(d);
                None
            }
        }
    }

    pub(super) fn strings(&mut self, v: &Value<'_>, what: &str) -> Option<Vec<Spanned<String>>> {
        match v.get_ref() {
            DeValue::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for item in a.iter() {
                    if let Some(s) = self.string(item, &format!("each entry of {what}")) {
                        out.push(Spanned::new(item.span(), s));
                    }
                }
                Some(out)
            }
            other => {
                self.err(
                    v.span(),
                    format!(
                        "{what} must be an array of strings, not {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// A table of string values; numbers and booleans are accepted as their text.
    pub(super) fn string_map(&mut self, v: &Value<'_>, what: &str) -> IndexMap<String, String> {
        let mut out = IndexMap::new();
        if let Some(t) = self.table(v, what) {
            for (k, val) in t {
                if let Some(s) = self.scalar_text(val, &format!("{what}.{}", k.get_ref())) {
                    out.insert(k.get_ref().to_string(), s);
                }
            }
        }
        out
    }

    /// An `env` table: its keys must be variable names (`[A-Za-z_][A-Za-z0-9_]*`) outside
    /// `ORCH_*`, which orch sets itself (a phase could otherwise hide from the run's sweeps).
    pub(super) fn env_map(&mut self, v: &Value<'_>, what: &str) -> IndexMap<String, String> {
        let mut out = self.string_map(v, what);
        if let DeValue::Table(t) = v.get_ref() {
            for (k, _) in t {
                let name: &str = k.get_ref();
                let problem = if !is_env_name(name) {
                    "is not an environment variable name (use letters, digits and `_`, not first a digit)"
                } else if name.starts_with("ORCH_") {
                    "is reserved: orch sets `ORCH_*` variables itself"
                } else {
                    continue;
                };
                self.err(k.span(), format!("{what} key `{name}` {problem}"));
                out.shift_remove(name);
            }
        }
        out
    }

    pub(super) fn scalar_text(&mut self, v: &Value<'_>, what: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            DeValue::Integer(i) => Some(i.as_str().to_owned()),
            DeValue::Float(f) => Some(f.as_str().to_owned()),
            DeValue::Boolean(b) => Some(b.to_string()),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be a string, not {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn backoff(&mut self, v: &Value<'_>) -> Option<Backoff> {
        let t = self.table(v, "`backoff`")?;
        let mut b = Backoff::default();
        for (k, val) in t {
            match k.get_ref().as_ref() {
                "initial" => {
                    b.initial = self.duration(val, "`backoff.initial`").unwrap_or(b.initial)
                }
                "max" => b.max = self.duration(val, "`backoff.max`").unwrap_or(b.max),
                "factor" => {
                    if let Some(f) = self.float(val, "`backoff.factor`") {
                        if f >= 1.0 && f.is_finite() {
                            b.factor = f;
                        } else {
                            self.err(val.span(), "`backoff.factor` must be at least 1.0");
                        }
                    }
                }
                "jitter" => b.jitter = self.boolean(val, "`backoff.jitter`").unwrap_or(false),
                _ => self.unknown_key(k, "`backoff`", BACKOFF_KEYS),
            }
        }
        Some(b)
    }
}

/// Converts a spanned TOML value into a plain one.
pub(super) fn plain(v: &DeValue<'_>) -> toml::Value {
    match v {
        DeValue::String(s) => toml::Value::String(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(i.as_str().to_owned())),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse()
            .map(toml::Value::Float)
            .unwrap_or_else(|_| toml::Value::String(f.as_str().to_owned())),
        DeValue::Boolean(b) => toml::Value::Boolean(*b),
        DeValue::Datetime(d) => toml::Value::Datetime(*d),
        DeValue::Array(a) => toml::Value::Array(a.iter().map(|x| plain(x.get_ref())).collect()),
        DeValue::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, v)| (k.get_ref().to_string(), plain(v.get_ref())))
                .collect(),
        ),
    }
}
