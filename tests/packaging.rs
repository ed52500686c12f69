//! The packaging files: `packaging/check.sh --no-deb` verifies the systemd
//! user units with `systemd-analyze --user verify` (including the man page
//! they name), parses the launchd plist and, where ruby is installed, the
//! Homebrew formula. The .deb build needs a release build and runs only
//! from `packaging/check.sh` itself.

mod common;

use std::process::Command;

#[test]
fn units_plist_and_formula_check_out() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{repo}/packaging/check.sh"))
        .arg("--no-deb")
        .env("TOKENWARD_BIN", common::tokenward_bin())
        .current_dir(repo)
        .output()
        .expect("run packaging/check.sh");
    assert!(
        out.status.success(),
        "packaging/check.sh --no-deb failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
