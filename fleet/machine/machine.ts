// SIMULATION — one booted machine per simulated host: a systemd-nspawn container of the fleet's Debian
// trixie image (image.sh) with a writable layer of its own, real systemd as PID 1, its own /nix store, /run,
// /etc, /boot. It shares the deployer's network namespace (each sshd on its own loopback port, so an
// iptables partition is a real packet drop). What is real and what is simulated: fleet/machine/README.md.
import { spawn } from "node:child_process";
import { promises as fs, closeSync, existsSync, openSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import * as path from "node:path";
import { must, pidAlive, run, sleep, type ExecResult } from "../process";

const HERE = __dirname;
const IMAGE_SH = path.join(HERE, "image.sh");
const POWER_SH = path.join(HERE, "power.sh");

/** The image every machine boots (built by scripts/setup.sh, cached; built here if missing). */
export async function machineImage(): Promise<string> {
  const out = await must("bash", [IMAGE_SH]);
  const lines = out.trim().split("\n");
  return lines[lines.length - 1];
}

export interface Machine {
  /** Host name (the container's hostname too). */
  readonly name: string;
  /** The read-only image (a root file system). */
  readonly image: string;
  /** The machine's own directory: disk/ (its writable layer), console.log, power.pid. */
  readonly dir: string;
  /** Host directories bound into the machine: [host path, machine path]. */
  readonly binds?: readonly (readonly [string, string])[];
  /** Host directories bound into the machine read-only: [host path, machine path]. */
  readonly readOnlyBinds?: readonly (readonly [string, string])[];
}

export const diskOf = (m: Pick<Machine, "dir">) => path.join(m.dir, "disk");
const powerPidFile = (m: Pick<Machine, "dir">) => path.join(m.dir, "power.pid");

function children(): Map<number, number[]> {
  const kids = new Map<number, number[]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid)!.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return kids;
}

/** The pid of the machine's power supply (power.sh), if it runs. */
export function powerPid(m: Pick<Machine, "dir">): number | null {
  try {
    const pid = Number(readFileSync(powerPidFile(m), "utf8").trim());
    if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid)) return null;
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return cmd.some((a) => a === POWER_SH) && cmd.includes(diskOf(m)) ? pid : null;
  } catch {
    return null;
  }
}

/** The machine's PID 1 as the deployer sees it (the process that is PID 1 in the machine's PID namespace). */
export function machinePid1(m: Pick<Machine, "dir">): number | null {
  const power = powerPid(m);
  if (power === null) return null;
  const kids = children();
  const todo = [...(kids.get(power) ?? [])];
  while (todo.length > 0) {
    const pid = todo.shift()!;
    try {
      const nspid = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1].trim().split(/\s+/) ?? [];
      if (nspid.length > 1 && nspid[nspid.length - 1] === "1") return pid;
    } catch {
      continue;
    }
    todo.push(...(kids.get(pid) ?? []));
  }
  return null;
}

/** Every process of the machine (its PID namespace), as pids of the deployer. */
export function machinePids(m: Pick<Machine, "dir">): number[] {
  const pid1 = machinePid1(m);
  if (pid1 === null) return [];
  let ns: string;
  try {
    ns = readlinkSync(`/proc/${pid1}/ns/pid`);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readlinkSync(`/proc/${d}/ns/pid`) === ns) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

/** Resident memory of every process of the machine, in bytes (the page cache of its files not counted). */
export function machineMemory(m: Pick<Machine, "dir">): number {
  let kb = 0;
  for (const pid of machinePids(m)) {
    try {
      kb += Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kb * 1024;
}

const PATH_IN_MACHINE = "/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Runs a program inside the machine as root (all its namespaces, its root and cwd /), with a clean
 * environment (`PATH` of the machine's Debian tools, `HOME=/root`, plus `env`). This is the console of the
 * machine, not what a deployer sees: use ssh (fleet.ts sshExec) for that.
 */
export async function machineExec(
  m: Pick<Machine, "dir" | "name">,
  argv: readonly string[],
  opts: { input?: string; env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {},
): Promise<ExecResult> {
  const pid1 = machinePid1(m);
  if (pid1 === null) throw new Error(`machine ${m.name} is not running`);
  const env = { PATH: PATH_IN_MACHINE, HOME: "/root", LANG: "C.UTF-8", ...(opts.env ?? {}) };
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  // `--wdns=DIR` in one word: util-linux 2.38's nsenter takes `--wdns DIR` as the program DIR.
  const cd = opts.cwd ? [`--wdns=${opts.cwd}`] : ["-w"];
  return run("nsenter", ["-t", String(pid1), "-a", "-r", ...cd, "--", "/usr/bin/env", "-i", ...envArgs, ...argv], {
    input: opts.input ?? "",
    timeoutMs: opts.timeoutMs,
    env: { PATH: process.env.PATH ?? PATH_IN_MACHINE },
  });
}

/** machineExec that throws (with the output) on a non-zero exit; returns stdout. */
export async function machineMust(m: Pick<Machine, "dir" | "name">, argv: readonly string[], opts: Parameters<typeof machineExec>[2] = {}): Promise<string> {
  const r = await machineExec(m, argv, opts);
  if (r.code !== 0) throw new Error(`machine ${m.name}: ${argv.join(" ")} failed (exit ${r.code}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A path of the machine's file system as the deployer can read it (through its PID 1's root). */
export function machinePath(m: Pick<Machine, "dir" | "name">, p: string): string {
  const pid1 = machinePid1(m);
  if (pid1 === null) throw new Error(`machine ${m.name} is not running`);
  return `/proc/${pid1}/root${p}`;
}

const INOTIFY = "/proc/sys/fs/inotify/max_user_instances";
/** inotify instances one machine uses at most (systemd, journald, logind, dbus; ~5 counted here), with margin. */
const INOTIFY_PER_MACHINE = 12;

/**
 * Every machine's systemd and journald count against root's inotify instances (the machines share the
 * deployer's user namespace); Debian's default of 128 stops at about 25 machines (nspawn exits 255). Raises
 * the deployer's limit to fit `machines` more, saying so on stderr (it lasts until the deployer reboots).
 */
export async function ensureInotify(machines: number): Promise<void> {
  const have = Number((await fs.readFile(INOTIFY, "utf8").catch(() => "0")).trim());
  let used = 0;
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          if (readlinkSync(`/proc/${pid}/fd/${fd}`) === "anon_inode:inotify") used++;
        } catch {
          // closed meanwhile
        }
      }
    } catch {
      // gone, or not ours to read
    }
  }
  // At least 8192 (what systemd-based distributions set): fleets that start together (parallel test
  // files) each count the instances in use before the others' machines boot, so their sums race.
  const want = Math.max(8192, used + INOTIFY_PER_MACHINE * machines + 64);
  if (have >= want) return;
  await fs.writeFile(INOTIFY, `${want}\n`);
  process.stderr.write(`fleet: raised fs.inotify.max_user_instances from ${have} to ${want} for ${machines} machine(s) (until this machine reboots)\n`);
}

/** Powers the machine on (unless it runs) and waits until systemd says it has booted. */
export async function bootMachine(m: Machine, opts: { timeoutMs?: number } = {}): Promise<void> {
  if (powerPid(m) === null) {
    await fs.mkdir(diskOf(m), { recursive: true });
    const binds = [
      ...(m.binds ?? []).map(([h, c]) => `--bind=${h}:${c}`),
      ...(m.readOnlyBinds ?? []).map(([h, c]) => `--bind-ro=${h}:${c}`),
    ];
    const log = openSync(path.join(m.dir, "console.log"), "a");
    try {
      const child = spawn("bash", [POWER_SH, m.image, diskOf(m), m.name, ...binds], {
        detached: true,
        stdio: ["ignore", log, log],
      });
      child.unref();
      await fs.writeFile(powerPidFile(m), `${child.pid}\n`);
    } finally {
      closeSync(log);
    }
  }
  await waitBooted(m, opts.timeoutMs ?? 120_000);
}

/** Waits until the machine's systemd has finished booting ("running" or "degraded"). */
export async function waitBooted(m: Machine, timeoutMs = 120_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (powerPid(m) === null) throw new Error(`machine ${m.name} stopped while booting:\n${consoleTail(m)}`);
    if (machinePid1(m) !== null) {
      const r = await machineExec(m, ["systemctl", "is-system-running", "--wait"], { timeoutMs: Math.max(1000, deadline - Date.now()) }).catch(
        () => null,
      );
      const state = r?.stdout.trim() ?? "";
      if (state === "running" || state === "degraded") return state;
    }
    if (Date.now() > deadline) throw new Error(`machine ${m.name} did not finish booting within ${timeoutMs / 1000} s:\n${consoleTail(m)}`);
    await sleep(200);
  }
}

export function consoleTail(m: Pick<Machine, "dir">, lines = 30): string {
  try {
    return readFileSync(path.join(m.dir, "console.log"), "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no console log)";
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/** The machine's boot id (/proc/sys/kernel/random/boot_id is the deployer's kernel's: we use PID 1's start). */
export function bootMark(m: Pick<Machine, "dir">): string | null {
  const pid1 = machinePid1(m);
  if (pid1 === null) return null;
  try {
    const stat = readFileSync(`/proc/${pid1}/stat`, "utf8");
    return `${pid1}:${stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]}`;
  } catch {
    return null;
  }
}

/** `systemctl reboot` inside the machine, then waits for the new boot to finish (a real restart). */
export async function rebootMachine(m: Machine, opts: { timeoutMs?: number } = {}): Promise<void> {
  const before = bootMark(m);
  if (before === null) throw new Error(`machine ${m.name} is not running`);
  await machineExec(m, ["systemctl", "reboot"]);
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  while (bootMark(m) === before || bootMark(m) === null) {
    if (powerPid(m) === null) throw new Error(`machine ${m.name} powered off instead of rebooting:\n${consoleTail(m)}`);
    if (Date.now() > deadline) throw new Error(`machine ${m.name} did not reboot:\n${consoleTail(m)}`);
    await sleep(100);
  }
  await waitBooted(m, Math.max(1000, deadline - Date.now()));
}

/** Cuts the machine's power: SIGKILL of its PID 1 ends every process of it at once. Files already
 *  written stay (the deployer's page cache survives, unlike a real disk's unsynced writes). */
export async function powerCut(m: Pick<Machine, "dir" | "name">): Promise<void> {
  const power = powerPid(m);
  const pid1 = machinePid1(m);
  if (pid1 !== null) process.kill(pid1, "SIGKILL");
  if (power !== null && !(await waitGone(power, 30_000))) {
    throw new Error(`machine ${m.name}: its power supply (pid ${power}) did not end after its PID 1 was killed`);
  }
}

/** Shuts the machine down cleanly (SIGRTMIN+3 to PID 1, as systemd-nspawn's poweroff); a power cut after 30 s. */
export async function stopMachine(m: Pick<Machine, "dir" | "name">): Promise<void> {
  const power = powerPid(m);
  if (power === null) return;
  const pid1 = machinePid1(m);
  if (pid1 !== null) {
    await run("kill", ["-s", "SIGRTMIN+3", String(pid1)]);
    if (await waitGone(power, 30_000)) return;
  }
  await powerCut(m);
  if (pidAlive(power)) process.kill(power, "SIGKILL");
}

/** True when the machine's file exists (read through its PID 1's root). */
export function machineHas(m: Pick<Machine, "dir" | "name">, p: string): boolean {
  return existsSync(machinePath(m, p));
}
