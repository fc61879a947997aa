package main

import (
	"os"
	"testing"
)

func TestUsage(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "test") // log to stderr only, not to the journal
	for _, args := range [][]string{{"switch"}, {"validate"}, {"confirm", "../../x"}, {"activate"}, {"run", "extra"}, {"push"}, {"status", "a", "b"}} {
		if got := run(args); got != 2 {
			t.Errorf("%v: exit %d, want 2", args, got)
		}
	}
}

func TestBadSettingsExit2BeforeAnythingRuns(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "test")
	dir := t.TempDir()
	t.Setenv("AUTO_UPGRADE_STATE_DIR", dir)
	t.Setenv("AUTO_UPGRADE_CONFIG_PATH", "")
	if got := run([]string{"run"}); got != 2 {
		t.Fatalf("exit %d", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the state dir was written: %v", entries)
	}
}
