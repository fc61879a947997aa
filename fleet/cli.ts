// SIMULATION — start/stop/inspect the local simulated fleet (fleet/README.md). For the demo and by hand:
//   npx tsx fleet/cli.ts start|stop|status [--root DIR] [--base-port N] [--fresh]
//   npx tsx fleet/cli.ts shell HOST [--console] [--root DIR]
// --fresh (start): delete an existing fleet under DIR first.
// start/stop/status print JSON on stdout: the fleet's paths and its host table. Never the private key.
// shell: a root shell on the host over SSH, as the deployer reaches it; --console: through the machine's
// console instead (nsenter into it; works while its sshd is down).
import { spawnSync } from "node:child_process";
import * as os from "node:os";
import * as path from "node:path";
import { fleetStatus, SESSION_PATH, sshArgs, startFleet, stopFleet } from "./fleet";
import { machinePid1 } from "./machine/machine";

const USAGE = "usage: fleet/cli.ts start|stop|status [--root DIR] [--base-port N] [--fresh] | shell HOST [--console] [--root DIR]";

function parse(argv: string[]): { cmd: string; root: string; basePort?: number; fresh: boolean; host?: string; console: boolean } {
  const [cmd, ...rest] = argv;
  let root = process.env.NIXFLEET_FLEET_ROOT || path.join(os.tmpdir(), "nixfleet-fleet");
  let basePort: number | undefined;
  let fresh = false;
  let host: string | undefined;
  let onConsole = false;
  if (cmd === "shell" && rest[0] && !rest[0].startsWith("-")) host = rest.shift();
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (a === "--console" && cmd === "shell") onConsole = true;
    else if (a === "--root" && rest[i + 1]) root = rest[++i];
    else if (a.startsWith("--root=")) root = a.slice("--root=".length);
    else if (a === "--base-port" && rest[i + 1]) basePort = Number(rest[++i]);
    else if (a === "--fresh") fresh = true;
    else throw new Error(`unknown argument ${JSON.stringify(a)}\n${USAGE}`);
  }
  if (!["start", "stop", "status", "shell"].includes(cmd ?? "") || (cmd === "shell" && !host)) throw new Error(USAGE);
  if (basePort !== undefined && !(Number.isInteger(basePort) && basePort > 0 && basePort < 65536)) {
    throw new Error("--base-port must be a port number (1-65535)");
  }
  return { cmd, root: path.resolve(root), basePort, fresh, host, console: onConsole };
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

async function shell(root: string, name: string, onConsole: boolean): Promise<number> {
  const h = (await fleetStatus(root))?.find((x) => x.name === name);
  if (!h) throw new Error(`no host ${name} in the fleet at ${root}`);
  const pid1 = machinePid1(h.machine);
  if (pid1 === null) throw new Error(`${name}'s machine is not running: npx tsx fleet/cli.ts start --root ${root}`);
  const r = onConsole
    ? spawnSync("nsenter", ["-t", String(pid1), "-a", "-r", "-w", "--", "/usr/bin/env", "-i", `PATH=${SESSION_PATH}`, "HOME=/root", `TERM=${process.env.TERM ?? "xterm"}`, "/bin/bash", "-l"], { stdio: "inherit" })
    : spawnSync("ssh", ["-t", ...sshArgs({ clientKeyPath: path.join(root, "client_ed25519"), knownHostsPath: path.join(root, "known_hosts") }, h)], { stdio: "inherit" });
  return r.status ?? 1;
}

async function main() {
  const { cmd, root, basePort, fresh, host, console: onConsole } = parse(process.argv.slice(2));
  if (cmd === "shell") {
    process.exitCode = await shell(root, host!, onConsole);
    return;
  }
  if (cmd === "start") await startFleet({ root, basePort, fresh });
  if (cmd === "stop") await stopFleet(root);
  process.stdout.write(`${JSON.stringify(await table(root), null, 2)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
