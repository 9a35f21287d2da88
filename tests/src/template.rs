//! The `initdb` cache: one freshly initialised data directory per binaries
//! folder, which every cluster copies (`cp -a`) instead of running `initdb`
//! again — a copy takes milliseconds where `initdb` takes about a second, and
//! many tests start clusters on two cores.
//!
//! Templates live in `${CARGO_TARGET_TMPDIR:-/tmp}/blueshift-initdb-template/
//! v<format>-<version>_<bin folder>/data`. Parallel test processes serialise on an
//! exclusive `flock` of `<…>.lock`; a template is built in a scratch folder
//! and renamed into place, so a half-built one is never seen.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use rustix::fs::{flock, FlockOperation};

use crate::binaries::PgBinaries;
use crate::command::{chown_to_server_user, run, server_command};

/// The template data directory for `bins`, created on first use.
pub(crate) fn template_for(bins: &PgBinaries) -> anyhow::Result<PathBuf> {
    let root = templates_root();
    let key = template_key(bins);
    let dir = root.join(&key);
    let data = dir.join("data");
    let done = dir.join("complete");
    if done.exists() {
        return Ok(data);
    }

    fs::create_dir_all(&root).with_context(|| format!("could not create {}", root.display()))?;
    let lock_path = root.join(format!("{key}.lock"));
    let lock = File::create(&lock_path)
        .with_context(|| format!("could not create {}", lock_path.display()))?;
    flock(&lock, FlockOperation::LockExclusive)
        .with_context(|| format!("could not lock {}", lock_path.display()))?;
    if done.exists() {
        return Ok(data);
    }

    let scratch = root.join(format!("{key}.building-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)
        .with_context(|| format!("could not create {}", scratch.display()))?;
    chown_to_server_user(&scratch)?;
    let started = Instant::now();
    run(server_command(&bins.bin("initdb"), &scratch)?
        .arg("--pgdata")
        .arg(scratch.join("data"))
        .args([
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]))
    .with_context(|| {
        format!(
            "initdb of PostgreSQL {} failed (when we are root it runs as the postgres OS user, \
             which must be able to enter every folder above {}; set CARGO_TARGET_TMPDIR or \
             TMPDIR to move it)",
            bins.version(),
            root.display()
        )
    })?;
    tracing::debug!(
        version = bins.version(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "initdb template created"
    );
    File::create(scratch.join("complete"))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&scratch, &dir)
        .with_context(|| format!("could not move {} to {}", scratch.display(), dir.display()))?;
    drop(lock);
    Ok(data)
}

fn templates_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("blueshift-initdb-template")
}

/// Bumped whenever the `initdb` arguments change, so old templates are not
/// reused.
const TEMPLATE_FORMAT: u32 = 1;

/// `v1-15.18_usr_lib_postgresql_15_bin`: the format, the version and the
/// folder, so two installations of one version never share a template.
fn template_key(bins: &PgBinaries) -> String {
    let folder: String = path_text(bins.dir())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!(
        "v{TEMPLATE_FORMAT}-{}{}",
        bins.version(),
        folder.trim_end_matches('_')
    )
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
