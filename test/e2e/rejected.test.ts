// Issue 15, build item 1: "rolled back or refused means gone". A push that is rolled back (no confirmation)
// or refused (settings check) leaves the host's checkout where the last confirmed state left it, keeps the
// rejected files in the state dir, and the host's own timer, which builds whatever the checkout holds,
// activates nothing new. Real engine, real sshd, git and Nix; SIMULATED NixOS (fleet/README.md).
//
// The lock-out stands for any pushed change that cuts the deployer off (firewall, port, key): the host's own
// configuration turns sshd off when nixfleet's rendered setting says "13min", so the push of that setting
// (a file nixfleet writes) is what locks the host out. griefling: root's checkout; malphas: a user's
// checkout with commit-back on (a rejected file must never reach the remote).
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostExec, hostGit, hostPath, ORIGIN_IN_MACHINE, sshExec, type FleetHost } from "../../fleet/fleet";
import { activations, goldenLink, hostStatus, startE2E, systemState, validatedLink, waitFor, withHosts, withRoles, type E2E } from "./harness";

let t: E2E;
const NAMES = ["malphas", "griefling"];

beforeAll(async () => {
  t = await startE2E("rejected", 2500, { hosts: [{ name: "malphas", role: "desktop", owner: "nixfleet-evie" }, { name: "griefling", role: "server" }] });
  await t.stack.up({ continueOnError: true });
});
afterAll(async () => t?.stop());

/** The host's own configuration.nix gets `lines` (with `config` in scope), as its user would edit it. */
async function editOwnConfig(h: FleetHost, lines: string): Promise<() => Promise<void>> {
  const file = hostPath(h, path.join(h.checkout, "hosts", h.name, "configuration.nix"));
  const original = await fs.readFile(file, "utf8");
  const end = original.lastIndexOf("}");
  const edited = `${original.slice(0, end)}  # e2e\n${lines}\n${original.slice(end)}`.replace("{ lib, ... }:", "{ config, lib, ... }:");
  expect(edited).toContain("{ config, lib, ... }:");
  await fs.writeFile(file, edited);
  return () => fs.writeFile(file, original);
}

/** The checkout as git sees it: index entries and the working tree's difference from them. */
async function checkout(h: FleetHost) {
  return { index: await hostGit(h, "ls-files", "--stage"), worktree: await hostGit(h, "diff") };
}

/** Files that hold `word`: in the working tree, in the index, and (commit-back) on the remote's branch. */
async function holding(h: FleetHost, word: string) {
  const grep = async (...args: string[]) => {
    const r = await hostExec(h, ["git", ...args], { user: h.owner });
    expect(r.code, r.stderr).toBeLessThan(2); // 0 found, 1 not found
    return r.stdout.trim();
  };
  return {
    worktree: await grep("-C", h.checkout, "grep", "-l", "-F", "--", word),
    index: await grep("-C", h.checkout, "grep", "--cached", "-l", "-F", "--", word),
    origin: await grep("--git-dir", ORIGIN_IN_MACHINE, "grep", "-l", "-F", "--", word, "main"),
  };
}

const none = { worktree: "", index: "", origin: "" };

/** The host's timer run, started from the machine's console (no SSH: it must work when sshd is gone). */
async function timerRun(h: FleetHost) {
  const r = await hostExec(h, ["systemctl", "start", "auto-upgrade.service"], { timeoutMs: 600_000 });
  return { code: r.code, status: await hostStatus(h) };
}

async function expectConverged(h: FleetHost) {
  const validated = await validatedLink(h);
  expect(await systemState(h)).toEqual({ running: validated, profile: validated, boot: validated });
  expect(await goldenLink(h)).toBe(validated);
  expect(await hostStatus(h)).toMatchObject({ result: "success" });
}

describe("a rejected push is gone", () => {
  it("rolled back (no confirmation): the checkout is the confirmed one, the rejected files are kept, the timer keeps the old system; fixed, a plain up converges", { timeout: 900_000 }, async () => {
    const hosts = NAMES.map((n) => t.host(n));
    const restores = await Promise.all(hosts.map((h) => editOwnConfig(h, '  services.openssh.enable = config.myModules.services.system.autoUpgrade.randomizedDelaySec != "13min";')));
    await t.setConfig(withHosts(t.config, NAMES, { confirmTimeout: 10 }));
    await t.stack.up({ continueOnError: true });
    for (const h of hosts) await expectConverged(h);
    const before = await Promise.all(hosts.map(async (h) => ({ state: await systemState(h), checkout: await checkout(h), activated: 0 })));

    await t.setConfig(withRoles(t.config, { randomizedDelaySec: "13min" }));
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/malphas-(deploy|confirm)/);
    expect(err?.message).toMatch(/griefling-(deploy|confirm)/);
    for (const [i, h] of hosts.entries()) {
      await waitFor(`${h.name}'s sshd to answer again`, async () => (await sshExec(t.fleet, h, "true", { timeoutMs: 5_000 }).catch(() => ({ code: 255 }))).code === 0, 120_000, 500);
      await waitFor(`${h.name}'s rollback to end`, async () => (await hostStatus(h)).result !== "running", 120_000, 500);
      const status = await hostStatus(h);
      expect(status.result).toBe("rolled-back");
      expect(status.rejectedFiles).toBe(path.join(h.stateDir, "rejected", status.rollout));
      expect(status.message).toContain(`the rejected ones kept in ${status.rejectedFiles}`);
      expect(await systemState(h)).toEqual(before[i].state);
      // The checkout is exactly the confirmed one: index entries and working tree.
      expect(await checkout(h)).toEqual(before[i].checkout);
      expect(await holding(h, 'mkDefault "13min"')).toEqual(none);
      // The rejected files are where the message says.
      const role = h.role === "desktop" ? "roles/form-desktop.nix" : "roles/form-server.nix";
      expect(await fs.readFile(hostPath(h, path.join(status.rejectedFiles, role)), "utf8")).toContain('mkDefault "13min"');
      before[i].activated = (await activations(h)).length;
    }

    // The host's own timer: builds the checkout (the confirmed config), activates nothing new (no
    // switch-to-configuration since the rollback's re-activation).
    for (const [i, h] of hosts.entries()) {
      const run = await timerRun(h);
      expect(run.code).toBe(0);
      expect(run.status).toMatchObject({ mode: "timer", result: "success" });
      expect(await systemState(h)).toEqual(before[i].state);
      expect((await activations(h)).length).toBe(before[i].activated);
      expect(await holding(h, 'mkDefault "13min"')).toEqual(none);
      expect((await sshExec(t.fleet, h, "true", { timeoutMs: 10_000 })).code).toBe(0);
      console.log(`${h.name}: after the rollback, the timer run kept ${before[i].state.running} (activations: ${before[i].activated} before, ${(await activations(h)).length} after)`);
    }

    // Fixed (the host no longer ties sshd to the setting): a plain up converges on the new setting.
    for (const r of restores) await r();
    await t.stack.up({ continueOnError: true });
    for (const [i, h] of hosts.entries()) {
      await expectConverged(h);
      expect((await systemState(h)).running).not.toBe(before[i].state.running);
      expect((await holding(h, 'mkDefault "13min"')).worktree).not.toBe("");
    }
  });

  it("refused (settings check): nothing activated now or by the timer, the checkout is the confirmed one", { timeout: 900_000 }, async () => {
    const h = t.host("griefling");
    // The host's own config pins healthTimeout to the value deployed now; a push of another value is refused.
    const restore = await editOwnConfig(h, "  myModules.services.system.autoUpgrade.healthTimeout = lib.mkForce 120;");
    await t.stack.up({ continueOnError: true });
    await expectConverged(h);
    const before = { state: await systemState(h), checkout: await checkout(h), activated: (await activations(h)).length };

    await t.setConfig(withHosts(t.config, ["griefling"], { healthTimeout: 99, randomizedDelaySec: "21min" }));
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/griefling-deploy/);
    expect(err?.message).toMatch(/settings differ/);
    const status = await hostStatus(h);
    expect(status.result).toBe("failed");
    expect(status.rejectedFiles).toBe(path.join(h.stateDir, "rejected", status.rollout));
    expect(status.message).toContain(`the rejected ones kept in ${status.rejectedFiles}`);
    expect(await checkout(h)).toEqual(before.checkout);
    expect(await holding(h, '"21min"')).toEqual(none);
    expect(await fs.readFile(hostPath(h, path.join(status.rejectedFiles, "hosts/griefling/nixfleet.nix")), "utf8")).toContain('"21min"');

    const run = await timerRun(h);
    expect(run.code).toBe(0);
    expect(run.status).toMatchObject({ mode: "timer", result: "success" });
    expect(await systemState(h)).toEqual(before.state);
    expect((await activations(h)).length).toBe(before.activated);
    expect(await holding(h, '"21min"')).toEqual(none);

    await restore();
    await t.stack.up({ continueOnError: true });
    await expectConverged(h);
  });
});
