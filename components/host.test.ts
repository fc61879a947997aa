// Unit tests of the resource graph with pulumi.runtime.setMocks: no engine, no hosts. What the REAL
// engine does with failed resources (their outputs become unknown; dependents are skipped even with
// --continue-on-error) was verified with it (see components/outcome.ts `ended`); the mock below
// reproduces that by returning no stdout for a failed command and for the dependents the engine skips.
// The last run's state comes from the engine's builtin `pulumi:pulumi:readStackResourceOutputs`
// (components/outcome.ts `lastOutputs`), which the mock answers with the Fleet's registered outputs.
import * as pulumi from "@pulumi/pulumi";
import { afterEach, describe, expect, it, vi } from "vitest";
import { parseBundle, rolloutToken } from "../render/bundle";
import { renderHost } from "../render/files";
import { fleetFromConfigMap } from "../config/stack";
import { Fleet } from "./fleet";
import { Host, type HostStatus } from "./host";
import { fleetProgram } from "./program";

// nix/push-bootstrap.sh is the script engineer's; these tests need only some text to embed.
const BOOTSTRAP = "# unit-test stand-in for nix/push-bootstrap.sh\nexit 99\n";
vi.mock("../render/files", async (importOriginal) => ({ ...(await importOriginal<typeof import("../render/files")>()), bootstrapText: () => BOOTSTRAP }));

const SENTINEL_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nSENTINEL-c2VjcmV0LWtleS1zaG91bGQtbmV2ZXItbGVhaw\n-----END OPENSSH PRIVATE KEY-----";
const STORE = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x";
const ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEH2gZv+5yuSODmVezjLQzu7uLzR+x1a8IfopTp8cIQ9";
const hosts = [
  { name: "malphas", address: "127.0.0.1", port: 2221, role: "desktop", configPath: "/home/evie/nix-config", configOwner: "evie", hostKey: ED25519 },
  { name: "lilith", address: "127.0.0.1", port: 2222, role: "laptop", configPath: "/root/nix-config", hostKey: ED25519, wave: 1 },
  { name: "griefling", address: "griefling.home.arpa", role: "server", configPath: "/etc/nixos/nix-config", hostKey: ED25519, wave: 1, healthUnits: ["nginx.service"] },
  { name: "pi", address: "10.0.0.9", role: "pi", configPath: "/srv/nix config", stateDir: "/var/lib/auto upgrade", user: "nixfleet", hostKey: ED25519, wave: 2 },
];

interface Created {
  type: string;
  name: string;
  inputs: Record<string, any>;
  parent?: pulumi.Resource;
  dependsOn: pulumi.Resource[];
}

/** The Fleet component of `fleetProgram` in the mocked stack "test" of project "nixfleet". */
const FLEET_URN = "urn:pulumi:test::nixfleet::pulumi:pulumi:Stack$nixfleet:index:Fleet::fleet";

/**
 * Runs `program` under mocks. Commands named in `failing` fail; commands of hosts in `skipped` are
 * skipped (as the engine skips dependents of a failed resource). `previous` is the Fleet's `status`
 * output in the stack's last state.
 */
async function run(program: () => Record<string, pulumi.Output<unknown>>, opts: { failing?: string[]; skipped?: string[]; previous?: Record<string, unknown>; last?: Record<string, unknown> } = {}) {
  const created: Created[] = [];
  const byName = new Map<string, Created>();
  pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        const c = byName.get(args.name) ?? { type: args.type, name: args.name, inputs: args.inputs, dependsOn: [] };
        c.inputs = args.inputs;
        if (!byName.has(args.name)) created.push(c), byName.set(args.name, c);
        const hostName = args.name.split("-").slice(-2, -1)[0];
        const fails = opts.failing?.includes(args.name) || opts.skipped?.includes(hostName);
        if (args.type !== "command:remote:Command" || fails) return { id: `${args.name}-id`, state: args.inputs };
        let stdout = "";
        if (args.name.endsWith("-deploy")) {
          const retry = /AUTO_UPGRADE_RETRY=(\d+)/.exec(args.inputs.create)?.[1];
          stdout = `${JSON.stringify({ rollout: rolloutToken(args.inputs.stdin, Number(retry ?? 0)), validatedPath: STORE, action: "armed", needsReboot: false })}\n`;
        } else if (args.name.endsWith("-confirm")) {
          stdout = `${JSON.stringify({ host: hostName, result: "success", goldenPath: STORE, needsReboot: true, warnings: [] })}\n`;
        }
        return { id: `${args.name}-id`, state: { ...args.inputs, stdout, stderr: "" } };
      },
      call: (args) => {
        if (args.token !== "pulumi:pulumi:readStackResourceOutputs") return args.inputs;
        expect(args.inputs.stackName).toBe("organization/nixfleet/test");
        const last = { ...(opts.previous ? { [FLEET_URN]: { type: "nixfleet:index:Fleet", outputs: { status: opts.previous } } } : {}), ...opts.last };
        return { name: args.inputs.stackName, outputs: last };
      },
    },
    "nixfleet",
    "test",
    false,
    "organization",
  );
  pulumi.runtime.setAllConfig(
    { "nixfleet:hosts": JSON.stringify(hosts), "nixfleet:timeouts": JSON.stringify({ validate: 7200 }), "nixfleet:sshPrivateKey": SENTINEL_KEY },
    ["nixfleet:sshPrivateKey"],
  );
  let outputs: Record<string, pulumi.Output<unknown>> = {};
  await pulumi.runtime.runInPulumiStack(async () => {
    // A stack transformation sees every resource's options: parent and dependsOn.
    pulumi.runtime.registerStackTransformation((args) => {
      const c = byName.get(args.name) ?? { type: args.type, name: args.name, inputs: {}, dependsOn: [] };
      c.parent = args.opts.parent;
      c.dependsOn = [args.opts.dependsOn ?? []].flat() as pulumi.Resource[];
      if (!byName.has(args.name)) created.push(c), byName.set(args.name, c);
      return undefined;
    });
    outputs = program();
    return outputs;
  });
  const resolved = await Promise.all(Object.entries(outputs).map(([k, o]) => new Promise<[string, any]>((r) => o.apply((v) => r([k, v])))));
  // The stack registers its outputs after they resolve: let that reach this run's mock monitor before the
  // next test replaces it (else: "unknown resource …Stack" rejections).
  await pulumi.runtime.disconnect();
  return { created, byName, outputs: Object.fromEntries(resolved) as Record<string, any> };
}

const urnName = (r: pulumi.Resource) => new Promise<string>((resolve) => r.urn.apply((u) => resolve(u.split("::").pop()!)));
const commands = (created: Created[]) => created.filter((c) => c.type === "command:remote:Command");

afterEach(() => vi.restoreAllMocks());

describe("a host is exactly two remote commands", () => {
  it("deploy and confirm per host, parented by the host, uniquely named with the fleet's prefix", async () => {
    const { created } = await run(fleetProgram);
    const names = commands(created).map((c) => c.name).sort();
    expect(names).toEqual(hosts.flatMap((h) => [`fleet-${h.name}-confirm`, `fleet-${h.name}-deploy`]).sort());
    for (const c of commands(created)) expect(await urnName(c.parent!)).toBe(c.name.replace(/-(deploy|confirm)$/, ""));
    const orphans = created.filter((c) => c.type !== "nixfleet:index:Fleet" && c.type !== "pulumi:pulumi:StackReference" && c.type !== "pulumi:pulumi:Stack" && !c.parent);
    expect(orphans.map((c) => c.name)).toEqual([]);
  });

  it("two Fleets in one program do not collide", async () => {
    const { created } = await run(() => {
      const a = new Fleet("home", { hosts, privateKey: pulumi.secret("k") });
      const b = new Fleet("lab", { hosts, privateKey: pulumi.secret("k") });
      return { a: a.status, b: b.status };
    });
    const keys = created.map((c) => `${c.type}::${c.name}`);
    expect(new Set(keys).size).toBe(keys.length);
    expect(commands(created)).toHaveLength(4 * hosts.length);
    expect(keys).toContain("command:remote:Command::lab-pi-deploy");
  });

  it("deploy: the bundle on stdin, `timeout <bound> env AUTO_UPGRADE_*=… bash -c <bootstrap> nixfleet-push`, sudo -n for a non-root user", async () => {
    const { byName } = await run(fleetProgram);
    const d = byName.get("fleet-malphas-deploy")!.inputs;
    // agent build 900 + lease 120 + settle 600 + git add 300 + hooks 900 + validate 7200 + diff 120
    // + systemd-run 60 + activator (switch 600 + health 120 + 60) + margin 60
    expect(d.create).toMatch(/^timeout 11040 env AUTO_UPGRADE_BRANCH=main /);
    expect(d.create).toContain("AUTO_UPGRADE_USER=evie");
    expect(d.create).toContain("AUTO_UPGRADE_CONFIRM_TIMEOUT=30");
    expect(d.create).toContain("AUTO_UPGRADE_HOOKS=chezmoi-pre-update.service");
    expect(d.create.endsWith(` bash -c '# unit-test stand-in for nix/push-bootstrap.sh\nexit 99\n' nixfleet-push`)).toBe(true);
    expect(byName.get("fleet-griefling-deploy")!.inputs.create).toContain("AUTO_UPGRADE_HEALTH_UNITS=nginx.service");
    expect(byName.get("fleet-pi-deploy")!.inputs.create).toMatch(/^sudo -n -- timeout \d+ env /);
    const files = parseBundle(d.stdin);
    const host = fleetFromConfigMap({ "nixfleet:hosts": JSON.stringify(hosts) }).hosts[0];
    expect(files.map((f) => f.content).sort()).toEqual(renderHost(host).map((f) => f.content).sort());
    expect(d.addPreviousOutputInEnv).toBe(false);
    expect(d.logging).toBe("stdoutAndStderr");
    expect(d.triggers).toBeUndefined(); // changes are updates, never replacements
  });

  it("confirm: a new command after deploy, triggered by deploy's output, runs the agent deploy built (a store path, checked) with the token", async () => {
    const { byName } = await run(fleetProgram);
    const deploy = byName.get("fleet-malphas-deploy")!;
    const confirm = byName.get("fleet-malphas-confirm")!;
    expect(await Promise.all(confirm.dependsOn.map(urnName))).toEqual(["fleet-malphas-deploy"]);
    const token = rolloutToken(deploy.inputs.stdin);
    expect(confirm.inputs.triggers).toEqual([expect.stringContaining(`"rollout":"${token}"`)]);
    // The agent deploy rooted in the state dir, a Nix store path: never a file of the checkout (its owner
    // could swap it after a check).
    expect(confirm.inputs.create).toMatch(/^case \$\(readlink -f -- \/var\/lib\/auto-upgrade\/agent\/bin\/nixfleet-agent\) in \/nix\/store\/\*\) ;; \*\) echo .* exit 3 ;; esac; /);
    expect(confirm.inputs.create).toMatch(new RegExp(`; timeout \\d+ env .* /var/lib/auto-upgrade/agent/bin/nixfleet-agent confirm ${token}$`));
    expect(confirm.inputs.create).not.toContain("/home/evie/nix-config/");
    // A path with a space stays one word, quoted again for sudo's `sh -c`.
    expect(byName.get("fleet-pi-confirm")!.inputs.create).toMatch(/^sudo -n -- sh -c '.*'\\''\/var\/lib\/auto upgrade\/agent\/bin\/nixfleet-agent'\\'' confirm [0-9a-f]{16}'$/s);
  });

  it("connection bounds are explicit", async () => {
    const { byName } = await run(fleetProgram);
    for (const n of ["fleet-malphas-deploy", "fleet-malphas-confirm"]) {
      // @pulumi/command wraps the whole connection in a secret: the mock sees the secret envelope.
      const conn = byName.get(n)!.inputs.connection;
      expect(conn["4dabf18193072939515e22adb298388d"]).toBe("1b47061264138c4ac30d75fd1eb44270");
      expect(conn.value).toMatchObject({ dialErrorLimit: 3, perDialTimeout: 10, hostKey: ED25519 });
    }
  });

  it("never lets the private key reach a command text, the stdin or an output", async () => {
    const { created, outputs } = await run(fleetProgram);
    const texts = commands(created).flatMap((c) => [c.inputs.create, c.inputs.stdin, JSON.stringify(c.inputs.triggers ?? [])]).join("\n");
    expect(texts).toContain("myModules");
    expect(texts).not.toContain("SENTINEL");
    expect(JSON.stringify(outputs)).not.toContain("SENTINEL");
  });
});

describe("waves", () => {
  it("every deploy of wave k+1 depends on every confirm of wave k; wave 0 waits for nothing", async () => {
    const { byName } = await run(fleetProgram);
    const deps = (n: string) => Promise.all(byName.get(n)!.dependsOn.map(urnName));
    expect(await deps("fleet-malphas-deploy")).toEqual([]);
    expect(await deps("fleet-lilith-deploy")).toEqual(["fleet-malphas-confirm"]);
    expect(await deps("fleet-griefling-deploy")).toEqual(["fleet-malphas-confirm"]);
    expect((await deps("fleet-pi-deploy")).sort()).toEqual(["fleet-griefling-confirm", "fleet-lilith-confirm"]);
  });
});

describe("outputs survive failure", () => {
  it("all succeed: each host reports validated and golden path, needsReboot, retry 0", async () => {
    const errors = vi.spyOn(pulumi.log, "error");
    const { outputs } = await run(fleetProgram);
    for (const h of hosts) expect(outputs.hosts[h.name]).toMatchObject({ result: "success", validatedPath: STORE, goldenPath: STORE, needsReboot: true, retry: 0, retryNeeded: false });
    expect(errors).not.toHaveBeenCalled();
  });

  it("a failed deploy in wave 1: the others keep their facts, later waves are skipped, the log names the host and the wave", async () => {
    const errors: string[] = [];
    vi.spyOn(pulumi.log, "error").mockImplementation(async (m: string) => void errors.push(m));
    const previous: Record<string, unknown> = { pi: { role: "pi", wave: 2, result: "success", validatedPath: "/nix/store/old", bundle: "x", retry: 0, retryNeeded: false } };
    previous.griefling = { role: "server", wave: 1, result: "success", goldenPath: "/nix/store/golden", bundle: "y", retry: 0, retryNeeded: false };
    const { outputs } = await run(fleetProgram, { failing: ["fleet-griefling-deploy"], skipped: ["pi"], previous });
    expect(outputs.hosts.malphas).toMatchObject({ result: "success", validatedPath: STORE });
    expect(outputs.hosts.lilith).toMatchObject({ result: "success", validatedPath: STORE });
    expect(outputs.hosts.griefling).toMatchObject({ result: "failed", step: "deploy", message: expect.stringContaining("fleet-griefling-deploy failed") });
    expect(outputs.hosts.griefling.validatedPath).toBeUndefined();
    expect(outputs.hosts.griefling.goldenPath).toBe("/nix/store/golden");
    // The skipped host keeps what the last run knew.
    expect(outputs.hosts.pi).toMatchObject({ result: "skipped", stoppedWave: 1, validatedPath: "/nix/store/old", message: "not started: wave 1 stopped before this host's wave 2" });
    expect(errors).toEqual([expect.stringMatching(/^host griefling \(wave 1\) failed at deploy: /), "wave 1 stopped: griefling failed; later waves not started: pi"]);
  });

  it("a failed confirm asks for a retry; the next run's deploy carries AUTO_UPGRADE_RETRY=1 and token -r1", async () => {
    vi.spyOn(pulumi.log, "error").mockImplementation(async () => undefined);
    const first = await run(fleetProgram, { failing: ["fleet-pi-confirm"] });
    expect(first.outputs.hosts.pi).toMatchObject({ result: "failed", step: "confirm", retry: 0, retryNeeded: true, validatedPath: STORE });
    expect(first.byName.get("fleet-pi-deploy")!.inputs.create).not.toContain("AUTO_UPGRADE_RETRY");

    const second = await run(fleetProgram, { previous: first.outputs.hosts });
    expect(second.byName.get("fleet-pi-deploy")!.inputs.create).toContain("AUTO_UPGRADE_RETRY=1 ");
    expect(second.outputs.hosts.pi).toMatchObject({ result: "success", retry: 1, retryNeeded: false, rollout: expect.stringMatching(/-r1$/) });
    // The other hosts' commands are exactly as before: a no-op for them.
    for (const n of ["malphas", "lilith", "griefling"]) {
      expect(second.byName.get(`fleet-${n}-deploy`)!.inputs.create).toBe(first.byName.get(`fleet-${n}-deploy`)!.inputs.create);
    }
    // And after success the number stays: the run after that changes nothing.
    const third = await run(fleetProgram, { previous: second.outputs.hosts });
    expect(third.byName.get("fleet-pi-deploy")!.inputs.create).toBe(second.byName.get("fleet-pi-deploy")!.inputs.create);
  });

  it("a skipped host keeps a pending retry for the run after", async () => {
    vi.spyOn(pulumi.log, "error").mockImplementation(async () => undefined);
    const previous: Record<string, HostStatus> = { pi: { role: "pi", wave: 2, result: "failed", step: "confirm", bundle: "x", retry: 0, retryNeeded: true } };
    const { outputs } = await run(fleetProgram, { failing: ["fleet-malphas-deploy"], skipped: ["lilith", "griefling", "pi"], previous });
    expect(outputs.hosts.pi).toMatchObject({ result: "skipped", retry: 0, retryNeeded: true, stoppedWave: 0 });
  });
});

describe("without plumbing", () => {
  it("a Host made alone reads its own last status: a failed confirm deploys again with retry 1", async () => {
    vi.spyOn(pulumi.log, "error").mockImplementation(async () => undefined);
    const solo = () => ({ status: new Host("solo", { ...hosts[2], wave: undefined, privateKey: pulumi.secret("k") }).status });
    const first = await run(solo, { failing: ["solo-confirm"] });
    expect(first.outputs.status).toMatchObject({ result: "failed", step: "confirm", retry: 0, retryNeeded: true });
    const urn = "urn:pulumi:test::nixfleet::pulumi:pulumi:Stack$nixfleet:index:Host::solo";
    const second = await run(solo, { last: { [urn]: { type: "nixfleet:index:Host", outputs: { status: first.outputs.status } } } });
    expect(second.byName.get("solo-deploy")!.inputs.create).toContain("AUTO_UPGRADE_RETRY=1 ");
    expect(second.outputs.status).toMatchObject({ result: "success", retry: 1, retryNeeded: false });
    // Another resource's outputs are not this Host's.
    const other = await run(solo, { last: { [urn.replace("::solo", "::other")]: { type: "nixfleet:index:Host", outputs: { status: first.outputs.status } } } });
    expect(other.byName.get("solo-deploy")!.inputs.create).not.toContain("AUTO_UPGRADE_RETRY");
  });

  it("Fleet.isInstance and Host.isInstance tell the components apart, also across copies of the package", async () => {
    let fleet: Fleet | undefined;
    await run(() => {
      fleet = new Fleet("home", { hosts: hosts.slice(0, 1), privateKey: pulumi.secret("k") });
      return { s: fleet.status };
    });
    const host = fleet!.hosts.malphas;
    expect([Fleet.isInstance(fleet), Host.isInstance(host), Fleet.isInstance(host), Host.isInstance(fleet)]).toEqual([true, true, false, false]);
    expect([Fleet.isInstance({}), Host.isInstance(null), Host.isInstance(host.deploy)]).toEqual([false, false, false]);
    // Another copy's class: the brand is a global symbol, not this module's class.
    const copy = Object.create(null) as Record<symbol, unknown>;
    copy[Symbol.for("nixfleet:index:Host")] = true;
    expect(Host.isInstance(copy)).toBe(true);
  });
});

describe("config errors stop the program before any resource", () => {
  it("names the field and what is allowed, and creates nothing", async () => {
    const created: string[] = [];
    pulumi.runtime.setMocks({ newResource: (a) => (created.push(a.name), { id: a.name, state: a.inputs }), call: (a) => a.inputs }, "nixfleet", "test", false, "organization");
    pulumi.runtime.setAllConfig({ "nixfleet:hosts": JSON.stringify([hosts[0], { ...hosts[1], preUpdateHooks: ["ok.service", "rm -rf /"] }]), "nixfleet:sshPrivateKey": SENTINEL_KEY }, ["nixfleet:sshPrivateKey"]);
    expect(() => fleetProgram()).toThrow(/nixfleet:hosts\[1\]\.preUpdateHooks\[1\]: "rm -rf \/" is not a systemd unit name; allowed:/);
    // Registrations reach the mock asynchronously: let them land before counting.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(created).toEqual([]);
  });
});
