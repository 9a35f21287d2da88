//! The `blueshift` binary, for end-to-end tests that run it as a user would (and kill it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The path of the `blueshift` binary of this workspace, built (debug profile) on first use.
///
/// Integration tests of this crate cannot name another package's binary through
/// `CARGO_BIN_EXE_*`, so the binary is built with the same `cargo` that runs the tests, with the
/// `failpoints` feature: the tests arm them through `BLUESHIFT_FAILPOINTS` (a release build has
/// none).
pub fn blueshift_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ sits in the workspace")
            .to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--package",
                "blueshift",
                "--features",
                "failpoints",
            ])
            .current_dir(&workspace)
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "cargo build --package blueshift --features failpoints failed"
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        let target = if target.is_absolute() {
            target
        } else {
            workspace.join(target)
        };
        target.join("debug").join("blueshift")
    })
}

/// The stdout of a finished `blueshift` run, after asserting that it succeeded (else panics with
/// `what`, its stdout and its stderr).
pub fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
