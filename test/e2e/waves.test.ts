// Issue 10: waves run in order and stop on failure; hosts within a wave, and a whole fleet, run together
// (no host waits for a parallelism slot). Real engine and sshd, SIMULATED NixOS (fleet/README.md).
import type { EngineEvent } from "@pulumi/pulumi/automation";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { editHostConfig, readHostFile, startE2E, systemState, validatedLink, withHosts, withRoles, type E2E } from "./harness";

let t: E2E;
const WAVES: Record<string, number> = { malphas: 0, lilith: 1, griefling: 1, pi: 2 };

/** Per resource name: when its operation started and when it finished, from the engine's events. */
function timeline() {
  const start: Record<string, number> = {};
  const end: Record<string, number> = {};
  const onEvent = (e: EngineEvent) => {
    const pre = e.resourcePreEvent?.metadata;
    if (pre && pre.op !== "same") start[pre.urn.split("::").pop()!] = e.timestamp;
    const out = e.resOutputsEvent?.metadata;
    if (out && out.op !== "same") end[out.urn.split("::").pop()!] = e.timestamp;
  };
  const of = (re: RegExp, which: Record<string, number>) => Object.entries(which).filter(([n]) => re.test(n)).map(([, ts]) => ts);
  return { onEvent, start, end, of };
}

beforeAll(async () => {
  t = await startE2E("waves", 2400);
  let config = t.config;
  for (const [name, wave] of Object.entries(WAVES)) config = withHosts(config, [name], { wave });
  await t.setConfig(config);
});
afterAll(async () => t?.stop());

describe("waves", () => {
  it("run in order: a wave starts only after every host of the wave before has confirmed", async () => {
    const tl = timeline();
    await t.stack.up({ continueOnError: true, onEvent: tl.onEvent });
    for (const wave of [1, 2]) {
      const prev = Object.keys(WAVES).filter((n) => WAVES[n] === wave - 1);
      const cur = Object.keys(WAVES).filter((n) => WAVES[n] === wave);
      const prevConfirmed = Math.max(...prev.flatMap((n) => tl.of(new RegExp(`${n}-confirm$`), tl.end)));
      const curStarted = Math.min(...cur.flatMap((n) => tl.of(new RegExp(`${n}-deploy$`), tl.start)));
      expect(Number.isFinite(prevConfirmed) && Number.isFinite(curStarted)).toBe(true);
      expect(curStarted).toBeGreaterThanOrEqual(prevConfirmed);
    }
    // Within a wave, hosts start together.
    const [l, g] = ["lilith", "griefling"].map((n) => tl.of(new RegExp(`${n}-deploy$`), tl.start)[0]);
    const lEnd = tl.of(/lilith-deploy$/, tl.end)[0];
    expect(g).toBeLessThan(lEnd);
    expect(l).toBeLessThan(tl.of(/griefling-deploy$/, tl.end)[0]);
  });

  it("a failure in wave 1 leaves wave 2 untouched: its system, files and state", async () => {
    const pi = t.host("pi");
    const piFiles = async () => Promise.all(["roles/form-pi.nix", `hosts/pi/nixfleet.nix`].map((f) => readHostFile(pi, path.join(pi.checkout, f))));
    const before = { system: await systemState(pi), files: await piFiles(), status: await readHostFile(pi, path.join(pi.stateDir, "status.json")) };
    const restore = await editHostConfig(t.host("griefling"), '  system.activationScripts.e2eBroken = "exit 1";');
    await t.setConfig(withRoles(t.config, { randomizedDelaySec: "17min" }));
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/griefling-deploy/);
    expect(err?.message).toMatch(/wave 1/);
    expect(await systemState(pi)).toEqual(before.system);
    expect(await piFiles()).toEqual(before.files);
    expect(await readHostFile(pi, path.join(pi.stateDir, "status.json"))).toBe(before.status);
    // lilith, in the same wave as the failed host, still finished.
    const lilith = t.host("lilith");
    const final = await validatedLink(lilith);
    expect((await systemState(lilith)).running).toBe(final);

    await restore();
    await t.stack.up({ continueOnError: true });
    expect((await systemState(pi)).running).toBe(await validatedLink(pi));
  });
});

describe("parallelism", () => {
  it("a fleet of 10 hosts starts every host's deploy before any finishes (no host waits for a slot)", { timeout: 600_000 }, async () => {
    const hosts = Array.from({ length: 10 }, (_, i) => ({ name: `h${String(i).padStart(2, "0")}`, role: (["desktop", "laptop", "server", "pi"] as const)[i % 4] }));
    const big = await startE2E("parallel", 2420, {
      hosts,
      config: (c) => ({ ...c, "nixfleet:roles": { desktop: { hostCanCommitConfig: false }, laptop: { hostCanCommitConfig: false } } }),
    });
    try {
      const tl = timeline();
      await big.stack.up({ continueOnError: true, onEvent: tl.onEvent });
      const starts = tl.of(/-deploy$/, tl.start);
      const ends = tl.of(/-deploy$/, tl.end);
      expect(starts.length).toBe(10);
      expect(Math.max(...starts)).toBeLessThan(Math.min(...ends));
    } finally {
      await big.stop();
    }
  });
});
