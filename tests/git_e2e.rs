//! End to end: real git, the real helper and daemon, against a real
//! smart-HTTP server (nginx + fcgiwrap + git http-backend, HTTP Basic auth)
//! on 127.0.0.1. Every git runs with GIT_TERMINAL_PROMPT=0, a temp HOME and
//! GIT_CONFIG_NOSYSTEM=1 (from `TestHome`), so a missing answer fails
//! instead of prompting.

// The daemon and the CLI exist only with the daemon feature.
#![cfg(feature = "daemon")]

mod common;

use common::nginx::GitHttpServer;
use common::{helper_bin, TestHome};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

const ALICE_PW: &str = "alice-token-7Q2x";
const BOB_PW: &str = "bob-token-9Zk1";

fn server() -> GitHttpServer {
    let server = GitHttpServer::start(&[("alice", ALICE_PW), ("bob", BOB_PW)]);
    server.create_repo("team/repo.git");
    server
}

/// A git command in `home`'s environment, without askpass programs that
/// would bypass GIT_TERMINAL_PROMPT=0.
fn git(home: &TestHome, cwd: &Path, args: &[&str]) -> Output {
    git_input(home, cwd, args, None)
}

fn git_input(home: &TestHome, cwd: &Path, args: &[&str], input: Option<&str>) -> Output {
    let mut command = home.command("git");
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("SSH_ASKPASS")
        .env_remove("DISPLAY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match input {
        None => command.output().expect("runs git"),
        Some(input) => {
            use std::io::Write;
            let mut child = command.stdin(Stdio::piped()).spawn().expect("runs git");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("writes stdin");
            child.wait_with_output().expect("git exits")
        }
    }
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Points the global git config at the helper under test.
fn use_helper(home: &TestHome, extra_helpers: &[&str]) {
    let cwd = home.user_home.clone();
    ok(
        &git(
            home,
            &cwd,
            &[
                "config",
                "--global",
                "credential.helper",
                &helper_bin().to_string_lossy(),
            ],
        ),
        "git config",
    );
    for helper in extra_helpers {
        ok(
            &git(
                home,
                &cwd,
                &["config", "--global", "--add", "credential.helper", helper],
            ),
            "git config",
        );
    }
    ok(
        &git(
            home,
            &cwd,
            &["config", "--global", "credential.useHttpPath", "true"],
        ),
        "git config",
    );
    ok(
        &git(home, &cwd, &["config", "--global", "user.name", "Test"]),
        "git config",
    );
    ok(
        &git(
            home,
            &cwd,
            &["config", "--global", "user.email", "test@example.com"],
        ),
        "git config",
    );
    ok(
        &git(
            home,
            &cwd,
            &["config", "--global", "init.defaultBranch", "main"],
        ),
        "git config",
    );
}

fn clone(home: &TestHome, url: &str, name: &str) -> (Output, PathBuf) {
    let dest = home.root.path().join(name);
    let out = git(
        home,
        home.root.path(),
        &["clone", "-q", url, &dest.to_string_lossy()],
    );
    (out, dest)
}

/// A file of `len` bytes that does not compress (xorshift), so the pack
/// git sends is as large as the file.
fn incompressible(path: &Path, len: usize) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    std::fs::write(path, bytes).expect("writes the big file");
}

fn commit_file(home: &TestHome, repo: &Path, name: &str) {
    ok(&git(home, repo, &["add", name]), "git add");
    ok(
        &git(home, repo, &["commit", "-q", "-m", name]),
        "git commit",
    );
}

fn head(home: &TestHome, git_dir_args: &[&str], cwd: &Path) -> String {
    let mut args = git_dir_args.to_vec();
    args.extend(["rev-parse", "main"]);
    let out = git(home, cwd, &args);
    ok(&out, "rev-parse");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn clone_small_push_and_chunked_8_mib_push() {
    let server = server();
    let mut home = TestHome::new("file");
    home.start_daemon();
    let id = home.add_token(&server.url("team"), Some("alice"), ALICE_PW, &[]);
    use_helper(&home, &[]);

    let (out, work) = clone(&home, &server.url("team/repo.git"), "work");
    ok(&out, "clone");
    assert!(work.join("README").exists());

    std::fs::write(work.join("small.txt"), "hello\n").expect("writes");
    commit_file(&home, &work, "small.txt");
    ok(
        &git(&home, &work, &["push", "-q", "origin", "main"]),
        "small push",
    );

    incompressible(&work.join("big.bin"), 8 * 1024 * 1024);
    commit_file(&home, &work, "big.bin");
    ok(
        &git(
            &home,
            &work,
            &[
                "-c",
                "http.postBuffer=65536",
                "push",
                "-q",
                "origin",
                "main",
            ],
        ),
        "8 MiB push",
    );
    let bare = server.repo_path("team/repo.git");
    let bare_arg = format!("--git-dir={}", bare.display());
    assert_eq!(head(&home, &[&bare_arg], &work), head(&home, &[], &work));

    let log = server.access_log();
    let chunked: Vec<_> = log
        .iter()
        .filter(|l| l.method == "POST" && l.uri.ends_with("/git-receive-pack") && l.status == 200)
        .filter(|l| l.transfer_encoding.eq_ignore_ascii_case("chunked"))
        .collect();
    assert!(
        !chunked.is_empty(),
        "no chunked receive-pack POST in {log:#?}"
    );
    assert!(
        chunked
            .iter()
            .all(|l| l.user == "alice" && l.request_length > 8_000_000),
        "{chunked:#?}"
    );

    // git's store after success reached the daemon.
    let token = home.token_json(&id);
    assert!(
        !token["last_used"].is_null(),
        "last_used not recorded: {token}"
    );
    assert_eq!(token["state"], "active");
}

#[test]
fn wrong_longer_path_token_is_rejected_kept_and_bypassed() {
    let server = server();
    let mut home = TestHome::new("file");
    home.start_daemon();
    let right = home.add_token(&server.url("team"), Some("alice"), ALICE_PW, &[]);
    let wrong = home.add_token(
        &server.url("team/repo"),
        Some("alice"),
        "not-the-password",
        &[],
    );
    use_helper(&home, &[]);

    let (out, _) = clone(&home, &server.url("team/repo.git"), "first");
    assert!(
        !out.status.success(),
        "clone with the wrong token succeeded"
    );

    let token = home.token_json(&wrong);
    assert_eq!(token["state"], "rejected", "{token}");
    assert!(
        home.list_json(true)
            .iter()
            .any(|t| t["id"] == wrong.as_str()),
        "still listed with --all"
    );
    assert_eq!(home.token_json(&right)["state"], "active");

    let (out, work) = clone(&home, &server.url("team/repo.git"), "second");
    ok(&out, "clone with the right token");
    assert!(work.join("README").exists());
    assert!(server
        .access_log()
        .iter()
        .any(|l| l.user == "alice" && l.status == 200));

    // `token restore` brings it back: it wins again (and fails again).
    ok(
        &home.tokenward(&["token", "restore", &wrong]),
        "token restore",
    );
    assert_eq!(home.token_json(&wrong)["state"], "active");
}

#[test]
fn credential_given_to_git_credential_approve_is_saved_and_reused() {
    let server = server();
    let mut home = TestHome::new("file");
    home.start_daemon();
    use_helper(&home, &[]);
    let host = format!("127.0.0.1:{}", server.port);
    let input = format!(
        "protocol=http\nhost={host}\npath=team/repo.git\nusername=bob\npassword={BOB_PW}\n\n"
    );
    ok(
        &git_input(
            &home,
            home.root.path(),
            &["credential", "approve"],
            Some(&input),
        ),
        "git credential approve",
    );
    let tokens = home.list_json(false);
    let saved: Vec<_> = tokens
        .iter()
        .filter(|t| t["label"] == "saved by git")
        .collect();
    assert_eq!(saved.len(), 1, "{tokens:#?}");
    assert_eq!(saved[0]["url"], format!("http://{host}/team/repo.git"));
    assert_eq!(saved[0]["username"], "bob");
    assert_eq!(saved[0]["role"], "vcs");

    let (out, _) = clone(&home, &server.url("team/repo.git"), "work");
    ok(&out, "clone with the saved credential");
    assert!(server
        .access_log()
        .iter()
        .any(|l| l.user == "bob" && l.status == 200));
    // The secret is in the vault only, never in the index in clear.
    let index = std::fs::read(home.home.join("data/index.json")).unwrap_or_default();
    assert!(!index.windows(BOB_PW.len()).any(|w| w == BOB_PW.as_bytes()));
}

#[test]
fn ci_mode_clones_and_pushes_with_no_daemon_and_writes_nothing() {
    let server = server();
    let mut home = TestHome::new("file");
    home.set_env("TOKENWARD_TOKEN", ALICE_PW);
    home.set_env("TOKENWARD_URL", server.url("team"));
    home.set_env("TOKENWARD_USERNAME", "alice");
    use_helper(&home, &[]);

    let (out, work) = clone(&home, &server.url("team/repo.git"), "work");
    ok(&out, "CI clone");
    std::fs::write(work.join("ci.txt"), "ci\n").expect("writes");
    commit_file(&home, &work, "ci.txt");
    ok(
        &git(&home, &work, &["push", "-q", "origin", "main"]),
        "CI push",
    );

    assert!(!home.socket.exists(), "a daemon was started");
    assert!(!home.home.exists(), "TOKENWARD_HOME was written");
    assert!(server
        .access_log()
        .iter()
        .any(|l| l.user == "alice" && l.status == 200));

    // Without TOKENWARD_URL: a clear error, not an unscoped token.
    home.remove_env("TOKENWARD_URL");
    let (out, _) = clone(&home, &server.url("team/repo.git"), "again");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TOKENWARD_URL"), "{stderr}");
    assert!(!home.socket.exists() && !home.home.exists());
}

#[test]
fn another_host_gets_nothing() {
    let server = server();
    let mut home = TestHome::new("file");
    home.start_daemon();
    home.add_token(&server.url(""), Some("alice"), ALICE_PW, &[]);
    use_helper(&home, &[]);

    // The same server under another name is another host.
    let other = format!("http://localhost:{}/team/repo.git", server.port);
    let (out, _) = clone(&home, &other, "other");
    assert!(!out.status.success(), "another host got a token");
    assert!(
        server.access_log().iter().all(|l| l.user == "-"),
        "{:#?}",
        server.access_log()
    );

    // http vs https and another port: the helper itself answers nothing.
    for input in [
        format!(
            "protocol=https\nhost=127.0.0.1:{}\npath=team/repo.git\n\n",
            server.port
        ),
        format!(
            "protocol=http\nhost=127.0.0.1:{}\npath=team/repo.git\n\n",
            server.port + 1
        ),
        format!(
            "protocol=http\nhost=127.0.0.1:{}.evil.net\npath=team/repo.git\n\n",
            server.port
        ),
    ] {
        let out = git_input(
            &home,
            home.root.path(),
            &["credential", "fill"],
            Some(&input),
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(ALICE_PW),
            "{input:?}"
        );
    }
    let (out, _) = clone(&home, &server.url("team/repo.git"), "same");
    ok(&out, "clone of the scoped host");
}

#[test]
fn daemon_down_without_autostart_falls_through_to_the_next_helper() {
    let server = server();
    let mut home = TestHome::new("file");
    home.set_env("TOKENWARD_NO_AUTOSTART", "1");
    let fallback = format!(
        "!f() {{ test \"$1\" = get && printf 'username=alice\\npassword={ALICE_PW}\\n'; }}; f"
    );
    use_helper(&home, &[&fallback]);

    let (out, _) = clone(&home, &server.url("team/repo.git"), "work");
    ok(&out, "clone through the fallback helper");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("git-credential-tokenward:"))
        .collect();
    assert_eq!(ours.len(), 1, "{stderr}");
    assert!(!home.socket.exists(), "autostart was off");

    // The helper alone: exit 0, nothing on stdout, one line on stderr.
    let mut command = home.command(helper_bin());
    let mut child = command
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs the helper");
    {
        use std::io::Write;
        let host = format!("protocol=http\nhost=127.0.0.1:{}\n\n", server.port);
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(host.as_bytes())
            .expect("writes");
    }
    let out = child.wait_with_output().expect("helper exits");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn autostart_brings_the_daemon_up_for_git() {
    let server = server();
    let mut home = TestHome::new("file");
    home.start_daemon();
    home.add_token(&server.url("team"), Some("alice"), ALICE_PW, &[]);
    home.stop_daemon();
    assert!(
        common::wait_until(std::time::Duration::from_secs(5), || {
            std::os::unix::net::UnixStream::connect(&home.socket).is_err()
        }),
        "the daemon did not stop"
    );
    use_helper(&home, &[]);
    let (out, _) = clone(&home, &server.url("team/repo.git"), "work");
    ok(&out, "clone with an autostarted daemon");
    assert!(
        std::os::unix::net::UnixStream::connect(&home.socket).is_ok(),
        "no daemon after autostart"
    );
    // TestHome's drop stops the autostarted daemon with `tokenward stop`.
}

#[test]
fn setup_git_then_unsetup_with_real_git() {
    let server = server();
    let mut home = TestHome::new("file");
    home.start_daemon();
    home.add_token(&server.url("team"), Some("alice"), ALICE_PW, &[]);
    let cwd = home.user_home.clone();
    ok(
        &git(
            &home,
            &cwd,
            &["config", "--global", "credential.helper", "cache"],
        ),
        "git config",
    );
    let setup = tokenward::setup::GitSetup {
        global: true,
        state_dir: home.home.join("config"),
        helper: helper_bin().to_string_lossy().into_owned(),
        envs: vec![
            ("HOME".into(), home.user_home.clone().into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ],
        cwd: None,
    };
    setup.setup().expect("setup git");
    let helpers = git(
        &home,
        &cwd,
        &["config", "--global", "--get-all", "credential.helper"],
    );
    assert_eq!(
        String::from_utf8_lossy(&helpers.stdout),
        format!("{}\ncache\n", helper_bin().display())
    );
    let (out, _) = clone(&home, &server.url("team/repo.git"), "work");
    ok(&out, "clone after setup");

    setup.unsetup().expect("unsetup git");
    let helpers = git(
        &home,
        &cwd,
        &["config", "--global", "--get-all", "credential.helper"],
    );
    assert_eq!(String::from_utf8_lossy(&helpers.stdout), "cache\n");
    let http_path = git(
        &home,
        &cwd,
        &["config", "--global", "--get", "credential.useHttpPath"],
    );
    assert!(!http_path.status.success(), "useHttpPath not restored");
}

#[test]
fn get_gives_expiry_and_warns_within_7_days() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    let soon = home.add_token(
        "https://soon.example",
        Some("alice"),
        "soon-secret",
        &["--expires", "3d"],
    );
    home.add_token(
        "https://later.example",
        Some("alice"),
        "later-secret",
        &["--expires", "30d"],
    );
    use_helper(&home, &[]);

    let fill = |host: &str| {
        let input = format!("protocol=https\nhost={host}\n\n");
        git_input(
            &home,
            home.root.path(),
            &["credential", "fill"],
            Some(&input),
        )
    };
    let out = fill("soon.example");
    ok(&out, "credential fill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("username=alice\npassword=soon-secret\n"),
        "{stdout}"
    );
    let expiry: i64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password_expiry_utc="))
        .expect("password_expiry_utc answered")
        .parse()
        .expect("unix seconds");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((expiry - now - 3 * 86_400).abs() < 600, "{expiry} vs {now}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains(&soon),
        "{stderr}"
    );
    assert!(!stderr.contains("soon-secret"));

    let out = fill("later.example");
    ok(&out, "credential fill");
    assert!(String::from_utf8_lossy(&out.stdout).contains("password=later-secret"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}
