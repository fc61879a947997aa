package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"nixfleet/agent/internal/decide"
	"nixfleet/agent/internal/tool"
)

// A push's files are "pending" from their install until the push is confirmed (or found unchanged). The
// record, $STATE_DIR/pending, holds what each file and its index entry were before the install: the last
// confirmed state. A push that is rolled back, refused or fails puts them back (decide.RestoreFiles), so the
// host's own timer, which builds whatever the checkout holds, never activates what was rejected; the
// rejected files are kept in $STATE_DIR/rejected/<rollout>/ for inspection.

type pendingFile struct {
	Rel       string `json:"rel"`
	Existed   bool   `json:"existed"`   // the file was in the checkout before the install (its content: before/<rel>)
	HadRecord bool   `json:"hadRecord"` // nixfleet's record of it existed (its content: records/<rel>.sha256)
	Written   string `json:"written"`   // sha256 of what the install wrote
}

type pendingRecord struct {
	Rollout string        `json:"rollout"`
	System  string        `json:"system"` // the validated system, once built ("" before)
	Files   []pendingFile `json:"files"`
}

func (r *Run) pendingManifest() string { return filepath.Join(r.P.Pending, "manifest.json") }

func readPending(p string) (pendingRecord, bool) {
	var rec pendingRecord
	b, err := os.ReadFile(p)
	if err != nil || json.Unmarshal(b, &rec) != nil || rec.Rollout == "" {
		return rec, false
	}
	return rec, true
}

func (r *Run) writePending(rec pendingRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := r.pendingManifest() + ".new"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, r.pendingManifest())
}

// copyFile copies src to dst, both inside the state dir (root's own), keeping src's permission bits.
func copyFile(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, fi.Mode().Perm())
}

// copyFromCheckout copies the checkout's file rel to dst (root, inside the state dir). The checkout is the
// user's: root opens each component of rel with O_NOFOLLOW from the checkout's own directory and takes only
// a regular file, so a file or directory swapped for a symlink (say to a root-only file) is refused rather
// than copied, and later put back into the checkout for the user to read.
func (r *Run) copyFromCheckout(rel, dst string) error {
	fd, err := syscall.Open(r.S.ConfigPath, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", r.S.ConfigPath, err)
	}
	parts := strings.Split(rel, "/")
	for i, part := range parts {
		flags := syscall.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_CLOEXEC
		if i < len(parts)-1 {
			flags |= syscall.O_DIRECTORY
		}
		next, err := syscall.Openat(fd, part, flags, 0)
		syscall.Close(fd)
		if err != nil {
			return fmt.Errorf("%s: not a regular file or directory reached without symlinks (%w)", strings.Join(parts[:i+1], "/"), err)
		}
		fd = next
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", rel)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, fi.Mode().Perm())
}

// recordPending keeps, before the install writes anything, each file's content, nixfleet's record of it and
// the index entries of all of them. The manifest is written last: a record without one is no record.
func (r *Run) recordPending(stage string, rels []string) error {
	if err := os.RemoveAll(r.P.Pending); err != nil {
		return r.fail("cannot clear %s: %v", r.P.Pending, err)
	}
	if err := os.MkdirAll(r.P.Pending, 0o755); err != nil {
		return r.fail("cannot create %s (nothing was changed): %v", r.P.Pending, err)
	}
	rec := pendingRecord{Rollout: r.Token}
	for _, rel := range rels {
		want, err := fileSha(filepath.Join(stage, rel))
		if err != nil {
			return r.fail("cannot read the staged %s: %v", rel, err)
		}
		f := pendingFile{Rel: rel, Written: want}
		dest := filepath.Join(r.S.ConfigPath, rel)
		if exists(dest) {
			if err := r.copyFromCheckout(rel, filepath.Join(r.P.Pending, "before", rel)); err != nil {
				return r.fail("cannot keep the current %s before installing (nothing was changed): %v", rel, err)
			}
			f.Existed = true
		}
		if recFile := filepath.Join(r.P.Pushed, rel+".sha256"); exists(recFile) {
			if err := copyFile(recFile, filepath.Join(r.P.Pending, "records", rel+".sha256")); err != nil {
				return r.fail("cannot keep nixfleet's record of %s (nothing was changed): %v", rel, err)
			}
			f.HadRecord = true
		}
		rec.Files = append(rec.Files, f)
	}
	res, err := r.toolSpec(toolSpecOut(r.S.CommitTimeout, r.gitArgv(append([]string{"ls-files", "--stage", "-z", "--"}, rels...)...)...))
	if err != nil {
		return err
	}
	if !res.OK() {
		report("git", res, true)
		return r.fail("git ls-files of the files to install (nothing was changed): %s", tool.Summary(res.Out))
	}
	if err := os.WriteFile(filepath.Join(r.P.Pending, "index"), res.Stdout, 0o644); err != nil {
		return r.fail("cannot keep the index entries (nothing was changed): %v", err)
	}
	if err := r.writePending(rec); err != nil {
		return r.fail("cannot write %s (nothing was changed): %v", r.pendingManifest(), err)
	}
	return nil
}

// notePendingSystem notes the validated system in this push's record: a later run accepts the push only if
// the host then runs it as its profile too.
func (r *Run) notePendingSystem() error {
	if rec, ok := readPending(r.pendingManifest()); ok && rec.Rollout == r.Token {
		rec.System = r.sys
		if err := r.writePending(rec); err != nil {
			r.log("auto-upgrade: cannot note the system in " + r.pendingManifest() + ": " + err.Error())
		}
	}
	return nil
}

// acceptPush: this push was confirmed (or changed nothing): its files are the new confirmed state.
func (r *Run) acceptPush() {
	if r.Mode != "push" {
		return
	}
	if rec, ok := readPending(r.pendingManifest()); ok && rec.Rollout == r.Token {
		_ = os.RemoveAll(r.P.Pending)
	}
}

// endPush applies decide.RestoreFiles to this run's push; it returns the sentence for the failure message
// ("" when nothing was restored). Only a holder of the lease touches the checkout.
func (r *Run) endPush(o decide.Outcome) string {
	if r.Mode != "push" || r.lease == nil || !r.lease.Holds() || !decide.RestoreFiles(o) {
		return ""
	}
	rec, ok := readPending(r.pendingManifest())
	if !ok || rec.Rollout != r.Token {
		return ""
	}
	return r.restorePending(rec)
}

// restorePending puts the record's files and index entries back, keeps the rejected files, and removes the
// record. A file changed on the host since the install is the user's: it stays as it is (a warning). It
// runs to its end even when the run is being stopped, each tool bounded.
func (r *Run) restorePending(rec pendingRecord) string {
	r.mustFinish = true
	defer func() { r.mustFinish = false }()
	kept := filepath.Join(r.P.Rejected, rec.Rollout)
	_ = os.RemoveAll(kept)
	var problems, userEdits []string
	restored := 0
	for _, f := range rec.Files {
		dest := filepath.Join(r.S.ConfigPath, f.Rel)
		cur := "absent"
		if exists(dest) {
			if s, err := fileSha(dest); err == nil {
				cur = s
			} else {
				cur = "unreadable"
			}
		}
		if cur != f.Written {
			userEdits = append(userEdits, f.Rel)
			continue
		}
		if err := r.copyFromCheckout(f.Rel, filepath.Join(kept, f.Rel)); err != nil {
			problems = append(problems, fmt.Sprintf("keeping %s: %v", f.Rel, err))
			continue
		}
		if f.Existed {
			if err := r.installOne(filepath.Join(r.P.Pending, "before"), f.Rel); err != nil {
				problems = append(problems, fmt.Sprintf("restoring %s: %v", f.Rel, err))
				continue
			}
		} else if res, err := r.tool(r.S.CommitTimeout, r.asOwner("rm", "-f", "--", dest)...); err != nil || !res.OK() {
			problems = append(problems, fmt.Sprintf("removing %s: %s", f.Rel, tool.Summary(res.Out)))
			continue
		}
		recFile := filepath.Join(r.P.Pushed, f.Rel+".sha256")
		if f.HadRecord {
			if err := copyFile(filepath.Join(r.P.Pending, "records", f.Rel+".sha256"), recFile); err != nil {
				problems = append(problems, fmt.Sprintf("restoring the record of %s: %v", f.Rel, err))
			}
		} else {
			_ = os.Remove(recFile)
		}
		restored++
	}
	if p := r.restoreIndex(rec); p != "" {
		problems = append(problems, p)
	}
	if len(userEdits) > 0 {
		r.warn(fmt.Sprintf("rollout %s: %s changed on the host after nixfleet wrote it: kept as it is (not restored)", rec.Rollout, strings.Join(userEdits, ", ")))
	}
	if len(problems) > 0 {
		// The record stays: the next run tries again before it builds anything.
		r.warn(fmt.Sprintf("rollout %s: putting its files back FAILED (%s); the next run tries again", rec.Rollout, strings.Join(problems, "; ")))
		return fmt.Sprintf("; its files could NOT all be put back (%s): the next run tries again", strings.Join(problems, "; "))
	}
	_ = os.RemoveAll(r.P.Pending)
	r.rejected = kept
	pruneRejected(r.P.Rejected, keepRejected)
	r.log(fmt.Sprintf("=== rollout %s: %d files put back to the last confirmed state; the rejected ones are kept in %s ===", rec.Rollout, restored, kept))
	return fmt.Sprintf("; its files are back to the last confirmed state, the rejected ones kept in %s", kept)
}

// restoreIndex puts each file's index entry back as it was before the install (`git update-index
// --index-info`), and drops the entries the install added; "" when done.
func (r *Run) restoreIndex(rec pendingRecord) string {
	b, err := os.ReadFile(filepath.Join(r.P.Pending, "index"))
	if err != nil {
		return "reading the kept index entries: " + err.Error()
	}
	had := map[string]bool{}
	for _, e := range bytes.Split(b, []byte{0}) {
		if _, path, ok := bytes.Cut(e, []byte{'\t'}); ok {
			had[string(path)] = true
		}
	}
	var added []string
	for _, f := range rec.Files {
		if !had[f.Rel] {
			added = append(added, f.Rel)
		}
	}
	if len(added) > 0 {
		res, err := r.tool(r.S.CommitTimeout, r.gitArgv(append([]string{"update-index", "--force-remove", "--"}, added...)...)...)
		if err != nil || !res.OK() {
			return "git update-index --force-remove: " + tool.Summary(res.Out)
		}
	}
	if len(had) > 0 {
		in, err := os.Open(filepath.Join(r.P.Pending, "index"))
		if err != nil {
			return "reading the kept index entries: " + err.Error()
		}
		defer in.Close()
		res, err := r.toolSpec(tool.Spec{Bound: secs(r.S.CommitTimeout), Argv: r.gitArgv("update-index", "-z", "--index-info"), Stdin: in})
		if err != nil || !res.OK() {
			return "git update-index --index-info: " + tool.Summary(res.Out)
		}
	}
	return ""
}

// recoverPending: at the start of a run, under the lease and after an unfinished activation was settled,
// the record of a push that never ended (its activator was killed, the power went) is decided: the push
// stands if the host runs its system as the profile (decide.PendingAccepted), otherwise its files go back.
func (r *Run) recoverPending() error {
	rec, ok := readPending(r.pendingManifest())
	if !ok {
		if exists(r.P.Pending) {
			_ = os.RemoveAll(r.P.Pending) // an install stopped before its manifest was written changed nothing
		}
		return nil
	}
	if decide.PendingAccepted(rec.System, link(r.P.Current), link(r.P.Profile)) {
		_ = os.RemoveAll(r.P.Pending)
		return nil
	}
	note := r.restorePending(rec)
	if exists(r.P.Pending) {
		return r.fail("rollout %s never ended and was not confirmed%s", rec.Rollout, note)
	}
	r.warn(fmt.Sprintf("rollout %s never ended and was not confirmed%s", rec.Rollout, note))
	return nil
}

// keepRejected: how many rejected rollouts' files a host keeps for inspection (each is about one bundle).
const keepRejected = 5

// pruneRejected removes all but the newest `keep` rollout directories under dir, so rejections on a host
// that is never looked at do not fill its disk. Best effort: what cannot be removed stays.
func pruneRejected(dir string, keep int) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type kept struct {
		path string
		mod  time.Time
	}
	var dirs []kept
	for _, e := range entries {
		if info, err := e.Info(); err == nil && e.IsDir() {
			dirs = append(dirs, kept{filepath.Join(dir, e.Name()), info.ModTime()})
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].mod.After(dirs[j].mod) })
	for i := keep; i < len(dirs); i++ {
		_ = os.RemoveAll(dirs[i].path)
	}
}
