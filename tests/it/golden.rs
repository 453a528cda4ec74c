//! Golden files: decoder output for each input shape, and a small replay snapshot whose
//! every number was checked by hand (see `golden/README.md`). Run with `UPDATE_GOLDEN=1` to
//! rewrite them after an intended change, then review the diff.

use std::path::Path;

use pulse_core::EngineSettings;
use pulse_core::decode::Decoder;
use serde_json::{Value, json};

use crate::helpers::{assert_success, golden_dir, pulse_bin};

fn compare_or_update(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the output:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[test]
fn decoder_shapes() {
    let decoder = Decoder::new(&EngineSettings::default());
    let input = std::fs::read_to_string(golden_dir().join("decoder.ndjson")).unwrap();
    let mut out = String::new();
    for line in input.lines() {
        let value = match decoder.decode(line.as_bytes()) {
            Ok(e) => json!({
                "user": e.user, "kind": e.kind.as_str(), "name": e.name, "ts_ms": e.ts_ms,
                "feature": e.feature, "session_id": e.session_id,
            }),
            Err(reason) => json!({ "rejected": reason.as_str() }),
        };
        out.push_str(&serde_json::to_string(&value).unwrap());
        out.push('\n');
    }
    compare_or_update(&golden_dir().join("decoder.expected.ndjson"), &out);
}

#[test]
fn small_replay_snapshot() {
    let output = std::process::Command::new(pulse_bin())
        .args([
            "replay",
            "--compact",
            "--shards",
            "2",
            "--wall-clock",
            "2026-03-11T00:00:00Z",
        ])
        .arg("--input")
        .arg(golden_dir().join("small.ndjson"))
        .env_remove("PULSE_CONFIG")
        .output()
        .unwrap();
    assert_success(&output, "pulse replay");
    let mut snapshot: Value = serde_json::from_slice(&output.stdout).unwrap();
    // Bytes of state depend on the sketch library's internals, not on the data's meaning.
    snapshot["state"]["estimated_bytes"] = json!("(varies)");
    let pretty = serde_json::to_string_pretty(&snapshot).unwrap() + "\n";
    compare_or_update(&golden_dir().join("small.snapshot.json"), &pretty);
}
