// Issue 8, "Commit-back heals": unpushed commits reach the forge on the next run, a rebase conflict is loud,
// a host's edit of a nixfleet-managed file is never pushed to the other hosts. Real engine, sshd and git;
// SIMULATED NixOS (fleet/README.md). malphas (desktop) and lilith (laptop) commit back.
import { execFileSync } from "node:child_process";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostGit, hostPath, journal, setForgeDown, sshExec, type FleetHost } from "../../fleet/fleet";
import { hostStatus, startE2E, systemState, validatedLink, withRoles, type E2E } from "./harness";

let t: E2E;
const git = (h: FleetHost, ...args: string[]) => hostGit(h, ...args);
const timer = (name: string) => sshExec(t.fleet, t.host(name), "systemctl start auto-upgrade.service");
/** Commits of the checkout that origin's main lacks. */
const unpushed = async (name: string) => Number(await git(t.host(name), "rev-list", "--count", "origin/main..HEAD"));

beforeAll(async () => {
  t = await startE2E("commitback", 2440);
  await t.stack.up({ continueOnError: true });
});
afterAll(async () => t?.stop());

describe("commit-back that heals", () => {
  it("a commit made while the forge is down is pushed by the next run, even with nothing new to commit", async () => {
    const l = t.host("lilith");
    await setForgeDown(l, true);
    try {
      await fs.appendFile(hostPath(l, path.join(l.checkout, "flake.lock")), "\n");
      await timer("lilith");
      expect((await hostStatus(l)).warnings.join(" ")).toMatch(/push|fetch|remote/i);
    } finally {
      await setForgeDown(l, false);
    }
    await git(l, "fetch", "-q", "origin");
    expect(await unpushed("lilith"), (await journal(l)).slice(-25).join("\n")).toBeGreaterThan(0);
    const run = await timer("lilith");
    expect(run.code).toBe(0);
    await git(l, "fetch", "-q", "origin");
    expect(await unpushed("lilith")).toBe(0);
  });

  it("conflicting edits on two commit-back hosts: the loser fails loudly, in status.json and in Pulumi's output", async () => {
    const [m, l] = [t.host("malphas"), t.host("lilith")];
    const rel = path.join("hosts", "lilith", "configuration.nix");
    await fs.appendFile(hostPath(l, path.join(l.checkout, rel)), "# lilith's own edit\n");
    expect((await timer("lilith")).code).toBe(0);
    // malphas edits the same place without having pulled lilith's commit; the next rollout commits it back.
    await fs.appendFile(hostPath(m, path.join(m.checkout, rel)), "# malphas' conflicting edit\n");
    await t.setConfig(withRoles(t.config, { randomizedDelaySec: "21min" }));
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/malphas-confirm/);
    expect(err?.message).toMatch(/conflict/i);
    const status = await hostStatus(m);
    expect(JSON.stringify(status)).toMatch(/conflict/i);
    // The upgrade itself stands: malphas runs what it validated; only the commit-back is stuck, and says so.
    expect((await systemState(m)).running).toBe(await validatedLink(m));
    // Still loud on the next plain up, until someone resolves it.
    const again = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(again?.message).toMatch(/malphas-confirm/);
  });

  it("a host's edit of a nixfleet-managed file is never committed back", async () => {
    const l = t.host("lilith");
    const role = hostPath(l, path.join(l.checkout, "roles", "form-laptop.nix"));
    await fs.appendFile(role, "# a local tweak of a generated file\n");
    const run = await timer("lilith");
    expect(run.code).toBe(0);
    expect((await hostStatus(l)).warnings.join(" ")).toMatch(/roles\/form-laptop\.nix was edited on the host; nixfleet manages it, so the edit is not committed back/);
    const shown = execFileSync("git", ["--git-dir", t.fleet.originDir, "show", "main:roles/form-laptop.nix"], { encoding: "utf8" });
    expect(shown).not.toContain("a local tweak");
    // The edit stays the host's: still in its working tree.
    expect(await fs.readFile(role, "utf8")).toContain("a local tweak");
  });
});
