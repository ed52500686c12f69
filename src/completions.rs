//! `tokenward completions SHELL` and the hidden `tokenward man`: shell
//! completion scripts (clap_complete) and the roff man page (clap_mangen),
//! both generated from the clap definition so they never drift from the
//! real options. install.sh and the packages write their output to where
//! the shells and `man` look.

use crate::cli::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;

/// Prints the completion script for `shell` on stdout.
pub fn print_completions(shell: clap_complete::Shell) -> Result<()> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "tokenward", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("cannot write the completion script")
}

/// The man page, tokenward(1), as roff: one self-contained page. clap_mangen
/// renders the header, synopsis and options; its SUBCOMMANDS section would
/// point at a page per subcommand, so a COMMANDS section with every command's
/// usage and options is written here instead.
pub fn man_page() -> Result<Vec<u8>> {
    let mut command = Cli::command();
    command.build();
    let man = clap_mangen::Man::new(command.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)
        .and_then(|()| man.render_name_section(&mut out))
        .and_then(|()| man.render_synopsis_section(&mut out))
        .and_then(|()| man.render_description_section(&mut out))
        .and_then(|()| man.render_options_section(&mut out))
        .context("cannot render the man page")?;
    out.extend_from_slice(b".SH COMMANDS\n");
    commands_section(&command, &mut out);
    out.extend_from_slice(EXTRA_SECTIONS.as_bytes());
    if man.render_version_section(&mut out).is_err() {
        // The version section is a nicety; the page is complete without it.
    }
    Ok(out)
}

/// One `.TP` entry per leaf command: its usage in bold, its help, then its
/// arguments and options.
fn commands_section(command: &clap::Command, out: &mut Vec<u8>) {
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        if sub.has_subcommands() {
            commands_section(sub, out);
            continue;
        }
        let usage = sub.clone().render_usage().to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        let mut entry = format!(".TP\n\\fB{}\\fR\n", roff_text(usage));
        let help = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|h| h.to_string())
            .unwrap_or_default();
        for (i, paragraph) in help.split("\n\n").enumerate() {
            if i > 0 {
                entry.push_str(".IP\n");
            }
            entry.push_str(&roff_line(paragraph));
        }
        for arg in sub.get_arguments() {
            if arg.is_hide_set() || matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            let name = match (arg.get_long(), arg.get_value_names()) {
                (Some(long), Some(values))
                    if arg.get_num_args().is_none_or(|n| n.takes_values()) =>
                {
                    format!(
                        "--{long} {}",
                        values
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                }
                (Some(long), _) => format!("--{long}"),
                (None, _) => arg.get_id().as_str().to_uppercase(),
            };
            let arg_help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            entry.push_str(&format!(".RS\n.TP\n\\fI{}\\fR\n", roff_text(&name)));
            entry.push_str(&roff_line(&arg_help));
            entry.push_str(".RE\n");
        }
        out.extend_from_slice(entry.as_bytes());
    }
}

/// Escapes text for roff: backslashes, hyphens (so they are not hyphenation
/// points) and a leading dot or quote, which would start a request.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// A paragraph as one roff text line (newlines joined with spaces).
fn roff_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.is_empty() {
        String::new()
    } else {
        format!("{}\n", roff_text(&joined))
    }
}

/// Prints the man page on stdout.
pub fn print_man() -> Result<()> {
    std::io::stdout()
        .write_all(&man_page()?)
        .context("cannot write the man page")
}

/// What clap does not know: the environment and the files. Plain roff.
const EXTRA_SECTIONS: &str = r#".SH ENVIRONMENT
.TP
\fBTOKENWARD_HOME\fR
Keep the config and data directories under this directory.
.TP
\fBTOKENWARD_SOCKET\fR
The daemon's socket (default: $XDG_RUNTIME_DIR/tokenward/daemon.sock, else /tmp/tokenward\-$UID/daemon.sock).
.TP
\fBTOKENWARD_BACKEND\fR
The vault backend: auto, secret\-service, keychain, wincred, keyutils, file or env.
.TP
\fBTOKENWARD_PASSPHRASE\fR
The file vault's passphrase (else \fBtokenward unlock\fR).
.TP
\fBTOKENWARD_TOKEN\fR, \fBTOKENWARD_URL\fR, \fBTOKENWARD_USERNAME\fR
CI mode: the git helper and the hg extension answer from these and never contact the daemon.
.TP
\fBTOKENWARD_NO_AUTOSTART\fR
Set to 1 to keep the helpers from starting the daemon.
.TP
\fBTOKENWARD_LOG\fR
Log level, in tracing's EnvFilter syntax (default: info).
.SH FILES
.TP
\fI~/.config/tokenward/config.json\fR
Settings: backend, accept_store, relays.
.TP
\fI~/.local/share/tokenward/index.json\fR
Token metadata (never a secret).
.TP
\fI~/.local/share/tokenward/daemon.log\fR
The detached daemon's log.
.TP
\fI~/.rhoderc\fR
Read by \fBtokenward token import\-rhoderc\fR.
.SH SECURITY
Secrets are read from stdin or a no\-echo prompt, never from the command line, and never printed,
except by \fBtokenward url\fR, whose output is a URL with the token in it.
.SH SEE ALSO
\fBgit\-credential\fR(1), \fBgitcredentials\fR(7), \fBhg\fR(1)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_lists_every_command_in_one_page() {
        let page = String::from_utf8(man_page().expect("renders")).expect("utf8");
        assert!(page.contains(".TH tokenward 1"), "{page}");
        for usage in [
            "tokenward token add",
            "tokenward token import\\-rhoderc",
            "tokenward url",
            "tokenward doctor",
            "tokenward completions",
        ] {
            assert!(page.contains(usage), "{usage} missing from\n{page}");
        }
        assert!(
            !page.contains("tokenward man"),
            "the hidden command is listed"
        );
        assert!(
            !page.contains("tokenward\\-daemon(1)"),
            "points at pages that do not exist"
        );
        assert!(page.contains(".SH ENVIRONMENT"));
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(roff_text(".x -y \\z"), "\\&.x \\-y \\ez");
        assert_eq!(roff_line("a\n  b"), "a b\n");
        assert_eq!(roff_line(""), "");
    }
}
