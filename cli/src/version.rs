//! The version `--version` prints and `blueshift_build_info` exports: the crate version and
//! the git commit the binary was built from (`build.rs`: `git rev-parse`, or the
//! `BLUESHIFT_COMMIT` variable at build time, else `unknown`).

/// The crate's version.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit, abbreviated, or `unknown` outside git.
pub(crate) const COMMIT: &str = env!("BLUESHIFT_COMMIT");

/// `--version`: `0.1.0 (commit 1a2b3c4d5e6f)`.
pub(crate) const SHORT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BLUESHIFT_COMMIT"),
    ")"
);

/// `--version` in full (the same, with the target the binary was built for).
pub(crate) const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BLUESHIFT_COMMIT"),
    ")\ntarget: ",
    env!("BLUESHIFT_TARGET")
);
