/**
 * Nix for the tests that evaluate or build Nix: Debian trixie's Nix 2.26 in ONE booted machine of the fleet
 * image (fleet/machine) per test file, never the deployer's own Nix. The machine boots in `beforeAll` and
 * stops in `afterAll`. The repository and the test's own directories are bound into the machine
 * READ-ONLY at the same paths, so an expression may name a deployer path (`import /…/test/nixos-lite`) and
 * a file the test writes is what Nix reads; what Nix builds stays in the machine's own store (read it with
 * `file()`, through the machine's PID 1's root).
 *
 * The machine is an evaluator and builder, not a simulated host: its `/etc/nixfleet-machine` marker is
 * removed, so a nixos-lite `switch-to-configuration` run there behaves as anywhere off the fleet (refuses,
 * or moves links under `$NIXFLEET_SIM_ROOT`) instead of driving the machine's systemd.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll } from "vitest";
import {
  bootMachine, ensureInotify, machineImage, machineMust, machinePath, machinePid1, stopMachine, type Machine,
} from "../fleet/machine/machine";

export const REPO = resolve(__dirname, "..");
/** Nix must not try the public cache (no network here). */
export const NIX_OPTS = ["--option", "substituters", ""];
export const FLAKES = ["--extra-experimental-features", "nix-command flakes"];

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export interface NixMachine {
  /** The machine (valid once `beforeAll` has run). */
  machine(): Machine;
  /**
   * Runs `argv` in the machine as root, synchronously (as `spawnSync`), with a clean environment: the
   * machine's Debian PATH, `HOME=/root`, plus `env`. `cwd` is a path in the machine (a bound dir).
   */
  run(argv: readonly string[], opts?: { cwd?: string; env?: Record<string, string> }): RunResult;
  /** `run` that throws with Nix's output on a non-zero exit; returns stdout. */
  must(argv: readonly string[], opts?: { cwd?: string; env?: Record<string, string> }): string;
  /** A path of the machine (a store path, say) as the deployer reads it. */
  file(p: string): string;
}

const PATH_IN_MACHINE = "/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Boots the Nix machine of this test file. `dirs` (called in `beforeAll`, after the hooks registered before
 * this call) lists the deployer directories Nix must read besides the repository; they must exist then.
 */
export function useNixMachine(dirs: () => readonly string[] = () => []): NixMachine {
  let m: Machine | undefined;
  let root = "";
  beforeAll(async () => {
    const image = await machineImage();
    root = mkdtempSync(join(tmpdir(), "nixfleet-nix-machine-"));
    const bound = [REPO, ...dirs()];
    // systemd-nspawn splits --bind-ro on ':' (and a path with ',' or a newline is not worth supporting here).
    for (const d of bound) if (!/^\/[A-Za-z0-9/._+-]*$/.test(d)) throw new Error(`cannot bind ${JSON.stringify(d)} into the Nix machine`);
    m = {
      name: `nix${process.pid}`,
      image,
      dir: join(root, "machine"),
      readOnlyBinds: bound.map((d) => [d, d] as const),
    };
    await ensureInotify(1);
    await bootMachine(m);
    await machineMust(m, ["rm", "/etc/nixfleet-machine"]);
  });
  afterAll(async () => {
    if (m) await stopMachine(m);
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const machine = () => {
    if (!m) throw new Error("the Nix machine is not booted (useNixMachine must be called at the top of the test file)");
    return m;
  };
  const run: NixMachine["run"] = (argv, opts = {}) => {
    const pid1 = machinePid1(machine());
    if (pid1 === null) throw new Error(`the Nix machine ${machine().name} is not running`);
    const env = { PATH: PATH_IN_MACHINE, HOME: "/root", LANG: "C.UTF-8", ...(opts.env ?? {}) };
    const cd = opts.cwd ? [`--wdns=${opts.cwd}`] : ["-w"];
    const r = spawnSync(
      "nsenter",
      ["-t", String(pid1), "-a", "-r", ...cd, "--", "/usr/bin/env", "-i", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv],
      { encoding: "utf8", maxBuffer: 1 << 28, env: { PATH: process.env.PATH ?? PATH_IN_MACHINE } },
    );
    if (r.error) throw r.error;
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  return {
    machine,
    run,
    must(argv, opts) {
      const r = run(argv, opts);
      if (r.status !== 0) throw new Error(`${argv.join(" ")} failed in the Nix machine (exit ${r.status}):\n${r.stderr}${r.stdout}`);
      return r.stdout;
    },
    file: (p) => machinePath(machine(), p),
  };
}
