//! List outputs. Outputs are strings, so a phase publishes a list as a JSON array of
//! strings (`["a","b"]`); where a list output is read, comma-separated text (`a, b`, what
//! a user types in a setting) is taken too.
//!
//! ```
//! use orch_core::list_output;
//!
//! let text = list_output::encode(["api", "web"]);
//! assert_eq!(text, r#"["api","web"]"#);
//! assert_eq!(list_output::decode(&text), ["api", "web"]);
//! assert_eq!(list_output::decode(" api, web ,"), ["api", "web"]);
//! ```

/// The output text of a list: a JSON array of strings.
pub fn encode<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<S> = items.into_iter().collect();
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    // A list of strings always serializes; the fallback is never taken.
    serde_json::to_string(&items).unwrap_or_else(|_| "[]".to_owned())
}

/// The items of a list output: a JSON array of strings, else comma-separated text (items
/// trimmed, empty ones left out).
pub fn decode(text: &str) -> Vec<String> {
    let trimmed = text.trim();
    if trimmed.starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(trimmed)
    {
        return list;
    }
    trimmed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_typed_lists_are_read() {
        for items in [vec![], vec!["a"], vec!["a,b", "c \"d\"", " e "]] {
            assert_eq!(decode(&encode(&items)), items);
        }
        assert_eq!(decode(" a, b ,"), ["a", "b"]);
        assert_eq!(decode("a"), ["a"]);
        assert!(decode("").is_empty());
        assert!(decode("[]").is_empty());
        // Not a JSON array of strings: taken as text.
        assert_eq!(decode("[1, 2]"), ["[1", "2]"]);
    }
}
