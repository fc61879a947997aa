// Every nixfleet setting can be set with the REAL Pulumi CLI (`pulumi config set --path`, from
// toolchain/) and is then accepted by nixfleet's schema with the intended types. Config commands
// need no language plugin: PULUMI_HOME starts empty and stays without plugins.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parse as parseYaml } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleetFromConfigMap, readStackFile } from "../../config/stack";
import { offlineEnv, toolchainBin } from "../../fleet/stack";

let dir: string;
let bin: string;
let env: NodeJS.ProcessEnv;
let hostKey: string;
let privateKey: string;

const stackFile = () => path.join(dir, "Pulumi.demo.yaml");

/** Runs the real CLI in the project dir; throws with its stderr on a non-zero exit. */
function pulumi(args: string[], input?: string): string {
  const r = spawnSync(path.join(bin, "pulumi"), args, { cwd: dir, env, input, encoding: "utf8" });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`pulumi ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

const set = (key: string, value: string, ...flags: string[]) => pulumi(["config", "set", "--path", ...flags, key, value]);

// The settings, exactly as a user types them: `pulumi config set --path <key> <value>`.
const H = "nixfleet:hosts[0]";
const settings = (): [string, string][] => [
  [`${H}.name`, "malphas"],
  [`${H}.address`, "192.168.1.10"],
  [`${H}.port`, "2222"],
  [`${H}.role`, "desktop"],
  [`${H}.configPath`, "/home/evie/nix-config"],
  [`${H}.hostKey`, hostKey],
  [`${H}.preUpdateHooks[0]`, "chezmoi-pre-update.service"],
  [`${H}.preUpdateHooks[1]`, "backup.service"],
  [`${H}.hostCanCommitConfig`, "false"],
  [`${H}.preUpdateValidation`, "true"],
  [`${H}.branch`, "main"],
  [`${H}.healthUnits[0]`, "nginx.service"],
  [`${H}.healthCheck`, "true"],
  [`${H}.wave`, "1"],
  [`${H}.confirmTimeout`, "45"],
  ["nixfleet:roles.server.hostCanCommitConfig", "false"],
  ["nixfleet:roles.desktop.schedule", "Sun 04:00"],
  ["nixfleet:timeouts.validate", "7200"],
  ["nixfleet:timeouts.lease", "60"],
];

beforeAll(() => {
  bin = toolchainBin();
  dir = mkdtempSync(path.join(os.tmpdir(), "nixfleet-config-set-"));
  mkdirSync(path.join(dir, "state"));
  env = { ...process.env, ...offlineEnv(dir, bin) };
  writeFileSync(path.join(dir, "Pulumi.yaml"), "name: nixfleet\nruntime: nodejs\n");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", path.join(dir, "id")]);
  hostKey = readFileSync(path.join(dir, "id.pub"), "utf8").trim().split(/\s+/).slice(0, 2).join(" ");
  privateKey = readFileSync(path.join(dir, "id"), "utf8");
  // PULUMI_BACKEND_URL (file://<dir>/state) replaces `pulumi login`.
  pulumi(["stack", "init", "demo"]);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("pulumi config set --path, then nixfleet's schema", () => {
  it("every setting is stored with its YAML type and resolves to exactly those values", () => {
    for (const [key, value] of settings()) set(key, value);
    pulumi(["config", "set", "--secret", "nixfleet:sshPrivateKey"], privateKey); // value on stdin

    const text = readFileSync(stackFile(), "utf8");
    const config = (parseYaml(text) as { config: Record<string, unknown> }).config;
    // Plain `true`/`false`/digits become YAML booleans/numbers; no --type needed.
    expect(config["nixfleet:hosts"]).toEqual([
      {
        name: "malphas",
        address: "192.168.1.10",
        port: 2222,
        role: "desktop",
        configPath: "/home/evie/nix-config",
        hostKey,
        preUpdateHooks: ["chezmoi-pre-update.service", "backup.service"],
        hostCanCommitConfig: false,
        preUpdateValidation: true,
        branch: "main",
        healthUnits: ["nginx.service"],
        healthCheck: true,
        wave: 1,
        confirmTimeout: 45,
      },
    ]);
    expect(config["nixfleet:roles"]).toEqual({ server: { hostCanCommitConfig: false }, desktop: { schedule: "Sun 04:00" } });
    expect(config["nixfleet:timeouts"]).toEqual({ validate: 7200, lease: 60 });

    // The key is stored encrypted: no line of it appears in the file.
    expect(config["nixfleet:sshPrivateKey"]).toEqual({ secure: expect.stringMatching(/^v1:/) });
    for (const line of privateKey.split("\n").filter((l) => l.length > 0)) expect(text).not.toContain(line);
    expect(pulumi(["config", "get", "nixfleet:sshPrivateKey"])).toBe(privateKey);

    const fleet = fleetFromConfigMap(readStackFile(stackFile()));
    expect(fleet.hosts).toHaveLength(1);
    const h = fleet.hosts[0];
    expect(h).toMatchObject({ name: "malphas", address: "192.168.1.10", port: 2222, role: "desktop", hostKey, configPath: "/home/evie/nix-config" });
    expect(h.overrides).toEqual({
      preUpdateHooks: ["chezmoi-pre-update.service", "backup.service"],
      hostCanCommitConfig: false,
      preUpdateValidation: true,
      branch: "main",
      healthUnits: ["nginx.service"],
      healthCheck: true,
    });
    expect(h.push).toEqual({ wave: 1, confirmTimeout: 45 });
    // Desktops commit back by default; the host's `false` wins. The stack's desktop schedule applies.
    expect(h.roleSettings).toMatchObject({ hostCanCommitConfig: true, schedule: "Sun 04:00" });
    expect(h.settings).toMatchObject({ hostCanCommitConfig: false, preUpdateValidation: true, schedule: "Sun 04:00", branch: "main" });
    expect(fleet.timeouts.validate).toBe(7200);

    // No language plugin was needed or installed for any of this.
    expect(existsSync(path.join(dir, "pulumi-home", "plugins"))).toBe(false);
  });

  it("`pulumi config --json` and `config get --path` show the same values; the program's JSON-text path resolves alike", () => {
    const json = JSON.parse(pulumi(["config", "--json"])) as Record<string, { value?: string; objectValue?: unknown; secret: boolean }>;
    const yaml = readStackFile(stackFile());
    expect(json["nixfleet:hosts"].objectValue).toEqual(yaml["nixfleet:hosts"]);
    expect(json["nixfleet:sshPrivateKey"]).toMatchObject({ secret: true });
    expect(json["nixfleet:sshPrivateKey"].value).toBeUndefined();
    expect(JSON.parse(pulumi(["config", "get", "--path", H]))).toEqual((yaml["nixfleet:hosts"] as unknown[])[0]);
    expect(pulumi(["config", "get", "--path", `${H}.port`]).trim()).toBe("2222");

    // The Pulumi program gets object values as JSON text (pulumi.runtime.allConfig()).
    const asText = Object.fromEntries(Object.entries(json).filter(([, v]) => !v.secret).map(([k, v]) => [k, v.value]));
    expect(fleetFromConfigMap(asText)).toEqual(fleetFromConfigMap(yaml));
  });

  const stored = (key: "hostCanCommitConfig" | "port") => (readStackFile(stackFile())["nixfleet:hosts"] as Record<string, unknown>[])[0][key];
  const resolve = () => fleetFromConfigMap(readStackFile(stackFile()));
  const BOOL_ERROR = /nixfleet:hosts\[0\]\.hostCanCommitConfig: must be true or false \(a boolean, not a string\)/;

  it("a typo'd boolean is stored as a string and rejected naming the key; setting it again fixes it", () => {
    set(`${H}.hostCanCommitConfig`, "yes");
    expect(stored("hostCanCommitConfig")).toBe("yes");
    expect(resolve).toThrow(BOOL_ERROR);
    set(`${H}.hostCanCommitConfig`, "false");
    expect(stored("hostCanCommitConfig")).toBe(false);
    expect(resolve().hosts[0].settings.hostCanCommitConfig).toBe(false);
  });

  it("CLI pitfall: a value the CLI double-quotes keeps its quotes on every later set, even with --type; `config rm --path` clears it", () => {
    // `True` (capitalised) is written as "True"; the YAML node stays double-quoted afterwards.
    set(`${H}.hostCanCommitConfig`, "True");
    expect(stored("hostCanCommitConfig")).toBe("True");
    expect(resolve).toThrow(BOOL_ERROR);
    set(`${H}.hostCanCommitConfig`, "false");
    expect(stored("hostCanCommitConfig")).toBe("false"); // still a string
    set(`${H}.hostCanCommitConfig`, "false", "--type", "bool");
    expect(stored("hostCanCommitConfig")).toBe("false"); // --type bool does not help
    expect(resolve).toThrow(BOOL_ERROR);
    pulumi(["config", "rm", "--path", `${H}.hostCanCommitConfig`]);
    set(`${H}.hostCanCommitConfig`, "false");
    expect(stored("hostCanCommitConfig")).toBe(false);

    // The same for a number once `--type string` quoted it.
    set(`${H}.port`, "2222", "--type", "string");
    expect(resolve).toThrow(/nixfleet:hosts\[0\]\.port: must be a port number/);
    set(`${H}.port`, "2222", "--type", "int");
    expect(stored("port")).toBe("2222");
    pulumi(["config", "rm", "--path", `${H}.port`]);
    set(`${H}.port`, "2222");
    expect(stored("port")).toBe(2222);
    expect(resolve().hosts[0]).toMatchObject({ port: 2222, settings: { hostCanCommitConfig: false } });
  });

  it("CLI pitfall: `--type bool` stores any unparseable value as false with exit 0; `--type int` refuses", () => {
    // Pinned so a CLI upgrade that changes it is noticed; the README should not recommend --type bool.
    set(`${H}.preUpdateValidation`, "yes", "--type", "bool");
    expect(resolve().hosts[0].settings.preUpdateValidation).toBe(false);
    set(`${H}.preUpdateValidation`, "true");
    expect(resolve().hosts[0].settings.preUpdateValidation).toBe(true);
    expect(() => set(`${H}.port`, "22x", "--type", "int")).toThrow(/strconv.Atoi: parsing "22x": invalid syntax/);
    expect(stored("port")).toBe(2222);
  });
});
