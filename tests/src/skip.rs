//! The one way a test leaves a check out: [`missing_tool`] and [`not_applicable`].
//!
//! A test that returns early shows as `ok` in cargo's output, exactly like one that ran:
//! that is how deployment validators went unrun for months without anyone seeing it. So a
//! skip here is loud in three ways: a `SKIPPED: <test>: <why>` line written straight to the
//! process's stderr (past libtest's capture, so it shows in the test output); the same line
//! appended to the skip log (`target/skipped-checks.txt`, or `SKIPPED_CHECKS_LOG`), which
//! `make test` empties first and counts at the end (`scripts/report-skips.sh`); and, for a
//! missing tool under `CI=true`, a panic naming the tool, because CI installs every tool a
//! test uses (`make deps`), so a missing one there is a broken set-up, not a reason to pass.
//!
//! A [`not_applicable`] skip (a check that cannot be arranged in the chosen set-up, such as
//! restarting a broker named by `KAFKA_BROKERS`) is reported the same way but does not
//! fail under CI: CI never makes that choice, and nothing CI could install would change it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// What a skip means under CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A tool the check needs is not installed: fatal under `CI=true`.
    MissingTool,
    /// The check cannot run in this set-up (an external broker, say): reported, not fatal.
    NotApplicable,
}

/// Skips the rest of the calling test because `tool` is not installed; `why` says what
/// would install it. Panics under `CI=true`. The caller returns right after.
pub fn missing_tool(tool: &str, why: &str) {
    record(
        &Policy::from_env(),
        Kind::MissingTool,
        &current_test(),
        &format!("{tool} is not installed ({why})"),
    );
}

/// Skips the rest of the calling test because it cannot run in this set-up, saying why.
pub fn not_applicable(why: &str) {
    record(
        &Policy::from_env(),
        Kind::NotApplicable,
        &current_test(),
        why,
    );
}

/// Whether this is a CI run (`CI=true`, as CI services and `.ci/run` set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Where skips go and whether they are fatal; read from the environment once per skip.
#[derive(Debug, Clone)]
pub struct Policy {
    pub ci: bool,
    pub log: PathBuf,
    /// Also write the line to stderr (off in this module's own tests, whose made-up skips
    /// would read as real ones in the test output).
    pub echo: bool,
}

impl Policy {
    pub fn from_env() -> Policy {
        Policy {
            ci: in_ci(),
            log: default_log(),
            echo: true,
        }
    }
}

/// The skip log: `SKIPPED_CHECKS_LOG` (not `PULSE_…`: pulse reads those as its settings and
/// would warn about it in every child's log), else `skipped-checks.txt` in cargo's target directory.
pub fn default_log() -> PathBuf {
    if let Some(path) = std::env::var_os("SKIPPED_CHECKS_LOG") {
        return path.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("tests/ sits in the repository")
                .join("target")
        },
        PathBuf::from,
    );
    target.join("skipped-checks.txt")
}

/// Reports one skip under `policy` (the testable core of [`missing_tool`] and
/// [`not_applicable`]).
pub fn record(policy: &Policy, kind: Kind, test: &str, why: &str) {
    if policy.ci && kind == Kind::MissingTool {
        panic!(
            "{test}: {why}. Under CI=true a missing tool fails the test: `make deps` must \
             install it"
        );
    }
    let line = format!("SKIPPED: {test}: {why}\n");
    if policy.echo {
        // Straight to the file descriptor: libtest captures `eprintln!`, not this.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    if let Some(dir) = policy.log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One `write_all` of a short line on an O_APPEND file: concurrent tests (threads and
    // processes) do not interleave within a line.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&policy.log)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(error) = written {
        // Losing the record would turn the skip back into a silent pass.
        panic!(
            "{test}: skipped ({why}), but the skip log {} is not writable: {error}",
            policy.log.display()
        );
    }
}

/// The running test's name: libtest names each test's thread after it.
fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("(unnamed test)")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ci: bool) -> (tempfile::TempDir, Policy) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("nested/skipped-checks.txt");
        (
            dir,
            Policy {
                ci,
                log,
                echo: false,
            },
        )
    }

    #[test]
    fn a_missing_tool_fails_under_ci_naming_the_tool() {
        let (_dir, policy) = policy(true);
        let outcome = std::panic::catch_unwind(|| {
            record(
                &policy,
                Kind::MissingTool,
                "deploy::hadolint",
                "hadolint is not installed (make deps)",
            )
        });
        let message = *outcome
            .expect_err("a missing tool under CI=true must fail the test")
            .downcast::<String>()
            .unwrap();
        assert!(message.contains("hadolint is not installed"), "{message}");
        assert!(message.contains("deploy::hadolint"), "{message}");
        assert!(!policy.log.exists(), "a failure is not also a skip");
    }

    #[test]
    fn outside_ci_every_skip_is_logged_one_line_each() {
        let (_dir, policy) = policy(false);
        record(
            &policy,
            Kind::MissingTool,
            "a::one",
            "kubectl is not installed",
        );
        record(
            &policy,
            Kind::NotApplicable,
            "a::two",
            "KAFKA_BROKERS is set",
        );
        let log = std::fs::read_to_string(&policy.log).unwrap();
        assert_eq!(
            log,
            "SKIPPED: a::one: kubectl is not installed\nSKIPPED: a::two: KAFKA_BROKERS is set\n"
        );
    }

    #[test]
    fn a_set_up_that_cannot_run_a_check_is_logged_even_under_ci() {
        let (_dir, policy) = policy(true);
        record(
            &policy,
            Kind::NotApplicable,
            "b::restart",
            "external broker",
        );
        let log = std::fs::read_to_string(&policy.log).unwrap();
        assert_eq!(log, "SKIPPED: b::restart: external broker\n");
    }

    #[test]
    fn the_test_name_comes_from_libtests_thread() {
        assert_eq!(
            current_test(),
            "skip::tests::the_test_name_comes_from_libtests_thread"
        );
    }

    /// The end of `make test` counts and lists the log; an empty or absent log says 0.
    #[test]
    fn the_make_test_summary_counts_the_logged_skips() {
        let (dir, policy) = policy(false);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/report-skips.sh");
        let report = |log: &Path| {
            let output = std::process::Command::new("bash")
                .arg(&script)
                .arg(log)
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        };
        assert_eq!(
            report(&dir.path().join("absent.txt")).lines().next(),
            Some("0 checks skipped")
        );
        record(
            &policy,
            Kind::MissingTool,
            "c::one",
            "hadolint is not installed",
        );
        record(
            &policy,
            Kind::NotApplicable,
            "c::two",
            "KAFKA_BROKERS is set",
        );
        let text = report(&policy.log);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "2 checks skipped:", "{text}");
        assert!(
            lines.iter().any(|l| l.contains("c::one: hadolint")),
            "{text}"
        );
        assert!(
            lines.iter().any(|l| l.contains("c::two: KAFKA_BROKERS")),
            "{text}"
        );
    }
}
