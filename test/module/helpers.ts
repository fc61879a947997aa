/**
 * Shared by the module tests: host checkouts written by the real renderer, and REAL Nix (Debian trixie's
 * Nix 2.26 in a booted machine of the fleet image, test/nix-machine.ts) evaluating them against nixos-lite —
 * a SIMULATION of nixpkgs' lib / module system / pkgs (test/nixos-lite/README.md), because nixpkgs is not
 * available offline.
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { ROLE_DEFAULTS, type FullSettings, type ResolvedHost } from "../../config/resolve";
import type { Role, Settings } from "../../config/schema";
import { renderHost } from "../../render/files";
import { NIX_OPTS, useNixMachine, type TestNixMachine } from "../nix-machine";

export { FLAKES, NIX_OPTS } from "../nix-machine";

export const ROOT = resolve(__dirname, "..", "..");
export const LITE = join(ROOT, "test", "nixos-lite");
export const MODULE = join(ROOT, "nix", "modules", "services", "system", "auto-upgrade.nix");
export const AGENT_SRC = join(ROOT, "nix", "modules", "services", "system", "agent");
export const FIXTURES = join(__dirname, "fixtures");
export const OPT = "myModules.services.system.autoUpgrade";
export const CHEZMOI = "chezmoi-pre-update.service";
/** nixos/lib/systemd-lib.nix unitNameType's pattern, as NixOS prints it in type errors. */
export const NIXOS_UNIT_PATTERN =
  "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

let nix: TestNixMachine | undefined;

/**
 * A temp dir per test file, removed afterwards; its path is spliced into Nix as a path literal. Also boots
 * the test file's Nix machine (`nixMachine()`), which reads the dir (read-only) at the same path.
 */
export function useWorkDir(): () => string {
  let work = "";
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "nixfleet-module-"));
    if (!/^[A-Za-z0-9/._-]+$/.test(work)) throw new Error(`unexpected temp dir ${work}`);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  nix = useNixMachine(() => [work]);
  return () => work;
}

/** The test file's Nix machine (useWorkDir boots it). */
export function nixMachine(): TestNixMachine {
  if (!nix) throw new Error("call useWorkDir() at the top of the test file: it boots the Nix machine");
  return nix;
}

export interface HostSpec {
  name: string;
  role: Role;
  overrides?: Settings;
  roleSettings?: Partial<FullSettings>;
  configPath?: string;
  configOwner?: string;
  stateDir?: string;
}

// Built by hand, not through the zod schema, so the Nix layer can be fed values the schema would
// refuse (quotes, "$", "%", spaces) and shown to carry them verbatim as data.
export function resolvedHost(spec: HostSpec): ResolvedHost {
  const roleSettings = { ...ROLE_DEFAULTS[spec.role], ...spec.roleSettings };
  const overrides = spec.overrides ?? {};
  return {
    index: 0,
    name: spec.name,
    role: spec.role,
    address: "127.0.0.1",
    port: 22,
    user: "root",
    configPath: spec.configPath ?? `/home/alice/nix-config`,
    // An explicit `configOwner: undefined` means "not set": the owner of the checkout.
    configOwner: "configOwner" in spec ? spec.configOwner : "alice",
    stateDir: spec.stateDir ?? "/var/lib/auto-upgrade",
    roleSettings,
    overrides,
    settings: { ...roleSettings, ...overrides },
  } as ResolvedHost;
}

let checkoutCount = 0;
/** A nix-config checkout: the files `renderHost` gives the host, plus the user's configuration.nix. */
export function writeCheckout(work: string, spec: HostSpec, fixture = "plain", dir = join(work, `c${checkoutCount++}`)): string {
  for (const f of renderHost(resolvedHost(spec))) {
    mkdirSync(join(dir, f.path, ".."), { recursive: true });
    writeFileSync(join(dir, f.path), f.content);
  }
  cpSync(join(FIXTURES, fixture), join(dir, "hosts", spec.name), { recursive: true });
  return dir;
}

/** `nixosSystem` over the host's configuration.nix, as a Nix expression binding `sys`, `cfg`, `pkgs`, `pkg`. */
export function systemExpr(dir: string, host: string, select: string): string {
  return `let
    lite = import ${LITE};
    sys = lite.nixosSystem { modules = [ ${dir}/hosts/${host}/configuration.nix { networking.hostName = "${host}"; } ]; };
    cfg = sys.config;
    inherit (sys) pkgs;
    pkg = builtins.head (builtins.filter (p: (p.pname or "") == "nixfleet-agent") cfg.environment.systemPackages);
  in ${select}`;
}

export type EvalResult = { ok: true; value: any } | { ok: false; stderr: string };

export async function nixEval(expr: string): Promise<EvalResult> {
  const r = await nixMachine().run(["nix-instantiate", "--eval", "--strict", "--json", ...NIX_OPTS, "-E", expr]);
  return r.code === 0 ? { ok: true, value: JSON.parse(r.stdout) } : { ok: false, stderr: r.stderr };
}

export async function mustEval(expr: string): Promise<any> {
  const r = await nixEval(expr);
  if (!r.ok) throw new Error(`nix-instantiate failed:\n${r.stderr}`);
  return r.value;
}

export async function evalFailure(expr: string): Promise<string> {
  const r = await nixEval(expr);
  if (r.ok) throw new Error(`expected the evaluation to fail, got ${JSON.stringify(r.value).slice(0, 500)}`);
  return r.stderr;
}

/** The unit, the timer, and (forcing assertions and every option's type) the toplevel's drvPath. */
export const UNITS = `{
  service = cfg.systemd.services.auto-upgrade;
  timer = cfg.systemd.timers.auto-upgrade;
  pkgOut = pkg.outPath;
  toplevel = cfg.system.build.toplevel.drvPath;
}`;

/**
 * Contract (docs/rollout.md §3): push mode reads `Environment="NAME=VALUE"` lines of the unit file,
 * undoes the JSON escaping and `%%`. This is that reading rule, for the tests.
 */
export function readUnitSettings(unitText: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of unitText.split("\n")) {
    if (!line.startsWith("Environment=")) continue;
    const kv: string = JSON.parse(line.slice("Environment=".length));
    const eq = kv.indexOf("=");
    out[kv.slice(0, eq)] = kv.slice(eq + 1).replaceAll("%%", "%");
  }
  return out;
}
