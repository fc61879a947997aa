// SIMULATION — network faults of a simulated host, with real TCP behaviour.
//   partitionHost: iptables DROP of every packet to and from the host's sshd port on loopback: new
//     connections hang in SYN-SENT, open ones stop getting data or ACKs; nothing answers with a RST, as
//     when a machine falls off the network. healHost removes exactly those rules.
//   freezeHost: SIGSTOP of every process of the host's machine (a hung machine that still holds its TCP
//     connections open: the kernel ACKs, nobody answers). thawHost: SIGCONT.
// Needs iptables (Debian package `iptables`); fails loudly without it. Rules carry a comment naming the
// fleet root and host, so stopFleet can remove what a crashed test left behind.
import { execFile } from "node:child_process";
import * as path from "node:path";
import { machinePids, type Machine } from "./machine/machine";

interface NetHost {
  readonly name: string;
  readonly port: number;
  readonly machine: Pick<Machine, "dir">;
}

function exec(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) =>
    execFile(file, args, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === "string") {
        reject(new Error(`${file}: ${err.message}${(err as NodeJS.ErrnoException).code === "ENOENT" ? " (install the Debian package iptables)" : ""}`));
        return;
      }
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    }),
  );
}

// The full root keeps two fleets' rules apart (iptables allows 256 characters).
const comment = (root: string, host: NetHost) => `nixfleet-sim ${host.name} ${path.resolve(root)}`.slice(0, 255);
const rules = (root: string, host: NetHost) =>
  ["--dport", "--sport"].map((dir) => ["INPUT", "-i", "lo", "-p", "tcp", dir, String(host.port), "-m", "comment", "--comment", comment(root, host), "-j", "DROP"]);

/** Drops every packet to and from the host's sshd port (no RST): the host stops answering on the network. */
export async function partitionHost(fleet: { root: string }, host: NetHost): Promise<void> {
  for (const rule of rules(fleet.root, host)) {
    if ((await exec("iptables", ["-w", "-C", ...rule])).code === 0) continue;
    const r = await exec("iptables", ["-w", "-I", ...rule]);
    if (r.code !== 0) throw new Error(`partitionHost ${host.name}: iptables -I failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
}

/** Removes the host's partition rules (a no-op if it is not partitioned). */
export async function healHost(fleet: { root: string }, host: NetHost): Promise<void> {
  for (const rule of rules(fleet.root, host)) {
    while ((await exec("iptables", ["-w", "-C", ...rule])).code === 0) {
      const r = await exec("iptables", ["-w", "-D", ...rule]);
      if (r.code !== 0) throw new Error(`healHost ${host.name}: iptables -D failed (exit ${r.code}): ${r.stderr.trim()}`);
    }
  }
}

/** Whether the host is partitioned now. */
export async function isPartitioned(fleet: { root: string }, host: NetHost): Promise<boolean> {
  for (const rule of rules(fleet.root, host)) if ((await exec("iptables", ["-w", "-C", ...rule])).code === 0) return true;
  return false;
}

function signal(pids: number[], sig: NodeJS.Signals): void {
  for (const p of pids) {
    try {
      process.kill(p, sig);
    } catch {
      // gone meanwhile
    }
  }
}

/** SIGSTOPs every process of the host's machine (systemd, sshd, its sessions): a hung machine. The kernel
 *  still accepts TCP connections to its port, nothing answers. */
export async function freezeHost(_fleet: unknown, host: NetHost): Promise<void> {
  const pids = machinePids(host.machine);
  if (pids.length === 0) throw new Error(`${host.name}: its machine is not running`);
  signal(pids, "SIGSTOP");
}

/** SIGCONTs every process of the host's machine. */
export async function thawHost(_fleet: unknown, host: NetHost): Promise<void> {
  signal(machinePids(host.machine), "SIGCONT");
}
