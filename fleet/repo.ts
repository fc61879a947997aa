// SIMULATION — the fleet's nix-config: the flake and host files in origin, and what a user pushes to it.
import { promises as fs, existsSync } from "node:fs";
import * as path from "node:path";
import type { FleetHostSpec } from "./fleet";
import { must } from "./process";

/** The stand-in module system (test/nixos-lite), vendored into the flake at fleet creation. */
const LITE_SRC = path.resolve(__dirname, "..", "test", "nixos-lite");

function flakeNix(specs: readonly FleetHostSpec[]): string {
  const hosts = specs
    .map((h) => `        ${h.name} = lite.nixosSystem { inherit system; modules = [ ${h.git === false ? "" : "withGit "}./hosts/${h.name}/configuration.nix ]; };`)
    .join("\n");
  return `# nix-config of the SIMULATED nixfleet test fleet (fleet/fleet.ts). nixos-lite stands in for nixpkgs.
{
  description = "nix-config of the simulated nixfleet fleet";

  outputs = { self }:
    let
      lite = import ./nixos-lite;
      system = "x86_64-linux";
      # Every host has git: its user cloned this checkout with it.
      withGit = { pkgs, ... }: { environment.systemPackages = [ pkgs.git ]; };
    in
    {
      nixosConfigurations = {
${hosts}
      };
    };
}
`;
}

function configurationNix(h: FleetHostSpec): string {
  return `# ${h.name} (${h.role}) — a host of the SIMULATED nixfleet fleet.
{ lib, ... }:
{
  imports = lib.optional (builtins.pathExists ./nixfleet.nix) ./nixfleet.nix;

  networking.hostName = "${h.name}";

  # SIMULATION: stands in for a chezmoi dotfile sync (a real systemd unit of the machine).
  systemd.services."chezmoi-pre-update" = {
    description = "Sync dotfiles with chezmoi before an upgrade (simulated)";
    serviceConfig.Type = "oneshot";
    script = ''
      echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) chezmoi-pre-update: dotfiles synced (simulated)" >> /var/log/nixfleet-hooks.log
    '';
  };
}
`;
}

/** The nixos-lite copied into the flake. */
export function liteSource(): string {
  if (!existsSync(path.join(LITE_SRC, "default.nix"))) throw new Error(`fleet: ${LITE_SRC}/default.nix is missing`);
  return LITE_SRC;
}

export async function createOrigin(root: string, originDir: string, specs: readonly FleetHostSpec[]): Promise<void> {
  const seed = path.join(root, ".seed");
  await fs.rm(seed, { recursive: true, force: true });
  await fs.mkdir(seed, { recursive: true });
  await fs.writeFile(path.join(seed, "flake.nix"), flakeNix(specs));
  // A flake without inputs still gets a lock file; commit it so builds never write an untracked one.
  await fs.writeFile(path.join(seed, "flake.lock"), `${JSON.stringify({ nodes: { root: {} }, root: "root", version: 7 }, null, 2)}\n`);
  await fs.writeFile(path.join(seed, ".gitignore"), "result\nresult-*\n");
  await fs.cp(liteSource(), path.join(seed, "nixos-lite"), { recursive: true });
  for (const h of specs) {
    await fs.mkdir(path.join(seed, "hosts", h.name), { recursive: true });
    await fs.writeFile(path.join(seed, "hosts", h.name, "configuration.nix"), configurationNix(h));
  }
  const git = (args: string[], cwd = seed) => must("git", args, { cwd });
  await fs.rm(originDir, { recursive: true, force: true });
  // Shared (core.sharedRepository=0666): objects and refs root pushes stay writable for checkout owners
  // and the other way round (dirs 2777, files a+r).
  await git(["init", "--bare", "--shared=0666", "--initial-branch=main", originDir], root);
  await git(["init", "--initial-branch=main"]);
  await git(["add", "-A"]);
  await git(["-c", "user.name=nixfleet-sim", "-c", "user.email=sim@nixfleet.invalid", "commit", "-q", "-m", "Initial nix-config (simulated fleet)"]);
  await git(["push", "-q", originDir, "main"]);
  await fs.rm(seed, { recursive: true, force: true });
}

/** Commits files (path relative to the repo -> text) to origin's main, as a user pushing from elsewhere. */
export async function commitToOrigin(
  fleet: { readonly root: string; readonly originDir: string },
  files: Record<string, string>,
  message: string,
): Promise<void> {
  const work = await fs.mkdtemp(path.join(fleet.root, ".push-"));
  try {
    await must("git", ["clone", "-q", "--branch", "main", fleet.originDir, work]);
    for (const [rel, text] of Object.entries(files)) {
      const file = path.resolve(work, rel);
      if (!file.startsWith(`${work}/`)) throw new Error(`commitToOrigin: ${rel} is outside the repository`);
      await fs.mkdir(path.dirname(file), { recursive: true });
      await fs.writeFile(file, text);
    }
    await must("git", ["-C", work, "add", "-A"]);
    await must("git", ["-C", work, "-c", "user.name=fleet-admin", "-c", "user.email=admin@nixfleet.invalid", "commit", "-q", "-m", message]);
    await must("git", ["-C", work, "push", "-q", "origin", "HEAD:main"]);
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/** Subject lines of origin's main, newest first. */
export async function originLog(fleet: { readonly originDir: string }): Promise<string[]> {
  const out = await must("git", ["--git-dir", fleet.originDir, "log", "--format=%s", "main"]);
  return out.split("\n").filter((l) => l !== "");
}
