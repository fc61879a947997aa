// SIMULATION — sshd ports on loopback: a host keeps its port across starts, else the next free one.
import * as net from "node:net";
import type { FleetHostSpec } from "./fleet";

export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** Ports for the hosts; `running(name)`: the host's machine runs (its port is its own, though not free). */
export async function pickPorts(
  specs: readonly FleetHostSpec[],
  basePort: number,
  state: { readonly hosts: readonly { name: string; port: number }[] } | null,
  running: (name: string) => boolean,
) {
  const taken = new Set<number>();
  const ports: number[] = [];
  for (const [i, h] of specs.entries()) {
    const previous = state?.hosts.find((s) => s.name === h.name)?.port;
    if (previous !== undefined && !taken.has(previous) && (running(h.name) || (await portIsFree(previous)))) {
      ports.push(previous);
      taken.add(previous);
      continue;
    }
    let p = basePort + i;
    while (taken.has(p) || !(await portIsFree(p))) p++;
    ports.push(p);
    taken.add(p);
  }
  return ports;
}
