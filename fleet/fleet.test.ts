// End-to-end test of the SIMULATED fleet: real sshd, real ssh, real git, real nix build and nix-env.
import { promises as fs, existsSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  commitToOrigin,
  currentSystem,
  type Fleet,
  type FleetHost,
  hookLog,
  journal,
  originLog,
  run,
  sshExec,
  startFleet,
  systemctlLog,
} from "./fleet";

const OWNER = "nixfleet-evie";
const HOSTS = [
  { name: "malphas", role: "desktop" as const },
  { name: "pi", role: "pi" as const },
  { name: "lilith", role: "laptop" as const, owner: OWNER },
];

let root: string;
let fleet: Fleet;
let malphas: FleetHost;
let pi: FleetHost;
let lilith: FleetHost;
let coldMs = 0;

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const ssh = (host: FleetHost, cmd: string) => sshExec(fleet, host, cmd);

async function commitOnHost(host: FleetHost, file: string, text: string, message: string) {
  await fs.writeFile(path.join(host.checkout, file), text);
  const r = await ssh(host, `cd ${q(host.checkout)} && git add ${q(file)} && git commit -q -m ${q(message)}`);
  expect(r.code, r.stderr).toBe(0);
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), "nixfleet-fleet-test-"));
  const t0 = Date.now();
  fleet = await startFleet({ root, hosts: HOSTS, basePort: 20000 + Math.floor(Math.random() * 20000) });
  coldMs = Date.now() - t0;
  [malphas, pi, lilith] = fleet.hosts;
});

afterAll(async () => {
  await fleet?.stop();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

describe("simulated fleet", () => {
  it("starts the hosts with state, keys and an installed system", async () => {
    expect(fleet.hosts.map((h) => [h.name, h.role, h.address, h.user, h.owner])).toEqual([
      ["malphas", "desktop", "127.0.0.1", "root", "root"],
      ["pi", "pi", "127.0.0.1", "root", "root"],
      ["lilith", "laptop", "127.0.0.1", "root", OWNER],
    ]);
    expect(malphas.checkout).toBe(`${malphas.simRoot}/home/root/nix-config`);
    expect(lilith.checkout).toBe(`${lilith.simRoot}/home/${OWNER}/nix-config`);
    expect(malphas.port).not.toBe(pi.port);
    expect(malphas.stateDir).toBe(`${malphas.simRoot}/var/lib/auto-upgrade`);
    expect(malphas.profile).toBe(`${malphas.simRoot}/nix/var/nix/profiles/system`);
    expect(malphas.hostKey).toMatch(/^ssh-ed25519 [A-Za-z0-9+/=]+$/);
    expect(fleet.privateKey).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----/);
    expect(await currentSystem(malphas)).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nixos-system-malphas-nixos-lite$/);
    expect(await originLog(fleet)).toEqual(["Initial nix-config (simulated fleet)"]);
    expect(coldMs).toBeLessThan(20_000);
  });

  it("is idempotent and fast on a second start with the same root", async () => {
    const t0 = Date.now();
    const again = await startFleet({ root, hosts: HOSTS });
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(again.hosts).toEqual(fleet.hosts);
    expect(again.privateKey).toBe(fleet.privateKey);
  });

  it("gives ssh sessions the SetEnv variables and the shims first on PATH", async () => {
    const r = await ssh(malphas, "env; command -v nh systemctl logger");
    expect(r.code, r.stderr).toBe(0);
    const env = Object.fromEntries(
      r.stdout.split("\n").filter((l) => l.includes("=")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(env.NIXFLEET_SIM_ROOT).toBe(malphas.simRoot);
    expect(env.AUTO_UPGRADE_PROFILE).toBe(malphas.profile);
    expect(env.AUTO_UPGRADE_STATE_DIR).toBe(malphas.stateDir);
    expect(env.PATH.split(":")[0]).toBe(path.join(root, "shims"));
    for (const tool of ["nh", "systemctl", "logger"]) expect(r.stdout).toContain(`${root}/shims/${tool}\n`);
    const other = await ssh(pi, "echo $NIXFLEET_SIM_ROOT");
    expect(other.stdout.trim()).toBe(pi.simRoot);
  });

  describe("a checkout owned by a user (root runs nixfleet)", () => {
    const asOwner = (...args: string[]) => run("runuser", ["-u", OWNER, "--", ...args], { cwd: "/" });

    it("belongs to the owner, every file and dir of it", async () => {
      const home = await fs.stat(path.dirname(lilith.checkout));
      const uid = Number((await run("id", ["-u", OWNER])).stdout);
      expect([home.uid, home.mode & 0o777]).toEqual([uid, 0o700]);
      const notOwned = await run("find", [lilith.checkout, "!", "-user", OWNER]);
      expect(notOwned.code, notOwned.stderr).toBe(0);
      expect(notOwned.stdout).toBe("");
      expect((await run("find", [lilith.checkout])).stdout.split("\n").length).toBeGreaterThan(20);
      const name = await asOwner("git", "-C", lilith.checkout, "config", "user.name");
      expect(name.stdout.trim()).toBe(`${OWNER}@lilith`);
    });

    it("pulls and pushes as the owner through the shared origin, before and after root pushes", async () => {
      await commitToOrigin(fleet, { "hosts/lilith/notes.txt": "from root\n" }, "root: notes");
      const pull = await asOwner("git", "-C", lilith.checkout, "pull", "-q", "--ff-only");
      expect(pull.code, pull.stderr).toBe(0);
      expect(await fs.readFile(path.join(lilith.checkout, "hosts/lilith/notes.txt"), "utf8")).toBe("from root\n");
      const push = await asOwner(
        "sh", "-c",
        `cd ${q(lilith.checkout)} && echo 'from evie' >> hosts/lilith/notes.txt && git commit -qam 'lilith: notes as owner' && git push -q origin main`,
      );
      expect(push.code, push.stderr).toBe(0);
      await commitToOrigin(fleet, { "hosts/lilith/notes.txt": "from root again\n" }, "root: notes again");
      expect((await originLog(fleet)).slice(0, 3)).toEqual(["root: notes again", "lilith: notes as owner", "root: notes"]);
      const again = await asOwner("git", "-C", lilith.checkout, "pull", "-q", "--ff-only");
      expect(again.code, again.stderr).toBe(0);
      expect((await run("find", [lilith.checkout, "!", "-user", OWNER])).stdout).toBe("");
    });

    it("root's git fails in it with dubious ownership, as on a real host", async () => {
      const r = await ssh(lilith, `git -C ${q(lilith.checkout)} status`);
      expect(r.code).toBe(128);
      expect(r.stderr).toContain(`fatal: detected dubious ownership in repository at '${lilith.checkout}'`);
    });

    it("nh -R as root fails in Nix's git unless safe.directory is passed to it", async () => {
      const link = `${lilith.stateDir}/validated`;
      const build = `nh os build -R -H lilith -o ${q(link)} ${q(lilith.checkout)}`;
      const plain = await ssh(lilith, build);
      expect(plain.code).toBe(1);
      expect(plain.stderr).toContain("error: program 'git' failed with exit code 129");
      const trusted = await ssh(
        lilith,
        `GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=${q(lilith.checkout)} ${build} && readlink ${q(link)}`,
      );
      expect(trusted.code, trusted.stderr).toBe(0);
      expect(trusted.stdout.trim()).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nixos-system-lilith-nixos-lite$/);
      expect((await run("find", [lilith.checkout, "!", "-user", OWNER])).stdout).toBe("");
    });
  });

  it("publishes the host key that ssh-keyscan sees", async () => {
    for (const h of fleet.hosts) {
      const r = await run("ssh-keyscan", ["-t", "ed25519", "-p", String(h.port), h.address]);
      const line = r.stdout.split("\n").find((l) => l.includes("ssh-ed25519"));
      expect(line?.split(" ").slice(1).join(" ")).toBe(h.hostKey);
    }
  });

  it("nh refuses to run as root without -R, like real nh", async () => {
    const r = await ssh(malphas, `nh os build -H malphas -o /tmp/never ${q(malphas.checkout)}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("Don't run nh os as root. I will call sudo internally as needed");
  });

  it("nh -R builds a real store path; untracked files are invisible, tracked edits are not", async () => {
    const link = `${malphas.stateDir}/validated`;
    const build = () => ssh(malphas, `nh os build -R -H malphas -o ${q(link)} ${q(malphas.checkout)} && readlink ${q(link)}`);
    const r = await build();
    expect(r.code, r.stderr).toBe(0);
    const out = r.stdout.trim();
    expect(out).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nixos-system-malphas-nixos-lite$/);
    expect(existsSync(`${out}/bin/switch-to-configuration`)).toBe(true);
    expect(r.stderr).toContain("> Building NixOS configuration");

    // An untracked nixfleet.nix (here: not even valid Nix) is not part of the flake.
    const extra = path.join(malphas.checkout, "hosts/malphas/nixfleet.nix");
    await fs.writeFile(extra, "{ this is not nix");
    const untracked = await build();
    expect(untracked.code, untracked.stderr).toBe(0);
    expect(untracked.stdout.trim()).toBe(out);
    // Once tracked (staged, not committed), Nix sees it.
    await run("git", ["-C", malphas.checkout, "add", "hosts/malphas/nixfleet.nix"]);
    const tracked = await build();
    expect(tracked.code).toBe(1);
    expect(tracked.stderr).toMatch(/syntax error/);
    await run("git", ["-C", malphas.checkout, "rm", "-q", "--cached", "hosts/malphas/nixfleet.nix"]);
    await fs.rm(extra);
  });

  it("nix-env --set on the profile + switch-to-configuration moves the current system", async () => {
    const before = await currentSystem(malphas);
    await commitOnHost(
      malphas,
      "hosts/malphas/extra.nix",
      '{ ... }: { systemd.services."hello".script = "echo hello"; }\n',
      "malphas: add hello unit",
    );
    const conf = path.join(malphas.checkout, "hosts/malphas/configuration.nix");
    const text = await fs.readFile(conf, "utf8");
    await commitOnHost(
      malphas,
      "hosts/malphas/configuration.nix",
      text.replace("lib.optional (builtins.pathExists ./nixfleet.nix) ./nixfleet.nix", "[ ./extra.nix ] ++ lib.optional (builtins.pathExists ./nixfleet.nix) ./nixfleet.nix"),
      "malphas: import extra.nix",
    );
    const link = `${malphas.stateDir}/validated`;
    const r = await ssh(
      malphas,
      [
        `nh os build -R -H malphas -o ${q(link)} ${q(malphas.checkout)}`,
        `p=$(readlink ${q(link)})`,
        `nix-env -p "$AUTO_UPGRADE_PROFILE" --set "$p"`,
        `"$p/bin/switch-to-configuration" switch`,
        `echo "$p"`,
      ].join(" && "),
    );
    expect(r.code, r.stderr).toBe(0);
    const built = r.stdout.trim().split("\n").pop();
    expect(built).not.toBe(before);
    expect(await currentSystem(malphas)).toBe(built);
    expect(await fs.realpath(malphas.profile)).toBe(built);
    expect((await fs.readdir(path.dirname(malphas.profile))).filter((f) => /^system-\d+-link$/.test(f))).toHaveLength(2);
    // pi is untouched.
    expect(await currentSystem(pi)).toMatch(/-nixos-system-pi-nixos-lite$/);

    // The activated system's units are what the systemctl shim knows.
    const units = await ssh(malphas, "systemctl start hello chezmoi-pre-update.service && logger -t auto-upgrade '=== done ==='");
    expect(units.code, units.stderr).toBe(0);
    expect(units.stdout).toBe("hello\n");
    expect((await hookLog(malphas)).at(-1)).toMatch(/chezmoi-pre-update: dotfiles synced/);
    expect((await journal(malphas)).at(-1)).toMatch(/^\S+Z auto-upgrade: === done ===$/);
    expect((await systemctlLog(malphas)).slice(-2)).toEqual([
      expect.stringMatching(/ start hello\.service ok$/),
      expect.stringMatching(/ start chezmoi-pre-update\.service ok$/),
    ]);
    const missing = await ssh(malphas, "systemctl cat no-such-hook");
    expect(missing.code).toBe(4);
    expect(missing.stderr).toContain("No files found for no-such-hook.service.");
  });

  it("nh os switch -R builds and activates in one go", async () => {
    const r = await ssh(pi, `nh os switch -R -H pi ${q(pi.checkout)}`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain("> Activating configuration");
    expect(await currentSystem(pi)).toBe(await fs.realpath(pi.profile));
  });

  it("a syntax error in a host file fails the build and leaves the host alone", async () => {
    const before = { system: await currentSystem(malphas), profile: await fs.readlink(malphas.profile) };
    const validated = await fs.readlink(`${malphas.stateDir}/validated`);
    await commitOnHost(malphas, "hosts/malphas/extra.nix", "{ ... }: { systemd.services = ; }\n", "malphas: broken");
    const r = await ssh(malphas, `nh os switch -R -H malphas ${q(malphas.checkout)}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/syntax error/);
    expect(r.stderr).toContain("Command exited with status");
    expect(await currentSystem(malphas)).toBe(before.system);
    expect(await fs.readlink(malphas.profile)).toBe(before.profile);
    expect(await fs.readlink(`${malphas.stateDir}/validated`)).toBe(validated);
  });

  const script = path.resolve(__dirname, "../nix/modules/services/system/auto-upgrade.sh");
  it.skipIf(!existsSync(script))("runs the real auto-upgrade.sh steps over ssh with the shims", async () => {
    const dest = `${pi.checkout}/modules/services/system/auto-upgrade.sh`;
    await fs.mkdir(path.dirname(dest), { recursive: true });
    await fs.copyFile(script, dest); // untracked: run with bash, not part of the build
    const conf = await fs.readFile(path.join(pi.checkout, "hosts/pi/configuration.nix"), "utf8");
    await commitToOrigin(
      fleet,
      { "hosts/pi/configuration.nix": conf.replace('networking.hostName = "pi";', 'networking.hostName = "pi";\n  systemd.services."motd".script = "true";') },
      "pi: add motd unit",
    );
    expect((await originLog(fleet))[0]).toBe("pi: add motd unit");
    const before = await currentSystem(pi);
    const env = [
      `AUTO_UPGRADE_CONFIG_PATH=${q(pi.checkout)}`,
      "AUTO_UPGRADE_FLAKE_HOST=pi",
      `AUTO_UPGRADE_HOOKS=${q("chezmoi-pre-update.service absent.service")}`,
      "AUTO_UPGRADE_REQUIRED_HOOKS=chezmoi-pre-update.service",
    ].join(" ");
    const step = (s: string) => ssh(pi, `${env} bash ${q(dest)} ${s}`);
    for (const s of ["hooks", "pull"]) {
      const r = await step(s);
      expect(r.code, `${s}: ${r.stderr}`).toBe(0);
    }
    const validated = await step("validate");
    expect(validated.code, validated.stderr).toBe(0);
    const built = validated.stdout.trim();
    expect(built).toMatch(/-nixos-system-pi-nixos-lite$/);
    expect(built).not.toBe(before);
    const sw = await step(`switch ${q(built)}`);
    expect(sw.code, sw.stderr).toBe(0);
    expect(await currentSystem(pi)).toBe(built);
    expect(await fs.realpath(pi.profile)).toBe(built);
    expect((await hookLog(pi)).at(-1)).toMatch(/chezmoi-pre-update: dotfiles synced/);
    const log = (await journal(pi)).join("\n");
    expect(log).toMatch(/auto-upgrade: warning: pre-update hook absent\.service: unit not found/);
    expect(log).toContain(`auto-upgrade: === Switch PASSED: ${built} ===`);
    const units = await ssh(pi, "systemctl list-units");
    expect(units.stdout.split("\n")).toContain("motd.service");
  });

  it("stop() kills the sshd processes", async () => {
    const pids = await Promise.all(
      fleet.hosts.map(async (h) => Number(await fs.readFile(`${h.simRoot}/run/sshd.pid`, "utf8"))),
    );
    await fleet.stop();
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    const r = await ssh(malphas, "true");
    expect(r.code).toBe(255);
  });
});
