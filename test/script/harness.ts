// A test "host" for nixfleet-agent and push-bootstrap.sh, run locally.
// REAL: the agent (built by the bootstrap from the bundle's source, with `nix build`), bash, coreutils,
// util-linux (flock, runuser, setsid), git (a bare origin in the sandbox), nix (`nix build` of
// test/script/flake, `nix-env -p` on a real profile, `nix-store --add-root`), and the checkout owner `nobody`
// (git runs as that user through the real runuser).
// FAKE (test/script/fakes, first on PATH): logger (journal file), systemctl, systemd-run; the built systems'
// switch-to-configuration (test/script/flake/switch-to-configuration.sh); and nixpkgs' buildGoModule (the
// test flake's stand-in over the deployer's Go). The `stock tools` test runs a push on a PATH of stock NixOS
// tools only.
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import { createHash } from "node:crypto";

import { agentFiles, AGENT_DIR } from "../../render/files";

export const REPO = path.resolve(__dirname, "../..");
export const BOOTSTRAP = path.join(REPO, "nix/push-bootstrap.sh");
const FAKES = path.join(__dirname, "fakes");
const FLAKE = path.join(__dirname, "flake");
export const HOST = "malphas";
export const OWNER = "nobody";

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
  const r = spawnSync(cmd, args, { encoding: "utf8", cwd: opts.cwd, input: opts.input, env: opts.env ?? process.env });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** git on the sandbox's repos, as their owner (so the test itself never leaves root-owned files). */
export const gitAs = (cwd: string, ...args: string[]) => sh("runuser", ["-u", OWNER, "--", "env", "HOME=/nonexistent", "git", "-C", cwd, ...args]).trim();

export function writeAsOwner(file: string, content: string) {
  sh("runuser", ["-u", OWNER, "--", "mkdir", "-p", path.dirname(file)]);
  fs.writeFileSync(file, content);
  sh("chown", [`${OWNER}:`, file]);
}

/** A fresh host: checkout with the flake (committed, pushed to a bare origin), initial system active. */
export function makeHost(config: HostConfig = {}, extraEnv: Record<string, string> = {}): Host {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "au-script-"));
  roots.push(root);
  fs.chmodSync(root, 0o755);
  const bin = path.join(root, "bin");
  fs.mkdirSync(bin);
  for (const f of fs.readdirSync(FAKES)) fs.copyFileSync(path.join(FAKES, f), path.join(bin, f)), fs.chmodSync(path.join(bin, f), 0o755);
  for (const d of ["tmp", "home", "systemd/static"]) fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.chmodSync(path.join(root, "tmp"), 0o1777);
  sh("chown", [`${OWNER}:`, path.join(root, "home")]);
  const cfg = path.join(root, "home", "nix-config");
  const origin = path.join(root, "origin.git");
  const state = path.join(root, "state");
  fs.mkdirSync(origin);
  sh("chown", [`${OWNER}:`, origin]);
  gitAs(origin, "init", "-q", "--bare", "-b", "main");
  fs.mkdirSync(cfg);
  sh("chown", [`${OWNER}:`, cfg]);
  const env: Record<string, string> = {
    PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`,
    HOME: "/root",
    LANG: "C.UTF-8",
    TMPDIR: path.join(root, "tmp"),
    FAKE_ROOT: root,
    NIX_CONFIG: "substituters =\n",
    AUTO_UPGRADE_ROOT: root,
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

  // The initial system, active: running, booted, profile and boot entry on it.
  const initialLink = path.join(root, "initial");
  sh("nix", ["--extra-experimental-features", "nix-command flakes", "build", "--no-write-lock-file", "--out-link", initialLink,
    `git+file://${cfg}#nixosConfigurations.${HOST}.config.system.build.toplevel`], { env: { ...process.env, ...env, GIT_CONFIG_COUNT: "1", GIT_CONFIG_KEY_0: "safe.directory", GIT_CONFIG_VALUE_0: cfg } });
  const initial = fs.realpathSync(initialLink);
  fs.mkdirSync(path.join(root, "nix/var/nix/profiles"), { recursive: true });
  sh("nix-env", ["-p", path.join(root, "nix/var/nix/profiles/system"), "--set", initial]);
  sh(path.join(initial, "bin/switch-to-configuration"), ["switch"], { env: { ...process.env, FAKE_ROOT: root } });
  fs.symlinkSync(initial, path.join(root, "run/booted-system"));
  return { root, cfg, state, origin, initial, env };
}

export function writeHostConfig(h: Pick<Host, "cfg">, config: HostConfig) {
  writeAsOwner(path.join(h.cfg, "hosts", HOST, "configuration.nix"), nixAttrs(config as Record<string, unknown>));
}

/** Commits the user's own change in the checkout, as the owner. */
export function commitAsOwner(h: Host, message = "user change") {
  gitAs(h.cfg, "add", "-A");
  gitAs(h.cfg, "commit", "-q", "-m", message);
}

/** Stops activators a test left running (their pids are in the fake systemd-run's records) and removes hosts. */
export function cleanupHosts() {
  for (const root of roots.splice(0)) {
    const t = path.join(root, "systemd", "transient");
    for (const f of fs.existsSync(t) ? fs.readdirSync(t).filter((x) => x.endsWith(".pid")) : []) {
      const pid = Number(fs.readFileSync(path.join(t, f), "utf8"));
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
    fs.rmSync(root, { recursive: true, force: true });
  }
}

export function run(cmd: string[], env: Record<string, string>, input?: string, onSpawn?: (pid: number) => void): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0], cmd.slice(1), { env, stdio: ["pipe", "pipe", "pipe"] });
    if (child.pid && onSpawn) onSpawn(child.pid);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    // A command that exits without reading its stdin is not an error of the test.
    child.stdin.on("error", () => {});
    child.stdin.end(input ?? "");
  });
}

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

/** Session 1: the deploy command (bootstrap text through `bash -c`, bundle on stdin). */
export async function push(h: Host, files: BundleFile[] = pushFiles(h), env: Record<string, string> = {}) {
  const b = bundle(files);
  const r = await run(["bash", "-c", fs.readFileSync(BOOTSTRAP, "utf8"), "nixfleet-push"], { ...h.env, ...env }, b);
  return { ...r, token: tokenOf(b) };
}

/** Session 2: `nixfleet-agent confirm T`, the agent push rooted at $STATE_DIR/agent (components/remote.ts). */
export const confirm = (h: Host, token: string, env: Record<string, string> = {}) =>
  run([path.join(h.state, "agent/bin/nixfleet-agent"), "confirm", token], { ...h.env, ...env });

let agentPath: string | undefined;

/**
 * The agent as the module builds it for the timer: the shipped source (the same bytes a bundle carries, so
 * the same store path the bootstrap builds) through the host flake's buildGoModule. Built once per process.
 */
export function agent(h: Host): string {
  if (agentPath === undefined) {
    const src = path.join(h.root, "agent-src");
    for (const f of agentFiles()) {
      fs.mkdirSync(path.dirname(path.join(src, f.path)), { recursive: true });
      fs.writeFileSync(path.join(src, f.path), f.content);
    }
    const expr = '{ cfg, host, src }: import (/. + src + "/package.nix") { inherit ((builtins.getFlake ("git+file://" + cfg)).nixosConfigurations.${host}.pkgs) buildGoModule; }';
    sh("nix", ["--extra-experimental-features", "nix-command flakes", "build", "--impure", "--out-link", path.join(h.root, "agent"),
      "--argstr", "cfg", h.cfg, "--argstr", "host", HOST, "--argstr", "src", path.join(src, AGENT_DIR), "--expr", expr],
      { env: { ...process.env, ...h.env, GIT_CONFIG_COUNT: "1", GIT_CONFIG_KEY_0: "safe.directory", GIT_CONFIG_VALUE_0: h.cfg } });
    agentPath = path.join(fs.realpathSync(path.join(h.root, "agent")), "bin/nixfleet-agent");
  }
  return agentPath;
}

/** The timer's run (the service runs the agent the module built). */
export const timer = (h: Host, env: Record<string, string> = {}) => run([agent(h), "run"], { ...h.env, ...env });

export const status = (h: Host) => JSON.parse(fs.readFileSync(path.join(h.state, "status.json"), "utf8"));
export const journal = (h: Host) => fs.readFileSync(path.join(h.root, "journal"), "utf8");
const real = (p: string) => {
  try {
    return fs.realpathSync(p);
  } catch {
    return null;
  }
};
/** Where the host stands: running system, profile, boot entry. */
export const systemState = (h: Host) => ({
  running: real(path.join(h.root, "run/current-system")),
  profile: real(path.join(h.root, "nix/var/nix/profiles/system")),
  boot: real(path.join(h.root, "boot/default")),
});
export const validated = (h: Host) => real(path.join(h.state, "validated"));
export const golden = (h: Host) => real(path.join(h.state, "golden"));

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

/** Files under `dir` owned by root (uid 0): must be none in the user's checkout. */
export const rootOwned = (dir: string) => sh("find", [dir, "-uid", "0"]).split("\n").filter(Boolean);
