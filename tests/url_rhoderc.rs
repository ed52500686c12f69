//! `tokenward url`, `tokenward token import-rhoderc`, `completions` and the
//! man page, against a real daemon.

mod common;

use common::TestHome;
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn url_appends_the_web_token() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    home.add_token(
        "https://code.example.com/team",
        None,
        "web-s3cret",
        &["--role", "web", "--auth", "query"],
    );
    // A vcs token for the same server is not a web token.
    home.add_token("https://code.example.com", Some("alice"), "vcs-s3cret", &[]);

    let cases = [
        (
            "https://code.example.com/team/repo/archive/tip.zip",
            "https://code.example.com/team/repo/archive/tip.zip?auth_token=web-s3cret",
        ),
        (
            "https://code.example.com/team/repo/raw/tip/a.txt?with_files=1",
            "https://code.example.com/team/repo/raw/tip/a.txt?with_files=1&auth_token=web-s3cret",
        ),
        (
            "https://code.example.com/team/repo/changeset/abc?diff=1#L10",
            "https://code.example.com/team/repo/changeset/abc?diff=1&auth_token=web-s3cret#L10",
        ),
        (
            "https://CODE.example.com:443/team/repo",
            "https://CODE.example.com:443/team/repo?auth_token=web-s3cret",
        ),
    ];
    for (given, expected) in cases {
        let out = home.tokenward(&["url", given]);
        assert!(out.status.success(), "{given}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("{expected}\n"));
    }

    for (unmatched, what) in [
        (
            "https://code.example.com/other/repo",
            "outside the token's path",
        ),
        ("http://code.example.com/team/repo", "http, not https"),
        ("https://elsewhere.example/team", "another host"),
    ] {
        let out = home.tokenward(&["url", unmatched]);
        assert!(!out.status.success(), "{what}: {}", stdout(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.contains("no web token for"), "{what}: {err}");
        assert!(err.contains("--role web"), "{what}: {err}");
        assert!(
            !err.contains("s3cret") && stdout(&out).is_empty(),
            "{what}: {err}"
        );
    }

    let out = home.tokenward(&["url", "ftp://code.example.com/x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("http or https"), "{}", stderr(&out));
}

#[test]
fn url_help_warns_that_it_prints_the_secret() {
    let home = TestHome::new("file");
    let out = home.tokenward(&["url", "--help"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("CONTAINS THE SECRET"),
        "{}",
        stdout(&out)
    );
}

fn api_tokens(home: &TestHome) -> Vec<Value> {
    let mut tokens: Vec<Value> = home
        .list_json(true)
        .into_iter()
        .filter(|t| t["role"] == "api")
        .collect();
    tokens.sort_by_key(|t| t["label"].as_str().unwrap_or_default().to_owned());
    tokens
}

#[test]
fn import_rhoderc_is_idempotent_and_rotates_a_changed_key() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    let rc = home.user_home.join(".rhoderc");
    let write = |prod_key: &str| {
        std::fs::write(
            &rc,
            format!(
                "[instance:production]\napi_host = https://code.example.com/\napi_key = {prod_key}\n\n\
                 [instance:staging]\napi_host = http://10.0.0.5:5000\napi_key = stag-key-1\n\
                 [global]\ndefault_instance = production\n"
            ),
        )
        .expect("write rhoderc");
    };
    write("prod-key-1");

    // No FILE: ~/.rhoderc.
    let out = home.tokenward(&["token", "import-rhoderc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 added, 0 unchanged"),
        "{}",
        stdout(&out)
    );
    let first = api_tokens(&home);
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0]["label"], "production");
    assert_eq!(first[0]["url"], "https://code.example.com");
    assert_eq!(first[1]["label"], "staging");
    assert_eq!(first[1]["url"], "http://10.0.0.5:5000");
    for t in &first {
        assert_eq!(t["role"], "api");
        assert_eq!(t["auth"], "query");
        assert!(t["username"].is_null(), "{t}");
        assert_eq!(t["state"], "active");
    }
    assert_eq!(home.list_json(true).len(), 2);

    // Twice: nothing added, nothing changed.
    let rc_arg = rc.to_string_lossy().into_owned();
    let out = home.tokenward(&["token", "import-rhoderc", &rc_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("0 added, 2 unchanged, 0 rotated"),
        "{}",
        stdout(&out)
    );
    let second = api_tokens(&home);
    assert_eq!(second, first);

    // A new key for one instance rotates that token in place.
    write("prod-key-2");
    let out = home.tokenward(&["token", "import-rhoderc", &rc_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("0 added, 1 unchanged, 1 rotated"),
        "{}",
        stdout(&out)
    );
    let third = api_tokens(&home);
    assert_eq!(third.len(), 2);
    assert_eq!(third[0]["id"], first[0]["id"]);
    assert_ne!(third[0]["fingerprint"], first[0]["fingerprint"]);
    assert_eq!(third[1]["fingerprint"], first[1]["fingerprint"]);
    for text in [stdout(&out), stderr(&out)] {
        assert!(
            !text.contains("prod-key") && !text.contains("stag-key"),
            "{text}"
        );
    }
    // The relay's way of asking for an api token gets the new key.
    let request = r#"{"v":1,"op":"get_for_role","query":{"protocol":"https","host":"code.example.com","path":"_admin/api"},"role":"api"}"#;
    let answer: Value =
        serde_json::from_str(&home.raw_request(format!("{request}\n").as_bytes())).expect("json");
    assert_eq!(answer["credential"]["password"], "prod-key-2", "{answer}");
}

#[test]
fn import_rhoderc_errors_name_file_and_line_but_not_the_key() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    let rc = home.root.path().join("broken-rhoderc");
    std::fs::write(
        &rc,
        "[instance:a]\napi_host = https://a.example\napi_key = good-key\n[instance:b]\napi_key = leaked-key\n",
    )
    .expect("write");
    let out = home.tokenward(&["token", "import-rhoderc", &rc.to_string_lossy()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err,
        format!(
            "tokenward: {}:4: [instance:b] has no api_host\n",
            rc.display()
        )
    );
    // All or nothing: the good instance was not imported either.
    assert!(home.list_json(true).is_empty());

    let out = home.tokenward(&["token", "import-rhoderc", "/nonexistent/rhoderc"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read /nonexistent/rhoderc"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_and_man_page() {
    let home = TestHome::new("file");
    for (shell, marker) in [
        ("bash", "complete -F _tokenward"),
        ("zsh", "#compdef tokenward"),
        ("fish", "complete -c tokenward"),
    ] {
        let out = home.tokenward(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("import-rhoderc"), "{shell}");
    }
    let out = home.tokenward(&["completions", "tcsh"]);
    assert!(!out.status.success());

    let out = home.tokenward(&["man"]);
    assert!(out.status.success());
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH tokenward 1"),
        "{page}"
    );
    assert!(page.contains("tokenward url"), "{page}");
    // hidden from the help
    let help = stdout(&home.tokenward(&["--help"]));
    assert!(
        !help.lines().any(|l| l.trim_start().starts_with("man ")),
        "{help}"
    );
    assert!(
        help.contains("doctor") && help.contains("completions"),
        "{help}"
    );
}
