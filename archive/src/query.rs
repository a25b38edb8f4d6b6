//! Filtering and sorting runs by any field: `status=completed`, `config.lr<=0.001`,
//! `summary.test_acc>0.9`, `seeds.init=3`, `name=mlp*`.
//!
//! A field is a column of the `runs` table (`run_id`, `name`, `status`, `recipe_step`,
//! `sweep`, `group_id`, `parent_run`, `attempt`, `last_step`, `started_at`) or a dotted path
//! into a component (`config.`, `seeds.`, `data.`, `code.`, `env.`) or into `summary.`.
//!
//! A field that no run of the archive has is a typo, not an empty selection:
//! [`unknown_field`] finds it and its error lists the fields the runs do have.

use crate::identity::COMPONENTS;
use crate::records::RunRecord;
use crate::{Error, Result};
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// The columns of the `runs` table a condition can name. They are fields whether or not any
/// run fills them in (`parent_run=x` with no child runs selects nothing, it is no typo).
pub const COLUMNS: [&str; 10] = [
    "run_id",
    "attempt",
    "name",
    "status",
    "recipe_step",
    "sweep",
    "group_id",
    "parent_run",
    "last_step",
    "started_at",
];

/// The value of a field of a run, if it has one.
pub fn field(run: &RunRecord, key: &str) -> Option<Value> {
    let (head, rest) = key.split_once('.').unwrap_or((key, ""));
    let component = |i: usize| lookup(&run.components[i], rest);
    match head {
        "run_id" => Some(json!(run.run_id)),
        "attempt" => Some(json!(run.attempt)),
        "name" => Some(json!(run.name)),
        "status" => Some(json!(run.status.as_str())),
        "recipe_step" | "step" => run.recipe_step.as_ref().map(|s| json!(s)),
        "sweep" => run.sweep.as_ref().map(|s| json!(s)),
        "group_id" => Some(json!(&*run.group_id)),
        "parent_run" => run.parent_run.as_ref().map(|s| json!(s)),
        "last_step" => run.last_step.map(|s| json!(s)),
        "started_at" => Some(json!(run.started_at.to_rfc3339())),
        "config" => component(0),
        "seeds" => component(1),
        "data" => component(2),
        "code" => component(3),
        "env" => component(4),
        "summary" | "metric" => run.summary.get(rest).map(|v| json!(v)),
        _ => None,
    }
}

fn lookup(value: &Value, path: &str) -> Option<Value> {
    if path.is_empty() {
        return Some(value.clone());
    }
    path.split('.')
        .try_fold(value, |v, part| match v {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
        .cloned()
}

/// How a condition compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One `field OP value` condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub field: String,
    pub op: Op,
    pub value: String,
    /// `value` as a number, if it is one (parsed once, compared with every run).
    number: Option<f64>,
}

impl Condition {
    /// Parse `field=value`, `field!=value`, `field<value`, `<=`, `>`, `>=`. In `=` and `!=`
    /// a value with `*` is a glob over the field's text.
    pub fn parse(text: &str) -> Result<Condition> {
        const OPS: [(&str, Op); 6] = [
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("=", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let found = text.char_indices().find_map(|(i, _)| {
            OPS.iter()
                .find(|(s, _)| text[i..].starts_with(s))
                .map(|(s, op)| (i, s.len(), *op))
        });
        match found {
            Some((i, len, op)) if i > 0 => {
                let value = text[i + len..].trim().to_string();
                // `config.lr>>3`, `lr=>3`: an operator typed twice or the wrong way round,
                // never a value to compare with.
                if value.starts_with(['<', '>', '=']) || value.starts_with("!=") {
                    return Err(Error::Invalid(format!(
                        "{text:?} is not a condition: the value {value:?} starts with an \
                         operator; write FIELD=VALUE (or != < <= > >=), e.g. config.lr>=0.001"
                    )));
                }
                Ok(Condition {
                    field: text[..i].trim().to_string(),
                    op,
                    number: value.parse().ok(),
                    value,
                })
            }
            _ => Err(Error::Invalid(format!(
                "{text:?} is not a condition; write FIELD=VALUE (or != < <= > >=), \
                 e.g. status=completed, config.lr<0.01, summary.test_acc>=0.9"
            ))),
        }
    }

    /// Whether a run satisfies the condition. A run without the field never does, except
    /// for `!=`.
    pub fn matches(&self, run: &RunRecord) -> bool {
        self.holds_for(field(run, &self.field))
    }

    /// The identity component the condition is about (`config.lr`: 0, the config), if it
    /// is about one. Every attempt of a run has the same components, so such a condition
    /// can be checked on a stored row before the row becomes a record.
    pub fn component(&self) -> Option<usize> {
        let head = self.field.split('.').next().unwrap_or_default();
        COMPONENTS.iter().position(|c| *c == head)
    }

    /// Whether the value of the component the condition is about ([`Condition::component`])
    /// satisfies it.
    pub fn matches_component(&self, value: &Value) -> bool {
        let rest = self.field.split_once('.').map_or("", |(_, rest)| rest);
        self.holds_for(lookup(value, rest))
    }

    fn holds_for(&self, actual: Option<Value>) -> bool {
        let Some(actual) = actual else {
            return self.op == Op::Ne;
        };
        let ordering = compare_to_text(&actual, &self.value, self.number);
        match self.op {
            Op::Eq => ordering == Some(Ordering::Equal),
            Op::Ne => ordering != Some(Ordering::Equal),
            Op::Lt => ordering == Some(Ordering::Less),
            Op::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
            Op::Gt => ordering == Some(Ordering::Greater),
            Op::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        }
    }
}

/// Compare a field's value with a condition's text (`number` if it is one): numerically
/// when both are numbers, as a glob when the text has `*`, else as text.
fn compare_to_text(actual: &Value, text: &str, number: Option<f64>) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (actual.as_f64(), number) {
        return a.partial_cmp(&b);
    }
    let actual_text = match actual {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains('*') {
        return glob(text, &actual_text)
            .then_some(Ordering::Equal)
            .or(Some(Ordering::Less));
    }
    Some(actual_text.as_str().cmp(text))
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Order of two runs by a field (`-field` for descending); runs without it come last.
pub fn sort_runs(runs: &mut [RunRecord], key: &str) {
    let (key, descending) = match key.strip_prefix('-') {
        Some(k) => (k, true),
        None => (key, false),
    };
    runs.sort_by(|a, b| {
        let (fa, fb) = (field(a, key), field(b, key));
        match (fa, fb) {
            (Some(x), Some(y)) => {
                let o = compare_values(&x, &y);
                if descending {
                    o.reverse()
                } else {
                    o
                }
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    });
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Every field some run has, sorted: the [`COLUMNS`], each leaf of each identity component
/// (`config.model.hidden`) and `summary.METRIC`.
pub fn known_fields(runs: &[RunRecord]) -> BTreeSet<String> {
    let mut fields: BTreeSet<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    // Runs share components: flatten each distinct one once.
    let mut seen = BTreeSet::new();
    for run in runs {
        for (i, component) in COMPONENTS.iter().enumerate() {
            if seen.insert(&*run.component_hashes[i]) {
                let leaves = crate::diff::flatten(&run.components[i]);
                fields.extend(leaves.keys().map(|k| match k.as_str() {
                    "" => component.to_string(),
                    k => format!("{component}.{k}"),
                }));
            }
        }
        fields.extend(run.summary.keys().map(|m| format!("summary.{m}")));
    }
    fields
}

/// How many known fields an error about an unknown one lists.
pub const LISTED: usize = 30;

/// The first of `keys` that is neither a column nor a field any of `runs` has, as an error
/// naming it, what it was given to (`--where lr=1`, `--sort`) and the known fields a
/// person most likely meant (at most [`LISTED`]): under `config.lrr`, the `config.` fields;
/// under a bare `lr`, the fields ending in `.lr`, the columns and the dotted heads.
/// A sort key's `-` prefix is allowed.
pub fn unknown_field<'k>(
    keys: impl IntoIterator<Item = (&'k str, &'k str)>,
    runs: &[RunRecord],
) -> Option<Error> {
    let unknown = |key: &str| {
        !COLUMNS.contains(&key) && key != "step" && !runs.iter().any(|r| field(r, key).is_some())
    };
    let (key, given_to) = keys
        .into_iter()
        .map(|(key, given_to)| (key.strip_prefix('-').unwrap_or(key), given_to))
        .find(|(key, _)| unknown(key))?;
    let known = known_fields(runs);
    // `metric.` is another name for `summary.`.
    let head = match key.split_once('.') {
        Some(("metric", _)) => "summary.".to_string(),
        Some((head, _)) => format!("{head}."),
        None => String::new(),
    };
    let mut listed: Vec<String> = if head.is_empty() {
        Vec::new()
    } else {
        known
            .iter()
            .filter(|f| f.starts_with(&head))
            .cloned()
            .collect()
    };
    if listed.is_empty() {
        let ending = format!(".{}", key.rsplit('.').next().unwrap_or(key));
        listed.extend(known.iter().filter(|f| f.ends_with(&ending)).cloned());
        listed.extend(COLUMNS.iter().map(|c| c.to_string()));
        listed.extend(
            COMPONENTS
                .iter()
                .chain(&["summary"])
                .map(|c| format!("{c}.…")),
        );
    }
    let more = match listed.len().saturating_sub(LISTED) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    listed.truncate(LISTED);
    Some(Error::NotFound(format!(
        "no run has the field {key:?} ({given_to}); known fields: {}{more}. \
         HINT: `recipe runs show RUN` shows every field of a run",
        listed.join(", ")
    )))
}

/// The runs that satisfy every condition.
pub fn filter_runs(runs: Vec<RunRecord>, conditions: &[Condition]) -> Vec<RunRecord> {
    runs.into_iter()
        .filter(|r| conditions.iter().all(|c| c.matches(r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_operator() {
        let c = Condition::parse("config.lr<=0.001").unwrap();
        assert_eq!(
            (c.field.as_str(), c.op, c.value.as_str()),
            ("config.lr", Op::Le, "0.001")
        );
        assert_eq!(Condition::parse("status!=failed").unwrap().op, Op::Ne);
        assert_eq!(Condition::parse("a>1").unwrap().op, Op::Gt);
        assert!(Condition::parse("=x").is_err());
        assert!(Condition::parse("nothing").is_err());
    }

    #[test]
    fn an_operator_typed_twice_is_no_condition() {
        for text in ["config.lr>>3", "lr=>3", "lr<<1", "lr==1", "lr=!=1", "lr<>1"] {
            let err = Condition::parse(text).unwrap_err().to_string();
            assert!(err.contains("starts with an operator"), "{text}: {err}");
        }
        assert_eq!(Condition::parse("lr>=3").unwrap().value, "3");
        assert_eq!(Condition::parse("name=a!b").unwrap().value, "a!b");
    }

    fn run_with_config(config: Value) -> RunRecord {
        let mut run = crate::records::test_run("a", 1, None, 0.9);
        run.component_hashes[0] = config.to_string().as_str().into();
        run.components[0] = config.into();
        run
    }

    #[test]
    fn an_unknown_field_names_the_fields_the_runs_have() {
        let runs = [
            run_with_config(json!({"lr": 0.1, "model": {"hidden": [8]}})),
            run_with_config(json!({"lr": 0.01, "wd": 0})),
        ];
        let fields = known_fields(&runs);
        for f in [
            "status",
            "config.lr",
            "config.model.hidden",
            "config.wd",
            "summary.acc",
        ] {
            assert!(fields.contains(f), "{f}: {fields:?}");
        }
        // Known: columns (even unset ones), paths some run has, objects, the `-` of a sort.
        let known = [
            "parent_run",
            "step",
            "config.wd",
            "config.model",
            "-summary.acc",
            "metric.acc",
        ];
        assert!(unknown_field(known.map(|k| (k, "--where")), &runs).is_none());

        let err = |key: &str| {
            unknown_field([("status", "--where"), (key, "--sort")], &runs)
                .unwrap()
                .to_string()
        };
        let typo = err("config.lrr");
        assert!(
            typo.starts_with(
                "no run has the field \"config.lrr\" (--sort); known fields: \
                 config.lr, config.model.hidden, config.wd."
            ),
            "{typo}"
        );
        assert!(err("-summary.loss").contains("known fields: summary.acc."));
        let bare = err("lr");
        assert!(
            bare.contains("known fields: config.lr, run_id, attempt,")
                && bare.contains("config.…, seeds.…"),
            "{bare}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob("mlp*", "mlp-wide"));
        assert!(glob("*wide", "mlp-wide"));
        assert!(glob("m*-*e", "mlp-wide"));
        assert!(!glob("conv*", "mlp-wide"));
        assert!(glob("*", ""));
    }

    #[test]
    fn numbers_compare_as_numbers() {
        let holds = |text: &str, actual: Value| {
            let c = Condition::parse(text).unwrap();
            c.holds_for(Some(actual))
        };
        assert!(holds("x=3e-4", json!(0.0003)));
        assert!(holds("x>9", json!(10)));
        assert!(holds("x<10", json!(9.5)));
        assert!(holds("x=completed", json!("completed")));
        // Text compares as text: "10" < "9".
        assert!(holds("x<9", json!("10")));
    }
}
