//! Records the git commit the binary is built from (`BLUESHIFT_COMMIT`, for `--version` and
//! `blueshift_build_info`). A `BLUESHIFT_COMMIT` variable set for the build wins (a Docker
//! build has no `.git`); outside git it is `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Asks cargo to rebuild when `path` changes, if it exists (a missing path would rerun this
/// script on every build).
fn watch(path: Option<String>) {
    if let Some(path) = path.filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=BLUESHIFT_COMMIT");
    let commit = std::env::var("BLUESHIFT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it points to (a commit).
    let path = |p: &str| git(&["rev-parse", "--path-format=absolute", "--git-path", p]);
    watch(path("HEAD"));
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(path(&branch));
    }
    watch(path("packed-refs"));
    println!("cargo:rustc-env=BLUESHIFT_COMMIT={commit}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=BLUESHIFT_TARGET={target}");
}
