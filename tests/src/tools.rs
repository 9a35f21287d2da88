//! The operations tools some tests run: `promtool` (alert rules, a live metrics endpoint) and
//! `docker-compose` (the compose file). Missing, they are an error naming the install command
//! (`scripts/install-tools`); tests fail with it, they never skip.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What installs the tools.
pub const TOOLS_INSTALL_COMMAND: &str = "scripts/install-tools (as root)";

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `promtool`: `$PROMTOOL`, then the `PATH`, then where `scripts/install-tools` unpacks it.
pub fn promtool() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = on_path("promtool") {
        return Ok(p);
    }
    let cached = crate::cache_dir()
        .parent()
        .unwrap_or(Path::new("/var/cache/blueshift"))
        .join("promtool/promtool");
    if cached.is_file() {
        return Ok(cached);
    }
    anyhow::bail!(
        "promtool not found (PROMTOOL, PATH, {}): run {TOOLS_INSTALL_COMMAND}",
        cached.display()
    )
}

/// Asserts that `promtool check metrics` accepts `body` (a metrics exposition); panics with
/// promtool's words and the body otherwise.
pub fn assert_promtool_accepts(body: &str) {
    let mut check = Command::new(promtool().unwrap_or_else(|e| panic!("{e:#}")))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    check
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(body.as_bytes())
        .expect("promtool reads the body");
    let out = check.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docker-compose`, from the `PATH`.
pub fn docker_compose() -> anyhow::Result<PathBuf> {
    on_path("docker-compose").ok_or_else(|| {
        anyhow::anyhow!("docker-compose not found on PATH: run {TOOLS_INSTALL_COMMAND}")
    })
}
