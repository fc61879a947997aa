// SIMULATION glue — a Pulumi stack aimed at the simulated fleet, for `npm run demo` and test/e2e.
// The real engine (the `pulumi` CLI built by toolchain/build.sh) runs nixfleet's own program
// (`fleetProgram`) as an Automation API inline program: the nodejs language host cannot be built
// offline (see toolchain/README.md), inline programs do not need it. State lives in a local file
// backend under `dir`; nothing reaches a network.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import * as path from "node:path";
import { LocalWorkspace, PulumiCommand, type Stack } from "@pulumi/pulumi/automation";
import { fleetProgram } from "../components/program";
import { readStackFile } from "../config/stack";
import type { SimFleet } from "./fleet";

const REPO = path.join(__dirname, "..");

/** Builds (or takes from its cache) the offline toolchain and returns its bin dir. */
export function toolchainBin(): string {
  const out = execFileSync("bash", [path.join(REPO, "toolchain", "build.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  return out.trim().split("\n").pop()!;
}

/**
 * Offline settings for the CLI: local backend, passphrase secrets, no update check, no plugin
 * downloads; the command provider comes from the toolchain's PULUMI_HOME (toolchain/build.sh).
 */
export function offlineEnv(dir: string, bin: string): Record<string, string> {
  return {
    PULUMI_BACKEND_URL: `file://${path.join(dir, "state")}`,
    PULUMI_HOME: path.join(path.dirname(bin), "home"),
    PULUMI_IGNORE_AMBIENT_PLUGINS: "true",
    PULUMI_CONFIG_PASSPHRASE: "nixfleet-simulated-fleet",
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    // The provider would use (and, if stale, fail on) the caller's agent; the fleet's key is in config.
    SSH_AUTH_SOCK: "",
  };
}

/**
 * `stacks/Pulumi.demo.yaml` with each host's connection facts (port, pinned host key, checkout,
 * state dir, and configOwner when the checkout is not root's) taken from the running fleet;
 * everything else (roles, overrides) as the file says.
 */
export function demoConfig(fleet: SimFleet, stackFile = path.join(REPO, "stacks", "Pulumi.demo.yaml")) {
  const config = readStackFile(stackFile);
  const hosts = (config["nixfleet:hosts"] as Record<string, unknown>[]).map((h) => {
    const live = fleet.hosts.find((f) => f.name === h.name);
    if (!live) throw new Error(`${stackFile}: host ${String(h.name)} is not in the simulated fleet`);
    // configOwner only for a user-owned checkout: root-owned hosts exercise the default.
    const owner = live.owner === "root" ? {} : { configOwner: live.owner };
    return { ...h, address: live.address, port: live.port, user: live.user, hostKey: live.hostKey, configPath: live.checkout, ...owner, stateDir: live.stateDir };
  });
  return { ...config, "nixfleet:hosts": hosts } as Record<string, unknown>;
}

/**
 * `--parallel` for a fleet of `hosts`: every host's deploy (and later its confirm) must find a slot at
 * once, or a fleet upgrades in batches (the default is 4 × CPUs, 8 on a 2-core deployer). Each host
 * has 2 commands + its component; +4 for the fleet, the stack and headroom. Capped at
 * 256: every running command holds an SSH connection (and file descriptors) in the provider, and the
 * real provider keeps connections open until it exits; 256 keeps that under a default 1024 fd limit.
 */
export function parallelFor(hosts: number): number {
  return Math.min(256, Math.max(8, 3 * hosts + 4));
}

const hostCount = (config: Record<string, unknown>) => {
  const hosts = config["nixfleet:hosts"];
  return Array.isArray(hosts) ? hosts.length : typeof hosts === "string" ? (JSON.parse(hosts) as unknown[]).length : 0;
};

/** Creates or selects `stackName` in `dir`, sets `config` (structured values as JSON, the key as a secret). */
export async function fleetStack(opts: { fleet: SimFleet; dir: string; stackName?: string; config: Record<string, unknown> }): Promise<Stack> {
  mkdirSync(path.join(opts.dir, "state"), { recursive: true });
  mkdirSync(path.join(opts.dir, "work"), { recursive: true });
  const bin = toolchainBin();
  const stack = await LocalWorkspace.createOrSelectStack(
    { stackName: opts.stackName ?? "demo", projectName: "nixfleet", program: async () => fleetProgram() },
    {
      workDir: path.join(opts.dir, "work"),
      projectSettings: { name: "nixfleet", runtime: "nodejs" },
      envVars: { ...offlineEnv(opts.dir, bin), PULUMI_PARALLEL: String(parallelFor(hostCount(opts.config))) },
      pulumiCommand: await PulumiCommand.get({ root: path.dirname(bin) }),
    },
  );
  await setFleetConfig(stack, opts.config, opts.fleet.privateKey);
  return stack;
}

/**
 * Replaces the stack's nixfleet config; every `up` after this sees exactly `config`. Also sets
 * PULUMI_PARALLEL for the new host count (see parallelFor).
 */
export async function setFleetConfig(stack: Stack, config: Record<string, unknown>, privateKey: string): Promise<void> {
  const old = Object.keys(await stack.getAllConfig()).filter((k) => k.startsWith("nixfleet:"));
  if (old.length > 0) await stack.removeAllConfig(old);
  const values = Object.fromEntries(
    Object.entries(config).map(([k, v]) => [k, { value: typeof v === "string" ? v : JSON.stringify(v) }]),
  );
  if (Object.keys(values).length > 0) await stack.setAllConfig(values);
  setSecretConfig(stack, "nixfleet:sshPrivateKey", privateKey);
  stack.workspace.envVars.PULUMI_PARALLEL = String(parallelFor(hostCount(config)));
}

/**
 * `pulumi config set --secret <key>` with the value on stdin: never on a command line (any local user
 * can read those) and never in an error message (only the CLI's stderr and the exit code are shown).
 */
export function setSecretConfig(stack: Stack, key: string, value: string): void {
  const ws = stack.workspace;
  const r = spawnSync(ws.pulumiCommand.command, ["config", "set", "--secret", "--stack", stack.name, key], {
    cwd: ws.workDir,
    env: { ...process.env, ...ws.envVars },
    input: value,
    encoding: "utf8",
  });
  if (r.error || r.status !== 0) {
    // The CLI's stderr never holds the value (it came on stdin); cut it anyway.
    throw new Error(`pulumi config set --secret ${key} (stack ${stack.name}) failed: ${r.error?.message ?? `exit ${r.status}: ${String(r.stderr).slice(0, 400)}`}`);
  }
}
