// SIMULATION — a NixOS fleet on one machine, for the end-to-end tests and the README demo.
// Never imported by product code. What is real and what is simulated: fleet/README.md.
// Each host is a booted machine (machine/machine.ts: a systemd-nspawn container of a Debian trixie image
// with real systemd, sshd, Nix 2.26 and its own store) running a nixos-lite system. Orchestration only;
// each concern has its file: machine/ (image, boot, exec, reboot, power), process.ts, ports.ts, repo.ts
// (origin and its flake), network.ts (partition, freeze).
import { promises as fs, existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import {
  bootMachine,
  diskOf,
  ensureInotify,
  machineExec,
  machineImage,
  machineMemory,
  machinePath,
  machinePid1,
  powerCut,
  powerPid,
  rebootMachine,
  stopMachine,
  type Machine,
} from "./machine/machine";
import { healHost, thawHost } from "./network";
import { pickPorts } from "./ports";
import { must, run, sleep, withLock, type ExecResult } from "./process";
import { createOrigin } from "./repo";

export { freezeHost, healHost, isPartitioned, partitionHost, thawHost } from "./network";
export { run, type ExecResult } from "./process";
export { commitToOrigin, liteSource, originLog } from "./repo";
export type { Machine } from "./machine/machine";

export type FleetRole = "desktop" | "laptop" | "server" | "pi";

export interface FleetHostSpec {
  readonly name: string;
  readonly role: FleetRole;
  /** Unix user owning the host's nix-config checkout (as on NixOS, where it is e.g. evie's), created in
   *  the machine with a 0700 home. Unset (or "root"): the checkout is root's, in /etc/nixos. */
  readonly owner?: string;
  /** false: a stock NixOS system without git (every other host's flake adds it: its user cloned the
   *  checkout with it). Defaults to true. */
  readonly git?: boolean;
}

export interface StartFleetOptions {
  /** Directory holding all fleet state; reused (keys, repos, ports, machines' disks) on a second call. */
  readonly root: string;
  /** The hosts. Defaults to malphas (desktop), lilith (laptop), griefling (server), pi (pi). */
  readonly hosts?: readonly FleetHostSpec[];
  /** First sshd port; host i gets basePort+i, or the next free port. Defaults to 2221. */
  readonly basePort?: number;
  /** Stop and delete an existing fleet under `root` first. Defaults to false. */
  readonly fresh?: boolean;
}

export interface FleetHost {
  readonly name: string;
  readonly role: FleetRole;
  readonly address: "127.0.0.1";
  readonly port: number;
  readonly user: "root";
  /** The sshd's public host key, authorized_keys format (`ssh-ed25519 AAAA…`), no comment. */
  readonly hostKey: string;
  /** Owner of the checkout and of every file in it: the spec's owner, or "root". */
  readonly owner: string;
  /** The nix-config checkout in the machine (the configPath to use): /home/<owner>/nix-config, or
   *  /etc/nixos/nix-config when root owns it. A path of the MACHINE: read it with hostPath. */
  readonly checkout: string;
  /** "/var/lib/auto-upgrade" (in the machine). */
  readonly stateDir: string;
  /** "/nix/var/nix/profiles/system" (in the machine). */
  readonly profile: string;
  /** The host's machine (its directory on the deployer holds disk/, console.log). */
  readonly machine: Machine;
}

/** A running simulated fleet (named apart from the product's `Fleet` component). */
export interface SimFleet {
  readonly root: string;
  /** The bare origin repository on the deployer (stands in for the forge; machines see it at ORIGIN_IN_MACHINE). */
  readonly originDir: string;
  readonly clientKeyPath: string;
  /** The client's private key (OpenSSH PEM), for Pulumi secret config. */
  readonly privateKey: string;
  /** known_hosts for all hosts (`[127.0.0.1]:PORT ssh-ed25519 …`). */
  readonly knownHostsPath: string;
  readonly hosts: FleetHost[];
  stop(): Promise<void>;
}

export const DEFAULT_HOSTS: readonly FleetHostSpec[] = [
  { name: "malphas", role: "desktop", owner: "nixfleet-evie" },
  { name: "lilith", role: "laptop" },
  { name: "griefling", role: "server" },
  { name: "pi", role: "pi" },
];

/** Where every machine sees the fleet's origin (bound read-write from the deployer). */
export const ORIGIN_IN_MACHINE = "/srv/origin.git";
/** Nix flags of a build on a host (a stock host has no flakes setting; the agent passes them too). */
export const NIX_FLAGS = ["--extra-experimental-features", "nix-command flakes"];

const ROLES: readonly FleetRole[] = ["desktop", "laptop", "server", "pi"];
const INSTALL_SH = path.join(__dirname, "machine", "install.sh");

interface FleetState {
  /** 3: hosts are machines. */
  version: 3;
  hosts: { name: string; role: FleetRole; port: number; owner?: string; git?: boolean }[];
}

function validateSpecs(specs: readonly FleetHostSpec[]): void {
  const seen = new Set<string>();
  for (const h of specs) {
    if (!/^[a-z][a-z0-9-]{0,62}$/.test(h.name)) {
      throw new Error(`fleet host name ${JSON.stringify(h.name)}: use lowercase letters, digits and '-'`);
    }
    if (!ROLES.includes(h.role)) {
      throw new Error(`fleet host ${h.name}: role ${JSON.stringify(h.role)} is not one of ${ROLES.join(", ")}`);
    }
    if (h.owner !== undefined && !/^[a-z_][a-z0-9_-]{0,30}$/.test(h.owner)) {
      throw new Error(`fleet host ${h.name}: owner ${JSON.stringify(h.owner)} is not a Unix user name (lowercase letters, digits, '_', '-')`);
    }
    if (seen.has(h.name)) throw new Error(`fleet host ${h.name} is listed twice`);
    seen.add(h.name);
  }
}

const ownerOf = (spec: { owner?: string }) => spec.owner ?? "root";
const checkoutOf = (owner: string) => (owner === "root" ? "/etc/nixos/nix-config" : `/home/${owner}/nix-config`);

function machineOf(root: string, image: string, name: string): Machine {
  return { name, image, dir: path.join(root, "hosts", name), binds: [[path.join(root, "origin.git"), ORIGIN_IN_MACHINE]] };
}

/** A file of the machine's disk layer (what it writes over the image), for set-up before its first boot. */
async function writeDisk(m: Machine, rel: string, text: string, mode = 0o644): Promise<void> {
  const file = path.join(diskOf(m), rel);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, text, { mode });
  await fs.chmod(file, mode);
}

/**
 * The machine's identity and install, before its first boot: its sshd's host key and port (the machine
 * shares the deployer's network, so each sshd has its own loopback port), the fleet's client key for root,
 * then `install.sh` inside the machine's root (systemd-nspawn, like nixos-install's chroot): the owner, the
 * checkout cloned from origin, the configuration built with the machine's Nix, generation 1 of the system
 * profile and the boot entry.
 */
async function setupHost(root: string, m: Machine, spec: FleetHostSpec, port: number): Promise<void> {
  const disk = diskOf(m);
  await fs.mkdir(disk, { recursive: true });
  const key = path.join(m.dir, "ssh_host_ed25519_key");
  if (!existsSync(key)) await must("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `root@${spec.name}`, "-f", key]);
  await writeDisk(m, "etc/ssh/ssh_host_ed25519_key", await fs.readFile(key, "utf8"), 0o600);
  await writeDisk(m, "etc/ssh/ssh_host_ed25519_key.pub", await fs.readFile(`${key}.pub`, "utf8"));
  await writeDisk(m, "etc/ssh/sshd_config.d/machine.conf", `# SIMULATED: this machine's address (fleet/fleet.ts)\nPort ${port}\nListenAddress 127.0.0.1\n`);
  await writeDisk(m, "etc/ssh/authorized_keys.d/root", await fs.readFile(path.join(root, "client_ed25519.pub"), "utf8"));
  if (existsSync(path.join(m.dir, "installed"))) return;
  const owner = ownerOf(spec);
  const r = await run(
    "systemd-nspawn",
    [
      "--quiet", `--directory=${m.image}`, `--overlay=${m.image}:${disk}:/`, `--machine=${m.name}`, "--register=no", "--keep-unit",
      "--link-journal=no", "--console=pipe", `--bind=${path.join(root, "origin.git")}:${ORIGIN_IN_MACHINE}`,
      `--bind-ro=${INSTALL_SH}:/run/nixfleet-install.sh`,
      "--", "/bin/bash", "/run/nixfleet-install.sh", spec.name, owner, checkoutOf(owner), ORIGIN_IN_MACHINE,
    ],
    { input: "" },
  );
  if (r.code !== 0) throw new Error(`fleet: installing ${spec.name} failed (exit ${r.code}):\n${r.stderr.slice(-3000)}${r.stdout.slice(-2000)}`);
  await fs.writeFile(path.join(m.dir, "installed"), r.stdout);
}

async function readState(root: string): Promise<FleetState | null> {
  try {
    return JSON.parse(await fs.readFile(path.join(root, "fleet.json"), "utf8")) as FleetState;
  } catch {
    return null;
  }
}

async function hostKeyOf(dir: string): Promise<string> {
  const pub = await fs.readFile(path.join(dir, "ssh_host_ed25519_key.pub"), "utf8");
  const [type, key] = pub.trim().split(/\s+/);
  return `${type} ${key}`;
}

function fleetObject(root: string, hosts: FleetHost[]): SimFleet {
  const clientKeyPath = path.join(root, "client_ed25519");
  return {
    root,
    originDir: path.join(root, "origin.git"),
    clientKeyPath,
    privateKey: readFileSync(clientKeyPath, "utf8"),
    knownHostsPath: path.join(root, "known_hosts"),
    hosts,
    stop: () => stopFleet(root),
  };
}

async function hostOf(root: string, image: string, h: { name: string; role: FleetRole; port: number; owner?: string }): Promise<FleetHost> {
  const owner = ownerOf(h);
  const machine = machineOf(root, image, h.name);
  return {
    name: h.name,
    role: h.role,
    address: "127.0.0.1",
    port: h.port,
    user: "root",
    hostKey: await hostKeyOf(machine.dir),
    owner,
    checkout: checkoutOf(owner),
    stateDir: "/var/lib/auto-upgrade",
    profile: "/nix/var/nix/profiles/system",
    machine,
  };
}

/** Waits until the host's sshd answers the fleet's client (its system's sshd.service). */
export async function waitSsh(fleet: Pick<SimFleet, "clientKeyPath" | "knownHostsPath">, host: FleetHost, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await sshExec(fleet, host, "true", { timeoutMs: 15_000 });
    if (r.code === 0) return;
    if (Date.now() > deadline) throw new Error(`fleet: ${host.name}'s sshd does not answer on port ${host.port}: ${r.stderr.trim()}`);
    await sleep(200);
  }
}

/** Starts (or reuses) a simulated fleet under `opts.root`: every host a booted machine. */
export async function startFleet(opts: StartFleetOptions): Promise<SimFleet> {
  const root = path.resolve(opts.root);
  const specs = opts.hosts ?? DEFAULT_HOSTS;
  validateSpecs(specs);
  if (opts.fresh && existsSync(path.join(root, "fleet.json"))) {
    await stopFleet(root);
    await fs.rm(root, { recursive: true, force: true });
  }
  await fs.mkdir(root, { recursive: true });
  const image = await machineImage();
  return withLock(root, async () => {
    const state = await readState(root);
    if (state && state.version !== 3) {
      throw new Error(`fleet at ${root} was made by an older simulation (fleet.json version ${state.version}): start it with fresh: true (CLI: --fresh) or use another root`);
    }
    if (state) {
      const key = (h: { name: string; role: string; owner?: string; git?: boolean }) =>
        (ownerOf(h) === "root" ? `${h.name}:${h.role}` : `${h.name}:${h.role}:${h.owner}`) + (h.git === false ? ":no-git" : "");
      const want = specs.map(key).join(",");
      const have = state.hosts.map(key).join(",");
      if (want !== have) {
        throw new Error(`fleet at ${root} has hosts ${have}, asked for ${want}: use another root or delete it`);
      }
    }
    const clientKey = path.join(root, "client_ed25519");
    if (!existsSync(clientKey)) {
      await must("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "nixfleet-sim-client", "-f", clientKey]);
    }
    const originDir = path.join(root, "origin.git");
    if (!state || !existsSync(path.join(originDir, "HEAD"))) await createOrigin(root, originDir, specs);

    const running = (name: string) => powerPid({ dir: path.join(root, "hosts", name) }) !== null;
    const ports = await pickPorts(specs, opts.basePort ?? 2221, state, running);
    const hostState = specs.map((s, i) => ({
      name: s.name,
      role: s.role,
      port: ports[i],
      ...(ownerOf(s) === "root" ? {} : { owner: s.owner }),
      ...(s.git === false ? { git: false } : {}),
    }));
    // Written before the machines boot: a failed start can still be stopped (stopFleet reads it).
    const newState: FleetState = { version: 3, hosts: hostState };
    await fs.writeFile(path.join(root, "fleet.json"), `${JSON.stringify(newState, null, 2)}\n`);

    try {
      await ensureInotify(specs.filter((s) => !running(s.name)).length);
      const booted = await Promise.allSettled(
        specs.map(async (spec, i) => {
          const m = machineOf(root, image, spec.name);
          if (running(spec.name)) return;
          await setupHost(root, m, spec, ports[i]);
          await bootMachine(m);
        }),
      );
      const failed = booted.filter((b): b is PromiseRejectedResult => b.status === "rejected");
      if (failed.length > 0) throw failed[0].reason;
      const hosts = await Promise.all(hostState.map((h) => hostOf(root, image, h)));
      await fs.writeFile(path.join(root, "known_hosts"), hosts.map((h) => `[${h.address}]:${h.port} ${h.hostKey}\n`).join(""));
      const fleet = fleetObject(root, hosts);
      await Promise.all(hosts.map((h) => waitSsh(fleet, h)));
      return fleet;
    } catch (e) {
      // No machine outlives a start that failed (a test whose set-up throws never reaches its stop()).
      await stopFleet(root).catch(() => undefined);
      throw e;
    }
  });
}

/** Shuts every machine of the fleet under `root` down (their disks are kept; startFleet boots them again). */
export async function stopFleet(root: string): Promise<void> {
  const abs = path.resolve(root);
  const state = await readState(abs);
  if (!state) return;
  await Promise.all(
    state.hosts.map(async (h) => {
      const net = { name: h.name, port: h.port, machine: { dir: path.join(abs, "hosts", h.name) } };
      // A test may have left the host partitioned or frozen: undo both, or the machine would not stop.
      if (existsSync("/usr/sbin/iptables")) await healHost({ root: abs }, net);
      await thawHost(null, net);
      await stopMachine({ name: h.name, dir: net.machine.dir });
    }),
  );
}

/** The fleet under `root` as it is now, without starting anything; null if there is none. */
export async function fleetStatus(root: string): Promise<(FleetHost & { running: boolean })[] | null> {
  const abs = path.resolve(root);
  const state = await readState(abs);
  if (!state) return null;
  const image = await machineImage();
  return Promise.all(
    state.hosts.map(async (h) => {
      const host = await hostOf(abs, image, h);
      return { ...host, running: machinePid1(host.machine) !== null };
    }),
  );
}

/** ssh options that trust exactly the fleet's host keys and use the fleet's client key. */
export function sshArgs(fleet: Pick<SimFleet, "clientKeyPath" | "knownHostsPath">, host: Pick<FleetHost, "port" | "user" | "address">): string[] {
  return [
    "-F", "/dev/null",
    "-i", fleet.clientKeyPath,
    "-o", "IdentitiesOnly=yes",
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=yes",
    "-o", `UserKnownHostsFile=${fleet.knownHostsPath}`,
    "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=10",
    // Loopback test hosts: prefer the cheaper key exchange (sntrup761 costs ~0.2 s per connection here).
    "-o", "KexAlgorithms=curve25519-sha256,sntrup761x25519-sha512@openssh.com",
    "-p", String(host.port),
    `${host.user}@${host.address}`,
  ];
}

/** Runs `command` on the host with the real ssh client (the remote shell parses it). */
export function sshExec(
  fleet: Pick<SimFleet, "clientKeyPath" | "knownHostsPath">,
  host: Pick<FleetHost, "port" | "user" | "address">,
  command: string,
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<ExecResult> {
  return run("ssh", [...sshArgs(fleet, host), "--", command], { input: opts.input ?? "", timeoutMs: opts.timeoutMs });
}

/** The session PATH of a host (what root's SSH sessions get): its system's packages. */
export const SESSION_PATH = "/run/current-system/sw/bin";

/**
 * Runs a program on the host through its machine's console (not SSH: works while sshd is down), as root
 * with a session's environment (PATH = the system's sw/bin). `user`: run as that user (runuser) instead.
 */
export async function hostExec(
  host: Pick<FleetHost, "machine">,
  argv: readonly string[],
  opts: { input?: string; user?: string; cwd?: string; timeoutMs?: number } = {},
): Promise<ExecResult> {
  const cmd = opts.user && opts.user !== "root" ? ["/usr/sbin/runuser", "-u", opts.user, "--", ...argv] : [...argv];
  const home = opts.user && opts.user !== "root" ? `/home/${opts.user}` : "/root";
  return machineExec(host.machine, cmd, {
    input: opts.input,
    cwd: opts.cwd,
    timeoutMs: opts.timeoutMs,
    env: { PATH: SESSION_PATH, HOME: home, USER: opts.user ?? "root", LOGNAME: opts.user ?? "root" },
  });
}

/** A path of the host's machine as the deployer reads and writes it (through its PID 1's root). */
export function hostPath(host: Pick<FleetHost, "machine">, p: string): string {
  return machinePath(host.machine, p);
}

/** Reboots the host's machine (`systemctl reboot`): its boot loader boots the boot entry; waits for sshd. */
export async function rebootHost(fleet: Pick<SimFleet, "clientKeyPath" | "knownHostsPath">, host: FleetHost): Promise<void> {
  await rebootMachine(host.machine);
  await waitSsh(fleet, host);
}

/** Cuts the host's power (every process of its machine killed at once) and, unless `stayOff`, powers it on. */
export async function powerCycleHost(fleet: Pick<SimFleet, "clientKeyPath" | "knownHostsPath">, host: FleetHost, opts: { stayOff?: boolean } = {}): Promise<void> {
  await powerCut(host.machine);
  if (opts.stayOff) return;
  await bootMachine(host.machine);
  await waitSsh(fleet, host);
}

/** Powers the host's machine on (after powerCycleHost with stayOff) and waits for sshd. */
export async function bootHost(fleet: Pick<SimFleet, "clientKeyPath" | "knownHostsPath">, host: FleetHost): Promise<void> {
  await bootMachine(host.machine);
  await waitSsh(fleet, host);
}

/** Resident memory of the host's machine (bytes, every process of it). */
export const hostMemory = (host: Pick<FleetHost, "machine">) => machineMemory(host.machine);

async function readLink(host: Pick<FleetHost, "machine">, p: string): Promise<string | null> {
  try {
    return await fs.readlink(hostPath(host, p));
  } catch {
    return null;
  }
}

/** The store path the host's /run/current-system points at, or null. */
export const currentSystem = (host: Pick<FleetHost, "machine">) => readLink(host, "/run/current-system");

/** The host's journal, one line per entry ("<time> <host> <tag>[pid]: <message>"); `tag` limits it to one
 *  identifier, and then `messagesOnly` gives the messages alone. */
export async function journal(host: Pick<FleetHost, "machine">, tag?: string, opts: { messagesOnly?: boolean } = {}): Promise<string[]> {
  const format = tag && opts.messagesOnly ? "cat" : "short-iso";
  const r = await machineExec(host.machine, ["journalctl", "--no-pager", "-q", "-o", format, ...(tag ? ["-t", tag] : [])]);
  return r.stdout.split("\n").filter((l) => l !== "");
}

/** The target of a link in the host's machine, every link followed (readlink -e), or null. */
export async function hostRealpath(host: Pick<FleetHost, "machine">, p: string): Promise<string | null> {
  const r = await machineExec(host.machine, ["readlink", "-e", "--", p]);
  return r.code === 0 && r.stdout.trim() !== "" ? r.stdout.trim() : null;
}

/** Lines the simulated hooks (e.g. chezmoi-pre-update) wrote on the host (/var/log/nixfleet-hooks.log). */
export async function hookLog(host: Pick<FleetHost, "machine">): Promise<string[]> {
  try {
    return (await fs.readFile(hostPath(host, "/var/log/nixfleet-hooks.log"), "utf8")).split("\n").filter((l) => l !== "");
  } catch {
    return [];
  }
}

/**
 * Takes the forge away from one host (`down: true`) or gives it back: an empty directory is mounted over
 * the host's view of origin, so its git fails to fetch and push as with a forge that is down. Other hosts
 * and the deployer still see origin.
 */
export async function setForgeDown(host: Pick<FleetHost, "machine" | "name">, down: boolean): Promise<void> {
  const script = down
    ? `mountpoint -q /run/forge-down || { mkdir -p /run/forge-down && mount -t tmpfs -o ro,size=4k forge-down /run/forge-down && mount --bind /run/forge-down ${ORIGIN_IN_MACHINE}; }`
    : `while mountpoint -q /run/forge-down; do umount ${ORIGIN_IN_MACHINE} && umount /run/forge-down; done`;
  const r = await machineExec(host.machine, ["/bin/sh", "-ec", script]);
  if (r.code !== 0) throw new Error(`setForgeDown ${host.name} ${down}: ${r.stderr}`);
}

/** git in the host's checkout, as its owner (as the user would run it); stdout trimmed, throws on failure. */
export async function hostGit(host: Pick<FleetHost, "machine" | "name" | "checkout" | "owner">, ...args: string[]): Promise<string> {
  const r = await hostExec(host, ["git", "-C", host.checkout, ...args], { user: host.owner });
  if (r.code !== 0) throw new Error(`${host.name}: git ${args.join(" ")} failed (exit ${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}
