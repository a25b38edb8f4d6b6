//! Canonical JSON and blake3 hashes: the ground the run identity stands on.
//!
//! Two values that are equal as JSON must hash equal, whatever order their keys were inserted
//! in and however their numbers were written. So the canonical form
//! 1. sorts object keys (bytewise, as `BTreeMap` does),
//! 2. writes every number one way: an integral value within ±2^53 as an integer (`1.0`,
//!    `1e0` and `1` all become `1`), any other finite float as its shortest round-trip
//!    decimal (ryu, via serde_json), and `-0.0` as `0`,
//! 3. rejects NaN and infinities, which JSON cannot carry and which would otherwise hash as
//!    `null`,
//! 4. has no whitespace.

use crate::{Error, Result};
use serde_json::Value;

/// A blake3 digest, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Hash raw bytes.
    pub fn of_bytes(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// Hash the canonical form of a JSON value.
    ///
    /// ```
    /// use recipe_archive::canonical::Hash;
    /// let a = serde_json::json!({"lr": 3e-4, "steps": 100.0});
    /// let b = serde_json::json!({"steps": 100, "lr": 0.0003});
    /// assert_eq!(Hash::of_json(&a).unwrap(), Hash::of_json(&b).unwrap());
    /// ```
    pub fn of_json(value: &Value) -> Result<Hash> {
        Ok(Hash::of_bytes(to_canonical(value)?.as_bytes()))
    }

    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parse 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<Hash> {
        blake3::Hash::from_hex(hex)
            .map(|h| Hash(*h.as_bytes()))
            .map_err(|_| Error::Invalid(format!("{hex:?} is not a 64-digit blake3 hex hash")))
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..12])
    }
}

/// The largest integer every f64 between ±it represents exactly.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0; // 2^53

/// The canonical text of a JSON value (see the module docs).
pub fn to_canonical(value: &Value) -> Result<String> {
    let mut out = String::new();
    write_canonical(value, &mut out)?;
    Ok(out)
}

/// A JSON value in canonical form: the same tree with numbers normalised, so that
/// `serde_json::to_string` of it (keys sorted by serde_json's `BTreeMap`) is canonical.
pub fn canonicalize(value: &Value) -> Result<Value> {
    let text = to_canonical(value)?;
    serde_json::from_str(&text).map_err(|e| Error::Format(format!("canonical JSON: {e}")))
}

fn write_canonical(value: &Value, out: &mut String) -> Result<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // serde_json's Map is a BTreeMap unless `preserve_order` is on somewhere in the
            // build; sort explicitly so the form never depends on a feature flag.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_number(n: &serde_json::Number, out: &mut String) -> Result<()> {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        out.push_str(&canonical_float(f)?);
    }
    Ok(())
}

/// One textual form per finite float.
pub fn canonical_float(f: f64) -> Result<String> {
    if !f.is_finite() {
        return Err(Error::Invalid(format!(
            "{f} cannot enter a run's identity: JSON has no NaN or infinity; \
             store it as a string if it is really meant"
        )));
    }
    if f == f.trunc() && f.abs() <= EXACT_INTEGER {
        // Integral: print as an integer, so 1.0 and 1 are one value. `as i64` is exact here.
        return Ok((f as i64).to_string());
    }
    Ok(serde_json::Number::from_f64(f)
        .map(|n| n.to_string())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_normalises_numbers() {
        let v = json!({"b": 1.0, "a": [2e0, -0.0, 0.5, 1e300], "c": {"z": null, "y": true}});
        assert_eq!(
            to_canonical(&v).unwrap(),
            r#"{"a":[2,0,0.5,1e+300],"b":1,"c":{"y":true,"z":null}}"#
        );
    }

    #[test]
    fn rejects_nan() {
        assert!(canonical_float(f64::NAN).is_err());
        assert!(canonical_float(f64::INFINITY).is_err());
    }

    #[test]
    fn hex_round_trip() {
        let h = Hash::of_bytes(b"recipe");
        assert_eq!(Hash::from_hex(&h.to_hex()).unwrap(), h);
        assert!(Hash::from_hex("xyz").is_err());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[a-z\\u{e9}\"\\\\]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-d]{1,3}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Rebuild a value with every object's keys inserted in reverse order and every integral
    /// number written as a float where that is exact.
    fn rewritten(v: &Value) -> Value {
        match v {
            Value::Array(a) => Value::Array(a.iter().map(rewritten).collect()),
            Value::Object(m) => {
                let mut out = serde_json::Map::new();
                for (k, v) in m.iter().rev() {
                    out.insert(k.clone(), rewritten(v));
                }
                Value::Object(out)
            }
            Value::Number(n) => match n.as_i64() {
                Some(i) if (i as f64) as i64 == i && (i as f64).abs() <= EXACT_INTEGER => {
                    json!(i as f64)
                }
                _ => v.clone(),
            },
            _ => v.clone(),
        }
    }

    proptest! {
        #[test]
        fn canonical_text_is_a_fixed_point(v in arb_json()) {
            let text = to_canonical(&v).unwrap();
            let reparsed: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(to_canonical(&reparsed).unwrap(), text);
        }

        #[test]
        fn equal_values_hash_equal(v in arb_json()) {
            prop_assert_eq!(Hash::of_json(&v).unwrap(), Hash::of_json(&rewritten(&v)).unwrap());
        }

        #[test]
        fn floats_have_one_form(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let text = canonical_float(f).unwrap();
            let back: f64 = text.parse().unwrap();
            prop_assert_eq!(back, if f == 0.0 { 0.0 } else { f });
            prop_assert_eq!(canonical_float(back).unwrap(), text);
        }
    }
}
