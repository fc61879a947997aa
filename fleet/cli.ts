// SIMULATION — start/stop/inspect the local simulated fleet (fleet/README.md). For the demo and by hand:
//   npx tsx fleet/cli.ts start|stop|status [--root DIR] [--base-port N] [--fresh]
// --fresh (start): delete an existing fleet under DIR first.
// Prints JSON on stdout: the fleet's paths and its host table. Never prints the private key.
import * as os from "node:os";
import * as path from "node:path";
import { fleetStatus, startFleet, stopFleet } from "./fleet";

const USAGE = "usage: fleet/cli.ts start|stop|status [--root DIR] [--base-port N] [--fresh]";

function parse(argv: string[]): { cmd: string; root: string; basePort?: number; fresh: boolean } {
  const [cmd, ...rest] = argv;
  let root = process.env.NIXFLEET_FLEET_ROOT || path.join(os.tmpdir(), "nixfleet-fleet");
  let basePort: number | undefined;
  let fresh = false;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (a === "--root" && rest[i + 1]) root = rest[++i];
    else if (a.startsWith("--root=")) root = a.slice("--root=".length);
    else if (a === "--base-port" && rest[i + 1]) basePort = Number(rest[++i]);
    else if (a === "--fresh") fresh = true;
    else throw new Error(`unknown argument ${JSON.stringify(a)}\n${USAGE}`);
  }
  if (!["start", "stop", "status"].includes(cmd ?? "")) throw new Error(USAGE);
  if (basePort !== undefined && !(Number.isInteger(basePort) && basePort > 0 && basePort < 65536)) {
    throw new Error("--base-port must be a port number (1-65535)");
  }
  return { cmd, root: path.resolve(root), basePort, fresh };
}

async function table(root: string) {
  const hosts = await fleetStatus(root);
  return {
    root,
    originDir: path.join(root, "origin.git"),
    clientKeyPath: path.join(root, "client_ed25519"),
    knownHostsPath: path.join(root, "known_hosts"),
    hosts: (hosts ?? []).map((h) => ({
      name: h.name,
      role: h.role,
      address: h.address,
      port: h.port,
      user: h.user,
      hostKey: h.hostKey,
      checkout: h.checkout,
      running: h.running,
    })),
  };
}

async function main() {
  const { cmd, root, basePort, fresh } = parse(process.argv.slice(2));
  if (cmd === "start") await startFleet({ root, basePort, fresh });
  if (cmd === "stop") await stopFleet(root);
  process.stdout.write(`${JSON.stringify(await table(root), null, 2)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
