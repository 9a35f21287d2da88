//! The real `blueshift migrate` binary: a session from `new` to `down`, exit codes, the error a
//! failing script prints (server error and file:line:column), `DATABASE_URL` and `--target`, and
//! an example in every subcommand's `--help`.

#[path = "support/migrate.rs"]
mod support;

use std::fs;
use std::process::Command;

use blueshift_tests::blueshift_binary;
use support::{blueshift, stderr, stdout, Fixture};

#[test]
fn a_session_from_new_to_down() {
    let f = Fixture::new("cli session");
    let dir = f.dir().to_str().unwrap().to_owned();

    let out = blueshift(&["migrate", "new", "create users", "--dir", &dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("V1__create_users.sql"),
        "{}",
        stdout(&out)
    );
    let out = blueshift(&["migrate", "new", "Add user's \"e-mail\" ü", "--dir", &dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    let up2 = f.dir().join("V2__add_user_s_e_mail_ü.sql");
    assert!(up2.is_file(), "{}", stdout(&out));
    assert!(f.dir().join("V2__add_user_s_e_mail_ü.down.sql").is_file());

    let append = |name: &str, sql: &str| {
        let path = f.dir().join(name);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(sql);
        fs::write(path, text).unwrap();
    };
    append(
        "V1__create_users.sql",
        "CREATE TABLE users (id int PRIMARY KEY);\n",
    );
    append("V1__create_users.down.sql", "DROP TABLE users;\n");
    append(
        "V2__add_user_s_e_mail_ü.sql",
        "ALTER TABLE users ADD COLUMN email text;\n",
    );
    append(
        "V2__add_user_s_e_mail_ü.down.sql",
        "ALTER TABLE users DROP COLUMN email;\n",
    );

    let out = f.migrate(&["up", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("dry run"), "{text}");
    assert!(text.contains("would apply V1 \"create users\""), "{text}");
    assert!(
        text.contains("would apply V2 \"add user s e mail ü\""),
        "{text}"
    );
    assert_eq!(f.psql("SELECT to_regnamespace('blueshift') IS NULL"), "t");

    let out = f.migrate(&["up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("applied V2"), "{}", stdout(&out));

    let out = f.migrate(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["current"], 2);
    assert_eq!(json["migrations"][1]["state"], "applied");
    assert_eq!(json["migrations"][1]["description"], "add user s e mail ü");

    let out = f.migrate(&["status"]);
    assert!(
        stdout(&out).contains("at V2, 0 pending"),
        "{}",
        stdout(&out)
    );

    // A failing script: non-zero exit, the file:line:column and the server's error.
    fs::write(
        f.dir().join("V3__broken.sql"),
        "ALTER TABLE users ADD COLUMN age int;\nUPDATE users SET age = nope;\n",
    )
    .unwrap();
    let out = f.migrate(&["up"]);
    // Exit code 5: a data or integrity stop (`blueshift --help`).
    assert_eq!(out.status.code(), Some(5));
    let err = stderr(&out);
    assert!(err.contains("V3__broken.sql:2:24"), "{err}");
    assert!(err.contains("42703"), "{err}");
    assert!(err.contains("column \"nope\" does not exist"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    fs::remove_file(f.dir().join("V3__broken.sql")).unwrap();

    // An edited applied script: validate finds the difference (exit 1) until repair.
    append("V1__create_users.sql", "-- reviewed\n");
    let out = f.migrate(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("changed on disk"), "{}", stderr(&out));
    let out = f.migrate(&["repair"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("realigned V1"), "{}", stdout(&out));
    assert!(f.migrate(&["validate"]).status.success());

    let out = f.migrate(&["down", "--to", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("reverted V1"), "{}", stdout(&out));
    assert_eq!(f.psql("SELECT to_regclass('users') IS NULL"), "t");

    let out = f.migrate(&["history"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("failed"), "{text}");
    assert!(text.contains("repair"), "{text}");
}

#[test]
fn database_url_and_the_target_alias_name_the_database() {
    let f = Fixture::new("cli env");
    fs::write(f.dir().join("V1__t.sql"), "CREATE TABLE t (id int);").unwrap();
    let dir = f.dir().to_str().unwrap().to_owned();

    let out = Command::new(blueshift_binary())
        .args(["migrate", "up", "--dir", &dir])
        .env("DATABASE_URL", f.uri())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.psql("SELECT to_regclass('t') IS NOT NULL"), "t");

    let uri = f.uri();
    let out = blueshift(&["migrate", "status", "--target", &uri, "--dir", &dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("applied"), "{}", stdout(&out));

    let out = blueshift(&["migrate", "status", "--dir", &dir]);
    // Exit code 3: configuration refused.
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("DATABASE_URL"), "{}", stderr(&out));

    // Uncontended, `--lock-wait 0s` takes the lock at once.
    let out = blueshift(&[
        "migrate",
        "up",
        "--target",
        &uri,
        "--dir",
        &dir,
        "--lock-wait",
        "0s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("nothing to do"), "{}", stdout(&out));
}

#[test]
fn every_subcommand_help_has_an_example() {
    for sub in [
        &["migrate"][..],
        &["migrate", "status"],
        &["migrate", "up"],
        &["migrate", "down"],
        &["migrate", "validate"],
        &["migrate", "repair"],
        &["migrate", "baseline"],
        &["migrate", "new"],
        &["migrate", "history"],
        &["plan"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = blueshift(&args);
        assert!(out.status.success(), "{sub:?}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("Example"),
            "{sub:?} --help has no example:\n{}",
            stdout(&out)
        );
    }
    let out = blueshift(&["migrate", "up", "--help"]);
    assert!(stdout(&out).contains("--lock-timeout"), "{}", stdout(&out));
    assert!(stdout(&out).contains("--target"), "{}", stdout(&out));
}
