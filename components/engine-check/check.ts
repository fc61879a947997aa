// Manual check of the components on the REAL engine (toolchain/) and the simulated fleet, with a
// PLACEHOLDER bootstrap (placeholder-bootstrap.sh) and a FAKE `confirm` prepended to the shipped script:
// it checks what the Pulumi side does (outputs on failure, healing retries, waves, no-op), NOT the
// host side. Run from a copy prepared by run.sh, never from the repository itself. Ports 2810+.
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { startFleet } from "../../fleet/fleet";
import { fleetStack, setFleetConfig } from "../../fleet/stack";

const N = Number(process.env.HOSTS ?? 3);
async function main() {
  const root = path.join(process.env.CHECK_ROOT ?? "/tmp", `nixfleet-engine-check-${N}`);
  const fleet = await startFleet({ root: path.join(root, "fleet"), basePort: 2810, hosts: Array.from({ length: N }, (_, i) => ({ name: `x${i}`, role: "server" as const })) });
  try {
    await scenario(fleet);
  } finally {
    await fleet.stop();
  }
}

async function scenario(fleet: Awaited<ReturnType<typeof startFleet>>) {
  const root = path.join(process.env.CHECK_ROOT ?? "/tmp", `nixfleet-engine-check-${N}`);
  const waves = N === 3;
  const cfg = (delay: string) => ({
    "nixfleet:roles": { server: { randomizedDelaySec: delay, preUpdateHooks: [] } },
    "nixfleet:hosts": fleet.hosts.map((h, i) => ({ name: h.name, role: "server", address: h.address, port: h.port, user: h.user, hostKey: h.hostKey, configPath: h.checkout, stateDir: h.stateDir, ...(waves ? { wave: i } : {}) })),
  });
  const stack = await fleetStack({ fleet, dir: path.join(root, "pulumi"), stackName: "exp", config: cfg("10min") });
  const knob = (i: number, k: string, on: boolean) => (on ? fs.writeFile(path.join(fleet.hosts[i].stateDir, k), "") : fs.rm(path.join(fleet.hosts[i].stateDir, k), { force: true }));
  const up = async (label: string) => {
    const r = await stack.up({ continueOnError: true }).then((r) => ({ ok: true, changes: r.summary.resourceChanges, msg: "" }), (e: Error) => ({ ok: false, changes: undefined, msg: e.message }));
    const out = (await stack.outputs()).hosts?.value as Record<string, any>;
    console.log(`=== ${label}: ok=${r.ok} changes=${JSON.stringify(r.changes)}`);
    if (!r.ok) console.log("  errors:", r.msg.split("\n").filter((l) => /error:|wave|failed at/.test(l)).slice(0, 12).join("\n   "));
    for (const [n, s] of Object.entries(out ?? {})) console.log(`  ${n}: ${JSON.stringify(s)}`);
  };
  const log = async () => { for (const h of fleet.hosts) console.log(`  ${h.name} log: ${(await fs.readFile(path.join(h.stateDir, "experiment.log"), "utf8").catch(() => "")).trim().split("\n").join(" | ")}`); };
  if (N !== 3) {
    await up("first up");
    const dep = (await stack.exportStack()).deployment;
    console.log(`STATE ${N} hosts: ${JSON.stringify(dep).length} bytes, ${Math.round(JSON.stringify(dep).length / N)} per host`);
    for (const r of (dep as any).resources) {
      const sizes = Object.entries({ ...(r.inputs ?? {}) }).map(([k, v]) => `in.${k}=${JSON.stringify(v).length}`).concat(Object.entries(r.outputs ?? {}).map(([k, v]) => `out.${k}=${JSON.stringify(v).length}`));
      if (JSON.stringify(r).length > 1500) console.log(`  ${r.urn.split("::").pop()} ${JSON.stringify(r).length}: ${sizes.filter((x) => Number(x.split("=")[1]) > 300).join(" ")}`);
    }
    await up("no-op");
    return;
  }
  await up("1 first up");
  await up("2 no-op");
  await knob(1, "fail-confirm", true);
  await setFleetConfig(stack, cfg("11min"), fleet.privateKey);
  const pv = await stack.preview({ diff: true });
  console.log("preview diff lines with randomizedDelaySec:", pv.stdout.split("\n").filter((l) => /randomizedDelaySec/.test(l)).slice(0, 6).join("\n"));
  await up("3 x1 confirm fails");
  await log();
  await knob(1, "fail-confirm", false);
  await up("4 fixed, plain up");
  await log();
  await up("5 no-op");
  await knob(0, "fail-deploy", true);
  await setFleetConfig(stack, cfg("12min"), fleet.privateKey);
  await up("6 x0 deploy fails");
  await knob(0, "fail-deploy", false);
  await up("7 fixed, plain up");
  await up("8 no-op");
  await log();
  const dep = (await stack.exportStack()).deployment;
  console.log(`STATE 3 hosts: ${JSON.stringify(dep).length} bytes`);
}
main().catch((e) => { console.error(e); process.exit(1); });
