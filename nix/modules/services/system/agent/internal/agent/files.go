package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"nixfleet/agent/internal/decide"
	"nixfleet/agent/internal/settings"
	"nixfleet/agent/internal/tool"
)

type toolResult = tool.Result

var dotSegment = regexp.MustCompile(`(^|/)\.\.?(/|$)`)

func fileSha(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// installFiles checks every staged file before any is written (nothing changes on a refusal), then
// writes them as the owner and `git add`s them.
func (r *Run) installFiles(stage string) error {
	r.enter(PhaseFiles, "Checking and installing files")
	var rels []string
	err := filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(stage, p)
			rels = append(rels, rel)
		}
		return nil
	})
	if err != nil {
		return r.fail("cannot read the stage %s: %v", stage, err)
	}
	sort.Strings(rels)
	if len(rels) == 0 {
		return r.fail("the stage %s holds no files", stage)
	}
	var conflicts, advice []string
	for _, rel := range rels {
		if !settings.RelRE.MatchString(rel) || dotSegment.MatchString(rel) {
			return r.fail("stage file '%s' has a path that is not allowed", tool.Cut(rel, 200))
		}
		dest := filepath.Join(r.S.ConfigPath, rel)
		if !exists(dest) {
			continue
		}
		want, err := fileSha(filepath.Join(stage, rel))
		if err != nil {
			return r.fail("cannot read the staged %s: %v", rel, err)
		}
		cur, err := fileSha(dest)
		if err != nil {
			cur = "unreadable"
		}
		rec := ""
		if b, err := os.ReadFile(filepath.Join(r.P.Pushed, rel+".sha256")); err == nil {
			rec = strings.TrimSpace(string(b))
		}
		switch decide.FileAction(true, cur, want, rec) {
		case decide.FileNotOurs:
			conflicts = append(conflicts, rel+" (not written by nixfleet)")
		case decide.FileEditedOnHost:
			conflicts = append(conflicts, rel+" (edited on the host since nixfleet last wrote it)")
		default:
			continue
		}
		mine := dest + ".mine"
		for exists(mine) {
			mine += ".1"
		}
		advice = append(advice, "mv "+shellQuote(dest)+" "+shellQuote(mine))
	}
	if len(conflicts) > 0 {
		return r.fail("refusing to overwrite: %s; nothing was changed. To keep your version beside it and take nixfleet's, run: %s and run pulumi up again",
			strings.Join(conflicts, ", "), strings.Join(advice, " && "))
	}
	if err := r.recordPending(stage, rels); err != nil {
		return err
	}
	for _, rel := range rels {
		if err := r.installOne(stage, rel); err != nil {
			return err
		}
	}
	res, err := r.tool(r.S.CommitTimeout, r.gitArgv(append([]string{"add", "--"}, rels...)...)...)
	if err != nil {
		return err
	}
	if !res.OK() {
		report("git", res, true)
		return r.fail("git add of the installed files: %s", tool.Summary(res.Out))
	}
	return nil
}

// installOne writes one file atomically (temp file + rename in the same directory), mode from the stage,
// all of it done AS THE OWNER with the host's own tools: root never creates a file in the user's checkout
// (no root-owned file is left if the agent is stopped half way) and never writes through a path the user
// controls. A temp file left by a stopped install is the owner's, and the next install removes it.
func (r *Run) installOne(stage, rel string) error {
	src := filepath.Join(stage, rel)
	dest := filepath.Join(r.S.ConfigPath, rel)
	fi, err := os.Stat(src)
	if err != nil {
		return r.fail("cannot read the staged %s: %v", rel, err)
	}
	mode := fmt.Sprintf("%o", fi.Mode().Perm())
	dir := filepath.Dir(dest)
	step := func(what string, argv ...string) error {
		res, err := r.tool(r.S.CommitTimeout, r.asOwner(argv...)...)
		if err != nil {
			return err
		}
		if !res.OK() {
			report(argv[0], res, true)
			return r.fail("%s as %s: %s", what, r.owner, tool.Summary(res.Out))
		}
		return nil
	}
	if err := step("cannot create "+dir, "mkdir", "-p", "--", dir); err != nil {
		return err
	}
	stale, _ := filepath.Glob(dest + ".nixfleet.??????")
	for _, s := range stale {
		if fi, err := os.Lstat(s); err != nil || !(fi.Mode().IsRegular() || fi.Mode()&fs.ModeSymlink != 0) {
			continue
		}
		if err := step("cannot remove "+s, "rm", "-f", "--", s); err != nil {
			return err
		}
		r.log("auto-upgrade: removed " + s + ", a temp file left by an install that was stopped half way")
	}
	res, err := r.toolSpec(tool.Spec{Bound: secs(r.S.CommitTimeout), Argv: r.asOwner("mktemp", "--", dest+".nixfleet.XXXXXX"), SplitStdout: true})
	if err != nil {
		return err
	}
	if !res.OK() {
		report("mktemp", res, true)
		return r.fail("cannot create a temp file beside %s as %s", dest, r.owner)
	}
	tmp := strings.TrimSpace(string(res.Stdout))
	// The staged file itself is the tool's stdin: the owner cannot open the root-only stage, but `install`
	// can reopen /dev/stdin (a file descriptor root opened).
	content, err := os.Open(src)
	if err != nil {
		return r.fail("cannot read the staged %s: %v", rel, err)
	}
	defer content.Close()
	res, err = r.toolSpec(tool.Spec{Bound: secs(r.S.CommitTimeout), Argv: r.asOwner("install", "-m", mode, "--", "/dev/stdin", tmp), Stdin: content})
	if err != nil {
		return err
	}
	if !res.OK() {
		report("install", res, true)
		return r.fail("cannot write %s as %s", tmp, r.owner)
	}
	if err := step("cannot move "+tmp+" to "+dest, "mv", "-f", "--", tmp, dest); err != nil {
		return err
	}
	sum, err := fileSha(dest)
	if err == nil {
		rec := filepath.Join(r.P.Pushed, rel+".sha256")
		if err = os.MkdirAll(filepath.Dir(rec), 0o755); err == nil {
			err = os.WriteFile(rec, []byte(sum+"\n"), 0o644)
		}
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return r.fail("cannot record what was written to %s: %v", rel, err)
	}
	return nil
}
