// A booted machine of the fleet image used as a Nix evaluator and builder (Debian trixie's Nix 2.26), for
// tests and tools that evaluate or build Nix: the deployer's own Nix is not used. Deployer directories are
// bound into it READ-ONLY at the same paths, so an expression may name a deployer path
// (`import /…/test/nixos-lite`) and a file written on the deployer is what Nix reads; what Nix builds stays
// in the machine's own store (read it with `file()`, through the machine's PID 1's root).
//
// It is not a simulated host: its `/etc/nixfleet-machine` marker is removed, so a nixos-lite
// `switch-to-configuration` run there behaves as anywhere off the fleet (refuses, or moves links under
// `$NIXFLEET_SIM_ROOT`) instead of driving the machine's systemd. Tests use it through test/nix-machine.ts.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import type { ExecResult } from "../process";
import { bootMachine, ensureInotify, machineExec, machineImage, machineMust, machinePath, stopMachine, type Machine } from "./machine";

export const REPO = path.resolve(__dirname, "..", "..");
/** Nix must not try the public cache (no network here). */
export const NIX_OPTS = ["--option", "substituters", ""];
export const FLAKES = ["--extra-experimental-features", "nix-command flakes"];

export type RunOptions = { cwd?: string; env?: Record<string, string> };

export interface NixMachine {
  readonly machine: Machine;
  /**
   * Runs `argv` in the machine as root (machineExec: a clean environment, the machine's Debian PATH,
   * `HOME=/root`, plus `env`). `cwd` is a path in the machine (a bound dir, say). Never throws for a
   * non-zero exit.
   */
  run(argv: readonly string[], opts?: RunOptions): Promise<ExecResult>;
  /** `run` that throws with the output on a non-zero exit; returns stdout. */
  must(argv: readonly string[], opts?: RunOptions): Promise<string>;
  /** A path of the machine as the deployer reads it (through its PID 1's root: an absolute symlink on the way
   * resolves on the deployer, so read symlinked store files with `must(["cat", …])`). */
  file(p: string): string;
  /** Shuts the machine down and removes its disk. */
  stop(): Promise<void>;
}

/** Boots a Nix machine that reads the repository and `dirs` (which must exist) at their own paths. */
export async function startNixMachine(dirs: readonly string[] = []): Promise<NixMachine> {
  const bound = [REPO, ...dirs];
  // systemd-nspawn splits --bind-ro on ':' (and a path with ',' or a newline is not worth supporting here).
  for (const d of bound) if (!/^\/[A-Za-z0-9/._+-]*$/.test(d)) throw new Error(`cannot bind ${JSON.stringify(d)} into the Nix machine`);
  const image = await machineImage();
  const root = mkdtempSync(path.join(tmpdir(), "nixfleet-nix-machine-"));
  const m: Machine = {
    // Unique per machine (several test files, or workers sharing one process, boot their own).
    name: `nix-${path.basename(root).slice(-6).toLowerCase()}`,
    image,
    dir: path.join(root, "machine"),
    readOnlyBinds: bound.map((d) => [d, d] as const),
  };
  const stop = async () => {
    await stopMachine(m);
    rmSync(root, { recursive: true, force: true });
  };
  try {
    await ensureInotify(1);
    await bootMachine(m);
    await machineMust(m, ["rm", "/etc/nixfleet-machine"]);
  } catch (err) {
    await stop();
    throw err;
  }

  const run = (argv: readonly string[], opts: RunOptions = {}) => machineExec(m, argv, opts);
  return {
    machine: m,
    run,
    async must(argv, opts) {
      const r = await run(argv, opts);
      if (r.code !== 0) throw new Error(`${argv.join(" ")} failed in the Nix machine (exit ${r.code}):\n${r.stderr}${r.stdout}`);
      return r.stdout;
    },
    file: (p) => machinePath(m, p),
    stop,
  };
}
