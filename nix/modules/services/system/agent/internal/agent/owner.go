package agent

import (
	"bufio"
	"os"
	"os/user"
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
