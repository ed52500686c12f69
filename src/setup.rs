//! `tokenward setup git [--global]` and `tokenward unsetup git`: point git's
//! `credential.helper` at tokenward and set `credential.useHttpPath=true`
//! (so repository-scoped tokens can match), remembering what was there
//! before so that `unsetup` puts it back.
//!
//! Everything goes through `git config`, never by editing files, so git's
//! own rules (GIT_CONFIG_GLOBAL, includes, XDG config) apply. The values
//! found before the first setup are saved as JSON in the tokenward config
//! dir: `git-setup-global.json`, or `git-setup-local-<hash>.json` keyed by
//! the repository's git dir. A second setup keeps the first saved state.
//!
//! tokenward becomes the first helper; helpers configured before stay after
//! it, so git still falls through to them when tokenward has no answer.

use crate::atomic::{create_private_dir, write_atomic};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const HELPER_KEY: &str = "credential.helper";
const HTTP_PATH_KEY: &str = "credential.useHttpPath";
const HELPER_BINARY: &str = "git-credential-tokenward";

/// Sets up git for the current user (`global`) or the repository in the
/// current directory. Returns what was done, for the CLI to print.
pub fn setup_git(global: bool) -> Result<String> {
    GitSetup::from_env(global)?.setup()
}

/// Restores what [`setup_git`] replaced.
pub fn unsetup_git(global: bool) -> Result<String> {
    GitSetup::from_env(global)?.unsetup()
}

/// The `credential.helper` value for this installation: the absolute path
/// of the helper next to the running `tokenward` (works without PATH), else
/// `tokenward`, which git runs as `git credential-tokenward` from PATH.
pub fn helper_value() -> String {
    let name = format!("{HELPER_BINARY}{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)))
        .filter(|candidate| candidate.is_file())
        .map(|path| shell_quote(&path.to_string_lossy()))
        .unwrap_or_else(|| "tokenward".to_owned())
}

/// git runs an absolute helper path through the shell: quote it when it has
/// anything a shell would split or expand.
fn shell_quote(path: &str) -> String {
    let plain = path.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':' | '\\')
    });
    if plain {
        path.to_owned()
    } else {
        format!("'{}'", path.replace('\'', r"'\''"))
    }
}

/// Whether a `credential.helper` value is one of ours (any install path).
fn is_ours(value: &str) -> bool {
    let value = value.trim().trim_matches(['\'', '"']);
    value == "tokenward"
        || value.ends_with(HELPER_BINARY)
        || value.ends_with(&format!("{HELPER_BINARY}{}", std::env::consts::EXE_SUFFIX))
}

/// What was configured before the first setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    /// `global`, or the repository's git dir.
    scope: String,
    helpers: Vec<String>,
    use_http_path: Vec<String>,
}

/// One setup or unsetup: which config, where state goes, how git is run.
#[derive(Debug, Clone)]
pub struct GitSetup {
    pub global: bool,
    pub state_dir: PathBuf,
    /// The `credential.helper` value to install.
    pub helper: String,
    /// Extra environment for `git` (tests: HOME, GIT_CONFIG_GLOBAL).
    pub envs: Vec<(OsString, OsString)>,
    /// Directory `git` runs in (the repository for a local setup).
    pub cwd: Option<PathBuf>,
}

impl GitSetup {
    fn from_env(global: bool) -> Result<GitSetup> {
        let dirs = crate::config::Dirs::resolve()?;
        Ok(GitSetup {
            global,
            state_dir: dirs.config,
            helper: helper_value(),
            envs: Vec::new(),
            cwd: None,
        })
    }

    fn git(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut command = Command::new("git");
        command
            .args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        command
            .output()
            .map_err(|e| anyhow!("cannot run git: {e}; is git installed and on PATH?"))
    }

    /// Runs `git config <scope> args…`; exit codes in `ok_codes` besides 0
    /// are accepted (1: key not found, 5: nothing to unset).
    fn config(&self, args: &[&str], ok_codes: &[i32]) -> Result<String> {
        let scope = if self.global { "--global" } else { "--local" };
        let mut full = vec!["config", scope];
        full.extend_from_slice(args);
        let out = self.git(&full)?;
        let code = out.status.code().unwrap_or(-1);
        if code != 0 && !ok_codes.contains(&code) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr.lines().next().unwrap_or("no message").trim();
            bail!("git config {scope} {} failed: {why}", args.join(" "));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn get_all(&self, key: &str) -> Result<Vec<String>> {
        Ok(self
            .config(&["--get-all", key], &[1])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    fn set_all(&self, key: &str, values: &[String]) -> Result<()> {
        self.config(&["--unset-all", key], &[5])?;
        for value in values {
            self.config(&["--add", key, value], &[])?;
        }
        Ok(())
    }

    /// `global`, or the absolute git dir of the repository for a local setup.
    fn scope_name(&self) -> Result<String> {
        if self.global {
            return Ok("global".to_owned());
        }
        let out = self.git(&["rev-parse", "--absolute-git-dir"])?;
        if !out.status.success() {
            bail!("not inside a git repository; run it in one, or use --global");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn state_file(&self, scope: &str) -> PathBuf {
        let name = if self.global {
            "git-setup-global.json".to_owned()
        } else {
            format!("git-setup-local-{:016x}.json", fnv1a(scope.as_bytes()))
        };
        self.state_dir.join(name)
    }

    fn load(&self, path: &Path) -> Result<Option<Saved>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!("{} is not valid; remove it to start over", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn where_(&self, scope: &str) -> String {
        if self.global {
            "the global git config".to_owned()
        } else {
            format!("the config of {scope}")
        }
    }

    pub fn setup(&self) -> Result<String> {
        let scope = self.scope_name()?;
        let state = self.state_file(&scope);
        let helpers = self.get_all(HELPER_KEY)?;
        let use_http_path = self.get_all(HTTP_PATH_KEY)?;
        // Keep the state of the first setup: after it, the config holds our
        // own values, which are not what unsetup must restore. A state left
        // from a setup the user has since undone by hand is stale, though.
        let keep = self.load(&state)?.is_some() && helpers.iter().any(|h| is_ours(h));
        if !keep {
            let saved = Saved {
                scope: scope.clone(),
                helpers: helpers.clone(),
                use_http_path,
            };
            create_private_dir(&self.state_dir)
                .with_context(|| format!("cannot create {}", self.state_dir.display()))?;
            let json = serde_json::to_vec_pretty(&saved)?;
            write_atomic(&state, &json, 0o600)
                .with_context(|| format!("cannot write {}", state.display()))?;
        }
        // An empty value resets git's helper list: only what follows the
        // last one was in effect, and it must not come before ours.
        let effective = match helpers.iter().rposition(String::is_empty) {
            Some(reset) => &helpers[reset + 1..],
            None => &helpers[..],
        };
        let mut wanted = vec![self.helper.clone()];
        wanted.extend(effective.iter().filter(|h| !is_ours(h)).cloned());
        self.set_all(HELPER_KEY, &wanted)?;
        self.set_all(HTTP_PATH_KEY, &["true".to_owned()])?;
        let others = if wanted.len() > 1 {
            format!(", then {}", wanted[1..].join(", "))
        } else {
            String::new()
        };
        Ok(format!(
            "git now asks tokenward for credentials ({HELPER_KEY} = {}{others}; {HTTP_PATH_KEY} = true in {}); \
             the previous settings are saved in {}; 'tokenward unsetup git{}' restores them",
            self.helper,
            self.where_(&scope),
            state.display(),
            if self.global { " --global" } else { "" },
        ))
    }

    pub fn unsetup(&self) -> Result<String> {
        let scope = self.scope_name()?;
        let state = self.state_file(&scope);
        match self.load(&state)? {
            Some(saved) => {
                self.set_all(HELPER_KEY, &saved.helpers)?;
                self.set_all(HTTP_PATH_KEY, &saved.use_http_path)?;
                std::fs::remove_file(&state)
                    .with_context(|| format!("cannot remove {}", state.display()))?;
                Ok(format!(
                    "restored {HELPER_KEY} and {HTTP_PATH_KEY} in {}",
                    self.where_(&scope)
                ))
            }
            None => {
                let helpers = self.get_all(HELPER_KEY)?;
                let kept: Vec<String> = helpers.iter().filter(|h| !is_ours(h)).cloned().collect();
                if kept.len() == helpers.len() {
                    return Ok(format!(
                        "tokenward is not set up in {}; nothing to do",
                        self.where_(&scope)
                    ));
                }
                self.set_all(HELPER_KEY, &kept)?;
                Ok(format!(
                    "removed tokenward from {HELPER_KEY} in {} (no saved settings to restore; {HTTP_PATH_KEY} left as is)",
                    self.where_(&scope)
                ))
            }
        }
    }
}

/// A stable name for a repository's state file (FNV-1a, 64 bits): not a
/// security boundary, only a file name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env {
        dir: tempfile::TempDir,
    }

    impl Env {
        fn new() -> Env {
            Env {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }

        fn setup(&self, global: bool, cwd: Option<&Path>) -> GitSetup {
            let home = self.dir.path().join("home");
            std::fs::create_dir_all(&home).expect("home");
            GitSetup {
                global,
                state_dir: self.dir.path().join("tw-config"),
                helper: "/opt/tw/bin/git-credential-tokenward".to_owned(),
                envs: vec![
                    ("HOME".into(), home.clone().into()),
                    ("XDG_CONFIG_HOME".into(), home.join(".config").into()),
                    ("GIT_CONFIG_GLOBAL".into(), home.join(".gitconfig").into()),
                    ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
                ],
                cwd: cwd.map(Path::to_owned),
            }
        }

        fn gitconfig(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("home/.gitconfig")).unwrap_or_default()
        }
    }

    #[test]
    fn global_setup_and_unsetup_restore_previous_values() {
        let env = Env::new();
        let s = env.setup(true, None);
        s.set_all(
            HELPER_KEY,
            &[
                "".to_owned(),
                "cache --timeout=60".to_owned(),
                "store".to_owned(),
            ],
        )
        .expect("seeds");
        s.set_all(HTTP_PATH_KEY, &["false".to_owned()])
            .expect("seeds");
        let before = env.gitconfig();

        let message = s.setup().expect("setup");
        assert!(message.contains("unsetup git --global"), "{message}");
        assert_eq!(
            s.get_all(HELPER_KEY).expect("reads"),
            [
                "/opt/tw/bin/git-credential-tokenward",
                "cache --timeout=60",
                "store"
            ]
        );
        assert_eq!(s.get_all(HTTP_PATH_KEY).expect("reads"), ["true"]);

        // Twice is the same as once, and keeps the first saved state.
        s.setup().expect("setup again");
        assert_eq!(s.get_all(HELPER_KEY).expect("reads").len(), 3);

        s.unsetup().expect("unsetup");
        assert_eq!(
            s.get_all(HELPER_KEY).expect("reads"),
            ["", "cache --timeout=60", "store"]
        );
        assert_eq!(s.get_all(HTTP_PATH_KEY).expect("reads"), ["false"]);
        assert_eq!(env.gitconfig(), before);
        assert!(!s.state_file("global").exists());
    }

    #[test]
    fn setup_on_empty_config_and_unsetup_leaves_nothing() {
        let env = Env::new();
        let s = env.setup(true, None);
        s.setup().expect("setup");
        assert_eq!(
            s.get_all(HELPER_KEY).expect("reads"),
            ["/opt/tw/bin/git-credential-tokenward"]
        );
        s.unsetup().expect("unsetup");
        assert!(s.get_all(HELPER_KEY).expect("reads").is_empty());
        assert!(s.get_all(HTTP_PATH_KEY).expect("reads").is_empty());
        // Without saved state: only our helper is removed.
        s.setup().expect("setup");
        std::fs::remove_file(s.state_file("global")).expect("drops state");
        s.config(&["--add", HELPER_KEY, "store"], &[])
            .expect("adds");
        let message = s.unsetup().expect("unsetup");
        assert!(message.contains("removed tokenward"), "{message}");
        assert_eq!(s.get_all(HELPER_KEY).expect("reads"), ["store"]);
        let message = s.unsetup().expect("unsetup");
        assert!(message.contains("nothing to do"), "{message}");
    }

    #[test]
    fn local_setup_is_per_repository() {
        let env = Env::new();
        let repo = env.dir.path().join("repo");
        let init = env
            .setup(true, None)
            .git(&["init", "-q", &repo.to_string_lossy()])
            .expect("git init");
        assert!(init.status.success());
        let local = env.setup(false, Some(&repo));
        local.setup().expect("local setup");
        assert_eq!(
            local.get_all(HELPER_KEY).expect("reads"),
            ["/opt/tw/bin/git-credential-tokenward"]
        );
        assert!(
            env.setup(true, None)
                .get_all(HELPER_KEY)
                .expect("reads")
                .is_empty(),
            "global untouched"
        );
        local.unsetup().expect("local unsetup");
        assert!(local.get_all(HELPER_KEY).expect("reads").is_empty());

        let outside = env.setup(false, Some(env.dir.path()));
        let error = outside.setup().expect_err("not a repo").to_string();
        assert!(error.contains("--global"), "{error}");
    }

    #[test]
    fn quoting_and_recognizing_our_helper() {
        assert_eq!(
            shell_quote("/usr/local/bin/git-credential-tokenward"),
            "/usr/local/bin/git-credential-tokenward"
        );
        assert_eq!(shell_quote("/home/a b/it's"), r"'/home/a b/it'\''s'");
        assert!(is_ours("tokenward"));
        assert!(is_ours("'/home/a b/git-credential-tokenward'"));
        assert!(is_ours("/usr/bin/git-credential-tokenward"));
        assert!(!is_ours("store"));
        assert!(!is_ours("cache --timeout=60"));
    }
}
