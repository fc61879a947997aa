// `npm run demo`: start the simulated fleet (fleet/README.md), run `pulumi up` on the demo stack
// with the real engine and a local backend, and print per host what was validated and switched.
// Run it again and nothing changes: the second `up` runs no remote command.
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { currentSystem, hostPath, hostRealpath, startFleet } from "../fleet/fleet";
import { demoConfig, fleetStack } from "../fleet/stack";
import type { UpResult } from "@pulumi/pulumi/automation";

const short = (p: string | null | undefined) => (p ? p.replace(/^\/nix\/store\/([a-z0-9]{8})[a-z0-9]*-/, "/nix/store/$1…-") : "-");

async function main() {
  const root = path.resolve(process.env.NIXFLEET_DEMO_ROOT || path.join(os.tmpdir(), "nixfleet-demo"));
  console.log(`simulated fleet and Pulumi state under ${root} (set NIXFLEET_DEMO_ROOT to move it)`);
  const fleet = await startFleet({ root: path.join(root, "fleet") });
  try {
    const stack = await fleetStack({ fleet, dir: path.join(root, "pulumi"), config: demoConfig(fleet) });
    const started = Date.now();
    let result: UpResult | undefined;
    try {
      // A host that fails stops only itself; the table below shows where each host stands.
      result = await stack.up({ onOutput: (out) => process.stdout.write(out), continueOnError: true });
    } catch (e) {
      console.error(`\npulumi up failed: ${e instanceof Error ? e.message.split("\n").filter((l) => /error:/.test(l)).join("\n") : e}`);
      process.exitCode = 1;
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(1);

    // Read back from each host itself: the running system, the GC-rooted validated and golden builds, status.json.
    const rows = await Promise.all(
      fleet.hosts.map(async (h) => {
        const link = (name: string) => hostRealpath(h, path.join(h.stateDir, name));
        const [validated, golden, running] = [await link("validated"), await link("golden"), await currentSystem(h)];
        const status = JSON.parse(await fs.readFile(hostPath(h, path.join(h.stateDir, "status.json")), "utf8").catch(() => "{}"));
        const last = status.result ? `${status.mode} ${status.result}${status.result === "success" ? "" : ` at ${status.phase}`}` : "-";
        const converged = running !== null && running === validated && running === golden;
        return [h.name, h.role, short(running), converged ? "yes" : "NO", last, status.needsReboot ? "yes" : "no"];
      }),
    );
    const header = ["host", "role", "running system", "= validated = golden", "last run", "needs reboot"];
    const widths = header.map((_, i) => Math.max(...[header, ...rows].map((r) => r[i].length)));
    const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
    console.log(`\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}\n${rows.map(line).join("\n")}`);

    if (result) {
      // "read" is the stack reading its own last outputs (how a failed host is retried): no change.
      const changes = Object.entries(result.summary.resourceChanges ?? {}).filter(([op]) => op !== "same" && op !== "read");
      console.log(
        changes.length === 0
          ? `\nno changes: nothing ran on any host (${seconds}s)`
          : `\n${changes.map(([op, n]) => `${n} ${op}`).join(", ")} in ${seconds}s; run \`npm run demo\` again: it changes nothing`,
      );
    }
    if (rows.some((r) => r[3] !== "yes")) process.exitCode = 1;
  } finally {
    await fleet.stop();
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
