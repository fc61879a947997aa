// Runs stopped hard (SIGKILL; power loss looks the same to the next run): a half-activated host is settled
// by the next run before anything else, and an install stopped half way leaves no root-owned file.
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { BOOTSTRAP, breakSwitch, bundle, cleanupHosts, commitAsOwner, inHost, journal, killInHost, makeHost, PROFILE, push, pushFiles, realpathIn, rootOwned, sh, spawnInHost, status, switchLog, systemState, timer, validated, waitFor, writeHostConfig, type Host, present } from "./harness";

afterEach(cleanupHosts);

const previous = (h: Host) => path.join(h.state, "previous");

/** A push whose activator is SIGKILLed in the health gate: after `test` of the new system, before the profile. */
async function halfActivated() {
  const h = await makeHost({}, { AUTO_UPGRADE_HEALTH_UNITS: "slow.service" });
  const before = systemState(h);
  writeHostConfig(h, { version: "2", units: { "slow.service": "sleep 3" } });
  commitAsOwner(h);
  const p = push(h);
  await waitFor("the health gate", () => present(path.join(h.state, "status.json")) && status(h).phase === "health", 120_000);
  const pid = Number(/pid=(\d+)/.exec(fs.readFileSync(path.join(h.state, "lease"), "utf8"))![1]);
  killInHost(pid, "KILL");
  expect((await p).code).toBe(1);
  const half = systemState(h);
  expect(half.running).toBe(validated(h));
  expect(half.running).not.toBe(before.running);
  expect(half.profile).toBe(before.profile);
  expect(realpathIn(previous(h))).toBe(before.running);
  return { h, before, half };
}

describe("half-activated host (activator SIGKILLed after switch-to-configuration test)", () => {
  it("the next push re-activates the system that ran before, says so, and a failing activation then rolls back to it", async () => {
    const { h, before, half } = await halfActivated();
    writeHostConfig(h, { version: "3", failActivation: true, units: { "slow.service": "true" } });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code).toBe(1);
    // Back on the system that ran before the killed one, not on the half-activated one.
    expect(systemState(h)).toEqual(before);
    expect(d.stderr).toMatch(/An earlier activation never ended/);
    const st = status(h);
    expect(st.result).toBe("rolled-back");
    expect(st.warnings.join(" ")).toContain(`re-activated the previous system ${before.running} (it ran before ${half.running} was half activated)`);
    expect(journal(h)).toMatch(/=== WARNING: an earlier activation never ended .* ===/);
    expect(present(previous(h))).toBe(false);
    const log = switchLog(h);
    const i = log.indexOf(`test ${before.running} 0`, log.indexOf(`test ${half.running} 0`));
    expect(i).toBeGreaterThan(0);
    expect(log.slice(i + 1).map((l) => l.split(" ")[0] + (l.endsWith(" 0") ? "" : " failed"))).toEqual(["test failed", "test"]);
    expect(log.at(-1)).toBe(`test ${before.running} 0`);
  });

  it("the next timer run settles it first (loudly in journal and status), then upgrades with the right previous system", async () => {
    const { h, before, half } = await halfActivated();
    const r = await timer(h);
    expect(r.code, r.stderr).toBe(0);
    expect(systemState(h)).toEqual({ running: half.running, profile: half.running, boot: half.running });
    const st = status(h);
    expect(st).toMatchObject({ result: "success", mode: "timer" });
    expect(st.warnings.join(" ")).toMatch(/never ended .*re-activated the previous system/);
    const log = switchLog(h);
    expect(log.slice(-3)).toEqual([`test ${before.running} 0`, `test ${half.running} 0`, `boot ${half.running} 0`]);
    expect(present(previous(h))).toBe(false);
  });

  it("killed after the profile moved (before the boot entry): the next run writes the boot entry of the running system", async () => {
    const { h, half } = await halfActivated();
    // The state a kill between `nix-env --set` and `switch-to-configuration boot` leaves.
    inHost(["nix-env", "-p", PROFILE, "--set", half.running!]);
    const r = await timer(h);
    expect(r.code, r.stderr).toBe(0);
    expect(systemState(h)).toEqual({ running: half.running, profile: half.running, boot: half.running });
    expect(status(h).warnings.join(" ")).toContain(`the profile had moved to ${half.running}: wrote its boot entry`);
    expect(switchLog(h).at(-1)).toBe(`boot ${half.running} 0`);
    expect(present(previous(h))).toBe(false);
  });

  it("a settle that fails is loud, keeps the record, and names the way out", async () => {
    const { h, before } = await halfActivated();
    // The previous system's own switch-to-configuration cannot run (a simulated fault of the machine).
    breakSwitch();
    const r = await timer(h);
    expect(r.code).not.toBe(0);
    expect(status(h)).toMatchObject({ result: "failed", phase: "activate" });
    expect(status(h).message).toMatch(new RegExp(`re-activating the previous system ${before.running} FAILED.*rm .*previous`));
    expect(present(previous(h))).toBe(true);
  });
});

// A stand-in for a disk that stalls: while STALL/on exists, `install` or `chown` called on a
// nixfleet temp file blocks, so the test can kill the install half way; otherwise the real tool runs.
const stallShim = (stall: string) => `#!/bin/bash
for a; do
  case $a in *.nixfleet.*) if [ -e '${stall}/on' ]; then : >'${stall}/stalled'; sleep 60; fi ;; esac
done
exec "/usr/bin/\${0##*/}" "$@"
`;

describe("file install stopped half way", () => {
  it("leaves no root-owned file in the checkout; the next push removes the stale temp", async () => {
    const h = await makeHost();
    for (const tool of ["install", "chown"]) fs.writeFileSync(path.join(h.root, "bin", tool), stallShim(path.join(h.root, "stall")), { mode: 0o755 });
    fs.mkdirSync(path.join(h.root, "stall"), { mode: 0o1777 });
    fs.chmodSync(path.join(h.root, "stall"), 0o1777);
    fs.writeFileSync(path.join(h.root, "stall/on"), "");
    writeHostConfig(h, { version: "2" });
    commitAsOwner(h);

    const child = spawnInHost(["bash", "-c", fs.readFileSync(BOOTSTRAP, "utf8"), "nixfleet-push"], h.env, { detached: true });
    child.stdout!.resume();
    child.stderr!.resume();
    child.stdin!.end(bundle(pushFiles(h)));
    const closed = new Promise((r) => child.on("close", r));
    await waitFor("the install to stall", () => present(path.join(h.root, "stall/stalled")), 120_000);
    process.kill(-child.pid!, "SIGKILL");
    await closed;

    const temps = sh("find", [h.cfg, "-name", "*.nixfleet.*"]).split("\n").filter(Boolean);
    expect(temps).toHaveLength(1);
    expect(rootOwned(h.cfg)).toEqual([]);

    fs.rmSync(path.join(h.root, "stall/on"));
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    expect(sh("find", [h.cfg, "-name", "*.nixfleet.*"])).toBe("");
    expect(journal(h)).toContain(`removed ${temps[0]}, a temp file left by an install that was stopped half way`);
    expect(rootOwned(h.cfg)).toEqual([]);
  });
});
