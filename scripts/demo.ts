// `npm run demo`: start the simulated fleet (fleet/README.md), run `pulumi up` on the demo stack
// with the real engine and a local backend, and print per host what was validated and switched.
// Run it again and nothing changes: the second `up` runs no remote command.
import * as os from "node:os";
import * as path from "node:path";
import { currentSystem, startFleet } from "../fleet/fleet";
import { demoConfig, fleetStack } from "../fleet/stack";

const short = (p: string | null | undefined) => (p ? p.replace(/^\/nix\/store\/([a-z0-9]{8})[a-z0-9]*-/, "/nix/store/$1…-") : "-");

async function main() {
  const root = process.env.NIXFLEET_DEMO_ROOT ?? path.join(os.tmpdir(), "nixfleet-demo");
  console.log(`simulated fleet and Pulumi state under ${root} (set NIXFLEET_DEMO_ROOT to move it)`);
  const fleet = await startFleet({ root: path.join(root, "fleet") });
  try {
    const stack = await fleetStack({ fleet, dir: path.join(root, "pulumi"), config: demoConfig(fleet) });
    const started = Date.now();
    const result = await stack.up({ onOutput: (out) => process.stdout.write(out), continueOnError: true });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);

    const status = (result.outputs.hosts?.value ?? {}) as Record<string, { role: string; validatedPath: string; switchedSystem: string }>;
    const rows = await Promise.all(
      fleet.hosts.map(async (h) => {
        const s = status[h.name];
        const current = await currentSystem(h);
        const same = s && current === s.validatedPath && s.switchedSystem === s.validatedPath;
        return [h.name, h.role, short(s?.validatedPath), short(s?.switchedSystem), short(current), same ? "yes" : "NO"];
      }),
    );
    const header = ["host", "role", "validated", "switched", "current system", "current = validated"];
    const widths = header.map((_, i) => Math.max(...[header, ...rows].map((r) => r[i].length)));
    const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join("  ");
    console.log(`\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}\n${rows.map(line).join("\n")}`);

    const changes = Object.entries(result.summary.resourceChanges ?? {}).filter(([op]) => op !== "same");
    console.log(
      changes.length === 0
        ? `\nno changes: nothing ran on any host (${seconds}s)`
        : `\n${changes.map(([op, n]) => `${n} ${op}`).join(", ")} in ${seconds}s; run \`npm run demo\` again: it changes nothing`,
    );
    if (rows.some((r) => r[5] !== "yes")) process.exitCode = 1;
  } finally {
    await fleet.stop();
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
