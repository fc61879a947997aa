/**
 * nixos-lite (test/nixos-lite) is a SIMULATION of nixpkgs' lib, module system and the NixOS options a
 * nixfleet host uses. These tests pin that it behaves like nixpkgs wherever a module or a user's
 * configuration can tell. Every expected value below was checked by evaluating the same modules with
 * the real nixpkgs lib (lib/modules.nix, lib/types.nix) or read from the NixOS source cited next to it.
 */
import { describe, expect, it } from "vitest";
import { LITE, NIXOS_UNIT_PATTERN, evalFailure, mustEval, useWorkDir } from "./helpers";

useWorkDir(); // boots this file's Nix machine (Nix 2.26); no files of its own

/** evalModules over inline modules that declare `xs` (list), `s` (str), `b` (bool) and `n.m` (int, no default). */
const lite = (modules: string, select = "config") => `let
  lib = (import ${LITE}).lib;
  inherit (lib) mkOption types mkDefault mkForce mkIf mkMerge mkBefore mkAfter mkOrder;
  decl = { options = { xs = mkOption { type = types.listOf types.str; default = [ "default" ]; };
                       s = mkOption { type = types.str; default = "d"; };
                       b = mkOption { type = types.bool; default = false; };
                       n.m = mkOption { type = types.int; }; }; };
  r = lib.evalModules { modules = [ decl ] ++ ${modules}; };
in let inherit (r) config; in ${select}`;

/** A nixos-lite system from inline modules (no nixfleet module), selecting from `cfg`. */
const system = (modules: string, select: string) => `let
  lite = import ${LITE};
  sys = lite.nixosSystem { modules = ${modules}; };
  cfg = sys.config;
  inherit (sys) pkgs options;
in ${select}`;

describe("merging, as nixpkgs lib/modules.nix", () => {
  it("equal-priority lists merge in REVERSE module order (mergeModules … reverseList)", async () => {
    expect(await mustEval(lite(`[ { xs = [ "a" ]; } { xs = mkDefault [ "role" ]; } { xs = [ "b" "c" ]; } ]`, "config.xs"))).toEqual(["b", "c", "a"]);
    // Imports are collected breadth-first (genericClosure), then the whole list is reversed.
    expect(await mustEval(lite(
      `[ { imports = [ { imports = [ { xs = [ "c" ]; } ]; xs = [ "b" ]; } ]; xs = [ "a" ]; } { xs = [ "d" ]; imports = [ { xs = [ "e" ]; } ]; } ]`,
      "config.xs",
    ))).toEqual(["c", "e", "b", "d", "a"]);
  });

  it("a plain value beats mkDefault, mkForce beats both, the default only counts alone", async () => {
    expect(await mustEval(lite(`[ { s = mkDefault "role"; } { s = "host"; } ]`, "config.s"))).toBe("host");
    expect(await mustEval(lite(`[ { s = mkForce "forced"; } { s = "host"; } { s = mkDefault "role"; } ]`, "config.s"))).toBe("forced");
    expect(await mustEval(lite(`[ ]`, "config.xs"))).toEqual(["default"]);
    // The default is a definition at mkOptionDefault priority: definitions at that priority join it.
    expect(await mustEval(lite(`[ { xs = lib.mkOptionDefault [ "x" ]; } { xs = lib.mkOptionDefault [ "y" ]; } ]`, "config.xs"))).toEqual(["default", "y", "x"]);
  });

  it("mkBefore / mkAfter / mkOrder sort definitions, stable within one order", async () => {
    expect(await mustEval(lite(`[ { xs = mkAfter [ "last" ]; } { xs = [ "a" ]; } { xs = mkBefore [ "first" ]; } { xs = [ "b" ]; } ]`, "config.xs")))
      .toEqual(["first", "b", "a", "last"]);
    expect(await mustEval(lite(`[ { xs = mkOrder 1500 [ "z2" ]; } { xs = mkAfter [ "z" ]; } { xs = mkIf true (mkOrder 1 [ "zero" ]); } ]`, "config.xs")))
      .toEqual(["zero", "z", "z2"]);
    // mkForce around mkBefore: the priority filter first, then the order.
    expect(await mustEval(lite(`[ { xs = [ "dropped" ]; } { xs = mkForce (mkBefore [ "f" ]); } { xs = mkForce [ "g" ]; } ]`, "config.xs")))
      .toEqual(["f", "g"]);
  });

  it("mkIf and mkMerge, also around a whole config, and imports of functions", async () => {
    const cfg = await mustEval(lite(
      `[ ({ config, ... }: { imports = [ { xs = [ "imported" ]; } ]; config = mkIf config.b (mkMerge [ { s = "on"; } { xs = [ "x" ]; } ]); }) { b = true; } { xs = mkIf false [ "never" ]; } ]`,
      "{ inherit (config) xs s b; }",
    ));
    expect(cfg).toEqual({ xs: ["imported", "x"], s: "on", b: true });
  });

  it("errors name the option as nixpkgs does: conflict, wrong type, undeclared, no value", async () => {
    expect(await evalFailure(lite(`[ { s = "a"; } { s = "b"; } ]`, "config.s"))).toContain("The option `s' has conflicting definition values");
    expect(await evalFailure(lite(`[ { xs = [ 1 ]; } ]`, "config.xs"))).toContain("A definition for option `xs.\"[definition 1-entry 1]\"' is not of type `string'");
    expect(await evalFailure(lite(`[ { n.k = 1; } ]`, "config.n"))).toContain("The option `n.k' does not exist");
    expect(await evalFailure(lite(`[ ]`, "config.n.m"))).toContain("The option `n.m' was accessed but has no value defined. Try setting the option.");
    expect(await evalFailure(lite(`[ { b = mkIf 1 true; } ]`, "config.b"))).toContain("‘mkIf’ called with a non-Boolean condition");
  });

  it("a package may be defined once per priority, even twice the same (mergeUniqueOption); unspecified merges by kind", async () => {
    const two = (type: string, a: string, b: string) => `let
      lib = (import ${LITE}).lib; pkgs = (import ${LITE}).pkgsFor "x86_64-linux";
      r = lib.evalModules { modules = [ { options.v = lib.mkOption { type = ${type}; }; } { v = ${a}; } { v = ${b}; } ]; };
    in r.config.v`;
    expect(await evalFailure(two("lib.types.package", "pkgs.gzip", "pkgs.gzip"))).toContain("The option `v' is defined multiple times while it's expected to be unique.");
    expect(await mustEval(two("lib.types.unspecified", "[ 1 ]", "[ 2 ]"))).toEqual([2, 1]);
    expect(await evalFailure(two("lib.types.unspecified", "1", "2"))).toContain("Cannot merge definitions of `v'");
  });
});

describe("disabledModules, as nixpkgs' collectModules", () => {
  it("a disabled module (by key) and what only it imports are gone; the rest stays", async () => {
    const mods = `[ { key = "/k/role.nix"; xs = [ "role" ]; imports = [ { xs = [ "role-import" ]; } ]; } { disabledModules = [ "/k/role.nix" ]; xs = [ "user" ]; } ]`;
    expect(await mustEval(lite(mods, "config.xs"))).toEqual(["user"]);
    // Without the disabledModules line, the same modules contribute.
    expect(await mustEval(lite(`[ { key = "/k/role.nix"; xs = [ "role" ]; imports = [ { xs = [ "role-import" ]; } ]; } { xs = [ "user" ]; } ]`, "config.xs")))
      .toEqual(["role-import", "user", "role"]);
  });

  it("disabling a declaring module removes its options: defining one is then an error", async () => {
    expect(await evalFailure(lite(`[ { key = "/k/decl2.nix"; options.t = mkOption { type = types.str; }; } { disabledModules = [ "/k/decl2.nix" ]; t = "x"; } ]`, "config")))
      .toContain("The option `t' does not exist");
  });

  it(`"tasks/auto-upgrade.nix" (relative to modulesPath) disables NixOS' system.autoUpgrade`, async () => {
    expect(await mustEval(system(`[ ]`, `options.system ? autoUpgrade`))).toBe(true);
    expect(await mustEval(system(`[ { disabledModules = [ "tasks/auto-upgrade.nix" ]; } ]`, `options.system ? autoUpgrade`))).toBe(false);
  });

  it("an attribute set without `key` is refused with nixpkgs' message", async () => {
    expect(await evalFailure(lite(`[ { disabledModules = [ { xs = [ ]; } ]; } ]`, "config.xs"))).toContain("does not have a `key` attribute");
  });
});

describe("option types, as nixpkgs lib/types.nix", () => {
  const typed = (type: string, value: string) => `let
    lib = (import ${LITE}).lib;
    r = lib.evalModules { modules = [ { options.v = lib.mkOption { type = ${type}; }; } { v = ${value}; } ]; };
  in r.config.v`;

  it("strMatching matches the whole string and shows the pattern", async () => {
    expect(await mustEval(typed(`lib.types.strMatching "[a-z]+"`, `"abc"`))).toBe("abc");
    expect(await evalFailure(typed(`lib.types.strMatching "[a-z]+"`, `"abc1"`))).toContain("is not of type `string matching the pattern [a-z]+'");
  });

  it("singleLineStr takes one line, drops one trailing newline, refuses more lines", async () => {
    expect(await mustEval(typed(`lib.types.singleLineStr`, `"one line\\n"`))).toBe("one line");
    expect(await evalFailure(typed(`lib.types.singleLineStr`, `"two\\nlines"`))).toContain("is not of type `(optionally newline-terminated) single-line string'");
  });

  it("ints.positive / ints.unsigned / ints.between, with nixpkgs' descriptions", async () => {
    expect(await mustEval(typed(`lib.types.ints.positive`, `1`))).toBe(1);
    expect(await evalFailure(typed(`lib.types.ints.positive`, `0`))).toContain("is not of type `positive integer, meaning >0'");
    expect(await evalFailure(typed(`lib.types.ints.unsigned`, `-1`))).toContain("is not of type `unsigned integer, meaning >=0'");
    expect(await evalFailure(typed(`lib.types.ints.between 1 5`, `6`))).toContain("is not of type `integer between 1 and 5 (both inclusive)'");
    expect(await evalFailure(typed(`lib.types.port`, `65536`))).toContain("is not of type `16 bit unsigned integer; between 0 and 65535 (both inclusive)'");
  });
});

describe("systemd units, as nixos/lib/systemd-unit-options.nix and systemd-lib.nix", () => {
  const svc = (def: string, select = "cfg.systemd.services.x") => system(`[ { systemd.services.x = ${def}; } ]`, select);

  it("after/wants/wantedBy/onFailure are unitNameType: a name without a unit suffix is a type error", async () => {
    for (const opt of ["after", "wants", "wantedBy", "onFailure"]) {
      const err = await evalFailure(svc(`{ ${opt} = [ "network-online" ]; }`));
      expect(err).toContain(`A definition for option \`systemd.services.x.${opt}."[definition 1-entry 1]"' is not of type \`string matching the pattern ${NIXOS_UNIT_PATTERN}'`);
    }
    expect(await mustEval(svc(`{ after = [ "getty@tty1.service" "a%i.target" ]; }`, "cfg.systemd.services.x.after"))).toEqual(["getty@tty1.service", "a%i.target"]);
  });

  it("description is a singleLineStr", async () => {
    expect(await evalFailure(svc(`{ description = "two\\nlines"; }`))).toContain("`systemd.services.x.description' is not of type `(optionally newline-terminated) single-line string'");
  });

  it("dependency lists, description and onFailure become [Unit] entries (unitConfig), timers too", async () => {
    const r = await mustEval(system(
      `[ { systemd.services.x = { description = "X"; after = [ "a.service" "b.target" ]; wants = [ "b.target" ]; onFailure = [ "mail@x.service" ]; unitConfig.X-Keep = false; };
           systemd.timers.x = { description = "T"; wantedBy = [ "timers.target" ]; }; } ]`,
      `{ s = cfg.systemd.services.x.unitConfig; t = cfg.systemd.timers.x.unitConfig; }`,
    ));
    expect(r.s).toEqual({ After: "a.service b.target", Wants: "b.target", Description: "X", OnFailure: "mail@x.service", "X-Keep": false });
    expect(r.t).toEqual({ Description: "T" });
  });

  it("a different unitConfig.After next to `after` conflicts, as on NixOS", async () => {
    expect(await evalFailure(svc(`{ after = [ "a.service" ]; unitConfig.After = "b.service"; }`, "cfg.systemd.services.x.unitConfig")))
      .toContain("The option `systemd.services.x.unitConfig.After' has conflicting definition values");
  });

  it("every service gets coreutils findutils gnugrep gnused systemd after its own path, and PATH from it", async () => {
    const r = await mustEval(system(
      `[ ({ pkgs, ... }: { systemd.services.x.path = [ pkgs.gitMinimal ]; systemd.services.y = { }; }) ]`,
      `let p = with pkgs; [ gitMinimal coreutils findutils gnugrep gnused systemd ]; in {
        path = map toString cfg.systemd.services.x.path;
        want = map toString p;
        PATH = cfg.systemd.services.x.environment.PATH;
        wantPATH = builtins.concatStringsSep ":" (map (x: "\${x}/bin") p ++ map (x: "\${x}/sbin") p);
        yPATH = cfg.systemd.services.y.environment.PATH;
      }`,
    ));
    expect(r.path).toEqual(r.want);
    expect(r.PATH).toBe(r.wantPATH);
    expect(r.yPATH).toMatch(/^\/nix\/store\/[a-z0-9]{32}-coreutils-nixos-lite-standin\/bin:/);
  });

  it("startAt is always a list (its `apply`, as in systemd-unit-options.nix)", async () => {
    expect(await mustEval(svc(`{ startAt = "daily"; }`, "cfg.systemd.services.x.startAt"))).toEqual(["daily"]);
  });

  it("a user's own environment.PATH conflicts with NixOS' (both normal priority)", async () => {
    expect(await evalFailure(svc(`{ environment.PATH = "/bin"; }`, "cfg.systemd.services.x.environment")))
      .toContain("The option `systemd.services.x.environment.PATH' has conflicting definition values");
  });
});

describe("NixOS options the module reads", () => {
  it("networking.proxy.default sets the *_proxy variables and a default no_proxy (config/networking.nix)", async () => {
    expect(await mustEval(system(`[ { networking.proxy.default = "http://proxy:3128"; } ]`, "cfg.networking.proxy.envVars"))).toEqual({
      ftp_proxy: "http://proxy:3128",
      http_proxy: "http://proxy:3128",
      https_proxy: "http://proxy:3128",
      no_proxy: "127.0.0.1,localhost",
      rsync_proxy: "http://proxy:3128",
    });
    expect(await mustEval(system(`[ ]`, "cfg.networking.proxy.envVars"))).toEqual({});
  });

  it("nix.package, programs.ssh.package, systemd.package default to pkgs.nix, pkgs.openssh, pkgs.systemd; nix.package.out is itself", async () => {
    const r = await mustEval(system(`[ ]`, `{
      nix = cfg.nix.package == pkgs.nix; out = cfg.nix.package.out.outPath == pkgs.nix.outPath;
      ssh = cfg.programs.ssh.package == pkgs.openssh; systemd = cfg.systemd.package == pkgs.systemd;
      stock = cfg.system.autoUpgrade.enable; envVars = cfg.nix.envVars;
    }`));
    expect(r).toEqual({ nix: true, out: true, ssh: true, systemd: true, stock: false, envVars: {} });
  });
});
