/**
 * `nixfleet status` against the SIMULATED fleet (fleet/README.md): real sshd per host, the real
 * OpenSSH client, real store paths of each host's installed system. The status.json records are
 * written here over ssh, in the contract's format (docs/rollout.md section 4), as the script
 * writes them (temp file, 0644, mv): the script is rewritten in parallel, so this test does not run it.
 *
 * Ports 2500–2549 (this file's range); the fleet lives in a temp root deleted afterwards.
 * The CLI runs as a user runs it: `node bin/nixfleet.js status …` in a child process.
 */
import { execFile } from "node:child_process";
import { createServer, type Socket } from "node:net";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { currentSystem, healHost, hostExec, journal, partitionHost, sshExec, startFleet, type SimFleet, type FleetHost } from "../../fleet/fleet";

const REPO = resolve(__dirname, "..", "..");
const CLI = join(REPO, "bin", "nixfleet.js");

const tmp = mkdtempSync(join(tmpdir(), "nixfleet-status-test-"));
let fleet: SimFleet;
let alpha: FleetHost; // healthy
let beta: FleetHost; // rolled back, with a hostile message
let gamma: FleetHost; // no record at first

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<Run> {
  return new Promise((done, fail) => {
    execFile(process.execPath, [CLI, "status", ...args], { cwd: REPO, encoding: "utf8", timeout: 120_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return fail(err);
      done({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/** A stack file naming `hosts` with the fleet's connection facts; `edit` changes a host's entry. */
function writeStack(name: string, hosts: FleetHost[], edit: (h: FleetHost, entry: Record<string, unknown>) => void = () => {}): string[] {
  const entries = hosts.map((h) => {
    const entry: Record<string, unknown> = {
      name: h.name, address: h.address, port: h.port, user: h.user, hostKey: h.hostKey, role: h.role, configPath: h.checkout, stateDir: h.stateDir,
    };
    edit(h, entry);
    return entry;
  });
  writeFileSync(join(tmp, `Pulumi.${name}.yaml`), stringify({ config: { "nixfleet:hosts": entries } }));
  return ["--stack", name, "--stacks-dir", tmp, "--identity", fleet.clientKeyPath];
}

/** Writes status.json on the host as the script does: the state dir (0755), temp file in it, 0644, mv. */
async function writeRecord(h: FleetHost, text: string): Promise<void> {
  const dir = `'${h.stateDir}'`;
  const r = await sshExec(fleet, h, `mkdir -p -m 0755 -- ${dir} && t=$(mktemp -- ${dir}/status.json.XXXXXX) && cat >"$t" && chmod 0644 -- "$t" && mv -f -- "$t" ${dir}/status.json`, { input: text });
  if (r.code !== 0) throw new Error(`writing ${h.name}'s status.json failed: ${r.stderr}`);
}

function record(h: FleetHost, system: string, fields: Record<string, unknown>): string {
  return `${JSON.stringify({
    host: h.name, mode: "push", rollout: "0123456789abcdef", lastRun: "2026-11-25T20:00:00Z", step: "activate", phase: "done",
    result: "success", message: `upgrade PASSED: running ${system}`, validatedPath: system, runningSystem: system,
    profileSystem: system, bootedSystem: system, goldenPath: system, needsReboot: false, warnings: [], ...fields,
  })}\n`;
}

const HOSTILE = "health gate: unit web.service failed \u001b[2J\u001b[31m$(touch /tmp/nixfleet-pwned) `id`";
const parseJson = (r: Run) => JSON.parse(r.stdout) as { host: string; state: string; reason: string | null; record: Record<string, unknown> | null; notes: string[] }[];
const sshdLog = async (h: FleetHost) => (await journal(h, "sshd", { messagesOnly: true })).join("\n");
/** Stops or starts the host's sshd.service through its console (SSH is what goes away). */
async function sshd(h: FleetHost, verb: "stop" | "start"): Promise<void> {
  const r = await hostExec(h, ["systemctl", verb, "sshd.service"]);
  if (r.code !== 0) throw new Error(`systemctl ${verb} sshd.service on ${h.name}: ${r.stderr}`);
}

beforeAll(async () => {
  fleet = await startFleet({
    root: join(tmp, "fleet"),
    basePort: 2500,
    hosts: [
      { name: "alpha", role: "desktop" },
      { name: "beta", role: "server" },
      { name: "gamma", role: "pi" },
    ],
  });
  [alpha, beta, gamma] = fleet.hosts;
  for (const h of fleet.hosts) expect(h.port, "this file's sshd port range is 2500–2549").toBeLessThan(2550);
  const a = (await currentSystem(alpha))!;
  const b = (await currentSystem(beta))!;
  await writeRecord(alpha, record(alpha, a, { mode: "timer", needsReboot: true }));
  // Rolled back: still runs (and boots) its old system; the validated one was never made golden.
  await writeRecord(beta, record(beta, b, {
    result: "rolled-back", phase: "health", validatedPath: "/nix/store/0000000000000000000000000000000a-nixos-system-beta-new",
    message: `ROLLED BACK: ${HOSTILE} (re-activated the previous system; profile and boot entry untouched)`,
  }));
});

afterAll(async () => {
  if (fleet) {
    await healHost(fleet, alpha).catch(() => {});
    await fleet.stop();
  }
  rmSync(tmp, { recursive: true, force: true });
});

describe("nixfleet status on the simulated fleet", () => {
  it("table: healthy, rolled-back and no-record hosts; exit 1 because one is failing", async () => {
    const r = await cli(writeStack("all", [alpha, beta, gamma]));
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^nixfleet status: 3 hosts: 1 ok, 1 failing, 1 no-record$/m);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^HOST\s+ROLE\s+RUNNING\s+GOLDEN \/ VALIDATED\s+LAST RUN\s+RESULT\s+FAILED STEP: WHY\s+REBOOT$/);
    const a = lines.find((l) => l.startsWith("alpha "))!;
    const hashOf = (p: string) => p.slice("/nix/store/".length, "/nix/store/".length + 7);
    expect(a).toContain(hashOf((await currentSystem(alpha))!));
    expect(a).toMatch(/desktop .*2026-11-25T20:00:00Z\s+success \(timer\)\s+-\s+yes$/);
    const b = lines.find((l) => l.startsWith("beta "))!;
    expect(b).toMatch(/rolled-back \(push\)\s+health: ROLLED BACK: health gate: unit web\.service failed/);
    expect(b).toContain(" / 0000000…-nixos-system-beta-new"); // golden / validated: the validated system differs from golden
    expect(b).toMatch(/no$/);
    const g = lines.find((l) => l.startsWith("gamma "))!;
    expect(g).toMatch(/no record\s+no record yet: /);
    if (process.env.SHOW_TABLE) console.log(r.stdout + r.stderr);
    // The record is data: its escape sequences never reach the terminal, its $(…) never runs.
    expect(r.stdout).not.toContain("\u001b");
    expect(r.stdout).toContain("\\u001b[2J");
    expect(() => readFileSync("/tmp/nixfleet-pwned")).toThrow();
  });

  it("--json: the records, tolerant of an older record without the new fields", async () => {
    // gamma: a record as the old script wrote it (currentSystem, no phase/mode/needsReboot).
    await writeRecord(gamma, `${JSON.stringify({ host: "gamma", lastRun: "2026-11-01T04:00:00Z", step: "switch", result: "success", validatedPath: null, currentSystem: "/nix/store/1111111111111111111111111111111g-nixos-system-gamma", message: "ok" })}\n`);
    try {
      const r = await cli([...writeStack("all", [alpha, beta, gamma]), "--json"]);
      expect(r.code, r.stderr).toBe(1);
      const [a, b, g] = parseJson(r);
      expect(a).toMatchObject({ host: "alpha", state: "ok", reason: null });
      expect(a.record).toMatchObject({ result: "success", mode: "timer", needsReboot: true, runningSystem: await currentSystem(alpha) });
      expect(b).toMatchObject({ host: "beta", state: "failing" });
      expect(b.reason).toContain("\u001b[2J"); // exact data in JSON (escaped by JSON itself)
      expect(b.record).toMatchObject({ phase: "health", result: "rolled-back" });
      expect(g).toMatchObject({ host: "gamma", state: "ok" });
      expect(g.record).toEqual({ host: "gamma", lastRun: "2026-11-01T04:00:00Z", step: "switch", result: "success", message: "ok", runningSystem: "/nix/store/1111111111111111111111111111111g-nixos-system-gamma" });
    } finally {
      await sshExec(fleet, gamma, `rm -f -- '${gamma.stateDir}/status.json'`);
    }
  });

  it("all hosts healthy or not yet upgraded: exit 0", async () => {
    const r = await cli(writeStack("ok", [alpha, gamma]));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^alpha .*success/m);
    expect(r.stdout).toMatch(/^gamma .*no record/m);
  });

  it("a host whose sshd is down: unreachable with ssh's reason, the others still read; exit 1", async () => {
    await sshd(gamma, "stop");
    try {
      const r = await cli([...writeStack("ok", [alpha, gamma]), "--json"]);
      expect(r.code).toBe(1);
      const [a, g] = parseJson(r);
      expect(a.state).toBe("ok");
      expect(g).toMatchObject({ host: "gamma", state: "unreachable", record: null });
      expect(g.reason).toMatch(new RegExp(`ssh to root@127\\.0\\.0\\.1:${gamma.port} failed: .*Connection refused`));
    } finally {
      await sshd(gamma, "start");
    }
  });

  it("a partitioned host (packets dropped): unreachable within the bound, table says why", async () => {
    await partitionHost(fleet, alpha);
    try {
      const r = await cli([...writeStack("ok", [alpha, gamma]), "--timeout", "3"]);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/^alpha .*UNREACHABLE .*(timed out|no answer)/m);
      expect(r.stderr).toMatch(/error: alpha: .*(timed out|no answer)/);
      expect(r.stdout).toMatch(/^gamma .*no record/m);
    } finally {
      await healHost(fleet, alpha);
    }
  });

  it("host key mismatch: loud, names the config key, nothing read (no session on the host)", async () => {
    const before = ((await sshdLog(alpha)).match(/Accepted publickey/g) ?? []).length;
    const r = await cli([...writeStack("mismatch", [alpha], (h, e) => (e.hostKey = beta.hostKey)), "--json"]);
    expect(r.code).toBe(1);
    const [a] = parseJson(r);
    expect(a).toMatchObject({ host: "alpha", state: "unreachable", record: null });
    expect(a.reason).toMatch(/host key mismatch .*nixfleet:hosts\[0\]\.hostKey/);
    expect(((await sshdLog(alpha)).match(/Accepted publickey/g) ?? []).length).toBe(before);
  });

  it("no pinned host key: refused, naming the key to set; --insecure-host-key reads it with a warning", async () => {
    const args = writeStack("unpinned", [alpha], (h, e) => delete e.hostKey);
    const refused = await cli(args);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/error: alpha: not contacted: no pinned host key; set nixfleet:hosts\[0\]\.hostKey/);
    const insecure = await cli([...args, "--insecure-host-key"]);
    expect(insecure.code, insecure.stderr).toBe(0);
    expect(insecure.stdout).toMatch(/^alpha .*success/m);
    expect(insecure.stderr).toMatch(/warning: alpha: host key NOT checked/);
  });

  it("a host that answers TCP and the SSH banner, then nothing: killed at the overall bound, unreachable", async () => {
    // ssh's ConnectTimeout covers the TCP connect and the banner only; a key exchange that never
    // proceeds is bounded by status's own per-host timeout. Port 2549: the last of this file's range.
    const sockets: Socket[] = [];
    const mute = createServer((s) => {
      sockets.push(s);
      s.on("error", () => {});
      s.write("SSH-2.0-OpenSSH_9.2p1 mute\r\n");
    });
    await new Promise<void>((ok, ko) => mute.once("error", ko).listen(2549, "127.0.0.1", () => ok()));
    try {
      const r = await cli([...writeStack("mute", [alpha], (h, e) => (e.port = 2549)), "--timeout", "2", "--json"]);
      expect(r.code).toBe(1);
      const [a] = parseJson(r);
      expect(a).toMatchObject({ host: "alpha", state: "unreachable", record: null });
      expect(a.reason).toBe("no answer from root@127.0.0.1:2549 within 2s (ssh killed)");
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((ok) => mute.close(ok));
    }
  });

  it("a failed validation (result failed): failing, step and why in the table, exit 1", async () => {
    const sys = (await currentSystem(gamma))!;
    await writeRecord(gamma, record(gamma, sys, {
      mode: "timer", step: "run", phase: "validate", result: "failed", validatedPath: null, goldenPath: null,
      message: "validate FAILED: nix build exited 1: error: undefined variable 'pkgs'",
    }));
    try {
      const r = await cli(writeStack("ok", [alpha, gamma]));
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/^gamma .*failed \(timer\)\s+validate: validate FAILED: nix build exited 1: error: undefined variable 'pkgs'\s+no$/m);
      expect(r.stderr).toMatch(/^nixfleet status: 2 hosts: 1 ok, 1 failing$/m);
    } finally {
      await sshExec(fleet, gamma, `rm -f -- '${gamma.stateDir}/status.json'`);
    }
  });

  it("a record naming another host: read, with a warning", async () => {
    await writeRecord(gamma, `${JSON.stringify({ host: "alpha", result: "success" })}\n`);
    try {
      const r = await cli(writeStack("ok", [gamma]));
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('warning: gamma: the record names host "alpha", not gamma');
    } finally {
      await sshExec(fleet, gamma, `rm -f -- '${gamma.stateDir}/status.json'`);
    }
  });

  it("a record that is not JSON, or has an unknown result: failing (exit 1), says why", async () => {
    await writeRecord(gamma, "{ not json\n");
    try {
      const r = await cli([...writeStack("ok", [alpha, gamma]), "--json"]);
      expect(r.code).toBe(1);
      expect(parseJson(r)[1]).toMatchObject({ state: "bad-record", record: null });
      expect(parseJson(r)[1].reason).toMatch(/status\.json is not a status record/);
      await writeRecord(gamma, `${JSON.stringify({ result: "exploded", needsReboot: "yes" })}\n`);
      const u = await cli([...writeStack("ok", [alpha, gamma]), "--json"]);
      expect(u.code).toBe(1);
      const g = parseJson(u)[1];
      expect(g).toMatchObject({ state: "bad-record", reason: expect.stringMatching(/result "exploded" is not one of running, success, failed, rolled-back/) });
      expect(g.notes).toContain("field needsReboot ignored: expected true or false");
    } finally {
      await sshExec(fleet, gamma, `rm -f -- '${gamma.stateDir}/status.json'`);
    }
  });

  it("usage and config errors: exit 2, naming what is wrong", async () => {
    expect((await cli([])).stderr).toMatch(/--stack is required/);
    const t = await cli([...writeStack("ok", [alpha]), "--timeout", "0"]);
    expect(t.code).toBe(2);
    expect(t.stderr).toMatch(/--timeout "0": allowed: a whole number of seconds from 1 to 600/);
    const bad = await cli(writeStack("badport", [alpha], (h, e) => (e.port = 70000)));
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/nixfleet:hosts\[0\]\.port/);
  });
});
