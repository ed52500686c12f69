//! `tokenward doctor` against a real daemon, git and hg: each broken state a
//! test can create (daemon down, socket dir 0755, git not configured,
//! expired, expiring and rejected tokens) is found, with the command that
//! fixes it, and a good setup is clean.

mod common;

use common::TestHome;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

fn doctor(home: &TestHome) -> (bool, String, String) {
    let out: Output = home.tokenward(&["doctor"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The finding line for `check` and the fix lines right after it.
fn finding<'a>(report: &'a str, level: &str, check: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = report.lines().collect();
    let prefix = format!("{level:<4}  {check}:");
    let Some(at) = lines.iter().position(|l| l.starts_with(&prefix)) else {
        panic!("no '{prefix}' line in:\n{report}");
    };
    let mut found = vec![lines[at]];
    found.extend(
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("      fix: ")),
    );
    found
}

fn set_up_git_and_hg(home: &TestHome) {
    common::helper_bin();
    for args in [["setup", "git", "--global"].as_slice(), &["setup", "hg"]] {
        let out = home.tokenward(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn daemon_down_is_a_failure_with_the_start_command() {
    let home = TestHome::new("file");
    let (ok, report, stderr) = doctor(&home);
    assert!(!ok, "doctor passed with no daemon:\n{report}");
    let daemon = finding(&report, "FAIL", "daemon");
    assert!(daemon[0].contains("not running"), "{report}");
    assert_eq!(daemon[1..], ["      fix: tokenward start"], "{report}");
    assert!(
        stderr.starts_with("tokenward: ") && stderr.lines().count() == 1,
        "{stderr}"
    );
    // doctor does not start the daemon itself
    assert!(!home.socket.exists(), "doctor started the daemon");
}

#[test]
fn socket_dir_open_to_others_and_git_not_configured() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    let dir = home.socket.parent().expect("socket dir").to_owned();

    // A fresh HOME: git has no helper at all.
    let (ok, report, _) = doctor(&home);
    assert!(!ok, "{report}");
    let git = finding(&report, "FAIL", "git");
    assert!(git[0].contains("does not ask tokenward"), "{report}");
    assert_eq!(git[1..], ["      fix: tokenward setup git --global"]);
    finding(&report, "ok", "socket");
    finding(&report, "ok", "daemon");
    finding(&report, "ok", "version");
    finding(&report, "ok", "vault");

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (ok, report, _) = doctor(&home);
    assert!(!ok, "{report}");
    let socket = finding(&report, "FAIL", "socket");
    assert!(socket[0].contains("mode 755"), "{report}");
    assert_eq!(
        socket[1..],
        [format!("      fix: chmod 700 {}", dir.display())]
    );

    // Applying the fixes makes the report clean.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    set_up_git_and_hg(&home);
    let (ok, report, stderr) = doctor(&home);
    assert!(ok, "{report}{stderr}");
    assert!(
        !report.contains("FAIL") && !report.contains("warn"),
        "{report}"
    );
    assert!(report.contains("credential.useHttpPath = true"), "{report}");
    assert!(
        report.trim_end().ends_with("everything looks fine"),
        "{report}"
    );
}

#[test]
fn expired_expiring_and_rejected_tokens() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    set_up_git_and_hg(&home);
    let expired = home.add_token(
        "https://expired.example",
        Some("alice"),
        "old-secret",
        &["--expires", "2020-01-31", "--label", "old laptop"],
    );
    let soon = home.add_token(
        "https://soon.example",
        Some("bob"),
        "soon-secret",
        &["--expires", "3d"],
    );
    let rejected = home.add_token(
        "https://rejected.example/team",
        Some("carol"),
        "bad-secret",
        &[],
    );
    home.add_token(
        "https://fine.example",
        Some("dave"),
        "fine-secret",
        &["--expires", "90d"],
    );
    let answer = home.raw_request(
        br#"{"v":1,"op":"reject","protocol":"https","host":"rejected.example","path":"team/repo.git","username":"carol","password":"bad-secret"}
"#,
    );
    assert!(answer.contains(r#""ok":true"#), "{answer}");

    let (ok, report, _) = doctor(&home);
    assert!(!ok, "{report}");
    let e = finding(&report, "FAIL", &format!("token {expired}"));
    assert!(e[0].contains("expired on 2020-01-31"), "{report}");
    assert_eq!(
        e[1..],
        [
            format!("      fix: tokenward token rm {expired}"),
            "      fix: tokenward token add https://expired.example --user alice --role vcs --auth basic --label 'old laptop' --expires 90d".to_owned(),
        ]
    );
    let s = finding(&report, "warn", &format!("token {soon}"));
    assert!(s[0].contains("expires on"), "{report}");
    assert!(
        s[1].contains(&format!("tokenward token rm {soon}")),
        "{report}"
    );
    let r = finding(&report, "FAIL", &format!("token {rejected}"));
    assert!(r[0].contains("was rejected on"), "{report}");
    assert!(
        r[1].contains(&format!("tokenward token restore {rejected}")),
        "{report}"
    );
    assert!(
        r[2].contains(&format!("tokenward token rotate {rejected}")),
        "{report}"
    );
    assert!(
        !report.contains("fine.example"),
        "a good token was reported:\n{report}"
    );
    for secret in ["old-secret", "soon-secret", "bad-secret", "fine-secret"] {
        assert!(!report.contains(secret), "{report}");
    }

    // The fixes work: restore the rejected one, drop the expired one.
    assert!(home
        .tokenward(&["token", "restore", &rejected])
        .status
        .success());
    assert!(home.tokenward(&["token", "rm", &expired]).status.success());
    let (ok, report, _) = doctor(&home);
    assert!(ok, "only a warning is left, yet:\n{report}");
    finding(&report, "warn", &format!("token {soon}"));
    assert!(
        report.trim_end().ends_with("no problems, 1 warning(s)"),
        "{report}"
    );
}
