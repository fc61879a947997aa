package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"nixfleet/agent/internal/decide"
	"nixfleet/agent/internal/tool"
)

// pull (timer): fetch, then fast-forward. A checkout ahead of the remote (unpushed commit-back commits)
// stays as it is; a diverged one is rebased only on a commit-back host (its own commits), never reset.
func (r *Run) pull() error {
	// The contract's phase for getting the config is "files" (push: installing them; timer: git pull).
	r.enter(PhaseFiles, fmt.Sprintf("Pulling %s %s", r.S.Remote, r.S.Branch))
	ok, res, err := r.gitRun("fetch", "--quiet", "--", r.S.Remote, r.S.Branch)
	if err != nil {
		return err
	}
	if !ok {
		report("git", res, false)
		r.warn(fmt.Sprintf("cannot fetch %s %s (%s); building the checkout as it is", r.S.Remote, r.S.Branch, tool.Summary(res.Out)))
		r.remoteOK = false
		return nil
	}
	rel, err := r.relation()
	if err != nil {
		return err
	}
	switch decide.PullAction(rel, r.S.Commit) {
	case decide.PullFastForward:
		ok, res, err := r.gitRun("merge", "--ff-only", "--quiet", "FETCH_HEAD")
		if err != nil {
			return err
		}
		if !ok {
			report("git", res, false)
			return r.fail("git merge --ff-only FETCH_HEAD: %s", tool.Summary(res.Out))
		}
	case decide.PullRefuse:
		return r.fail("the checkout %s has diverged from %s/%s and commit-back is off: reconcile it by hand (git -C %s status)", r.S.ConfigPath, r.S.Remote, r.S.Branch, shellQuote(r.S.ConfigPath))
	case decide.PullRebase:
		why, err := r.rebaseOntoFetched()
		if err != nil {
			return err
		}
		if why != "" {
			return r.fail("%s", why)
		}
	}
	return nil
}

// ancestor: `git merge-base --is-ancestor a b`.
func (r *Run) ancestor(a, b string) (bool, error) {
	ok, _, err := r.gitRun("merge-base", "--is-ancestor", a, b)
	return ok, err
}

func (r *Run) relation() (decide.Sync, error) {
	fetchInHead, err := r.ancestor("FETCH_HEAD", "HEAD")
	if err != nil || fetchInHead {
		return decide.SyncUpToDate, err
	}
	headInFetch, err := r.ancestor("HEAD", "FETCH_HEAD")
	return decide.Relation(false, headInFetch), err
}

// rebaseOntoFetched (commit-back host, diverged): replays its own commits on the remote; a conflict is
// undone and its reason returned.
func (r *Run) rebaseOntoFetched() (string, error) {
	ok, res, err := r.gitRun("rebase", "--autostash", "FETCH_HEAD")
	if err != nil || ok {
		return "", err
	}
	report("git", res, false)
	files := ""
	if diff, err := r.toolSpec(toolSpecOut(r.S.CommitTimeout, r.gitArgv("diff", "--name-only", "--diff-filter=U")...)); err == nil {
		names := strings.Fields(string(diff.Stdout))
		if len(names) > 5 {
			names = names[:5]
		}
		if len(names) > 0 {
			files = " in " + strings.Join(names, " ")
		}
	} else {
		return "", err
	}
	if _, _, err := r.gitRun("rebase", "--abort"); err != nil {
		return "", err
	}
	return fmt.Sprintf("commit-back: rebase onto %s/%s hit a conflict%s: resolve it in %s as %s (git pull --rebase %s %s), then run again",
		r.S.Remote, r.S.Branch, files, r.S.ConfigPath, r.owner, r.S.Remote, r.S.Branch), nil
}

// commitBack commits tracked changes and pushes them; "" means done (a remote that cannot be reached is a
// warning: the commits stay and the next run pushes them), otherwise the loud reason.
func (r *Run) commitBack() (string, error) {
	if !r.S.Commit {
		return "", nil
	}
	r.enter(PhaseCommit, fmt.Sprintf("Commit-back to %s %s", r.S.Remote, r.S.Branch))
	ok, res, err := r.gitRun("add", "-u")
	if err != nil {
		return "", err
	}
	if !ok {
		report("git", res, false)
		return "git add -u: " + tool.Summary(res.Out), nil
	}
	if err := r.unstageHostEdits(); err != nil {
		return "", err
	}
	clean, _, err := r.gitRun("diff", "--cached", "--quiet")
	if err != nil {
		return "", err
	}
	if !clean {
		msg := fmt.Sprintf("chore(%s): auto-update %s", r.S.FlakeHost, time.Now().UTC().Format("2006-01-02T15:04:05Z"))
		ok, res, err := r.gitRun("commit", "--quiet", "-m", msg)
		if err != nil {
			return "", err
		}
		if !ok {
			report("git", res, false)
			return "git commit: " + tool.Summary(res.Out), nil
		}
	}
	var last tool.Result
	for i := 0; i < 3; i++ {
		ok, res, err := r.gitRun("fetch", "--quiet", "--", r.S.Remote, r.S.Branch)
		if err != nil {
			return "", err
		}
		if !ok {
			report("git", res, false)
			r.warn(fmt.Sprintf("commit-back: cannot fetch %s %s (%s); local commits are kept and pushed by a later run", r.S.Remote, r.S.Branch, tool.Summary(res.Out)))
			return "", nil
		}
		headInFetch, err := r.ancestor("HEAD", "FETCH_HEAD")
		if err != nil {
			return "", err
		}
		fetchInHead := false
		if !headInFetch {
			if fetchInHead, err = r.ancestor("FETCH_HEAD", "HEAD"); err != nil {
				return "", err
			}
		}
		switch decide.PushAction(headInFetch, fetchInHead) {
		case decide.PushNothing:
			return "", nil
		case decide.PushAfterRebase:
			why, err := r.rebaseOntoFetched()
			if err != nil || why != "" {
				return why, err
			}
		}
		ok, last, err = r.gitRun("push", "--quiet", "--", r.S.Remote, "HEAD:refs/heads/"+r.S.Branch)
		if err != nil {
			return "", err
		}
		if ok {
			r.log(fmt.Sprintf("=== Commit-back PASSED: pushed to %s %s ===", r.S.Remote, r.S.Branch))
			return "", nil
		}
		report("git", last, false)
	}
	r.warn(fmt.Sprintf("commit-back: git push to %s %s failed (%s); local commits are kept and pushed by a later run", r.S.Remote, r.S.Branch, tool.Summary(last.Out)))
	return "", nil
}

// unstageHostEdits: a nixfleet-managed file whose content differs from what nixfleet last wrote is a host
// edit: it stays in the working tree and is never committed back (other hosts of the role would get it).
func (r *Run) unstageHostEdits() error {
	var recs []string
	_ = filepath.WalkDir(r.P.Pushed, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".sha256") {
			recs = append(recs, p)
		}
		return nil
	})
	for _, rec := range recs {
		rel := strings.TrimSuffix(strings.TrimPrefix(rec, r.P.Pushed+"/"), ".sha256")
		want, err := os.ReadFile(rec)
		if err != nil {
			continue
		}
		// Not in the index (deleted, e.g. moved away to .mine): a host edit too, never committed back.
		sha := "absent"
		res, err := r.toolSpec(toolSpecOut(r.S.CommitTimeout, r.gitArgv("show", ":"+rel)...))
		if err != nil {
			return err
		}
		if res.OK() {
			s := sha256.Sum256(res.Stdout)
			sha = hex.EncodeToString(s[:])
		}
		if sha == strings.TrimSpace(string(want)) {
			continue
		}
		staged, _, err := r.gitRun("diff", "--cached", "--quiet", "--", rel)
		if err != nil {
			return err
		}
		if !staged {
			if _, _, err := r.gitRun("reset", "--quiet", "--", rel); err != nil {
				return err
			}
			r.warn(fmt.Sprintf("commit-back: %s was edited on the host; nixfleet manages it, so the edit is not committed back", rel))
		}
	}
	return nil
}

// finishCommit runs commit-back and writes the run's final record.
func (r *Run) finishCommit() error {
	r.acceptPush()
	why, err := r.commitBack()
	if err != nil {
		return err
	}
	r.final = true
	if why == "" {
		r.Phase = PhaseDone
		msg := "upgrade PASSED: running " + r.sys
		if len(r.warnings) > 0 {
			msg += fmt.Sprintf(" (warnings: %d)", len(r.warnings))
		}
		r.log("=== " + msg + " ===")
		r.writeStatus("success", msg)
		return nil
	}
	tail := fmt.Sprintf("(the upgrade itself succeeded: the host runs %s, profile and boot entry set)", r.sys)
	r.log(fmt.Sprintf("=== Commit-back FAILED: %s %s ===", why, tail))
	r.writeStatus("failed", fmt.Sprintf("commit-back FAILED: %s %s", why, tail))
	return &Error{Phase: r.Phase, Kind: CommitFailed, Why: why, Reported: true}
}
