# Homebrew formula template for tokenward. To publish a release, copy it to a
# tap (Formula/tokenward.rb) and fill in url and sha256 for the release
# tarball (`shasum -a 256 tokenward-X.Y.Z.tar.gz`); the rest needs no change.
# Run `brew services start tokenward` to keep the daemon running (launchd);
# without it the git helper starts the daemon on demand.
class Tokenward < Formula
  desc "Scoped access tokens for git and Mercurial, kept in the OS keychain"
  homepage "https://example.invalid/tokenward"
  url "https://example.invalid/tokenward/archive/vX.Y.Z.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license any_of: ["MIT", "Apache-2.0"]

  depends_on "rust" => :build

  def install
    # Both binaries: the CLI/daemon and the small git helper.
    system "cargo", "install", "--locked", *std_cargo_args(path: ".")
    system "cargo", "install", "--locked", *std_cargo_args(path: "helper")
    # The Mercurial extension; `tokenward setup hg` installs its own copy.
    (pkgshare/"hg").install "helper/hg/tokenward.py"
    generate_completions_from_executable(bin/"tokenward", "completions")
    (man1/"tokenward.1").write Utils.safe_popen_read(bin/"tokenward", "man")
  end

  def caveats
    <<~EOS
      Point git at tokenward:
        tokenward setup git --global
      and, for Mercurial:
        tokenward setup hg
      Then add a token (it is read from stdin or a prompt):
        tokenward token add https://your.server --user YOU
      Check everything with:
        tokenward doctor
    EOS
  end

  service do
    run [opt_bin/"tokenward", "daemon"]
    keep_alive successful_exit: false
    log_path var/"log/tokenward.log"
    error_log_path var/"log/tokenward.log"
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/tokenward --version")
    # The helper answers `capability` without a daemon.
    system bin/"git-credential-tokenward", "capability"
    assert_match "_tokenward", shell_output("#{bin}/tokenward completions zsh")
  end
end
