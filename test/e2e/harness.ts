// Shared set-up of the end-to-end tests: the real Pulumi engine (toolchain/), real sshd, git and Nix against
// the SIMULATED fleet (fleet/README.md). Each test file gets its own fleet (own sshd ports) and stack.
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Stack, UpResult } from "@pulumi/pulumi/automation";
import { currentSystem, hostPath, hostRealpath, journal, startFleet, type SimFleet, type FleetHost, type FleetHostSpec } from "../../fleet/fleet";
import { demoConfig, fleetStack, setFleetConfig } from "../../fleet/stack";

export interface E2E {
  fleet: SimFleet;
  stack: Stack;
  dir: string;
  config: Record<string, unknown>;
  host(name: string): FleetHost;
  /** Replaces the stack's nixfleet config (and remembers it). */
  setConfig(config: Record<string, unknown>): Promise<void>;
  stop(): Promise<void>;
}

export async function startE2E(name: string, basePort: number, opts: { hosts?: readonly FleetHostSpec[]; config?: (c: Record<string, unknown>) => Record<string, unknown> } = {}): Promise<E2E> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `nixfleet-e2e-${name}-`));
  const fleet = await startFleet({ root: path.join(dir, "fleet"), basePort, hosts: opts.hosts });
  const base = opts.hosts ? configFor(fleet) : demoConfig(fleet);
  const e2e: E2E = {
    fleet,
    dir,
    config: opts.config ? opts.config(base) : base,
    stack: undefined as unknown as Stack,
    host: (n) => {
      const h = fleet.hosts.find((x) => x.name === n);
      if (!h) throw new Error(`no host ${n} in the test fleet`);
      return h;
    },
    async setConfig(config) {
      e2e.config = config;
      await setFleetConfig(e2e.stack, config, fleet.privateKey);
    },
    async stop() {
      await fleet.stop();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
  e2e.stack = await fleetStack({ fleet, dir: path.join(dir, "pulumi"), stackName: name, config: e2e.config });
  return e2e;
}

/** Stack config for any simulated fleet: every host with its connection facts, role defaults otherwise. */
export function configFor(fleet: SimFleet): Record<string, unknown> {
  return {
    "nixfleet:hosts": fleet.hosts.map((h) => ({
      name: h.name,
      role: h.role,
      address: h.address,
      port: h.port,
      user: h.user,
      hostKey: h.hostKey,
      configPath: h.checkout,
      stateDir: h.stateDir,
      ...(h.owner === "root" ? {} : { configOwner: h.owner }),
    })),
  };
}

/** `config` with `patch` merged into the listed hosts' entries. */
export function withHosts(config: Record<string, unknown>, names: string[], patch: Record<string, unknown>) {
  const hosts = (config["nixfleet:hosts"] as Record<string, unknown>[]).map((h) => (names.includes(h.name as string) ? { ...h, ...patch } : h));
  return { ...config, "nixfleet:hosts": hosts };
}

/** `config` with `patch` merged into every role's settings (so every host's role file changes). */
export function withRoles(config: Record<string, unknown>, patch: Record<string, unknown>) {
  const roles = { ...((config["nixfleet:roles"] ?? {}) as Record<string, Record<string, unknown>>) };
  for (const role of ["desktop", "laptop", "server", "pi"]) roles[role] = { ...roles[role], ...patch };
  return { ...config, "nixfleet:roles": roles };
}

/**
 * Adds Nix lines to the host's own configuration.nix in its checkout, as its user would (a tracked file, so
 * the flake sees the edit). Returns a function that puts the file back.
 */
export async function editHostConfig(h: FleetHost, lines: string): Promise<() => Promise<void>> {
  const file = hostPath(h, path.join(h.checkout, "hosts", h.name, "configuration.nix"));
  const original = await fs.readFile(file, "utf8");
  const end = original.lastIndexOf("}");
  await fs.writeFile(file, `${original.slice(0, end)}  # e2e fault\n${lines}\n${original.slice(end)}`);
  return () => fs.writeFile(hostPath(h, path.join(h.checkout, "hosts", h.name, "configuration.nix")), original);
}

/** Where a host stands: running system, profile (boot default) and boot entry, each a store path or null. */
export async function systemState(h: FleetHost) {
  return {
    running: await currentSystem(h),
    profile: await hostRealpath(h, h.profile),
    boot: await hostRealpath(h, "/boot/default"),
  };
}

/** Running system, profile and boot entry after a reboot too: the booted system is the fourth. */
export async function bootState(h: FleetHost) {
  return { ...(await systemState(h)), booted: await hostRealpath(h, "/run/booted-system") };
}

export const validatedLink = (h: FleetHost) => hostRealpath(h, path.join(h.stateDir, "validated"));
export const goldenLink = (h: FleetHost) => hostRealpath(h, path.join(h.stateDir, "golden"));

/** A file of the host's machine, as text (its owner and mode stay the machine's). */
export const readHostFile = (h: FleetHost, p: string) => fs.readFile(hostPath(h, p), "utf8");

export async function hostStatus(h: FleetHost): Promise<Record<string, any>> {
  return JSON.parse(await readHostFile(h, path.join(h.stateDir, "status.json")));
}

/** The host's sshd logs one line per accepted connection (its journal): the count of remote sessions so far. */
export async function sessions(h: FleetHost): Promise<number> {
  return (await journal(h, "sshd", { messagesOnly: true })).filter((l) => l.includes("Accepted publickey")).length;
}

export const allSessions = async (fleet: SimFleet) => Object.fromEntries(await Promise.all(fleet.hosts.map(async (h) => [h.name, await sessions(h)] as const)));

/** Resource operations of an `up` that change something (not "same", not the read of the stack's own last outputs). */
export const changes = (r: UpResult) => Object.fromEntries(Object.entries(r.summary.resourceChanges ?? {}).filter(([op]) => op !== "same" && op !== "read"));

/** Every store path switch-to-configuration activated (`test`/`switch`) on the host, in order (its journal). */
export async function activations(h: FleetHost): Promise<string[]> {
  return (await journal(h, "switch-to-configuration", { messagesOnly: true }))
    .map((l) => l.split(" "))
    .filter((w) => (w[0] === "test" || w[0] === "switch") && w[2] !== "FAILED")
    .map((w) => w[1]);
}

/** The stack output of one host. */
export const hostOutput = (up: UpResult, name: string) => (up.outputs.hosts?.value as Record<string, any> | undefined)?.[name];

export async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs: number, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
