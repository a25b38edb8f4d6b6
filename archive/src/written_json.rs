//! The JSON texts of a `runs` row as recipe writes them: components, checks and artifacts in
//! serde_json's compact form, and the summary as numbers (NaN and the infinities as strings).
//! A listing reads a summary and the seeds of every run, so a text exactly as written is read
//! without the JSON parser; any other text goes to the parser and reads as the parser reads it
//! (property-tested below).

use crate::{Error, Result};
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A value as compact JSON (`null` for the few values JSON cannot hold).
pub(crate) fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// A JSON text of column `column` parsed; an error names the column.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &str, column: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Format(format!("column {column:?}: {e}")))
}

/// An identity component's value: the seeds' whole numbers as written without the parser,
/// anything else with it.
pub(crate) fn component_json(text: &str, column: &str) -> Result<Value> {
    match whole_numbers_as_written(text) {
        Some(value) => Ok(value),
        None => parse_json(text, column),
    }
}

/// Summary values as JSON: finite numbers as numbers, the rest as the strings `"NaN"`,
/// `"inf"` and `"-inf"` (JSON has no such numbers, and a diverged run's last loss is one).
pub(crate) fn summary_json(summary: &BTreeMap<Arc<str>, f64>) -> String {
    let map: serde_json::Map<String, Value> = summary
        .iter()
        .map(|(k, v)| {
            let value = match serde_json::Number::from_f64(*v) {
                Some(n) => Value::Number(n),
                None if v.is_nan() => Value::String("NaN".into()),
                None => Value::String(if *v > 0.0 { "inf" } else { "-inf" }.into()),
            };
            (k.to_string(), value)
        })
        .collect();
    Value::Object(map).to_string()
}

pub(crate) fn summary_from_json(text: &str) -> Result<BTreeMap<Arc<str>, f64>> {
    let members = summary_members(text)?;
    Ok(members
        .into_iter()
        .map(|(k, v)| (Arc::from(&*k), v))
        .collect())
}

/// A summary's members in name order, each name once (the last one written wins, as when a
/// JSON object is read into a map); the names borrowed from `text` where it is as written.
pub(crate) fn summary_members(text: &str) -> Result<Vec<(Cow<'_, str>, f64)>> {
    let Some(mut members) = summary_as_written(text) else {
        let map: BTreeMap<String, SummaryValue> = parse_json(text, "summary")?;
        return Ok(map.into_iter().map(|(k, v)| (Cow::Owned(k), v.0)).collect());
    };
    // As written they are in order already: one pass to see it.
    if !members.is_sorted_by(|a, b| a.0 < b.0) {
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = later.1;
            }
            same
        });
    }
    Ok(members)
}

/// The members of a flat JSON object as recipe writes it (`{"name":value,...}`: no spaces,
/// no escapes or raw control characters in names), each name with its value's text (up to
/// the next comma), in order; `None` for any other text. Callers accept a value only if
/// it cannot hold a comma, so the split is exact wherever they take it.
fn for_each_member<'a>(
    text: &'a str,
    mut member: impl FnMut(&'a str, &'a str) -> Option<()>,
) -> Option<()> {
    let mut rest = text.strip_prefix('{')?.strip_suffix('}')?;
    while !rest.is_empty() {
        let after_quote = rest.strip_prefix('"')?;
        let (name, after_name) = after_quote.split_at(after_quote.find('"')?);
        let after_colon = after_name.strip_prefix("\":")?;
        let (value, next) =
            after_colon.split_at(after_colon.find(',').unwrap_or(after_colon.len()));
        // Escapes, and control characters JSON refuses raw: the parser's call.
        if name.bytes().any(|b| b == b'\\' || b < 0x20) {
            return None;
        }
        member(name, value)?;
        rest = match next.strip_prefix(',') {
            Some(more) if !more.is_empty() => more,
            Some(_) => return None,
            None => next,
        };
    }
    Some(())
}

/// A summary exactly as [`summary_json`] writes it (`{"name":number,"other":"NaN"}`), read
/// without a JSON parser: a listing reads one per run. `None` for any other text, which the
/// JSON parser then reads (or refuses).
fn summary_as_written(text: &str) -> Option<Vec<(Cow<'_, str>, f64)>> {
    let mut summary = Vec::new();
    for_each_member(text, |name, value| {
        let number = match value.strip_prefix('"') {
            Some(special) => match special.strip_suffix('"')? {
                "NaN" => f64::NAN,
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                _ => return None,
            },
            // Past f64's range: the JSON parser's call.
            None if is_json_number(value) => value.parse().ok().filter(|v: &f64| v.is_finite())?,
            None => return None,
        };
        summary.push((Cow::Borrowed(name), number));
        Some(())
    })?;
    Some(summary)
}

/// An object of whole numbers from 0 to `u64::MAX` as canonical JSON writes it (the seeds:
/// `{"data_order":7,"init":7}`), read without a JSON parser: a listing reads one per run.
/// `None` for any other text.
fn whole_numbers_as_written(text: &str) -> Option<Value> {
    let mut object = serde_json::Map::new();
    for_each_member(text, |name, value| {
        if !is_json_number(value) || value.contains(['-', '.', 'e', 'E']) {
            return None;
        }
        object.insert(name.to_string(), Value::from(value.parse::<u64>().ok()?));
        Some(())
    })?;
    Some(Value::Object(object))
}

/// Whether `text` is a number in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)?
/// ([eE] [+-]? [0-9]+)?` (Rust's float parser also takes `+1`, `.5`, `1.` and `inf`).
fn is_json_number(text: &str) -> bool {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let s = text.strip_prefix('-').unwrap_or(text);
    let whole = digits(s);
    if whole == 0 || (whole > 1 && s.starts_with('0')) {
        return false;
    }
    let mut s = &s[whole..];
    if let Some(fraction) = s.strip_prefix('.') {
        let n = digits(fraction);
        if n == 0 {
            return false;
        }
        s = &fraction[n..];
    }
    if let Some(exponent) = s.strip_prefix(['e', 'E']) {
        let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        let n = digits(exponent);
        if n == 0 {
            return false;
        }
        s = &exponent[n..];
    }
    s.is_empty()
}

/// One summary value as [`summary_json`] writes it: a number, or `"NaN"`, `"inf"`, `"-inf"`
/// (any text Rust parses as an f64). Read straight from the JSON text, without a `Value` in
/// between (a listing reads one summary per run).
struct SummaryValue(f64);

impl<'de> serde::Deserialize<'de> for SummaryValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SummaryValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, or \"NaN\", \"inf\" or \"-inf\"")
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<SummaryValue, E> {
                Ok(SummaryValue(v))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<SummaryValue, E> {
                Ok(SummaryValue(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<SummaryValue, E> {
                Ok(SummaryValue(v as f64))
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<SummaryValue, E> {
                v.parse()
                    .map(SummaryValue)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn summaries_keep_nan_and_refuse_text_that_is_no_number() {
        let summary = BTreeMap::from([("loss".into(), f64::NAN), ("acc".into(), 0.5)]);
        let back = summary_from_json(&summary_json(&summary)).unwrap();
        assert!(back["loss"].is_nan());
        assert_eq!(back["acc"], 0.5);
        // Out of order, a name twice: in order, the last one written wins (as the parser has it).
        let text = r#"{"b":1,"a":2,"b":3}"#;
        let members: Vec<(String, f64)> = (summary_members(text).unwrap().into_iter())
            .map(|(k, v)| (k.into_owned(), v))
            .collect();
        assert_eq!(members, [("a".to_string(), 2.0), ("b".to_string(), 3.0)]);
        let parsed: Vec<(String, u64)> = summary_by_json_parser(text).unwrap();
        assert_eq!(
            parsed,
            [
                ("a".to_string(), 2f64.to_bits()),
                ("b".to_string(), 3f64.to_bits())
            ]
        );
        let err = summary_from_json(r#"{"loss": "low"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("summary") && err.contains("low"), "{err}");
    }

    /// What the JSON parser alone makes of a summary's text (values compared by their bits,
    /// so that NaN equals NaN).
    fn summary_by_json_parser(text: &str) -> Option<Vec<(String, u64)>> {
        let map: BTreeMap<String, SummaryValue> = serde_json::from_str(text).ok()?;
        Some(map.into_iter().map(|(k, v)| (k, v.0.to_bits())).collect())
    }

    proptest! {
        #[test]
        fn summaries_read_without_the_json_parser_read_as_with_it(
            summary in proptest::collection::btree_map(
                "[a-z\\\\\",:é \t]{0,6}",
                prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(-0.0)],
                0..5,
            ),
            cut in any::<prop::sample::Index>(),
            junk in "[0-9eE.+\\-\",:{}a-z \t]{0,4}",
        ) {
            // What the writer writes is read back whole, by the fast path (names without
            // escapes) or by the parser.
            let summary: BTreeMap<Arc<str>, f64> =
                summary.into_iter().map(|(k, v)| (Arc::from(k), v)).collect();
            let text = summary_json(&summary);
            let back = summary_from_json(&text).unwrap();
            let bits = |m: &BTreeMap<Arc<str>, f64>| -> Vec<(String, u64)> {
                m.iter().map(|(k, v)| (k.to_string(), v.to_bits())).collect()
            };
            prop_assert_eq!(bits(&back), bits(&summary));
            if !text.contains('\\') {
                prop_assert!(summary_as_written(&text).is_some(), "{}", text);
            }
            // Any edit of it is read as the parser reads it, or refused as the parser refuses it.
            let at = cut.index(text.len() + 1);
            let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let edited = format!("{}{junk}{}", &text[..at], &text[at..]);
            let expected = summary_by_json_parser(&edited);
            prop_assert_eq!(summary_from_json(&edited).ok().map(|m| bits(&m)), expected, "{}", edited);
        }

        #[test]
        fn seeds_read_without_the_json_parser_read_as_with_it(
            seeds in proptest::collection::btree_map(
                "[a-z_\\\\\",:é \t]{0,6}",
                prop_oneof![any::<u64>(), Just(0u64), Just(u64::MAX)],
                0..5,
            ),
            cut in any::<prop::sample::Index>(),
            junk in "[0-9eE.+\\-\",:{}a-z \t\\[\\]]{0,4}",
        ) {
            let value = serde_json::to_value(&seeds).unwrap();
            let text = json_text(&value);
            let parsed = |text: &str| serde_json::from_str::<Value>(text).ok();
            let fast = |text: &str| component_json(text, "seeds").ok();
            prop_assert_eq!(fast(&text), Some(value.clone()));
            if !text.contains('\\') {
                prop_assert_eq!(whole_numbers_as_written(&text), Some(value), "{}", text);
            }
            // Any edit of it is read as the parser reads it, or refused as the parser refuses it.
            let at = cut.index(text.len() + 1);
            let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let edited = format!("{}{junk}{}", &text[..at], &text[at..]);
            prop_assert_eq!(fast(&edited), parsed(&edited), "{}", edited);
        }

        #[test]
        fn seed_numbers_are_json_numbers(
            token in "[-+]?[0-9.]{0,4}([eE][-+]?[0-9]{0,3})?|18446744073709551615|18446744073709551616",
        ) {
            let text = format!(r#"{{"a":{token},"b":1}}"#);
            let fast = component_json(&text, "seeds").ok();
            prop_assert_eq!(fast, serde_json::from_str::<Value>(&text).ok(), "{}", text);
        }

        #[test]
        fn summary_numbers_are_json_numbers(
            token in "[-+]?[0-9.]{0,4}([eE][-+]?[0-9]{0,3})?|inf|NaN|1e400|\"[a-zA-Z-]{0,4}\"",
        ) {
            let text = format!(r#"{{"a":{token}}}"#);
            let expected = summary_by_json_parser(&text);
            let bits = |m: BTreeMap<Arc<str>, f64>| -> Vec<(String, u64)> {
                m.into_iter().map(|(k, v)| (k.to_string(), v.to_bits())).collect()
            };
            prop_assert_eq!(summary_from_json(&text).ok().map(bits), expected, "{}", text);
        }
    }
}
