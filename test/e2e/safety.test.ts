// Issue 7, proofs (a), (b), (c), (f): after the build, every host ends on its old system or its new one,
// never in between, and the next plain `up` converges once the cause is fixed. Faults come from each host's
// own configuration, as on NixOS (fleet/README.md, "Faults"). Real engine, real sshd, SIMULATED NixOS.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sshExec } from "../../fleet/fleet";
import { editHostConfig, goldenLink, hostStatus, readHostFile, startE2E, systemState, validatedLink, waitFor, withHosts, withRoles, type E2E } from "./harness";

let t: E2E;

beforeAll(async () => {
  t = await startE2E("safety", 2340);
  // A first rollout everywhere: the module is active, each host has a golden system.
  await t.stack.up({ continueOnError: true });
});
afterAll(async () => t?.stop());

/** Every host converged: running = profile = boot entry = validated = golden. */
async function expectConverged(name: string) {
  const h = t.host(name);
  const s = await systemState(h);
  const validated = await validatedLink(h);
  expect(validated).toMatch(/^\/nix\/store\//);
  expect(s).toEqual({ running: validated, profile: validated, boot: validated });
  expect(await goldenLink(h)).toBe(validated);
  expect(await hostStatus(h)).toMatchObject({ result: "success" });
}

describe("safe activation on the simulated fleet", () => {
  it("the first rollout converged every host", async () => {
    for (const h of t.fleet.hosts) await expectConverged(h.name);
  });

  it("(a) a failed activation rolls that host back, profile and boot entry untouched; the others upgrade; fixed, a plain up converges", async () => {
    const g = t.host("griefling");
    const before = await systemState(g);
    const restore = await editHostConfig(g, '  system.activationScripts.e2eBroken = "echo e2e: activation breaks >&2; exit 1";');
    await t.setConfig(withRoles(t.config, { randomizedDelaySec: "7min" }));
    const started = Date.now();
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/griefling-deploy/);
    expect(err?.message).toMatch(/ROLLED BACK/);
    expect(await systemState(g)).toEqual(before);
    const status = await hostStatus(g);
    expect(status).toMatchObject({ result: "rolled-back", runningSystem: before.running });
    expect(status.message).toMatch(/switch-to-configuration test/);
    for (const name of ["malphas", "lilith", "pi"]) await expectConverged(name);
    console.log(`(a) up with one failed activation: ${((Date.now() - started) / 1000).toFixed(1)} s`);

    await restore();
    await t.stack.up({ continueOnError: true });
    await expectConverged("griefling");
    expect((await systemState(g)).running).not.toBe(before.running);
  });

  it("(b) a failing health unit rolls the host back; fixed, a plain up converges", async () => {
    const p = t.host("pi");
    const restore = await editHostConfig(p, '  systemd.services.e2e-health = { serviceConfig.Type = "oneshot"; script = "echo unhealthy >&2; exit 1"; };');
    await t.setConfig(withHosts(t.config, ["pi"], { healthUnits: ["e2e-health.service"] }));
    const before = await systemState(p);
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/pi-deploy/);
    expect(err?.message).toMatch(/e2e-health\.service/);
    expect(await systemState(p)).toEqual(before);
    expect(await hostStatus(p)).toMatchObject({ result: "rolled-back" });

    await restore();
    await editHostConfig(p, '  systemd.services.e2e-health = { serviceConfig.Type = "oneshot"; script = "echo healthy"; };');
    await t.stack.up({ continueOnError: true });
    await expectConverged("pi");
  });

  it("(c) an activation that stops sshd rolls itself back within confirmTimeout plus a margin, sshd answers again, and the failure names the host", async () => {
    const g = t.host("griefling");
    const confirmTimeout = 10;
    await t.setConfig(withHosts(t.config, ["griefling"], { confirmTimeout }));
    await t.stack.up({ continueOnError: true });
    await expectConverged("griefling");

    const before = await systemState(g);
    const restore = await editHostConfig(g, "  services.openssh.enable = false;");
    await t.setConfig(withHosts(t.config, ["griefling"], { randomizedDelaySec: "9min" }));
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    const failedAt = Date.now();
    expect(err?.message).toMatch(/griefling-(deploy|confirm)/);
    // The host rolls itself back and starts sshd again: poll with a real ssh client.
    await waitFor("griefling's sshd to answer again", async () => (await sshExec(t.fleet, g, "true", { timeoutMs: 5_000 }).catch(() => ({ code: 255 }))).code === 0, (confirmTimeout + 60) * 1000, 500);
    const rollback = (Date.now() - failedAt) / 1000;
    console.log(`(c) sshd answered again ${rollback.toFixed(1)} s after up failed (confirmTimeout ${confirmTimeout} s)`);
    expect(await systemState(g)).toEqual(before);
    const status = await hostStatus(g);
    expect(status.result).toBe("rolled-back");
    expect(status.message).toMatch(/confirm/i);

    await restore();
    await t.stack.up({ continueOnError: true });
    await expectConverged("griefling");
  });

  it("(f) in timer mode a failed activation rolls back and starts the onFailure unit", async () => {
    const g = t.host("griefling");
    const notifyLog = "/var/log/e2e-notify.log";
    await editHostConfig(g, `  systemd.services.e2e-notify = { serviceConfig.Type = "oneshot"; script = "echo notified >> ${notifyLog}"; };`);
    await t.setConfig(withHosts(t.config, ["griefling"], { onFailure: ["e2e-notify.service"] }));
    await t.stack.up({ continueOnError: true });
    await expectConverged("griefling");

    const before = await systemState(g);
    await editHostConfig(g, '  system.activationScripts.e2eTimerBroken = "exit 1";');
    const run = await sshExec(t.fleet, g, "systemctl start auto-upgrade.service");
    expect(run.code).not.toBe(0);
    expect(await systemState(g)).toEqual(before);
    expect(await hostStatus(g)).toMatchObject({ mode: "timer", result: "rolled-back" });
    // systemd queues OnFailure= units as jobs of their own: they run after the service failed.
    await waitFor("the onFailure unit to run", () => readHostFile(g, notifyLog).then((l) => /notified/.test(l), () => false), 30_000);
  });

  it("hosts that upgraded keep their outputs when another host fails, and the summary names the failed host", async () => {
    // griefling's checkout is still broken from (f); every other host gets a new setting.
    await t.setConfig(withRoles(t.config, { randomizedDelaySec: "19min" }));
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/host griefling \(wave 0\) failed at deploy/);
    const hosts = (await t.stack.outputs()).hosts?.value as Record<string, any>;
    for (const name of ["malphas", "lilith", "pi"]) {
      expect(hosts[name]).toMatchObject({ result: "success", validatedPath: await validatedLink(t.host(name)) });
    }
    expect(hosts.griefling).toMatchObject({ result: "failed", step: "deploy" });
  });
});
