//! `${{ ... }}` templates: `${{ vars.KEY }}`, `${{ phases.ID.outputs.KEY }}`, `${{ run.id }}`.
//!
//! An interpolated value is data, never code. [`render`] substitutes text for settings that
//! no shell reads; [`render_shell`] rewrites a `sh -c` script so each value is read from an
//! environment variable inside the right quotes, so quotes, `;`, `$()`, backticks or
//! newlines in a value arrive byte-exact and never run.

use std::borrow::Cow;

use crate::errors::InterpolationError;

/// What a template refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// `vars.KEY`.
    Var(String),
    /// `phases.ID.outputs.KEY`.
    Output {
        /// The phase.
        phase: String,
        /// The output key.
        key: String,
    },
    /// `run.id`.
    RunId,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Var(k) => write!(f, "vars.{k}"),
            Self::Output { phase, key } => write!(f, "phases.{phase}.outputs.{key}"),
            Self::RunId => f.write_str("run.id"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part<'a> {
    Lit(&'a str),
    Ref(Reference),
}

fn parse(s: &str) -> Result<Vec<Part<'_>>, InterpolationError> {
    let mut parts = Vec::new();
    let mut rest = s;
    let mut offset = 0;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            parts.push(Part::Lit(&rest[..start]));
        }
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| InterpolationError::Syntax {
            offset: offset + start,
            message: "`${{` without a closing `}}`".into(),
        })?;
        let expr = after[..end].trim();
        parts.push(Part::Ref(parse_ref(expr).map_err(|message| {
            InterpolationError::Syntax {
                offset: offset + start,
                message,
            }
        })?));
        let consumed = start + 3 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest));
    }
    Ok(parts)
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_ref(expr: &str) -> Result<Reference, String> {
    let segs: Vec<&str> = expr.split('.').collect();
    match segs.as_slice() {
        ["vars", key] if ident_ok(key) => Ok(Reference::Var((*key).to_owned())),
        ["phases", id, "outputs", key] if ident_ok(id) && ident_ok(key) => Ok(Reference::Output {
            phase: (*id).to_owned(),
            key: (*key).to_owned(),
        }),
        ["run", "id"] => Ok(Reference::RunId),
        _ => Err(format!(
            "`{expr}` is not `vars.KEY`, `phases.ID.outputs.KEY` or `run.id`"
        )),
    }
}

/// Every reference in `s`, in order.
pub fn references(s: &str) -> Result<Vec<Reference>, InterpolationError> {
    Ok(parse(s)?
        .into_iter()
        .filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Lit(_) => None,
        })
        .collect())
}

/// Where references get their values.
pub trait Scope {
    /// The value of `r`.
    fn lookup(&self, r: &Reference) -> Result<Cow<'_, str>, InterpolationError>;

    /// Every var, for expressions that see them all (`when`, `assert`).
    fn vars(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// All outputs of a phase, when available, for expressions.
    fn phase_outputs(&self, _phase: &str) -> Option<crate::record::Outputs> {
        None
    }
}

/// Renders `s` by text substitution.
///
/// ```
/// use orch_core::interpolate::{render, Reference, Scope};
/// use orch_core::errors::InterpolationError;
/// use std::borrow::Cow;
/// struct V;
/// impl Scope for V {
///     fn lookup(&self, r: &Reference) -> Result<Cow<'_, str>, InterpolationError> {
///         Ok(Cow::Borrowed(if *r == Reference::Var("version".into()) { "1.2.0" } else { "?" }))
///     }
/// }
/// assert_eq!(render("app:${{ vars.version }}", &V).unwrap(), "app:1.2.0");
/// ```
pub fn render(s: &str, scope: &dyn Scope) -> Result<String, InterpolationError> {
    if !s.contains("${{") {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    for part in parse(s)? {
        match part {
            Part::Lit(l) => out.push_str(l),
            Part::Ref(r) => out.push_str(&scope.lookup(&r)?),
        }
    }
    Ok(out)
}

/// A shell script with its interpolated values moved into environment variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellScript {
    /// The script, with each reference replaced by a quoted `${ORCH_IN_N}` expansion.
    pub script: String,
    /// The variables to set: name and exact value.
    pub env: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Renders a `sh -c` script so that interpolated values are data, never code.
///
/// Each reference becomes `${ORCH_IN_N}`, quoted for the context it stands in: wrapped in
/// double quotes outside quotes, bare inside double quotes, and `'"${ORCH_IN_N}"'` inside
/// single quotes. The values go into the process environment unchanged.
pub fn render_shell(s: &str, scope: &dyn Scope) -> Result<ShellScript, InterpolationError> {
    let mut script = String::with_capacity(s.len());
    let mut env = Vec::new();
    let mut quote = Quote::None;
    for part in parse(s)? {
        match part {
            Part::Lit(l) => {
                let mut escaped = false;
                for c in l.chars() {
                    script.push(c);
                    if escaped {
                        escaped = false;
                        continue;
                    }
                    quote = match (quote, c) {
                        (Quote::None, '\\') | (Quote::Double, '\\') => {
                            escaped = true;
                            quote
                        }
                        (Quote::None, '\'') => Quote::Single,
                        (Quote::None, '"') => Quote::Double,
                        (Quote::Single, '\'') | (Quote::Double, '"') => Quote::None,
                        (q, _) => q,
                    };
                }
            }
            Part::Ref(r) => {
                let value = scope.lookup(&r)?.into_owned();
                let name = format!("ORCH_IN_{}", env.len() + 1);
                match quote {
                    Quote::None => script.push_str(&format!("\"${{{name}}}\"")),
                    Quote::Double => script.push_str(&format!("${{{name}}}")),
                    Quote::Single => script.push_str(&format!("'\"${{{name}}}\"'")),
                }
                env.push((name, value));
            }
        }
    }
    Ok(ShellScript { script, env })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<String, String>);
    impl Scope for Map {
        fn lookup(&self, r: &Reference) -> Result<Cow<'_, str>, InterpolationError> {
            self.0
                .get(&r.to_string())
                .map(|s| Cow::Borrowed(s.as_str()))
                .ok_or_else(|| InterpolationError::UnknownVar {
                    name: r.to_string(),
                })
        }
    }

    fn scope(pairs: &[(&str, &str)]) -> Map {
        Map(pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect())
    }

    #[test]
    fn parses_references() {
        assert_eq!(
            references("a ${{vars.x}} b ${{ phases.p-1.outputs.k_2 }} ${{ run.id }}").unwrap(),
            [
                Reference::Var("x".into()),
                Reference::Output {
                    phase: "p-1".into(),
                    key: "k_2".into()
                },
                Reference::RunId
            ]
        );
    }

    #[test]
    fn rejects_malformed_templates() {
        for bad in [
            "${{ vars.x",
            "${{ nope }}",
            "${{ vars. }}",
            "${{ phases.a.b }}",
        ] {
            assert!(
                matches!(references(bad), Err(InterpolationError::Syntax { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn renders_text() {
        let s = scope(&[("vars.v", "1.0")]);
        assert_eq!(render("x-${{ vars.v }}-y", &s).unwrap(), "x-1.0-y");
        assert_eq!(
            render("plain $HOME {{ }}", &s).unwrap(),
            "plain $HOME {{ }}"
        );
        assert!(render("${{ vars.nope }}", &s).is_err());
    }

    #[test]
    fn shell_rendering_quotes_by_context() {
        let s = scope(&[("vars.v", "x")]);
        let check = |input: &str, want: &str| {
            assert_eq!(render_shell(input, &s).unwrap().script, want, "{input}");
        };
        check("echo ${{ vars.v }}", "echo \"${ORCH_IN_1}\"");
        check("echo \"a ${{ vars.v }} b\"", "echo \"a ${ORCH_IN_1} b\"");
        check("echo 'a ${{ vars.v }} b'", "echo 'a '\"${ORCH_IN_1}\"' b'");
        check("echo \\' ${{ vars.v }}", "echo \\' \"${ORCH_IN_1}\"");
        check("echo \"\\\" ${{ vars.v }}\"", "echo \"\\\" ${ORCH_IN_1}\"");
    }
}
