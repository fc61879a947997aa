package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nixfleet/agent/internal/settings"
)

// A real git checkout in a temp dir, the agent's own install and restore (as this user): after a rejected
// push, each file and its index entry are what they were before the install; a file the push added is gone
// from both; a file edited after the install is the user's and stays; the rejected files are kept.
func TestRejectedPushPutsFilesBack(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir, state, stage := t.TempDir(), t.TempDir(), t.TempDir()
	git := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("init", "-q")
	write(filepath.Join(dir, "roles/a.nix"), "old a\n")
	write(filepath.Join(dir, "c.nix"), "old c\n")
	git("add", ".")
	git("commit", "-qm", "confirmed")
	// The last confirmed push wrote a and c: nixfleet's records say so.
	write(filepath.Join(state, "pushed/roles/a.nix.sha256"), mustSha(t, filepath.Join(dir, "roles/a.nix"))+"\n")
	write(filepath.Join(state, "pushed/c.nix.sha256"), mustSha(t, filepath.Join(dir, "c.nix"))+"\n")
	indexBefore := git("ls-files", "--stage")
	write(filepath.Join(stage, "roles/a.nix"), "rejected a\n")
	write(filepath.Join(stage, "hosts/h/b.nix"), "rejected b\n")
	write(filepath.Join(stage, "c.nix"), "rejected c\n")

	s := &settings.Settings{ConfigPath: dir, StateDir: state, CommitTimeout: 30}
	r := &Run{S: s, P: s.Paths(), Mode: "push", Token: "0123456789abcdef", owner: me.Username, me: me.Username, git: []string{"git", "-C", dir}}
	r.ctx, r.cancel = context.WithCancelCause(context.Background())
	if err := r.installFiles(stage); err != nil {
		t.Fatal(err)
	}
	if got := git("show", ":hosts/h/b.nix"); got != "rejected b\n" {
		t.Fatalf("installed and added: %q", got)
	}
	write(filepath.Join(dir, "c.nix"), "the user's own c\n") // edited on the host during the confirmation window
	rec, ok := readPending(r.pendingManifest())
	if !ok || rec.Rollout != r.Token || len(rec.Files) != 3 {
		t.Fatalf("pending record %+v %v", rec, ok)
	}
	note := r.restorePending(rec)
	kept := filepath.Join(state, "rejected", r.Token)
	if !strings.Contains(note, "the rejected ones kept in "+kept) || r.rejected != kept {
		t.Fatalf("note %q, rejected %q", note, r.rejected)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "roles/a.nix")); string(b) != "old a\n" {
		t.Fatalf("a is %q", b)
	}
	if exists(filepath.Join(dir, "hosts/h/b.nix")) || exists(filepath.Join(state, "pushed/hosts/h/b.nix.sha256")) {
		t.Fatal("b, added by the rejected push, is still there")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "c.nix")); string(b) != "the user's own c\n" {
		t.Fatalf("the user's edit of c is lost: %q", b)
	}
	if got := git("ls-files", "--stage"); got != indexBefore {
		t.Fatalf("index\n%s\nwant\n%s", got, indexBefore)
	}
	if got := git("diff", "--name-only"); got != "c.nix\n" {
		t.Fatalf("working tree differs from the index in %q, want only the user's c.nix", got)
	}
	for rel, want := range map[string]string{"roles/a.nix": "rejected a\n", "hosts/h/b.nix": "rejected b\n"} {
		if b, _ := os.ReadFile(filepath.Join(kept, rel)); string(b) != want {
			t.Fatalf("kept %s is %q", rel, b)
		}
	}
	if want := mustSha(t, filepath.Join(dir, "roles/a.nix")) + "\n"; mustRead(t, filepath.Join(state, "pushed/roles/a.nix.sha256")) != want {
		t.Fatal("nixfleet's record of a is not the confirmed one")
	}
	if exists(r.P.Pending) {
		t.Fatal("the pending record outlived its restore")
	}
	if len(r.warnings) != 1 || !strings.Contains(r.warnings[0], "c.nix changed on the host") {
		t.Fatalf("warnings %q", r.warnings)
	}
}

// A later run finds the record of a push that never ended (its activator was killed): the push stands only
// if the host runs its system as the profile too; otherwise its files go back.
func TestRecoverPendingAfterAKilledActivator(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name             string
		running, profile string
		restored         bool
	}{
		{"settled back to the old system: files go back", "old", "old", true},
		{"confirmed and the profile moved: the push stands", "new", "new", false},
		{"running the new system, profile never moved: files go back", "new", "old", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, state, stage, root := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
			systems := map[string]string{"old": filepath.Join(root, "sys-old"), "new": filepath.Join(root, "sys-new")}
			for _, p := range systems {
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for link, to := range map[string]string{"run/current-system": systems[c.running], "nix/var/nix/profiles/system": systems[c.profile]} {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, link)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(to, filepath.Join(root, link)); err != nil {
					t.Fatal(err)
				}
			}
			if out, err := exec.Command("git", "init", "-q", dir).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if err := os.WriteFile(filepath.Join(stage, "f.nix"), []byte("pushed\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			s := &settings.Settings{ConfigPath: dir, StateDir: state, CommitTimeout: 30}
			r := &Run{S: s, P: s.Paths(), Mode: "push", Token: "fedcba9876543210", owner: me.Username, me: me.Username, git: []string{"git", "-C", dir}}
			// The host's running system and profile, under this test's own root.
			r.P.Current, r.P.Profile = filepath.Join(root, "run/current-system"), filepath.Join(root, "nix/var/nix/profiles/system")
			r.ctx, r.cancel = context.WithCancelCause(context.Background())
			if err := r.installFiles(stage); err != nil {
				t.Fatal(err)
			}
			r.sys = systems["new"]
			if err := r.notePendingSystem(); err != nil {
				t.Fatal(err)
			}
			// The activator is killed here; a later run (another process) recovers.
			later := &Run{S: s, P: r.P, Mode: "timer", owner: me.Username, me: me.Username, git: []string{"git", "-C", dir}}
			later.ctx, later.cancel = context.WithCancelCause(context.Background())
			if err := later.recoverPending(); err != nil {
				t.Fatal(err)
			}
			if exists(s.Paths().Pending) {
				t.Fatal("the record outlived its decision")
			}
			if got := exists(filepath.Join(dir, "f.nix")); got == c.restored {
				t.Fatalf("f.nix present %v, want restored %v", got, c.restored)
			}
			if got := exists(filepath.Join(state, "rejected", r.Token, "f.nix")); got != c.restored {
				t.Fatalf("rejected copy present %v, want %v", got, c.restored)
			}
		})
	}
}

func mustSha(t *testing.T, p string) string {
	s, err := fileSha(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustRead(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPruneRejectedKeepsTheNewest(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	for i := 0; i < 8; i++ {
		d := filepath.Join(dir, fmt.Sprintf("r%d", i))
		if err := os.MkdirAll(filepath.Join(d, "roles"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(d, now, now.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	pruneRejected(dir, 5)
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "r3 r4 r5 r6 r7" {
		t.Fatalf("left %v, want the 5 newest (r3..r7)", left)
	}
}

// Root copies the user's checkout files only as regular files reached without symlinks: a file or a
// directory swapped for a link (here to a secret outside the checkout) is refused, never copied.
func TestCopyFromCheckoutRefusesSymlinks(t *testing.T) {
	cfg, outside, state := t.TempDir(), t.TempDir(), t.TempDir()
	secret := filepath.Join(outside, "secret")
	for p, text := range map[string]string{secret: "secret\n", filepath.Join(cfg, "roles", "ok.nix"): "ok\n"} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(secret, filepath.Join(cfg, "roles", "link.nix")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(cfg, "hosts")); err != nil {
		t.Fatal(err)
	}
	r := &Run{S: &settings.Settings{ConfigPath: cfg}}
	if err := r.copyFromCheckout("roles/ok.nix", filepath.Join(state, "ok")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(state, "ok")); string(b) != "ok\n" {
		t.Fatalf("copied %q", b)
	}
	for _, rel := range []string{"roles/link.nix", "hosts/secret"} {
		if err := r.copyFromCheckout(rel, filepath.Join(state, "x")); err == nil {
			t.Errorf("%s: copied through a symlink", rel)
		}
	}
	if exists(filepath.Join(state, "x")) {
		t.Fatal("a refused copy wrote its destination")
	}
}
