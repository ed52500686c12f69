//! Mercurial end to end: real hg (Debian's 6.x and 7.x from a venv made by
//! tests/setup-hg7.sh) with the tokenward extension, against hgweb behind
//! nginx with HTTP Basic auth on 127.0.0.1, and the real daemon. Also runs
//! the extension's Python unit tests under both hg's interpreters.

mod common;
#[path = "common/hgweb.rs"]
mod hgweb;

use common::TestHome;
use hgweb::{Account, HgWeb};
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RIGHT: &str = "tw-right-Hq27xPz0";
const WRONG: &str = "tw-wrong-Lm93kVb4";
const REPO: &str = "team/repo";

/// A tokenward install with hg set up as a new user would: `tokenward
/// setup hg` installs the extension in the data dir and enables it in the
/// test user's ~/.hgrc, which is all hg reads (HGRCPATH).
fn install(hg: &Path) -> (TestHome, PathBuf) {
    let mut home = TestHome::new("file");
    let out = home.tokenward(&["setup", "hg"]);
    assert!(
        out.status.success(),
        "setup hg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hgrc = home.user_home.join(".hgrc");
    let text = std::fs::read_to_string(&hgrc).expect("setup hg wrote ~/.hgrc");
    let extension = home.home.join("data/hg/tokenward.py");
    assert!(
        text.contains(&format!("tokenward = {}", extension.display())),
        "{text}"
    );
    assert!(extension.is_file());
    home.set_env("HGRCPATH", &hgrc);
    home.set_env("HGPLAIN", "1");
    home.set_env("HGUSER", "test <test@example.com>");
    home.set_env("TOKENWARD_NO_AUTOSTART", "1");
    home.set_env("LC_ALL", "C");
    eprintln!("testing {} (hg {})", hg.display(), hgweb::hg_version(hg));
    (home, hgrc)
}

fn server() -> HgWeb {
    HgWeb::start(
        &[REPO],
        &[Account {
            user: "alice",
            password: RIGHT,
        }],
    )
}

fn hg(home: &TestHome, hg: &Path, args: &[&str]) -> Output {
    let out = home
        .command(hg)
        .arg("--noninteractive")
        .args(args)
        .current_dir(&home.user_home)
        .output()
        .expect("run hg");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [RIGHT, WRONG] {
        assert!(!all.contains(secret), "hg printed a secret: {all}");
    }
    assert!(!all.contains("Traceback"), "hg printed a traceback: {all}");
    out
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "hg failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// 1 MiB of incompressible bytes (xorshift), so the push really is 1 MiB.
fn big_file(path: &Path) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(1 << 20);
    while bytes.len() < 1 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&bytes))
        .expect("write big file");
}

/// Adds a 1 MiB file to the clone `dir` (under the user's home), commits
/// it with `message` and pushes.
fn push_big_file(home: &TestHome, hg_bin: &Path, dir: &str, message: &str) {
    let clone = home.user_home.join(dir);
    big_file(&clone.join("big.bin"));
    let clone_arg = clone.to_string_lossy().into_owned();
    ok(hg(home, hg_bin, &["--cwd", &clone_arg, "add", "big.bin"]));
    ok(hg(
        home,
        hg_bin,
        &["-R", &clone_arg, "commit", "-m", message],
    ));
    ok(hg(home, hg_bin, &["-R", &clone_arg, "push"]));
}

/// Clone and push a 1 MiB file with a token from the daemon, no [auth].
fn clone_and_push(hg_bin: &Path) {
    let web = server();
    let (mut home, hgrc) = install(hg_bin);
    assert!(!std::fs::read_to_string(&hgrc)
        .expect("hgrc")
        .contains("[auth]"));
    home.start_daemon();
    let id = home.add_token(&web.base, Some("alice"), RIGHT, &[]);

    let url = web.url(REPO);
    ok(hg(&home, hg_bin, &["clone", &url, "clone"]));
    push_big_file(&home, hg_bin, "clone", "one MiB");

    let served = web.repo_dir(REPO);
    let size = Command::new("/usr/bin/hg")
        .arg("--cwd")
        .arg(&served)
        .args(["cat", "-r", "tip", "big.bin"])
        .env("HGRCPATH", "")
        .output()
        .expect("hg cat");
    assert_eq!(size.stdout.len(), 1 << 20, "the server has the pushed file");
    let token = home.token_json(&id);
    assert_eq!(token["state"], "active");
    assert!(
        !token["last_used"].is_null(),
        "success was reported: {token}"
    );

    // unsetup removes exactly what setup added: hg then has no credentials
    let out = home.tokenward(&["unsetup", "hg"]);
    assert!(
        out.status.success(),
        "unsetup hg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&hgrc).expect("hgrc"), "");
    let out = hg(&home, hg_bin, &["clone", &url, "again"]);
    assert!(
        !out.status.success(),
        "without the extension hg has no token"
    );
}

/// A wrong, more specific token: hg fails, the token is rejected, the next
/// clone uses the right one.
fn wrong_token_is_rejected(hg_bin: &Path) {
    let web = server();
    let (mut home, _) = install(hg_bin);
    home.start_daemon();
    let right = home.add_token(&web.base, Some("alice"), RIGHT, &[]);
    let wrong = home.add_token(&web.url(REPO), Some("alice"), WRONG, &[]);

    let url = web.url(REPO);
    let failed = hg(&home, hg_bin, &["clone", &url, "first"]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    eprintln!("hg said: {stderr}");
    assert!(!failed.status.success(), "the wrong token cannot clone");
    assert!(stderr.contains("authorization"), "{stderr}");
    assert_eq!(home.token_json(&wrong)["state"], "rejected");
    assert_eq!(home.token_json(&right)["state"], "active");

    ok(hg(&home, hg_bin, &["clone", &url, "second"]));
    assert!(!home.token_json(&right)["last_used"].is_null());
    assert_eq!(home.token_json(&wrong)["state"], "rejected");
}

/// CI mode: the three variables, no daemon; the socket is never touched.
fn ci_mode(hg_bin: &Path) {
    let web = server();
    let (mut home, _) = install(hg_bin);
    let listener = UnixListener::bind(&home.socket).expect("a socket nobody should call");
    listener.set_nonblocking(true).expect("nonblocking");
    home.set_env("TOKENWARD_TOKEN", RIGHT);
    home.set_env("TOKENWARD_URL", format!("{}/team", web.base));
    home.set_env("TOKENWARD_USERNAME", "alice");
    let stderr = ok(hg(&home, hg_bin, &["clone", &web.url(REPO), "ci"]));
    assert!(!stderr.contains("tokenward"), "{stderr}");
    assert!(
        listener.accept().is_err(),
        "CI mode connected to the daemon's socket"
    );

    // outside TOKENWARD_URL there is no answer, and hg (non-interactive) fails
    home.set_env("TOKENWARD_URL", format!("{}/other", web.base));
    let out = hg(&home, hg_bin, &["clone", &web.url(REPO), "ci2"]);
    assert!(!out.status.success());
}

/// Daemon down: hg's own [auth] answers, with at most one warning line.
fn daemon_down(hg_bin: &Path) {
    let web = server();
    let (home, hgrc) = install(hg_bin);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&hgrc)
        .expect("hgrc");
    writeln!(
        file,
        "[auth]\nt.prefix = 127.0.0.1\nt.schemes = http\nt.username = alice\nt.password = {RIGHT}"
    )
    .expect("write [auth]");
    let stderr = ok(hg(&home, hg_bin, &["clone", &web.url(REPO), "down"]));
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("tokenward")).collect();
    assert!(lines.len() <= 1, "{stderr}");
}

fn python_unit_tests(hg_bin: &Path) {
    let python = hgweb::hg_python(hg_bin);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("helper/hg");
    let out = Command::new(&python)
        .args(["-m", "unittest", "-v", "test_tokenward.py"])
        .current_dir(&dir)
        .env("HG", hg_bin)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("TOKENWARD_TOKEN")
        .env_remove("TOKENWARD_SOCKET")
        .output()
        .expect("run python unittest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", python.display());
    assert!(stderr.contains("\nOK"), "{stderr}");
}

/// hg sends Content-Length bodies (git sends chunked ones): a push of a
/// 1 MiB file through a daemon-run relay, with no extension and no [auth]
/// in hg at all.
fn push_through_the_relay(hg_bin: &Path) {
    let web = server();
    let mut home = TestHome::new("file");
    let hgrc = home.user_home.join(".hgrc");
    std::fs::write(&hgrc, "").expect("empty hgrc");
    home.set_env("HGRCPATH", &hgrc);
    home.set_env("HGPLAIN", "1");
    home.set_env("HGUSER", "test <test@example.com>");
    home.start_daemon();
    home.add_token(&web.base, Some("alice"), RIGHT, &[]);
    let listen = format!("127.0.0.1:{}", common::free_port());
    let add = home.tokenward(&["relay", "add", &web.base, "--listen", &listen]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );

    let url = format!("http://{listen}/{REPO}");
    ok(hg(&home, hg_bin, &["clone", &url, "relayed"]));
    push_big_file(&home, hg_bin, "relayed", "through the relay");

    let served = Command::new("/usr/bin/hg")
        .arg("--cwd")
        .arg(web.repo_dir(REPO))
        .args(["cat", "-r", "tip", "big.bin"])
        .env("HGRCPATH", "")
        .output()
        .expect("hg cat");
    assert_eq!(
        served.stdout.len(),
        1 << 20,
        "the server has the pushed file"
    );
    let status = home.status_json();
    let up = status["relays"][0]["bytes_up"].as_u64().unwrap_or(0);
    assert!(up >= 1 << 20, "the push went through the relay: {status}");
}

macro_rules! for_both_hg {
    ($($name:ident),*) => {
        mod hg6 { $( #[test] fn $name() { super::$name(&super::hgweb::hg6()); } )* }
        mod hg7 { $( #[test] fn $name() { super::$name(&super::hgweb::hg7()); } )* }
    };
}

for_both_hg!(
    clone_and_push,
    wrong_token_is_rejected,
    ci_mode,
    daemon_down,
    python_unit_tests,
    push_through_the_relay
);
