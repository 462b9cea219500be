//! CEL expressions for `when` conditions and `gate` assertions.
//!
//! An expression sees `vars` (a map of strings) and `phases` (a map from phase id to
//! `{ outputs: {...} }`). Output and var values that read as integers, decimals or
//! `true`/`false` are given to CEL as numbers and booleans, so
//! `phases.parity.outputs.critical_missing <= 6` compares numbers. Phase ids with `-` are
//! reached as `phases["unit-tests"]`.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map, Value};
use cel::{Context, Program};

use crate::interpolate::Scope;

/// An expression that could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// It does not parse.
    #[error("`{expr}` is not a valid CEL expression: {message}")]
    Parse {
        /// The expression.
        expr: String,
        /// The parser's message.
        message: String,
    },
    /// It failed while evaluating (unknown key, type mismatch).
    #[error("`{expr}` failed: {message}")]
    Eval {
        /// The expression.
        expr: String,
        /// The evaluator's message.
        message: String,
    },
    /// It evaluated to something other than a boolean.
    #[error("`{expr}` is {value}, not a boolean")]
    NotBool {
        /// The expression.
        expr: String,
        /// What it gave.
        value: String,
    },
}

/// Checks that an expression parses (at load time).
pub fn check(expr: &str) -> Result<(), ExprError> {
    Program::compile(expr)
        .map(|_| ())
        .map_err(|e| ExprError::Parse {
            expr: expr.to_owned(),
            message: e.to_string().lines().next().unwrap_or_default().to_owned(),
        })
}

/// The phase ids an expression reads (`phases.ID...` or `phases["ID"]...`), found in its
/// syntax tree (so `"phases.x"` in a string literal is not one), in order of appearance.
/// Inside a comprehension whose variable is named `phases`, that name is not the map of
/// phases. An expression that does not parse gives none (see [`check`]).
pub fn phase_refs(expr: &str) -> Vec<String> {
    use cel::common::ast::{EntryExpr, Expr, LiteralValue, operators};

    fn walk(e: &cel::IdedExpr, shadowed: bool, out: &mut Vec<String>) {
        let mut push = |id: &str| {
            if !out.iter().any(|x| x == id) {
                out.push(id.to_owned());
            }
        };
        match &e.expr {
            Expr::Select(s) => {
                if !shadowed && matches!(&s.operand.expr, Expr::Ident(n) if n == "phases") {
                    push(&s.field);
                }
                walk(&s.operand, shadowed, out);
            }
            Expr::Call(c) => {
                if !shadowed
                    && (c.func_name == operators::INDEX || c.func_name == operators::OPT_INDEX)
                    && let [target, key] = c.args.as_slice()
                    && matches!(&target.expr, Expr::Ident(n) if n == "phases")
                    && let Expr::Literal(LiteralValue::String(id)) = &key.expr
                {
                    push(id.inner());
                }
                if let Some(t) = &c.target {
                    walk(t, shadowed, out);
                }
                for a in &c.args {
                    walk(a, shadowed, out);
                }
            }
            Expr::Comprehension(c) => {
                walk(&c.iter_range, shadowed, out);
                let inner = shadowed
                    || c.iter_var == "phases"
                    || c.iter_var2.as_deref() == Some("phases")
                    || c.accu_var == "phases";
                walk(&c.accu_init, shadowed, out);
                walk(&c.loop_cond, inner, out);
                walk(&c.loop_step, inner, out);
                walk(&c.result, inner, out);
            }
            Expr::List(l) => l.elements.iter().for_each(|x| walk(x, shadowed, out)),
            Expr::Map(m) => m.entries.iter().for_each(|x| match &x.expr {
                EntryExpr::MapEntry(me) => {
                    walk(&me.key, shadowed, out);
                    walk(&me.value, shadowed, out);
                }
                EntryExpr::StructField(f) => walk(&f.value, shadowed, out),
            }),
            Expr::Struct(st) => st.entries.iter().for_each(|x| match &x.expr {
                EntryExpr::MapEntry(me) => {
                    walk(&me.key, shadowed, out);
                    walk(&me.value, shadowed, out);
                }
                EntryExpr::StructField(f) => walk(&f.value, shadowed, out),
            }),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    let mut out = Vec::new();
    if let Ok(program) = Program::compile(expr) {
        walk(program.expression(), false, &mut out);
    }
    out
}

fn typed(value: &str) -> Value {
    if let Ok(i) = value.parse::<i64>() {
        Value::Int(i)
    } else if let Ok(f) = value.parse::<f64>()
        && value.contains('.')
    {
        Value::Float(f)
    } else if value == "true" || value == "false" {
        Value::Bool(value == "true")
    } else {
        Value::String(Arc::new(value.to_owned()))
    }
}

fn map(entries: impl IntoIterator<Item = (String, Value)>) -> Value {
    let m: HashMap<Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (Key::from(k), v))
        .collect();
    Value::Map(Map { map: Arc::new(m) })
}

/// The phase ids an expression mentions (`phases.ID` or `phases["ID"]`).
fn mentioned_phases(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("phases") {
        let after = &rest[i + "phases".len()..];
        let id: String = if let Some(a) = after.strip_prefix('.') {
            a.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        } else if let Some(a) = after
            .strip_prefix("[\"")
            .or_else(|| after.strip_prefix("['"))
        {
            a.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect()
        } else {
            String::new()
        };
        if !id.is_empty() && !out.contains(&id) {
            out.push(id);
        }
        rest = after;
    }
    out
}

/// The result of evaluating one expression: its verdict and the values it read.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// True or false.
    pub value: bool,
    /// `phases.ID.outputs.KEY = VALUE` for each output of each phase it mentions, and
    /// `vars.KEY = VALUE` for each var it mentions: what the user needs to see when a gate
    /// fails.
    pub seen: Vec<(String, String)>,
}

/// Evaluates a boolean expression against a scope.
pub fn eval(expr: &str, scope: &dyn Scope) -> Result<Verdict, ExprError> {
    let program = Program::compile(expr).map_err(|e| ExprError::Parse {
        expr: expr.to_owned(),
        message: e.to_string().lines().next().unwrap_or_default().to_owned(),
    })?;
    let mut seen = Vec::new();
    let vars = scope.vars();
    for (k, v) in &vars {
        if expr.contains(&format!("vars.{k}")) || expr.contains(&format!("\"{k}\"")) {
            seen.push((format!("vars.{k}"), v.clone()));
        }
    }
    let mut phases = Vec::new();
    for id in mentioned_phases(expr) {
        if let Some(outputs) = scope.phase_outputs(&id) {
            for (k, v) in &outputs {
                if expr.contains(k.as_str()) {
                    seen.push((format!("phases.{id}.outputs.{k}"), v.clone()));
                }
            }
            let outs = map(outputs.into_iter().map(|(k, v)| {
                let t = typed(&v);
                (k, t)
            }));
            phases.push((id, map([("outputs".to_owned(), outs)])));
        }
    }
    let mut ctx = Context::default();
    ctx.add_variable_from_value("vars", map(vars.into_iter().map(|(k, v)| (k, typed(&v)))));
    ctx.add_variable_from_value("phases", map(phases));
    match program.execute(&ctx) {
        Ok(Value::Bool(b)) => Ok(Verdict { value: b, seen }),
        Ok(other) => Err(ExprError::NotBool {
            expr: expr.to_owned(),
            value: format!("{other:?}"),
        }),
        Err(e) => Err(ExprError::Eval {
            expr: expr.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// Evaluates a boolean expression over named values (for kinds that gate on their own
/// measures, like `quality`).
///
/// Each key of `values` is a CEL variable; JSON numbers become CEL ints or doubles, objects
/// become maps (`findings.error`), arrays lists. `seen` lists every leaf (as a dotted path,
/// `findings.error = 3`) whose path the expression mentions, so a failed condition can show
/// what it saw. A variable the expression uses but `values` lacks is an [`ExprError::Eval`].
pub fn eval_values(
    expr: &str,
    values: &serde_json::Map<String, serde_json::Value>,
) -> Result<Verdict, ExprError> {
    let program = Program::compile(expr).map_err(|e| ExprError::Parse {
        expr: expr.to_owned(),
        message: e.to_string().lines().next().unwrap_or_default().to_owned(),
    })?;
    let mut seen = Vec::new();
    for (k, v) in values {
        collect_seen(expr, k, v, &mut seen);
    }
    let mut ctx = Context::default();
    for (k, v) in values {
        ctx.add_variable_from_value(k.clone(), json_to_cel(v));
    }
    match program.execute(&ctx) {
        Ok(Value::Bool(b)) => Ok(Verdict { value: b, seen }),
        Ok(other) => Err(ExprError::NotBool {
            expr: expr.to_owned(),
            value: format!("{other:?}"),
        }),
        Err(e) => Err(ExprError::Eval {
            expr: expr.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// Whether `expr` mentions `path` as a whole name (not as part of a longer one).
fn mentions(expr: &str, path: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    expr.match_indices(path).any(|(i, _)| {
        let before = expr[..i].chars().next_back();
        let after = expr[i + path.len()..].chars().next();
        !before.is_some_and(|c| ident(c) || c == '.') && !after.is_some_and(ident)
    })
}

fn collect_seen(
    expr: &str,
    path: &str,
    value: &serde_json::Value,
    seen: &mut Vec<(String, String)>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                // `rules["S101"]` and `rules.S101` both count as mentions.
                if mentions(expr, &format!("{path}[\"{k}\"]"))
                    || mentions(expr, &format!("{path}['{k}']"))
                {
                    seen.push((format!("{path}[\"{k}\"]"), v.to_string()));
                } else {
                    collect_seen(expr, &format!("{path}.{k}"), v, seen);
                }
            }
        }
        other if mentions(expr, path) => {
            let text = match other {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            seen.push((path.to_owned(), text));
        }
        _ => {}
    }
}

fn json_to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(map) => {
            self::map(map.iter().map(|(k, v)| (k.clone(), json_to_cel(v))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PhaseId;
    use crate::phase::PhaseContext;

    fn ctx() -> PhaseContext {
        PhaseContext::builder(PhaseId::new("g").unwrap(), "/tmp")
            .var("env", "prod")
            .var("replicas", "3")
            .output("parity", "critical_missing", "2")
            .output("parity", "parity_percent", "87.5")
            .output("unit-tests", "passed", "true")
            .build()
    }

    fn eval_ctx(expr: &str) -> Result<Verdict, ExprError> {
        let c = ctx();
        eval(expr, &*c.run.scope)
    }

    #[test]
    fn phase_refs_come_from_the_syntax_tree() {
        assert_eq!(
            phase_refs(r#"phases.a.outputs.x == "phases.b" && phases["c-d"].outputs.y > 1"#),
            ["a", "c-d"]
        );
        assert_eq!(
            phase_refs("[1].all(phases, phases > 0) && has(phases.e.outputs)"),
            ["e"]
        );
        assert!(phase_refs("vars.phases == 'x'").is_empty());
        assert!(phase_refs("((").is_empty());
    }

    #[test]
    fn compares_outputs_as_numbers() {
        assert!(
            eval_ctx("phases.parity.outputs.critical_missing <= 6")
                .unwrap()
                .value
        );
        assert!(
            !eval_ctx("phases.parity.outputs.parity_percent > 90.0")
                .unwrap()
                .value
        );
        assert!(
            eval_ctx("vars.env == 'prod' && vars.replicas == 3")
                .unwrap()
                .value
        );
        assert!(
            eval_ctx("phases[\"unit-tests\"].outputs.passed")
                .unwrap()
                .value
        );
    }

    #[test]
    fn reports_values_seen() {
        let v = eval_ctx("phases.parity.outputs.critical_missing <= 1").unwrap();
        assert!(!v.value);
        assert_eq!(
            v.seen,
            [(
                "phases.parity.outputs.critical_missing".to_owned(),
                "2".to_owned()
            )]
        );
    }

    #[test]
    fn errors_are_distinct() {
        assert!(matches!(eval_ctx("1 +"), Err(ExprError::Parse { .. })));
        assert!(matches!(
            eval_ctx("phases.nope.outputs.x == 1"),
            Err(ExprError::Eval { .. })
        ));
        assert!(matches!(eval_ctx("1 + 1"), Err(ExprError::NotBool { .. })));
    }

    #[test]
    fn evaluates_over_named_values() {
        let values = serde_json::json!({
            "coverage": 85.5,
            "findings": {"error": 2, "warning": 7},
            "rules": {"S101": 1},
        });
        let values = values.as_object().unwrap();
        let v = eval_values("coverage >= 80 && findings.error == 0", values).unwrap();
        assert!(!v.value);
        assert_eq!(
            v.seen,
            [
                ("coverage".to_owned(), "85.5".to_owned()),
                ("findings.error".to_owned(), "2".to_owned()),
            ]
        );
        let v = eval_values("rules[\"S101\"] < 2 && coverage > 85", values).unwrap();
        assert!(v.value);
        assert_eq!(v.seen[1], ("rules[\"S101\"]".to_owned(), "1".to_owned()));
        assert!(matches!(
            eval_values("branch_coverage > 1", values),
            Err(ExprError::Eval { .. })
        ));
    }
}
