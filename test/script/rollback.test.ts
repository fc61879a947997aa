// Safe activation: every failure after the build puts the host back on the system it ran before, profile
// and boot entry untouched, status "rolled-back" with the reason, `=== … ROLLED BACK … ===` in the journal.
// Each test prints how long the rollback took (from the failing command's start to its end).
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { cleanupHosts, commitAsOwner, confirm, golden, journal, makeHost, push, status, systemState, timer, validated, waitFor, writeHostConfig, type Host, switchLog, hostUnit, present } from "./harness";

afterEach(cleanupHosts);

const secs = (t0: number) => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

function expectRolledBack(h: Host, before: ReturnType<typeof systemState>, reason: RegExp) {
  expect(systemState(h)).toEqual(before);
  const st = status(h);
  expect(st).toMatchObject({ result: "rolled-back", runningSystem: before.running, profileSystem: before.profile });
  expect(st.message).toMatch(reason);
  expect(journal(h)).toMatch(/=== .*ROLLED BACK.* ===/);
  expect(present(path.join(h.state, "lease"))).toBe(false);
  // The re-activation used the previous system's own switch-to-configuration.
  const log = switchLog(h);
  expect(log.at(-1)).toBe(`test ${before.running} 0`);
}

describe("rollback", () => {
  it("push: a failed activation (switch-to-configuration test exits non-zero) re-activates the previous system", async () => {
    const h = await makeHost();
    const before = systemState(h);
    writeHostConfig(h, { version: "2", failActivation: true, activationMessage: "broken snippet says: \"no\" \\ \u0007 ünïcode" });
    commitAsOwner(h);
    const t0 = Date.now();
    const d = await push(h);
    console.log(`rollback after a failed activation (push): ${secs(t0)} for the whole deploy`);
    expect(d.code).toBe(1);
    expect(d.stdout).toBe("");
    expect(d.stderr).toMatch(/ROLLED BACK/);
    expect(d.stderr).toMatch(/malphas/);
    expectRolledBack(h, before, /switch-to-configuration test of .* exited 2/);
    // Tool output with quotes, backslashes, a control character and non-ASCII survives JSON (real parser).
    expect(status(h).message).toContain('broken snippet says: "no" \\ \u0007 ünïcode');
    // Confirming a rolled-back rollout fails loudly.
    const c = await confirm(h, d.token);
    expect(c.code).toBe(1);
    expect(JSON.parse(c.stdout)).toMatchObject({ result: "rolled-back" });
  });

  it("push: a unit that fails after activation fails the health gate; units already failed before do not", async () => {
    const h = await makeHost();
    // A unit of the machine that is failed already before the push.
    hostUnit(h, "old-broken.service", "exit 1", { failed: true });
    const before = systemState(h);
    writeHostConfig(h, { version: "2", units: { "crashy.service": "exit 1" }, lateFailUnits: ["crashy.service"] });
    commitAsOwner(h);
    const t0 = Date.now();
    const d = await push(h);
    console.log(`rollback after a failed health gate (late-failing unit): ${secs(t0)} for the whole deploy`);
    expect(d.code).toBe(1);
    expectRolledBack(h, before, /health gate: units failed after activation: crashy\.service$|crashy\.service \(/);
    expect(status(h).message).not.toMatch(/old-broken/);
  });

  it("push: a health unit that fails to start rolls back, naming the unit; a healthy one passes", async () => {
    const h = await makeHost({}, { AUTO_UPGRADE_HEALTH_UNITS: "e2e-health.service" });
    const before = systemState(h);
    writeHostConfig(h, { version: "2", units: { "e2e-health.service": "echo unhealthy >&2; exit 1" } });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/e2e-health\.service/);
    expectRolledBack(h, before, /health unit e2e-health\.service failed/);

    writeHostConfig(h, { version: "3", units: { "e2e-health.service": "echo healthy" } });
    commitAsOwner(h);
    const ok = await push(h);
    expect(ok.code, ok.stderr).toBe(0);
    expect((await confirm(h, ok.token)).code).toBe(0);
    expect(systemState(h).profile).toBe(validated(h));
  });

  it("push: no confirmation within CONFIRM_TIMEOUT: the activator rolls back on its own; a late confirm fails", async () => {
    const h = await makeHost({}, { AUTO_UPGRADE_CONFIRM_TIMEOUT: "2" });
    const before = systemState(h);
    writeHostConfig(h, { version: "2" });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    const armed = Date.now();
    expect(systemState(h).running).toBe(JSON.parse(d.stdout).validatedPath);
    await waitFor("the rollback", () => status(h).result === "rolled-back", 120_000);
    console.log(`rollback without confirmation (CONFIRM_TIMEOUT 2 s): ${secs(armed)} after deploy returned`);
    expectRolledBack(h, before, /no confirmation of rollout .* within 2 s/);
    const c = await confirm(h, d.token);
    expect(c.code).toBe(1);
  });

  it("timer: a failed activation rolls back and exits non-zero (systemd then starts onFailure)", async () => {
    const h = await makeHost();
    const before = systemState(h);
    writeHostConfig(h, { version: "2", failActivation: true });
    commitAsOwner(h);
    h.env.AUTO_UPGRADE_COMMIT = "false";
    const t0 = Date.now();
    const r = await timer(h);
    console.log(`rollback after a failed activation (timer): ${secs(t0)} for the whole run`);
    expect(r.code).toBe(1);
    expectRolledBack(h, before, /switch-to-configuration test/);
    expect(status(h)).toMatchObject({ mode: "timer" });
    expect(golden(h)).toBeNull();
  });

  it("timer: a system that cannot reach the git remote after activation rolls back (gate: git ls-remote)", async () => {
    const h = await makeHost();
    const before = systemState(h);
    writeHostConfig(h, { version: "2", breakRemote: h.origin });
    commitAsOwner(h);
    const r = await timer(h);
    expect(r.code).toBe(1);
    expectRolledBack(h, before, /cannot reach the git remote origin after activation/);
    // Re-activating the old system brought the remote back.
    expect(present(h.origin)).toBe(true);
  });

  it("timer: a remote that was unreachable before the switch is no reason to roll back (a warning)", async () => {
    const h = await makeHost();
    writeHostConfig(h, { version: "2" });
    commitAsOwner(h);
    h.env.AUTO_UPGRADE_COMMIT = "false";
    fs.renameSync(h.origin, `${h.origin}.away`);
    const r = await timer(h);
    expect(r.code, r.stderr).toBe(0);
    expect(status(h)).toMatchObject({ mode: "timer", result: "success" });
    expect(status(h).warnings.join(" ")).toMatch(/cannot fetch origin main/);
  });
});
