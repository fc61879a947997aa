// End-to-end test of the SIMULATED fleet: real sshd, ssh, git, nix build and nix-env; simulated NixOS
// activation and systemd (fleet/README.md). Ports 2610-2619.
import { promises as fs, existsSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  commitToOrigin,
  currentSystem,
  freezeHost,
  healHost,
  hookLog,
  hostEnv,
  journal,
  originLog,
  partitionHost,
  run,
  sshArgs,
  sshExec,
  startFleet,
  systemctlLog,
  thawHost,
  type SimFleet,
  type FleetHost,
} from "./fleet";

const OWNER = "nixfleet-evie";
const HOSTS = [
  { name: "malphas", role: "desktop" as const },
  { name: "pi", role: "pi" as const },
  { name: "lilith", role: "laptop" as const, owner: OWNER },
];
const NIX = "nix --extra-experimental-features 'nix-command flakes' --option substituters ''";

let root: string;
let fleet: SimFleet;
let malphas: FleetHost;
let pi: FleetHost;
let lilith: FleetHost;

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const ssh = (host: FleetHost, cmd: string) => sshExec(fleet, host, cmd);
const link = (p: string) => fs.readlink(p).catch(() => null);

/** Where a host stands: running system, boot entry, profile, booted system. */
async function where(h: FleetHost) {
  return {
    running: await currentSystem(h),
    boot: await link(path.join(h.simRoot, "boot", "default")),
    profile: await fs.realpath(h.profile).catch(() => null),
    booted: await link(path.join(h.simRoot, "run", "booted-system")),
  };
}

/**
 * Builds the host's configuration with `nix` (the Nix module text in hosts/<h>/extra.nix, staged so the flake
 * sees it) over ssh, with the host's stock tools, and returns the store path. Nothing is activated.
 */
async function buildWith(h: FleetHost, nix: string): Promise<string> {
  const conf = path.join(h.checkout, "hosts", h.name, "configuration.nix");
  const text = await fs.readFile(conf, "utf8");
  if (!text.includes("./extra.nix")) await fs.writeFile(conf, text.replace("imports = ", "imports = [ ./extra.nix ] ++ "));
  await fs.writeFile(path.join(h.checkout, "hosts", h.name, "extra.nix"), `{ lib, ... }: {\n${nix}\n}\n`);
  const out = `${h.simRoot}/run/test-result`;
  const r = await ssh(
    h,
    `cd ${q(h.checkout)} && git add -A && ${NIX} build -o ${q(out)} ${q(`.#nixosConfigurations.${h.name}.config.system.build.toplevel`)} && readlink ${q(out)}`,
  );
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

/** Runs the host's tools locally with its session environment (for when its sshd is down). */
const local = (h: FleetHost, file: string, args: string[]) => run(file, args, { env: hostEnv(root, h) });

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), "nixfleet-fleet-test-"));
  fleet = await startFleet({ root, hosts: HOSTS, basePort: 2610 });
  [malphas, pi, lilith] = fleet.hosts;
});

afterAll(async () => {
  await fleet?.stop();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

describe("simulated fleet", () => {
  it("starts the hosts installed: profile generation 1 = boot entry = running = booted system", async () => {
    expect(fleet.hosts.map((h) => [h.name, h.role, h.address, h.user, h.owner])).toEqual([
      ["malphas", "desktop", "127.0.0.1", "root", "root"],
      ["pi", "pi", "127.0.0.1", "root", "root"],
      ["lilith", "laptop", "127.0.0.1", "root", OWNER],
    ]);
    expect(malphas.checkout).toBe(`${malphas.simRoot}/home/root/nix-config`);
    expect(lilith.checkout).toBe(`${lilith.simRoot}/home/${OWNER}/nix-config`);
    expect(new Set(fleet.hosts.map((h) => h.port)).size).toBe(3);
    expect(malphas.hostKey).toMatch(/^ssh-ed25519 [A-Za-z0-9+/=]+$/);
    for (const h of fleet.hosts) {
      const w = await where(h);
      expect(w.running).toMatch(new RegExp(`^/nix/store/[a-z0-9]{32}-nixos-system-${h.name}-nixos-lite$`));
      expect(w).toEqual({ running: w.running, boot: w.running, profile: w.running, booted: w.running });
    }
    expect(await link(`${malphas.profile}-1-link`)).toBe(await currentSystem(malphas));
    expect(await originLog(fleet)).toEqual(["Initial nix-config (simulated fleet)"]);
  });

  it("a second start with the same root reuses everything", async () => {
    const again = await startFleet({ root, hosts: HOSTS });
    expect(again.hosts).toEqual(fleet.hosts);
    expect(again.privateKey).toBe(fleet.privateKey);
  });

  it("sessions get only the stock NixOS toolset: no jq, no nh, no Debian directories", async () => {
    const r = await ssh(malphas, "env; for t in jq nh apt python3 bash git nix nix-env flock runuser setsid logger systemctl systemd-run gzip ssh find sed grep; do printf '%s=%s\\n' \"$t\" \"$(command -v \"$t\" || echo MISSING)\"; done");
    expect(r.code, r.stderr).toBe(0);
    const vars = Object.fromEntries(r.stdout.split("\n").filter((l) => l.includes("=")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
    expect(vars.PATH).toBe(`${malphas.simRoot}/sim/bin`);
    expect(vars.NIXFLEET_SIM_ROOT).toBe(malphas.simRoot);
    expect(vars.AUTO_UPGRADE_ROOT).toBe(malphas.simRoot);
    expect(vars.AUTO_UPGRADE_STATE_DIR).toBe(malphas.stateDir);
    expect(vars.AUTO_UPGRADE_PROFILE).toBeUndefined();
    for (const t of ["jq", "nh", "apt", "python3"]) expect(vars[t]).toBe("MISSING");
    for (const t of ["bash", "git", "nix", "nix-env", "flock", "runuser", "setsid", "logger", "systemctl", "systemd-run", "gzip", "ssh", "find", "sed", "grep"]) {
      expect(vars[t]).toBe(`${malphas.simRoot}/sim/bin/${t}`);
    }
    // Absolute paths still work (a NixOS host has no /usr/bin/jq either, but the test machine does: the
    // simulation hides tools from PATH only).
    const jq = await ssh(malphas, "jq --version");
    expect(jq.code).toBe(127);
  });

  describe("a checkout owned by a user (root runs nixfleet)", () => {
    const asOwner = (...args: string[]) => run("runuser", ["-u", OWNER, "--", ...args], { cwd: "/" });

    it("belongs to the owner; the owner pulls and pushes through the shared origin", async () => {
      const uid = Number((await run("id", ["-u", OWNER])).stdout);
      const home = await fs.stat(path.dirname(lilith.checkout));
      expect([home.uid, home.mode & 0o777]).toEqual([uid, 0o700]);
      await commitToOrigin(fleet, { "hosts/lilith/notes.txt": "from root\n" }, "root: notes");
      const pull = await asOwner("git", "-C", lilith.checkout, "pull", "-q", "--ff-only");
      expect(pull.code, pull.stderr).toBe(0);
      const push = await asOwner("sh", "-c", `cd ${q(lilith.checkout)} && echo evie >> hosts/lilith/notes.txt && git commit -qam 'lilith: notes' && git push -q origin main`);
      expect(push.code, push.stderr).toBe(0);
      expect((await originLog(fleet)).slice(0, 2)).toEqual(["lilith: notes", "root: notes"]);
      expect((await run("find", [lilith.checkout, "!", "-user", OWNER])).stdout).toBe("");
    });

    it("root's git fails there with dubious ownership; nix build needs safe.directory, as on a real host", async () => {
      const st = await ssh(lilith, `git -C ${q(lilith.checkout)} status`);
      expect(st.code).toBe(128);
      expect(st.stderr).toContain(`fatal: detected dubious ownership in repository at '${lilith.checkout}'`);
      const build = `${NIX} build -o ${q(`${lilith.stateDir}/validated`)} ${q(`${lilith.checkout}#nixosConfigurations.lilith.config.system.build.toplevel`)}`;
      const plain = await ssh(lilith, build);
      expect(plain.code).toBe(1);
      expect(plain.stderr).toContain("error: program 'git' failed with exit code 129");
      const trusted = await ssh(lilith, `GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=${q(lilith.checkout)} ${build}`);
      expect(trusted.code, trusted.stderr).toBe(0);
      expect((await run("find", [lilith.checkout, "!", "-user", OWNER])).stdout).toBe("");
    });
  });

  it("publishes the host key that ssh-keyscan sees", async () => {
    for (const h of fleet.hosts) {
      const r = await run("ssh-keyscan", ["-t", "ed25519", "-p", String(h.port), h.address]);
      expect(r.stdout.split("\n").find((l) => l.includes("ssh-ed25519"))?.split(" ").slice(1).join(" ")).toBe(h.hostKey);
    }
  });

  it("an untracked file is invisible to the build; staged, it is part of it", async () => {
    const extra = path.join(pi.checkout, "hosts/pi/nixfleet.nix");
    await fs.writeFile(extra, "{ this is not nix");
    const build = () => ssh(pi, `cd ${q(pi.checkout)} && ${NIX} build --no-link .#nixosConfigurations.pi.config.system.build.toplevel`);
    const untracked = await build();
    expect(untracked.code, untracked.stderr).toBe(0);
    await run("git", ["-C", pi.checkout, "add", "hosts/pi/nixfleet.nix"]);
    const tracked = await build();
    expect(tracked.code).toBe(1);
    expect(tracked.stderr).toMatch(/syntax error/);
    await run("git", ["-C", pi.checkout, "rm", "-q", "--cached", "hosts/pi/nixfleet.nix"]);
    await fs.rm(extra);
  });

  describe("switch-to-configuration fails where NixOS fails (faults from the configuration)", () => {
    it("`test` activates without touching the boot entry or the profile; `boot` moves only the boot entry", async () => {
      const before = await where(malphas);
      const p = await buildWith(malphas, '  systemd.services.hello = { wantedBy = [ "multi-user.target" ]; serviceConfig.Type = "oneshot"; script = "echo hello from hello"; };');
      const t = await ssh(malphas, `${q(`${p}/bin/switch-to-configuration`)} test`);
      expect(t.code, t.stderr).toBe(0);
      expect(await where(malphas)).toEqual({ ...before, running: p });
      // Its wanted unit ran (output in the journal, not on the caller's stdout).
      expect(t.stdout).not.toContain("hello from hello");
      expect((await journal(malphas)).some((l) => l.endsWith("hello: hello from hello"))).toBe(true);
      expect((await systemctlLog(malphas)).at(-1)).toMatch(/ start hello\.service ok$/);
      // The unit file is what NixOS writes.
      const unit = await fs.readFile(`${p}/etc/systemd/system/hello.service`, "utf8");
      expect(unit).toMatch(/^\[Unit\]\n[\s\S]*\[Service\]\n(Environment=".*"\n)*ExecStart=\/nix\/store\/[a-z0-9]{32}-unit-script-hello-start\/bin\/hello-start\nType=oneshot\n$/);
      const b = await ssh(malphas, `${q(`${before.running}/bin/switch-to-configuration`)} boot`);
      expect(b.code, b.stderr).toBe(0);
      expect(await where(malphas)).toEqual({ ...before, running: p });
      const back = await ssh(malphas, `${q(`${before.running}/bin/switch-to-configuration`)} test`);
      expect(back.code, back.stderr).toBe(0);
      expect(await where(malphas)).toEqual(before);
    });

    it("a long-running service: started by `test`, holds no switch lock, stopped when a system without it is activated", async () => {
      const before = await where(malphas);
      const p = await buildWith(malphas, '  systemd.services.daemon = { wantedBy = [ "multi-user.target" ]; script = "echo $$ > \\"$NIXFLEET_SIM_ROOT/run/daemon.pid\\"; exec sleep 300"; };');
      const sw = () => sshExec(fleet, malphas, `${q(`${p}/bin/switch-to-configuration`)} test`, { timeoutMs: 60_000 });
      expect((await sw()).code).toBe(0);
      await expect.poll(() => fs.readFile(`${malphas.simRoot}/run/daemon.pid`, "utf8").catch(() => ""), { timeout: 20_000 }).toMatch(/^\d+\n$/);
      const pid = Number(await fs.readFile(`${malphas.simRoot}/run/daemon.pid`, "utf8"));
      expect((await ssh(malphas, "systemctl is-active daemon")).stdout).toBe("active\n");
      const again = await sw(); // would wait forever if the daemon held the lock
      expect(again.code, again.stderr).toBe(0);
      const back = await ssh(malphas, `${q(`${before.running}/bin/switch-to-configuration`)} test`);
      expect(back.code, back.stderr).toBe(0);
      expect(back.stderr).toContain("stopping the following units: daemon.service");
      expect(() => process.kill(pid, 0)).toThrow();
    });

    it("an activation script that exits non-zero: exit 2 (as switch-to-configuration.pl), nothing activated", async () => {
      const before = await where(malphas);
      const p = await buildWith(malphas, '  system.activationScripts.broken = "echo activation breaks >&2; exit 1";');
      const r = await ssh(malphas, `${q(`${p}/bin/switch-to-configuration`)} switch`);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("activation breaks");
      // `switch` installed the boot entry first (as NixOS does); the running system did not change.
      expect(await where(malphas)).toEqual({ ...before, boot: p });
      // Put both back exactly (earlier tests may leave the running system apart from the boot entry).
      await ssh(malphas, `${q(`${before.boot}/bin/switch-to-configuration`)} boot`);
      await ssh(malphas, `${q(`${before.running}/bin/switch-to-configuration`)} test`);
      expect(await where(malphas)).toEqual(before);
      const log = await fs.readFile(`${malphas.simRoot}/log/switch.log`, "utf8");
      expect(log).toContain(`switch ${p} FAILED exit=2\n`);
    });

    it("a failing command in a snippet: activated anyway, exit 2 and the snippet named", async () => {
      const before = await where(malphas);
      const p = await buildWith(malphas, '  system.activationScripts.flaky = "false";');
      const r = await ssh(malphas, `${q(`${p}/bin/switch-to-configuration`)} test`);
      expect(r.code).toBe(2);
      expect(r.stdout).toContain("Activation script snippet 'flaky' failed (1)");
      expect((await where(malphas)).running).toBe(p);
      await ssh(malphas, `${q(`${before.running}/bin/switch-to-configuration`)} test`);
    });

    it("a failing unit multi-user.target wants: exit 4 with NixOS' warning, the system is active", async () => {
      const before = await where(malphas);
      const p = await buildWith(malphas, '  systemd.services.broken = { wantedBy = [ "multi-user.target" ]; serviceConfig.Type = "oneshot"; script = "exit 3"; };');
      const r = await ssh(malphas, `${q(`${p}/bin/switch-to-configuration`)} test`);
      expect(r.code).toBe(4);
      expect(r.stderr).toContain("warning: the following units failed: broken.service");
      expect(await where(malphas)).toEqual({ ...before, running: p });
      const failed = await ssh(malphas, "systemctl list-units --state=failed --plain --no-legend");
      expect(failed.stdout).toBe("broken.service loaded failed failed broken.service\n");
      const back = await ssh(malphas, `${q(`${before.running}/bin/switch-to-configuration`)} test`);
      expect(back.code, back.stderr).toBe(0);
      expect((await ssh(malphas, "systemctl list-units --state=failed --plain --no-legend")).stdout).toBe("");
    });

    it("services.openssh.enable = false stops sshd and kills its sessions; re-activating the old system starts it", async () => {
      const before = await where(pi);
      const p = await buildWith(pi, "  services.openssh.enable = false;");
      // A session that would outlive the switch if sshd spared it.
      const victim = spawn("ssh", [...sshArgs(fleet, pi), "--", "sleep 120"], { stdio: "ignore" });
      const victimDone = new Promise<void>((resolve) => victim.once("exit", () => resolve()));
      // Activated detached (as the rollout's activator is), so the switch itself survives.
      const r = await ssh(pi, `systemd-run --unit=switch-no-ssh --wait --quiet --setenv=PATH="$PATH" -- ${q(`${p}/bin/switch-to-configuration`)} test`);
      expect(r.code).toBe(255); // the session running systemd-run is killed with sshd
      await victimDone;
      expect((await ssh(pi, "true")).code).toBe(255);
      // The detached switch goes on after the session died: it activates the new system.
      await expect.poll(() => currentSystem(pi), { timeout: 20_000 }).toBe(p);
      // Re-activate the previous system on the host itself: its sshd unit starts the host's sshd again.
      const back = await local(pi, `${before.running}/bin/switch-to-configuration`, ["test"]);
      expect(back.code, back.stderr).toBe(0);
      const again = await ssh(pi, "systemctl is-active sshd.service");
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toBe("active\n");
      expect(await where(pi)).toEqual(before);
    });

    it("a kernel change changes $out/kernel, initrd and modules; nothing else does", async () => {
      const same = await buildWith(malphas, '  systemd.services.other = { script = "true"; };');
      const newer = await buildWith(malphas, '  boot.kernelPackages.kernel.version = "6.7.1";');
      const booted = `${malphas.simRoot}/run/booted-system`;
      for (const f of ["kernel", "initrd", "kernel-modules"]) {
        expect(await fs.realpath(`${same}/${f}`)).toBe(await fs.realpath(`${booted}/${f}`));
        expect(await fs.realpath(`${newer}/${f}`)).not.toBe(await fs.realpath(`${booted}/${f}`));
      }
      expect(await fs.readFile(`${newer}/kernel`, "utf8")).toBe("SIMULATED bzImage 6.7.1\n");
      const bad = await ssh(malphas, `cd ${q(malphas.checkout)} && sed -i 's/6.7.1/6.7 1/' hosts/malphas/extra.nix && git add -A && ${NIX} build --no-link .#nixosConfigurations.malphas.config.system.build.toplevel`);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain("boot.kernelPackages.kernel.version `6.7 1'");
    });
  });

  describe("systemd-run and systemctl", () => {
    it("systemd-run gives a clean environment and runs detached: it survives its SSH session", async () => {
      const marker = `${malphas.simRoot}/run/detached-marker`;
      const shell = `${malphas.simRoot}/run/detached-shell`;
      const client = spawn(
        "ssh",
        [...sshArgs(fleet, malphas), "--", `echo $$ > ${shell}; systemd-run --unit=detached --setenv=PATH="$PATH" --setenv=GIVEN=yes -- bash -c 'env > ${marker}.env; sleep 2; echo done > ${marker}' && exec sleep 30`],
        { stdio: "ignore" },
      );
      await expect.poll(() => existsSync(`${marker}.env`), { timeout: 20_000 }).toBe(true);
      // Kill the whole SSH session while the command runs: the client, the session's shell (its own
      // process group, as sshd starts it) and the session's sshd process.
      const pid = Number(await fs.readFile(shell, "utf8"));
      const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8");
      const sessionSshd = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      client.kill("SIGKILL");
      process.kill(-pid, "SIGKILL");
      // The session's sshd may already be gone with its client.
      try {
        process.kill(sessionSshd, "SIGKILL");
      } catch {}
      expect(existsSync(marker)).toBe(false);
      await expect.poll(() => existsSync(marker), { timeout: 20_000 }).toBe(true);
      const env = (await fs.readFile(`${marker}.env`, "utf8")).split("\n").filter(Boolean).map((l) => l.split("=")[0]).sort();
      expect(env).toEqual(["AUTO_UPGRADE_ROOT", "GIVEN", "INVOCATION_ID", "JOURNAL_STREAM", "NIXFLEET_SIM_ROOT", "NIX_CONFIG", "PATH", "PWD", "SHLVL", "_"]);
    });

    it("systemd-run without PATH finds nothing; --wait returns the status; a failed unit name stays taken until collected", async () => {
      const bare = await ssh(malphas, "systemd-run --wait --quiet --unit=bare -- /bin/bash -c 'date'");
      expect(bare.code).toBe(127);
      const again = await ssh(malphas, "systemd-run --unit=bare -- /bin/true");
      expect(again.code).toBe(1);
      expect(again.stderr).toContain("Unit bare.service was already loaded");
      const collected = await ssh(malphas, "systemd-run --wait --quiet --collect --unit=gone -- /bin/false; echo $?; systemd-run --wait --quiet --collect --unit=gone -- /bin/true; echo $?");
      expect(collected.stdout).toBe("1\n0\n");
      expect((await ssh(malphas, "systemctl reset-failed; systemctl list-units --state=failed --plain --no-legend")).stdout).toBe("");
    });

    it("OnFailure= units start when a unit fails; Environment= specifiers are expanded like systemd's", async () => {
      const p = await buildWith(
        malphas,
        [
          '  systemd.services.notify = { serviceConfig.Type = "oneshot"; script = "echo \\"notified: $WHAT\\" > \\"$NIXFLEET_SIM_ROOT/run/notified\\""; environment.WHAT = "100%% on %H"; };',
          '  systemd.services.job = { serviceConfig.Type = "oneshot"; unitConfig.OnFailure = [ "notify.service" ]; script = "exit 1"; };',
          '  systemd.services.badspec = { serviceConfig.Type = "oneshot"; environment.X = "%Z"; script = "echo \\"X=\\${X-unset}\\""; };',
        ].join("\n"),
      );
      const sw = await ssh(malphas, `${q(`${p}/bin/switch-to-configuration`)} test`);
      expect(sw.code, sw.stderr).toBe(0);
      expect(await fs.readFile(`${p}/etc/systemd/system/job.service`, "utf8")).toContain("OnFailure=notify.service\n");
      expect(await fs.readFile(`${p}/etc/systemd/system/notify.service`, "utf8")).toContain('Environment="WHAT=100%% on %H"\n');
      const job = await ssh(malphas, "systemctl start job.service");
      expect(job.code).toBe(1);
      expect(job.stderr).toContain("Job for job.service failed");
      await expect.poll(() => fs.readFile(`${malphas.simRoot}/run/notified`, "utf8").catch(() => ""), { timeout: 20_000 }).toBe("notified: 100% on malphas\n");
      const states = await ssh(malphas, "systemctl is-failed job.service; systemctl list-units --state=failed --plain --no-legend");
      expect(states.stdout).toBe("failed\njob.service loaded failed failed job.service\n");
      const bad = await ssh(malphas, "systemctl start badspec");
      expect(bad.code, bad.stderr).toBe(0);
      const log = await journal(malphas);
      expect(log.some((l) => l.includes("Failed to resolve unit specifiers in Environment=\"X=%Z\""))).toBe(true);
      expect(log.some((l) => l.endsWith("badspec: X=unset"))).toBe(true);
      expect((await ssh(malphas, "systemctl cat no-such-unit")).stderr).toContain("No files found for no-such-unit.service.");
    });
    it("the simulated chezmoi pre-update hook runs from its unit file, with NixOS' default service PATH", async () => {
      const r = await ssh(pi, "systemctl start chezmoi-pre-update && systemctl show -p Result,ActiveState chezmoi-pre-update.service");
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe("Result=success\nActiveState=inactive\n");
      expect((await hookLog(pi)).at(-1)).toMatch(/chezmoi-pre-update: dotfiles synced \(simulated\)$/);
    });
  });

  describe("network faults", () => {
    it("partitionHost drops packets (connect times out, no RST); healHost restores it", async () => {
      await partitionHost(fleet, lilith);
      try {
        const r = await run("ssh", ["-o", "ConnectTimeout=3", ...sshArgs(fleet, lilith), "true"]);
        expect(r.code).toBe(255);
        expect(r.stderr).toContain("timed out");
        expect((await ssh(malphas, "true")).code).toBe(0);
      } finally {
        await healHost(fleet, lilith);
      }
      expect((await ssh(lilith, "true")).code).toBe(0);
    });

    it("freezeHost stops sshd and its sessions (TCP accepts, nothing answers); thawHost resumes", async () => {
      await freezeHost(fleet, lilith);
      try {
        const r = await run("ssh", ["-o", "ConnectTimeout=3", ...sshArgs(fleet, lilith), "true"], { timeoutMs: 8_000 });
        expect(r.code).not.toBe(0);
      } finally {
        await thawHost(fleet, lilith);
      }
      expect((await ssh(lilith, "true")).code).toBe(0);
    });
  });

  it("stop() kills the sshd processes", async () => {
    const pids = await Promise.all(fleet.hosts.map(async (h) => Number(await fs.readFile(`${h.simRoot}/run/sshd.pid`, "utf8"))));
    await fleet.stop();
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect((await ssh(malphas, "true")).code).toBe(255);
  });
});
