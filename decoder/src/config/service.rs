//! The connection service file (`pg_service.conf`), read the way libpq reads it.
//!
//! Implements <https://www.postgresql.org/docs/current/libpq-pgservice.html>: a service named by
//! `service=` in the connection string, else by `PGSERVICE`, is looked up first in the user's
//! file (`PGSERVICEFILE`, else `~/.pg_service.conf`), then in the system file
//! (`PGSYSCONFDIR/pg_service.conf`, else Debian's `/etc/postgresql-common/pg_service.conf`).
//! The first file holding a `[name]` section wins. Its `keyword=value` lines are defaults for
//! what the connection string leaves out: precedence is the connection string, the service, the
//! `PG*` variables, the built-in defaults. `#` starts a comment line.
//!
//! As elsewhere in [`super`], no value read here goes into an error: a service may hold a
//! password.

use std::path::{Path, PathBuf};

use super::conninfo::Setting;
use super::ConfigError;

/// Where Debian's libpq looks for the system-wide service file.
const SYSTEM_CONF_DIR: &str = "/etc/postgresql-common";

/// The settings of service `name`, from the first service file that defines it.
pub(crate) fn settings(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Setting>, ConfigError> {
    let user_file = env("PGSERVICEFILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".pg_service.conf")));
    let system_file = Path::new(&env("PGSYSCONFDIR").unwrap_or_else(|| SYSTEM_CONF_DIR.to_owned()))
        .join("pg_service.conf");
    let mut searched = Vec::new();
    for path in user_file.into_iter().chain(std::iter::once(system_file)) {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                searched.push(path.display().to_string());
                continue;
            }
            Err(e) => {
                return Err(ConfigError::ServiceFile {
                    path: path.display().to_string(),
                    problem: format!("cannot be read: {e}"),
                })
            }
        };
        searched.push(path.display().to_string());
        if let Some(found) = section(&text, name, &path)? {
            return Ok(found);
        }
    }
    Err(ConfigError::ServiceNotFound {
        service: name.to_owned(),
        searched: searched.join(", "),
    })
}

/// The `keyword=value` lines of section `[name]` in `text`, or `None` when it has none.
fn section(text: &str, name: &str, path: &Path) -> Result<Option<Vec<Setting>>, ConfigError> {
    let mut inside = false;
    let mut found = false;
    let mut settings = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            if inside {
                // libpq reads only the first section of a name.
                break;
            }
            let Some(section) = header.strip_suffix(']') else {
                return Err(malformed(path, n, "a section header without its closing ]"));
            };
            inside = section.trim() == name;
            found |= inside;
            continue;
        }
        if !inside {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(malformed(path, n, "a line that is not keyword=value"));
        };
        let key = key.trim();
        if key == "service" {
            return Err(malformed(
                path,
                n,
                "a nested service=, which libpq does not allow",
            ));
        }
        settings.push(Setting {
            key: key.to_owned(),
            offset: 0,
            value: value.trim().to_owned(),
        });
    }
    Ok(found.then_some(settings))
}

fn malformed(path: &Path, line: usize, what: &str) -> ConfigError {
    ConfigError::ServiceFile {
        path: path.display().to_string(),
        problem: format!("line {} is {what}", line + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_file_with_the_section_wins() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.conf");
        let sys = dir.path().join("sys");
        std::fs::create_dir(&sys).unwrap();
        std::fs::write(
            &user,
            "# mine\n[blue]\nhost = blue.internal\nport=5433\n\n[other]\nhost=x\n",
        )
        .unwrap();
        std::fs::write(
            sys.join("pg_service.conf"),
            "[green]\nhost=green.internal\ndbname=app\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "PGSERVICEFILE" => Some(user.display().to_string()),
            "PGSYSCONFDIR" => Some(sys.display().to_string()),
            _ => None,
        };
        let blue = settings("blue", &env).unwrap();
        let pairs: Vec<(&str, &str)> = blue
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(pairs, [("host", "blue.internal"), ("port", "5433")]);
        assert_eq!(settings("green", &env).unwrap().len(), 2);
        let err = settings("nope", &env).unwrap_err().to_string();
        assert!(
            err.contains("\"nope\"") && err.contains("user.conf"),
            "{err}"
        );
    }

    #[test]
    fn malformed_files_name_the_line_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.conf");
        std::fs::write(&file, "[s]\nhost=h\npassword secret\n").unwrap();
        let env = |k: &str| (k == "PGSERVICEFILE").then(|| file.display().to_string());
        let err = settings("s", &env).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
