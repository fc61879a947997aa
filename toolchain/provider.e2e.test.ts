// End-to-end check of the offline toolchain: the real Pulumi engine (CLI built by toolchain/build.sh) drives the
// command provider through an Automation API inline program against a real OpenSSH server on a loopback port. No
// language host is involved (inline programs run in this process).
//
// By default the provider is nixfleet's stand-in. With NIXFLEET_COMMAND_PROVIDER=<real binary> (see
// toolchain/README.md) the same tests run against the real pulumi-resource-command; the two tests that would hang
// the real one for ever (a >= 64 KiB output line, a host that never speaks SSH) are skipped then.
// NIXFLEET_E2E_PORTS="lo-hi" confines every listener to a port range (shared machines).
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
const external = !!process.env.NIXFLEET_COMMAND_PROVIDER; // the real provider: skip what would hang it for ever

interface Spec {
  create: string;
  update?: string;
  delete?: string;
  triggers?: string[];
  hostKey?: string;
  stdin?: string;
  environment?: Record<string, string>;
  port?: number;
  dialErrorLimit?: number;
  perDialTimeout?: number;
  noKey?: boolean; // no privateKey: authenticate through an agent
  agentSocketPath?: string;
  logging?: "stdout" | "stderr" | "stdoutAndStderr" | "none";
  addPreviousOutputInEnv?: boolean;
  viaProxy?: boolean; // connection.proxy: jump through the same sshd
}

const portRange = (process.env.NIXFLEET_E2E_PORTS ?? "").match(/^(\d+)-(\d+)$/);
let nextPort = portRange ? Number(portRange[1]) : 0;

async function freePort(): Promise<number> {
  const tryListen = (p: number) => new Promise<number | undefined>((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(undefined));
    srv.listen(p, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
  if (!portRange) return (await tryListen(0))!;
  for (; nextPort <= Number(portRange[2]); nextPort++) {
    if ((await tryListen(nextPort)) !== undefined) return nextPort++;
  }
  throw new Error(`no free port left in NIXFLEET_E2E_PORTS=${process.env.NIXFLEET_E2E_PORTS}`);
}

async function waitFor(what: string, ok: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const listening = (port: number) => new Promise<boolean>((resolve) => {
  const s = net.connect(port, "127.0.0.1", () => { s.end(); resolve(true); });
  s.once("error", () => resolve(false));
});

// `pulumi stack export --show-secrets` shows a secret as {<sig>: …, plaintext: "<JSON>"}.
function reveal(v: unknown): unknown {
  if (v && typeof v === "object" && "plaintext" in v) return JSON.parse((v as { plaintext: string }).plaintext);
  return v;
}

describe.skipIf(!canRun)("toolchain: real engine + command provider over real sshd", () => {
  let tmp: string;
  let sshd: ChildProcess;
  let sshdLog = "";
  let agent: ChildProcess | undefined;
  let hung: net.Server | undefined;
  let port: number;
  let clientKey: string;
  let hostPub: string;
  let rsaPub: string;
  let otherPub: string;
  let marker: string;
  let stack: Stack;
  let spec: Spec;
  let binDir: string;
  let engineEnv: Record<string, string>;

  const runs = () => (fs.existsSync(marker) ? fs.readFileSync(marker, "utf8").trim().split("\n") : []);
  const sshdConnections = () => sshdLog.split("\n").filter((l) => l.startsWith("Connection from 127.0.0.1")).length;
  const probeState = async () => {
    const dep = (await stack.exportStack()).deployment as { resources: Record<string, unknown>[] };
    return dep.resources.find((r) => r.type === "command:remote:Command") as
      { id: string; inputs: Record<string, unknown>; outputs: Record<string, unknown> };
  };

  beforeAll(async () => {
    binDir = execFileSync(path.join(__dirname, "build.sh"), { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
      .trim().split("\n").pop()!;

    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "nixfleet-toolchain-e2e-"));
    const keygen = (name: string, type = "ed25519") => {
      execFileSync("ssh-keygen", ["-q", "-t", type, "-N", "", "-C", name, "-f", path.join(tmp, name)]);
      return fs.readFileSync(path.join(tmp, `${name}.pub`), "utf8").trim();
    };
    hostPub = keygen("host");
    rsaPub = keygen("host-rsa", "rsa");
    otherPub = keygen("other-host");
    fs.writeFileSync(path.join(tmp, "authorized_keys"), keygen("client") + "\n");
    clientKey = fs.readFileSync(path.join(tmp, "client"), "utf8");
    marker = path.join(tmp, "runs.log");

    port = await freePort();
    fs.writeFileSync(path.join(tmp, "sshd_config"), [
      `ListenAddress 127.0.0.1`,
      `HostKey ${path.join(tmp, "host")}`,
      `HostKey ${path.join(tmp, "host-rsa")}`, // OpenSSH 9.2: signs with rsa-sha2-256/512 only, never SHA-1 ssh-rsa
      `PidFile ${path.join(tmp, "sshd.pid")}`,
      `AuthorizedKeysFile ${path.join(tmp, "authorized_keys")}`,
      `PermitRootLogin prohibit-password`,
      `PubkeyAuthentication yes`,
      `PasswordAuthentication no`,
      `KbdInteractiveAuthentication no`,
      `UsePAM no`,
      `StrictModes no`,
      `LogLevel VERBOSE`, // logs "Connection from …" per TCP connection: the tests count dial attempts with it
      `AcceptEnv NIXFLEET_E2E_*`, // and nothing else: PULUMI_COMMAND_STDOUT/STDERR are refused, as on a stock host
      "",
    ].join("\n"));
    fs.mkdirSync("/run/sshd", { recursive: true });
    sshd = spawn(SSHD, ["-D", "-e", "-f", path.join(tmp, "sshd_config"), "-p", String(port)], { stdio: ["ignore", "ignore", "pipe"] });
    sshd.stderr!.on("data", (d) => { sshdLog += d; });
    await waitFor(`sshd on ${port}\n${sshdLog}`, () => listening(port));

    const program = async () => {
      const cmd = new command.remote.Command("probe", {
        connection: {
          host: "127.0.0.1",
          port: spec.port ?? port,
          privateKey: spec.noKey ? undefined : pulumi.secret(clientKey),
          hostKey: spec.hostKey,
          dialErrorLimit: spec.dialErrorLimit ?? 2,
          perDialTimeout: spec.perDialTimeout,
          agentSocketPath: spec.agentSocketPath,
          proxy: spec.viaProxy ? { host: "127.0.0.1", port, privateKey: pulumi.secret(clientKey), dialErrorLimit: 0 } : undefined,
        },
        create: spec.create,
        update: spec.update,
        delete: spec.delete ?? `echo delete >> ${marker}`,
        triggers: spec.triggers,
        stdin: spec.stdin,
        environment: spec.environment,
        logging: spec.logging,
        addPreviousOutputInEnv: spec.addPreviousOutputInEnv,
      });
      return { stdout: cmd.stdout, stderr: cmd.stderr };
    };
    engineEnv = {
      PULUMI_BACKEND_URL: `file://${tmp}`,
      PULUMI_CONFIG_PASSPHRASE: "e2e",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      PULUMI_HOME: path.join(tmp, "pulumi-home"),
      // The provider inherits the engine's environment and dials SSH_AUTH_SOCK when it is non-empty; an empty
      // value is "no agent". The agent tests set it on purpose.
      SSH_AUTH_SOCK: "",
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
    try {
      if (stack) {
        spec = { ...spec, port, hostKey: hostPub, noKey: false, agentSocketPath: undefined };
        stack.workspace.envVars.SSH_AUTH_SOCK = "";
        await stack.destroy().catch(() => undefined);
      }
    } finally { // even if destroy fails or hangs: no sshd, agent or temp dir outlives the test
      agent?.kill();
      hung?.close();
      sshd?.kill();
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    }
  }, 120_000);

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

  it("names the resource <name><8 hex> and fills connection defaults into the state (inputs and outputs)", async () => {
    const r = await probeState();
    expect(r.id).toMatch(/^probe[0-9a-f]{8}$/);
    for (const props of [r.inputs, r.outputs]) {
      expect(reveal(props.connection)).toMatchObject({ user: "root", port, dialErrorLimit: 2, perDialTimeout: 15 });
    }
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

  it("updates in place when `create` changes, warning that the server refused PULUMI_COMMAND_STDOUT/STDERR", async () => {
    spec = { ...spec, create: `echo update >> ${marker}; echo v2; echo "prev:$PULUMI_COMMAND_STDOUT" >&2` };
    const pre = await stack.preview({ diff: true });
    expect(pre.changeSummary).toMatchObject({ update: 1 });
    expect(pre.stdout).toMatch(/~ create:/);
    const res = await stack.up();
    expect(res.summary.resourceChanges).toMatchObject({ update: 1 });
    expect(res.outputs.stdout.value).toBe("v2");
    expect(res.outputs.stderr.value).toBe("prev:"); // refused by sshd (no AcceptEnv for it)
    expect(res.stdout).toContain("warning: Unable to set 'PULUMI_COMMAND_STDOUT'. This only works if your SSH server");
    expect(res.stdout).toContain("warning: Unable to set 'PULUMI_COMMAND_STDERR'.");
    expect(runs()).toEqual(["create", "update"]);
  });

  it("does not offer PULUMI_COMMAND_* (no warning) with addPreviousOutputInEnv: false", async () => {
    spec = { ...spec, create: `echo update >> ${marker}; echo v3`, addPreviousOutputInEnv: false };
    const res = await stack.up();
    expect(res.summary.resourceChanges).toMatchObject({ update: 1 });
    expect(res.outputs.stdout.value).toBe("v3");
    expect(res.stdout).not.toContain("Unable to set");
    expect(runs()).toEqual(["create", "update", "update"]);
  });

  it("fails the command when the server refuses a variable of `environment` (no AcceptEnv)", async () => {
    spec = { ...spec, environment: { NOT_ACCEPTED: "1" }, create: `echo never >> ${marker}` };
    await expect(stack.up()).rejects.toThrow(/could not set environment variable "NOT_ACCEPTED"/);
    expect(runs()).toEqual(["create", "update", "update"]);
    spec = { ...spec, environment: undefined, create: `echo update >> ${marker}; echo v3` };
  });

  it("replaces when `triggers` change: create of the new, then delete of the old", async () => {
    spec = { ...spec, triggers: ["rev-2"] };
    const res = await stack.up();
    expect(res.summary.resourceChanges).toMatchObject({ replace: 1 });
    expect(runs()).toEqual(["create", "update", "update", "update", "delete"]);
  });

  it("retries a wrong hostKey dialErrorLimit times, then fails with the real message; runs nothing", async () => {
    spec = { ...spec, hostKey: otherPub, create: `echo never >> ${marker}` };
    const before = sshdConnections();
    const err = await stack.up().then(() => undefined, (e: Error) => e);
    expect(err?.message).toMatch(/after 2 failed attempts: ssh: handshake failed: ssh: host key mismatch/);
    expect(err?.message).toMatch(/Dial 1\/2 failed: retrying[\s\S]*Dial 2\/2 failed: retrying/);
    expect(sshdConnections() - before).toBe(3); // dialErrorLimit + 1 attempts
    expect(runs()).toEqual(["create", "update", "update", "update", "delete"]);
  });

  it("refuses a pinned RSA host key: only SHA-1 ssh-rsa is offered, which OpenSSH >= 8.8 does not sign with", async () => {
    spec = { ...spec, hostKey: rsaPub, dialErrorLimit: 0 };
    await expect(stack.up()).rejects.toThrow(
      /after 0 failed attempts: ssh: handshake failed: ssh: no common algorithm for host key; we offered: \[ssh-rsa\]/);
    expect(runs()).toEqual(["create", "update", "update", "update", "delete"]);
  });

  it("fails the up on a non-zero exit, reporting status, command and output; the next up retries", async () => {
    spec = { ...spec, hostKey: hostPub, dialErrorLimit: 2, create: `echo fail >> ${marker}; echo boom >&2; exit 3` };
    await expect(stack.up()).rejects.toThrow(/Process exited with status 3: running "echo fail >> [^"]*; exit 3":\s+boom/);
    spec = { ...spec, create: `echo fixed >> ${marker}; echo ok` };
    const res = await stack.up();
    expect(res.outputs.stdout.value).toBe("ok");
    expect(runs().slice(-2)).toEqual(["fail", "fixed"]);
  });

  it("cancelling an up (SIGINT to the CLI) does not stop the running command: the up waits, its result is kept", async () => {
    spec = { ...spec, create: `echo start >> ${marker}; sleep 3; echo end >> ${marker}; echo finished` };
    const ac = new AbortController();
    const up = stack.up({ signal: ac.signal }).catch((e: Error) => e); // the engine reports the cancellation
    await waitFor("the command to start on the host", () => runs().at(-1) === "start", 30_000);
    ac.abort();
    await up;
    expect(runs().slice(-2)).toEqual(["start", "end"]); // already there when the up returns
    expect((await probeState()).outputs.stdout).toBe("finished");
  });

  it("dials with Go's default TCP keep-alive (first probe after 15 s idle), seen from the host with ss", async () => {
    // sshd runs on this machine, so the command can look at the provider's end of its own connection.
    spec = { ...spec, create: `ss -tnoH state established '( dport = :${port} )'` };
    const out = String((await stack.up()).outputs.stdout.value);
    const timers = [...out.matchAll(/timer:\(keepalive,(\d+)(ms|sec)/g)].map((m) => Number(m[1]) * (m[2] === "ms" ? 0.001 : 1));
    expect(timers.length).toBeGreaterThan(0);
    for (const t of timers) expect(t).toBeLessThanOrEqual(15);
  });

  it("keeps each command's connection open until the provider exits (seen by the next command of the same up)", async () => {
    const count = path.join(tmp, "open-connections");
    // Up 1 stores a delete command that counts the provider's established connections to sshd; up 2 replaces the
    // resource: create of the new one, then that delete of the old one, in the same provider process.
    spec = { ...spec, delete: `ss -tnH state established '( dport = :${port} )' | wc -l > ${count}`, create: "echo a" };
    await stack.up();
    spec = { ...spec, delete: undefined, triggers: ["open-connections"], create: "echo b" };
    expect((await stack.up()).summary.resourceChanges).toMatchObject({ replace: 1 });
    expect(fs.readFileSync(count, "utf8").trim()).toBe("2"); // the create's connection, still open, and its own
  });

  it("connects through connection.proxy (a jump host: here the same sshd)", async () => {
    spec = { ...spec, viaProxy: true, create: `echo proxied >> ${marker}; echo "from:\${SSH_CLIENT%% *}"` };
    const res = await stack.up();
    expect(res.outputs.stdout.value).toBe("from:127.0.0.1");
    expect(reveal((await probeState()).inputs.connection)).toMatchObject({ proxy: { user: "root", perDialTimeout: 15 } });
    expect(runs().at(-1)).toBe("proxied");
    spec = { ...spec, viaProxy: false };
  });

  it("logs an output line of 65535 bytes, and of any length with logging: none", async () => {
    const line = (n: number) => `head -c ${n} /dev/zero | tr '\\0' x; echo`;
    spec = { ...spec, create: `${line(65535)}; echo ok` };
    expect((await stack.up()).outputs.stdout.value).toMatch(/^x{65535}\nok$/);
    spec = { ...spec, create: `${line(200000)}; echo ok`, logging: "none" };
    expect((await stack.up()).outputs.stdout.value).toMatch(/^x{200000}\nok$/);
  });

  it.skipIf(external)("fails loudly on a logged output line of 64 KiB (the real provider hangs for ever)", async () => {
    spec = { ...spec, create: `head -c 65536 /dev/zero | tr '\\0' x; echo; echo ok`, logging: "stdoutAndStderr" };
    await expect(stack.up()).rejects.toThrow(/stand-in: output line over 64 KiB; the real provider would hang here/);
    spec = { ...spec, create: `echo fixed >> ${marker}; echo ok` };
    await stack.up();
  });

  it("fails every command while SSH_AUTH_SOCK names a dead agent socket, even with a privateKey; not retried", async () => {
    const stale = path.join(tmp, "stale-agent.sock");
    stack.workspace.envVars.SSH_AUTH_SOCK = stale; // the engine (and so the provider) gets it on the next run
    spec = { ...spec, create: `echo never >> ${marker}`, dialErrorLimit: 5 };
    const before = sshdConnections();
    try {
      await expect(stack.up()).rejects.toThrow(new RegExp(`dial unix ${stale}: connect: no such file or directory`));
    } finally {
      stack.workspace.envVars.SSH_AUTH_SOCK = "";
    }
    expect(sshdConnections()).toBe(before); // it fails before dialing the host
    expect(runs()).not.toContain("never");
  });

  it("authenticates through an agent: connection.agentSocketPath, no privateKey", async () => {
    const sock = path.join(tmp, "agent.sock");
    agent = spawn("ssh-agent", ["-D", "-a", sock], { stdio: "ignore" });
    await waitFor("ssh-agent", () => fs.existsSync(sock));
    execFileSync("ssh-add", ["-q", path.join(tmp, "client")], { env: { ...process.env, SSH_AUTH_SOCK: sock } });
    spec = { ...spec, noKey: true, agentSocketPath: sock, dialErrorLimit: 0, create: `echo agent >> ${marker}; echo via-agent` };
    expect((await stack.up()).outputs.stdout.value).toBe("via-agent");
    expect(runs().at(-1)).toBe("agent");
  });

  it.skipIf(external)("a host that accepts TCP but never speaks SSH: perDialTimeout does not bound it; the stand-in's watchdog fails it loudly", async () => {
    hung = net.createServer(() => { /* accept, never answer */ });
    const hungPort = await freePort();
    await new Promise<void>((resolve) => hung!.listen(hungPort, "127.0.0.1", resolve));
    stack.workspace.envVars.NIXFLEET_STANDIN_HANDSHAKE_WATCHDOG = "3";
    spec = { ...spec, port: hungPort, perDialTimeout: 1, create: `echo never >> ${marker}` };
    try {
      await expect(stack.up()).rejects.toThrow(
        new RegExp(`stand-in: SSH handshake with 127\\.0\\.0\\.1:${hungPort} hung for 3s; the real provider would wait forever`));
    } finally {
      delete stack.workspace.envVars.NIXFLEET_STANDIN_HANDSHAKE_WATCHDOG;
    }
    expect(runs()).not.toContain("never");
  });
});
