//! Every checked-in fuzz input (`fuzz/corpus/<target>/`: the seeds and each crash the
//! fuzzer once found) through the fuzz targets' own functions, on stable Rust: a fixed
//! finding stays fixed in `make test`, without libFuzzer. `make fuzz` searches for new ones.

use std::fs;
use std::path::Path;

#[path = "../../fuzz/src/lib.rs"]
mod targets;

fn run_corpus(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a readable corpus directory").path();
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // A panic names the input, so it can be replayed with the fuzz target.
        eprintln!("{target}: {}", path.display());
        run(&bytes);
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", dir.display());
}

#[test]
fn decode_message_corpus() {
    run_corpus("decode_message", targets::decode_message);
}

#[test]
fn engine_state_corpus() {
    run_corpus("engine_state", targets::engine_state);
}

#[test]
fn checkpoint_file_corpus() {
    run_corpus("checkpoint_file", targets::checkpoint_file);
}
