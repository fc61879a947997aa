// The remaining steps of the contract: hooks (push starts them, the timer checks them), needsReboot, a
// failed boot entry after the profile moved, output discipline (no huge lines), usage and bad settings.
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { cleanupHosts, commitAsOwner, confirm, hostUnit, journal, makeHost, push, run, agent, status, systemState, timer, validated, writeHostConfig, present } from "./harness";

afterEach(cleanupHosts);


describe("hooks", () => {
  it("push starts the hooks in order; a missing optional hook is a warning, a missing required one fails before the build", async () => {
    const h = await makeHost({}, { AUTO_UPGRADE_HOOKS: "chezmoi-pre-update.service gone.service" });
    hostUnit(h, "chezmoi-pre-update.service", `echo synced >> ${h.root}/hook.log`);
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    expect(fs.readFileSync(path.join(h.root, "hook.log"), "utf8")).toBe("synced\n");
    // systemd ran it, and it succeeded (systemd's own journal line for the unit).
    expect(journal(h)).toMatch(/^systemd\tFinished chezmoi-pre-update\.service/m);
    expect(status(h).warnings.join(" ")).toMatch(/gone\.service: unit not found, skipped/);

    h.env.AUTO_UPGRADE_REQUIRED_HOOKS = "gone.service";
    const journalBefore = journal(h).length;
    const r = await push(h, undefined, {});
    expect(r.code).toBe(1);
    expect(status(h)).toMatchObject({ phase: "hooks", result: "failed" });
    expect(status(h).message).toMatch(/gone\.service: unit not found and it is required/);
    expect(journal(h).slice(journalBefore)).not.toMatch(/Build validation/);
  });

  it("push: a failing hook stops the rollout before validation", async () => {
    const h = await makeHost({}, { AUTO_UPGRADE_HOOKS: "chezmoi-pre-update.service" });
    hostUnit(h, "chezmoi-pre-update.service", "echo 'merge conflict in ~/.bashrc' >&2; exit 1");
    const d = await push(h);
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/pre-update hook chezmoi-pre-update\.service failed/);
    expect(status(h)).toMatchObject({ phase: "hooks", result: "failed" });
  });

  it("timer: a hook that systemd ran and that failed stops the run", async () => {
    const h = await makeHost({}, { AUTO_UPGRADE_HOOKS: "chezmoi-pre-update.service" });
    hostUnit(h, "chezmoi-pre-update.service", "exit 1", { failed: true });
    const r = await timer(h);
    expect(r.code).toBe(1);
    expect(status(h)).toMatchObject({ mode: "timer", phase: "hooks", result: "failed" });
  });
});

describe("activation details", () => {
  it("needsReboot when the kernel differs from the booted one", async () => {
    const h = await makeHost();
    writeHostConfig(h, { version: "2", kernel: "6.6" });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    expect(JSON.parse(d.stdout).needsReboot).toBe(true);
    const c = await confirm(h, d.token);
    expect(JSON.parse(c.stdout)).toMatchObject({ needsReboot: true, result: "success" });
  });

  it("a failed boot entry after the profile moved puts profile and boot entry back and re-activates the old system", async () => {
    const h = await makeHost();
    const before = systemState(h);
    writeHostConfig(h, { version: "2", failBoot: true });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    const c = await confirm(h, d.token);
    expect(c.code).toBe(1);
    expect(JSON.parse(c.stdout)).toMatchObject({ result: "rolled-back" });
    expect(JSON.parse(c.stdout).message).toMatch(/switch-to-configuration boot of .*Failed to install bootloader/);
    expect(systemState(h)).toEqual(before);
  });

  it("no output line approaches 64 KiB, even when a tool prints a 200 KB line; the journal gets the output", async () => {
    const h = await makeHost();
    writeHostConfig(h, { version: "2", failActivation: true, activationMessage: `${"x".repeat(200_000)}\n` });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code).toBe(1);
    const longest = Math.max(...d.stderr.split("\n").map((l) => l.length), ...d.stdout.split("\n").map((l) => l.length));
    expect(longest).toBeLessThan(8 * 1024);
    expect(fs.statSync(path.join(h.state, "status.json")).size).toBeLessThan(16 * 1024);
    expect(journal(h)).toMatch(/switch-to-configuration: x{1000}/);
    expect(validated(h)).not.toBeNull();
  });
});

describe("usage and settings", () => {
  it("bad settings name the variable and what is allowed; exit 2 before anything runs", async () => {
    const h = await makeHost();
    const r = await timer(h, { AUTO_UPGRADE_HEALTH_TIMEOUT: "soon", AUTO_UPGRADE_HEALTH_UNITS: "ok.service $(reboot)", AUTO_UPGRADE_COMMIT: "yes" });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/AUTO_UPGRADE_HEALTH_TIMEOUT must be a whole number of seconds/);
    expect(r.stderr).toMatch(/AUTO_UPGRADE_HEALTH_UNITS: '\$\(reboot\)' is not a systemd unit name/);
    expect(r.stderr).toMatch(/AUTO_UPGRADE_COMMIT must be 'true' or 'false', got 'yes'/);
    expect(present(path.join(h.state, "status.json"))).toBe(false);
  });

  it("old per-step verbs are gone; a token must be a token", async () => {
    const h = await makeHost();
    for (const args of [["switch"], ["validate"], ["confirm", "../../x"], ["activate"]]) {
      const r = await run([agent(h), ...args], h.env);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr).toMatch(/usage: nixfleet-agent run \| push STAGE/);
    }
  });
});
