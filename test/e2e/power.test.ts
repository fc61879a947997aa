// Reboots and power cuts during a rollout (issue 13's proof; issue 15 is about guaranteeing it): a host
// rebooted in the middle of the health gate, and a host whose power is cut between the profile and the boot
// entry. After the next finished run each host must be on its old or its new system, with running system =
// profile = boot entry. Real engine, sshd, systemd and reboots (fleet/machine); SIMULATED NixOS packages and
// activation (nixos-lite).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostPath, journal, powerCycleHost, rebootHost } from "../../fleet/fleet";
import { bootState, editHostConfig, startE2E, systemState, validatedLink, waitFor, withHosts, withRoles, type E2E } from "./harness";
import { existsSync } from "node:fs";

let t: E2E;

beforeAll(async () => {
  t = await startE2E("power", 2460, { hosts: [{ name: "griefling", role: "server" }, { name: "pi", role: "pi" }] });
  await t.stack.up({ continueOnError: true });
});
afterAll(async () => t?.stop());

/** Old or new, never in between: running system, profile and boot entry are one system. */
async function expectOneSystem(name: string): Promise<string> {
  const s = await systemState(t.host(name));
  expect(s.running, JSON.stringify(s)).toBeTruthy();
  expect(s, `${name}: ${JSON.stringify(s)}`).toEqual({ running: s.running, profile: s.running, boot: s.running });
  return s.running!;
}

/** Starts a plain `up` without waiting for it; resolves to its error (or null) when it ends. */
function upInBackground(): Promise<Error | null> {
  return t.stack.up({ continueOnError: true }).then(
    () => null,
    (e: Error) => e,
  );
}

describe("reboots and power cuts during a rollout", () => {
  it("a reboot in the middle of the health gate: the host boots its boot entry (the old system); the next plain up converges", async () => {
    const g = t.host("griefling");
    const old = await expectOneSystem("griefling");
    await editHostConfig(
      g,
      '  systemd.services.e2e-slow-health = { serviceConfig.Type = "oneshot"; script = "touch /run/e2e-health-gate; sleep 30"; };',
    );
    await t.setConfig(withHosts(t.config, ["griefling"], { healthUnits: ["e2e-slow-health.service"], healthTimeout: 90 }));
    const up = upInBackground();
    await waitFor("griefling's health gate to start", async () => existsSync(hostPath(g, "/run/e2e-health-gate")), 240_000);
    await rebootHost(t.fleet, g);
    const err = await up;
    console.log(`power: the up during the reboot ended with: ${err ? err.message.split("\n").filter((l) => /griefling/.test(l)).slice(0, 3).join(" | ") : "success"}`);
    const afterBoot = await bootState(g);
    console.log(`power: after the reboot griefling runs ${afterBoot.running} (old ${old}), profile ${afterBoot.profile}, entry ${afterBoot.boot}`);
    expect(afterBoot.booted).toBe(afterBoot.boot);
    expect(afterBoot.running).toBe(afterBoot.boot);

    // The next finished run: a plain up (the health unit stays slow, now it finishes).
    await t.stack.up({ continueOnError: true });
    const now = await expectOneSystem("griefling");
    expect(now).toBe(await validatedLink(g));
  });

  it("a power cut between the profile and the boot entry: after the next finished run, running = profile = boot entry", async () => {
    const p = t.host("pi");
    const old = await expectOneSystem("pi");
    // The new system's boot loader install waits (once) so the power can be cut after the profile moved.
    await editHostConfig(
      p,
      '  boot.loader.extraInstallCommands = "if [ ! -e /var/lib/e2e-cut-once ]; then touch /var/lib/e2e-cut-once /run/e2e-installing-boot-entry; sleep 120; fi";',
    );
    await t.setConfig(withRoles(t.config, { randomizedDelaySec: "23min" }));
    const up = upInBackground();
    await waitFor("pi's boot entry install to start", async () => existsSync(hostPath(p, "/run/e2e-installing-boot-entry")), 240_000);
    const cut = await systemState(p);
    console.log(`power: at the cut pi runs ${cut.running}, profile ${cut.profile}, entry ${cut.boot} (old ${old})`);
    expect(cut.profile).not.toBe(old); // the profile had moved, the entry had not: the window this test is about
    expect(cut.boot).toBe(old);
    await powerCycleHost(t.fleet, p);
    const err = await up;
    console.log(`power: the up during the power cut ended with: ${err ? err.message.split("\n").filter((l) => /pi-/.test(l)).slice(0, 3).join(" | ") : "success"}`);
    const afterBoot = await bootState(p);
    console.log(`power: after power-on pi runs ${afterBoot.running}, profile ${afterBoot.profile}, entry ${afterBoot.boot}, booted ${afterBoot.booted}`);
    expect(afterBoot.running).toBe(afterBoot.boot); // the machine booted its entry

    // The next finished run.
    const again = await upInBackground();
    if (again) console.log(`power: the next up failed: ${again.message.split("\n").filter((l) => /pi-/.test(l)).slice(0, 3).join(" | ")}`);
    console.log((await journal(p, "auto-upgrade", { messagesOnly: true })).filter((l) => /===/.test(l)).slice(-12).join("\n"));
    const now = await expectOneSystem("pi");
    expect([old, await validatedLink(p)]).toContain(now);
  });
});
