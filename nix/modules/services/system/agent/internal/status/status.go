// Package status is the host's machine-readable record (docs/rollout.md §4): status.json, and push.json
// for the last push rollout alone. Real JSON (encoding/json), written atomically, readable by everyone.
package status

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
)

// Record is one status.json. Field order is the file's; nullable fields are pointers.
type Record struct {
	Host          string   `json:"host"`
	Mode          *string  `json:"mode"`
	Rollout       *string  `json:"rollout"`
	LastRun       string   `json:"lastRun"`
	Step          string   `json:"step"`
	Phase         string   `json:"phase"`
	Result        string   `json:"result"`
	Message       string   `json:"message"`
	ValidatedPath *string  `json:"validatedPath"`
	RunningSystem *string  `json:"runningSystem"`
	ProfileSystem *string  `json:"profileSystem"`
	BootedSystem  *string  `json:"bootedSystem"`
	GoldenPath    *string  `json:"goldenPath"`
	NeedsReboot   *bool    `json:"needsReboot"`
	ClosureDiff   *string  `json:"closureDiff"`
	Warnings      []string `json:"warnings"`
	RejectedFiles *string  `json:"rejectedFiles"` // where a rejected push's files are kept (docs/rollout.md)
}

// OrNull is nil for "", else a pointer to s.
func OrNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Str is *p, or "" for nil.
func Str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// Line is the record as one JSON line (no HTML escaping: people read it).
func Line(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Write puts the record into each file: a temp file beside it, mode 0644, then a rename.
func Write(r Record, files ...string) error {
	if r.Warnings == nil {
		r.Warnings = []string{}
	}
	line, err := Line(r)
	if err != nil {
		return err
	}
	for _, f := range files {
		tmp, err := os.CreateTemp(filepath.Dir(f), filepath.Base(f)+".*")
		if err != nil {
			return err
		}
		_, werr := tmp.Write(line)
		cerr := tmp.Close()
		if werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = os.Chmod(tmp.Name(), 0o644)
		}
		if werr == nil {
			werr = os.Rename(tmp.Name(), f)
		}
		if werr != nil {
			_ = os.Remove(tmp.Name())
			return werr
		}
	}
	return nil
}

// Read parses a record; a missing or unreadable file is the zero record and the error.
func Read(file string) (Record, error) {
	var r Record
	b, err := os.ReadFile(file)
	if err != nil {
		return r, err
	}
	err = json.Unmarshal(b, &r)
	return r, err
}
