//! Golden tests of the helper binary itself: bytes on stdin, exact bytes on
//! stdout, and the one-line stderr of a soft failure. They run in CI mode
//! (TOKENWARD_TOKEN) or with the daemon absent, so no daemon is needed; a
//! socket path in a temp dir proves nothing was started or written.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const HELPER: &str = env!("CARGO_BIN_EXE_git-credential-tokenward");
const SECRET: &str = "s3cret-t0ken";
const OK: &str = "username=alice\npassword=s3cret-t0ken\n";

struct Run {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn run(action: &str, input: &[u8], envs: &[(&str, &str)], dir: &Path) -> Run {
    let mut command = Command::new(HELPER);
    command
        .arg(action)
        .env("TOKENWARD_SOCKET", dir.join("daemon.sock"))
        .env("TOKENWARD_HOME", dir.join("home"))
        .env("TOKENWARD_NO_AUTOSTART", "1")
        .env_remove("TOKENWARD_TOKEN")
        .env_remove("TOKENWARD_URL")
        .env_remove("TOKENWARD_USERNAME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("helper starts");
    // A helper may exit without reading (unknown action): git ignores
    // SIGPIPE there, and so does this test.
    let written = child.stdin.take().expect("stdin").write_all(input);
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing stdin");
    }
    let out = child.wait_with_output().expect("helper exits");
    Run {
        stdout: String::from_utf8(out.stdout).expect("utf8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf8 stderr"),
        code: out.status.code(),
    }
}

/// CI mode scoped to https://code.example.com/team for alice.
fn ci(input: &[u8]) -> Run {
    ci_with(input, "https://code.example.com/team", Some("alice"))
}

fn ci_with(input: &[u8], url: &str, user: Option<&str>) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut envs = vec![("TOKENWARD_TOKEN", SECRET), ("TOKENWARD_URL", url)];
    if let Some(user) = user {
        envs.push(("TOKENWARD_USERNAME", user));
    }
    // Autostart is allowed here on purpose: CI mode must not use it.
    envs.push(("TOKENWARD_NO_AUTOSTART", "0"));
    let out = run("get", input, &envs, dir.path());
    assert_nothing_written(dir.path());
    out
}

fn assert_nothing_written(dir: &Path) {
    let entries: Vec<_> = std::fs::read_dir(dir).expect("reads tempdir").collect();
    assert!(entries.is_empty(), "the helper wrote {entries:?}");
}

fn assert_answer(input: &str, expected: &str) {
    let out = ci(input.as_bytes());
    assert_eq!(out.code, Some(0), "{input:?}");
    assert_eq!(out.stdout, expected, "{input:?} stderr: {}", out.stderr);
    assert!(!out.stderr.contains(SECRET));
}

/// Refused input: no answer, exit 0, exactly one stderr line, no secret.
fn assert_refused(input: &[u8]) {
    let out = ci(input);
    assert_eq!(out.code, Some(0), "{input:?}");
    assert_eq!(out.stdout, "", "{input:?} got an answer");
    assert_eq!(out.stderr.lines().count(), 1, "{input:?}: {:?}", out.stderr);
    assert!(!out.stderr.contains(SECRET));
}

#[test]
fn answers_inside_its_scope() {
    assert_answer(
        "protocol=https\nhost=code.example.com\npath=team/repo.git\n\n",
        OK,
    );
    assert_answer("protocol=https\nhost=code.example.com\npath=team\n", OK);
    assert_answer(
        "protocol=https\r\nhost=code.example.com\r\npath=team/repo.git\r\n\r\n",
        OK,
    );
    assert_answer(
        "protocol=https\nhost=CODE.Example.COM\npath=team/repo.git\n\n",
        OK,
    );
    assert_answer(
        "protocol=https\nhost=code.example.com:443\npath=team/repo.git\n\n",
        OK,
    );
    assert_answer("url=https://code.example.com:443/team/repo.git\n\n", OK);
    assert_answer("url=HTTPS://Code.Example.Com/team/sub/repo.git/\n\n", OK);
    assert_answer(
        "protocol=https\nhost=code.example.com\npath=team/repo.git\nusername=alice\n\n",
        OK,
    );
    // Unknown and array keys are ignored.
    assert_answer(
        "capability[]=authtype\nprotocol=https\nhost=code.example.com\npath=team/repo.git\nwwwauth[]=Basic realm=\"git\"\nfuture=1\n\n",
        OK,
    );
}

#[test]
fn nothing_outside_its_scope() {
    for input in [
        "protocol=https\nhost=code.example.com.evil.net\npath=team/repo.git\n",
        "protocol=https\nhost=evilcode.example.com\npath=team/repo.git\n",
        "protocol=https\nhost=example.com\npath=team/repo.git\n",
        "protocol=https\nhost=code.example.com:8443\npath=team/repo.git\n",
        "protocol=http\nhost=code.example.com\npath=team/repo.git\n",
        "protocol=https\nhost=code.example.com\npath=team/repo.git\nusername=bob\n",
        "protocol=https\nhost=code.example.com\npath=teamevil/repo.git\n",
        "protocol=https\nhost=code.example.com\npath=other/team/repo.git\n",
        "protocol=https\nhost=code.example.com\npath=team/../other/repo.git\n",
        // No path sent (git without useHttpPath): a path-scoped token stays home.
        "protocol=https\nhost=code.example.com\n",
        "protocol=ftp\nhost=code.example.com\npath=team/repo.git\n",
        "protocol=cert\npath=/home/u/cert.pem\n",
        "url=https://code.example.com@evil.example/team/repo.git\n",
        "url=https://evil.example/code.example.com/team/repo.git\n",
    ] {
        let out = ci(input.as_bytes());
        assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{input:?}");
    }
}

#[test]
fn cve_inputs_get_no_answer() {
    for input in [
        // CVE-2020-5260: a newline smuggled through url= decoding.
        &b"url=https://evil.example?%0ahost=code.example.com/team/x\n"[..],
        b"url=https://evil.example%0ahost=code.example.com/team/x\n",
        b"url=https://code.example.com%0a/team/x\n",
        b"url=https://evil.example/%0aprotocol=https%0ahost=code.example.com%0apath=team/x\n",
        // CVE-2024-50349: terminal escapes in the host.
        b"url=https://%1b[1Acode.example.com/team/x\n",
        b"protocol=https\nhost=code.example.com\x1b[2K\npath=team/x\n",
        b"url=https://code.example.com%7f/team/x\n",
        // CVE-2024-52006: a bare CR, which CR-splitting helpers read as a line end.
        b"protocol=https\nhost=evil.example\rhost=code.example.com\npath=team/x\n",
        b"url=https://evil.example%0dhost=code.example.com/team/x\n",
        b"url=https://code.example.com/team/x%0d\n",
        // GCM CVE-2024-50338: CR in the user info or path reaching a .NET helper.
        b"url=https://code.example.com%0d@evil.example/team/x\n",
        b"url=https://u%0dhost=code.example.com@evil.example/team/x\n",
        // NUL and lines without '='.
        b"protocol=https\nhost=code.example.com\0.evil\npath=team/x\n",
        b"protocol=https\ncode.example.com\npath=team/x\n",
        b"url=https://code.example.com%00/team/x\n",
        // Not UTF-8 after decoding.
        b"url=https://code.example.com/team/%ff\n",
    ] {
        assert_refused(input);
    }
}

#[test]
fn cve_2020_11008_no_host_or_protocol_gets_nothing() {
    for input in [
        "url=https:///code.example.com/team/x\n",
        "url=https://\n",
        "url=https://alice@/team/x\n",
        "url=https://:443/team/x\n",
        "protocol=https\npath=team/x\n",
        "host=code.example.com\npath=team/x\n",
        "protocol=https\nhost=\npath=team/x\n",
        "protocol=\nhost=code.example.com\npath=team/x\n",
    ] {
        // Even a host-wide token must not answer.
        let out = ci_with(input.as_bytes(), "https://code.example.com", Some("alice"));
        assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{input:?}");
        assert!(out.stderr.lines().count() <= 1, "{input:?}");
    }
}

#[test]
fn over_long_line_is_refused() {
    let mut input = b"protocol=https\nhost=code.example.com\npath=team/".to_vec();
    input.resize(70_000, b'a');
    input.push(b'\n');
    assert_refused(&input);
}

#[test]
fn username_from_git_when_env_has_none() {
    let input = b"protocol=https\nhost=code.example.com\npath=team/x\nusername=carol\n";
    let out = ci_with(input, "https://code.example.com/team", None);
    assert_eq!(out.stdout, "username=carol\npassword=s3cret-t0ken\n");
    let out = ci_with(
        b"protocol=https\nhost=code.example.com\npath=team/x\n",
        "https://code.example.com/team",
        None,
    );
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr.lines().count(), 1);
    assert!(out.stderr.contains("TOKENWARD_USERNAME"), "{}", out.stderr);
}

#[test]
fn ci_mode_without_url_is_an_error_not_an_unscoped_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = b"protocol=https\nhost=code.example.com\npath=team/x\n";
    let out = run(
        "get",
        input,
        &[
            ("TOKENWARD_TOKEN", SECRET),
            ("TOKENWARD_USERNAME", "alice"),
            ("TOKENWARD_NO_AUTOSTART", "0"),
        ],
        dir.path(),
    );
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""));
    assert_eq!(out.stderr.lines().count(), 1);
    assert!(out.stderr.contains("TOKENWARD_URL"), "{}", out.stderr);
    let out = ci_with(input, "code.example.com", Some("alice"));
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr.lines().count(), 1);
    assert_nothing_written(dir.path());
}

#[test]
fn ci_mode_store_and_erase_do_nothing() {
    for action in ["store", "erase"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = run(
            action,
            b"protocol=https\nhost=code.example.com\npath=team/x\nusername=alice\npassword=other\n",
            &[
                ("TOKENWARD_TOKEN", SECRET),
                ("TOKENWARD_URL", "https://code.example.com"),
                ("TOKENWARD_NO_AUTOSTART", "0"),
            ],
            dir.path(),
        );
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (Some(0), "", ""),
            "{action}"
        );
        assert_nothing_written(dir.path());
    }
}

#[test]
fn daemon_down_without_autostart_fails_soft() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        "get",
        b"protocol=https\nhost=code.example.com\npath=x\n\n",
        &[],
        dir.path(),
    );
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""));
    assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
    assert!(
        out.stderr.starts_with("git-credential-tokenward: "),
        "{}",
        out.stderr
    );
    for action in ["store", "erase"] {
        let out = run(
            action,
            b"protocol=https\nhost=code.example.com\nusername=u\npassword=p\n\n",
            &[],
            dir.path(),
        );
        // get already reported the daemon down; store/erase stay quiet.
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (Some(0), "", ""),
            "{action}"
        );
    }
    // store/erase without protocol or host are ignored before any connection.
    for action in ["store", "erase"] {
        let out = run(
            action,
            b"host=code.example.com\nusername=u\npassword=p\n",
            &[],
            dir.path(),
        );
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (Some(0), "", ""),
            "{action}"
        );
    }
    assert_nothing_written(dir.path());
}

#[test]
fn capability_and_unknown_actions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run("capability", b"", &[], dir.path());
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "version 0\n"));
    let out = run("frobnicate", b"protocol=https\nhost=h\n", &[], dir.path());
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "", "")
    );
}
