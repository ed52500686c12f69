//! The real install.sh, run in a throwaway HOME: it builds (release,
//! --locked), installs the binaries, man page, completions and hg extension,
//! starts the daemon and sets git up; doctor is then clean; a second run
//! changes nothing; --uninstall takes it all away and keeps the tokens.
//!
//! CARGO_HOME and RUSTUP_HOME stay the real ones (no fresh download). The
//! build goes to its own target dir with the release profile's LTO and
//! optimization turned down through cargo's CARGO_PROFILE_RELEASE_*
//! variables: the script, its flags and every step after the build are the
//! real ones, but the suite does not pay minutes for a fully optimized
//! build that it never measures.

mod common;

use common::TestHome;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/` of this build: the test binary's tokenward is target/debug/tokenward.
fn target_dir() -> PathBuf {
    let bin = common::tokenward_bin();
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .expect("target dir")
}

/// The real user's home, for CARGO_HOME and RUSTUP_HOME defaults.
fn real_home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME"))
}

struct Setup {
    home: TestHome,
    /// None: the default prefix, ~/.local in the throwaway HOME.
    prefix: Option<PathBuf>,
}

impl Setup {
    fn bindir(&self) -> PathBuf {
        self.prefix
            .clone()
            .unwrap_or_else(|| self.home.user_home.join(".local"))
            .join("bin")
    }

    fn path_env(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.bindir()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).expect("PATH")
    }

    /// A command with the throwaway HOME, the installed bin dir first on PATH.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = self.home.command(program);
        command
            .env("PATH", self.path_env())
            .env("XDG_DATA_HOME", self.home.user_home.join(".local/share"))
            .env_remove("PREFIX");
        if let Some(prefix) = &self.prefix {
            command.env("PREFIX", prefix);
        }
        command
    }

    fn install_sh(&self, args: &[&str]) -> Output {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| real_home().join(".cargo"));
        let rustup_home = std::env::var_os("RUSTUP_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| real_home().join(".rustup"));
        let out = self
            .command("bash")
            .arg(repo().join("install.sh"))
            .args(args)
            .env("CARGO_HOME", cargo_home)
            .env("RUSTUP_HOME", rustup_home)
            .env("CARGO_TARGET_DIR", target_dir().join("install-test"))
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
            .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true")
            .output()
            .expect("run install.sh");
        assert!(
            out.status.success(),
            "install.sh {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs an installed program found through PATH.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program} is not on PATH: {e}"))
    }

    fn git_config(&self, key: &str) -> Vec<String> {
        let out = self.run("git", &["config", "--global", "--get-all", key]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn gitconfig_text(&self) -> String {
        std::fs::read_to_string(self.home.user_home.join(".gitconfig")).unwrap_or_default()
    }

    fn hgrc_text(&self) -> String {
        std::fs::read_to_string(self.home.user_home.join(".hgrc")).unwrap_or_default()
    }

    /// What install.sh may create, by path: bin, man, completions, units.
    fn installed_files(&self) -> Vec<PathBuf> {
        let share = self
            .prefix
            .clone()
            .map(|p| p.join("share"))
            .unwrap_or_else(|| self.home.user_home.join(".local/share"));
        let fish = match &self.prefix {
            Some(p) => p.join("share/fish/vendor_completions.d/tokenward.fish"),
            None => self
                .home
                .user_home
                .join(".config/fish/completions/tokenward.fish"),
        };
        vec![
            self.bindir().join("tokenward"),
            self.bindir().join("git-credential-tokenward"),
            share.join("man/man1/tokenward.1"),
            share.join("bash-completion/completions/tokenward"),
            share.join("zsh/site-functions/_tokenward"),
            fish,
        ]
    }

    fn unit_files(&self) -> Vec<PathBuf> {
        let dir = self.home.user_home.join(".config/systemd/user");
        vec![dir.join("tokenward.service"), dir.join("tokenward.socket")]
    }

    fn extension(&self) -> PathBuf {
        self.home.home.join("data/hg/tokenward.py")
    }
}

fn hg_installed() -> bool {
    Command::new("hg")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every file under `roots` with its bytes, except the daemon's log (which
/// grows with every request) and hg's bytecode cache.
fn snapshot(roots: &[&Path]) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "daemon.log" || name == "__pycache__" {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&path, out),
                Ok(t) if t.is_file() => {
                    out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
                }
                _ => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    for root in roots {
        walk(root, &mut out);
    }
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn daemon_pid(setup: &Setup) -> u64 {
    let out = setup.run("tokenward", &["status", "--json"]);
    assert!(
        out.status.success(),
        "the daemon does not answer: {}",
        text(&out)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    status["pid"].as_u64().expect("pid")
}

#[test]
fn install_twice_then_uninstall_keeps_the_tokens() {
    let setup = Setup {
        home: TestHome::new("file"),
        prefix: None,
    };
    let hg = hg_installed();

    // First run: everything is installed and set up.
    let out = setup.install_sh(&[]);
    let said = text(&out);
    assert!(said.contains("done:"), "{said}");
    assert!(said.contains("next: add a token"), "{said}");
    for file in setup.installed_files() {
        assert!(
            file.is_file(),
            "{} missing after install:\n{said}",
            file.display()
        );
    }
    for unit in setup.unit_files() {
        assert!(
            !unit.exists(),
            "no systemd here, yet {} exists",
            unit.display()
        );
    }
    let version = setup.run("tokenward", &["--version"]);
    assert!(version.status.success() && text(&version).contains(env!("CARGO_PKG_VERSION")));
    let which = setup.run("sh", &["-c", "command -v git-credential-tokenward"]);
    assert_eq!(
        String::from_utf8_lossy(&which.stdout).trim(),
        setup
            .bindir()
            .join("git-credential-tokenward")
            .display()
            .to_string()
    );
    let pid = daemon_pid(&setup);
    let helper = setup.bindir().join("git-credential-tokenward");
    assert_eq!(
        setup.git_config("credential.helper"),
        [helper.display().to_string()]
    );
    assert_eq!(setup.git_config("credential.useHttpPath"), ["true"]);
    if hg {
        assert!(setup.extension().is_file(), "{said}");
        assert!(setup.hgrc_text().contains("tokenward ="), "{said}");
    }
    let man = std::fs::read_to_string(&setup.installed_files()[2]).expect("man page");
    assert!(man.contains(".TH tokenward 1"));
    let doctor = setup.run("tokenward", &["doctor"]);
    assert!(
        doctor.status.success(),
        "doctor after install:\n{}",
        text(&doctor)
    );
    assert!(
        !text(&doctor).contains("FAIL") && !text(&doctor).contains("warn "),
        "{}",
        text(&doctor)
    );

    // A token to keep through the uninstall.
    let mut add = setup
        .command("tokenward")
        .args(["token", "add", "https://git.example.com", "--user", "alice"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("token add");
    {
        use std::io::Write;
        add.stdin
            .take()
            .expect("stdin")
            .write_all(b"kept-secret")
            .expect("secret");
    }
    let added = add.wait_with_output().expect("token add");
    assert!(added.status.success(), "{}", text(&added));
    let id = String::from_utf8_lossy(&added.stdout)
        .split_whitespace()
        .nth(1)
        .expect("id")
        .to_owned();

    // Second run: nothing changes, the daemon is not restarted.
    let roots = [setup.home.user_home.as_path(), setup.home.home.as_path()];
    let before = snapshot(&roots);
    let out = setup.install_sh(&[]);
    assert!(
        text(&out).contains("nothing changed"),
        "second run:\n{}",
        text(&out)
    );
    let after = snapshot(&roots);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the second run changed the file list"
    );
    for (path, bytes) in &before {
        assert!(
            after.get(path) == Some(bytes),
            "the second run changed {}",
            path.display()
        );
    }
    assert_eq!(
        daemon_pid(&setup),
        pid,
        "the second run restarted the daemon"
    );

    // Uninstall: nothing of ours is left but the tokens.
    let out = setup.install_sh(&["--uninstall"]);
    let said = text(&out);
    assert!(said.contains("kept your tokens"), "{said}");
    for file in setup.installed_files().iter().chain(&setup.unit_files()) {
        assert!(!file.exists(), "{} left after uninstall", file.display());
    }
    assert!(!setup.extension().exists(), "the hg extension is left");
    assert!(setup.git_config("credential.helper").is_empty());
    assert!(setup.git_config("credential.useHttpPath").is_empty());
    assert!(
        !setup.gitconfig_text().contains("tokenward") && !setup.gitconfig_text().contains("helper"),
        "{}",
        setup.gitconfig_text()
    );
    assert!(
        !setup.hgrc_text().contains("tokenward"),
        "{}",
        setup.hgrc_text()
    );
    assert!(
        std::os::unix::net::UnixStream::connect(&setup.home.socket).is_err(),
        "the daemon still answers after uninstall"
    );
    let index =
        std::fs::read_to_string(setup.home.home.join("data/index.json")).expect("index kept");
    assert!(index.contains(&id), "{index}");

    // The tokens come back with a daemon of this build.
    let mut home = setup.home;
    home.start_daemon();
    assert_eq!(
        home.get_secret("https", "git.example.com", None).as_deref(),
        Some("kept-secret")
    );
    home.stop_daemon();

    // PREFIX: the same under another root, and gone again.
    let setup = Setup {
        prefix: Some(home.root.path().join("prefix")),
        home,
    };
    setup.install_sh(&[]);
    for file in setup.installed_files() {
        assert!(file.is_file(), "{} missing with PREFIX", file.display());
    }
    assert_eq!(
        setup.git_config("credential.helper"),
        [setup
            .bindir()
            .join("git-credential-tokenward")
            .display()
            .to_string()]
    );
    setup.install_sh(&["--uninstall"]);
    for file in setup.installed_files() {
        assert!(!file.exists(), "{} left with PREFIX", file.display());
    }
    assert!(setup.git_config("credential.helper").is_empty());
}
