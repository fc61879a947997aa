// One source of truth (issue 18, Build 4): nix/modules/services/system/auto-upgrade.json holds each
// setting's name, type, default, bounds, doc and AUTO_UPGRADE_* variable, the presets and the time
// bounds. The module declares its options from it (test/module evaluates them with real Nix); the
// schema, resolver and commands read it (config/table.ts). What cannot read it is checked here, so a
// copy that drifts fails: the agent's defaults and waits (its Go source), the args' docs, the README, the schema.
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { withArgDocs, withReadmeSections } from "../config/docs";
import { ROLE_DEFAULTS, resolveFleet } from "../config/resolve";
import { DEFAULT_TIMEOUTS, parseFleetConfig, pushShape, settingsShape } from "../config/schema";
import { boundSeconds, TABLE } from "../config/table";
import { AGENT_BUILD_SECONDS, confirmBound, deployBound, scriptEnv } from "../components/remote";
import { DIAL_ERROR_LIMIT, PER_DIAL_TIMEOUT } from "../components/host";
import { parallelFor } from "../fleet/stack";
import { prng } from "./prng";

const REPO = path.join(__dirname, "..");
const read = (f: string) => readFileSync(path.join(REPO, f), "utf8");
const AGENT = "nix/modules/services/system/agent/internal";
const SETTINGS_GO = read(`${AGENT}/settings/settings.go`);
const STEPS_GO = read(`${AGENT}/agent/steps.go`);
const VALIDATE_GO = read(`${AGENT}/agent/validate.go`);
const MODULE = read("nix/modules/services/system/auto-upgrade.nix");
const envText = (v: unknown) => (Array.isArray(v) ? v.join(" ") : String(v));
const withEnv = [...Object.entries(TABLE.settings), ...Object.entries(TABLE.host), ...Object.entries(TABLE.push), ...Object.entries(TABLE.timeouts)].filter(([, s]) => s.env !== undefined);

/**
 * The agent's `defaults` map (settings.go): variable → default. A variable it does not list defaults to ""
 * (settings.Parse: an unset or empty variable takes its default, "" when none); a Go constant is resolved.
 */
function agentDefaults(): Map<string, string> {
  const body = /var defaults = map\[string\]string\{\n([\s\S]*?)\n\}/.exec(SETTINGS_GO)?.[1];
  expect(body, "settings.go declares `var defaults = map[string]string{…}`").toBeDefined();
  const consts = new Map([...SETTINGS_GO.matchAll(/^const (\w+) = "([^"]*)"$/gm)].map((m) => [m[1], m[2]]));
  const out = new Map<string, string>();
  for (const line of body!.split("\n")) {
    const m = /^\s*"(AUTO_UPGRADE_[A-Z_]+)":\s*(?:"([^"]*)"|(\w+)),$/.exec(line);
    expect(m, `settings.go defaults line: ${line}`).not.toBeNull();
    expect(m![3] === undefined || consts.has(m![3]), `${m![1]}: constant ${m![3]}`).toBe(true);
    out.set(m![1], m![2] ?? consts.get(m![3])!);
  }
  return out;
}

// The agent's Settings field of a table variable: AUTO_UPGRADE_SWITCH_TIMEOUT → SwitchTimeout.
const fieldOf = (env: string) => env.replace(/^AUTO_UPGRADE_/, "").toLowerCase().replace(/(^|_)([a-z])/g, (_, __, c: string) => c.toUpperCase());

describe("the agent agrees with the table", () => {
  it("reads every variable of the table with the table's default, and has no default the table lacks", () => {
    const defaults = agentDefaults();
    for (const [name, spec] of withEnv) {
      expect(defaults.get(spec.env!) ?? "", `${name}: ${spec.env}'s default in the agent (settings.go)`).toBe(envText(spec.default));
      expect(SETTINGS_GO, `${name}: the agent reads ${spec.env}`).toContain(`("${spec.env}")`);
    }
    const tableEnvs = new Set(withEnv.map(([, s]) => s.env!));
    expect([...defaults.keys()].filter((e) => !tableEnvs.has(e)), "agent defaults the table does not have").toEqual([]);
    console.log(`agent: ${withEnv.length} settings' defaults checked against auto-upgrade.json`);
  });

  it("waits exactly the table's activatorReady and confirmWait bounds", () => {
    const envOf = (term: string) => (TABLE.timeouts[term] ?? TABLE.settings[term] ?? TABLE.push[term]).env!;
    for (const name of ["activatorReady", "confirmWait"] as const) {
      const b = TABLE.bounds[name];
      const expr = [...Object.entries(b.terms).map(([t, f]) => `${f === 1 ? "" : `${f}*`}r.S.${fieldOf(envOf(t))}`), String(b.seconds)].join(" + ");
      expect(STEPS_GO, `${name}: the agent (steps.go) must wait int64(${expr})`).toContain(`bound := int64(${expr})`);
    }
  });

  it("each session's timeout exceeds what the host may take, for random settings too", () => {
    const next = prng(18);
    const rng = { int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)) };
    const host = (health: number, confirm: number) => resolveFleet(parseFleetConfig({ hosts: [{ name: "h", role: "server", address: "10.0.0.1", configPath: "/c", healthTimeout: health, confirmTimeout: confirm }] })).hosts[0];
    for (let i = 0; i < 200; i++) {
      const t = { lease: rng.int(1, 86400), hooks: rng.int(1, 86400), validate: rng.int(1, 86400), switch: rng.int(1, 86400), commit: rng.int(1, 86400) };
      const h = host(rng.int(1, 3600), rng.int(5, 3600));
      const v = { ...t, healthTimeout: h.settings.healthTimeout, confirmTimeout: h.push.confirmTimeout };
      // Push: the bootstrap's agent build, then the agent's lease wait, settling an interrupted activation
      // (switch + commit), hooks, build, the closure diff (diffTimeout), systemd-run (60 s), then following
      // the activator (activatorReady).
      const push = AGENT_BUILD_SECONDS + t.lease + t.switch + t.commit + t.hooks + t.validate + 120 + 60 + boundSeconds("activatorReady", v);
      expect(deployBound(h, t)).toBeGreaterThan(push);
      // Confirm: its wait, the lease hand-back (10 s), a retried commit-back (4 × commit + 60).
      expect(confirmBound(h, t)).toBeGreaterThan(boundSeconds("confirmWait", v) + 10 + 4 * t.commit + 60);
    }
    expect(VALIDATE_GO).toMatch(/\bdiffTimeout = 120\b/);
  });
});

describe("the TypeScript side agrees with the table", () => {
  it("the schema has a validator for exactly the table's settings, with its bounds", () => {
    expect(Object.keys(settingsShape).sort()).toEqual(Object.keys(TABLE.settings).sort());
    expect(Object.keys(pushShape).sort()).toEqual(Object.keys(TABLE.push).sort());
    expect(Object.keys(DEFAULT_TIMEOUTS).sort()).toEqual(Object.keys(TABLE.timeouts).sort());
    const parse = (over: Record<string, unknown>) => () => parseFleetConfig({ hosts: [{ name: "h", role: "server", address: "10.0.0.1", configPath: "/c", ...over }] });
    for (const [group, name] of [["settings", "healthTimeout"], ["push", "confirmTimeout"], ["push", "wave"]] as const) {
      const s = TABLE[group][name];
      expect(parse({ [name]: s.min! - 1 }), `${name} below ${s.min}`).toThrow(new RegExp(`${name}: must be a whole number.* from ${s.min} to ${s.max}`));
      expect(parse({ [name]: s.max! + 1 })).toThrow(/must be a whole number/);
      expect(parse({ [name]: s.max })).not.toThrow();
    }
  });

  it("presets are the table's defaults plus its presets", () => {
    for (const [role, preset] of Object.entries(TABLE.presets)) {
      const want = { ...Object.fromEntries(Object.entries(TABLE.settings).map(([n, s]) => [n, s.default])), ...preset };
      expect(ROLE_DEFAULTS[role]).toEqual(want);
    }
  });

  it("the commands pass every variable of the table, as the module writes it", () => {
    const h = resolveFleet(parseFleetConfig({ hosts: [{ name: "h", role: "desktop", address: "10.0.0.1", configPath: "/c" }] })).hosts[0];
    const env = scriptEnv(h, DEFAULT_TIMEOUTS, 0);
    for (const [name, spec] of withEnv) {
      const value = name in h.settings ? h.settings[name as keyof typeof h.settings] : name in h.push ? h.push[name as keyof typeof h.push] : name === "stateDir" ? h.stateDir : DEFAULT_TIMEOUTS[name as keyof typeof DEFAULT_TIMEOUTS];
      expect(env[spec.env!], spec.env).toBe(envText(value));
    }
  });

  it("a deprecated setting that is set warns, naming the key and why", () => {
    const cfg = parseFleetConfig({ roles: { desktop: { preUpdateValidation: false } }, hosts: [{ name: "h", role: "server", address: "10.0.0.1", configPath: "/c", preUpdateValidation: true }] });
    expect(resolveFleet(cfg).warnings).toEqual([
      `nixfleet:roles.desktop.preUpdateValidation is deprecated: ${TABLE.settings.preUpdateValidation.deprecated}`,
      `nixfleet:hosts[0].preUpdateValidation is deprecated: ${TABLE.settings.preUpdateValidation.deprecated}`,
    ]);
    expect(resolveFleet(parseFleetConfig({ hosts: [{ name: "h", role: "server", address: "10.0.0.1", configPath: "/c" }] })).warnings).toEqual([]);
  });
});

describe("the module and the docs agree with the table", () => {
  it("the module declares the table's settings from the table, none by hand", () => {
    expect(MODULE).toContain("builtins.fromJSON (builtins.readFile ./auto-upgrade.json)");
    expect(MODULE).toContain("mapAttrs (_: settingOption) table.settings");
    for (const name of Object.keys(TABLE.settings)) expect(MODULE, name).not.toMatch(new RegExp(`^\\s*${name} = mkOption`, "m"));
    for (const [, spec] of withEnv) expect(MODULE, `${spec.env} written by hand`).not.toMatch(new RegExp(`^\\s*${spec.env} =`, "m"));
  });

  it("components/args.ts's JSDoc is the table's doc and default (npm run docs)", () => {
    const text = read("components/args.ts");
    expect(withArgDocs(text), "components/args.ts is stale: run npm run docs").toBe(text);
  });

  it("README.md's settings table, bounds and timeouts are the table's (npm run docs)", () => {
    const text = read("README.md");
    expect(withReadmeSections(text), "README.md is stale: run npm run docs").toBe(text);
    // The numbers are the table's (deploy: the agent's first-contact build, 900 s, included).
    expect(text).toContain("= **7440 s**");
    expect(text).toContain("= **3820 s**");
  });

  it("the README's other computed numbers are the code's", () => {
    const text = read("README.md");
    const confirm = TABLE.push.confirmTimeout.default as number;
    expect(text.match(/`confirmTimeout` \((\d+) s\)/g)?.length).toBeGreaterThanOrEqual(2);
    for (const m of text.matchAll(/`confirmTimeout` \((\d+) s\)/g)) expect(Number(m[1])).toBe(confirm);
    // Dial bound: (limit + 1) connects of perDialTimeout plus the back-off min(0.1 s × 1.5^k, 5 s).
    expect(text).toContain(`(\`dialErrorLimit\` ${DIAL_ERROR_LIMIT} × \`perDialTimeout\` ${PER_DIAL_TIMEOUT} s + back-off)`);
    const backoff = Array.from({ length: DIAL_ERROR_LIMIT }, (_, k) => Math.min(0.1 * 1.5 ** k, 5)).reduce((a, b) => a + b, 0);
    expect(text).toContain(`≈ ${Math.ceil((DIAL_ERROR_LIMIT + 1) * PER_DIAL_TIMEOUT + backoff)} s`);
    // The demo's and tests' parallelism, as the README states it.
    expect(text).toContain("`min(256, max(8, 3 × hosts + 4))`");
    for (const n of [1, 2, 4, 24, 84, 1000]) expect(parallelFor(n)).toBe(Math.min(256, Math.max(8, 3 * n + 4)));
  });
});
