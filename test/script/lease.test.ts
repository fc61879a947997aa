// The host lease (docs/rollout.md §4): the timer skips on a live lease without touching status.json; a
// dead pid or an expired lease is reclaimed (its "running" status rewritten); an interrupted run releases.
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { BOOTSTRAP, bundle, cleanupHosts, commitAsOwner, confirm, deadPid, inHost, journal, killInHost, LIVE_PID, makeHost, push, pushFiles, run, agent, spawnInHost, status, systemState, timer, waitFor, writeHostConfig, present } from "./harness";

afterEach(cleanupHosts);

const leaseFile = (state: string) => path.join(state, "lease");
const now = () => Math.floor(Date.now() / 1000);

describe("lease", () => {
  it("the timer skips on a live lease: exit 0, journal says so, status.json untouched, nothing built", async () => {
    const h = await makeHost();
    writeHostConfig(h, { version: "2" });
    commitAsOwner(h);
    fs.mkdirSync(h.state, { recursive: true });
    fs.writeFileSync(leaseFile(h.state), `owner=push:0123456789abcdef pid=${LIVE_PID} expires=${now() + 600}\n`);
    fs.writeFileSync(path.join(h.state, "status.json"), '{"sentinel":true}\n');
    const before = systemState(h);
    const r = await timer(h);
    expect(r.code, r.stderr).toBe(0);
    expect(journal(h)).toMatch(/skipped: a rollout holds the lease \(owner=push:0123456789abcdef/);
    expect(fs.readFileSync(path.join(h.state, "status.json"), "utf8")).toBe('{"sentinel":true}\n');
    expect(present(path.join(h.state, "validated"))).toBe(false);
    expect(systemState(h)).toEqual(before);
    expect(fs.readFileSync(leaseFile(h.state), "utf8")).toMatch(/^owner=push:0123456789abcdef /);
  });

  it("a push waits at most LEASE_WAIT for another rollout's live lease, then fails naming the holder", async () => {
    const h = await makeHost({}, { AUTO_UPGRADE_LEASE_WAIT: "2" });
    fs.mkdirSync(h.state, { recursive: true });
    fs.writeFileSync(leaseFile(h.state), `owner=timer:${LIVE_PID} pid=${LIVE_PID} expires=${now() + 600}\n`);
    const d = await push(h);
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/another rollout holds the host for more than AUTO_UPGRADE_LEASE_WAIT=2 s \(owner=timer:/);
  });

  it("a lease of a dead pid is reclaimed, and its stale 'running' status is rewritten as failed", async () => {
    const h = await makeHost();
    const dead = { pid: deadPid() };
    fs.mkdirSync(h.state, { recursive: true });
    fs.writeFileSync(leaseFile(h.state), `owner=timer:${dead.pid} pid=${dead.pid} expires=${now() + 600}\n`);
    fs.writeFileSync(path.join(h.state, "status.json"), '{"host":"malphas","mode":"timer","rollout":null,"step":"run","phase":"validate","result":"running","message":"x"}\n');
    const r = await timer(h);
    expect(r.code, r.stderr).toBe(0);
    expect(journal(h)).toMatch(new RegExp(`previous run \\(pid ${dead.pid}\\) died during validate`));
    expect(status(h)).toMatchObject({ result: "success", mode: "timer" });
    expect(present(leaseFile(h.state))).toBe(false);
  });

  it("an expired lease is reclaimed even if its pid is alive", async () => {
    const h = await makeHost();
    fs.mkdirSync(h.state, { recursive: true });
    fs.writeFileSync(leaseFile(h.state), `owner=push:0123456789abcdef pid=${LIVE_PID} expires=${now() - 1}\n`);
    const r = await timer(h);
    expect(r.code, r.stderr).toBe(0);
    expect(status(h)).toMatchObject({ result: "success" });
  });

  it("an interrupted push (killed during validate) rewrites its running status and releases the lease", async () => {
    const h = await makeHost();
    writeHostConfig(h, { version: "2", buildSleep: 30 });
    commitAsOwner(h);

    const p = push(h);
    await waitFor("validate to start", () => present(path.join(h.state, "status.json")) && status(h).phase === "validate", 120_000);
    const pid = Number(/pid=(\d+)/.exec(fs.readFileSync(leaseFile(h.state), "utf8"))![1]);
    killInHost(pid, "TERM");
    const d = await p;
    expect(d.code).not.toBe(0);
    expect(status(h)).toMatchObject({ result: "failed", phase: "validate" });
    expect(status(h).message).toMatch(/interrupted .* during validate/);
    expect(present(leaseFile(h.state))).toBe(false);
    // The stage goes with the push; Nix removes its own build dir there a moment after the build is stopped.
    await waitFor("the stage and Nix's build dir to be removed", () => fs.readdirSync(path.join(h.root, "tmp")).length === 0, 60_000);
    // The build was stopped with it (no orphan nix holding anything), and the next timer run is not blocked.
    const r = await timer(h, { AUTO_UPGRADE_VALIDATE_TIMEOUT: "2" });
    expect(r.stderr).not.toMatch(/skipped/);
  });

  it("the activator holds the lease until it finishes: a timer run during the confirmation window skips", async () => {
    const h = await makeHost();
    writeHostConfig(h, { version: "2" });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    const t = await timer(h);
    expect(t.code).toBe(0);
    expect(journal(h)).toMatch(/skipped/);
    expect(status(h).phase).toBe("awaiting-confirmation");
    expect((await confirm(h, d.token)).code).toBe(0);
    expect(present(leaseFile(h.state))).toBe(false);
  });
});

describe("status", () => {
  it("works bare: no settings, the default or given state dir", async () => {
    const h = await makeHost();
    await timer(h);
    const bare = { PATH: "/usr/bin:/bin" };
    const r = await run([agent(h), "status", h.state], bare);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ host: "malphas", result: "success" });
    const viaEnv = await run([agent(h), "status"], { ...bare, AUTO_UPGRADE_STATE_DIR: h.state });
    expect(viaEnv.stdout).toBe(r.stdout);
    const none = await run([agent(h), "status", path.join(h.root, "nowhere")], bare);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no status record yet/);
  });

  it("works bare on a host: an environment of PATH alone reads the default state dir /var/lib/auto-upgrade", async () => {
    const h = await makeHost();
    await timer(h);
    // The machine's own /var/lib: nothing else on it has a state dir there, and the test removes what it puts.
    const bareStatus = () => run([agent(h), "status"], { PATH: "/usr/bin:/bin" });
    expect(inHost(["sh", "-c", "[ ! -e /var/lib/auto-upgrade ] && echo absent"]).trim()).toBe("absent");
    const none = await bareStatus();
    expect(none.code).toBe(1);
    expect(none.stderr).toBe("auto-upgrade: no status record yet (/var/lib/auto-upgrade/status.json)\n");
    inHost(["install", "-D", "-m", "0644", path.join(h.state, "status.json"), "/var/lib/auto-upgrade/status.json"]);
    let r;
    try {
      r = await bareStatus();
    } finally {
      inHost(["rm", "-rf", "/var/lib/auto-upgrade"]);
    }
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(fs.readFileSync(path.join(h.state, "status.json"), "utf8"));
    expect(JSON.parse(r.stdout)).toMatchObject({ host: "malphas", result: "success" });
  });
});

describe("interrupted activation", () => {
  it("an activator stopped while awaiting confirmation re-activates the previous system before it ends", async () => {
    const h = await makeHost({}, { AUTO_UPGRADE_CONFIRM_TIMEOUT: "60" });
    const before = systemState(h);
    writeHostConfig(h, { version: "2" });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    expect(systemState(h).running).not.toBe(before.running);
    const pid = Number(/pid=(\d+)/.exec(fs.readFileSync(leaseFile(h.state), "utf8"))![1]);
    killInHost(pid, "TERM");
    // It writes its final status, then releases the lease (the other order would let confirm take it for dead).
    await waitFor("the activator to end", () => status(h).result !== "running" && !present(leaseFile(h.state)), 120_000);
    expect(status(h)).toMatchObject({ result: "rolled-back" });
    expect(status(h).message).toMatch(/interrupted .* during awaiting-confirmation/);
    expect(systemState(h)).toEqual(before);
    // The status is rewritten first, then the lease released.
    await waitFor("the lease to be released", () => !present(leaseFile(h.state)), 60_000);
    expect((await confirm(h, d.token)).code).toBe(1);
  });
});

describe("SSH session gone", () => {
  it("a push whose stderr is gone (the SSH session died) notices at its next progress line, stops the build and releases", async () => {
    const h = await makeHost();
    writeHostConfig(h, { version: "2", buildSleep: 60 });
    commitAsOwner(h);
    const child = spawnInHost(["bash", "-c", fs.readFileSync(BOOTSTRAP, "utf8"), "nixfleet-push"], h.env);
    child.stdin!.end(bundle(pushFiles(h)));
    child.stdout!.resume();
    await waitFor("validate to start", () => present(path.join(h.state, "status.json")) && status(h).phase === "validate", 120_000);
    // What sshd does when the client is gone: the session's pipes close.
    child.stderr!.destroy();
    child.stdout!.destroy();
    await waitFor("the push to notice (progress line every 15 s)", () => status(h).result === "failed", 40_000);
    expect(status(h).message).toMatch(/interrupted .* during validate/);
    // The status is rewritten first, then the lease released and the stage removed.
    await waitFor("the lease to be released", () => !present(leaseFile(h.state)), 60_000);
    await waitFor("the stage to be removed", () => fs.readdirSync(path.join(h.root, "tmp")).length === 0, 60_000);
  }, 90_000);
});

describe("activator killed hard", () => {
  it("deploy does not wait out its bound for an activator that died (SIGKILL): it fails naming the phase", async () => {
    const h = await makeHost({}, { AUTO_UPGRADE_HEALTH_UNITS: "slow.service" });
    writeHostConfig(h, { version: "2", units: { "slow.service": "sleep 5" } });
    commitAsOwner(h);
    const p = push(h);
    await waitFor("the health gate", () => present(path.join(h.state, "status.json")) && status(h).phase === "health", 120_000);
    const pid = Number(/pid=(\d+)/.exec(fs.readFileSync(leaseFile(h.state), "utf8"))![1]);
    killInHost(pid, "KILL");
    const d = await p;
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(new RegExp(`the activator \\(pid ${pid}\\) died during health`));
    expect(status(h)).toMatchObject({ result: "failed" });
  });
});
