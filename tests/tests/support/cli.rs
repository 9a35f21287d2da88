//! Running a `blueshift` subcommand against blue and green, as the `status_*` and `cleanup_*`
//! tests do: a clean environment (no `PGPASSWORD`, no `BLUESHIFT_*` endpoints), and helpers that
//! assert the outcome and return what was printed.

#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};

use blueshift_tests::{blueshift_binary, Cluster};

/// `blueshift <command> --source <blue> --target <green> <args>`.
pub(crate) fn run(command: &str, blue_uri: &str, green_uri: &str, args: &[&str]) -> Output {
    Command::new(blueshift_binary())
        .arg(command)
        .args(["--source", blue_uri, "--target", green_uri])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("PGPASSWORD")
        .env_remove("BLUESHIFT_SOURCE")
        .env_remove("BLUESHIFT_TARGET")
        .output()
        .expect("blueshift runs")
}

/// Its stdout, after asserting it succeeded.
pub(crate) fn succeeded(command: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

/// Its stderr, after asserting it failed.
pub(crate) fn failed(command: &str, out: &Output) -> String {
    assert!(!out.status.success(), "{command} succeeded unexpectedly");
    String::from_utf8(out.stderr.clone()).expect("UTF-8")
}

/// `pg_recvlogical` streaming `publication` from `slot` of `c`'s database `app`: a consumer that
/// is not blueshift, holding the slot active.
pub(crate) fn pg_recvlogical(c: &Cluster, slot: &str, publication: &str) -> Child {
    Command::new(c.binaries().bin("pg_recvlogical"))
        .args([
            "-h",
            c.host(),
            "-p",
            &c.port().to_string(),
            "-U",
            "postgres",
        ])
        .args([
            "-d",
            "app",
            "--slot",
            slot,
            "--start",
            "--no-loop",
            "-f",
            "-",
        ])
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={publication}"))
        .env_remove("PGPASSWORD")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pg_recvlogical runs")
}
