package agent

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// resolveOwner finds the checkout's owner (AUTO_UPGRADE_USER, or whoever owns the directory) and how to
// run git as that user: root never writes into a user's checkout, and no "dubious ownership".
func (r *Run) resolveOwner() error {
	cfg := r.S.ConfigPath
	fi, err := os.Stat(cfg)
	if err != nil || !fi.IsDir() {
		return r.fail("%s (AUTO_UPGRADE_CONFIG_PATH) is not a directory", cfg)
	}
	// A stock NixOS system has no git (the timer's unit brings its own; a push session has the system's PATH).
	if _, err := exec.LookPath("git"); err != nil {
		return r.fail("git is not on this host's PATH (%s): nixfleet adds the files it writes to the checkout with git (a flake sees tracked files only). Add it to the host's configuration once (environment.systemPackages = [ pkgs.git ]; in hosts/%s/configuration.nix), rebuild the host (nixos-rebuild switch), then run pulumi up again. Nothing was changed", os.Getenv("PATH"), r.S.FlakeHost)
	}
	r.owner = r.S.Owner
	if r.owner == "" {
		uid := fi.Sys().(*syscall.Stat_t).Uid
		r.owner = "UNKNOWN"
		if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
			r.owner = u.Username
		}
	}
	if _, err := user.Lookup(r.owner); err != nil {
		return r.fail("user %s (owner of %s) does not exist", r.owner, cfg)
	}
	r.ownerHome = homeOf(r.owner)
	r.me = "root"
	if u, err := user.Current(); err == nil {
		r.me = u.Username
	}
	if r.owner == r.me {
		r.git = []string{"git", "-C", cfg}
	} else {
		r.git = []string{"runuser", "-u", r.owner, "--", "env", "HOME=" + r.ownerHome, "git", "-C", cfg}
	}
	return nil
}

// homeOf is the user's home for git's config and ssh keys, from /etc/passwd (where NixOS writes its users);
// "/" when it has none.
func homeOf(name string) string {
	if u, err := user.Lookup(name); err == nil && u.HomeDir != "" {
		return u.HomeDir
	}
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return "/"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 6 && fields[0] == name && fields[5] != "" {
			return fields[5]
		}
	}
	return "/"
}

// asOwner is argv run as the checkout's owner: what is written into the checkout is written by its owner.
func (r *Run) asOwner(argv ...string) []string {
	if r.owner == r.me {
		return argv
	}
	return append([]string{"runuser", "-u", r.owner, "--"}, argv...)
}

// gitArgv is git as the owner in the checkout.
func (r *Run) gitArgv(args ...string) []string {
	return append(append([]string{}, r.git...), args...)
}

// gitRun runs git as the owner, bounded by the commit timeout.
func (r *Run) gitRun(args ...string) (ok bool, res toolResult, err error) {
	res, err = r.tool(r.S.CommitTimeout, r.gitArgv(args...)...)
	return res.OK(), res, err
}

// buildHomeEnv: Nix >= 2.20 reads the checkout with libgit2, which refuses a repository another user owns
// unless the building user's ~/.gitconfig trusts it (it ignores GIT_CONFIG_COUNT and GIT_CONFIG_GLOBAL;
// checked with Nix 2.26). Rather than adding the checkout to root's own ~/.gitconfig for good (a silent,
// global change that would outlive nixfleet), the build gets a HOME of its own in the state dir: its
// .gitconfig includes the real one and trusts exactly this checkout; the XDG dirs stay the real HOME's, so
// Nix's own user config and cache are unchanged. Nothing when the checkout is this user's.
func (r *Run) buildHomeEnv() ([]string, error) {
	if r.owner == r.me {
		return nil, nil
	}
	real := os.Getenv("HOME")
	if real == "" {
		real = "/root"
	}
	home := filepath.Join(r.S.StateDir, "build-home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return nil, err
	}
	text := fmt.Sprintf("# nixfleet: the HOME of its nix builds (see the agent, buildHomeEnv)\n[include]\n\tpath = %s\n[safe]\n\tdirectory = %s\n",
		gitConfigValue(real+"/.gitconfig"), gitConfigValue(r.S.ConfigPath))
	tmp := filepath.Join(home, ".gitconfig.new")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, filepath.Join(home, ".gitconfig")); err != nil {
		return nil, err
	}
	xdg := func(name, fallback string) string {
		if v := os.Getenv(name); v != "" {
			return name + "=" + v
		}
		return name + "=" + real + fallback
	}
	return []string{"HOME=" + home, xdg("XDG_CONFIG_HOME", "/.config"), xdg("XDG_CACHE_HOME", "/.cache"),
		xdg("XDG_DATA_HOME", "/.local/share"), xdg("XDG_STATE_HOME", "/.local/state")}, nil
}

// gitConfigValue quotes a path as a git config value: double-quoted, with '\' and '"' escaped, so a path
// stays data (settings refuse control characters in the config path, the one value a user chooses).
func gitConfigValue(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}
