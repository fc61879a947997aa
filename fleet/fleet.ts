// SIMULATION — a NixOS fleet on one machine, for the end-to-end tests and the README demo.
// Never imported by product code. What is real and what is simulated: see fleet/README.md.
// Orchestration only; each concern has its file: process.ts (programs, lock), sshd.ts, ports.ts, users.ts,
// repo.ts (origin and its flake), stock.ts (the stock NixOS toolset), network.ts (partition, freeze).
import { promises as fs, existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { healHost, thawHost } from "./network";
import { pickPorts, portIsFree } from "./ports";
import { must, run, withLock, type ExecResult } from "./process";
import { createOrigin } from "./repo";
import { runningSshd, sessionPath, SIM_NIX_CONFIG, sshdConfig, sshdConfigPath, startSshd, stopSshd } from "./sshd";
import { buildStock } from "./stock";
import { ensureUser, letOthersIn, ownerTransport } from "./users";

export { freezeHost, healHost, isPartitioned, partitionHost, thawHost } from "./network";
export { run, type ExecResult } from "./process";
export { commitToOrigin, liteSource, originLog } from "./repo";

export type FleetRole = "desktop" | "laptop" | "server" | "pi";

export interface FleetHostSpec {
  readonly name: string;
  readonly role: FleetRole;
  /** Unix user owning the host's nix-config checkout (as on NixOS, where it is e.g. evie's). The
   *  simulation creates it as a system user if missing. Unset (or "root"): the checkout is root's. */
  readonly owner?: string;
}

export interface StartFleetOptions {
  /** Directory holding all fleet state; reused (keys, repos, ports) on a second call. */
  readonly root: string;
  /** The hosts. Defaults to malphas (desktop), lilith (laptop), griefling (server), pi (pi). */
  readonly hosts?: readonly FleetHostSpec[];
  /** First sshd port; host i gets basePort+i, or the next free port. Defaults to 2221. */
  readonly basePort?: number;
  /** Build and activate each host's initial configuration on creation (as an installed machine would
   *  be). Defaults to true. */
  readonly install?: boolean;
  /** Stop and delete an existing fleet under `root` first (to pick up a changed test/nixos-lite or host
   *  list). Defaults to false. */
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
  /** Absolute path of the host's nix-config clone (the configPath to use): simRoot/home/<owner>/nix-config. */
  readonly checkout: string;
  /** The host's simulated file system root (its state). */
  readonly simRoot: string;
  /** simRoot + "/var/lib/auto-upgrade": what AUTO_UPGRADE_STATE_DIR is. */
  readonly stateDir: string;
  /** simRoot + "/nix/var/nix/profiles/system": a real Nix profile. */
  readonly profile: string;
}

/** A running simulated fleet (named apart from the product's `Fleet` component). */
export interface SimFleet {
  readonly root: string;
  /** The bare origin repository (stands in for the forge). */
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

const ROLES: readonly FleetRole[] = ["desktop", "laptop", "server", "pi"];
const SHIMS_SRC = path.join(__dirname, "shims");
export const NIX_FLAGS = ["--extra-experimental-features", "nix-command flakes", "--option", "substituters", ""];

interface FleetState {
  /** 2: unit files, stock toolset, boot entry (a version-1 root's installed systems cannot be re-activated). */
  version: 2;
  /** owner: absent for root-owned checkouts (fleet.json files written before owners existed). */
  hosts: { name: string; role: FleetRole; port: number; owner?: string }[];
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

/** The environment a host's sessions get (what its sshd's SetEnv gives), for running its tools locally. */
export function hostEnv(_fleetRoot: string, host: Pick<FleetHost, "simRoot" | "stateDir">): NodeJS.ProcessEnv {
  return {
    HOME: process.env.HOME ?? "/root",
    USER: "root",
    LOGNAME: "root",
    PATH: sessionPath(host.simRoot),
    NIXFLEET_SIM_ROOT: host.simRoot,
    AUTO_UPGRADE_ROOT: host.simRoot,
    AUTO_UPGRADE_STATE_DIR: host.stateDir,
    NIX_CONFIG: SIM_NIX_CONFIG,
  };
}

const ownerOf = (spec: { owner?: string }) => spec.owner ?? "root";

function hostPaths(root: string, name: string, owner: string) {
  const simRoot = path.join(root, "hosts", name);
  return {
    simRoot,
    owner,
    checkout: path.join(simRoot, "home", owner, "nix-config"),
    stateDir: path.join(simRoot, "var", "lib", "auto-upgrade"),
    profile: path.join(simRoot, "nix", "var", "nix", "profiles", "system"),
  };
}

async function setupHost(root: string, originDir: string, spec: FleetHostSpec, install: boolean): Promise<void> {
  const owner = ownerOf(spec);
  const p = hostPaths(root, spec.name, owner);
  const home = path.dirname(p.checkout);
  for (const d of ["etc/ssh", "run", "log", "var/lib/auto-upgrade", "nix/var/nix/profiles", "sim", "boot"]) {
    await fs.mkdir(path.join(p.simRoot, d), { recursive: true });
  }
  if (!existsSync(sessionPath(p.simRoot))) await fs.symlink(path.join(root, "stock", "bin"), sessionPath(p.simRoot));
  await fs.mkdir(home, { recursive: true });
  if (owner !== "root") {
    // As on NixOS: /home/<user> belongs to the user, mode 0700.
    const uid = Number((await must("id", ["-u", owner])).trim());
    const gid = Number((await must("id", ["-g", owner])).trim());
    await fs.chown(home, uid, gid);
    await fs.chmod(home, 0o700);
    await letOthersIn(path.dirname(home), root);
  }
  await fs.writeFile(path.join(p.simRoot, "etc", "hostname"), `${spec.name}\n`);
  const key = path.join(p.simRoot, "etc/ssh/ssh_host_ed25519_key");
  if (!existsSync(key)) {
    await must("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `root@${spec.name}`, "-f", key]);
  }
  if (!existsSync(path.join(p.checkout, ".git"))) {
    await fs.rm(p.checkout, { recursive: true, force: true });
    if (owner === "root") {
      await must("git", ["clone", "-q", "--branch", "main", originDir, p.checkout]);
    } else {
      // Cloned by the owner, so every file and dir is theirs. origin.git is root's: git (2.39) refuses a
      // repository owned by someone else, and the forge it stands for is not a local directory on a
      // real host, so the owner's upload-pack/receive-pack trust origin.git (and only it) for this clone.
      const t = ownerTransport(originDir);
      await must("runuser", ["-u", owner, "--", "git", "clone", "-q", "--no-local", "-u", t.uploadpack, "--branch", "main", originDir, p.checkout], { cwd: home });
      await must("runuser", ["-u", owner, "--", "git", "-C", p.checkout, "config", "remote.origin.uploadpack", t.uploadpack], { cwd: home });
      await must("runuser", ["-u", owner, "--", "git", "-C", p.checkout, "config", "remote.origin.receivepack", t.receivepack], { cwd: home });
    }
    const git = owner === "root" ? ["git"] : ["runuser", "-u", owner, "--", "git"];
    await must(git[0], [...git.slice(1), "-C", p.checkout, "config", "user.name", `${owner}@${spec.name}`], { cwd: home });
    await must(git[0], [...git.slice(1), "-C", p.checkout, "config", "user.email", `${owner}@${spec.name}.fleet.invalid`], { cwd: home });
  }
  if (install && !existsSync(path.join(p.simRoot, "run", "current-system"))) await installHost(root, spec.name, p);
}

/**
 * The machine as installed and booted once, with the host's stock tools only: like nixos-install, build
 * the configuration, make it generation 1 of the system profile and the boot entry
 * (`switch-to-configuration boot`); then like its first boot, run the system's `activate` (units, current
 * system), record it as the booted system and start what multi-user.target wants. The host's sshd is
 * started by startFleet. Nix's git refuses a checkout root does not own ("dubious ownership"), so the
 * installer trusts it.
 */
async function installHost(root: string, name: string, p: ReturnType<typeof hostPaths>): Promise<void> {
  const trust = p.owner === "root" ? {} : { GIT_CONFIG_COUNT: "1", GIT_CONFIG_KEY_0: "safe.directory", GIT_CONFIG_VALUE_0: p.checkout };
  const env = { ...hostEnv(root, p), ...trust };
  const opts = { env, cwd: p.checkout };
  const link = path.join(p.simRoot, "run", "install-result");
  const attr = `${p.checkout}#nixosConfigurations.${JSON.stringify(name)}.config.system.build.toplevel`;
  await must("nix", ["build", ...NIX_FLAGS, "-o", link, attr], opts);
  const system = await fs.readlink(link);
  await must("nix-env", ["-p", p.profile, "--set", system], opts);
  await fs.rm(link);
  await must(path.join(system, "bin", "switch-to-configuration"), ["boot"], opts);
  await must(path.join(system, "activate"), [system], opts);
  await fs.symlink(system, path.join(p.simRoot, "run", "booted-system"));
  const wants = path.join(p.simRoot, "etc", "systemd", "system", "multi-user.target.wants");
  for (const unit of await fs.readdir(wants).catch(() => [] as string[])) {
    if (unit !== "sshd.service") await must("systemctl", ["start", "--", unit], opts);
  }
}

async function readState(root: string): Promise<FleetState | null> {
  try {
    return JSON.parse(await fs.readFile(path.join(root, "fleet.json"), "utf8")) as FleetState;
  } catch {
    return null;
  }
}

async function hostKeyOf(simRoot: string): Promise<string> {
  const pub = await fs.readFile(path.join(simRoot, "etc/ssh/ssh_host_ed25519_key.pub"), "utf8");
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

/** Starts (or reuses) a simulated fleet under `opts.root`. */
export async function startFleet(opts: StartFleetOptions): Promise<SimFleet> {
  const root = path.resolve(opts.root);
  const specs = opts.hosts ?? DEFAULT_HOSTS;
  validateSpecs(specs);
  if (opts.fresh && existsSync(path.join(root, "fleet.json"))) {
    await stopFleet(root);
    await fs.rm(root, { recursive: true, force: true });
  }
  await fs.mkdir(root, { recursive: true });
  return withLock(root, async () => {
    const state = await readState(root);
    if (state && state.version !== 2) {
      throw new Error(`fleet at ${root} was made by an older simulation (fleet.json version ${state.version}): start it with fresh: true (CLI: --fresh) or use another root`);
    }
    if (state) {
      const key = (h: { name: string; role: string; owner?: string }) =>
        ownerOf(h) === "root" ? `${h.name}:${h.role}` : `${h.name}:${h.role}:${h.owner}`;
      const want = specs.map(key).join(",");
      const have = state.hosts.map(key).join(",");
      if (want !== have) {
        throw new Error(`fleet at ${root} has hosts ${have}, asked for ${want}: use another root or delete it`);
      }
    }
    await fs.mkdir("/run/sshd", { recursive: true }); // sshd's privilege separation directory

    // Shims: always refreshed, so edits in fleet/shims reach an existing fleet.
    const shims = path.join(root, "shims");
    await fs.mkdir(shims, { recursive: true });
    for (const f of await fs.readdir(SHIMS_SRC)) {
      await fs.copyFile(path.join(SHIMS_SRC, f), path.join(shims, f));
      await fs.chmod(path.join(shims, f), f.endsWith(".sh") ? 0o644 : 0o755);
    }
    for (const gone of await fs.readdir(shims)) {
      if (!existsSync(path.join(SHIMS_SRC, gone))) await fs.rm(path.join(shims, gone), { force: true });
    }
    await buildStock(root);

    const clientKey = path.join(root, "client_ed25519");
    if (!existsSync(clientKey)) {
      await must("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "nixfleet-sim-client", "-f", clientKey]);
    }
    await fs.copyFile(`${clientKey}.pub`, path.join(root, "authorized_keys"));

    const originDir = path.join(root, "origin.git");
    if (!state || !existsSync(path.join(originDir, "HEAD"))) await createOrigin(root, originDir, specs);

    const ports = await pickPorts(specs, opts.basePort ?? 2221, state, root);
    for (const spec of specs) {
      const owner = ownerOf(spec);
      if (owner !== "root") await ensureUser(owner, path.join(root, "hosts", spec.name, "home", owner));
    }
    if (specs.some((h) => ownerOf(h) !== "root")) await letOthersIn(root, root);
    await Promise.all(specs.map((h) => setupHost(root, originDir, h, opts.install ?? true)));

    const hosts: FleetHost[] = [];
    const taken = new Set(ports);
    for (const [i, spec] of specs.entries()) {
      const p = hostPaths(root, spec.name, ownerOf(spec));
      const cfgPath = sshdConfigPath(p.simRoot);
      let port = ports[i];
      // Another fleet (a parallel test file) may bind a port between the check and sshd: move on.
      for (let attempt = 0; ; attempt++) {
        const cfg = sshdConfig(root, p.simRoot, port);
        const old = await fs.readFile(cfgPath, "utf8").catch(() => "");
        if (old !== cfg) {
          await stopSshd(p.simRoot);
          await fs.writeFile(cfgPath, cfg);
        }
        if (runningSshd(p.simRoot) !== null || (await startSshd(p.simRoot)) === "started") break;
        if (attempt >= 20) throw new Error(`fleet: no free port for ${spec.name}'s sshd near ${ports[i]}`);
        do port++;
        while (taken.has(port) || !(await portIsFree(port)));
        taken.add(port);
      }
      hosts.push({
        name: spec.name,
        role: spec.role,
        address: "127.0.0.1",
        port,
        user: "root",
        hostKey: await hostKeyOf(p.simRoot),
        ...p,
      });
    }

    await fs.writeFile(
      path.join(root, "known_hosts"),
      hosts.map((h) => `[${h.address}]:${h.port} ${h.hostKey}\n`).join(""),
    );
    const newState: FleetState = {
      version: 2,
      hosts: hosts.map((h) => ({ name: h.name, role: h.role, port: h.port, ...(h.owner === "root" ? {} : { owner: h.owner }) })),
    };
    await fs.writeFile(path.join(root, "fleet.json"), `${JSON.stringify(newState, null, 2)}\n`);
    return fleetObject(root, hosts);
  });
}

/** Stops every sshd of the fleet under `root` (state is kept; startFleet reuses it). */
export async function stopFleet(root: string): Promise<void> {
  const state = await readState(path.resolve(root));
  if (!state) return;
  const abs = path.resolve(root);
  await Promise.all(
    state.hosts.map(async (h) => {
      const net = { name: h.name, port: h.port, simRoot: hostPaths(abs, h.name, ownerOf(h)).simRoot };
      // A test may have left the host partitioned or frozen: undo both, or sshd would not stop.
      if (existsSync("/usr/sbin/iptables")) await healHost({ root: abs }, net);
      if (runningSshd(net.simRoot) !== null) await thawHost(null, net);
      await stopSshd(net.simRoot);
    }),
  );
}

/** The fleet under `root` as it is now, without starting anything; null if there is none. */
export async function fleetStatus(root: string): Promise<(FleetHost & { running: boolean })[] | null> {
  const abs = path.resolve(root);
  const state = await readState(abs);
  if (!state) return null;
  return Promise.all(
    state.hosts.map(async (h) => {
      const p = hostPaths(abs, h.name, ownerOf(h));
      return {
        name: h.name,
        role: h.role,
        address: "127.0.0.1" as const,
        port: h.port,
        user: "root" as const,
        hostKey: await hostKeyOf(p.simRoot),
        ...p,
        running: runningSshd(p.simRoot) !== null,
      };
    }),
  );
}

/** ssh options that trust exactly the fleet's host keys and use the fleet's client key. */
export function sshArgs(fleet: Pick<SimFleet, "clientKeyPath" | "knownHostsPath">, host: FleetHost): string[] {
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
  host: FleetHost,
  command: string,
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<ExecResult> {
  return run("ssh", [...sshArgs(fleet, host), "--", command], { input: opts.input ?? "", timeoutMs: opts.timeoutMs });
}

/** The store path the host's run/current-system points at, or null before any activation. */
export async function currentSystem(host: Pick<FleetHost, "simRoot">): Promise<string | null> {
  try {
    return await fs.readlink(path.join(host.simRoot, "run", "current-system"));
  } catch {
    return null;
  }
}

async function lines(file: string): Promise<string[]> {
  try {
    return (await fs.readFile(file, "utf8")).split("\n").filter((l) => l !== "");
  } catch {
    return [];
  }
}

/** Lines the simulated `logger` wrote on the host: "<time> <tag>: <message>". */
export const journal = (host: Pick<FleetHost, "simRoot">) => lines(path.join(host.simRoot, "log", "journal.log"));
/** Lines the simulated hooks (e.g. chezmoi-pre-update) wrote on the host. */
export const hookLog = (host: Pick<FleetHost, "simRoot">) => lines(path.join(host.simRoot, "log", "hooks.log"));
/** Lines the simulated `systemctl` wrote on the host: "<time> start UNIT ok|failed|not-found". */
export const systemctlLog = (host: Pick<FleetHost, "simRoot">) => lines(path.join(host.simRoot, "log", "systemctl.log"));
