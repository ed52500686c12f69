//! `tokenward setup hg` and `tokenward unsetup hg`: install the Mercurial
//! extension (helper/hg/tokenward.py, built into this binary) in the data
//! dir and enable it in the user's hgrc.
//!
//! The hgrc is the one hg reads for the user: `~/.hgrc` when it exists, else
//! `$XDG_CONFIG_HOME/hg/hgrc` (`~/.config/hg/hgrc`) when it exists, else a
//! new `~/.hgrc`. Setup appends a block between marker comments:
//!
//! ```text
//! # BEGIN tokenward (added by `tokenward setup hg`; removed by `tokenward unsetup hg`)
//! [extensions]
//! tokenward = /home/alice/.local/share/tokenward/hg/tokenward.py
//! # END tokenward
//! ```
//!
//! A second setup rewrites that block in place (the path may have moved);
//! unsetup removes exactly those lines from whichever of the two files holds
//! them, and keeps every other byte of the file (setup only adds a final
//! newline to a file that had none).

use crate::atomic::write_atomic;
use crate::config::Dirs;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The extension's source, installed by [`install_extension`].
pub const EXTENSION_SOURCE: &str = include_str!("../helper/hg/tokenward.py");

const BEGIN: &str = "# BEGIN tokenward";
const END: &str = "# END tokenward";

/// Where the extension is installed: `hg/tokenward.py` in the data dir.
pub fn default_extension_path() -> PathBuf {
    let data = Dirs::resolve()
        .map(|dirs| dirs.data)
        .unwrap_or_else(|_| std::env::temp_dir().join("tokenward"));
    data.join("hg").join("tokenward.py")
}

/// Writes the built-in extension to `dest` (creating its directory), so that
/// the hgrc can point at it.
pub fn install_extension(dest: &Path) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomic(dest, EXTENSION_SOURCE.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", dest.display()))
}

/// Enables the extension at `extension_path` in the user's hgrc. Returns
/// what was done, for the CLI to print.
pub fn setup_hg(extension_path: &Path) -> Result<String> {
    HgUser::from_env()?.setup(extension_path)
}

/// Removes what [`setup_hg`] added.
pub fn unsetup_hg() -> Result<String> {
    HgUser::from_env()?.unsetup()
}

/// [`setup_hg`] for the user whose home is `home` (and XDG config dir, if
/// not `home/.config`): for tests and for installers working for a user.
pub fn setup_hg_for(
    home: &Path,
    xdg_config_home: Option<&Path>,
    extension_path: &Path,
) -> Result<String> {
    HgUser::new(home, xdg_config_home).setup(extension_path)
}

/// [`unsetup_hg`] for the user whose home is `home`.
pub fn unsetup_hg_for(home: &Path, xdg_config_home: Option<&Path>) -> Result<String> {
    HgUser::new(home, xdg_config_home).unsetup()
}

/// The two user hgrc files hg reads on Unix.
struct HgUser {
    home_hgrc: PathBuf,
    xdg_hgrc: PathBuf,
}

impl HgUser {
    fn from_env() -> Result<HgUser> {
        let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
            bail!("HOME is not set: cannot find the user's hgrc");
        };
        // hg ignores a relative XDG_CONFIG_HOME, as the XDG spec says.
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        Ok(HgUser::new(Path::new(&home), config.as_deref()))
    }

    fn new(home: &Path, xdg_config_home: Option<&Path>) -> HgUser {
        let config = xdg_config_home.map_or_else(|| home.join(".config"), Path::to_owned);
        HgUser {
            home_hgrc: home.join(".hgrc"),
            xdg_hgrc: config.join("hg").join("hgrc"),
        }
    }

    /// The file setup writes to: a file that already holds our block, else
    /// ~/.hgrc if it exists, else the XDG hgrc if it exists, else ~/.hgrc.
    fn target(&self) -> Result<PathBuf> {
        for path in [&self.home_hgrc, &self.xdg_hgrc] {
            if read(path)?.is_some_and(|text| find_block(&text).is_some()) {
                return Ok(path.clone());
            }
        }
        if self.home_hgrc.exists() || !self.xdg_hgrc.exists() {
            Ok(self.home_hgrc.clone())
        } else {
            Ok(self.xdg_hgrc.clone())
        }
    }

    fn setup(&self, extension_path: &Path) -> Result<String> {
        let Some(extension) = extension_path
            .to_str()
            .filter(|p| !p.contains(['\n', '\r']))
        else {
            bail!(
                "the extension path {} cannot be written in an hgrc",
                extension_path.display()
            );
        };
        let target = self.target()?;
        let text = read(&target)?.unwrap_or_default();
        let block = format!(
            "{BEGIN} (added by `tokenward setup hg`; removed by `tokenward unsetup hg`)\n\
             [extensions]\ntokenward = {extension}\n{END}\n"
        );
        let updated = match find_block(&text) {
            Some((start, end)) if text[start..end] == block => {
                return Ok(format!(
                    "hg already uses the tokenward extension ({})",
                    target.display()
                ));
            }
            Some((start, end)) => format!("{}{block}{}", &text[..start], &text[end..]),
            None if text.is_empty() || text.ends_with('\n') => format!("{text}{block}"),
            None => format!("{text}\n{block}"),
        };
        write(&target, &updated)?;
        Ok(format!(
            "enabled the tokenward extension ({extension}) in {}",
            target.display()
        ))
    }

    fn unsetup(&self) -> Result<String> {
        let mut done = Vec::new();
        for path in [&self.home_hgrc, &self.xdg_hgrc] {
            let Some(text) = read(path)? else { continue };
            let Some((start, end)) = find_block(&text) else {
                continue;
            };
            write(path, &format!("{}{}", &text[..start], &text[end..]))?;
            done.push(path.display().to_string());
        }
        if done.is_empty() {
            Ok("the tokenward extension was not enabled in any hgrc".to_owned())
        } else {
            Ok(format!(
                "removed the tokenward extension from {}",
                done.join(" and ")
            ))
        }
    }
}

/// The byte range of our block: from the BEGIN line to the end of the END line.
fn find_block(text: &str) -> Option<(usize, usize)> {
    let mut offset = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        if start.is_none() && trimmed.starts_with(BEGIN) {
            start = Some(offset);
        } else if start.is_some() && trimmed == END {
            return start.map(|s| (s, offset + line.len()));
        }
        offset += line.len();
    }
    None
}

fn read(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the file atomically, through a symlink (dotfile managers) and
/// keeping its permissions.
fn write(path: &Path, text: &str) -> Result<()> {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mode = mode_of(&real).unwrap_or(0o644);
    if let Some(dir) = real.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomic(&real, text.as_bytes(), mode)
        .with_context(|| format!("cannot write {}", real.display()))
}

#[cfg(unix)]
fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn mode_of(_path: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn user(home: &Path) -> HgUser {
        HgUser::new(home, None)
    }

    #[test]
    fn creates_home_hgrc_when_there_is_none_and_removes_it_cleanly() {
        let home = tempfile::tempdir().expect("tempdir");
        let u = user(home.path());
        let ext = Path::new("/opt/tw/tokenward.py");
        let said = u.setup(ext).expect("setup");
        assert!(said.contains(".hgrc"), "{said}");
        let text = fs::read_to_string(home.path().join(".hgrc")).expect("hgrc");
        assert!(
            text.contains("[extensions]\ntokenward = /opt/tw/tokenward.py\n"),
            "{text}"
        );
        assert!(!home.path().join(".config/hg/hgrc").exists());
        u.unsetup().expect("unsetup");
        assert_eq!(
            fs::read_to_string(home.path().join(".hgrc")).expect("hgrc"),
            ""
        );
    }

    #[test]
    fn keeps_everything_else_and_is_idempotent() {
        let home = tempfile::tempdir().expect("tempdir");
        let hgrc = home.path().join(".hgrc");
        let original = "[ui]\nusername = Alice <a@example.com>\n\n[extensions]\nrebase =\n";
        fs::write(&hgrc, original).expect("write");
        let u = user(home.path());
        u.setup(Path::new("/a/tokenward.py")).expect("setup");
        let once = fs::read_to_string(&hgrc).expect("read");
        assert!(once.starts_with(original));
        let again = u.setup(Path::new("/a/tokenward.py")).expect("setup again");
        assert!(again.contains("already"), "{again}");
        assert_eq!(fs::read_to_string(&hgrc).expect("read"), once);
        // a moved extension is updated in place, not added twice
        u.setup(Path::new("/b/tokenward.py")).expect("setup moved");
        let moved = fs::read_to_string(&hgrc).expect("read");
        assert_eq!(moved.matches(BEGIN).count(), 1);
        assert!(moved.contains("tokenward = /b/tokenward.py") && !moved.contains("/a/"));
        // the user edits after the block survive unsetup
        fs::write(&hgrc, format!("{moved}[paths]\ndefault = https://h/r\n")).expect("append");
        u.unsetup().expect("unsetup");
        assert_eq!(
            fs::read_to_string(&hgrc).expect("read"),
            format!("{original}[paths]\ndefault = https://h/r\n")
        );
        let nothing = u.unsetup().expect("unsetup twice");
        assert!(nothing.contains("not enabled"), "{nothing}");
    }

    #[test]
    fn file_without_final_newline_gets_one() {
        let home = tempfile::tempdir().expect("tempdir");
        let hgrc = home.path().join(".hgrc");
        fs::write(&hgrc, "[ui]\nverbose = true").expect("write");
        let u = user(home.path());
        u.setup(Path::new("/x/tokenward.py")).expect("setup");
        let text = fs::read_to_string(&hgrc).expect("read");
        assert!(
            text.starts_with("[ui]\nverbose = true\n# BEGIN tokenward"),
            "{text}"
        );
        u.unsetup().expect("unsetup");
        assert_eq!(
            fs::read_to_string(&hgrc).expect("read"),
            "[ui]\nverbose = true\n"
        );
    }

    #[test]
    fn uses_the_xdg_hgrc_when_only_it_exists() {
        let home = tempfile::tempdir().expect("tempdir");
        let xdg = home.path().join("xdg");
        let hgrc = xdg.join("hg/hgrc");
        fs::create_dir_all(hgrc.parent().expect("dir")).expect("mkdir");
        fs::write(&hgrc, "[ui]\n").expect("write");
        let u = HgUser::new(home.path(), Some(&xdg));
        u.setup(Path::new("/x/tokenward.py")).expect("setup");
        assert!(!home.path().join(".hgrc").exists());
        assert!(fs::read_to_string(&hgrc)
            .expect("read")
            .contains("tokenward = /x/tokenward.py"));
        // once ~/.hgrc appears, setup still updates the block where it is
        fs::write(home.path().join(".hgrc"), "").expect("write");
        u.setup(Path::new("/y/tokenward.py")).expect("setup");
        assert_eq!(
            fs::read_to_string(home.path().join(".hgrc")).expect("read"),
            ""
        );
        u.unsetup().expect("unsetup");
        assert_eq!(fs::read_to_string(&hgrc).expect("read"), "[ui]\n");
    }

    #[cfg(unix)]
    #[test]
    fn keeps_mode_and_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().expect("tempdir");
        let real = home.path().join("dotfiles-hgrc");
        fs::write(&real, "[ui]\n").expect("write");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&real, home.path().join(".hgrc")).expect("symlink");
        user(home.path())
            .setup(Path::new("/x/tokenward.py"))
            .expect("setup");
        assert!(fs::symlink_metadata(home.path().join(".hgrc"))
            .expect("meta")
            .file_type()
            .is_symlink());
        assert!(fs::read_to_string(&real)
            .expect("read")
            .contains("tokenward ="));
        assert_eq!(
            fs::metadata(&real).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn refuses_a_path_with_a_newline() {
        let home = tempfile::tempdir().expect("tempdir");
        assert!(user(home.path()).setup(Path::new("/x\n[hooks]\n")).is_err());
        assert!(!home.path().join(".hgrc").exists());
    }

    #[test]
    fn installs_the_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("data/hg/tokenward.py");
        install_extension(&dest).expect("install");
        let text = fs::read_to_string(&dest).expect("read");
        assert!(text.contains("def extsetup(ui)"));
    }
}
