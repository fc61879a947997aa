// Push mode end to end on a booted machine (test/script/harness.ts): bootstrap -> push -> detached
// activator (a real systemd-run transient unit) -> confirm. Real bash, Nix 2.26, git, runuser, systemd and
// journald; SIMULATED systems and their switch-to-configuration (test/script/flake).
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { agent, cleanupHosts, commitAsOwner, confirm, golden, journal, makeHost, push, rootOwned, status, systemState, validated, writeHostConfig, switchLog, present } from "./harness";
import { AGENT_PACKAGE } from "../../render/files";

afterEach(cleanupHosts);

describe("push: deploy + confirm", () => {
  it("installs the files, validates, arms the activator, and confirm makes the profile and boot entry follow", async () => {
    const h = await makeHost();
    writeHostConfig(h, { version: "2" });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    // The bootstrap's agent is the store path the timer's unit runs (same source, same buildGoModule).
    expect(d.stderr).toContain(`nixfleet bootstrap: agent ${path.dirname(path.dirname(agent(h)))} (`);
    const lines = d.stdout.split("\n").filter(Boolean);
    expect(lines).toHaveLength(1);
    const out = JSON.parse(lines[0]);
    expect(out).toEqual({ rollout: d.token, validatedPath: validated(h), action: "armed", needsReboot: false, diff: "nixos-system-malphas: 1 → 2" });
    expect(out.validatedPath).not.toBe(h.initial);
    expect(status(h)).toMatchObject({ mode: "push", rollout: d.token, phase: "awaiting-confirmation", result: "running" });
    // Running the new system already (test), the profile and boot entry not yet.
    expect(systemState(h)).toEqual({ running: out.validatedPath, profile: h.initial, boot: h.initial });

    const c = await confirm(h, d.token);
    expect(c.code, c.stderr).toBe(0);
    const st = JSON.parse(c.stdout.trim());
    expect(c.stdout.trim().split("\n")).toHaveLength(1);
    expect(st).toMatchObject({ result: "success", phase: "done", rollout: d.token, validatedPath: out.validatedPath, goldenPath: out.validatedPath, runningSystem: out.validatedPath, profileSystem: out.validatedPath, needsReboot: false, warnings: [] });
    expect(systemState(h)).toEqual({ running: out.validatedPath, profile: out.validatedPath, boot: out.validatedPath });
    expect(golden(h)).toBe(out.validatedPath);
    // Installed as the owner, tracked by git, no root-owned file in the checkout, the stage removed.
    expect(fs.statSync(path.join(h.cfg, AGENT_PACKAGE)).uid).not.toBe(0);
    expect(fs.statSync(path.join(h.cfg, AGENT_PACKAGE)).mode & 0o777).toBe(0o644);
    expect(rootOwned(h.cfg)).toEqual([]);
    expect(fs.readdirSync(path.join(h.root, "tmp"))).toEqual([]);
    expect(present(path.join(h.state, "lease"))).toBe(false);
    expect(journal(h)).toMatch(/Activation PASSED/);
  });

  it("a second push of the same configuration is 'unchanged' and activates nothing", async () => {
    const h = await makeHost();
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    expect(JSON.parse(d.stdout)).toMatchObject({ action: "unchanged", validatedPath: h.initial, diff: "" });
    const c = await confirm(h, d.token);
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ result: "success", rollout: d.token });
    expect(switchLog(h)).toEqual([]); // no switch since the setup's
  });
});
