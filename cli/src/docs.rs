//! `blueshift completions <shell>` and `blueshift man`: shell completions and the man page,
//! both generated from the clap definition, so they never drift from the options.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap_complete::Shell;

/// Print a shell completion script.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  blueshift completions bash > /etc/bash_completion.d/blueshift
  blueshift completions zsh > \"${fpath[1]}/_blueshift\"
  blueshift completions fish > ~/.config/fish/completions/blueshift.fish")]
pub(crate) struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    shell: Shell,
}

/// Print the man page (roff), or write one page per command into a folder.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  blueshift man | man -l -
  blueshift man --out-dir /usr/local/share/man/man1   # blueshift.1, blueshift-sync.1, …")]
pub(crate) struct ManArgs {
    /// Write blueshift.1 and a page per subcommand (blueshift-sync.1, …) into this folder
    /// instead of printing blueshift.1.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

pub(crate) fn completions(args: CompletionsArgs, mut command: clap::Command) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "blueshift", &mut out);
    crate::status::print(&String::from_utf8_lossy(&out))
}

pub(crate) fn man(args: ManArgs, command: clap::Command) -> anyhow::Result<()> {
    match args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            Ok(())
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .context("cannot render the man page")?;
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&out).and_then(|()| stdout.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r.context("cannot write to stdout"),
            }
        }
    }
}
