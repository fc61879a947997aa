// End-to-end check of the offline toolchain: the real Pulumi engine (CLI built by toolchain/build.sh) drives
// nixfleet's stand-in `pulumi-resource-command` through an Automation API inline program against a real OpenSSH
// server on a loopback port. No language host is involved (inline programs run in this process).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import { LocalWorkspace, PulumiCommand, type Stack } from "@pulumi/pulumi/automation";

const SSHD = "/usr/sbin/sshd";
const canRun = process.getuid?.() === 0 && fs.existsSync(SSHD);

interface Spec {
  create: string;
  triggers?: string[];
  hostKey?: string;
  stdin?: string;
  environment?: Record<string, string>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => { s.end(); resolve(true); });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`sshd did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!canRun)("toolchain: real engine + stand-in command provider over real sshd", () => {
  let tmp: string;
  let sshd: ChildProcess;
  let port: number;
  let clientKey: string;
  let hostPub: string;
  let otherPub: string;
  let marker: string;
  let stack: Stack;
  let spec: Spec;
  let binDir: string;
  let engineEnv: Record<string, string>;

  const runs = () => (fs.existsSync(marker) ? fs.readFileSync(marker, "utf8").trim().split("\n") : []);

  beforeAll(async () => {
    binDir = execFileSync(path.join(__dirname, "build.sh"), { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
      .trim().split("\n").pop()!;

    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "nixfleet-toolchain-e2e-"));
    const keygen = (name: string) => {
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path.join(tmp, name)]);
      return fs.readFileSync(path.join(tmp, `${name}.pub`), "utf8").trim();
    };
    hostPub = keygen("host");
    otherPub = keygen("other-host");
    fs.writeFileSync(path.join(tmp, "authorized_keys"), keygen("client") + "\n");
    clientKey = fs.readFileSync(path.join(tmp, "client"), "utf8");
    marker = path.join(tmp, "runs.log");

    port = await freePort();
    fs.writeFileSync(path.join(tmp, "sshd_config"), [
      `ListenAddress 127.0.0.1`,
      `HostKey ${path.join(tmp, "host")}`,
      `PidFile ${path.join(tmp, "sshd.pid")}`,
      `AuthorizedKeysFile ${path.join(tmp, "authorized_keys")}`,
      `PermitRootLogin prohibit-password`,
      `PubkeyAuthentication yes`,
      `PasswordAuthentication no`,
      `KbdInteractiveAuthentication no`,
      `UsePAM no`,
      `StrictModes no`,
      `AcceptEnv NIXFLEET_E2E_*`,
      "",
    ].join("\n"));
    fs.mkdirSync("/run/sshd", { recursive: true });
    sshd = spawn(SSHD, ["-D", "-e", "-f", path.join(tmp, "sshd_config"), "-p", String(port)], { stdio: ["ignore", "ignore", "pipe"] });
    let sshdLog = "";
    sshd.stderr!.on("data", (d) => { sshdLog += d; });
    await waitForPort(port, 5000).catch((e) => { throw new Error(`${e.message}\n${sshdLog}`); });

    const program = async () => {
      const cmd = new command.remote.Command("probe", {
        connection: {
          host: "127.0.0.1",
          port,
          privateKey: pulumi.secret(clientKey),
          hostKey: spec.hostKey,
          dialErrorLimit: 2,
        },
        create: spec.create,
        delete: `echo delete >> ${marker}`,
        triggers: spec.triggers,
        stdin: spec.stdin,
        environment: spec.environment,
      });
      return { stdout: cmd.stdout, stderr: cmd.stderr };
    };
    engineEnv = {
      PULUMI_BACKEND_URL: `file://${tmp}`,
      PULUMI_CONFIG_PASSPHRASE: "e2e",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      PULUMI_HOME: path.join(tmp, "pulumi-home"),
    };
    stack = await LocalWorkspace.createOrSelectStack(
      { stackName: "e2e", projectName: "nixfleet-toolchain-e2e", program },
      {
        pulumiCommand: await PulumiCommand.get({ root: path.dirname(binDir) }),
        workDir: tmp,
        envVars: engineEnv,
      },
    );
  });

  afterAll(async () => {
    if (stack) await stack.destroy().catch(() => undefined);
    sshd?.kill();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("creates: runs the command over SSH (with stdin and AcceptEnv'd environment) and returns its output", async () => {
    spec = {
      create: `echo create >> ${marker}; read line; echo "got:$line env:$NIXFLEET_E2E_X"; echo warn >&2`,
      stdin: "hello\n",
      environment: { NIXFLEET_E2E_X: "42" },
      hostKey: hostPub,
    };
    const res = await stack.up();
    expect(res.summary.resourceChanges).toMatchObject({ create: 2 });
    expect(res.outputs.stdout.value).toBe("got:hello env:42");
    expect(res.outputs.stderr.value).toBe("warn");
    expect(runs()).toEqual(["create"]);
  });

  it("runs nothing when nothing changed", async () => {
    const res = await stack.up();
    expect(res.summary.resourceChanges).toEqual({ same: 2 });
    expect(runs()).toEqual(["create"]);
  });

  it("keeps the secret connection (privateKey) encrypted in the state", async () => {
    // Not stack.exportStack(): the Automation API runs `pulumi stack export --show-secrets`.
    const exported = execFileSync(path.join(binDir, "pulumi"), ["stack", "export", "--stack", "e2e", "--cwd", tmp], {
      encoding: "utf8",
      env: { ...process.env, ...engineEnv },
    });
    const onDisk = fs.readdirSync(path.join(tmp, ".pulumi", "stacks"), { recursive: true, encoding: "utf8" })
      .filter((f) => f.endsWith(".json"))
      .map((f) => fs.readFileSync(path.join(tmp, ".pulumi", "stacks", f), "utf8"));
    expect(onDisk.length).toBeGreaterThan(0);
    for (const text of [exported, ...onDisk]) {
      expect(text).not.toContain("PRIVATE KEY");
      expect(text).not.toContain(clientKey.split("\n")[1]);
    }
    const res = JSON.parse(exported).deployment.resources.find((r: { type: string }) => r.type === "command:remote:Command");
    expect(res.inputs.connection).toHaveProperty("ciphertext");
    expect(res.outputs.connection).toHaveProperty("ciphertext");
    expect(res.outputs.stdout).toBe("got:hello env:42"); // outputs derived from non-secret inputs stay plain
  });

  it("updates in place when `create` changes (no delete), with a property diff in preview", async () => {
    spec = { ...spec, create: `echo update >> ${marker}; echo v2` };
    const pre = await stack.preview({ diff: true });
    expect(pre.changeSummary).toMatchObject({ update: 1 });
    expect(pre.stdout).toMatch(/~ create:/);
    const res = await stack.up();
    expect(res.summary.resourceChanges).toMatchObject({ update: 1 });
    expect(res.outputs.stdout.value).toBe("v2");
    expect(runs()).toEqual(["create", "update"]);
  });

  it("replaces when `triggers` change: create of the new, then delete of the old", async () => {
    spec = { ...spec, triggers: ["rev-2"] };
    const res = await stack.up();
    expect(res.summary.resourceChanges).toMatchObject({ replace: 1 });
    expect(runs()).toEqual(["create", "update", "update", "delete"]);
  });

  it("fails with a clear error on a wrong hostKey, and runs nothing", async () => {
    spec = { ...spec, hostKey: otherPub, create: `echo never >> ${marker}` };
    await expect(stack.up()).rejects.toThrow(/host key verification failed for 127\.0\.0\.1:\d+/);
    expect(runs()).toEqual(["create", "update", "update", "delete"]);
  });

  it("fails the up on a non-zero exit, reporting status and stderr; the next up retries", async () => {
    spec = { ...spec, hostKey: hostPub, create: `echo fail >> ${marker}; echo boom >&2; exit 3` };
    await expect(stack.up()).rejects.toThrow(/Process exited with status 3[\s\S]*boom/);
    spec = { ...spec, create: `echo fixed >> ${marker}; echo ok` };
    const res = await stack.up();
    expect(res.outputs.stdout.value).toBe("ok");
    expect(runs().slice(-2)).toEqual(["fail", "fixed"]);
  });
});
