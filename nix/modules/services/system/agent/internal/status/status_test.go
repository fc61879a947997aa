package status

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTripAnyText(t *testing.T) {
	var controls strings.Builder
	for c := 1; c < 32; c++ {
		controls.WriteByte(byte(c))
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "status.json")
	for _, msg := range []string{controls.String(), `say "hi" \ back\\slash`, "ünïcödé 日本語 🚀", "\u007f del", "", "%s %d \\u0041", "a\nb\r\nc\td", "<&>"} {
		r := Record{Host: "malphas", Mode: OrNull("push"), Result: "failed", Message: msg, Warnings: []string{msg}}
		if err := Write(r, f); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(f)
		if strings.Count(string(b), "\n") != 1 || !strings.HasSuffix(string(b), "\n") {
			t.Fatalf("not one line: %q", b)
		}
		var any map[string]any
		if err := json.Unmarshal(b, &any); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		back, err := Read(f)
		if err != nil || back.Message != msg || back.Warnings[0] != msg || Str(back.Mode) != "push" {
			t.Fatalf("%q came back as %+v (%v)", msg, back, err)
		}
	}
}

func TestFieldsOrderNullsAndMode(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "status.json"), filepath.Join(dir, "push.json")
	if err := Write(Record{Host: "h", Step: "run", Phase: "done", Result: "success"}, a, b); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(a)
	want := `{"host":"h","mode":null,"rollout":null,"lastRun":"","step":"run","phase":"done","result":"success","message":"","validatedPath":null,"runningSystem":null,"profileSystem":null,"bootedSystem":null,"goldenPath":null,"needsReboot":null,"closureDiff":null,"warnings":[],"rejectedFiles":null}` + "\n"
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	same, _ := os.ReadFile(b)
	if string(same) != want {
		t.Fatal("push.json differs")
	}
	for _, f := range []string{a, b} {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o644 {
			t.Fatalf("%s mode %v", f, fi.Mode())
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.json.*"))
	if len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}
