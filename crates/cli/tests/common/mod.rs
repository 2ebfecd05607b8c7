//! What the binary's end-to-end tests share: running `engager` the way a user does, and
//! reading what it printed.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `engager` binary in `dir` with `args` and extra environment variables, with no
/// `ENGAGER_CONFIG` or `RUST_LOG` from the caller's environment.
pub fn engager_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engager"))
        .args(args)
        .current_dir(dir)
        .env_remove("ENGAGER_CONFIG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .expect("the engager binary runs")
}

/// Runs the `engager` binary in `dir` with `args`.
pub fn engager(dir: &Path, args: &[&str]) -> Output {
    engager_env(dir, args, &[])
}

/// Its standard output, after asserting that it succeeded (printing both streams if not).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "engager failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Its standard output parsed as JSON (whatever the exit code), or a panic showing both
/// streams.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
