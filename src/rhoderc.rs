//! `tokenward token import-rhoderc [FILE]`: imports the API tokens of the
//! `~/.rhoderc` file that RhodeCode's tools (rhodecode-api, rhodecode-index…)
//! read.
//!
//! The file is INI, read the way Python's `configparser` reads it, since
//! that is what writes and reads it on the RhodeCode side: `[section]`
//! headers, `key = value` or `key: value` lines, keys case-insensitive,
//! values trimmed and kept verbatim (no inline comments, no quotes removed),
//! full-line `#` and `;` comments, indented continuation lines, a
//! `[DEFAULT]` section whose keys every section inherits, and duplicate
//! sections or keys refused. Only `[instance:NAME]` sections matter, and in
//! them only `api_host` and `api_key`:
//!
//! ```ini
//! [instance:production]
//! api_host = https://code.example.com
//! api_key = 7f3a…
//! ```
//!
//! Each instance becomes an `api` token scoped to `api_host`, labelled NAME,
//! with auth `query`: RhodeCode's JSON-RPC API wants the token as
//! `auth_token` and needs no username, so none is stored.
//!
//! Idempotence: an instance whose token is already there (same url, role
//! `api` and label) is not added again. Its key is compared with the stored
//! one in memory (the daemon hands the stored one out as it would to the
//! relay); when the file has a new key, that token is rotated. A rejected,
//! expired or shadowed token cannot be read back that way and is left
//! alone, with a hint to rotate it by hand.
//!
//! Errors name the file and line and never include a value from an
//! `instance` section, so a key never reaches the terminal or a log.

use crate::protocol::{CredentialQuery, NewToken, Request, TokenInfo};
use crate::secret::Secret;
use crate::token::{AuthKind, Role, Scope, TokenState};
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// One `[instance:NAME]` section.
#[derive(Debug)]
pub struct Instance {
    pub name: String,
    /// The scope URL, normalized.
    pub url: String,
    pub api_key: Secret,
}

/// Why the file cannot be imported: a line number and a message that holds
/// no value from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

const PREFIX: &str = "instance:";

/// A section as read: its header line and its keys in order.
struct Section {
    name: String,
    line: usize,
    /// (key, value, line)
    entries: Vec<(String, String, usize)>,
}

impl Section {
    fn get(&self, key: &str) -> Option<(&str, usize)> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, l)| (v.as_str(), *l))
    }
}

/// Parses the text of a rhoderc file into its instances, in file order.
pub fn parse(text: &str) -> Result<Vec<Instance>, ParseError> {
    let err = |line: usize, message: &str| ParseError {
        line,
        message: message.to_owned(),
    };
    let mut sections: Vec<Section> = Vec::new();
    // Whether the previous non-blank line was a key (so an indented line
    // continues its value, as configparser has it).
    let mut in_value = false;
    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() {
            in_value = false;
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        if indented && in_value {
            let Some(section) = sections.last_mut() else {
                return Err(err(number, "a continuation line outside any section"));
            };
            if let Some((key, value, _)) = section.entries.last_mut() {
                if section.name.starts_with(PREFIX)
                    && matches!(key.as_str(), "api_host" | "api_key")
                {
                    return Err(err(
                        number,
                        &format!("{key} continues on this line; write it on one line"),
                    ));
                }
                value.push('\n');
                value.push_str(trimmed);
            }
            continue;
        }
        if let Some(inner) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            if inner.is_empty() {
                return Err(err(number, "an empty section name"));
            }
            if inner != "DEFAULT" && sections.iter().any(|s| s.name == inner) {
                return Err(err(number, &format!("section [{inner}] appears twice")));
            }
            sections.push(Section {
                name: inner.to_owned(),
                line: number,
                entries: Vec::new(),
            });
            in_value = false;
            continue;
        }
        let Some(at) = trimmed.find(['=', ':']) else {
            return Err(err(
                number,
                "expected a [section] header or a 'key = value' line",
            ));
        };
        let key = trimmed[..at].trim().to_lowercase();
        let value = trimmed[at + 1..].trim().to_owned();
        if key.is_empty() {
            return Err(err(number, "a line with no key before '='"));
        }
        let Some(section) = sections.last_mut() else {
            return Err(err(
                number,
                "a 'key = value' line before any [section] header",
            ));
        };
        if section.entries.iter().any(|(k, _, _)| *k == key) {
            return Err(err(
                number,
                &format!("key '{key}' appears twice in [{}]", section.name),
            ));
        }
        section.entries.push((key, value, number));
        in_value = true;
    }

    let defaults: Vec<&Section> = sections.iter().filter(|s| s.name == "DEFAULT").collect();
    fn lookup<'a>(
        section: &'a Section,
        defaults: &[&'a Section],
        key: &str,
    ) -> Option<(&'a str, usize)> {
        section
            .get(key)
            .or_else(|| defaults.iter().find_map(|d| d.get(key)))
    }
    let mut instances = Vec::new();
    for section in &sections {
        let Some(name) = section.name.strip_prefix(PREFIX) else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(err(
                section.line,
                "an instance section needs a name: [instance:NAME]",
            ));
        }
        let (host, host_line) = lookup(section, &defaults, "api_host")
            .filter(|(v, _)| !v.is_empty())
            .ok_or_else(|| err(section.line, &format!("[instance:{name}] has no api_host")))?;
        let (key, key_line) = lookup(section, &defaults, "api_key")
            .filter(|(v, _)| !v.is_empty())
            .ok_or_else(|| err(section.line, &format!("[instance:{name}] has no api_key")))?;
        if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(err(key_line, "api_key has spaces or control characters"));
        }
        // The scope error would quote the URL; api_host is not secret, but a
        // URL with ?auth_token=… in it would be, so say only what is wrong.
        let scope = Scope::parse(host).map_err(|_| {
            err(
                host_line,
                "api_host is not a URL tokenward can scope a token to (http(s)://host[:port][/path], no query)",
            )
        })?;
        instances.push(Instance {
            name: name.to_owned(),
            url: scope.to_string(),
            api_key: Secret::new(key.to_owned()),
        });
    }
    Ok(instances)
}

/// `~/.rhoderc`.
pub fn default_path() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".rhoderc"))
        .ok_or_else(|| anyhow!("HOME is not set; give the rhoderc file's path"))
}

/// Reads and parses `path`; errors are `FILE:LINE: message`.
pub fn read(path: &Path) -> Result<Vec<Instance>> {
    let bytes = Zeroizing::new(
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow!("{}: the file is not UTF-8 text", path.display()))?;
    parse(text).map_err(|e| anyhow!("{}:{}: {}", path.display(), e.line, e.message))
}

/// What the import did with one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Added(String),
    Unchanged(String),
    Rotated(String),
    /// Already there but not readable back (rejected, expired, or another
    /// token answers for its scope): left alone.
    Kept(String, &'static str),
}

/// The token already imported for `instance`, if any: same url, role and label.
pub fn existing<'a>(tokens: &'a [TokenInfo], instance: &Instance) -> Option<&'a TokenInfo> {
    tokens.iter().find(|t| {
        t.meta.role == Role::Api && t.meta.url == instance.url && t.meta.label == instance.name
    })
}

/// Runs `tokenward token import-rhoderc [FILE]`.
pub fn run(file: Option<PathBuf>) -> Result<()> {
    let path = match file {
        Some(path) => path,
        None => default_path()?,
    };
    let instances = read(&path)?;
    if instances.is_empty() {
        println!(
            "{}: no [instance:NAME] sections; nothing to import",
            path.display()
        );
        return Ok(());
    }
    let mut client = crate::cli::connect(true)?;
    let tokens = client
        .call(Request::List { all: true })?
        .tokens
        .unwrap_or_default();
    let mut counts = [0usize; 4];
    for instance in &instances {
        let outcome = import_one(&mut client, &tokens, instance)?;
        let line = match &outcome {
            Outcome::Added(id) => {
                counts[0] += 1;
                format!("added {id} for {} ({})", instance.url, instance.name)
            }
            Outcome::Unchanged(id) => {
                counts[1] += 1;
                format!("unchanged {id} for {} ({})", instance.url, instance.name)
            }
            Outcome::Rotated(id) => {
                counts[2] += 1;
                format!(
                    "rotated {id} for {} ({}): the file has a new key",
                    instance.url, instance.name
                )
            }
            Outcome::Kept(id, why) => {
                counts[3] += 1;
                format!(
                    "kept {id} for {} ({}): it is {why}; if the file's key is new, run 'tokenward token rotate {id}'",
                    instance.url, instance.name
                )
            }
        };
        println!("{line}");
    }
    println!(
        "{}: {} added, {} unchanged, {} rotated, {} kept",
        path.display(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    Ok(())
}

fn import_one(
    client: &mut crate::client::Client,
    tokens: &[TokenInfo],
    instance: &Instance,
) -> Result<Outcome> {
    let Some(known) = existing(tokens, instance) else {
        let response = client.call(Request::Add(NewToken {
            url: instance.url.clone(),
            username: None,
            role: Role::Api,
            expires: None,
            label: instance.name.clone(),
            auth: AuthKind::Query,
            secret: instance.api_key.clone(),
        }))?;
        let id = response
            .token
            .map(|t| t.meta.id)
            .ok_or_else(|| anyhow!("the daemon did not confirm the token"))?;
        return Ok(Outcome::Added(id));
    };
    let id = known.meta.id.clone();
    if known.meta.state == TokenState::Rejected {
        return Ok(Outcome::Kept(id, "rejected"));
    }
    if known.meta.is_expired(time::OffsetDateTime::now_utc()) {
        return Ok(Outcome::Kept(id, "expired"));
    }
    // Ask for the api token of this scope exactly as the relay would; when
    // it is this one, its secret can be compared with the file's key.
    let scope = Scope::parse(&instance.url)?;
    let query = CredentialQuery {
        protocol: scope.scheme.as_str().to_owned(),
        host: scope.authority(),
        path: Some(scope.path.join("/")),
        username: None,
    };
    let answer = client.call(Request::GetForRole {
        query,
        role: Role::Api,
    })?;
    match answer.credential {
        Some(stored) if stored.id == id => {
            if stored.password.matches(instance.api_key.expose()) {
                Ok(Outcome::Unchanged(id))
            } else {
                client.call(Request::Rotate {
                    id: id.clone(),
                    secret: instance.api_key.clone(),
                })?;
                Ok(Outcome::Rotated(id))
            }
        }
        _ => Ok(Outcome::Kept(
            id,
            "not the token the daemon picks for its URL",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(instances: &[Instance]) -> Vec<(&str, &str, &str)> {
        instances
            .iter()
            .map(|i| (i.name.as_str(), i.url.as_str(), i.api_key.expose()))
            .collect()
    }

    #[test]
    fn reads_instances_and_ignores_everything_else() {
        let text = "\
# rhodecode-api config
[instance:production]
api_host = https://code.example.com/
api_key = 0123abcd
verify_ssl = false

[other]
api_key = not-ours
[instance:staging]
API_HOST: http://10.0.0.5:5000
  ; an indented comment
api_key:k2
";
        let got = parse(text).expect("parses");
        assert_eq!(
            names(&got),
            [
                ("production", "https://code.example.com", "0123abcd"),
                ("staging", "http://10.0.0.5:5000", "k2"),
            ]
        );
    }

    #[test]
    fn crlf_defaults_and_continuations() {
        let text = "[DEFAULT]\r\napi_host = https://rc.example.org\r\n[instance:a]\r\napi_key = ka\r\ndescription = one\r\n  two\r\n[instance:b]\r\napi_host = https://b.example.org/x\r\napi_key = kb\r\n";
        let got = parse(text).expect("parses");
        assert_eq!(
            names(&got),
            [
                ("a", "https://rc.example.org", "ka"),
                ("b", "https://b.example.org/x", "kb"),
            ]
        );
        assert!(parse("").expect("empty is fine").is_empty());
    }

    #[test]
    fn errors_have_line_numbers_and_never_the_key() {
        let cases: &[(&str, usize, &str)] = &[
            ("api_key = s3cr3t\n", 1, "before any [section]"),
            (
                "[instance:a]\napi_host = https://h\nnonsense s3cr3t\n",
                3,
                "key = value",
            ),
            ("[instance:a]\napi_key = s3cr3t\n", 1, "no api_host"),
            ("[instance:a]\napi_host = https://h\n", 1, "no api_key"),
            (
                "[instance:a]\napi_host = https://h\napi_key =\n",
                1,
                "no api_key",
            ),
            (
                "[instance:a]\napi_host = ftp://h?auth_token=s3cr3t\napi_key = s3cr3t\n",
                2,
                "api_host",
            ),
            (
                "[instance:a]\napi_host = https://h\napi_key = s3 cr3t\n",
                3,
                "spaces",
            ),
            (
                "[instance:a]\napi_host = https://h\napi_key = s3cr3t\n  more\n",
                4,
                "one line",
            ),
            ("[instance:a]\n[instance:a]\n", 2, "twice"),
            ("[x]\nk = 1\nK = s3cr3t\n", 3, "twice"),
            (
                "[instance:]\napi_host = https://h\napi_key = s3cr3t\n",
                1,
                "needs a name",
            ),
            ("[]\n", 1, "empty section"),
        ];
        for (text, line, words) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e:?}");
            assert!(e.message.contains(words), "{text:?}: {e:?}");
            assert!(!e.message.contains("s3cr3t"), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn read_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rc");
        std::fs::write(&path, "[instance:x]\napi_host = https://h\n").expect("write");
        let e = read(&path).expect_err("no key").to_string();
        assert_eq!(
            e,
            format!("{}:1: [instance:x] has no api_key", path.display())
        );
        let e = read(&dir.path().join("missing")).expect_err("missing");
        assert!(format!("{e:#}").contains("cannot read"), "{e:#}");
    }

    #[test]
    fn an_instance_matches_by_url_role_and_label() {
        let info = |url: &str, role: Role, label: &str| -> TokenInfo {
            serde_json::from_value(serde_json::json!({
                "id": "tw_000001", "url": url, "role": role.as_str(), "label": label,
                "created": "2026-01-01T00:00:00Z", "fingerprint": "00"
            }))
            .expect("token")
        };
        let instance = &parse("[instance:prod]\napi_host=https://h\napi_key=k\n").expect("ok")[0];
        let tokens = [
            info("https://h", Role::Vcs, "prod"),
            info("https://h", Role::Api, "staging"),
            info("https://other", Role::Api, "prod"),
        ];
        assert!(existing(&tokens, instance).is_none());
        let tokens = [info("https://h", Role::Api, "prod")];
        assert!(existing(&tokens, instance).is_some());
    }
}
