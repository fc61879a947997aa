// nixfleet-agent: the host side of nixfleet (docs/rollout.md). One program, both modes:
//
//	nixfleet-agent run               timer: lease, hooks check, git pull, validate, safe activation, commit-back
//	nixfleet-agent push STAGE        push session 1 (exec'd by nix/push-bootstrap.sh): lease, file install,
//	                                 hooks, validate, settings check, then the detached activator; stdout is
//	                                 one JSON line {"rollout","validatedPath","action","needsReboot","diff"}
//	nixfleet-agent activate TOKEN    the detached activator (systemd-run): test, health gate, confirmation,
//	                                 profile + boot entry, golden root, commit-back
//	nixfleet-agent confirm TOKEN     push session 2: confirms, waits for the activator, prints push.json
//	nixfleet-agent status [DIR]      prints status.json; needs no settings
//
// Settings come only from AUTO_UPGRADE_* (internal/settings). Stdout is machine output only; stderr gets
// `=== … ===` lines and short progress; full tool output goes to the journal.
package main

import (
	"fmt"
	"os"

	"nixfleet/agent/internal/agent"
	"nixfleet/agent/internal/settings"
	"nixfleet/agent/internal/tool"
)

func usage(msg string) int {
	tool.Log("auto-upgrade: " + msg)
	tool.Log("usage: nixfleet-agent run | push STAGE | activate TOKEN | confirm TOKEN | status [STATE_DIR]")
	return 2
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	step := "run"
	if len(args) > 0 {
		step, args = args[0], args[1:]
	}
	switch step {
	case "status":
		if len(args) > 1 {
			return usage("status takes at most a STATE_DIR")
		}
		dir := ""
		if len(args) == 1 {
			dir = args[0]
		}
		return agent.Status(dir, os.Stdout, os.Stderr)
	case "run":
		if len(args) != 0 {
			return usage("run takes no arguments")
		}
	case "push":
		if len(args) != 1 {
			return usage("push takes the stage directory")
		}
	case "activate", "confirm":
		if len(args) != 1 || !settings.TokenRE.MatchString(args[0]) {
			return usage(step + " takes a rollout token (16 hex, optional -r<N>)")
		}
	default:
		return usage(fmt.Sprintf("unknown step '%s'", step))
	}
	s, err := settings.FromEnv()
	if err != nil {
		for _, e := range err.(settings.Errors) {
			tool.Log("auto-upgrade: invalid settings: " + e)
		}
		if step == "push" {
			_ = os.RemoveAll(args[0])
		}
		return 2
	}
	r, err := agent.New(s, step)
	if err != nil {
		tool.Log("auto-upgrade: " + err.Error())
		return 1
	}
	switch step {
	case "run":
		err = r.StepRun()
	case "push":
		err = r.StepPush(args[0], os.Stdout)
	case "activate":
		err = r.StepActivate(args[0])
	case "confirm":
		err = r.StepConfirm(args[0], os.Stdout)
	}
	return r.Finish(err)
}
