//! A run's identity: everything that decided its result, in five components that are hashed
//! separately, so that a diff can say which one changed.
//!
//! | component | what it holds |
//! |---|---|
//! | `config` | the typed config as canonical JSON |
//! | `seeds` | one seed per source of randomness (`init`, `data_order`, `dropout`, `augmentation`, `sampling`) |
//! | `data` | the dataset fingerprint: blake3 of content, labels and split indices (its name and where it was loaded from are kept, but only the fingerprint identifies it) |
//! | `code` | git commit, dirty flag, blake3 of the uncommitted diff, cell source, runtime version |
//! | `env` | rustc, crate versions, OS, CPU model and features, thread count, device |
//!
//! `run_id` is the hash of the five component hashes; `group_id` leaves the seeds out, so the
//! runs of one group differ only by seed (what "mean ± std over seeds" averages over).

use crate::canonical::{canonicalize, Hash};
use crate::code::CodeState;
use crate::env::Environment;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The dataset fingerprint as the identity sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataFingerprint {
    /// A human name ("digits", "fashion-mnist").
    pub name: String,
    /// blake3 over content, labels and split indices (hex).
    pub hash: String,
    /// Anything else worth keeping: split sizes, per-split hashes, the path it came from.
    #[serde(default)]
    pub details: Value,
}

/// The five components of a run's identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub config: Value,
    pub seeds: BTreeMap<String, u64>,
    pub data: DataFingerprint,
    pub code: CodeState,
    pub env: Environment,
}

/// The names of the components, in the order a diff reports them.
pub const COMPONENTS: [&str; 5] = ["config", "seeds", "data", "code", "env"];

/// The hashes of an identity, as stored in the `runs` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHashes {
    pub run_id: Hash,
    pub group_id: Hash,
    /// In the order of [`COMPONENTS`].
    pub components: [Hash; 5],
}

impl Identity {
    /// Each component as canonical JSON values, in the order of [`COMPONENTS`].
    pub fn component_values(&self) -> Result<[Value; 5]> {
        Ok([
            canonicalize(&self.config)?,
            canonical_value(&self.seeds)?,
            canonical_value(&self.data)?,
            canonical_value(&self.code)?,
            canonical_value(&self.env)?,
        ])
    }

    /// The component hashes, the run id and the group id.
    pub fn hashes(&self) -> Result<IdentityHashes> {
        let values = self.component_values()?;
        let mut components = [Hash([0; 32]); 5];
        for (slot, value) in components.iter_mut().zip(values.iter()) {
            *slot = Hash::of_json(value)?;
        }
        // Data is identified by its content alone: the same examples loaded from another
        // path, or under another name, are the same data. (Its details stay in the archive.)
        components[2] = Hash::of_json(&json!({ "hash": self.data.hash }))?;
        let record = |skip_seeds: bool| {
            let mut map = serde_json::Map::new();
            for (name, hash) in COMPONENTS.iter().zip(components.iter()) {
                if !(skip_seeds && *name == "seeds") {
                    map.insert(name.to_string(), json!(hash.to_hex()));
                }
            }
            Value::Object(map)
        };
        Ok(IdentityHashes {
            run_id: Hash::of_json(&record(false))?,
            group_id: Hash::of_json(&record(true))?,
            components,
        })
    }
}

/// Any serialisable component as canonical JSON.
fn canonical_value<T: Serialize>(component: &T) -> Result<Value> {
    let value =
        serde_json::to_value(component).map_err(|e| Error::Invalid(format!("identity: {e}")))?;
    canonicalize(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Identity {
        Identity {
            config: json!({"lr": 3e-4, "batch_size": 64}),
            seeds: [("init".to_string(), 1), ("data_order".to_string(), 2)].into(),
            data: DataFingerprint {
                name: "digits".into(),
                hash: "ab".into(),
                details: Value::Null,
            },
            code: CodeState::outside_git(),
            env: Environment::capture(),
        }
    }

    #[test]
    fn seed_changes_run_id_but_not_group() {
        let a = sample();
        let mut b = sample();
        b.seeds.insert("init".into(), 7);
        let (ha, hb) = (a.hashes().unwrap(), b.hashes().unwrap());
        assert_ne!(ha.run_id, hb.run_id);
        assert_eq!(ha.group_id, hb.group_id);
        assert_eq!(ha.components[0], hb.components[0]);
        assert_ne!(ha.components[1], hb.components[1]);
    }

    #[test]
    fn data_is_identified_by_content_not_location() {
        let a = sample();
        let mut b = sample();
        b.data.name = "digits (copy)".into();
        b.data.details = json!({"spec": {"kind": "csv", "path": "/elsewhere/digits.csv"}});
        assert_eq!(a.hashes().unwrap(), b.hashes().unwrap());
        b.data.hash = "cd".into();
        assert_ne!(
            a.hashes().unwrap().components[2],
            b.hashes().unwrap().components[2]
        );
    }

    #[test]
    fn config_key_order_and_number_form_do_not_matter() {
        let a = sample();
        let mut b = sample();
        b.config = json!({"batch_size": 64.0, "lr": 0.0003});
        assert_eq!(a.hashes().unwrap().run_id, b.hashes().unwrap().run_id);
    }
}
