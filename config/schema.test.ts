import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveFleet, ROLE_DEFAULTS } from "./resolve";
import { branchProblem, ConfigError, parseFleetConfig } from "./schema";
import { fleetFromConfigMap, readStackFile } from "./stack";

// Each call is another machine (two entries for one address and port are refused).
let machines = 0;
const host = (over: Record<string, unknown> = {}) => ({ name: "malphas", address: `10.0.${Math.floor(++machines / 250)}.${machines % 250}`, role: "desktop", configPath: "/home/evie/nix-config", ...over });

function issuesOf(raw: unknown): string[] {
  try {
    parseFleetConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.issues;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

describe("parseFleetConfig: bad input names the config key and says what is allowed", () => {
  it.each([
    [{ preUpdateHooks: ["ok.service", "foo bar"] }, /^nixfleet:hosts\[2\]\.preUpdateHooks\[1\]: "foo bar" is not a systemd unit name; allowed: letters/],
    [{ preUpdateHooks: ["chezmoi"] }, /preUpdateHooks\[0\]: "chezmoi" is not a systemd unit name; allowed: .*ending in \.service/],
    [{ branch: "feat..x" }, /^nixfleet:hosts\[2\]\.branch: "feat\.\.x": must not contain '\.\.'/],
    [{ branch: "-f" }, /branch: "-f": must not start with '-'/],
    [{ branch: "a b" }, /branch: "a b": must not contain spaces/],
    [{ configPath: "home/evie" }, /^nixfleet:hosts\[2\]\.configPath: "home\/evie": must be an absolute path/],
    [{ configPath: "/home/../etc" }, /configPath: "\/home\/\.\.\/etc": must not contain '\.\.'/],
    [{ configPath: "/home//evie" }, /configPath: "\/home\/\/evie": must be a clean path/],
    [{ configPath: "/srv/nix-config#x" }, /configPath: "\/srv\/nix-config#x": must not contain '#' or '\?'/],
    [{ configPath: "/srv/nix?dir=evil" }, /configPath: .*must not contain '#' or '\?'/],
    [{ preUpdateHooks: ["-x.service"] }, /preUpdateHooks\[0\]: "-x\.service" is not a systemd unit name; allowed: .*not "-" first/],
    [{ name: "Malphas_1" }, /^nixfleet:hosts\[2\]\.name: "Malphas_1" is not allowed; allowed: an RFC 1123 label/],
    [{ address: "bad_host!" }, /^nixfleet:hosts\[2\]\.address: "bad_host!" is not allowed; allowed: an RFC 1123 hostname or an IPv4\/IPv6 address/],
    [{ hostCanCommitConfig: "true" }, /^nixfleet:hosts\[2\]\.hostCanCommitConfig: must be true or false/],
    [{ preUpdateValidation: 1 }, /preUpdateValidation: must be true or false/],
    [{ port: 70000 }, /port: /],
    [{ role: "router" }, /^nixfleet:hosts\[2\]\.role: "router" is not a role; allowed: desktop, laptop, server, pi \(a custom role is defined in roles with a preset\)$/],
    [{ hostKey: "ssh-ed25519 AAAA host@comment" }, /hostKey: .*authorized_keys format/],
    [{ colour: "red" }, /^nixfleet:hosts\[2\]: unknown key\(s\) "colour"; allowed: name, address/],
  ])("%j", (bad, message) => {
    const issues = issuesOf({ hosts: [host({ name: "a" }), host({ name: "b" }), host({ name: "c", ...bad })] });
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(message);
  });

  it("reports every problem at once, and required fields", () => {
    expect(issuesOf({ hosts: [{ role: "pi", address: "x" }, host({ branch: "a..b" })] })).toEqual([
      "nixfleet:hosts[0].name: is required",
      "nixfleet:hosts[0].configPath: is required",
      `nixfleet:hosts[1].branch: "a..b": must not contain '..', '//' or '@{'`,
    ]);
  });

  it("rejects duplicate host names", () => {
    expect(issuesOf({ hosts: [host(), host({ name: "x" }), host()] })).toEqual([
      'nixfleet:hosts[2].name: "malphas" is already hosts[0].name; host names must be unique',
    ]);
  });

  it("validates role settings too", () => {
    expect(issuesOf({ roles: { server: { preUpdateHooks: ["x;y.service"] } }, hosts: [host()] })).toEqual([
      expect.stringMatching(/^nixfleet:roles\.server\.preUpdateHooks\[0\]: "x;y\.service" is not a systemd unit name/),
    ]);
    expect(issuesOf({ roles: { kiosk: {} }, hosts: [host()] })[0]).toMatch(/^nixfleet:roles\.kiosk\.preset: is required/);
  });

  it.each(["main", "release/2026.11", "feature/x-y_z", "v1.0"])("accepts branch %s", (b) => expect(branchProblem(b)).toBeUndefined());
  it.each(["", "a.lock", "a/.b", "a/", "@", "a@{1}", "a~1", "a^", "a:b", "a\\b", "x\n"])("rejects branch %j", (b) => expect(branchProblem(b)).toBeDefined());
});

describe("role defaults and host overrides", () => {
  it("follows the plan: desktop and laptop commit back, server and pi are pull-only, all validate and run chezmoi", () => {
    expect(ROLE_DEFAULTS.desktop.hostCanCommitConfig).toBe(true);
    expect(ROLE_DEFAULTS.laptop.hostCanCommitConfig).toBe(true);
    expect(ROLE_DEFAULTS.server.hostCanCommitConfig).toBe(false);
    expect(ROLE_DEFAULTS.pi.hostCanCommitConfig).toBe(false);
    for (const d of [ROLE_DEFAULTS.desktop, ROLE_DEFAULTS.laptop, ROLE_DEFAULTS.server, ROLE_DEFAULTS.pi]) {
      expect(d.preUpdateValidation).toBe(true);
      expect(d.preUpdateHooks).toEqual(["chezmoi-pre-update.service"]);
    }
  });

  it("layers built-in defaults, then stack roles, then the host", () => {
    const fleet = resolveFleet(
      parseFleetConfig({
        roles: { desktop: { branch: "stable", preUpdateHooks: ["a.service", "b.service"] } },
        hosts: [host(), host({ name: "kiosk", hostCanCommitConfig: false, preUpdateHooks: [] })],
      }),
    );
    const [malphas, kiosk] = fleet.hosts;
    expect(malphas.settings).toMatchObject({ branch: "stable", hostCanCommitConfig: true, preUpdateHooks: ["a.service", "b.service"] });
    expect(malphas.overrides).toEqual({});
    expect(kiosk.overrides).toEqual({ hostCanCommitConfig: false, preUpdateHooks: [] });
    expect(kiosk.settings).toMatchObject({ branch: "stable", hostCanCommitConfig: false, preUpdateHooks: [] });
    expect(kiosk.roleSettings.hostCanCommitConfig).toBe(true);
    expect(fleet.timeouts.validate).toBe(3600);
  });

  it("requires requiredHooks to be among the host's hooks", () => {
    expect(() => resolveFleet(parseFleetConfig({ hosts: [host({ preUpdateHooks: [], requiredHooks: ["chezmoi-pre-update.service"] })] }))).toThrow(
      /nixfleet:hosts\[0\]\.requiredHooks: "chezmoi-pre-update\.service" not in the host's preUpdateHooks/,
    );
  });
});

describe("stack files", () => {
  const stacks = join(__dirname, "..", "stacks");
  it.each(readdirSync(stacks).filter((f) => f.endsWith(".yaml")))("%s parses and resolves", (file) => {
    const fleet = fleetFromConfigMap(readStackFile(join(stacks, file)));
    expect(fleet.hosts.length).toBeGreaterThan(0);
  });

  it("accepts the JSON text the Pulumi runtime hands over, and rejects unknown keys", () => {
    expect(fleetFromConfigMap({ "nixfleet:hosts": JSON.stringify([host()]), "other:key": "x" }).hosts[0].name).toBe("malphas");
    expect(() => fleetFromConfigMap({ "nixfleet:hosts": "malphas" })).toThrow(/nixfleet:hosts: must be a structured value/);
    expect(() => fleetFromConfigMap({ "nixfleet:hots": "[]" })).toThrow(/nixfleet:hots: unknown key; allowed: nixfleet:roles/);
  });
});

describe("refuses values that would break a host (issue 8 item 9), naming the field, with bounded errors", () => {
  const ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEH2gZv+5yuSODmVezjLQzu7uLzR+x1a8IfopTp8cIQ9";
  it.each([
    [{ stateDir: "/" }, /^nixfleet:hosts\[0\]\.stateDir: "\/": is a system directory; allowed: a directory of nixfleet's own/],
    [{ stateDir: "/etc" }, /stateDir: "\/etc": is a system directory/],
    [{ stateDir: "/nix/var/auto" }, /stateDir: "\/nix\/var\/auto": is a system directory \(inside \/nix\)/],
    [{ stateDir: "/usr/local/x" }, /stateDir: .* \(inside \/usr\)/],
    [{ stateDir: "/var/lib" }, /stateDir: "\/var\/lib": is a system directory/],
    [{ stateDir: "/home/evie/nix-config" }, /^nixfleet:hosts\[0\]\.stateDir: "\/home\/evie\/nix-config" overlaps configPath/],
    [{ stateDir: "/home/evie/nix-config/.state" }, /stateDir: .* overlaps configPath/],
    [{ stateDir: "/home/evie", configPath: "/home/evie/nix-config" }, /stateDir: "\/home\/evie" overlaps configPath/],
    [{ configPath: "/" }, /^nixfleet:hosts\[0\]\.configPath: "\/": must not be '\/'/],
    [{ preUpdateHooks: ["auto-upgrade.service"] }, /^nixfleet:hosts\[0\]\.preUpdateHooks\[0\]: is auto-upgrade\.service itself/],
    [{ requiredHooks: ["auto-upgrade.service"] }, /requiredHooks\[0\]: is auto-upgrade\.service itself/],
    [{ healthUnits: ["sshd.service", "auto-upgrade.service"] }, /^nixfleet:hosts\[0\]\.healthUnits\[1\]: is auto-upgrade\.service itself/],
    [{ onFailure: ["auto-upgrade.service"] }, /^nixfleet:hosts\[0\]\.onFailure\[0\]: is auto-upgrade\.service itself/],
    [{ healthUnits: ["rm -rf /"] }, /healthUnits\[0\]: "rm -rf \/" is not a systemd unit name/],
    [{ healthTimeout: 0 }, /^nixfleet:hosts\[0\]\.healthTimeout: must be a whole number of seconds from 1 to 3600/],
    [{ confirmTimeout: 2 }, /^nixfleet:hosts\[0\]\.confirmTimeout: must be a whole number of seconds from 5 to 3600/],
    [{ wave: -1 }, /^nixfleet:hosts\[0\]\.wave: must be a whole number from 0 to 1000/],
    [{ wave: 1.5 }, /wave: must be a whole number/],
    [{ healthCheck: "yes" }, /healthCheck: must be true or false/],
    [{ hostKey: "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7" }, /^nixfleet:hosts\[0\]\.hostKey: is an RSA key.*pin the ed25519 key: ssh-keyscan -t ed25519/],
  ])("%j", (bad, message) => {
    const issues = issuesOf({ hosts: [host(bad)] });
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(message);
  });

  it("accepts an ed25519 key, a state dir of its own and health settings", () => {
    const cfg = parseFleetConfig({ hosts: [host({ hostKey: ED25519, stateDir: "/var/lib/auto-upgrade", healthUnits: ["nginx.service"], onFailure: ["ntfy@failure.service"], wave: 2, confirmTimeout: 45 })] });
    const [h] = resolveFleet(cfg).hosts;
    expect(h.settings).toMatchObject({ healthCheck: true, healthUnits: ["nginx.service"], healthTimeout: 120, onFailure: ["ntfy@failure.service"] });
    expect(h.push).toEqual({ wave: 2, confirmTimeout: 45 });
    // Deployer-only settings never reach the rendered Nix.
    expect(Object.keys(h.overrides)).not.toContain("wave");
  });

  it("two hosts at one address and port are one machine", () => {
    const a = { ...host({ name: "a", address: "Box.lan" }) };
    expect(issuesOf({ hosts: [a, host({ name: "b", address: "box.lan", port: 22 })] })).toEqual([
      `nixfleet:hosts[1].address: "box.lan:22" is already hosts[0]'s address and port; each host must be a different machine`,
    ]);
    // Another port is another machine (several sshd on one address, as in the simulated fleet).
    expect(() => parseFleetConfig({ hosts: [a, host({ name: "b", address: "box.lan", port: 2222 })] })).not.toThrow();
  });

  it("roles: names are labels; __proto__ (which a parsed record silently drops) is named", () => {
    const raw = JSON.parse(`{"roles":{"__proto__":{"branch":"x"},"server":{}},"hosts":[${JSON.stringify(host())}]}`);
    expect(issuesOf(raw)).toEqual(['nixfleet:roles.__proto__: "__proto__" is not a role name; allowed: an RFC 1123 label: lowercase letters, digits and \'-\', 1 to 63 characters']);
  });

  it("a custom role names its preset and starts from the preset's built-in defaults", () => {
    const fleet = resolveFleet(
      parseFleetConfig({
        roles: { desktop: { branch: "stable" }, kiosk: { preset: "desktop", schedule: "Mon 03:00", wave: 2 } },
        hosts: [host({ role: "kiosk" })],
      }),
    );
    const [kiosk] = fleet.hosts;
    expect(kiosk.role).toBe("kiosk");
    // desktop's built-in commit-back, not the stack's desktop branch: a custom role inherits the preset only.
    expect(kiosk.settings).toMatchObject({ hostCanCommitConfig: true, schedule: "Mon 03:00", branch: "main" });
    expect(kiosk.push.wave).toBe(2);
    expect(issuesOf({ roles: { kiosk: { schedule: "04:00" } }, hosts: [host({ role: "kiosk" })] })).toEqual([
      'nixfleet:roles.kiosk.preset: is required for the custom role "kiosk"; allowed: desktop, laptop, server, pi (the built-in role whose defaults it starts from)',
    ]);
    expect(issuesOf({ roles: { server: { preset: "pi" } }, hosts: [host()] })).toEqual([
      'nixfleet:roles.server.preset: is not allowed on the built-in role "server"; it is its own preset',
    ]);
    expect(issuesOf({ roles: { kiosk: { preset: "router" } }, hosts: [host()] })[0]).toMatch(/^nixfleet:roles\.kiosk\.preset: must be one of desktop, laptop, server, pi/);
  });

  it("role-level health, confirm and wave settings apply to the role's hosts, a host's own win", () => {
    const fleet = resolveFleet(parseFleetConfig({ roles: { desktop: { wave: 1, healthTimeout: 60, confirmTimeout: 20 } }, hosts: [host(), host({ name: "b", wave: 3 })] }));
    expect(fleet.hosts.map((h) => h.push)).toEqual([{ wave: 1, confirmTimeout: 20 }, { wave: 3, confirmTimeout: 20 }]);
    expect(fleet.hosts[0].roleSettings.healthTimeout).toBe(60);
  });

  it("a 100 kB configPath gives a short error that names the field", () => {
    const e = (() => {
      try {
        parseFleetConfig({ hosts: [host({ configPath: `/${"a".repeat(100_000)}` })] });
      } catch (err) {
        return err as Error;
      }
    })();
    expect(e?.message).toMatch(/nixfleet:hosts\[0\]\.configPath: "\/a+"… \(100001 characters\): must be at most 1024 characters/);
    expect(e!.message.length).toBeLessThan(300);
  });

  it("many bad values: at most 20 lines of at most ~400 characters", () => {
    const e = (() => {
      try {
        parseFleetConfig({ hosts: [host({ preUpdateHooks: Array.from({ length: 30 }, (_, i) => `${"x".repeat(5000)} ${i}`) })] });
      } catch (err) {
        return err as Error;
      }
    })();
    expect(e?.message.split("\n").length).toBeLessThanOrEqual(22);
    expect(e!.message.length).toBeLessThan(22 * 420);
  });

  it("nixfleet:timeouts takes lease hooks validate switch commit", () => {
    expect(resolveFleet(parseFleetConfig({ hosts: [host()], timeouts: { lease: 60, switch: 300 } })).timeouts).toEqual({ lease: 60, hooks: 900, validate: 3600, switch: 300, commit: 300 });
    expect(issuesOf({ hosts: [host()], timeouts: { copy: 10 } })[0]).toMatch(/^nixfleet:timeouts: unknown key\(s\) "copy"; allowed: lease, hooks, validate, switch, commit$/);
  });
});
