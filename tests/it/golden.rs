//! Golden files: decoder output for each input shape, and a small replay snapshot whose
//! every number was checked by hand (see `golden/README.md`). `make golden` (`UPDATE_GOLDEN=1`)
//! rewrites them after an intended change; review the diff.
//!
//! A rewrite never passes: a test that rewrote its golden file fails saying so, so that
//! `UPDATE_GOLDEN` left set cannot turn every golden comparison into a pass, and under
//! `CI=true` it is refused outright. A file that already matches passes as usual.

use std::path::Path;

use pulse_core::EngineSettings;
use pulse_core::decode::Decoder;
use serde_json::{Value, json};

use pulse_tests::skip;

use crate::helpers::{assert_success, golden_dir, pulse_bin};

fn compare_or_update(path: &Path, actual: &str) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    if let Err(message) = check_golden(path, actual, update, skip::in_ci()) {
        panic!("{message}");
    }
}

/// Compares `actual` with the golden file; with `update`, rewrites a file that differs and
/// returns an error saying so (refused when `ci`).
fn check_golden(path: &Path, actual: &str, update: bool, ci: bool) -> Result<(), String> {
    if update && ci {
        return Err(format!(
            "UPDATE_GOLDEN is refused under CI=true: CI compares {}, it never rewrites it",
            path.display()
        ));
    }
    let expected = std::fs::read_to_string(path);
    if expected.as_deref().is_ok_and(|e| e == actual) {
        return Ok(());
    }
    if update {
        std::fs::write(path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
        return Err(format!(
            "rewrote {} (UPDATE_GOLDEN is set): review the change with `git diff`, then run \
             the tests again without UPDATE_GOLDEN",
            path.display()
        ));
    }
    match expected {
        Err(e) => Err(format!(
            "{}: {e} (`make golden` creates it)",
            path.display()
        )),
        Ok(expected) => Err(format!(
            "{} differs from the output:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
    }
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

/// What `UPDATE_GOLDEN` may and may not do: a rewrite fails, CI refuses it, a match passes.
#[test]
fn a_golden_rewrite_never_passes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.expected");
    std::fs::write(&path, "old\n").unwrap();

    let refused = check_golden(&path, "new\n", true, true).unwrap_err();
    assert!(refused.contains("refused under CI=true"), "{refused}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");

    let differs = check_golden(&path, "new\n", false, false).unwrap_err();
    assert!(differs.contains("differs"), "{differs}");

    let rewrote = check_golden(&path, "new\n", true, false).unwrap_err();
    assert!(rewrote.contains("rewrote"), "{rewrote}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");

    // Now it matches: with or without UPDATE_GOLDEN, a comparison that holds passes.
    check_golden(&path, "new\n", true, false).unwrap();
    check_golden(&path, "new\n", false, true).unwrap();
    let missing = check_golden(&dir.path().join("none"), "x", false, false).unwrap_err();
    assert!(missing.contains("make golden"), "{missing}");
}
