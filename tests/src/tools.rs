//! Where the external programs the tests run are found: the pinned copies that
//! `scripts/ensure-*.sh` install under `<repo>/.tools/bin` first, then `PATH`.
//!
//! The pinned copy wins so that a test checks with the version `make deps` installed, not
//! whatever a developer's machine happens to carry under the same name.

use std::path::{Path, PathBuf};

/// The project's own tool directory, `<repo>/.tools/bin` (git-ignored).
pub fn project_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .join(".tools/bin")
}

/// The executable `name`, from `.tools/bin` or else `PATH`; `None` if neither has it.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(project_bin())
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.len() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_not_made_up_ones() {
        assert!(find("sh").is_some());
        assert_eq!(find("no-such-tool-pulse-tests"), None);
    }
}
