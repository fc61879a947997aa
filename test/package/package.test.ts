/**
 * nixfleet as a package a user installs (issue 9, first Proof bullet): `npm pack` (which builds dist/
 * through prepack), install the tarball into a fresh temporary Pulumi TypeScript project, compile that
 * project's own program with tsc against the shipped .d.ts, and run it with plain node (no tsx): it
 * composes `Fleet` itself with one host whose address is an Output, through the real engine
 * (toolchain/) on the SIMULATED fleet (fleet/, ports 2550+). Also: `require("nixfleet")` from plain
 * Node registers no resource.
 *
 * Offline: the project's @pulumi/*, yaml, zod and @types/node are `file:` links to this repo's
 * node_modules (npm links them and installs nothing into them); only the tarball is unpacked.
 */
import { execFile } from "node:child_process";
import { promises as fs, realpathSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { currentSystem, startFleet, type SimFleet } from "../../fleet/fleet";
import { offlineEnv, toolchainBin } from "../../fleet/stack";

const REPO = path.join(__dirname, "..", "..");
const BASE_PORT = 2550;
const ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEH2gZv+5yuSODmVezjLQzu7uLzR+x1a8IfopTp8cIQ9";
const LINKED = ["@pulumi/pulumi", "@pulumi/command", "yaml", "zod", "@types/node"];

/** Runs a command; on failure the error carries its exit code and output tail. */
async function sh(file: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<string> {
  try {
    const r = await promisify(execFile)(file, args, { ...opts, encoding: "utf8", maxBuffer: 64 << 20 });
    return r.stdout;
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    throw new Error(`${file} ${args.join(" ")} (in ${opts.cwd}) failed with ${x.code}:\n${String(x.stdout ?? "").slice(-2000)}\n${String(x.stderr ?? "").slice(-4000)}`);
  }
}

const lastJson = (out: string) => JSON.parse(out.trim().split("\n").pop() ?? "") as Record<string, any>;

let dir = "";
let project = "";
let fleet: SimFleet | undefined;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "nixfleet-package-"));
  await sh("npm", ["pack", "--pack-destination", dir], { cwd: REPO });
  const tarballs = (await fs.readdir(dir)).filter((f) => f.endsWith(".tgz"));
  expect(tarballs).toHaveLength(1);
  project = path.join(dir, "consumer");
  await fs.mkdir(project);
  const link = (p: string) => `file:${realpathSync(path.join(REPO, "node_modules", p))}`;
  const deps = Object.fromEntries(LINKED.map((p) => [p, link(p)]));
  const pkg = { name: "consumer", version: "1.0.0", private: true, dependencies: { nixfleet: `file:${path.join(dir, tarballs[0])}`, ...deps } };
  await fs.writeFile(path.join(project, "package.json"), JSON.stringify(pkg, null, 2));
  await fs.writeFile(path.join(project, "Pulumi.yaml"), "name: consumer\nruntime:\n  name: nodejs\n  options:\n    typescript: true\n");
  const tsconfig = { compilerOptions: { target: "ES2022", module: "node16", moduleResolution: "node16", strict: true, types: ["node"], outDir: "dist" }, files: ["index.ts"] };
  await fs.writeFile(path.join(project, "tsconfig.json"), JSON.stringify(tsconfig, null, 2));
  for (const f of ["index.ts", "no-side-effects.js"]) await fs.copyFile(path.join(__dirname, "consumer", f), path.join(project, f));
  await sh("npm", ["install", "--offline", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: project });
  await sh(process.execPath, [path.join(REPO, "node_modules", "typescript", "bin", "tsc"), "-p", project], { cwd: project });
}, 600_000);

afterAll(async () => {
  await fleet?.stop();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

describe("the packed package in a user's project", () => {
  it("ships compiled JS, .d.ts and the nix/ files, no TypeScript sources", async () => {
    const root = path.join(project, "node_modules", "nixfleet");
    const files = (await fs.readdir(root, { recursive: true })).map(String);
    expect(files).toContain(path.join("dist", "components", "index.js"));
    expect(files).toContain(path.join("dist", "components", "index.d.ts"));
    // The agent's source: every host builds it (push-bootstrap.sh, the module's buildGoModule).
    expect(files).toContain(path.join("dist", "nix", "modules", "services", "system", "agent", "package.nix"));
    expect(files).toContain(path.join("dist", "nix", "modules", "services", "system", "agent", "cmd", "nixfleet-agent", "main.go"));
    expect(files).toContain(path.join("dist", "nix", "push-bootstrap.sh"));
    expect(files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))).toEqual([]);
    expect(files.filter((f) => f.endsWith(".test.js"))).toEqual([]);
    // The CLI runs from dist/ without tsx (not installed in this project).
    const usage = await sh(path.join(project, "node_modules", ".bin", "nixfleet"), [], { cwd: project }).catch((e: Error) => e.message);
    expect(usage).toMatch(/usage: nixfleet render --stack <name>/);
  });

  it("require('nixfleet') from plain Node loads dist/ without tsx and creates no resource", async () => {
    const r = lastJson(await sh(process.execPath, ["no-side-effects.js", ED25519], { cwd: project }));
    expect(r.resolved).toBe(path.join(realpathSync(project), "node_modules", "nixfleet", "dist", "components", "index.js"));
    expect(r.onImport).toEqual([]);
    // The probe Fleet built afterwards is seen: the component, its host and both commands.
    expect(r.onConstruct).toEqual(expect.arrayContaining(["nixfleet:index:Fleet::probe", "nixfleet:index:Host::probe-a", "command:remote:Command::probe-a-deploy"]));
    expect(r.tsx).toEqual([]);
    expect(r.missing).toEqual([]);
  });

  it("a program that composes Fleet with an Output address converges the host through the real engine", async () => {
    fleet = await startFleet({ root: path.join(dir, "fleet"), basePort: BASE_PORT, hosts: [{ name: "vm", role: "server" }] });
    const host = fleet.hosts[0];
    const bin = toolchainBin();
    const pulumiDir = path.join(dir, "pulumi");
    await fs.mkdir(path.join(pulumiDir, "state"), { recursive: true });
    await fs.mkdir(path.join(pulumiDir, "work"), { recursive: true });
    const sim = {
      stack: "lab",
      address: "127.0.0.1",
      host: { name: host.name, port: host.port, hostKey: host.hostKey, checkout: host.checkout, stateDir: host.stateDir },
      privateKey: fleet.privateKey,
      bin: path.dirname(bin),
      workDir: path.join(pulumiDir, "work"),
      env: offlineEnv(pulumiDir, bin),
    };
    const before = await currentSystem(host);
    const program = (s: typeof sim) => sh(process.execPath, [path.join(project, "dist", "index.js")], { cwd: project, env: { ...process.env, NIXFLEET_SIM: JSON.stringify(s) } });
    // A bad value in the Output fails the update, naming the field, and touches nothing.
    const bad = await program({ ...sim, stack: "bad", address: "bad_host!" }).catch((e: Error) => e.message);
    expect(bad).toMatch(/invalid args of Fleet "lab":\s+hosts\[0\]\.address: "bad_host!" is not allowed; allowed: an RFC 1123 hostname/);
    expect(bad).not.toMatch(/"result":"succeeded"/);
    expect(await currentSystem(host)).toBe(before);
    const out = lastJson(await program(sim));
    expect(out.result).toBe("succeeded");
    const status = out.hosts.vm;
    expect(status).toMatchObject({ result: "success", role: "server", wave: 0 });
    expect(status.validatedPath).toMatch(/^\/nix\/store\/[0-9a-z]{32}-/);
    expect(status.goldenPath).toBe(status.validatedPath);
    // Converged: the host runs exactly the system that was validated.
    expect(await currentSystem(host)).toBe(status.validatedPath);
    expect(before).not.toBeNull();
  }, 900_000);
});
