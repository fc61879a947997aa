// A test "host" for nixfleet-agent and push-bootstrap.sh: a booted fleet machine (fleet/machine), one per
// test file, reused by its tests; each test resets the host state it uses (makeHost).
// REAL: the machine's systemd 257 as PID 1 (`systemctl`, `systemd-run` transient units, unit results), its
// journald (`logger`, units' output), Debian trixie's Nix 2.26 with the machine's own store (`nix build` of
// test/script/flake, `nix-env -p /nix/var/nix/profiles/system`, `nix-store --add-root`), the host's real
// paths (/run/current-system, /run/booted-system, /boot/default, the system profile), the agent (built on
// the machine by the bootstrap from the bundle's source, with the machine's Go through nixos-lite's
// buildGoModule), bash, coreutils, util-linux, git, and the checkout owner `nobody` (git as that user).
// Every program runs inside the machine (nsenter into all its namespaces, like its console); what the
// deployer's SSH session would run is run the same way, with the bundle on stdin.
// SIMULATED: the built systems (test/script/flake: a small derivation per system, not NixOS) and their
// switch-to-configuration (test/script/flake/switch-to-configuration.sh), which acts on the machine's real
// systemd; the forge (a bare origin in the test's directory); /run/booted-system, which makeHost points at
// the initial system (a real host sets it at boot); and the test's directory itself: a directory of the
// deployer bound into the machine at the same path (checkout, origin, state dir, TMPDIR), so that the test
// reads and writes the same files the machine sees. The `stock tools` test runs a push on a PATH of stock
// NixOS tools only.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import { createHash, randomBytes } from "node:crypto";
import { afterAll } from "vitest";

import { agentFiles, AGENT_DIR } from "../../render/files";
import { bootMachine, ensureInotify, machineImage, machinePid1, stopMachine, type Machine } from "../../fleet/machine/machine";

export const REPO = path.resolve(__dirname, "../..");
export const BOOTSTRAP = path.join(REPO, "nix/push-bootstrap.sh");
const FLAKE = path.join(__dirname, "flake");
export const HOST = "malphas";
export const OWNER = "nobody";
/** The machine's profile and the simulation's own runtime records there (switch-to-configuration.sh). */
export const PROFILE = "/nix/var/nix/profiles/system";
const SIM = "/run/nixfleet-script";
const MACHINE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface Host {
  root: string;
  cfg: string;
  state: string;
  origin: string;
  initial: string;
  env: Record<string, string>;
}

export interface HostConfig {
  version?: string;
  kernel?: string;
  failActivation?: boolean;
  failBoot?: boolean;
  activationMessage?: string;
  failUnits?: string[];
  lateFailUnits?: string[];
  units?: Record<string, string>;
  buildSleep?: number;
  /** A git remote path this system's activation makes unreachable (a switch that breaks networking). */
  breakRemote?: string;
  /** Version of the `hello` package in the system's closure (default "2.10"). */
  hello?: string;
  /** KiB of padding in `hello` (a size change shows in the closure diff). */
  helloKiB?: number;
  /** More packages in the closure: name -> version. */
  packages?: Record<string, string>;
}

const roots: string[] = [];


export const sha256 = (s: string | Buffer) => createHash("sha256").update(s).digest("hex");

/** A Nix string literal: `\`, `"` and `${` escaped, every other byte literal (Nix has no `\u` escapes). */
const nixStr = (s: string) => `"${s.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\$\{/g, "\\${")}"`;
export const nixAttrs = (o: Record<string, unknown>): string =>
  `{\n${Object.entries(o)
    .map(([k, v]) => `  ${nixStr(k)} = ${typeof v === "string" ? nixStr(v) : Array.isArray(v) ? `[ ${v.map((x) => nixStr(String(x))).join(" ")} ]` : typeof v === "object" ? nixAttrs(v as Record<string, unknown>) : String(v)};`)
    .join("\n")}\n}\n`;

/** The settings the module writes into the unit (docs/rollout.md §3): what hosts/<h>/nixfleet.nix holds here. */
export const UNIT_SETTINGS = [
  "AUTO_UPGRADE_CONFIG_PATH", "AUTO_UPGRADE_FLAKE_HOST", "AUTO_UPGRADE_USER", "AUTO_UPGRADE_REMOTE", "AUTO_UPGRADE_BRANCH",
  "AUTO_UPGRADE_HOOKS", "AUTO_UPGRADE_REQUIRED_HOOKS", "AUTO_UPGRADE_VALIDATE", "AUTO_UPGRADE_COMMIT", "AUTO_UPGRADE_STATE_DIR",
  "AUTO_UPGRADE_HEALTH_CHECK", "AUTO_UPGRADE_HEALTH_UNITS", "AUTO_UPGRADE_HEALTH_TIMEOUT",
];

export function settingsNix(env: Record<string, string>): string {
  return nixAttrs(Object.fromEntries(UNIT_SETTINGS.map((k) => [k, env[k] ?? ""])));
}

export function sh(cmd: string, args: string[], opts: { cwd?: string; input?: string; env?: Record<string, string> } = {}): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", cwd: opts.cwd, input: opts.input, env: opts.env ?? process.env, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

// ---- the machine (one per test file) ----

let machine: Machine | undefined;
let shared: string | undefined;

/** nsenter into every namespace of the machine (root and cwd of its PID 1), with exactly `env`. */
function enter(env: Record<string, string>): string[] {
  if (!machine) throw new Error("no machine: call makeHost first");
  const pid1 = machinePid1(machine);
  if (pid1 === null) throw new Error(`machine ${machine.name} is not running`);
  return ["-t", String(pid1), "-a", "-r", "-w", "--", "/usr/bin/env", "-i", ...Object.entries(env).map(([k, v]) => `${k}=${v}`)];
}

const consoleEnv = (env: Record<string, string> = {}) => ({ PATH: MACHINE_PATH, HOME: "/root", LANG: "C.UTF-8", ...env });

/** Runs a program in the machine as root (its console), synchronously; throws on a non-zero exit. */
export function inHost(argv: string[], opts: { input?: string; env?: Record<string, string> } = {}): string {
  return sh("nsenter", [...enter(consoleEnv(opts.env)), ...argv], { input: opts.input });
}

/** Runs a program in the machine as root with exactly `env` (what an SSH session or the timer's unit has). */
export function run(cmd: string[], env: Record<string, string>, input?: string): Promise<Result> {
  const child = spawnInHost(cmd, env);
  return new Promise((resolve, reject) => {
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    // A command that exits without reading its stdin is not an error of the test.
    child.stdin!.on("error", () => {});
    child.stdin!.end(input ?? "");
  });
}

/** Starts a program in the machine (own process group on the deployer: kill(-pid) ends nsenter and it). */
export function spawnInHost(cmd: string[], env: Record<string, string>, opts: { detached?: boolean } = {}): ChildProcess {
  const detached = opts.detached ?? false;
  const child = spawn("nsenter", [...enter(env), ...cmd], { stdio: ["pipe", "pipe", "pipe"], detached, env: { PATH: process.env.PATH ?? MACHINE_PATH } });
  children.add({ child, detached });
  child.on("exit", () => children.forEach((c) => c.child === child && children.delete(c)));
  return child;
}

/** Programs of the machine a test started and has not seen end: cleanupHosts kills what is left of them. */
const children = new Set<{ child: ChildProcess; detached: boolean }>();

/** Sends a signal to a process of the machine, named by its pid in the machine (what the lease records). */
export const killInHost = (pid: number, signal: "TERM" | "KILL") => inHost(["kill", "-s", signal, String(pid)]);

/** A pid of the machine that is alive as long as the machine runs (its PID 1). */
export const LIVE_PID = 1;
/** A pid of the machine whose process has ended. */
export const deadPid = () => Number(inHost(["sh", "-c", "echo $$"]).trim());

let machineBase: string | undefined;

async function ensureMachine(): Promise<void> {
  if (machine) return;
  const base = fs.mkdtempSync("/var/tmp/nixfleet-script-");
  machineBase = base;
  fs.chmodSync(base, 0o755);
  shared = path.join(base, "share");
  fs.mkdirSync(shared, { mode: 0o755 });
  const m: Machine = { name: HOST, image: await machineImage(), dir: path.join(base, "machine"), binds: [[shared, shared]] };
  await ensureInotify(1);
  machine = m;
  await bootMachine(m);
  seedAgent(m);
}

/**
 * The agent in the machine's store before the first test, as a host that built it once has it: built by
 * this machine's Nix the first time (the derivation the bootstrap and the timer's unit build: the shipped
 * source through nixos-lite's buildGoModule), its closure kept in ~/.cache/nixfleet/script-agent (keyed
 * by the source, go.nix and the image) and imported into later machines (`nix-store --import`, as a
 * substitute would), so each test file's machine does not compile it again.
 */
function seedAgent(m: Machine) {
  const files = agentFiles();
  const goNix = fs.readFileSync(path.join(REPO, "test/nixos-lite/go.nix"), "utf8");
  const key = sha256(JSON.stringify([files.map((f) => [f.path, f.content]), goNix, m.image])).slice(0, 32);
  const cacheDir = path.join(process.env.NIXFLEET_CACHE ?? path.join(os.homedir(), ".cache/nixfleet"), "script-agent");
  const cached = path.join(cacheDir, `${key}.closure`);
  const here = path.join(shared!, "agent.closure");
  const outFile = path.join(cacheDir, `${key}.out`);
  let out: string;
  if (fs.existsSync(cached) && fs.existsSync(outFile)) {
    fs.copyFileSync(cached, here);
    inHost(["sh", "-c", 'nix-store --import <"$1" >/dev/null', "import", here]);
    out = fs.readFileSync(outFile, "utf8").trim();
  } else {
    const src = path.join(shared!, "agent-src");
    for (const f of files) {
      fs.mkdirSync(path.dirname(path.join(src, f.path)), { recursive: true });
      fs.writeFileSync(path.join(src, f.path), f.content);
    }
    fs.writeFileSync(path.join(shared!, "go.nix"), goNix);
    const expr = '{ src, go }: import (/. + src + "/package.nix") { buildGoModule = import (/. + go) { system = "x86_64-linux"; }; }';
    out = inHost(["nix", "--extra-experimental-features", "nix-command", "build", "--impure", "--no-link", "--print-out-paths",
      "--argstr", "src", path.join(src, AGENT_DIR), "--argstr", "go", path.join(shared!, "go.nix"), "--expr", expr]).trim();
    inHost(["sh", "-c", 'nix-store --export $(nix-store -qR "$1") >"$2"', "export", out, here]);
    fs.mkdirSync(cacheDir, { recursive: true });
    const tmp = `${cached}.${process.pid}`;
    fs.copyFileSync(here, tmp);
    fs.writeFileSync(`${outFile}.${process.pid}`, `${out}\n`);
    fs.renameSync(tmp, cached);
    fs.renameSync(`${outFile}.${process.pid}`, outFile);
  }
  fs.rmSync(here, { force: true });
  inHost(["nix-store", "--add-root", "/nix/var/nix/gcroots/nixfleet-script-agent", "--realise", out]);
  agentPaths.set(m, path.join(out, "bin/nixfleet-agent"));
}

// The file's machine is powered off and removed after its last test (a top-level hook of the file that
// imports this module).
afterAll(async () => {
  const m = machine;
  const base = machineBase;
  machine = undefined;
  machineBase = undefined;
  if (m) await stopMachine(m);
  if (base) fs.rmSync(base, { recursive: true, force: true, maxRetries: 20, retryDelay: 250 });
});

// ---- a host: the state one test starts from ----

/** git on the sandbox's repos, in the machine, as their owner (so the test itself never leaves root-owned files). */
export const gitAs = (cwd: string, ...args: string[]) => inHost(["runuser", "-u", OWNER, "--", "env", "HOME=/nonexistent", "git", "-C", cwd, ...args]).trim();

export function writeAsOwner(file: string, content: string) {
  sh("runuser", ["-u", OWNER, "--", "mkdir", "-p", path.dirname(file)]);
  fs.writeFileSync(file, content);
  sh("chown", [`${OWNER}:`, file]);
}

/** The harness's own Nix calls build the owner's checkout as root: safe.directory in the building user's HOME. */
const harnessHome = (h: Pick<Host, "root">) => path.join(h.root, "harness-home");

function nixEnv(h: Pick<Host, "root">): Record<string, string> {
  return { HOME: harnessHome(h), TMPDIR: path.join(h.root, "tmp") };
}

/**
 * A fresh host on this file's machine: checkout with the flake (committed, pushed to a bare origin), the
 * initial system built by the machine's Nix and activated with its real paths: profile, boot entry,
 * running and booted system on it.
 */
export async function makeHost(config: HostConfig = {}, extraEnv: Record<string, string> = {}): Promise<Host> {
  await ensureMachine();
  const root = path.join(shared!, `t-${randomBytes(4).toString("hex")}`);
  roots.push(root);
  fs.mkdirSync(root, { mode: 0o755 });
  fs.chmodSync(root, 0o755);
  // Test shims go first on the PATH (interrupted.test.ts: a stalling install); empty otherwise.
  const bin = path.join(root, "bin");
  fs.mkdirSync(bin);
  for (const d of ["tmp", "home", "units", "harness-home"]) fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.chmodSync(path.join(root, "tmp"), 0o1777);
  sh("chown", [`${OWNER}:`, path.join(root, "home")]);
  const cfg = path.join(root, "home", "nix-config");
  const origin = path.join(root, "origin.git");
  const state = path.join(root, "state");
  fs.writeFileSync(path.join(harnessHome({ root }), ".gitconfig"), `[safe]\n\tdirectory = ${cfg}\n`);
  fs.mkdirSync(origin);
  sh("chown", [`${OWNER}:`, origin]);
  gitAs(origin, "init", "-q", "--bare", "-b", "main");
  fs.mkdirSync(cfg);
  sh("chown", [`${OWNER}:`, cfg]);
  const env: Record<string, string> = {
    PATH: `${bin}:${MACHINE_PATH}`,
    HOME: "/root",
    LANG: "C.UTF-8",
    TMPDIR: path.join(root, "tmp"),
    AUTO_UPGRADE_CONFIG_PATH: cfg,
    AUTO_UPGRADE_FLAKE_HOST: HOST,
    AUTO_UPGRADE_USER: "",
    AUTO_UPGRADE_REMOTE: "origin",
    AUTO_UPGRADE_BRANCH: "main",
    AUTO_UPGRADE_HOOKS: "",
    AUTO_UPGRADE_REQUIRED_HOOKS: "",
    AUTO_UPGRADE_VALIDATE: "true",
    AUTO_UPGRADE_COMMIT: "false",
    AUTO_UPGRADE_STATE_DIR: state,
    AUTO_UPGRADE_HEALTH_CHECK: "true",
    AUTO_UPGRADE_HEALTH_UNITS: "",
    AUTO_UPGRADE_HEALTH_TIMEOUT: "30",
    AUTO_UPGRADE_CONFIRM_TIMEOUT: "30",
    AUTO_UPGRADE_LEASE_WAIT: "5",
    ...extraEnv,
  };
  gitAs(cfg, "init", "-q", "-b", "main");
  gitAs(cfg, "config", "user.name", "Test Owner");
  gitAs(cfg, "config", "user.email", "owner@example.invalid");
  gitAs(cfg, "remote", "add", "origin", origin);
  writeAsOwner(path.join(cfg, "flake.nix"), fs.readFileSync(path.join(FLAKE, "flake.nix"), "utf8"));
  writeAsOwner(path.join(cfg, "switch-to-configuration.sh"), fs.readFileSync(path.join(FLAKE, "switch-to-configuration.sh"), "utf8"));
  writeAsOwner(path.join(cfg, "build-go-module.nix"), fs.readFileSync(path.join(REPO, "test/nixos-lite/go.nix"), "utf8"));
  writeAsOwner(path.join(cfg, "flake.lock"), '{"nodes":{"root":{}},"root":"root","version":7}\n');
  writeHostConfig({ cfg } as Host, config);
  writeAsOwner(path.join(cfg, "hosts", HOST, "nixfleet.nix"), settingsNix(env));
  // As after an earlier push: nixfleet wrote the settings file (what it wrote is recorded).
  fs.mkdirSync(path.join(state, "pushed", "hosts", HOST), { recursive: true });
  fs.writeFileSync(path.join(state, "pushed", "hosts", HOST, "nixfleet.nix.sha256"), `${sha256(settingsNix(env))}\n`);
  gitAs(cfg, "add", "-A");
  gitAs(cfg, "commit", "-q", "-m", "initial");
  gitAs(cfg, "push", "-q", "origin", "main");
  gitAs(cfg, "branch", "-q", "--set-upstream-to=origin/main");

  // The initial system, active: running, booted, profile and boot entry on it (the machine's real paths).
  const initialLink = path.join(root, "initial");
  inHost(["nix", "--extra-experimental-features", "nix-command flakes", "build", "--no-write-lock-file", "--out-link", initialLink,
    `git+file://${cfg}#nixosConfigurations.${HOST}.config.system.build.toplevel`], { env: nixEnv({ root }) });
  const initial = fs.readlinkSync(initialLink);
  inHost(["nix-env", "-p", PROFILE, "--set", initial]);
  inHost([path.join(initial, "bin/switch-to-configuration"), "switch"]);
  // SIMULATED: a real host points /run/booted-system at the system it booted; this machine booted Debian.
  inHost(["ln", "-sfn", initial, "/run/booted-system"]);
  inHost(["journalctl", "--sync"]);
  const cursor = inHost(["journalctl", "--no-pager", "-n", "0", "--show-cursor"]).match(/-- cursor: (\S+)/)?.[1] ?? "";
  cursors.set(root, cursor);
  return { root, cfg, state, origin, initial, env };
}

const cursors = new Map<string, string>();

export function writeHostConfig(h: Pick<Host, "cfg">, config: HostConfig) {
  writeAsOwner(path.join(h.cfg, "hosts", HOST, "configuration.nix"), nixAttrs(config as Record<string, unknown>));
}

/** Commits the user's own change in the checkout, as the owner. */
export function commitAsOwner(h: Host, message = "user change") {
  gitAs(h.cfg, "add", "-A");
  gitAs(h.cfg, "commit", "-q", "-m", message);
}

/**
 * A unit of the machine itself (not of the built systems; e.g. a pre-update hook) in /etc/systemd/system:
 * Type=oneshot running `cmd` with bash. `failed: true` starts it once so that it is failed before the test.
 */
export function hostUnit(h: Host, name: string, cmd: string, opts: { failed?: boolean } = {}) {
  const script = path.join(h.root, "units", `${name}.sh`);
  fs.writeFileSync(script, cmd);
  inHost(["tee", `/etc/systemd/system/${name}`], { input: `[Service]\nType=oneshot\nExecStart=/bin/bash ${script}\n` });
  inHost(["systemctl", "daemon-reload"]);
  if (opts.failed) {
    spawnSync("nsenter", [...enter(consoleEnv()), "systemctl", "start", name]);
    if (inHost(["systemctl", "is-failed", name]).trim() !== "failed") throw new Error(`${name} did not fail`);
  }
}

/**
 * After each test: stops the activators it left running (transient units), removes the units it added,
 * resets failed units and the simulation's records, removes its directory. The machine stays up.
 */
export function cleanupHosts() {
  // A test that failed half way may leave a session running (a stalled install, a push it awaited no more).
  for (const { child, detached } of children) {
    try {
      if (detached) process.kill(-child.pid!, "SIGKILL");
      else child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  children.clear();
  if (!machine || machinePid1(machine) === null) return;
  inHost(["sh", "-c", `systemctl stop 'auto-upgrade-activate-*' 2>/dev/null
    for f in /etc/systemd/system/*.service; do grep -qs '^ExecStart=/bin/bash ${shared}/' "$f" && rm -f "$f"; done
    rm -rf ${SIM}/stc-broken ${SIM}/remote-broken
    systemctl daemon-reload; systemctl reset-failed; true`]);
  for (const root of roots.splice(0)) {
    // A build a test stopped may still be removing its build dir (Nix does that a moment after): retry.
    fs.rmSync(root, { recursive: true, force: true, maxRetries: 20, retryDelay: 250 });
    cursors.delete(root);
  }
}

/** Makes every switch-to-configuration of the machine fail before it does anything (simulated fault). */
export const breakSwitch = () => inHost(["sh", "-c", `mkdir -p ${SIM} && touch ${SIM}/stc-broken`]);

export interface BundleFile {
  path: string;
  content: string;
}

/** A bundle as docs/rollout.md §5 describes it (the two shipped files gzip-base64, the others text). */
export function bundle(files: BundleFile[]): string {
  const out = ["nixfleet-bundle 1"];
  for (const f of files) {
    const gz = f.path.startsWith("modules/");
    const mode = f.content.startsWith("#!") ? "0755" : "0644";
    const lines = gz ? (gzipSync(Buffer.from(f.content), { level: 9 }).toString("base64").match(/.{1,76}/g) ?? []) : f.content.slice(0, -1).split("\n");
    out.push(`file ${mode} ${sha256(f.content)} ${gz ? "gzip-base64" : "text"} ${lines.length} ${f.path}`, ...lines);
  }
  out.push("end");
  return `${out.join("\n")}\n`;
}

export const tokenOf = (b: string) => sha256(b).slice(0, 16);

/** The files nixfleet pushes to the host: the agent's source and the host's settings file (and optional extras). */
export function pushFiles(h: Host, extra: BundleFile[] = [], settings: Record<string, string> = h.env): BundleFile[] {
  return [
    ...agentFiles().map((f) => ({ path: f.path, content: f.content })),
    { path: `hosts/${HOST}/nixfleet.nix`, content: settingsNix(settings) },
    ...extra,
  ];
}

/** Session 1: the deploy command (bootstrap text through `bash -c`, bundle on stdin), as the SSH session runs it. */
export async function push(h: Host, files: BundleFile[] = pushFiles(h), env: Record<string, string> = {}) {
  const b = bundle(files);
  const r = await run(["bash", "-c", fs.readFileSync(BOOTSTRAP, "utf8"), "nixfleet-push"], { ...h.env, ...env }, b);
  return { ...r, token: tokenOf(b) };
}

/** Session 2: `nixfleet-agent confirm T`, the agent push rooted at $STATE_DIR/agent (components/remote.ts). */
export const confirm = (h: Host, token: string, env: Record<string, string> = {}) =>
  run([path.join(h.state, "agent/bin/nixfleet-agent"), "confirm", token], { ...h.env, ...env });

const agentPaths = new Map<Machine, string>();

/**
 * The agent as the module builds it for the timer: the shipped source (the same bytes a bundle carries, so
 * the same store path the bootstrap builds) through the host's buildGoModule, by the machine's Nix
 * (seedAgent, when the machine booted).
 */
export function agent(_h: Host): string {
  const p = machine && agentPaths.get(machine);
  if (p === undefined) throw new Error("no agent: call makeHost first");
  return p;
}

/** The timer's run (the service runs the agent the module built). */
export const timer = (h: Host, env: Record<string, string> = {}) => run([agent(h), "run"], { ...h.env, ...env });

export const status = (h: Host) => JSON.parse(fs.readFileSync(path.join(h.state, "status.json"), "utf8"));

interface JournalEntry {
  SYSLOG_IDENTIFIER?: string;
  MESSAGE?: string | number[] | null;
}

function journalEntries(h: Host, match: string[] = []): JournalEntry[] {
  // Messages sent before this call are written before it returns (journald's sync).
  inHost(["journalctl", "--sync"]);
  const cursor = cursors.get(h.root);
  const out = inHost(["journalctl", "--no-pager", "--all", "-o", "json", ...(cursor ? [`--after-cursor=${cursor}`] : []), ...match]);
  return out.split("\n").filter(Boolean).map((l) => JSON.parse(l) as JournalEntry);
}

const messageOf = (e: JournalEntry) =>
  Array.isArray(e.MESSAGE) ? Buffer.from(e.MESSAGE).toString("utf8") : (e.MESSAGE ?? "");

/** The machine's journal since makeHost: one `TAG<TAB>MESSAGE` line per entry (newlines in a message: spaces). */
export const journal = (h: Host) =>
  journalEntries(h).map((e) => `${e.SYSLOG_IDENTIFIER ?? ""}\t${messageOf(e).replace(/\n/g, " ")}\n`).join("");

/** switch-to-configuration's calls since makeHost: "<action> <system> <exit>" each (its journal lines). */
export const switchLog = (h: Host) => journalEntries(h, ["SYSLOG_IDENTIFIER=switch-to-configuration"]).map(messageOf);

/** Where links of the machine lead (`readlink -e` in the machine: their targets are its store's paths); null if nowhere. */
function realIn(...paths: string[]): (string | null)[] {
  const out = inHost(["sh", "-c", 'for p; do readlink -e -- "$p" || echo; done', "real", ...paths]).split("\n");
  return paths.map((_, i) => out[i] || null);
}
/** Where the host stands: running system, profile, boot entry (the machine's real paths). */
export const systemState = (_h?: Host) => {
  const [running, profile, boot] = realIn("/run/current-system", PROFILE, "/boot/default");
  return { running, profile, boot };
};
/** The booted system (/run/booted-system). */
export const bootedSystem = () => realIn("/run/booted-system")[0];
export const validated = (h: Host) => realIn(path.join(h.state, "validated"))[0];
export const golden = (h: Host) => realIn(path.join(h.state, "golden"))[0];
/** realpath of a path of the machine (e.g. a link in the state dir). */
export const realpathIn = (p: string) => realIn(p)[0];

export async function waitFor<T>(what: string, fn: () => T | null | undefined | false, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    let v: T | null | undefined | false = null;
    try {
      v = fn();
    } catch {
      v = null;
    }
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Whether a path of the test's directory exists, a link counted as itself: links in the state dir lead to
 * the machine's store, which the deployer does not have (fs.existsSync would follow them and say no).
 */
export const present = (p: string) => fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined;

/** Files under `dir` owned by root (uid 0): must be none in the user's checkout. */
export const rootOwned = (dir: string) => sh("find", [dir, "-uid", "0"]).split("\n").filter(Boolean);
