// Issue 8 item 8: the harness (fleet/stack.ts) never puts the SSH private key on a command line.
// The REAL Pulumi CLI (toolchain/) runs behind a wrapper that records every argv it is given; the key
// must reach the stack's config (encrypted) without ever appearing in those argv.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { LocalWorkspace, PulumiCommand } from "@pulumi/pulumi/automation";
import { afterAll, describe, expect, it } from "vitest";
import { offlineEnv, parallelFor, setFleetConfig, toolchainBin } from "../../fleet/stack";

const dir = mkdtempSync(path.join(os.tmpdir(), "nixfleet-secret-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("setFleetConfig", () => {
  it("sets the key through stdin: it is in the stack's config, in no argv; PULUMI_PARALLEL fits the fleet", { timeout: 120_000 }, async () => {
    const bin = toolchainBin();
    const argvLog = path.join(dir, "argv.log");
    const root = path.join(dir, "cli");
    mkdirSync(path.join(root, "bin"), { recursive: true });
    writeFileSync(path.join(root, "bin", "pulumi"), `#!/bin/sh\nprintf '%s\\n' "$*" >> ${JSON.stringify(argvLog)}\nexec ${JSON.stringify(path.join(bin, "pulumi"))} "$@"\n`);
    chmodSync(path.join(root, "bin", "pulumi"), 0o755);
    mkdirSync(path.join(dir, "state"));
    mkdirSync(path.join(dir, "work"));
    const key = execFileSync("bash", ["-c", `ssh-keygen -q -t ed25519 -N '' -C '' -f ${dir}/id && cat ${dir}/id`], { encoding: "utf8" });
    const stack = await LocalWorkspace.createOrSelectStack(
      { stackName: "secret", projectName: "nixfleet", program: async () => ({}) },
      { workDir: path.join(dir, "work"), projectSettings: { name: "nixfleet", runtime: "nodejs" }, envVars: offlineEnv(dir, bin), pulumiCommand: await PulumiCommand.get({ root, skipVersionCheck: true }) },
    );
    const hosts = Array.from({ length: 30 }, (_, i) => ({ name: `h${i}` }));
    await setFleetConfig(stack, { "nixfleet:hosts": hosts }, key);

    const argv = readFileSync(argvLog, "utf8");
    expect(argv).toContain("config set --secret --stack secret nixfleet:sshPrivateKey");
    for (const line of key.split("\n").filter((l) => l.length > 0)) expect(argv).not.toContain(line);
    const stored = await stack.getConfig("nixfleet:sshPrivateKey");
    expect(stored).toMatchObject({ secret: true });
    // The CLI drops the final newline of a value read from stdin; a PEM key parses without it.
    expect(stored.value).toBe(key.trimEnd());
    expect(JSON.parse((await stack.getConfig("nixfleet:hosts")).value)).toEqual(hosts);
    expect(stack.workspace.envVars.PULUMI_PARALLEL).toBe(String(parallelFor(30)));
    expect(parallelFor(30)).toBe(94);
    expect(parallelFor(1)).toBe(8);
    expect(parallelFor(500)).toBe(256);
  });
});
