package settings

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

// The agent's defaults are the settings table's (../auto-upgrade.json beside the module, which the module and
// the TypeScript side read): every variable the table names defaults here to the table's value ("" for an
// empty list), and the agent defaults nothing the table lacks. test/settings-table.test.ts checks the same
// from the TypeScript side; this copy of the check fails in `go test` too.
func TestDefaultsAreTheTable(t *testing.T) {
	raw, err := os.ReadFile("../../../auto-upgrade.json")
	if err != nil {
		t.Fatal(err)
	}
	var table map[string]json.RawMessage
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, group := range []string{"settings", "host", "push", "timeouts"} {
		var specs map[string]struct {
			Env     string `json:"env"`
			Default any    `json:"default"`
		}
		if err := json.Unmarshal(table[group], &specs); err != nil {
			t.Fatalf("%s: %v", group, err)
		}
		for name, s := range specs {
			if s.Env == "" {
				continue
			}
			switch v := s.Default.(type) {
			case []any:
				words := make([]string, len(v))
				for i, w := range v {
					words[i] = fmt.Sprint(w)
				}
				want[s.Env] = strings.Join(words, " ")
			default:
				want[s.Env] = fmt.Sprint(v)
			}
			if got := defaults[s.Env]; got != want[s.Env] {
				t.Errorf("%s.%s: %s defaults to %q in the agent, %q in the table", group, name, s.Env, got, want[s.Env])
			}
		}
	}
	if len(want) < 10 {
		t.Fatalf("only %d variables in the table", len(want))
	}
	for env := range defaults {
		if _, ok := want[env]; !ok {
			t.Errorf("the agent defaults %s, which the table does not name", env)
		}
	}
}
