// Unit tests of the resource graph with pulumi.runtime.setMocks: no engine, no hosts. The real
// engine and real sshd are exercised by test/e2e; these pin the structure cheaply.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { fleetProgram } from "./program";

interface Seen {
  type: string;
  name: string;
  parent?: pulumi.Resource;
  dependsOn: pulumi.Resource[];
  resource?: pulumi.Resource;
}
interface Created {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
}

const SENTINEL_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nSENTINEL-c2VjcmV0LWtleS1zaG91bGQtbmV2ZXItbGVhaw\n-----END OPENSSH PRIVATE KEY-----";
const storePath = (host: string) => `/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-${host}`;

const hosts = [
  { name: "malphas", address: "127.0.0.1", port: 2221, role: "desktop", configPath: "/home/evie/nix-config", configOwner: "evie", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEH2gZv+5yuSODmVezjLQzu7uLzR+x1a8IfopTp8cIQ9" },
  { name: "griefling", address: "griefling.home.arpa", role: "server", configPath: "/etc/nixos/nix-config", hostCanCommitConfig: false, preUpdateHooks: ["a.service", "b.service"] },
  { name: "pi", address: "10.0.0.9", role: "pi", configPath: "/srv/nix config", user: "nixfleet", hostCanCommitConfig: true },
];

async function runProgram(config: Record<string, unknown>) {
  const seen: Seen[] = [];
  const created: Created[] = [];
  pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        created.push({ type: args.type, name: args.name, inputs: args.inputs });
        const host = args.name.split("-")[0];
        const stdout = args.name.endsWith("-validate") ? storePath(host) : args.name.endsWith("-switch") ? storePath(host) : "";
        const stderr = `=== ${args.name} ===\nsome tool output\n`;
        return { id: `${args.name}-id`, state: { ...args.inputs, stdout, stderr } };
      },
      call: (args) => args.inputs,
    },
    "nixfleet",
    "test",
    false,
  );
  pulumi.runtime.setAllConfig(
    Object.fromEntries(Object.entries(config).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)])),
    ["nixfleet:sshPrivateKey"],
  );
  let outputs: ReturnType<typeof fleetProgram> | undefined;
  await pulumi.runtime.runInPulumiStack(async () => {
    // A stack transformation sees every resource's options: parent and dependsOn.
    pulumi.runtime.registerStackTransformation((args) => {
      seen.push({ type: args.type, name: args.name, parent: args.opts.parent, dependsOn: [args.opts.dependsOn ?? []].flat() as pulumi.Resource[] });
      return undefined;
    });
    outputs = fleetProgram();
    return outputs;
  });
  const status = await new Promise<Record<string, any>>((resolve) => outputs!.hosts.apply(resolve));
  return { seen, created, status };
}

const urnName = (r: pulumi.Resource | undefined) =>
  new Promise<string>((resolve) => (r ? r.urn.apply((u) => resolve(u.split("::").pop()!)) : resolve("<none>")));

describe("Fleet resource graph", () => {
  let result: Awaited<ReturnType<typeof runProgram>>;
  const warnings: string[] = [];
  beforeAll(async () => {
    vi.spyOn(pulumi.log, "warn").mockImplementation(async (msg: string) => void warnings.push(msg));
    result = await runProgram({ "nixfleet:hosts": hosts, "nixfleet:timeouts": { validate: 7200 }, "nixfleet:sshPrivateKey": SENTINEL_KEY });
    vi.restoreAllMocks();
  });

  it("warns loudly about each host without a pinned host key", () => {
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/^host griefling: no hostKey pinned.*pulumi config set --path 'nixfleet:hosts\[1\]\.hostKey'/);
    expect(warnings[1]).toMatch(/^host pi: no hostKey pinned.*'nixfleet:hosts\[2\]\.hostKey'/);
  });

  it("parents every resource but the fleet itself", async () => {
    const orphans = result.seen.filter((s) => s.type !== "nixfleet:index:Fleet" && !s.parent);
    expect(orphans.map((s) => `${s.type}::${s.name}`)).toEqual([]);
    for (const s of result.seen.filter((x) => x.type === "command:remote:Command")) {
      expect(await urnName(s.parent)).toBe(s.name.split("-")[0]);
    }
  });

  it("gives every resource a unique name (mocks would not catch a duplicate)", () => {
    const keys = result.created.map((c) => `${c.type}::${c.name}`);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.length).toBeGreaterThan(10);
  });

  it("chains copy → hooks → validate → switch → commit per host", async () => {
    const deps = async (name: string) => Promise.all((result.seen.find((s) => s.name === name)?.dependsOn ?? []).map(urnName));
    expect(await deps("malphas-hooks")).toEqual(expect.arrayContaining(["malphas-file-hosts-malphas-nixfleet-nix", "malphas-file-modules-services-system-auto-upgrade-sh"]));
    expect(await deps("malphas-file-hosts-malphas-nixfleet-nix")).toEqual(["malphas-check-files"]);
    expect(await deps("malphas-file-modules-services-system-auto-upgrade-nix")).toEqual(["malphas-file-hosts-malphas-nixfleet-nix"]);
    expect(await deps("malphas-validate")).toEqual(["malphas-hooks"]);
    expect(await deps("malphas-switch")).toEqual(["malphas-validate"]);
    expect(await deps("malphas-commit")).toEqual(["malphas-switch"]);
    const switchCmd = result.created.find((c) => c.name === "malphas-switch")!.inputs.create as string;
    expect(switchCmd).toContain(`switch ${storePath("malphas")}`);
  });

  it("checks every file before writing any, and runs only the script it installed", () => {
    const create = (n: string) => result.created.find((c) => c.name === n)!.inputs.create as string;
    const check = create("malphas-check-files");
    for (const f of Object.keys(result.status.malphas.files)) expect(check).toContain(`rel=${f};`);
    expect(check).toContain("flock -n 9");
    const scriptSha = result.status.malphas.files["modules/services/system/auto-upgrade.sh"];
    expect(create("malphas-validate")).toMatch(new RegExp(`^printf '%s  %s\\\\n' ${scriptSha} /home/evie/nix-config/modules/services/system/auto-upgrade\\.sh \\| sha256sum -c`));
  });

  it("commits back only where the resolved settings say so", () => {
    const commits = result.created.filter((c) => c.name.endsWith("-commit")).map((c) => c.name).sort();
    expect(commits).toEqual(["malphas-commit", "pi-commit"]);
  });

  it("resolves role defaults and host overrides into the script's environment", () => {
    const create = (n: string) => result.created.find((c) => c.name === n)!.inputs.create as string;
    expect(create("malphas-validate")).toContain("AUTO_UPGRADE_HOOKS=chezmoi-pre-update.service");
    expect(create("malphas-validate")).toContain("AUTO_UPGRADE_USER=evie");
    expect(create("griefling-validate")).toContain("AUTO_UPGRADE_HOOKS='a.service b.service'");
    expect(create("pi-validate")).toMatch(/^sudo -n -- sh -c /);
    expect(create("griefling-validate")).toContain("AUTO_UPGRADE_COMMIT=false");
  });

  it("wraps each remote step in `timeout`, with the stack's limits", () => {
    const create = (n: string) => result.created.find((c) => c.name === n)!.inputs.create as string;
    expect(create("griefling-validate")).toMatch(/ timeout 7200 bash /);
    expect(create("griefling-hooks")).toMatch(/ timeout 900 bash /);
    expect(create("griefling-switch")).toMatch(/ timeout 900 bash /);
    expect(create("griefling-file-roles-form-server-nix")).toMatch(/^timeout 120 sh -c /);
  });

  it("keeps a path with a space one shell word", () => {
    const create = result.created.find((c) => c.name === "pi-validate")!.inputs.create as string;
    // Quoted once for the inner shell, and that text quoted again for `sudo sh -c`.
    expect(create).toContain(`'\\''/srv/nix config/modules/services/system/auto-upgrade.sh'\\''`);
  });

  it("reports validated and switched paths and each step's log lines per host", () => {
    expect(result.status.malphas).toMatchObject({ role: "desktop", validatedPath: storePath("malphas"), switchedSystem: storePath("malphas") });
    expect(result.status.malphas.steps).toEqual({
      hooks: ["=== malphas-hooks ==="],
      validate: ["=== malphas-validate ==="],
      switch: ["=== malphas-switch ==="],
      commit: ["=== malphas-commit ==="],
    });
    expect(Object.keys(result.status.griefling.steps)).toEqual(["hooks", "validate", "switch"]);
    expect(Object.keys(result.status.malphas.files)).toContain("roles/form-desktop.nix");
  });

  it("never lets the sentinel private key reach a rendered file, a command or an output", () => {
    const texts = result.created.flatMap((c) => [c.inputs.create, c.inputs.stdin]).filter(Boolean).join("\n");
    expect(texts).toContain("myModules"); // the rendered files are in there
    expect(texts).not.toContain("SENTINEL");
    expect(JSON.stringify(result.status)).not.toContain("SENTINEL");
  });
});

describe("config errors stop the program before any resource", () => {
  async function programWith(config: Record<string, unknown>) {
    const created: string[] = [];
    pulumi.runtime.setMocks({ newResource: (args) => (created.push(args.name), { id: args.name, state: args.inputs }), call: (args) => args.inputs }, "nixfleet", "test", false);
    pulumi.runtime.setAllConfig(Object.fromEntries(Object.entries(config).map(([k, v]) => [k, JSON.stringify(v)])), ["nixfleet:sshPrivateKey"]);
    let error: unknown;
    try {
      fleetProgram();
    } catch (e) {
      error = e;
    }
    // Registrations reach the mock asynchronously: let them land before counting.
    await new Promise((resolve) => setTimeout(resolve, 100));
    return { error: String(error), created };
  }

  it("the check above can see a resource registered before the error", async () => {
    pulumi.runtime.setMocks({ newResource: (args) => (probe.push(args.name), { id: args.name, state: args.inputs }), call: (args) => args.inputs }, "nixfleet", "test", false);
    const probe: string[] = [];
    new command.remote.Command("leak", { connection: { host: "127.0.0.1" }, create: "true" });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(probe).toEqual(["leak"]);
  });

  it("names the field and what is allowed, and creates nothing", async () => {
    const bad = [hosts[0], { ...hosts[1], preUpdateHooks: ["ok.service", "rm -rf /"] }];
    const { error, created } = await programWith({ "nixfleet:hosts": bad, "nixfleet:sshPrivateKey": SENTINEL_KEY });
    expect(error).toMatch(/nixfleet:hosts\[1\]\.preUpdateHooks\[1\]: "rm -rf \/" is not a systemd unit name; allowed:/);
    expect(created).toEqual([]);
  });

  it("rejects an unknown nixfleet key", async () => {
    const { error, created } = await programWith({ "nixfleet:hosts": hosts, "nixfleet:host": [], "nixfleet:sshPrivateKey": SENTINEL_KEY });
    expect(error).toMatch(/nixfleet:host: unknown key; allowed: nixfleet:roles, nixfleet:hosts/);
    expect(created).toEqual([]);
  });
});
