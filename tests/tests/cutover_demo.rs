//! `blueshift demo`, the README's first command, shows the whole migration: backfill and live
//! sync with proof, then through a real PgBouncer `verify` under the application's writes, a
//! cutover behind the real verify gate (no --skip-verify), rollback and a second cutover with
//! no failed application transaction, and green equal to blue at the end.

use std::process::Command;

use blueshift_tests::blueshift_binary;

#[test]
fn the_demo_runs_the_whole_migration() {
    let out = Command::new(blueshift_binary())
        .args(["demo", "--duration", "3"])
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "green equals blue row for row",
        "blueshift verify while the application writes",
        "cutover to green: cut-over; write pause",
        "rollback to blue: rolled-back; write pause",
        "cutover to green again: cut-over; write pause",
        "failed\n",
        "the way back keeps blue equal to it, row for row",
        "cutover: finalized",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // The verify printed its summary (both tables, the sidecar holding green at its point while
    // the application wrote), found green equal to blue, and came before the cutover, whose
    // gate read the run it recorded.
    let verified = stdout
        .find("  every row of blue at ")
        .unwrap_or_else(|| panic!("{stdout}"));
    let summary = &stdout[stdout.find("blueshift verify while").expect("checked")..verified];
    for table in [
        "\"accounts\"",
        "\"transfers\"",
        "verify run 1 at ",
        "sidecar held green's commits",
    ] {
        assert!(summary.contains(table), "{table} in:\n{summary}");
    }
    let first_cutover = stdout.find("cutover to green: cut-over").expect("checked");
    assert!(verified < first_cutover, "{stdout}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("--skip-verify"),
        "the demo cut over behind the real verify gate"
    );
    let stopped = stdout
        .lines()
        .find(|l| l.starts_with("the application stopped:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(stopped.ends_with(", 0 failed"), "{stopped}");
    eprintln!("{stdout}");
}
