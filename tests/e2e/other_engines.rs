//! The archive is plain Parquet: pyarrow and DuckDB read the tables that recipe wrote (and
//! its CLI compacted) and find the same runs, columns, values and metadata.

use crate::{python, recipe_ok, toy};
use serde_json::Value;
use std::process::Command;

const SCRIPT: &str = r#"
import json, sys
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import duckdb

root = sys.argv[1]
out = {}
runs = ds.dataset(f"{root}/runs", format="parquet", partitioning="hive").to_table()
out["runs_columns"] = runs.column_names
out["runs"] = sorted(
    [{"run_id": r["run_id"], "attempt": r["attempt"], "status": r["status"],
      "config": json.loads(r["config"]), "summary": json.loads(r["summary"])}
     for r in runs.to_pylist()],
    key=lambda r: (r["run_id"], r["attempt"]))
metrics = ds.dataset(f"{root}/metrics", format="parquet", partitioning="hive").to_table()
out["metrics_columns"] = metrics.column_names
out["metrics_rows"] = metrics.num_rows
one_file = ds.dataset(f"{root}/metrics", format="parquet").files[0]
md = pq.read_metadata(one_file).metadata
out["metadata"] = {k.decode(): v.decode() for k, v in md.items() if k.startswith(b"recipe.")}
group = pq.read_metadata(one_file).row_group(0)
out["compression"] = {group.column(i).path_in_schema: group.column(i).compression
                      for i in range(group.num_columns)}
out["encodings"] = {group.column(i).path_in_schema: list(group.column(i).encodings)
                    for i in range(group.num_columns)}

con = duckdb.connect()
out["duckdb_final_loss"] = {
    run_id: value for run_id, value in con.execute(f"""
        SELECT m.run_id, m.value FROM read_parquet('{root}/metrics/*/*.parquet', hive_partitioning=true) m
        JOIN (SELECT run_id, max(step) AS step FROM read_parquet('{root}/metrics/*/*.parquet') GROUP BY run_id) l
          USING (run_id, step)
        WHERE m.name = 'train_loss' AND m.attempt = 1""").fetchall()}
out["duckdb_days"] = con.execute(
    f"SELECT count(DISTINCT day) FROM read_parquet('{root}/runs/*/*.parquet', hive_partitioning=true)").fetchone()[0]
print(json.dumps(out))
"#;

#[test]
fn issue_2_pyarrow_and_duckdb_read_what_recipe_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("runs");
    for seed in ["1", "2", "3"] {
        toy(&archive, &["--seed-init", seed, "--steps", "40"]);
    }
    toy(&archive, &["--seed-init", "1", "--steps", "40"]); // a replicate
    recipe_ok(dir.path(), &["runs", "compact"]);
    let ours: Vec<Value> =
        serde_json::from_str(&recipe_ok(dir.path(), &["runs", "list", "--json"])).unwrap();

    let out = Command::new(python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();

    for column in [
        "run_id", "attempt", "status", "config", "seeds", "data", "code", "env", "summary",
        "group_id", "day",
    ] {
        assert!(
            theirs["runs_columns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == column),
            "runs lacks {column}"
        );
    }
    assert_eq!(
        theirs["metrics_columns"],
        serde_json::json!([
            "run_id",
            "attempt",
            "step",
            "name",
            "value",
            "wall_time",
            "day"
        ])
    );
    assert_eq!(theirs["metrics_rows"], 4 * 40 * 2);
    assert_eq!(theirs["metadata"]["recipe.schema_version"], "1");
    assert_eq!(theirs["metadata"]["recipe.table"], "metrics");
    // ZSTD where it pays: the points; a chunk's one run id is stored as it is.
    for column in ["step", "value", "wall_time"] {
        assert_eq!(theirs["compression"][column], "ZSTD", "{column}");
    }
    assert_eq!(theirs["compression"]["run_id"], "UNCOMPRESSED");
    // Steps are delta-coded and values stored plain: a dictionary of distinct numbers would
    // be as large as the column (DuckDB's join above decodes both).
    let encodings = |column: &str| theirs["encodings"][column].to_string();
    assert!(
        encodings("step").contains("DELTA_BINARY_PACKED"),
        "{}",
        encodings("step")
    );
    assert!(
        !encodings("value").contains("DICTIONARY"),
        "{}",
        encodings("value")
    );
    assert!(
        encodings("run_id").contains("DICTIONARY"),
        "{}",
        encodings("run_id")
    );
    assert_eq!(theirs["duckdb_days"], 1);

    let their_runs = theirs["runs"].as_array().unwrap();
    assert_eq!(their_runs.len(), ours.len());
    for run in &ours {
        let id = run["run_id"].as_str().unwrap();
        let twin = their_runs
            .iter()
            .find(|r| r["run_id"] == id && r["attempt"] == run["attempt"])
            .unwrap();
        assert_eq!(twin["status"], run["status"]);
        assert_eq!(twin["config"], run["identity"]["config"]["value"]);
        // Bit for bit: the final loss DuckDB finds is the summary recipe computed.
        assert_eq!(twin["summary"]["train_loss"], run["summary"]["train_loss"]);
        if run["attempt"] == 1 {
            assert_eq!(
                theirs["duckdb_final_loss"][id],
                run["summary"]["train_loss"]
            );
        }
    }
}
