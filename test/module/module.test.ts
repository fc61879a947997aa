/**
 * The NixOS module `nix/modules/services/system/auto-upgrade.nix`, evaluated and built by REAL Nix
 * against nixos-lite — a SIMULATION of nixpkgs' lib / module system / pkgs (test/nixos-lite/README.md),
 * because nixpkgs is not available offline. The host files come from the real renderer
 * (`renderHost`); `fixtures/<case>/configuration.nix` are the user's own host configurations.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROLE_DEFAULTS, type FullSettings, type ResolvedHost } from "../../config/resolve";
import type { Role, Settings } from "../../config/schema";
import { scriptEnv } from "../../components/remote";
import { renderHost } from "../../render/files";

const ROOT = resolve(__dirname, "..", "..");
const LITE = join(ROOT, "test", "nixos-lite");
const MODULE = join(ROOT, "nix", "modules", "services", "system", "auto-upgrade.nix");
const SCRIPT_SRC = join(ROOT, "nix", "modules", "services", "system", "auto-upgrade.sh");
const FIXTURES = join(__dirname, "fixtures");
const NIX_OPTS = ["--option", "substituters", ""];
const FLAKES = ["--extra-experimental-features", "nix-command flakes"];
const OPT = "myModules.services.system.autoUpgrade";
const CHEZMOI = "chezmoi-pre-update.service";
const ENV_KEYS = [
  "AUTO_UPGRADE_BRANCH",
  "AUTO_UPGRADE_COMMIT",
  "AUTO_UPGRADE_CONFIG_PATH",
  "AUTO_UPGRADE_FLAKE_HOST",
  "AUTO_UPGRADE_HOOKS",
  "AUTO_UPGRADE_REMOTE",
  "AUTO_UPGRADE_REQUIRED_HOOKS",
  "AUTO_UPGRADE_STATE_DIR",
  "AUTO_UPGRADE_USER",
  "AUTO_UPGRADE_VALIDATE",
];

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "nixfleet-module-"));
  // Paths are spliced into Nix expressions below as path literals: keep them plain.
  if (!/^[A-Za-z0-9/._-]+$/.test(work)) throw new Error(`unexpected temp dir ${work}`);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface HostSpec {
  name: string;
  role: Role;
  overrides?: Settings;
  roleSettings?: Partial<FullSettings>;
  configPath?: string;
  configOwner?: string;
  stateDir?: string;
}

// Built by hand, not through the zod schema, so the Nix layer can be fed values the schema would
// refuse (quotes, "$", spaces) and shown to carry them verbatim as data.
function resolvedHost(spec: HostSpec): ResolvedHost {
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
  };
}

let checkoutCount = 0;
/** A nix-config checkout: the files `renderHost` gives the host, plus the user's configuration.nix. */
function writeCheckout(spec: HostSpec, fixture = "plain", dir = join(work, `c${checkoutCount++}`)): string {
  for (const f of renderHost(resolvedHost(spec))) {
    mkdirSync(join(dir, f.path, ".."), { recursive: true });
    writeFileSync(join(dir, f.path), f.content);
  }
  cpSync(join(FIXTURES, fixture), join(dir, "hosts", spec.name), { recursive: true });
  return dir;
}

/** `nixosSystem` over the host's configuration.nix, as a Nix expression binding `sys`. */
function systemExpr(dir: string, host: string, select: string): string {
  return `let
    lite = import ${LITE};
    sys = lite.nixosSystem { modules = [ ${dir}/hosts/${host}/configuration.nix { networking.hostName = "${host}"; } ]; };
    cfg = sys.config;
    pkg = builtins.head (builtins.filter (p: p.name == "auto-upgrade") cfg.environment.systemPackages);
  in ${select}`;
}

type EvalResult = { ok: true; value: any; ms: number } | { ok: false; stderr: string; ms: number };

function nixEval(expr: string): EvalResult {
  const t0 = Date.now();
  const r = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", ...NIX_OPTS, "-E", expr], { encoding: "utf8" });
  const ms = Date.now() - t0;
  return r.status === 0 ? { ok: true, value: JSON.parse(r.stdout), ms } : { ok: false, stderr: r.stderr, ms };
}

function mustEval(expr: string): any {
  const r = nixEval(expr);
  if (!r.ok) throw new Error(`nix-instantiate failed:\n${r.stderr}`);
  return r.value;
}

function evalFailure(expr: string): string {
  const r = nixEval(expr);
  if (r.ok) throw new Error(`expected the evaluation to fail, got ${JSON.stringify(r.value).slice(0, 500)}`);
  return r.stderr;
}

/** The unit, the timer, and (forcing assertions and every option's type) the toplevel's drvPath. */
const UNITS = `{
  service = cfg.systemd.services.auto-upgrade;
  timer = cfg.systemd.timers.auto-upgrade;
  pkgOut = pkg.outPath;
  toplevel = cfg.system.build.toplevel.drvPath;
}`;

describe("nixos-lite (SIMULATION) merges like the NixOS module system", () => {
  /** evalModules over inline modules that declare `xs` (list), `s` (str), `b` (bool) and `n.m` (int, no default). */
  const lite = (modules: string, select = "config") => `let
    lib = (import ${LITE}).lib;
    inherit (lib) mkOption types mkDefault mkForce mkIf mkMerge;
    decl = { options = { xs = mkOption { type = types.listOf types.str; default = [ "default" ]; };
                         s = mkOption { type = types.str; default = "d"; };
                         b = mkOption { type = types.bool; default = false; };
                         n.m = mkOption { type = types.int; }; }; };
    r = lib.evalModules { modules = [ decl ] ++ ${modules}; };
  in let inherit (r) config; in ${select}`;

  it("equal-priority lists concatenate in module order; a plain value beats mkDefault; mkForce beats both", () => {
    expect(mustEval(lite(`[ { xs = [ "a" ]; } { xs = mkDefault [ "role" ]; } { xs = [ "b" "c" ]; } { s = mkDefault "role"; } { s = "host"; } { b = mkForce false; } { b = true; } ]`, "config.xs"))).toEqual(["a", "b", "c"]);
    expect(mustEval(lite(`[ { s = mkDefault "role"; } { s = "host"; } ]`, "config.s"))).toBe("host");
    expect(mustEval(lite(`[ { s = mkForce "forced"; } { s = "host"; } { s = mkDefault "role"; } ]`, "config.s"))).toBe("forced");
    expect(mustEval(lite(`[ ]`, "config.xs"))).toEqual(["default"]);
  });

  it("mkIf and mkMerge, also around a whole config, and imports of functions", () => {
    const cfg = mustEval(lite(
      `[ ({ config, ... }: { imports = [ { xs = [ "imported" ]; } ]; config = mkIf config.b (mkMerge [ { s = "on"; } { xs = [ "x" ]; } ]); }) { b = true; } { xs = mkIf false [ "never" ]; } ]`,
      "{ inherit (config) xs s b; }",
    ));
    expect(cfg).toEqual({ xs: ["x", "imported"], s: "on", b: true });
  });

  it("errors name the option: conflict, wrong type, undeclared, used but not defined", () => {
    expect(evalFailure(lite(`[ { s = "a"; } { s = "b"; } ]`, "config.s"))).toContain("The option `s' has conflicting definition values");
    expect(evalFailure(lite(`[ { xs = [ 1 ]; } ]`, "config.xs"))).toContain("A definition for option `xs.[definition 1-entry 1]' is not of type `string'");
    expect(evalFailure(lite(`[ { n.k = 1; } ]`, "config.n"))).toContain("The option `n.k' does not exist");
    expect(evalFailure(lite(`[ ]`, "config.n.m"))).toContain("The option `n.m' is used but not defined");
  });
});

describe("auto-upgrade.nix parses", () => {
  it("nix-instantiate --parse accepts the module", () => {
    execFileSync("nix-instantiate", ["--parse", MODULE], { stdio: "pipe" });
  });
});

describe("each role's defaults, evaluated through nixos-lite", () => {
  const expected: Record<Role, { commit: string; schedule: string }> = {
    desktop: { commit: "true", schedule: "04:00" },
    laptop: { commit: "true", schedule: "04:00" },
    server: { commit: "false", schedule: "04:00" },
    pi: { commit: "false", schedule: "Sun 04:00" },
  };
  for (const role of Object.keys(expected) as Role[]) {
    it(`${role}: role defaults reach the service and the timer`, () => {
      const name = `${role}1`;
      const dir = writeCheckout({ name, role });
      const r = mustEval(systemExpr(dir, name, UNITS));
      const env = r.service.environment;
      expect(Object.keys(env).sort()).toEqual(ENV_KEYS);
      expect(env).toEqual({
        AUTO_UPGRADE_BRANCH: "main",
        AUTO_UPGRADE_COMMIT: expected[role].commit,
        AUTO_UPGRADE_CONFIG_PATH: "/home/alice/nix-config",
        AUTO_UPGRADE_FLAKE_HOST: name,
        AUTO_UPGRADE_HOOKS: CHEZMOI,
        AUTO_UPGRADE_REMOTE: "origin",
        AUTO_UPGRADE_REQUIRED_HOOKS: "",
        AUTO_UPGRADE_STATE_DIR: "/var/lib/auto-upgrade",
        AUTO_UPGRADE_USER: "alice",
        AUTO_UPGRADE_VALIDATE: "true",
      });
      expect(r.service.after).toEqual([CHEZMOI, "network-online.target"]);
      expect(r.service.wants).toEqual([CHEZMOI, "network-online.target"]);
      expect(r.service.restartIfChanged).toBe(false);
      expect(r.service.unitConfig).toEqual({ "X-StopOnRemoval": false });
      expect(r.service.serviceConfig).toEqual({ Type: "oneshot", ExecStart: `${r.pkgOut}/bin/auto-upgrade run` });
      expect(r.service.serviceConfig.ExecStart).toMatch(/^\/nix\/store\/[a-z0-9]{32}-auto-upgrade\/bin\/auto-upgrade run$/);
      expect(r.timer.wantedBy).toEqual(["timers.target"]);
      expect(r.timer.timerConfig).toEqual({ OnCalendar: expected[role].schedule, Persistent: true, RandomizedDelaySec: "30min" });
      expect(r.toplevel).toMatch(new RegExp(`^/nix/store/[a-z0-9]{32}-nixos-system-${name}-nixos-lite\\.drv$`));
    });
  }
});

describe("host settings override the role's lib.mkDefault values", () => {
  it("a desktop host turns commit-back and validation off and brings its own hooks, in order", () => {
    const dir = writeCheckout({
      name: "desk2",
      role: "desktop",
      overrides: {
        hostCanCommitConfig: false,
        preUpdateValidation: false,
        preUpdateHooks: ["backup-home.service", CHEZMOI, "pre-upgrade.target"],
        requiredHooks: ["backup-home.service"],
        branch: "stable",
        remote: "upstream",
        schedule: "Sat *-*-* 03:30:00",
        randomizedDelaySec: "0",
      },
    });
    const r = mustEval(systemExpr(dir, "desk2", UNITS));
    const hooks = ["backup-home.service", CHEZMOI, "pre-upgrade.target"];
    expect(r.service.after).toEqual([...hooks, "network-online.target"]);
    expect(r.service.wants).toEqual([...hooks, "network-online.target"]);
    expect(r.service.environment).toMatchObject({
      AUTO_UPGRADE_COMMIT: "false",
      AUTO_UPGRADE_VALIDATE: "false",
      AUTO_UPGRADE_HOOKS: hooks.join(" "),
      AUTO_UPGRADE_REQUIRED_HOOKS: "backup-home.service",
      AUTO_UPGRADE_BRANCH: "stable",
      AUTO_UPGRADE_REMOTE: "upstream",
    });
    expect(r.timer.timerConfig).toEqual({ OnCalendar: "Sat *-*-* 03:30:00", Persistent: true, RandomizedDelaySec: "0" });
  });

  it("a server host turns commit-back on and drops the hooks", () => {
    const dir = writeCheckout({ name: "srv2", role: "server", overrides: { hostCanCommitConfig: true, preUpdateHooks: [] } });
    const r = mustEval(systemExpr(dir, "srv2", UNITS));
    expect(r.service.environment.AUTO_UPGRADE_COMMIT).toBe("true");
    expect(r.service.environment.AUTO_UPGRADE_HOOKS).toBe("");
    expect(r.service.after).toEqual(["network-online.target"]);
  });

  it("lib.mkForce in the user's configuration beats the host's value and the role's default", () => {
    const dir = writeCheckout({ name: "desk3", role: "desktop", overrides: { branch: "stable" } }, "force");
    const r = mustEval(systemExpr(dir, "desk3", UNITS));
    expect(r.service.environment.AUTO_UPGRADE_BRANCH).toBe("forced");
    expect(r.service.environment.AUTO_UPGRADE_COMMIT).toBe("false");
  });
});

describe("values are data: hostile strings survive verbatim", () => {
  // Bypasses the zod schema on purpose: the module must not care what the strings hold.
  const hostile = {
    configPath: `/srv/it's a "nix config" $HOME \`id\` \${x} ;|&`,
    branch: `feat/$(touch /tmp/pwned)'"\\n`,
    remote: `up stream`,
    stateDir: `/var/lib/auto upgrade/'$STATE'`,
  };

  it("environment values equal the settings exactly", () => {
    const dir = writeCheckout({
      name: "odd",
      role: "server",
      configPath: hostile.configPath,
      stateDir: hostile.stateDir,
      configOwner: "o'brien",
      overrides: { branch: hostile.branch, remote: hostile.remote },
    });
    const r = mustEval(systemExpr(dir, "odd", UNITS));
    expect(r.service.environment).toMatchObject({
      AUTO_UPGRADE_CONFIG_PATH: hostile.configPath,
      AUTO_UPGRADE_BRANCH: hostile.branch,
      AUTO_UPGRADE_REMOTE: hostile.remote,
      AUTO_UPGRADE_STATE_DIR: hostile.stateDir,
      AUTO_UPGRADE_USER: "o'brien",
    });
  });
});

// The settings → AUTO_UPGRADE_* mapping exists twice: the module's `environment` (timer) and
// components/remote.ts's scriptEnv (push mode). Both must hand the script the same settings.
describe("push mode and the timer give the script the same environment", () => {
  const specs: HostSpec[] = [
    { name: "same1", role: "desktop" },
    { name: "same2", role: "server", configOwner: undefined, overrides: { hostCanCommitConfig: true, preUpdateHooks: ["a.service", "b.service"], requiredHooks: ["b.service"] } },
    { name: "same3", role: "pi", stateDir: "/srv/state", overrides: { preUpdateValidation: false, branch: "stable", remote: "forge" } },
  ];
  for (const spec of specs) {
    it(`${spec.name} (${spec.role})`, () => {
      const dir = writeCheckout(spec);
      const r = mustEval(systemExpr(dir, spec.name, UNITS));
      expect(r.service.environment).toEqual(scriptEnv(resolvedHost(spec)));
    });
  }
});

describe("mistakes fail evaluation like NixOS, naming the option", () => {
  it("a string for a bool option is a type error", () => {
    const dir = writeCheckout({ name: "typo1", role: "desktop" }, "type-error");
    const err = evalFailure(systemExpr(dir, "typo1", "cfg.systemd.services.auto-upgrade.environment"));
    expect(err).toContain(`A definition for option \`${OPT}.preUpdateValidation' is not of type \`boolean'`);
    expect(err).toContain(`hosts/typo1/configuration.nix': "yes"`);
  });

  it("the toplevel type-checks every option, even ones the units do not read", () => {
    const dir = writeCheckout({ name: "typo2", role: "desktop" }, "plain");
    writeFileSync(
      join(dir, "hosts", "typo2", "configuration.nix"),
      `{ ... }: { imports = [ ./nixfleet.nix ]; networking.hostName = 42; }\n`,
    );
    const err = evalFailure(systemExpr(dir, "typo2", "cfg.system.build.toplevel.drvPath"));
    expect(err).toContain("A definition for option `networking.hostName' is not of type `string'");
  });

  it("two normal-priority values for one option conflict", () => {
    const dir = writeCheckout({ name: "both", role: "server", overrides: { branch: "stable" } }, "conflict");
    const err = evalFailure(systemExpr(dir, "both", UNITS));
    expect(err).toContain(`The option \`${OPT}.branch' has conflicting definition values`);
    expect(err).toContain(`hosts/both/nixfleet.nix': "stable"`);
    expect(err).toContain(`hosts/both/configuration.nix': "hand-edited"`);
  });

  it("an option that is not declared does not exist", () => {
    const dir = writeCheckout({ name: "undecl", role: "pi" }, "undeclared");
    const err = evalFailure(systemExpr(dir, "undecl", UNITS));
    expect(err).toContain(`The option \`${OPT}.brnach' does not exist`);
  });

  it("a Nix syntax error in the host file fails evaluation", () => {
    const dir = writeCheckout({ name: "broken", role: "server" });
    writeFileSync(join(dir, "hosts", "broken", "nixfleet.nix"), "{ ... }: { myModules = ; }\n");
    const err = evalFailure(systemExpr(dir, "broken", UNITS));
    expect(err).toMatch(/syntax error/);
    expect(err).toContain("hosts/broken/nixfleet.nix");
  });
});

describe("assertions for facts only the host knows", () => {
  it("a relative configPath fails with a message saying what to change", () => {
    const dir = writeCheckout({ name: "rel", role: "server", configPath: "nix-config" });
    const err = evalFailure(systemExpr(dir, "rel", UNITS));
    expect(err).toContain("Failed assertions:");
    expect(err).toContain(`${OPT}.configPath must be an absolute path without \`..\` (got "nix-config")`);
  });

  it("a configPath with a .. component fails", () => {
    const dir = writeCheckout({ name: "dots", role: "server", configPath: "/home/alice/../root/nix-config" });
    expect(evalFailure(systemExpr(dir, "dots", UNITS))).toContain(`${OPT}.configPath must be an absolute path`);
  });

  it("requiredHooks not in preUpdateHooks fails", () => {
    const dir = writeCheckout({ name: "req", role: "laptop", overrides: { requiredHooks: ["backup.service"] } });
    const err = evalFailure(systemExpr(dir, "req", UNITS));
    expect(err).toContain(`${OPT}.requiredHooks must be a subset of preUpdateHooks: "backup.service" not in preUpdateHooks`);
  });

  it("a hook that is not a unit name fails", () => {
    const dir = writeCheckout({ name: "unit", role: "laptop", overrides: { preUpdateHooks: ["chezmoi-pre-update"] } });
    const err = evalFailure(systemExpr(dir, "unit", UNITS));
    expect(err).toContain(`${OPT}.preUpdateHooks must be systemd unit names`);
    expect(err).toContain(`"chezmoi-pre-update" is not`);
  });
});

describe("the upgrade script handed over by the evaluation", () => {
  const stateDir = () => join(work, "state dir 'x'");
  let evaluated: { env: Record<string, string>; execStart: string; pkgOut: string; script: string; text: string };

  beforeAll(() => {
    const dir = writeCheckout({
      name: "scr",
      role: "desktop",
      configPath: `/nonexistent/it's "a" $checkout`,
      stateDir: stateDir(),
    });
    const r = mustEval(systemExpr(dir, "scr", `{
      env = cfg.systemd.services.auto-upgrade.environment;
      execStart = cfg.systemd.services.auto-upgrade.serviceConfig.ExecStart;
      pkgOut = pkg.outPath;
      script = pkg.script;
      text = pkg.text;
    }`));
    evaluated = r;
  });

  it("ExecStart runs the packaged script; its text is auto-upgrade.sh behind the writeShellApplication preamble", () => {
    expect(evaluated.execStart).toBe(`${evaluated.pkgOut}/bin/auto-upgrade run`);
    const src = readFileSync(SCRIPT_SRC, "utf8");
    // The module reads the shipped copy in the checkout (renderer header after the shebang).
    expect(evaluated.text.replace(/\n# installed by nixfleet[^\n]*\n/, "\n")).toBe(src);
    expect(evaluated.script.startsWith("#!/bin/bash\nset -o errexit\nset -o nounset\nset -o pipefail\n")).toBe(true);
    expect(evaluated.script).toMatch(/\nexport PATH="(\/nix\/store\/[a-z0-9]{32}-[a-z-]+-nixos-lite-standin\/bin:){7}\$PATH"\n/);
    expect(evaluated.script.endsWith(`\n${evaluated.text}\n`)).toBe(true);
  });

  it("passes bash -n and shellcheck", () => {
    const file = join(work, "auto-upgrade-evaluated");
    writeFileSync(file, evaluated.script, { mode: 0o755 });
    execFileSync("bash", ["-n", file], { stdio: "pipe" });
    const sc = spawnSync("/usr/bin/shellcheck", [file], { encoding: "utf8" });
    expect(sc.stdout + sc.stderr).toBe("");
    expect(sc.status).toBe(0);
  });

  it("run with the evaluated environment, it reads the settings verbatim and stops at the missing checkout", () => {
    const file = join(work, "auto-upgrade-evaluated");
    writeFileSync(file, evaluated.script, { mode: 0o755 });
    const r = spawnSync(file, ["pull"], {
      encoding: "utf8",
      env: { ...evaluated.env, PATH: process.env.PATH ?? "/usr/bin:/bin" },
      timeout: 30_000,
    });
    expect(r.stdout).toBe("");
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`AUTO_UPGRADE_CONFIG_PATH /nonexistent/it's "a" $checkout is not a directory`);
    const status = JSON.parse(readFileSync(join(stateDir(), "status.json"), "utf8"));
    expect(status).toMatchObject({ host: "scr", step: "pull", result: "failed" });
  });
});

describe("nix build of a flake using nixos-lite", () => {
  let repo: string;
  const git = (...args: string[]) =>
    execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@example.invalid", ...args], { cwd: repo, stdio: "pipe" });
  const build = (host: string) => {
    const t0 = Date.now();
    const r = spawnSync(
      "nix",
      [...FLAKES, "build", ...NIX_OPTS, "--no-link", "--json", `${repo}#nixosConfigurations.${host}.config.system.build.toplevel`],
      { encoding: "utf8", cwd: repo },
    );
    return { ...r, ms: Date.now() - t0 };
  };

  beforeAll(() => {
    repo = join(work, "flake");
    writeCheckout({ name: "h1", role: "desktop" }, "plain", repo);
    cpSync(LITE, join(repo, "nixos-lite"), { recursive: true });
    writeFileSync(
      join(repo, "flake.nix"),
      `{
  outputs = { self }:
    let lite = import ./nixos-lite; in {
      nixosConfigurations.h1 = lite.nixosSystem {
        system = "x86_64-linux";
        modules = [ ./hosts/h1/configuration.nix { networking.hostName = "h1"; } ];
      };
    };
}
`,
    );
    execFileSync("git", ["init", "-q", "--initial-branch=main"], { cwd: repo });
    git("add", ".");
    git("commit", "-qm", "init");
  });

  it("builds a toplevel whose units.json holds the service and whose switch is simulated", () => {
    const r = build("h1");
    expect(r.stderr).not.toMatch(/error/);
    expect(r.status).toBe(0);
    const out: string = JSON.parse(r.stdout)[0].outputs.out;
    expect(out).toMatch(/-nixos-system-h1-nixos-lite$/);
    const units = JSON.parse(readFileSync(join(out, "etc", "systemd", "units.json"), "utf8"));
    expect(Object.keys(units)).toEqual(["services", "timers"]);
    const svc = units.services["auto-upgrade"];
    expect(svc.environment.AUTO_UPGRADE_FLAKE_HOST).toBe("h1");
    expect(units.timers["auto-upgrade"].timerConfig.OnCalendar).toBe("04:00");
    // ExecStart is the built script, linked into sw/bin.
    const exe = readlinkSync(join(out, "sw", "bin", "auto-upgrade"));
    expect(svc.serviceConfig.ExecStart).toBe(`${exe} run`);
    expect(readFileSync(exe, "utf8").startsWith("#!/bin/bash\n")).toBe(true);

    const sw = join(out, "bin", "switch-to-configuration");
    const refused = spawnSync(sw, ["switch"], { encoding: "utf8", env: { PATH: process.env.PATH } });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("NIXFLEET_SIM_ROOT");
    const sim = join(work, "simroot");
    const ok = spawnSync(sw, ["switch"], { encoding: "utf8", env: { PATH: process.env.PATH, NIXFLEET_SIM_ROOT: sim } });
    expect(ok.stderr).toBe("");
    expect(ok.status).toBe(0);
    expect(readlinkSync(join(sim, "run", "current-system"))).toBe(out);
    expect(JSON.parse(readFileSync(join(sim, "etc", "systemd", "units.json"), "utf8"))).toEqual(units);
    expect(readFileSync(join(sim, "log", "switch.log"), "utf8")).toMatch(
      new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ switch ${out}\\n$`),
    );
  });

  it("an untracked host file is invisible to the build; once tracked it builds", () => {
    cpSync(join(FIXTURES, "untracked-import"), join(repo, "hosts", "h1"), { recursive: true });
    git("add", "hosts/h1/configuration.nix"); // extra.nix stays untracked
    const r = build("h1");
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/hosts\/h1\/extra\.nix.*(No such file or directory|does not exist)/);
    git("add", "hosts/h1/extra.nix");
    const ok = build("h1");
    expect(ok.status).toBe(0);
    const out: string = JSON.parse(ok.stdout)[0].outputs.out;
    const units = JSON.parse(readFileSync(join(out, "etc", "systemd", "units.json"), "utf8"));
    expect(units.services["auto-upgrade"].environment.AUTO_UPGRADE_REMOTE).toBe("from-extra");
  });

  it("a syntax error in a tracked host file fails the build", () => {
    writeFileSync(join(repo, "hosts", "h1", "nixfleet.nix"), "{ ... }: { imports = [ ; }\n");
    const r = build("h1");
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/syntax error/);
    expect(r.stderr).toContain("hosts/h1/nixfleet.nix");
    expect(existsSync(join(repo, "result"))).toBe(false);
  });
});
