//! Relays run by the daemon: `relay add` keeps one in the config, the
//! daemon serves it with its own tokens, restarts it with itself, shows its
//! traffic in `status`, and `relay rm` stops it.

mod common;

use common::nginx::GitHttpServer;
use common::TestHome;

#[test]
fn daemon_runs_kept_relays_across_restarts() {
    let server = GitHttpServer::start(&[("alice", "relay-token-Q7")]);
    server.create_repo("team/repo.git");
    let mut home = TestHome::new("file");
    home.start_daemon();
    home.add_token(&server.base_url(), Some("alice"), "relay-token-Q7", &[]);
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let add = home.tokenward(&["relay", "add", &server.base_url(), "--listen", &listen]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let id = String::from_utf8_lossy(&add.stdout)
        .split_whitespace()
        .nth(1)
        .map(|s| s.trim_end_matches(':').to_owned())
        .expect("relay id");

    let clone = |home: &TestHome, dest: &str| {
        home.command("git")
            .args(["-c", "credential.helper=", "clone", "-q"])
            .arg(format!("http://{listen}/team/repo.git"))
            .arg(home.root.path().join(dest))
            .output()
            .expect("git clone")
    };
    let first = clone(&home, "one");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(server.access_log().iter().any(|l| l.user == "alice"));

    home.restart_daemon();
    let second = clone(&home, "two");
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let status = home.status_json();
    let relay = &status["relays"][0];
    assert_eq!(relay["id"], id.as_str());
    assert_eq!(relay["listen"], listen.as_str());
    assert!(relay["requests"].as_u64().unwrap_or(0) >= 2, "{relay}");
    assert!(relay["bytes_down"].as_u64().unwrap_or(0) > 0, "{relay}");

    let rm = home.tokenward(&["relay", "rm", &id]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert!(common::wait_until(
        std::time::Duration::from_secs(5),
        || { std::net::TcpStream::connect(&listen).is_err() }
    ));
    home.restart_daemon();
    let list = home.tokenward(&["relay", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");

    // A relay that cannot bind is refused at add time and not kept.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = busy.local_addr().expect("addr").to_string();
    let refused = home.tokenward(&["relay", "add", &server.base_url(), "--listen", &taken]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot listen"));
    let refused = home.tokenward(&["relay", "add", &server.base_url(), "--listen", "0.0.0.0:0"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("loopback"));
}
