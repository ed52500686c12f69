//! Property tests of token matching (SPEC "Token model", rules 1–4): a token
//! is never returned for a request that differs from its scope in scheme,
//! host, port, username or path (other than by extending the path below
//! the scope), while the same request unperturbed does get it, so that
//! every "no" is the rule at work and not a generator that never matches.

use proptest::prelude::*;
use time::macros::datetime;
use time::OffsetDateTime;
use tokenward::token::{self, AuthKind, Role, TokenMeta, TokenState};

const NOW: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

/// A token's scope and owner, in parts.
#[derive(Debug, Clone)]
struct Scope {
    scheme: &'static str,
    host: String,
    /// `None`: the scheme's default port, left out of the URL.
    port: Option<u16>,
    path: Vec<String>,
    username: String,
}

impl Scope {
    fn url(&self) -> String {
        let mut url = format!("{}://{}", self.scheme, self.host);
        if let Some(port) = self.port {
            url.push_str(&format!(":{port}"));
        }
        for component in &self.path {
            url.push('/');
            url.push_str(component);
        }
        url
    }

    fn effective_port(&self) -> u16 {
        self.port.unwrap_or(default_port(self.scheme))
    }

    fn token(&self) -> TokenMeta {
        TokenMeta {
            id: "tw_prop01".to_owned(),
            url: self.url(),
            username: Some(self.username.clone()),
            role: Role::Vcs,
            expires: None,
            label: String::new(),
            auth: AuthKind::Basic,
            state: TokenState::Active,
            rejected_at: None,
            rejected_reason: None,
            created: datetime!(2026-11-01 00:00 UTC),
            last_used: None,
        }
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// A request in the parts git sends: protocol, host[:port], path, username.
#[derive(Debug, Clone)]
struct Ask {
    protocol: String,
    host: String,
    port: Option<u16>,
    path: Vec<String>,
    username: Option<String>,
}

impl Ask {
    fn host_port(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    fn select(&self, tokens: &[TokenMeta]) -> Option<String> {
        let path = self.path.join("/");
        let request = token::Request::new(
            &self.protocol,
            &self.host_port(),
            Some(&path),
            self.username.as_deref(),
        )?;
        token::select(tokens, &request, Role::Vcs, NOW).map(|t| t.id.clone())
    }
}

fn label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,6}"
}

fn component() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{1,6}"
}

fn scope() -> impl Strategy<Value = Scope> {
    (
        prop_oneof![Just("http"), Just("https")],
        prop::collection::vec(label(), 1..4),
        prop_oneof![
            Just(None),
            (1u16..=65535).prop_map(Some),
            Just(Some(80)),
            Just(Some(443))
        ],
        prop::collection::vec(component(), 0..4),
        "[a-z]{1,8}",
    )
        .prop_map(|(scheme, labels, port, path, username)| Scope {
            scheme,
            host: labels.join("."),
            port,
            path,
            username,
        })
}

/// A request that the scope covers: the same target written the ways git
/// may write it (host case, explicit default port, `.git` suffix, deeper
/// path, with or without the username).
fn covered(scope: &Scope) -> impl Strategy<Value = Ask> {
    let scope = scope.clone();
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(component(), 0..3),
        any::<bool>(),
    )
        .prop_map(move |(upper, explicit_port, git_suffix, deeper, named)| {
            let mut path = scope.path.clone();
            if git_suffix {
                if let Some(last) = path.last_mut() {
                    last.push_str(".git");
                }
            }
            path.extend(deeper);
            Ask {
                protocol: scope.scheme.to_owned(),
                host: if upper {
                    scope.host.to_ascii_uppercase()
                } else {
                    scope.host.clone()
                },
                port: if explicit_port || scope.port.is_some() {
                    Some(scope.effective_port())
                } else {
                    None
                },
                path,
                username: named.then(|| scope.username.clone()),
            }
        })
}

/// How a covered request is changed into one the token must not answer.
#[derive(Debug, Clone)]
enum Perturb {
    Scheme,
    /// Insert a character into the host at this (wrapped) position.
    Host(usize, char),
    /// Another effective port.
    Port(u16),
    /// Ask in another user's name.
    Username(String),
    /// Change this (wrapped) component of the scope's path.
    PathComponent(usize, String),
    /// Cut the path above the scope's.
    PathShorter(usize),
}

fn perturb() -> impl Strategy<Value = Perturb> {
    prop_oneof![
        Just(Perturb::Scheme),
        (
            any::<usize>(),
            prop::char::ranges(vec!['a'..='z', '0'..='9'].into())
        )
            .prop_map(|(i, c)| Perturb::Host(i, c)),
        (1u16..=65535).prop_map(Perturb::Port),
        "[a-z]{1,8}".prop_map(Perturb::Username),
        (any::<usize>(), "[a-z0-9]{1,3}").prop_map(|(i, s)| Perturb::PathComponent(i, s)),
        any::<usize>().prop_map(Perturb::PathShorter),
    ]
}

/// Applies `change` to `ask`; `None` when it would not make a different
/// target (same port drawn, same name drawn, no path to change).
fn apply(scope: &Scope, mut ask: Ask, change: &Perturb) -> Option<Ask> {
    match change {
        Perturb::Scheme => {
            ask.protocol = if ask.protocol == "https" {
                "http"
            } else {
                "https"
            }
            .to_owned();
            // Keep the port the token names, so that only the scheme differs
            // (and, where the token relied on its default, the port too).
            ask.port = Some(scope.effective_port());
        }
        Perturb::Host(at, c) => {
            let at = at % (ask.host.len() + 1);
            ask.host.insert(at, *c);
        }
        Perturb::Port(port) => {
            if *port == scope.effective_port() {
                return None;
            }
            ask.port = Some(*port);
        }
        Perturb::Username(name) => {
            if *name == scope.username {
                return None;
            }
            ask.username = Some(name.clone());
        }
        Perturb::PathComponent(at, suffix) => {
            if scope.path.is_empty() {
                return None;
            }
            let at = at % scope.path.len();
            // Appending keeps it a valid component and never turns `x`
            // into `x.git` (suffixes have no dot).
            ask.path[at].push_str(suffix);
        }
        Perturb::PathShorter(keep) => {
            if scope.path.is_empty() {
                return None;
            }
            ask.path.truncate(keep % scope.path.len());
        }
    }
    Some(ask)
}

fn scope_and_ask() -> impl Strategy<Value = (Scope, Ask)> {
    scope().prop_flat_map(|scope| {
        let asks = covered(&scope);
        (Just(scope), asks)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The unperturbed request gets the token: the generators are sound.
    #[test]
    fn a_covered_request_gets_the_token((scope, ask) in scope_and_ask()) {
        let tokens = [scope.token()];
        prop_assert_eq!(ask.select(&tokens), Some("tw_prop01".to_owned()), "{} for {:?}", scope.url(), ask);
    }

    /// One difference in scheme, host, port, username or path, and the
    /// token is not returned.
    #[test]
    fn a_perturbed_request_never_gets_the_token((scope, ask) in scope_and_ask(), change in perturb()) {
        let Some(ask) = apply(&scope, ask, &change) else {
            return Ok(());
        };
        let tokens = [scope.token()];
        prop_assert_eq!(ask.select(&tokens), None, "{} answered {:?} after {:?}", scope.url(), ask, change);
    }

    /// Among many tokens, whatever is selected fits the request exactly.
    #[test]
    fn whatever_is_selected_fits(scopes in prop::collection::vec(scope(), 1..8), pick in any::<usize>(), change in perturb()) {
        let tokens: Vec<TokenMeta> = scopes
            .iter()
            .enumerate()
            .map(|(i, s)| TokenMeta { id: format!("tw_{i:06}"), ..s.token() })
            .collect();
        let base = &scopes[pick % scopes.len()];
        let ask = Ask {
            protocol: base.scheme.to_owned(),
            host: base.host.clone(),
            port: Some(base.effective_port()),
            path: base.path.clone(),
            username: Some(base.username.clone()),
        };
        let ask = apply(base, ask.clone(), &change).unwrap_or(ask);
        if let Some(id) = ask.select(&tokens) {
            let index: usize = id.trim_start_matches("tw_").parse().map_err(|_| TestCaseError::fail("id"))?;
            let chosen = &scopes[index];
            prop_assert_eq!(chosen.scheme, ask.protocol.as_str());
            prop_assert!(chosen.host.eq_ignore_ascii_case(&ask.host));
            prop_assert_eq!(chosen.effective_port(), ask.port.unwrap_or(default_port(&ask.protocol)));
            prop_assert_eq!(Some(&chosen.username), ask.username.as_ref());
            prop_assert!(chosen.path.len() <= ask.path.len());
            for (mine, theirs) in chosen.path.iter().zip(&ask.path) {
                prop_assert_eq!(mine.trim_end_matches(".git"), theirs.trim_end_matches(".git"));
            }
        }
    }
}
