// End-to-end test of the SIMULATED fleet: every host a booted machine (real systemd as PID 1, journald,
// sshd, Nix 2.26 with its own store), running nixos-lite systems (fleet/README.md). Ports from 2610.
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freezeHost,
  healHost,
  hostExec,
  hostMemory,
  hostPath,
  journal,
  partitionHost,
  powerCycleHost,
  rebootHost,
  sshExec,
  startFleet,
  thawHost,
  waitSsh,
  type FleetHost,
  type SimFleet,
} from "./fleet";
import { rebootMachine } from "./machine/machine";

const OWNER = "evie";
const HOSTS = [
  { name: "malphas", role: "desktop" as const, owner: OWNER },
  { name: "pi", role: "pi" as const },
];
const NIX = "nix --extra-experimental-features 'nix-command flakes'";

let root: string;
let fleet: SimFleet;
let malphas: FleetHost;
let pi: FleetHost;

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const ssh = (host: FleetHost, cmd: string) => sshExec(fleet, host, cmd);
const link = (h: FleetHost, p: string) => fs.readlink(hostPath(h, p)).catch(() => null);

/** Where a host stands, read from the machine: running system, boot entry, profile, booted system. */
async function where(h: FleetHost) {
  const profile = (await hostExec(h, ["readlink", "-e", h.profile])).stdout.trim();
  return {
    running: await link(h, "/run/current-system"),
    boot: await link(h, "/boot/default"),
    profile: profile === "" ? null : profile,
    booted: await link(h, "/run/booted-system"),
  };
}

/** Builds the host's configuration plus `extra` (Nix module text, staged so the flake sees it) as root. */
async function buildWith(h: FleetHost, extra: string): Promise<string> {
  const file = `${h.checkout}/hosts/${h.name}/extra.nix`;
  const cfg = `${h.checkout}/hosts/${h.name}/configuration.nix`;
  const asOwner = h.owner === "root" ? "" : `runuser -u ${h.owner} -- `;
  const script = [
    "set -e",
    `printf '%s\\n' ${q(extra)} | ${asOwner}tee ${q(file)} >/dev/null`,
    `grep -q extra.nix ${q(cfg)} || ${asOwner}sed -i 's|imports = lib.optional|imports = [ ./extra.nix ] ++ lib.optional|' ${q(cfg)}`,
    `${asOwner}git -C ${q(h.checkout)} add -A`,
    `home=$(mktemp -d); git config --file "$home/.gitconfig" --add safe.directory ${q(h.checkout)}`,
    `HOME=$home ${NIX} build --no-link --print-out-paths ${q(`${h.checkout}#nixosConfigurations.${h.name}.config.system.build.toplevel`)}`,
  ].join("\n");
  const r = await ssh(h, script);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim().split("\n").pop()!;
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), "nixfleet-fleet-test-"));
  fleet = await startFleet({ root, hosts: HOSTS, basePort: 2610 });
  [malphas, pi] = fleet.hosts;
});

afterAll(async () => {
  await fleet?.stop();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

describe("every host is a booted machine", () => {
  it("over the deployer's own SSH path: systemd is PID 1, the machine is running, Nix >= 2.24, its own hostname", async () => {
    for (const h of fleet.hosts) {
      const r = await ssh(h, "cat /proc/1/comm; systemctl is-system-running; nix --version; cat /proc/sys/kernel/hostname");
      expect(r.code, r.stderr).toBe(0);
      const [pid1, state, nixVersion, hostname] = r.stdout.trim().split("\n");
      expect(pid1).toBe("systemd");
      expect(state).toBe("running");
      const [major, minor] = /(\d+)\.(\d+)/.exec(nixVersion)!.slice(1).map(Number);
      expect(major > 2 || (major === 2 && minor >= 24), nixVersion).toBe(true);
      expect(hostname).toBe(h.name);
    }
  });

  it("installed: running system = profile generation 1 = boot entry = booted system; sshd is the system's unit", async () => {
    for (const h of fleet.hosts) {
      const w = await where(h);
      expect(w.running).toMatch(new RegExp(`^/nix/store/[a-z0-9]{32}-nixos-system-${h.name}-nixos-lite$`));
      expect(w).toEqual({ running: w.running, boot: w.running, profile: w.running, booted: w.running });
      expect(await link(h, "/nix/var/nix/profiles/system")).toBe("system-1-link");
      const unit = await ssh(h, "systemctl show -p FragmentPath --value sshd.service; systemctl is-active sshd.service");
      expect(unit.stdout.trim().split("\n")).toEqual([`/etc/systemd/system/sshd.service`, "active"]);
      expect(await link(h, "/etc/systemd/system")).toBe(`${w.running}/etc/systemd/system`);
    }
  });

  it("each machine has its own store: a path built on one is not in the other's", async () => {
    const p = await buildWith(pi, '{ systemd.services.only-on-pi = { serviceConfig.Type = "oneshot"; script = "true"; }; }');
    expect((await ssh(pi, `test -e ${q(p)}`)).code).toBe(0);
    expect((await ssh(malphas, `test -e ${q(p)}`)).code).toBe(1);
  });

  it("each machine has its own cgroups: a unit running on one has no cgroup on the other", async () => {
    // Shared cgroups let one machine's systemd remove the cgroup of a same-named unit another one was starting.
    expect((await ssh(malphas, "systemd-run --unit=nf-cgroup-probe sleep 300")).code).toBe(0);
    try {
      const where = (await ssh(malphas, "systemctl show -p ControlGroup --value nf-cgroup-probe.service")).stdout.trim();
      expect(where).toBe("/system.slice/nf-cgroup-probe.service");
      const seen = `for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do test -d "$h"${where} && echo "$h"; done; true`;
      expect((await ssh(malphas, seen)).stdout.trim()).not.toBe("");
      expect((await ssh(pi, seen)).stdout.trim()).toBe("");
    } finally {
      await ssh(malphas, "systemctl stop nf-cgroup-probe.service");
    }
  });

  it("a session's PATH is the system's sw/bin only: no jq, nh, go or apt; git because the configuration adds it", async () => {
    const r = await ssh(malphas, "echo \"$PATH\"; for t in jq nh go apt-get python3 git nix systemctl systemd-run logger flock; do printf '%s=%s\\n' $t \"$(command -v $t || echo -)\"; done");
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe("/run/current-system/sw/bin");
    const found = Object.fromEntries(lines.slice(1).map((l) => l.split("=")));
    for (const t of ["jq", "nh", "go", "apt-get", "python3"]) expect(found[t], t).toBe("-");
    for (const t of ["git", "nix", "systemctl", "systemd-run", "logger", "flock"]) expect(found[t], t).toBe(`/run/current-system/sw/bin/${t}`);
    // Go is in the machine (hosts build the agent with it), only not on a session's PATH.
    expect((await ssh(malphas, "test -x /usr/bin/go")).code).toBe(0);
  });
});

describe("a checkout that belongs to a user (Nix 2.26 reads it with libgit2)", () => {
  it("is the owner's; root's git says dubious ownership; root's nix build needs safe.directory in the building user's ~/.gitconfig", async () => {
    const owner = await ssh(malphas, `stat -c %U ${q(malphas.checkout)}; find ${q(malphas.checkout)} -not -user ${OWNER} | head -3`);
    expect(owner.stdout.trim()).toBe(OWNER);
    const git = await ssh(malphas, `git -C ${q(malphas.checkout)} status`);
    expect(git.code).toBe(128);
    expect(git.stderr).toMatch(/dubious ownership/);
    const attr = `${malphas.checkout}#nixosConfigurations.malphas.config.system.build.toplevel`;
    const plain = await ssh(malphas, `${NIX} build --no-link ${q(attr)}`);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/is not owned by current user/);
    // What git's own environment knobs cannot do (libgit2 ignores them):
    const env = await ssh(malphas, `GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=${q(malphas.checkout)} ${NIX} build --no-link ${q(attr)}`);
    expect(env.code).toBe(1);
    const home = await ssh(malphas, `home=$(mktemp -d); git config --file "$home/.gitconfig" --add safe.directory ${q(malphas.checkout)}; HOME=$home ${NIX} build --no-link ${q(attr)}`);
    expect(home.code, home.stderr).toBe(0);
    // The owner pulls and pushes origin.
    const pull = await hostExec(malphas, ["git", "-C", malphas.checkout, "pull", "-q", "--ff-only"], { user: OWNER });
    expect(pull.code, pull.stderr).toBe(0);
  });
});

describe("switch-to-configuration drives the machine's real systemd", () => {
  it("test starts a new unit and leaves profile and boot entry; boot moves only the boot entry", async () => {
    const before = await where(pi);
    const p = await buildWith(pi, '{ systemd.services.hello = { wantedBy = [ "multi-user.target" ]; serviceConfig.Type = "oneshot"; serviceConfig.RemainAfterExit = true; script = "echo hello from a real unit"; }; }');
    const t = await ssh(pi, `${q(p)}/bin/switch-to-configuration test`);
    expect(t.code, t.stderr).toBe(0);
    expect(await where(pi)).toEqual({ ...before, running: p });
    expect((await ssh(pi, "systemctl is-active hello.service")).stdout.trim()).toBe("active");
    expect((await journal(pi)).some((l) => /hello from a real unit/.test(l))).toBe(true);
    const b = await ssh(pi, `${q(before.running!)}/bin/switch-to-configuration test && ${q(p)}/bin/switch-to-configuration boot`);
    expect(b.code, b.stderr).toBe(0);
    expect(await where(pi)).toEqual({ ...before, boot: p });
    // The unit the old system does not have was stopped.
    expect((await ssh(pi, "systemctl is-active hello.service")).stdout.trim()).not.toBe("active");
    await ssh(pi, `${q(before.running!)}/bin/switch-to-configuration boot`);
  });

  it("faults from the configuration: activation fails (exit 2), a unit fails (exit 4)", async () => {
    const before = await where(pi);
    const act = await buildWith(pi, '{ system.activationScripts.broken = "exit 1"; }');
    const a = await ssh(pi, `${q(act)}/bin/switch-to-configuration test`);
    expect(a.code).toBe(2);
    expect(await where(pi)).toEqual(before);
    const unit = await buildWith(pi, '{ systemd.services.bad = { wantedBy = [ "multi-user.target" ]; serviceConfig.Type = "oneshot"; script = "exit 1"; }; }');
    const u = await ssh(pi, `${q(unit)}/bin/switch-to-configuration test`);
    expect(u.code).toBe(4);
    expect(u.stderr).toMatch(/warning: the following units failed: bad\.service/);
    expect((await ssh(pi, "systemctl is-failed bad.service")).stdout.trim()).toBe("failed");
    const back = await ssh(pi, `${q(before.running!)}/bin/switch-to-configuration test`);
    expect(back.code, back.stderr).toBe(0);
    expect(await where(pi)).toEqual(before);
  });

  it("a system without openssh stops sshd (the host is unreachable); re-activating the old one from the console brings it back", async () => {
    const before = await where(pi);
    const off = await buildWith(pi, "{ services.openssh.enable = false; }");
    const r = await ssh(pi, `systemd-run --unit=switch-off --collect --quiet -- ${q(off)}/bin/switch-to-configuration test`);
    expect(r.code, r.stderr).toBe(0);
    let down = false;
    for (let i = 0; i < 100 && !down; i++) {
      down = (await sshExec(fleet, pi, "true", { timeoutMs: 10_000 })).code !== 0;
      if (!down) await new Promise((res) => setTimeout(res, 100));
    }
    expect(down).toBe(true);
    const back = await hostExec(pi, [`${before.running}/bin/switch-to-configuration`, "test"]);
    expect(back.code, back.stderr).toBe(0);
    // sshd is Type=simple: started is not yet listening, so the deployer retries as a user would.
    await waitSsh(fleet, pi);
    expect((await ssh(pi, "systemctl is-active sshd.service")).stdout.trim()).toBe("active");
  });
});

describe("reboots and power cuts", () => {
  it("a reboot boots the boot entry: running = booted = the entry's system, its units up", async () => {
    const before = await where(pi);
    const next = await buildWith(pi, '{ systemd.services.after-reboot = { wantedBy = [ "multi-user.target" ]; serviceConfig.Type = "oneshot"; serviceConfig.RemainAfterExit = true; script = "true"; }; }');
    expect((await ssh(pi, `nix-env -p /nix/var/nix/profiles/system --set ${q(next)} && ${q(next)}/bin/switch-to-configuration boot`)).code).toBe(0);
    expect((await where(pi)).running).toBe(before.running);
    await rebootHost(fleet, pi);
    expect(await where(pi)).toEqual({ running: next, boot: next, profile: next, booted: next });
    expect((await ssh(pi, "systemctl is-active after-reboot.service; cat /proc/1/comm")).stdout.trim().split("\n")).toEqual(["active", "systemd"]);
  });

  it("a power cut kills every process at once; on power-on the machine boots its entry again and keeps its disk", async () => {
    const before = await where(pi);
    await ssh(pi, "echo kept > /var/lib/power-cut-marker");
    const sleeper = await ssh(pi, "systemd-run --unit=long-sleep --quiet sleep 1000 && systemctl is-active long-sleep.service");
    expect(sleeper.stdout.trim()).toBe("active");
    await powerCycleHost(fleet, pi);
    expect(await where(pi)).toEqual(before);
    const r = await ssh(pi, "cat /var/lib/power-cut-marker; systemctl is-active long-sleep.service || true");
    expect(r.stdout.trim().split("\n")).toEqual(["kept", "inactive"]);
  });

  it("a system whose default unit exists nowhere does not boot (systemd ends in maintenance mode, no sshd); its entry set back from the console boots again", async () => {
    const before = await where(pi);
    const broken = await buildWith(pi, '{ systemd.defaultUnit = "nixfleet-no-such.target"; }');
    expect((await ssh(pi, `${q(broken)}/bin/switch-to-configuration boot`)).code).toBe(0);
    const booted = await rebootMachine(pi.machine, { timeoutMs: 30_000 }).then(() => "booted", (e: Error) => e.message);
    expect(booted).toMatch(/did not finish booting/);
    const state = await hostExec(pi, ["sh", "-c", "systemctl is-system-running; systemctl is-active sshd.service; readlink /run/booted-system"]);
    expect(state.stdout.trim().split("\n")).toEqual(["maintenance", "inactive", broken]);
    expect((await sshExec(fleet, pi, "true", { timeoutMs: 5_000 })).code).not.toBe(0);

    expect((await hostExec(pi, [`${before.boot}/bin/switch-to-configuration`, "boot"])).code).toBe(0);
    await rebootHost(fleet, pi);
    expect(await where(pi)).toEqual(before);
  });

  it("memory per machine (printed)", () => {
    for (const h of fleet.hosts) {
      const mb = hostMemory(h) / 1024 / 1024;
      console.log(`fleet: ${h.name} resident memory ${mb.toFixed(1)} MiB`);
      expect(mb).toBeGreaterThan(5);
    }
  });
});

describe("network faults", () => {
  it("a partition drops packets (a connect times out, nothing refuses); heal restores", async () => {
    await partitionHost(fleet, pi);
    try {
      const r = await sshExec(fleet, pi, "true", { timeoutMs: 30_000 });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/timed out/i);
    } finally {
      await healHost(fleet, pi);
    }
    expect((await ssh(pi, "true")).code).toBe(0);
  });

  it("a frozen machine accepts TCP but answers nothing; thawed, it answers", async () => {
    await freezeHost(fleet, pi);
    try {
      const r = await sshExec(fleet, pi, "true", { timeoutMs: 5_000 });
      expect(r.code).not.toBe(0);
    } finally {
      await thawHost(fleet, pi);
    }
    expect((await ssh(pi, "true")).code).toBe(0);
  });
});
