//! Tests of connection-setting resolution: both string forms, environment fallbacks, the
//! password file, and redaction.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

const SECRET: &str = "hunter2-Sup3rS3cret";

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn parse(conninfo: &str) -> ConnectConfig {
    ConnectConfig::from_conninfo_with_env(conninfo, env_of(&[])).unwrap()
}

fn parse_env(conninfo: &str, vars: &[(&str, &str)]) -> Result<ConnectConfig, ConfigError> {
    ConnectConfig::from_conninfo_with_env(conninfo, env_of(vars))
}

#[test]
fn uri_with_everything() {
    let c = parse(
        "postgresql://alice:s%3Acret@db.example:5433/app?application_name=blue&connect_timeout=10\
         &sslmode=disable&options=-c%20wal_sender_timeout%3D5s&passfile=/etc/pgpass",
    );
    assert_eq!(c.host(), &Host::Tcp("db.example".into()));
    assert_eq!(c.port(), 5433);
    assert_eq!(c.user(), "alice");
    assert_eq!(c.password().unwrap().expose(), "s:cret");
    assert_eq!(c.dbname(), "app");
    assert_eq!(c.application_name(), Some("blue"));
    assert_eq!(c.connect_timeout(), Some(Duration::from_secs(10)));
    assert_eq!(c.sslmode(), SslMode::Disable);
    assert_eq!(c.options(), Some("-c wal_sender_timeout=5s"));
    assert_eq!(c.passfile(), Some(Path::new("/etc/pgpass")));
    assert_eq!(c.to_string(), "alice@db.example:5433/app");
}

#[test]
fn postgres_scheme_and_ipv6() {
    let c = parse("postgres://bob@[::1]:6000/db");
    assert_eq!(c.host(), &Host::Tcp("::1".into()));
    assert_eq!(c.port(), 6000);
    assert_eq!(c.to_string(), "bob@[::1]:6000/db");
    let c = parse("host=::1 user=bob dbname=db");
    assert_eq!(c.host(), &Host::Tcp("::1".into()));
    assert_eq!(c.to_string(), "bob@[::1]:5432/db");
}

#[test]
fn key_value_with_quotes_and_escapes() {
    let c = parse(r"host=127.0.0.1 port=5432 user='we ird' password='a\'b\\c' dbname=d");
    assert_eq!(c.user(), "we ird");
    assert_eq!(c.password().unwrap().expose(), r"a'b\c");
    assert_eq!(c.to_string(), "we ird@127.0.0.1:5432/d");
}

#[test]
fn later_settings_override_earlier_ones() {
    assert_eq!(parse("port=1 port=2 host=h").port(), 2);
    // Query parameters override the URI's own parts.
    let c = parse("postgresql://h1:1111/db?host=/socket/dir&port=2222");
    assert_eq!(c.host(), &Host::Unix("/socket/dir".into()));
    assert_eq!(c.port(), 2222);
}

#[test]
fn unix_sockets() {
    let c = parse("postgresql:///db?host=/socket/dir&port=5433");
    assert_eq!(c.host(), &Host::Unix("/socket/dir".into()));
    assert_eq!(
        c.socket_path().unwrap(),
        Path::new("/socket/dir/.s.PGSQL.5433")
    );
    assert_eq!(c.to_string(), "postgres@/socket/dir:5433/db");
    let c = parse("postgresql://%2Fsocket%2Fdir/db");
    assert_eq!(c.host(), &Host::Unix("/socket/dir".into()));
    // No host at all: Debian's socket directory when present, else /tmp.
    let c = parse("");
    let expected = if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql"
    } else {
        "/tmp"
    };
    assert_eq!(c.host(), &Host::Unix(expected.into()));
    assert!(parse("host=h").socket_path().is_none());
}

#[test]
fn defaults() {
    let c = parse("host=h");
    assert_eq!(c.port(), DEFAULT_PORT);
    assert_eq!(c.user(), "postgres");
    assert_eq!(c.dbname(), "postgres");
    assert_eq!(c.password(), None);
    assert_eq!(c.application_name(), None);
    assert_eq!(c.connect_timeout(), None);
    assert_eq!(c.sslmode(), SslMode::Prefer);
    assert_eq!(c.passfile(), None);

    let c = parse_env("host=h", &[("USER", "carol"), ("HOME", "/home/carol")]).unwrap();
    assert_eq!(c.user(), "carol");
    assert_eq!(c.dbname(), "carol");
    assert_eq!(c.passfile(), Some(Path::new("/home/carol/.pgpass")));
    let c = parse_env("host=h", &[("LOGNAME", "dave")]).unwrap();
    assert_eq!(c.user(), "dave");
    let c = parse_env("host=h user=erin", &[("USER", "carol")]).unwrap();
    assert_eq!(c.dbname(), "erin");
}

#[test]
fn environment_fallbacks() {
    let env = [
        ("PGHOST", "/run/pg"),
        ("PGPORT", "5444"),
        ("PGUSER", "envuser"),
        ("PGPASSWORD", "envpass"),
        ("PGDATABASE", "envdb"),
        ("PGPASSFILE", "/env/pgpass"),
        ("PGAPPNAME", "envapp"),
        ("PGCONNECT_TIMEOUT", "7"),
        ("PGSSLMODE", "allow"),
        ("PGOPTIONS", "-c a=b"),
        ("USER", "osuser"),
    ];
    let c = parse_env("", &env).unwrap();
    assert_eq!(c.host(), &Host::Unix("/run/pg".into()));
    assert_eq!(c.port(), 5444);
    assert_eq!(c.user(), "envuser");
    assert_eq!(c.password().unwrap().expose(), "envpass");
    assert_eq!(c.dbname(), "envdb");
    assert_eq!(c.passfile(), Some(Path::new("/env/pgpass")));
    assert_eq!(c.application_name(), Some("envapp"));
    assert_eq!(c.connect_timeout(), Some(Duration::from_secs(7)));
    assert_eq!(c.sslmode(), SslMode::Allow);
    assert_eq!(c.options(), Some("-c a=b"));

    // The connection string wins over the environment.
    let c = parse_env(
        "host=h port=1 user=u password=p dbname=d passfile=/f application_name=a \
         connect_timeout=3 sslmode=disable options=-cx=y",
        &env,
    )
    .unwrap();
    assert_eq!(c.host(), &Host::Tcp("h".into()));
    assert_eq!(c.port(), 1);
    assert_eq!(c.user(), "u");
    assert_eq!(c.password().unwrap().expose(), "p");
    assert_eq!(c.dbname(), "d");
    assert_eq!(c.passfile(), Some(Path::new("/f")));
    assert_eq!(c.application_name(), Some("a"));
    assert_eq!(c.connect_timeout(), Some(Duration::from_secs(3)));
    assert_eq!(c.sslmode(), SslMode::Disable);
    assert_eq!(c.options(), Some("-cx=y"));

    // An empty value counts as unset, and empty variables are ignored.
    let c = parse_env("host='' port=''", &[("PGHOST", "envhost"), ("PGPORT", "")]).unwrap();
    assert_eq!(c.host(), &Host::Tcp("envhost".into()));
    assert_eq!(c.port(), DEFAULT_PORT);
}

#[test]
fn application_name_fallback() {
    let c = parse("host=h fallback_application_name=fb");
    assert_eq!(c.application_name(), Some("fb"));
    let c = parse("host=h fallback_application_name=fb application_name=app");
    assert_eq!(c.application_name(), Some("app"));
    let mut c = parse("host=h");
    c.set_fallback_application_name("blueshift");
    assert_eq!(c.application_name(), Some("blueshift"));
    c.set_fallback_application_name("other");
    assert_eq!(c.application_name(), Some("blueshift"));
}

#[test]
fn connect_timeout_follows_libpq() {
    let t = |v: &str| parse(&format!("host=h connect_timeout={v}")).connect_timeout();
    assert_eq!(t("0"), None);
    assert_eq!(t("-5"), None);
    assert_eq!(t("1"), Some(Duration::from_secs(2)));
    assert_eq!(t("30"), Some(Duration::from_secs(30)));
    let err = parse_env("host=h connect_timeout=soon", &[]).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::InvalidValue {
            key: "connect_timeout",
            ..
        }
    ));
    let err = parse_env("host=h", &[("PGCONNECT_TIMEOUT", "x")]).unwrap_err();
    assert!(err.to_string().contains("PGCONNECT_TIMEOUT"), "{err}");
}

#[test]
fn sslmode_needing_tls_is_refused() {
    for mode in ["require", "verify-ca", "verify-full"] {
        let err = parse_env(&format!("host=h sslmode={mode}"), &[]).unwrap_err();
        assert!(
            matches!(err, ConfigError::TlsNotSupported { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(mode) && text.contains("TLS"), "{text}");
    }
    let err = parse_env("host=h", &[("PGSSLMODE", "require")]).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::TlsNotSupported {
            sslmode: SslMode::Require
        }
    ));
    let err = parse_env("host=h sslmode=always", &[]).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::InvalidValue { key: "sslmode", .. }
    ));
    for mode in ["disable", "allow", "prefer"] {
        assert_eq!(
            parse(&format!("host=h sslmode={mode}")).sslmode().as_str(),
            mode
        );
    }
}

#[test]
fn bad_input_is_named() {
    let err = |s: &str| parse_env(s, &[]).unwrap_err();
    assert!(matches!(
        err("host=h port=99999"),
        ConfigError::InvalidValue { key: "port", .. }
    ));
    assert!(matches!(
        err("host=h port=0"),
        ConfigError::InvalidValue { key: "port", .. }
    ));
    assert!(matches!(
        parse_env("host=h", &[("PGPORT", "x")]).unwrap_err(),
        ConfigError::InvalidValue { key: "PGPORT", .. }
    ));
    assert!(matches!(
        err("host=a port=1,2"),
        ConfigError::HostPortMismatch { hosts: 1, ports: 2 }
    ));
    assert!(matches!(
        err("host=@abstract"),
        ConfigError::InvalidValue { key: "host", .. }
    ));
    let e = err("host=h sslcert=/x");
    assert!(e.to_string().contains("\"sslcert\""), "{e}");
    let e = err("host=h replication=database");
    assert!(e.to_string().contains("replication=database"), "{e}");
    assert!(matches!(
        err("hostaddr=1.2.3.4"),
        ConfigError::UnsupportedOption {
            key: "hostaddr",
            ..
        }
    ));
    assert!(matches!(
        err("host=h frobnicate=1"),
        ConfigError::UnknownOption { .. }
    ));
    assert!(matches!(
        err("host=h client_encoding=latin1"),
        ConfigError::UnsupportedOption { .. }
    ));
    assert_eq!(
        parse("host=h client_encoding=UTF8").host(),
        &Host::Tcp("h".into())
    );
    assert!(matches!(
        err("postgresql://h?frob=1"),
        ConfigError::UnknownOption { .. }
    ));
}

#[test]
fn password_precedence_and_pgpass() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    std::fs::write(
        &passfile,
        "localhost:5433:db:alice:unix-pass\n\
         127.0.0.1:5433:db:alice:tcp-pass\n\
         *:*:*:bob:bob-pass\n",
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = passfile.to_str().unwrap();

    let auth = |conninfo: &str, vars: &[(&str, &str)]| {
        parse_env(conninfo, vars)
            .unwrap()
            .password_for_auth()
            .map(|p| p.expose().to_owned())
    };
    let tcp = format!("host=127.0.0.1 port=5433 dbname=db user=alice passfile={file}");
    let unix = format!("host=/sock port=5433 dbname=db user=alice passfile={file}");
    assert_eq!(auth(&tcp, &[]).as_deref(), Some("tcp-pass"));
    assert_eq!(auth(&unix, &[]).as_deref(), Some("unix-pass"));
    assert_eq!(
        auth(&format!("{tcp} password=given"), &[]).as_deref(),
        Some("given")
    );
    assert_eq!(auth(&tcp, &[("PGPASSWORD", "env")]).as_deref(), Some("env"));
    assert_eq!(
        auth(&format!("{tcp} password=given"), &[("PGPASSWORD", "env")]).as_deref(),
        Some("given")
    );
    // PGPASSFILE and HOME locate the file when the string does not.
    let no_file = "host=127.0.0.1 port=5433 dbname=db user=alice";
    assert_eq!(
        auth(no_file, &[("PGPASSFILE", file)]).as_deref(),
        Some("tcp-pass")
    );
    std::fs::copy(&passfile, dir.path().join(".pgpass")).unwrap();
    let home = dir.path().to_str().unwrap();
    assert_eq!(
        auth(no_file, &[("HOME", home)]).as_deref(),
        Some("tcp-pass")
    );
    assert_eq!(
        auth("host=h user=bob", &[("PGPASSFILE", file)]).as_deref(),
        Some("bob-pass")
    );
    assert_eq!(auth("host=h user=nobody", &[("PGPASSFILE", file)]), None);

    // A group-readable file is ignored.
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(auth(&tcp, &[]), None);
}

/// No password may show up in Debug or Display of a config or of any parse error.
#[test]
fn password_never_printed() {
    let configs = [
        format!("postgresql://alice:{SECRET}@h/db"),
        format!("host=h password={SECRET}"),
        format!("host=h password='{SECRET}'"),
    ];
    for conninfo in &configs {
        let c = parse(conninfo);
        assert_eq!(c.password().unwrap().expose(), SECRET);
        for text in [format!("{c:?}"), format!("{c:#?}"), c.to_string()] {
            assert!(!text.contains(SECRET), "password printed: {text}");
            assert!(!text.contains("hunter2"), "password printed: {text}");
        }
        assert!(format!("{c:?}").contains("***"));
    }
    let env_config = parse_env("host=h", &[("PGPASSWORD", SECRET)]).unwrap();
    assert!(!format!("{env_config:?}").contains(SECRET));
    assert_eq!(format!("{}", Password::new(SECRET)), "***");
    assert_eq!(format!("{:?}", Password::new(SECRET)), "***");

    let bad = [
        // The tail of an unquoted password with a space looks like a keyword.
        format!("host=h password=hunter2 {SECRET}"),
        format!("host=h password=hunter2 {SECRET}=x"),
        format!("host=h password='{SECRET}"),
        format!("host=h password={SECRET} port=x"),
        format!("postgresql://u:{SECRET}%zz@h/db"),
        format!("postgresql://u:{SECRET}@h/db?frob=1"),
        format!("postgresql://u:{SECRET}@[::1/db"),
        format!("postgresql://u:{SECRET}@h/db?{SECRET}"),
        format!("postgresql://u:{SECRET}@h/db?{SECRET}=1"),
        format!("postgresql://u:{SECRET}@h/db?sslmode=require"),
        format!("postgresql://u:{SECRET}@a,b/db?port=1,2,3"),
    ];
    for conninfo in &bad {
        let err = parse_env(conninfo, &[]).unwrap_err();
        for text in [format!("{err:?}"), format!("{err:#?}"), err.to_string()] {
            assert!(
                !text.contains(SECRET),
                "password in error for {conninfo}: {text}"
            );
            assert!(
                !text.contains("hunter2"),
                "password in error for {conninfo}: {text}"
            );
        }
    }
}

#[test]
fn an_unknown_option_is_named_unless_it_may_be_part_of_a_password() {
    let e = err("host=h frobnicate=1").to_string();
    assert!(e.contains("\"frobnicate\" (not a libpq keyword)"), "{e}");
    let e = err("postgresql://h?dbnme=app").to_string();
    assert!(e.contains("\"dbnme\""), "{e}");
    // `password=two words=x`: `words` is half of a password, so only its offset is shown.
    let e = err("host=h password=two words=x").to_string();
    assert!(!e.contains("words") && !e.contains("two"), "{e}");
    assert!(e.contains("at byte"), "{e}");
}

#[test]
fn a_service_fills_what_the_string_leaves_out_before_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.conf");
    std::fs::write(
        &file,
        "[blue]\nhost=blue.internal\nport=6543\ndbname=app\nuser=svc\n",
    )
    .unwrap();
    let file = file.display().to_string();
    // service= in the string; the string's own port wins, the service beats PGUSER.
    let c = parse_env(
        "service=blue port=7000",
        &[("PGSERVICEFILE", &file), ("PGUSER", "envuser")],
    )
    .unwrap();
    assert_eq!(c.host(), &Host::Tcp("blue.internal".into()));
    assert_eq!(c.port(), 7000);
    assert_eq!(c.dbname(), "app");
    assert_eq!(c.user(), "svc");
    // PGSERVICE when the string names none.
    let c = parse_env("", &[("PGSERVICEFILE", &file), ("PGSERVICE", "blue")]).unwrap();
    assert_eq!(c.port(), 6543);
    // A service no file defines is an error naming it, not silently ignored.
    let e = parse_env("service=nope", &[("PGSERVICEFILE", &file)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("service \"nope\" not found"), "{e}");
}

fn err(conninfo: &str) -> ConfigError {
    ConnectConfig::from_conninfo_with_env(conninfo, env_of(&[])).unwrap_err()
}

#[test]
fn several_hosts_and_target_session_attrs() {
    let c = parse("host=a,b,c port=5433 target_session_attrs=read-write dbname=d user=u");
    let hosts: Vec<(Host, u16)> = c.hosts();
    assert_eq!(
        hosts,
        [
            (Host::Tcp("a".into()), 5433),
            (Host::Tcp("b".into()), 5433),
            (Host::Tcp("c".into()), 5433)
        ]
    );
    assert_eq!(c.target_session_attrs(), TargetSessionAttrs::ReadWrite);
    assert_eq!(c.to_string(), "u@a:5433,b:5433,c:5433/d");
    let each: Vec<String> = c.candidates().iter().map(ToString::to_string).collect();
    assert_eq!(each, ["u@a:5433/d", "u@b:5433/d", "u@c:5433/d"]);
    // One port per host, an empty one the default; the URI form too.
    let c = parse("postgresql://u@a:1,b/d?target_session_attrs=prefer-standby");
    assert_eq!(
        c.hosts(),
        [(Host::Tcp("a".into()), 1), (Host::Tcp("b".into()), 5432)]
    );
    assert_eq!(c.target_session_attrs(), TargetSessionAttrs::PreferStandby);
    // From the environment.
    let c = parse_env(
        "dbname=d",
        &[("PGHOST", "x,y"), ("PGTARGETSESSIONATTRS", "primary")],
    )
    .unwrap();
    assert_eq!(c.hosts().len(), 2);
    assert_eq!(c.target_session_attrs(), TargetSessionAttrs::Primary);
    assert!(matches!(
        err("host=a target_session_attrs=master"),
        ConfigError::InvalidValue { .. }
    ));
}
