//! Success and failure conditions: CEL expressions over the measured `result`.
//!
//! `result` is bound to the provider's [`Value`]: a number becomes a CEL `double`, a list a
//! `list(double)`, text a `string`, a boolean a `bool`, items a `list`, an object a
//! `map(string, …)` (and "no data" `null`, though [`assess`] never evaluates a missing
//! value). So `result < 0.01`, `result[0] > 1.0`, `result == "ok"`, `result == true`,
//! `result.status == "ok"`, `size(result) > 0` and `result.all(x, x < 5.0)` all work.
//!
//! Integer literals: CEL keeps `int` and `double` apart. The `cel` crate (0.13) already
//! orders them against each other by value (`result < 1` works on a double `result`), but
//! its `==` and `!=` treat an `int` and a `double` as never equal, so `result == 0` would be
//! silently false for a result of `0.0`. [`Condition::compile`] therefore rewrites every
//! `x == <int literal>` into `(x == k || x == k.0)` and every `x != <int literal>` into
//! `(x != k && x != k.0)`: correct whether `x` is an `int` (`size(result) == 0`) or a
//! `double` (`result == 0`, `result[0] != 1`). Nothing else is rewritten: arithmetic does
//! not mix them (`result * 100 < 1` is an error whose message says to write `100.0`), nor
//! do list literals (`result == [1.0, 2.0]`, not `[1, 2]`).

use std::sync::Arc;

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::common::types::CelDouble;
use cel::objects::{Key, Map, Value as Cel};
use cel::{Context, ExecutionError, Program};

use super::Value;
use super::verdict::MeasurementPhase;

/// A condition that could not be compiled or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// The expression is not valid CEL.
    #[error("condition `{expr}` is not valid CEL: {reason}")]
    Parse {
        /// The expression as written.
        expr: String,
        /// What the parser objected to.
        reason: String,
    },
    /// The expression failed while running against a result.
    #[error("condition `{expr}` failed on result {value}: {reason}{hint}")]
    Eval {
        /// The expression as written.
        expr: String,
        /// The measured value it ran against.
        value: String,
        /// What went wrong.
        reason: String,
        /// Advice for a common mistake, empty when there is none.
        hint: String,
    },
    /// The expression ran but did not produce `true` or `false`.
    #[error(
        "condition `{expr}` must return a bool (true or false), but returned {got} on result {value}; \
         write a comparison such as `result < 0.01`"
    )]
    NotBool {
        /// The expression as written.
        expr: String,
        /// The measured value it ran against.
        value: String,
        /// What it returned instead, with its CEL type.
        got: String,
    },
}

/// A CEL condition, parsed once and evaluated for every measurement.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    /// The parsed expression, after [`compare_int_literals_by_value`].
    expr: Arc<IdedExpr>,
}

impl Condition {
    /// Parses `expr`; the error names the expression and the parse problem.
    pub fn compile(expr: &str) -> Result<Condition, ConditionError> {
        let program = Program::compile(expr).map_err(|e| ConditionError::Parse {
            expr: expr.to_owned(),
            reason: e.to_string(),
        })?;
        let mut parsed = program.expression().clone();
        compare_int_literals_by_value(&mut parsed);
        Ok(Condition {
            source: expr.to_owned(),
            expr: Arc::new(parsed),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition with `result` bound to `value`; it must return a bool.
    pub fn eval(&self, value: &Value) -> Result<bool, ConditionError> {
        let mut context = Context::default();
        context.add_variable_from_value("result", to_cel(value));
        match Cel::resolve(&self.expr, &context) {
            Ok(Cel::Bool(b)) => Ok(b),
            Ok(other) => Err(ConditionError::NotBool {
                expr: self.source.clone(),
                value: value.to_string(),
                got: format!("{other:?} ({})", other.type_of()),
            }),
            Err(e) => Err(ConditionError::Eval {
                expr: self.source.clone(),
                value: value.to_string(),
                hint: hint(&e).to_owned(),
                reason: e.to_string(),
            }),
        }
    }
}

/// Judges one measured value, with Argo Rollouts' semantics.
///
/// A missing value (empty, NaN, see [`Value::is_missing`]) is `Inconclusive`, never
/// `Successful`. Otherwise: failure condition true → `Failed`; success condition true →
/// `Successful`; only a success condition, false → `Failed`; only a failure condition,
/// false → `Successful`; both, neither true → `Inconclusive`; no condition → `Successful`.
/// The failure condition is evaluated first. An evaluation error is returned as is; the
/// caller records it as a [`MeasurementPhase::Error`] measurement.
pub fn assess(
    value: &Value,
    success: Option<&Condition>,
    failure: Option<&Condition>,
) -> Result<MeasurementPhase, ConditionError> {
    if value.is_missing() {
        return Ok(MeasurementPhase::Inconclusive);
    }
    if let Some(failure) = failure
        && failure.eval(value)?
    {
        return Ok(MeasurementPhase::Failed);
    }
    if let Some(success) = success
        && success.eval(value)?
    {
        return Ok(MeasurementPhase::Successful);
    }
    Ok(match (success, failure) {
        (Some(_), None) => MeasurementPhase::Failed,
        (Some(_), Some(_)) => MeasurementPhase::Inconclusive,
        (None, _) => MeasurementPhase::Successful,
    })
}

/// Rewrites `x == k` to `(x == k || x == k.0)` and `x != k` to `(x != k && x != k.0)` for
/// every integer literal `k`, everywhere in the expression (see the module docs for why).
fn compare_int_literals_by_value(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Call(call) => {
            if let Some(target) = call.target.as_deref_mut() {
                compare_int_literals_by_value(target);
            }
            call.args.iter_mut().for_each(compare_int_literals_by_value);
        }
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                compare_int_literals_by_value(part);
            }
        }
        Expr::List(list) => list
            .elements
            .iter_mut()
            .for_each(compare_int_literals_by_value),
        Expr::Map(map) => map.entries.iter_mut().for_each(|e| entry(&mut e.expr)),
        Expr::Struct(st) => st.entries.iter_mut().for_each(|e| entry(&mut e.expr)),
        Expr::Select(select) => compare_int_literals_by_value(&mut select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }

    let Expr::Call(call) = &e.expr else { return };
    let join = match call.func_name.as_str() {
        operators::EQUALS => operators::LOGICAL_OR,
        operators::NOT_EQUALS => operators::LOGICAL_AND,
        _ => return,
    };
    let int_at = |i: usize| match call.args.get(i).map(|a| &a.expr) {
        Some(Expr::Literal(LiteralValue::Int(k))) => Some(*k.inner()),
        _ => None,
    };
    // Two int literals compare correctly already.
    let (i, k) = match (int_at(0), int_at(1)) {
        (Some(k), None) => (0, k),
        (None, Some(k)) => (1, k),
        _ => return,
    };
    let mut as_double = call.clone();
    as_double.args[i].expr = Expr::Literal(LiteralValue::Double(CelDouble::from(k as f64)));
    let original = IdedExpr {
        id: e.id,
        expr: Expr::Call(call.clone()),
    };
    let as_double = IdedExpr {
        id: e.id,
        expr: Expr::Call(as_double),
    };
    e.expr = Expr::Call(CallExpr {
        func_name: join.to_owned(),
        target: None,
        args: vec![original, as_double],
    });

    fn entry(entry: &mut EntryExpr) {
        match entry {
            EntryExpr::StructField(f) => compare_int_literals_by_value(&mut f.value),
            EntryExpr::MapEntry(m) => {
                compare_int_literals_by_value(&mut m.key);
                compare_int_literals_by_value(&mut m.value);
            }
        }
    }
}

fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Number(n) => Cel::Float(*n),
        Value::List(l) => Cel::List(Arc::new(l.iter().map(|n| Cel::Float(*n)).collect())),
        Value::Text(t) => Cel::String(Arc::new(t.clone())),
        Value::Bool(b) => Cel::Bool(*b),
        Value::Items(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(fields) => Cel::Map(Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
        Value::Empty => Cel::Null,
    }
}

/// Advice for the mistake users make most: mixing `int` and `double` in arithmetic.
fn hint(e: &ExecutionError) -> &'static str {
    match e {
        ExecutionError::UnsupportedBinaryOperator(_, l, r)
            if matches!(
                (l, r),
                (Cel::Float(_), Cel::Int(_) | Cel::UInt(_))
                    | (Cel::Int(_) | Cel::UInt(_), Cel::Float(_))
            ) =>
        {
            "; CEL does not mix int and double in arithmetic: write number literals with a \
             decimal point (100.0, not 100)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use MeasurementPhase::{Failed, Inconclusive, Successful};

    fn c(expr: &str) -> Condition {
        Condition::compile(expr).unwrap()
    }

    fn eval(expr: &str, value: Value) -> bool {
        c(expr).eval(&value).unwrap()
    }

    #[test]
    fn the_documented_forms_work() {
        assert!(eval("result < 0.01", Value::Number(0.005)));
        assert!(!eval("result < 0.01", Value::Number(0.02)));
        assert!(eval("result >= 0.05", Value::Number(0.05)));
        assert!(eval("result[0] > 1.0", Value::List(vec![1.5, 0.0])));
        assert!(!eval("result[0] > 1.0", Value::List(vec![0.5, 9.0])));
        assert!(eval(r#"result == "ok""#, Value::Text("ok".into())));
        assert!(!eval(r#"result == "ok""#, Value::Text("degraded".into())));
        assert!(eval("size(result) > 0", Value::List(vec![1.0])));
        assert!(eval("size(result) > 0", Value::Text("x".into())));
        assert!(eval("result.all(x, x < 5.0)", Value::List(vec![1.0, 4.9])));
        assert!(!eval("result.all(x, x < 5.0)", Value::List(vec![1.0, 5.0])));
        assert!(eval(
            "result.exists(x, x > 4.0)",
            Value::List(vec![1.0, 5.0])
        ));
    }

    #[test]
    fn json_values_keep_their_types() {
        // Argo Rollouts documents `result == true` for the web provider.
        assert!(eval("result == true", Value::Bool(true)));
        assert!(!eval("result == true", Value::Bool(false)));
        assert!(eval("result", Value::Bool(true)));
        assert!(eval("!result", Value::Bool(false)));
        assert!(
            !eval(r#"result == "true""#, Value::Bool(true)),
            "a boolean is not the text true"
        );
        let doc = Value::Object(
            [
                ("status".to_string(), Value::Text("ok".into())),
                ("ready".to_string(), Value::Bool(true)),
                ("count".to_string(), Value::Number(12.0)),
                (
                    "pods".to_string(),
                    Value::Items(vec![
                        Value::Object([("ok".to_string(), Value::Bool(true))].into()),
                        Value::Object([("ok".to_string(), Value::Bool(false))].into()),
                    ]),
                ),
                ("gone".to_string(), Value::Empty),
            ]
            .into(),
        );
        assert!(eval(r#"result.status == "ok""#, doc.clone()));
        assert!(eval("result.ready == true", doc.clone()));
        assert!(eval("result.count == 12", doc.clone()));
        assert!(eval("result.count > 10.0", doc.clone()));
        assert!(eval("size(result.pods) == 2", doc.clone()));
        assert!(eval("result.pods.exists(p, p.ok == false)", doc.clone()));
        assert!(eval("result.gone == null", doc.clone()));
        assert!(eval(r#""status" in result"#, doc));
        let mixed = Value::Items(vec![Value::Number(1.0), Value::Text("a".into())]);
        assert!(eval(r#"result[1] == "a""#, mixed.clone()));
        assert!(eval("result[0] == 1", mixed));
    }

    #[test]
    fn a_boolean_or_an_object_is_a_value_and_an_empty_list_is_missing() {
        assert!(!Value::Bool(false).is_missing());
        assert!(!Value::Object(Default::default()).is_missing());
        assert!(Value::Items(Vec::new()).is_missing());
        assert_eq!(Value::Bool(true).to_string(), "true");
        assert_eq!(Value::Text("true".into()).to_string(), "\"true\"");
        assert_eq!(
            Value::Object(
                [(
                    "a".to_string(),
                    Value::Items(vec![Value::Bool(true), Value::Empty])
                )]
                .into()
            )
            .to_string(),
            "{\"a\": [true, (no data)]}"
        );
    }

    #[test]
    fn integer_literals_compare_with_a_double_result() {
        assert!(eval("result < 1", Value::Number(0.5)));
        assert!(!eval("result < 1", Value::Number(1.5)));
        assert!(eval("result == 0", Value::Number(0.0)));
        assert!(eval("result >= 2", Value::Number(2.0)));
        assert!(eval("result[0] <= 3", Value::List(vec![3.0])));
        assert!(eval("result.all(x, x < 5)", Value::List(vec![4.0])));
        assert!(eval("result * 100.0 < 1.0", Value::Number(0.001)));
    }

    #[test]
    fn integer_literals_test_equality_by_value() {
        for (expr, value, want) in [
            ("result == 0", Value::Number(0.0), true),
            ("0 == result", Value::Number(0.0), true),
            ("result == 0", Value::Number(0.5), false),
            ("result != 0", Value::Number(0.0), false),
            ("result != 0", Value::Number(0.5), true),
            ("result == -1", Value::Number(-1.0), true),
            ("result[0] == 1", Value::List(vec![1.0]), true),
            ("result[1] != 1", Value::List(vec![1.0, 1.0]), false),
            ("result.all(x, x == 2)", Value::List(vec![2.0, 2.0]), true),
            (
                "result.exists(x, x != 2)",
                Value::List(vec![2.0, 2.0]),
                false,
            ),
            ("result == 0 || result == 1", Value::Number(1.0), true),
            // Ints stay ints: size() returns an int.
            ("size(result) == 2", Value::List(vec![5.0, 6.0]), true),
            ("size(result) != 2", Value::List(vec![5.0, 6.0]), false),
            ("size(result) == 2", Value::Text("abc".into()), false),
            // Other types are unaffected.
            ("result == 1", Value::Text("1".into()), false),
            ("result != 1", Value::Text("1".into()), true),
            ("1 == 1", Value::Number(0.0), true),
        ] {
            assert_eq!(eval(expr, value.clone()), want, "{expr} on {value:?}");
        }
    }

    #[test]
    fn mixing_int_and_double_in_arithmetic_says_how_to_fix_it() {
        let err = c("result * 100 < 1").eval(&Value::Number(0.5)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("result * 100 < 1"), "{text}");
        assert!(text.contains("100.0"), "{text}");
    }

    #[test]
    fn a_parse_error_names_the_expression() {
        let err = Condition::compile("result <").unwrap_err();
        assert!(matches!(err, ConditionError::Parse { .. }));
        let text = err.to_string();
        assert!(text.contains("`result <`"), "{text}");
        assert!(text.contains("not valid CEL"), "{text}");
    }

    #[test]
    fn garbage_is_a_parse_error_not_a_panic() {
        for expr in ["", "(((", "result <<< 1", "\u{1F600}", "result[", "}"] {
            assert!(Condition::compile(expr).is_err(), "{expr:?} compiled");
        }
    }

    #[test]
    fn a_non_bool_result_is_an_error_saying_so() {
        let err = c("result + 1.0").eval(&Value::Number(1.0)).unwrap_err();
        assert!(matches!(err, ConditionError::NotBool { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("must return a bool"), "{text}");
        assert!(text.contains("result + 1.0"), "{text}");
    }

    #[test]
    fn an_unknown_variable_is_an_eval_error() {
        let err = c("rsult < 1.0").eval(&Value::Number(1.0)).unwrap_err();
        assert!(matches!(err, ConditionError::Eval { .. }), "{err:?}");
        assert!(err.to_string().contains("rsult"), "{err}");
    }

    #[test]
    fn a_missing_value_is_inconclusive_whatever_the_conditions() {
        let always = c("true");
        let never = c("false");
        for value in [
            Value::Empty,
            Value::Number(f64::NAN),
            Value::List(vec![]),
            Value::List(vec![1.0, f64::NAN]),
            Value::Text(String::new()),
        ] {
            for (s, f) in [
                (None, None),
                (Some(&always), None),
                (None, Some(&never)),
                (Some(&always), Some(&never)),
                (None, Some(&always)),
            ] {
                assert_eq!(assess(&value, s, f).unwrap(), Inconclusive, "{value:?}");
            }
        }
    }

    #[test]
    fn assess_follows_argo_semantics() {
        let success = c("result < 0.01");
        let failure = c("result >= 0.05");
        let s = Some(&success);
        let f = Some(&failure);
        // (value, success, failure, expected)
        let table = [
            // Both conditions.
            (0.001, s, f, Successful),
            (0.06, s, f, Failed),
            (0.03, s, f, Inconclusive),
            // Only a success condition: not met is a failure.
            (0.001, s, None, Successful),
            (0.03, s, None, Failed),
            (0.06, s, None, Failed),
            // Only a failure condition: not met is a success.
            (0.03, None, f, Successful),
            (0.06, None, f, Failed),
            // No condition: a present value passes.
            (0.06, None, None, Successful),
        ];
        for (value, s, f, want) in table {
            let got = assess(&Value::Number(value), s, f).unwrap();
            assert_eq!(
                got,
                want,
                "value {value}, success {:?}, failure {:?}",
                s.map(Condition::source),
                f.map(Condition::source)
            );
        }
    }

    #[test]
    fn failure_wins_when_both_conditions_hold() {
        let yes = c("result > 0.0");
        assert_eq!(
            assess(&Value::Number(1.0), Some(&yes), Some(&yes)).unwrap(),
            Failed
        );
    }

    #[test]
    fn an_evaluation_error_is_returned_not_judged() {
        let broken = c("result.nope > 1.0");
        assert!(assess(&Value::Number(1.0), Some(&broken), None).is_err());
        assert!(assess(&Value::Number(1.0), None, Some(&broken)).is_err());
    }

    #[test]
    fn conditions_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Condition>();
    }
}
