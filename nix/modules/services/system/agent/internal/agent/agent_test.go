package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestBoundedLines(t *testing.T) {
	many := make([]string, 61)
	for i := range many {
		many[i] = fmt.Sprintf("pkg%02d: 1.0 → 2.0", i)
	}
	got := strings.Split(BoundedLines(many), "\n")
	if len(got) != 41 || got[40] != "… 21 more" || got[0] != "pkg00: 1.0 → 2.0" {
		t.Fatalf("61 lines: got %d lines, last %q", len(got), got[len(got)-1])
	}
	if BoundedLines(nil) != "" || BoundedLines([]string{"a"}) != "a" {
		t.Fatal("short input is kept as is")
	}
	long := make([]string, 31)
	for i := range long {
		long[i] = strings.Repeat("x", 192) + fmt.Sprintf("%02d: ∅ → 3.0", i)
	}
	out := BoundedLines(long)
	lines := strings.Split(out, "\n")
	if len(out) > 2048 || !utf8.ValidString(out) {
		t.Fatalf("%d bytes, valid UTF-8 %v", len(out), utf8.ValidString(out))
	}
	var more int
	fmt.Sscanf(lines[len(lines)-1], "… %d more", &more)
	if len(lines)-1+more != 31 {
		t.Fatalf("kept %d, more %d", len(lines)-1, more)
	}
	for _, l := range lines[:len(lines)-1] {
		if len(l) > 200 || !strings.HasSuffix(l, ": …") {
			t.Fatalf("line %q (%d bytes)", l, len(l))
		}
	}
}

func TestPlainText(t *testing.T) {
	if got := PlainText("\x1b[31;1mhello\x1b[0m: 2.10 → 2.12, \x1b[32m+64.0 KiB\x1b[0m\t\x07"); got != "hello: 2.10 → 2.12, +64.0 KiB" {
		t.Fatalf("%q", got)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"/home/evie/x.nix": "/home/evie/x.nix", "a b": "'a b'", "it's": `'it'\''s'`, "": "''", "$(x)": "'$(x)'"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

// The build HOME's .gitconfig: git itself reads each path back unchanged, quotes and backslashes included.
func TestGitConfigValueRoundTrips(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	for _, p := range []string{"/home/evie/nix-config", `/srv/a "quoted" dir`, `/srv/back\slash`, "/srv/semi;colon #hash"} {
		f := filepath.Join(t.TempDir(), "gitconfig")
		if err := os.WriteFile(f, []byte("[safe]\n\tdirectory = "+gitConfigValue(p)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("git", "config", "--file", f, "--get", "safe.directory").Output()
		if got := strings.TrimSuffix(string(out), "\n"); err != nil || got != p {
			t.Errorf("git read %q back as %q (%v)", p, got, err)
		}
	}
}

func TestErrorsExitCodesAndLines(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
		line string
	}{
		{nil, 0, ""},
		{&Error{Phase: PhaseValidate, Kind: Failed, Why: "nix build of x: boom"}, 1, "validate FAILED: nix build of x: boom"},
		{&Error{Phase: PhaseHealth, Kind: RolledBack, Why: "health gate: units failed"}, 1, "ROLLED BACK: health gate: units failed"},
		{&Error{Phase: PhaseCommit, Kind: CommitFailed, Why: "conflict"}, 1, "commit-back FAILED: conflict"},
		{&Error{Phase: PhaseValidate, Kind: Interrupted, Code: 143}, 143, "interrupted (exit 143) during validate"},
		{&Error{Kind: Usage, Why: "bad"}, 2, "bad"},
		{&Error{Kind: Refused, Why: "lease"}, 1, "lease"},
	} {
		if got := ExitCode(c.err); got != c.code {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.code)
		}
		if c.err != nil && c.err.Error() != c.line {
			t.Errorf("line %q, want %q", c.err.Error(), c.line)
		}
	}
}
