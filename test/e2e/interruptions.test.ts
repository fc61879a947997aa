// Issue 7, proofs (d) and (e): the host's timer never interleaves with a push rollout, and an `up`
// interrupted during validation leaves nothing that stops the next plain `up`. Real engine and sshd,
// SIMULATED NixOS (fleet/README.md).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { journal, sshExec } from "../../fleet/fleet";
import { activations, editHostConfig, hostStatus, startE2E, systemState, validatedLink, waitFor, withRoles, type E2E } from "./harness";

let t: E2E;

beforeAll(async () => {
  t = await startE2E("interrupt", 2360);
  await t.stack.up({ continueOnError: true }); // the module is active: the timer can run
});
afterAll(async () => t?.stop());

describe("rollouts that are interrupted or raced", () => {
  it("(d) a timer firing in a tight loop during a whole up never builds, switches or pushes anything but the rendered configuration", async () => {
    const racers = [t.host("lilith"), t.host("griefling")]; // a commit-back host and a pull-only one
    const before = Object.fromEntries(await Promise.all(racers.map(async (h) => [h.name, (await systemState(h)).running] as const)));
    const seen = Object.fromEntries(await Promise.all(racers.map(async (h) => [h.name, (await activations(h)).length] as const)));
    let stop = false;
    let timerRuns = 0;
    const loops = racers.map(async (h) => {
      while (!stop) {
        await sshExec(t.fleet, h, "systemctl start auto-upgrade.service", { timeoutMs: 120_000 });
        timerRuns++;
        // The machines run a real systemd: it refuses a unit's 6th start within 10 s (DefaultStartLimitBurst=5,
        // DefaultStartLimitIntervalSec=10s), and each timer run starts the hook too. A real timer never fires this
        // often; 2.5 s apart keeps the race (and the push's own hook start) within the limit.
        await new Promise((r) => setTimeout(r, 2_500));
      }
    });
    await t.setConfig(withRoles(t.config, { randomizedDelaySec: "11min" }));
    try {
      await t.stack.up({ continueOnError: true });
    } finally {
      stop = true;
      await Promise.all(loops);
    }
    console.log(`(d) ${timerRuns} timer runs raced the up`);
    expect(timerRuns).toBeGreaterThan(1);
    for (const h of racers) {
      const final = await validatedLink(h);
      expect((await systemState(h)).running).toBe(final);
      const activated = (await activations(h)).slice(seen[h.name]);
      // Only the system it ran before and the rendered one: never a mix of old and new files.
      expect(new Set(activated)).toEqual(new Set(activated.filter((p) => p === before[h.name] || p === final)));
      const skipped = (await journal(h)).filter((l) => /skipped/i.test(l));
      expect(skipped.length).toBeGreaterThan(0);
    }
  });

  it("(e) Ctrl-C during validation, then an immediate plain up, converges", async () => {
    const g = t.host("griefling");
    // A slow build, from the host's own configuration (a real derivation that takes 20 s).
    await editHostConfig(
      g,
      '  environment.systemPackages = [ (derivation { name = "e2e-slow"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "/bin/sleep 20; /bin/mkdir -p $out/bin" ]; }) ];',
    );
    await t.setConfig(withRoles(t.config, { randomizedDelaySec: "12min" }));
    const abort = new AbortController();
    const first = t.stack.up({ continueOnError: true, signal: abort.signal }).then(() => null, (e: Error) => e);
    await waitFor("griefling to start validating", async () => (await hostStatus(g).catch(() => ({}) as Record<string, any>)).phase === "validate", 120_000);
    abort.abort();
    expect(await first).toBeInstanceOf(Error);

    const started = Date.now();
    await t.stack.up({ continueOnError: true });
    console.log(`(e) re-run after Ctrl-C converged in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const final = await validatedLink(g);
    expect(await systemState(g)).toEqual({ running: final, profile: final, boot: final });
    expect(await hostStatus(g)).toMatchObject({ result: "success" });
    const lease = await sshExec(t.fleet, g, `cat ${g.stateDir}/lease 2>/dev/null || true`);
    expect(lease.stdout.trim()).toBe("");
  });
});
