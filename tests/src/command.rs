//! How the harness runs PostgreSQL programs: a cleared environment (only
//! `PATH` and `LC_ALL=C`), and — when we are root, as on these machines — as
//! the `postgres` OS user through `runuser -u postgres --`, because the server
//! refuses to run as root.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context as _};

/// The OS user that owns data directories and runs server programs when the
/// harness runs as root.
pub(crate) const OS_USER: &str = "postgres";

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The OS user server programs run as, when it differs from ours.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    /// `postgres:postgres` as numbers, for `chown`.
    pub(crate) owner: String,
}

/// `Some` when we are root: then server programs run as `postgres`.
pub(crate) fn run_as() -> anyhow::Result<Option<RunAs>> {
    static RUN_AS: OnceLock<Result<Option<RunAs>, String>> = OnceLock::new();
    RUN_AS
        .get_or_init(|| {
            if !rustix::process::geteuid().is_root() {
                return Ok(None);
            }
            let id = |flag: &str| -> Result<String, String> {
                let out = Command::new("id")
                    .args([flag, OS_USER])
                    .output()
                    .map_err(|e| format!("could not run `id`: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "we run as root, so PostgreSQL must run as the `{OS_USER}` OS user, \
                         which does not exist; create it with: \
                         useradd --system --user-group --home-dir /var/lib/postgresql \
                         --shell /bin/bash {OS_USER}"
                    ));
                }
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            };
            Ok(Some(RunAs {
                owner: format!("{}:{}", id("-u")?, id("-g")?),
            }))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A command for a server program (`initdb`, `pg_ctl`, `postgres`,
/// `pg_isready`): cleared environment, run as `postgres` when we are root,
/// working directory `cwd` (which the `postgres` user can enter).
pub(crate) fn server_command(program: &Path, cwd: &Path) -> anyhow::Result<Command> {
    let mut cmd = match run_as()? {
        Some(_) => {
            let mut cmd = Command::new("/usr/sbin/runuser");
            cmd.args(["-u", OS_USER, "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    cmd.env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C")
        .current_dir(cwd)
        .stdin(Stdio::null());
    Ok(cmd)
}

/// A command for a client program (`psql`): cleared environment, our own user.
pub(crate) fn client_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().env("PATH", PATH).env("LC_ALL", "C");
    cmd
}

/// Runs `cmd` to completion; a failure carries the program, status and output.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("could not run {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Makes `path` (recursively) belong to the server's OS user, when that is
/// not us.
pub(crate) fn chown_to_server_user(path: &Path) -> anyhow::Result<()> {
    if let Some(run_as) = run_as()? {
        run(Command::new("chown").arg("-R").arg(&run_as.owner).arg(path))?;
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args().map(OsStr::to_string_lossy) {
        text.push(' ');
        text.push_str(&arg);
    }
    text
}
