// SIMULATION — the stock NixOS toolset of a simulated host: what its SSH sessions and services find on PATH.
// A stock NixOS host has bash, coreutils, util-linux, systemd, nix and the other packages of nixpkgs'
// nixos/modules/config/system-path.nix `requiredPackages`, plus git (a nix-config checkout implies it) and
// openssh; it has no jq and no nh. The tools are this machine's (Debian's) binaries of the same packages,
// linked per nixpkgs package name, so a NixOS unit's `path` maps to exactly the packages it names.
import { execFile } from "node:child_process";
import { promises as fs, existsSync } from "node:fs";
import * as path from "node:path";

interface StockPackage {
  /** Debian packages whose bin/sbin files stand in for it. */
  readonly deb?: readonly string[];
  /** Only these program names of those packages (default: all). */
  readonly only?: readonly string[];
  /** Program names left out (replaced by a shim, or not part of the NixOS package). */
  readonly exclude?: readonly string[];
  /** Programs that are the fleet's shims (fleet/shims). */
  readonly shims?: readonly string[];
  /** Extra names: program -> absolute target. */
  readonly alias?: Readonly<Record<string, string>>;
  /** false: a unit may list it in `path`, but the host's sessions do not have it (not a stock package). */
  readonly stock?: boolean;
}

/** nixpkgs package name -> where its programs come from here. */
export const STOCK_PACKAGES: Readonly<Record<string, StockPackage>> = {
  bash: { deb: ["bash"], alias: { sh: "/bin/bash" } },
  coreutils: { deb: ["coreutils"] },
  "util-linux": { deb: ["util-linux", "bsdutils", "mount"], exclude: ["logger"], shims: ["logger"] },
  gnugrep: { deb: ["grep"] },
  gnused: { deb: ["sed"] },
  findutils: { deb: ["findutils"] },
  gzip: { deb: ["gzip"] },
  gnutar: { deb: ["tar"], only: ["tar"] },
  xz: { deb: ["xz-utils"] },
  bzip2: { deb: ["bzip2"] },
  diffutils: { deb: ["diffutils"] },
  procps: { deb: ["procps"] },
  less: { deb: ["less"], only: ["less"] },
  which: { deb: ["debianutils"], only: ["which"] },
  getent: { deb: ["libc-bin"], only: ["getent"] },
  gawk: { alias: { awk: "/usr/bin/mawk" } }, // Debian's awk stands in for gawk
  git: { deb: ["git"] },
  "git-minimal": { deb: ["git"] }, // pkgs.gitMinimal's pname
  openssh: { deb: ["openssh-client"] },
  nix: { deb: ["nix-bin"] },
  systemd: { shims: ["systemctl", "systemd-run"] },
  // Not on a stock host: only a unit whose `path` names it gets it (as on NixOS).
  jq: { deb: ["jq"], only: ["jq"], stock: false },
};

function dpkgList(pkg: string): Promise<string[]> {
  return new Promise((resolve, reject) =>
    execFile("dpkg", ["-L", pkg], (err, stdout) =>
      err ? reject(new Error(`fleet: dpkg -L ${pkg} failed (is the Debian package ${pkg} installed?): ${err.message}`)) : resolve(stdout.split("\n")),
    ),
  );
}

const BIN_DIR = /^\/(usr\/)?s?bin\/[^/]+$/;

/**
 * Builds ROOT/stock: `pkgs/<nixpkgs name>/bin/<program>` links, `bin/` (the union of the stock packages:
 * what a host's sessions get on PATH) and `nothing/` (an empty dir: systemd's default PATH for transient
 * units, which on NixOS finds nothing a script can use). Idempotent; shims are linked by path, so a
 * refreshed ROOT/shims needs no rebuild.
 */
export async function buildStock(root: string): Promise<string> {
  const stock = path.join(root, "stock");
  const done = path.join(stock, ".complete");
  if (existsSync(done)) return stock;
  await fs.rm(stock, { recursive: true, force: true });
  await fs.mkdir(path.join(stock, "bin"), { recursive: true });
  await fs.mkdir(path.join(stock, "nothing"), { recursive: true });
  for (const [name, spec] of Object.entries(STOCK_PACKAGES)) {
    const bin = path.join(stock, "pkgs", name, "bin");
    await fs.mkdir(bin, { recursive: true });
    const links: [string, string][] = [];
    for (const deb of spec.deb ?? []) {
      for (const file of await dpkgList(deb)) {
        const prog = path.basename(file);
        if (!BIN_DIR.test(file) || (spec.only && !spec.only.includes(prog)) || spec.exclude?.includes(prog)) continue;
        if (existsSync(file)) links.push([prog, file]);
      }
    }
    for (const s of spec.shims ?? []) links.push([s, path.join(root, "shims", s)]);
    for (const [prog, target] of Object.entries(spec.alias ?? {})) links.push([prog, target]);
    for (const [prog, target] of links) {
      await fs.symlink(target, path.join(bin, prog)).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== "EEXIST") throw e;
      });
      if (spec.stock === false) continue;
      await fs.symlink(target, path.join(stock, "bin", prog)).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== "EEXIST") throw e;
      });
    }
  }
  await fs.writeFile(done, "");
  return stock;
}
