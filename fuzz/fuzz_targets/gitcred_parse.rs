//! Fuzz target: git's credential protocol as the helper reads it
//! (`tokenward::gitcred::parse`), with the properties the CVE fixes rely on:
//! a refusal is one line; an accepted request has no control character in
//! its identity fields and no line break or NUL in its password; nothing
//! without protocol and host may be asked of the daemon; an answer written
//! from what was read reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenward::gitcred::{self, Answer};

fuzz_target!(|data: &[u8]| {
    let context = match gitcred::parse(data) {
        Ok(context) => context,
        Err(error) => {
            let text = error.to_string();
            assert!(!text.contains(['\n', '\r']), "multi-line error: {text:?}");
            return;
        }
    };
    for field in [
        &context.protocol,
        &context.host,
        &context.path,
        &context.username,
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            !field.chars().any(char::is_control),
            "control character in {field:?}"
        );
    }
    if let Some(password) = &context.password {
        assert!(
            !password.expose().contains(['\n', '\r', '\0']),
            "line break in the password"
        );
    }

    // CVE-2020-11008: no protocol or no host, no question to the daemon.
    let query = context.query();
    assert_eq!(query.is_some(), context.report().is_some());
    assert_eq!(query.is_some(), context.token_request().is_some());
    if let Some(query) = &query {
        assert!(!query.protocol.is_empty() && !query.host.is_empty());
        assert!(query.protocol == "http" || query.protocol == "https");
    }

    // What the helper would write back, read as git would read it.
    if let Some(password) = &context.password {
        let mut out = Vec::new();
        let answer = Answer {
            username: context.username.as_deref(),
            password,
            password_expiry_utc: context.password_expiry_utc,
        };
        if gitcred::write_answer(&mut out, &answer).is_ok() {
            let back = gitcred::parse(&out).expect("a written answer parses");
            assert_eq!(back.username, context.username);
            assert_eq!(
                back.password.as_ref().map(|p| p.expose()),
                Some(password.expose())
            );
            assert_eq!(back.password_expiry_utc, context.password_expiry_utc);
        }
    }
});
