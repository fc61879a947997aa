import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveFleet, ROLE_DEFAULTS } from "./resolve";
import { branchProblem, ConfigError, parseFleetConfig } from "./schema";
import { fleetFromConfigMap, readStackFile } from "./stack";

const host = (over: Record<string, unknown> = {}) => ({ name: "malphas", address: "10.0.0.2", role: "desktop", configPath: "/home/evie/nix-config", ...over });

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
    [{ preUpdateHooks: ["-x.service"] }, /preUpdateHooks\[0\]: "-x\.service" is not a systemd unit name; allowed: .*not "-" first/],
    [{ name: "Malphas_1" }, /^nixfleet:hosts\[2\]\.name: "Malphas_1" is not allowed; allowed: an RFC 1123 label/],
    [{ address: "bad_host!" }, /^nixfleet:hosts\[2\]\.address: "bad_host!" is not allowed; allowed: an RFC 1123 hostname or an IPv4\/IPv6 address/],
    [{ hostCanCommitConfig: "true" }, /^nixfleet:hosts\[2\]\.hostCanCommitConfig: must be true or false/],
    [{ preUpdateValidation: 1 }, /preUpdateValidation: must be true or false/],
    [{ port: 70000 }, /port: /],
    [{ role: "router" }, /^nixfleet:hosts\[2\]\.role: must be one of desktop, laptop, server, pi$/],
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
    expect(issuesOf({ roles: { kiosk: {} }, hosts: [host()] })[0]).toMatch(/^nixfleet:roles\.kiosk: /);
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
    for (const d of Object.values(ROLE_DEFAULTS)) {
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
