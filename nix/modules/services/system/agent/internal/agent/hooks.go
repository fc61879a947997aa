package agent

import (
	"strings"
	"time"

	"nixfleet/agent/internal/settings"
	"nixfleet/agent/internal/tool"
)

// unitExists: `systemctl cat` finds the unit.
func (r *Run) unitExists(u string) (bool, error) {
	res, err := r.tool(60, "systemctl", "cat", "--", u)
	return res.OK(), err
}

// unitFailed: `systemctl is-failed` says failed.
func (r *Run) unitFailed(u string) (bool, error) {
	res, err := r.tool(60, "systemctl", "is-failed", "--quiet", "--", u)
	return res.OK(), err
}

// unitWhy echoes the failed unit's last journal lines (its own output, which `systemctl start` does not
// show) and returns systemd's result for it, e.g. " (systemd result: exit-code)". Best effort: bounded
// tools whose failure only shortens the report.
func (r *Run) unitWhy(u string) string {
	if res, err := r.tool(30, "journalctl", "--no-pager", "-o", "short-precise", "-n", "20", "-u", u); err == nil && res.OK() {
		report(u+" journal", res, true)
	}
	res, err := r.tool(30, "systemctl", "show", "--value", "-p", "Result", "--", u)
	if result := strings.TrimSpace(string(res.Out)); err == nil && res.OK() && result != "" && !strings.Contains(result, "\n") {
		return " (systemd result: " + result + ")"
	}
	return ""
}

// checkHooksRan (timer): systemd started the hooks before the service (After=/Wants=); stop if one
// failed, or if a required one does not exist.
func (r *Run) checkHooksRan() error {
	r.enter(PhaseHooks, "Checking pre-update hooks")
	for _, h := range r.S.Hooks {
		if settings.Contains(r.S.RequiredHooks, h) {
			ok, err := r.unitExists(h)
			if err != nil {
				return err
			}
			if !ok {
				return r.fail("pre-update hook %s: unit not found and it is required (AUTO_UPGRADE_REQUIRED_HOOKS)", h)
			}
		}
		failed, err := r.unitFailed(h)
		if err != nil {
			return err
		}
		if failed {
			return r.fail("pre-update hook %s failed%s", h, r.unitWhy(h))
		}
	}
	return nil
}

// startHooks (push): starts each hook in order, all of them within the hooks timeout.
func (r *Run) startHooks() error {
	r.enter(PhaseHooks, "Running pre-update hooks")
	end := time.Now().Add(secs(r.S.HooksTimeout))
	for _, h := range r.S.Hooks {
		ok, err := r.unitExists(h)
		if err != nil {
			return err
		}
		if !ok {
			if settings.Contains(r.S.RequiredHooks, h) {
				return r.fail("pre-update hook %s: unit not found and it is required (AUTO_UPGRADE_REQUIRED_HOOKS)", h)
			}
			r.warn("pre-update hook " + h + ": unit not found, skipped")
			continue
		}
		left := int(time.Until(end).Seconds())
		if left <= 0 {
			return r.fail("pre-update hooks took longer than AUTO_UPGRADE_HOOKS_TIMEOUT=%d s", r.S.HooksTimeout)
		}
		res, err := r.tool(left, "systemctl", "start", "--", h)
		if err != nil {
			return err
		}
		if !res.OK() {
			report(h, res, true)
			return r.fail("pre-update hook %s failed%s: %s", h, r.unitWhy(h), tool.Summary(res.Out))
		}
	}
	return nil
}
