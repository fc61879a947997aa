// End to end: the real Pulumi engine (CLI from toolchain/), real sshd, git and Nix, against the SIMULATED
// fleet (fleet/README.md), whose hosts have a stock NixOS toolset (no jq, no nh). One fleet and one stack
// for the whole file; the tests run in order and each starts from the state the previous one left, as a
// user's stack would.
import { execFileSync } from "node:child_process";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostExec, hostPath, journal, originLog, sshExec } from "../../fleet/fleet";
import { allSessions, changes, editHostConfig, goldenLink, hostStatus, startE2E, systemState, validatedLink, withHosts, withRoles, type E2E } from "./harness";

let t: E2E;

beforeAll(async () => {
  t = await startE2E("rollout", 2320);
});
afterAll(async () => t?.stop());

async function expectConverged(name: string) {
  const h = t.host(name);
  const final = await validatedLink(h);
  expect(final).toMatch(new RegExp(`^/nix/store/[a-z0-9]{32}-nixos-system-${name}-`));
  expect(await systemState(h)).toEqual({ running: final, profile: final, boot: final });
  expect(await goldenLink(h)).toBe(final);
}

describe("pulumi against the simulated fleet", () => {
  it("a stock NixOS session has no jq and no nh", async () => {
    const r = await sshExec(t.fleet, t.host("pi"), "command -v jq || echo no-jq; command -v nh || echo no-nh");
    expect(r.stdout).toContain("no-jq");
    expect(r.stdout).toContain("no-nh");
  });

  it("preview --diff shows the rendered Nix and runs nothing on any host", async () => {
    const before = await allSessions(t.fleet);
    const systems = await Promise.all(t.fleet.hosts.map(systemState));
    const preview = await t.stack.preview({ diff: true });
    // Each host's deploy carries the bundle of its files as stdin (the engine shows its first lines).
    expect(preview.stdout).toMatch(/fleet-malphas-deploy/);
    // Files in path order: the host's own rendered settings come first, as text.
    expect(preview.stdout).toMatch(/stdin\s+: "nixfleet-bundle 1\\nfile 0644 [0-9a-f]{64} text \d+ hosts\/malphas\/nixfleet\.nix\\n/);
    expect(await allSessions(t.fleet)).toEqual(before);
    expect(await Promise.all(t.fleet.hosts.map(systemState))).toEqual(systems);
    for (const h of t.fleet.hosts) expect(await fs.stat(hostPath(h, path.join(h.checkout, "modules"))).catch(() => null)).toBeNull();
  });

  it("up: every host runs its hooks, validates, and ends on exactly the validated system, in two SSH sessions", async () => {
    const before = await allSessions(t.fleet);
    const up = await t.stack.up({ continueOnError: true });
    const after = await allSessions(t.fleet);
    for (const h of t.fleet.hosts) {
      await expectConverged(h.name);
      expect(after[h.name] - before[h.name]).toBeLessThanOrEqual(2);
      const out = (up.outputs.hosts.value as Record<string, any>)[h.name];
      expect(out.validatedPath).toBe(await validatedLink(h));
      const log = await journal(h);
      const hooks = log.findIndex((l) => /pre-update hook/i.test(l));
      const validated = log.findIndex((l) => /=== Build validation PASSED/.test(l));
      expect(hooks).toBeGreaterThanOrEqual(0);
      expect(validated).toBeGreaterThan(hooks);
      expect(await hostStatus(h)).toMatchObject({ mode: "push", result: "success", needsReboot: false });
    }
  });

  it("leaves a user's checkout entirely the user's: no root-owned file or directory, .git included", async () => {
    const h = t.host("malphas");
    expect(h.owner).not.toBe("root");
    expect(execFileSync("find", [hostPath(h, h.checkout), "-user", "root"], { encoding: "utf8" })).toBe("");
  });

  it("commits back from the desktop and the laptop, never from the server or the pi (plan's Test 4)", async () => {
    const subjects = await originLog(t.fleet);
    expect(subjects).toEqual(expect.arrayContaining([expect.stringMatching(/^chore\(malphas\): auto-update \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)]));
    expect(subjects).toEqual(expect.arrayContaining([expect.stringMatching(/^chore\(lilith\): auto-update /)]));
    expect(subjects.filter((s) => /griefling|\(pi\)/.test(s))).toEqual([]);
  });

  it("re-run with nothing changed runs no remote command", async () => {
    const before = await allSessions(t.fleet);
    const up = await t.stack.up();
    expect(changes(up)).toEqual({});
    expect(await allSessions(t.fleet)).toEqual(before);
  });

  it("a setting of one host updates that host only, in two sessions, with no replacement", async () => {
    const before = await allSessions(t.fleet);
    await t.setConfig(withHosts(t.config, ["pi"], { schedule: "Sat 02:00" }));
    const touched: Record<string, string> = {};
    await t.stack.up({
      onEvent: (e) => {
        const m = e.resourcePreEvent?.metadata;
        if (m && m.op !== "same" && m.op !== "read") touched[m.urn.split("::").pop()!] = m.op;
      },
    });
    expect(Object.keys(touched).sort()).toEqual(["fleet-pi-confirm", "fleet-pi-deploy"]);
    expect(Object.values(touched)).not.toContain("replace");
    const after = await allSessions(t.fleet);
    for (const h of t.fleet.hosts) expect(after[h.name] - before[h.name]).toBe(h.name === "pi" ? 2 : 0);
  });

  it("keeps the SSH private key out of the state in clear", async () => {
    const state = await fs.readFile(path.join(t.dir, "pulumi", "state", ".pulumi", "stacks", "nixfleet", "rollout.json"), "utf8");
    const keyBody = t.fleet.privateKey.split("\n")[1];
    expect(state).toContain("ciphertext");
    expect(state).not.toContain(keyBody);
    expect(state).not.toContain("PRIVATE KEY");
  });

  it("a host whose config does not build fails at validation and keeps its system; the others upgrade (plan's Test 1)", async () => {
    const broken = t.host("griefling");
    const restore = await editHostConfig(broken, "  { this is not nix");
    const before = await systemState(broken);
    await t.setConfig(withRoles(t.config, { randomizedDelaySec: "5min" }));
    // A changed file: preview --diff shows the changed Nix line, old and new.
    const preview = await t.stack.preview({ diff: true });
    expect(preview.stdout).toMatch(/-\s+randomizedDelaySec = lib\.mkDefault "30min";/);
    expect(preview.stdout).toMatch(/\+\s+randomizedDelaySec = lib\.mkDefault "5min";/);
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/griefling-deploy/);
    expect(err?.message).toMatch(/validate FAILED: nix build of nixosConfigurations\.griefling/);
    expect(await systemState(broken)).toEqual(before);
    expect(await hostStatus(broken)).toMatchObject({ phase: "validate", result: "failed" });
    for (const name of ["malphas", "lilith", "pi"]) await expectConverged(name);

    await restore();
    await t.stack.up({ continueOnError: true });
    await expectConverged("griefling");
  });

  it("shows what an upgrade changes, package by package, in the host's output and status.json", async () => {
    const g = t.host("griefling");
    const hello = (v: string) =>
      `  environment.systemPackages = [ (derivation { name = "hello-${v}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "/bin/mkdir -p $out/bin; echo ${v} > $out/bin/hello" ]; }) ];`;
    const restore = await editHostConfig(g, hello("2.10"));
    await t.setConfig(withHosts(t.config, ["griefling"], { randomizedDelaySec: "31min" }));
    await t.stack.up({ continueOnError: true });
    await restore();
    await editHostConfig(g, hello("2.12"));
    await t.setConfig(withHosts(t.config, ["griefling"], { randomizedDelaySec: "32min" }));
    const up = await t.stack.up({ continueOnError: true });
    const out = (up.outputs.hosts.value as Record<string, any>).griefling;
    expect(out.closureDiff).toMatch(/hello: 2\.10 → 2\.12/);
    expect((await hostStatus(g)).closureDiff).toMatch(/hello: 2\.10 → 2\.12/);
    await expectConverged("griefling");
  });

  it("a failing pre-update hook stops that host before its build; the error gives systemd's result and the hook's own output", async () => {
    const g = t.host("griefling");
    // The simulated chezmoi sync appends to this log: a directory in its place makes the hook itself fail.
    const log = "/var/log/nixfleet-hooks.log";
    await hostExec(g, ["sh", "-c", `mv ${log} ${log}.kept && mkdir ${log}`]);
    const before = await systemState(g);
    await t.setConfig(withHosts(t.config, ["griefling"], { randomizedDelaySec: "33min" }));
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/pre-update hook chezmoi-pre-update\.service failed \(systemd result: exit-code\)/);
    expect(err?.message).toMatch(/nixfleet-hooks\.log: Is a directory/);
    expect(await systemState(g)).toEqual(before);
    expect(await hostStatus(g)).toMatchObject({ phase: "hooks", result: "failed" });

    await hostExec(g, ["sh", "-c", `rmdir ${log} && mv ${log}.kept ${log}`]);
    await t.stack.up({ continueOnError: true });
    await expectConverged("griefling");
  });

  it("refuses to overwrite a file edited on the host, changes nothing there, and its advice works as written", async () => {
    const h = t.host("pi");
    const role = hostPath(h, path.join(h.checkout, "roles", "form-pi.nix"));
    const hostFile = hostPath(h, path.join(h.checkout, "hosts", "pi", "nixfleet.nix"));
    const edited = `${await fs.readFile(role, "utf8")}# local edit on the pi\n`;
    await fs.writeFile(role, edited);
    const hostFileBefore = await fs.readFile(hostFile, "utf8");
    const before = await systemState(h);

    await t.setConfig(withRoles(withHosts(t.config, ["pi"], { schedule: "Sat 03:00" }), { randomizedDelaySec: "6min" }));
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/refusing to overwrite: roles\/form-pi\.nix \(edited on the host since nixfleet last wrote it\)/);
    expect(await fs.readFile(role, "utf8")).toBe(edited);
    expect(await fs.readFile(hostFile, "utf8")).toBe(hostFileBefore);
    expect(await systemState(h)).toEqual(before);

    // Do what the message says, word for word: it names a command.
    const advice = /run: (mv .*?) and run pulumi up again/.exec(err!.message)?.[1];
    expect(advice).toBeTruthy();
    await sshExec(t.fleet, h, advice!);
    await t.stack.up({ continueOnError: true });
    expect(await fs.readFile(role, "utf8")).toContain('randomizedDelaySec = lib.mkDefault "6min";');
    expect(await fs.readFile(hostFile, "utf8")).toContain('schedule = "Sat 03:00";');
    await expectConverged("pi");
  });

  it("the host's own timer succeeds after a push and pulls cleanly; the next up is a no-op", async () => {
    for (const name of ["malphas", "griefling"]) {
      const h = t.host(name);
      const run = await sshExec(t.fleet, h, "systemctl start auto-upgrade.service");
      expect(run.code, `${run.stderr}\n${(await journal(h)).slice(-15).join("\n")}`).toBe(0);
      expect(await hostStatus(h)).toMatchObject({ mode: "timer", result: "success" });
      await expectConverged(name);
    }
    expect(changes(await t.stack.up())).toEqual({});
  });
});
