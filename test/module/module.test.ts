/**
 * The NixOS module `nix/modules/services/system/auto-upgrade.nix`, evaluated and built by REAL Nix (2.26,
 * in a booted machine of the fleet image: test/nix-machine.ts) against nixos-lite — a SIMULATION of nixpkgs' lib / module system / pkgs (test/nixos-lite/README.md),
 * because nixpkgs is not available offline. The host files come from the real renderer
 * (`renderHost`); `fixtures/<case>/configuration.nix` are the user's own host configurations.
 * Assertions are limited to what also holds on NixOS (NixOS adds PATH, [Unit] entries, HOME, …).
 */
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { Role } from "../../config/schema";
import {
  AGENT_SRC, CHEZMOI, FIXTURES, FLAKES, LITE, MODULE, NIX_OPTS, OPT, UNITS, type HostSpec,
  evalFailure, mustEval, nixMachine, readUnitSettings, systemExpr, useWorkDir, writeCheckout,
} from "./helpers";

const work = useWorkDir();
/** A path of the Nix machine (its store) as this process reads it: no absolute symlink on the way. */
const inMachine = (p: string) => nixMachine().file(p);
/** A text file of the Nix machine, read there (a store's absolute symlinks resolve in the machine, not here). */
const readInMachine = (p: string) => nixMachine().must(["cat", "--", p]);
const checkout = (spec: HostSpec, fixture = "plain") => writeCheckout(work(), spec, fixture);
/** Only the AUTO_UPGRADE_* part of an environment: on NixOS the service has more (PATH, HOME, proxy). */
const settingsOf = (env: Record<string, string>) =>
  Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("AUTO_UPGRADE_")));
/** The settings' defaults of a host whose role gives `commit` and one chezmoi hook. */
const defaults = (name: string, commit: string) => ({
  AUTO_UPGRADE_BRANCH: "main",
  AUTO_UPGRADE_COMMIT: commit,
  AUTO_UPGRADE_CONFIG_PATH: "/home/alice/nix-config",
  AUTO_UPGRADE_FLAKE_HOST: name,
  AUTO_UPGRADE_HEALTH_CHECK: "true",
  AUTO_UPGRADE_HEALTH_TIMEOUT: "120",
  AUTO_UPGRADE_HEALTH_UNITS: "",
  AUTO_UPGRADE_HOOKS: CHEZMOI,
  AUTO_UPGRADE_REMOTE: "origin",
  AUTO_UPGRADE_REQUIRED_HOOKS: "",
  AUTO_UPGRADE_STATE_DIR: "/var/lib/auto-upgrade",
  AUTO_UPGRADE_USER: "alice",
  AUTO_UPGRADE_VALIDATE: "true",
});

/** The host's configuration.nix plus one more inline module of the user's (Nix text). */
function withModule(dir: string, host: string, module: string, select: string): string {
  return systemExpr(dir, host, select).replace(
    `{ networking.hostName = "${host}"; } ]`,
    `{ networking.hostName = "${host}"; } (${module}) ]`,
  );
}

describe("auto-upgrade.nix parses", () => {
  it("the Nix here is today's (Debian trixie's 2.26 in the machine), not the deployer's 2.8", async () => {
    const [major, minor] = String(await mustEval("builtins.nixVersion")).split(".").map(Number);
    expect(major * 1000 + minor).toBeGreaterThanOrEqual(2024);
  });

  it("nix-instantiate --parse accepts the module", async () => {
    await nixMachine().must(["nix-instantiate", "--parse", MODULE]);
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
    it(`${role}: role defaults reach the service and the timer`, async () => {
      const name = `${role}1`;
      const r = await mustEval(systemExpr(checkout({ name, role }), name, UNITS));
      const env = r.service.environment;
      expect(settingsOf(env)).toEqual(defaults(name, expected[role].commit));
      // As nixpkgs' upgrade service: HOME for git/ssh; NixOS' own PATH for every service.
      expect(env.HOME).toBe("/root");
      // The agent's runtime is the unit's `path` (as nixpkgs' upgrade service): git, ssh, nix first.
      for (const pkg of ["nix", "openssh", "git-minimal", "util-linux", "coreutils", "systemd"]) {
        expect(env.PATH).toMatch(new RegExp(`(^|:)/nix/store/[a-z0-9]{32}-${pkg}-nixos-lite-standin/bin(:|$)`));
      }
      expect(env.PATH).not.toMatch(/jq|-nh-/);
      expect(r.service.after).toEqual([CHEZMOI, "network-online.target"]);
      expect(r.service.wants).toEqual([CHEZMOI, "network-online.target"]);
      expect(r.service.restartIfChanged).toBe(false);
      // NixOS turns after/wants/description into [Unit] entries (and may add others of its own);
      // no OnFailure= when the list is empty.
      expect(r.service.unitConfig).not.toHaveProperty("OnFailure");
      expect(r.service.unitConfig).toMatchObject({
        "X-StopOnRemoval": false,
        After: `${CHEZMOI} network-online.target`,
        Wants: `${CHEZMOI} network-online.target`,
        Description: "nixfleet auto-upgrade: pre-update hooks, pull, validate, switch, commit-back",
      });
      expect(r.service.serviceConfig).toMatchObject({ Type: "oneshot", ExecStart: `${r.pkgOut}/bin/nixfleet-agent run` });
      expect(r.service.serviceConfig.ExecStart).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nixfleet-agent-[0-9.]+\/bin\/nixfleet-agent run$/);
      expect(r.timer.wantedBy).toEqual(["timers.target"]);
      expect(r.timer.timerConfig).toEqual({ OnCalendar: expected[role].schedule, Persistent: true, RandomizedDelaySec: "30min" });
      expect(r.toplevel).toMatch(new RegExp(`^/nix/store/[a-z0-9]{32}-nixos-system-${name}-nixos-lite\\.drv$`));
    });
  }
});

describe("host settings override the role's lib.mkDefault values", () => {
  it("a desktop host turns commit-back and validation off and brings its own hooks, in order", async () => {
    const dir = checkout({
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
    const r = await mustEval(systemExpr(dir, "desk2", UNITS));
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
    // preUpdateValidation = false is deprecated: the module says so and why, and only then.
    expect(await mustEval(systemExpr(dir, "desk2", "cfg.warnings"))).toEqual([expect.stringMatching(/preUpdateValidation = false changes nothing and is deprecated: the build always comes first/)]);
    expect(await mustEval(systemExpr(checkout({ name: "desk3", role: "desktop" }), "desk3", "cfg.warnings"))).toEqual([]);
  });

  it("a server host turns commit-back on and drops the hooks", async () => {
    const r = await mustEval(systemExpr(checkout({ name: "srv2", role: "server", overrides: { hostCanCommitConfig: true, preUpdateHooks: [] } }), "srv2", UNITS));
    expect(r.service.environment.AUTO_UPGRADE_COMMIT).toBe("true");
    expect(r.service.environment.AUTO_UPGRADE_HOOKS).toBe("");
    expect(r.service.after).toEqual(["network-online.target"]);
  });
});

describe("the user's own configuration merges as on NixOS", () => {
  it("lib.mkForce in the user's configuration reaches the service environment over the host's value and the role's default", async () => {
    const r = await mustEval(systemExpr(checkout({ name: "desk3", role: "desktop", overrides: { branch: "stable" } }, "force"), "desk3", UNITS));
    expect(r.service.environment.AUTO_UPGRADE_BRANCH).toBe("forced");
    expect(r.service.environment.AUTO_UPGRADE_COMMIT).toBe("false");
  });

  it("a hook added by the user's module comes after the host's hooks (reverse module order)", async () => {
    const dir = checkout({ name: "uh1", role: "desktop", overrides: { preUpdateHooks: ["backup-home.service"] } }, "user-hook");
    const r = await mustEval(systemExpr(dir, "uh1", UNITS));
    expect(r.service.environment.AUTO_UPGRADE_HOOKS).toBe("backup-home.service user-backup.service");
    expect(r.service.after).toEqual(["backup-home.service", "user-backup.service", "network-online.target"]);
  });

  it("lib.mkBefore / lib.mkAfter place the user's hooks first and last", async () => {
    const dir = checkout({ name: "uh2", role: "desktop", overrides: { preUpdateHooks: ["a.service", "b.service"] } }, "user-hook-first");
    const r = await mustEval(systemExpr(dir, "uh2", UNITS));
    expect(r.service.environment.AUTO_UPGRADE_HOOKS).toBe("snapshot.service a.service b.service last.target");
  });
});

describe("% in settings: systemd expands specifiers in Environment=, so the module writes %%", () => {
  it("every % is doubled in the environment, and the contract's reading rule gets the setting back", async () => {
    const dir = checkout({ name: "pct", role: "server", stateDir: "/var/lib/au%H", overrides: { branch: "100%-done%%" } });
    const r = await mustEval(systemExpr(dir, "pct", `{
      env = cfg.systemd.services.auto-upgrade.environment;
      # Environment= lines exactly as nixos/lib/systemd-lib.nix serviceToUnit writes them.
      lines = builtins.concatStringsSep "" (map (n: "Environment=\${builtins.toJSON "\${n}=\${cfg.systemd.services.auto-upgrade.environment.\${n}}"}\\n")
        (builtins.attrNames cfg.systemd.services.auto-upgrade.environment));
    }`));
    expect(r.env.AUTO_UPGRADE_STATE_DIR).toBe("/var/lib/au%%H");
    expect(r.env.AUTO_UPGRADE_BRANCH).toBe("100%%-done%%%%");
    expect(readUnitSettings(r.lines)).toMatchObject({ AUTO_UPGRADE_STATE_DIR: "/var/lib/au%H", AUTO_UPGRADE_BRANCH: "100%-done%%" });
  });

  it("proxy and nix.envVars reach the service like nixpkgs' upgrade service, % doubled there too", async () => {
    const r = await mustEval(systemExpr(checkout({ name: "prx", role: "server" }, "proxy"), "prx", "cfg.systemd.services.auto-upgrade.environment"));
    expect(r).toMatchObject({
      HOME: "/root",
      NIX_REMOTE: "daemon",
      http_proxy: "http://u:p%%40ss@proxy:3128",
      https_proxy: "http://u:p%%40ss@proxy:3128",
      no_proxy: "127.0.0.1,localhost",
    });
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

  it("environment values equal the settings exactly", async () => {
    const dir = checkout({
      name: "odd",
      role: "server",
      configPath: hostile.configPath,
      stateDir: hostile.stateDir,
      configOwner: "o'brien",
      overrides: { branch: hostile.branch, remote: hostile.remote },
    });
    const r = await mustEval(systemExpr(dir, "odd", UNITS));
    expect(r.service.environment).toMatchObject({
      AUTO_UPGRADE_CONFIG_PATH: hostile.configPath,
      AUTO_UPGRADE_BRANCH: hostile.branch,
      AUTO_UPGRADE_REMOTE: hostile.remote,
      AUTO_UPGRADE_STATE_DIR: hostile.stateDir,
      AUTO_UPGRADE_USER: "o'brien",
    });
  });
});

describe("health gate and onFailure options", () => {
  const host = (name: string) => checkout({ name, role: "server" });

  it("healthCheck, healthUnits, healthTimeout reach the environment; onFailure becomes OnFailure= of the service", async () => {
    const r = await mustEval(withModule(host("hg1"), "hg1", `{
      ${OPT} = { healthCheck = false; healthUnits = [ "nginx.service" "postgresql.service" ]; healthTimeout = 300;
        onFailure = [ "notify@auto-upgrade.service" ]; };
    }`, UNITS));
    expect(r.service.environment).toMatchObject({
      AUTO_UPGRADE_HEALTH_CHECK: "false",
      AUTO_UPGRADE_HEALTH_UNITS: "nginx.service postgresql.service",
      AUTO_UPGRADE_HEALTH_TIMEOUT: "300",
    });
    expect(r.service.onFailure).toEqual(["notify@auto-upgrade.service"]);
    expect(r.service.unitConfig.OnFailure).toBe("notify@auto-upgrade.service");
  });

  it("healthTimeout must be a whole number of seconds within the table's bounds (1 to 3600)", async () => {
    expect(await evalFailure(withModule(host("hg2"), "hg2", `{ ${OPT}.healthTimeout = 0; }`, UNITS)))
      .toContain(`A definition for option \`${OPT}.healthTimeout' is not of type \`integer between 1 and 3600 (both inclusive)'`);
  });

  it("healthUnits and onFailure must be unit names", async () => {
    expect(await evalFailure(withModule(host("hg3"), "hg3", `{ ${OPT}.healthUnits = [ "nginx" ]; }`, UNITS)))
      .toContain(`A definition for option \`${OPT}.healthUnits."[definition 1-entry 1]"' is not of type \`string matching the pattern`);
    expect(await evalFailure(withModule(host("hg4"), "hg4", `{ ${OPT}.onFailure = [ "mail me" ]; }`, UNITS)))
      .toContain(`A definition for option \`${OPT}.onFailure."[definition 1-entry 1]"' is not of type \`string matching the pattern`);
  });
});

describe("nixpkgs' own system.autoUpgrade", () => {
  it("enabled as well: an assertion says to turn it off", async () => {
    const err = await evalFailure(systemExpr(checkout({ name: "stock1", role: "server" }, "stock-upgrade"), "stock1", UNITS));
    expect(err).toContain("Failed assertions:");
    expect(err).toContain(`${OPT} and nixpkgs' system.autoUpgrade are both enabled`);
    expect(err).toContain("Set system.autoUpgrade.enable = false");
  });

  it("its module disabled (disabledModules): nixfleet's module still evaluates", async () => {
    const r = await mustEval(systemExpr(checkout({ name: "stock2", role: "server" }, "stock-disabled"), "stock2", `{
      hasStock = sys.options.system ? autoUpgrade; toplevel = cfg.system.build.toplevel.drvPath;
    }`));
    expect(r.hasStock).toBe(false);
    expect(r.toplevel).toMatch(/-nixos-system-stock2-nixos-lite\.drv$/);
  });
});

describe("mistakes fail evaluation like NixOS, naming the option", () => {
  it("a string for a bool option is a type error", async () => {
    const err = await evalFailure(systemExpr(checkout({ name: "typo1", role: "desktop" }, "type-error"), "typo1", "cfg.systemd.services.auto-upgrade.environment"));
    expect(err).toContain(`A definition for option \`${OPT}.preUpdateValidation' is not of type \`boolean'`);
    expect(err).toContain(`hosts/typo1/configuration.nix': "yes"`);
  });

  it("a hook that is not a unit name is a type error (as NixOS' unitNameType would be), not a late assertion", async () => {
    const err = await evalFailure(systemExpr(checkout({ name: "unit", role: "laptop", overrides: { preUpdateHooks: ["chezmoi-pre-update"] } }), "unit", UNITS));
    expect(err).toContain(`A definition for option \`${OPT}.preUpdateHooks."[definition 1-entry 1]"' is not of type \`string matching the pattern`);
    expect(err).toContain(`"chezmoi-pre-update"`);
    expect(err).not.toContain("Failed assertions");
  });

  it("a unit name NixOS refuses, set by the user on the service itself, is NixOS' type error", async () => {
    const err = await evalFailure(withModule(checkout({ name: "wnt", role: "server" }), "wnt", `{ systemd.services.auto-upgrade.wants = [ "network-online" ]; }`, UNITS));
    expect(err).toContain("A definition for option `systemd.services.auto-upgrade.wants.\"[definition 1-entry 1]\"' is not of type `string matching the pattern [a-zA-Z0-9@%:_.\\-]+[.](service|");
  });

  it("a schedule with a newline (it would add a line to the timer unit) is refused: singleLineStr", async () => {
    const err = await evalFailure(withModule(checkout({ name: "nl", role: "server" }), "nl", `{ ${OPT}.schedule = (import ${LITE}).lib.mkForce "04:00\\nOnBootSec=1"; }`, UNITS));
    expect(err).toContain(`A definition for option \`${OPT}.schedule' is not of type \`(optionally newline-terminated) single-line string'`);
  });

  it("an empty branch is refused: non-empty string", async () => {
    const err = await evalFailure(systemExpr(checkout({ name: "empty", role: "server", overrides: { branch: "" } }), "empty", UNITS));
    expect(err).toContain(`A definition for option \`${OPT}.branch' is not of type \`non-empty string'`);
  });

  it("the toplevel type-checks every option, even ones the units do not read", async () => {
    const dir = checkout({ name: "typo2", role: "desktop" });
    writeFileSync(join(dir, "hosts", "typo2", "configuration.nix"), `{ ... }: { imports = [ ./nixfleet.nix ]; networking.hostName = 42; }\n`);
    const err = await evalFailure(systemExpr(dir, "typo2", "cfg.system.build.toplevel.drvPath"));
    expect(err).toContain("A definition for option `networking.hostName' is not of type `string'");
  });

  it("two normal-priority values for one option conflict", async () => {
    const err = await evalFailure(systemExpr(checkout({ name: "both", role: "server", overrides: { branch: "stable" } }, "conflict"), "both", UNITS));
    expect(err).toContain(`The option \`${OPT}.branch' has conflicting definition values`);
    expect(err).toContain(`hosts/both/nixfleet.nix': "stable"`);
    expect(err).toContain(`hosts/both/configuration.nix': "hand-edited"`);
  });

  it("an option that is not declared does not exist", async () => {
    const err = await evalFailure(systemExpr(checkout({ name: "undecl", role: "pi" }, "undeclared"), "undecl", UNITS));
    expect(err).toContain(`The option \`${OPT}.brnach' does not exist`);
  });

  it("a Nix syntax error in the host file fails evaluation", async () => {
    const dir = checkout({ name: "broken", role: "server" });
    writeFileSync(join(dir, "hosts", "broken", "nixfleet.nix"), "{ ... }: { myModules = ; }\n");
    const err = await evalFailure(systemExpr(dir, "broken", UNITS));
    expect(err).toMatch(/syntax error/);
    expect(err).toContain("hosts/broken/nixfleet.nix");
  });
});

describe("assertions for facts only the host knows", () => {
  it("a relative configPath fails with a message saying what to change", async () => {
    const err = await evalFailure(systemExpr(checkout({ name: "rel", role: "server", configPath: "nix-config" }), "rel", UNITS));
    expect(err).toContain("Failed assertions:");
    expect(err).toContain(`${OPT}.configPath must be an absolute path without \`..\` (got "nix-config")`);
  });

  it("a configPath with a .. component fails", async () => {
    const err = await evalFailure(systemExpr(checkout({ name: "dots", role: "server", configPath: "/home/alice/../root/nix-config" }), "dots", UNITS));
    expect(err).toContain(`${OPT}.configPath must be an absolute path`);
  });

  it("requiredHooks not in preUpdateHooks fails", async () => {
    const err = await evalFailure(systemExpr(checkout({ name: "req", role: "laptop", overrides: { requiredHooks: ["backup.service"] } }), "req", UNITS));
    expect(err).toContain(`${OPT}.requiredHooks must be a subset of preUpdateHooks: "backup.service" not in preUpdateHooks`);
  });
});

describe("the service's runtime is a stock NixOS host's (like nixpkgs' upgrade service), no jq, no nh", () => {
  it("the unit's PATH starts with config.nix.package.out, config.programs.ssh.package, gitMinimal and the base tools", async () => {
    const r = await mustEval(withModule(checkout({ name: "rt", role: "server" }), "rt", `({ pkgs, ... }: { nix.package = pkgs.git; programs.ssh.package = pkgs.bash; })`, `{
      path = cfg.systemd.services.auto-upgrade.environment.PATH;
      want = with pkgs; builtins.concatStringsSep ":" (map (p: "\${p}/bin") [ git bash gitMinimal coreutils util-linux systemd ]);
      jq = "\${pkgs.jq}"; nh = "\${pkgs.nh}"; nix = "\${pkgs.nix}";
    }`));
    expect(r.path.startsWith(`${r.want}:`)).toBe(true);
    for (const absent of [r.jq, r.nh, r.nix]) expect(r.path).not.toContain(absent);
  });
});

describe("the agent handed over by the evaluation", () => {
  it("ExecStart runs the agent buildGoModule builds from the source shipped beside the module (no tests in it)", async () => {
    const dir = checkout({ name: "agt", role: "desktop" });
    const r = await mustEval(systemExpr(dir, "agt", `{
      execStart = cfg.systemd.services.auto-upgrade.serviceConfig.ExecStart;
      pkgOut = pkg.outPath;
      src = toString pkg.src;
      files = builtins.attrNames (builtins.readDir pkg.src);
      main = builtins.readFile (pkg.src + "/cmd/nixfleet-agent/main.go");
    }`));
    expect(r.execStart).toBe(`${r.pkgOut}/bin/nixfleet-agent run`);
    expect(r.files).toEqual(["cmd", "go.mod", "internal", "package.nix"]);
    // The checkout's copy: the renderer's header, then the source byte for byte.
    expect(r.main.replace(/^\/\/ installed by nixfleet[^\n]*\n\n/, "")).toBe(readFileSync(join(AGENT_SRC, "cmd/nixfleet-agent/main.go"), "utf8"));
  });
});

describe("nix build of a flake using nixos-lite", () => {
  let repo: string;
  const git = (...args: string[]) =>
    execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@example.invalid", ...args], { cwd: repo, stdio: "pipe" });
  const build = (host: string) =>
    nixMachine().run(
      ["nix", ...FLAKES, "build", ...NIX_OPTS, "--no-link", "--json", `${repo}#nixosConfigurations.${host}.config.system.build.toplevel`],
      { cwd: repo },
    );

  beforeAll(() => {
    repo = join(work(), "flake");
    writeCheckout(work(), { name: "h1", role: "desktop" }, "plain", repo);
    // h2: the user's own `branch = lib.mkForce "forced"` and a `%` in a setting.
    writeCheckout(work(), { name: "h2", role: "server", stateDir: "/var/lib/au%H" }, "force", repo);
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
      nixosConfigurations.h2 = lite.nixosSystem {
        system = "x86_64-linux";
        modules = [ ./hosts/h2/configuration.nix { networking.hostName = "h2"; } ];
      };
    };
}
`,
    );
    execFileSync("git", ["init", "-q", "--initial-branch=main"], { cwd: repo });
    git("add", ".");
    git("commit", "-qm", "init");
  });

  it("builds a toplevel whose units.json holds the service and whose switch is simulated", async () => {
    const r = await build("h1");
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    const out: string = JSON.parse(r.stdout)[0].outputs.out;
    expect(out).toMatch(/-nixos-system-h1-nixos-lite$/);
    const units = JSON.parse(await readInMachine(join(out, "etc", "systemd", "units.json")));
    expect(Object.keys(units)).toEqual(["services", "timers"]);
    const svc = units.services["auto-upgrade"];
    expect(svc.environment.AUTO_UPGRADE_FLAKE_HOST).toBe("h1");
    expect(units.timers["auto-upgrade"].timerConfig.OnCalendar).toBe("04:00");
    // ExecStart is the agent, compiled (by nixos-lite's buildGoModule, the machine's Go) and linked into sw/bin.
    const exe = readlinkSync(inMachine(join(out, "sw", "bin", "nixfleet-agent")));
    expect(svc.serviceConfig.ExecStart).toBe(`${exe} run`);
    expect(readFileSync(inMachine(exe)).subarray(0, 4).toString("latin1")).toBe("\x7fELF");

    // Run where it was built (the Nix machine, which is no fleet host: test/nix-machine.ts).
    const sw = join(out, "bin", "switch-to-configuration");
    const refused = await nixMachine().run([sw, "switch"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("NIXFLEET_SIM_ROOT");
    // What switching does in detail is the simulation's (toplevel.nix, its own tests); here: it runs.
    const sim = "/root/simroot";
    const ok = await nixMachine().run([sw, "switch"], { env: { NIXFLEET_SIM_ROOT: sim } });
    expect(ok.code).toBe(0);
    expect(readlinkSync(inMachine(join(sim, "run", "current-system")))).toBe(out);
  });

  // Contract (docs/rollout.md §3): push mode takes the settings from the validated system's unit file.
  it("the built unit file carries the user's override and the escaped %, and the contract's reading rule recovers them", async () => {
    const r = await build("h2");
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    const out: string = JSON.parse(r.stdout)[0].outputs.out;
    const unit = await readInMachine(join(out, "etc", "systemd", "system", "auto-upgrade.service"));
    expect(unit).toContain(`Environment="AUTO_UPGRADE_STATE_DIR=/var/lib/au%%H"\n`);
    expect(readUnitSettings(unit)).toMatchObject({
      AUTO_UPGRADE_BRANCH: "forced",
      AUTO_UPGRADE_COMMIT: "false",
      AUTO_UPGRADE_FLAKE_HOST: "h2",
      AUTO_UPGRADE_STATE_DIR: "/var/lib/au%H",
      HOME: "/root",
    });
  });

  it("an untracked host file is invisible to the build; once tracked it builds", async () => {
    cpSync(join(FIXTURES, "untracked-import"), join(repo, "hosts", "h1"), { recursive: true });
    git("add", "hosts/h1/configuration.nix"); // extra.nix stays untracked
    const r = await build("h1");
    expect(r.code).not.toBe(0);
    // Nix 2.26's message (2.8 said "getting status of …: No such file or directory").
    expect(r.stderr).toMatch(/error: path '\/nix\/store\/[a-z0-9]{32}-source\/hosts\/h1\/extra\.nix' does not exist/);
    git("add", "hosts/h1/extra.nix");
    const ok = await build("h1");
    expect(ok.code).toBe(0);
    const out: string = JSON.parse(ok.stdout)[0].outputs.out;
    const units = JSON.parse(await readInMachine(join(out, "etc", "systemd", "units.json")));
    expect(units.services["auto-upgrade"].environment.AUTO_UPGRADE_REMOTE).toBe("from-extra");
  });

  it("a syntax error in a tracked host file fails the build", async () => {
    writeFileSync(join(repo, "hosts", "h1", "nixfleet.nix"), "{ ... }: { imports = [ ; }\n");
    const r = await build("h1");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/syntax error/);
    expect(r.stderr).toContain("hosts/h1/nixfleet.nix");
    expect(existsSync(join(repo, "result"))).toBe(false);
  });
});
