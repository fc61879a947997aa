// Runs the real upgrade script (nix/modules/services/system/auto-upgrade.sh) under real bash, with real
// coreutils/jq/flock and fake nh, git, systemctl, logger, runuser, nix-env (test/script/fakes/) first on
// PATH. The fakes record their argv as JSON lines; assertions are on those calls, the exit code, the log
// (the fake logger's journal and stderr) and status.json. Test 4b uses the real git instead, against a
// local bare origin, for the commit-back race between two hosts.
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";

const SCRIPT = path.resolve(__dirname, "../../nix/modules/services/system/auto-upgrade.sh");
const FAKES = path.resolve(__dirname, "fakes");
const SHELLCHECK = "/usr/bin/shellcheck";
const HOST = "malphas";
const COMMIT_MESSAGE = /^chore\(malphas\): auto-update \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;

interface Call {
  cmd: string;
  argv: string[];
  user?: string;
  self?: string;
}

interface Status {
  host: string;
  lastRun: string;
  step: string;
  result: "running" | "success" | "failed";
  validatedPath: string | null;
  currentSystem: string | null;
  message: string;
}

interface Sandbox {
  root: string;
  bin: string;
  cfg: string;
  state: string;
  profile: string;
  store: string;
  initialSystem: string;
  callsFile: string;
  journalFile: string;
}

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

const sandboxes: string[] = [];
afterEach(() => {
  for (const dir of sandboxes.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A temp "host": fakes on PATH, a config checkout, a state dir and a profile pointing at an initial system. */
function sandbox(cfgName = "nix-config"): Sandbox {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "auto-upgrade-"));
  sandboxes.push(root);
  const bin = path.join(root, "bin");
  fs.mkdirSync(bin);
  for (const f of fs.readdirSync(FAKES)) {
    fs.copyFileSync(path.join(FAKES, f), path.join(bin, f));
    fs.chmodSync(path.join(bin, f), 0o755);
  }
  const cfg = path.join(root, cfgName);
  fs.mkdirSync(cfg);
  const store = path.join(root, "store");
  const initialSystem = path.join(store, "0".repeat(32) + "-initial-system");
  fs.mkdirSync(path.join(initialSystem, "bin"), { recursive: true });
  fs.mkdirSync(path.join(root, "profiles"));
  const profile = path.join(root, "profiles", "system");
  fs.symlinkSync(initialSystem, profile);
  const callsFile = path.join(root, "calls.jsonl");
  const journalFile = path.join(root, "journal.jsonl");
  fs.writeFileSync(callsFile, "");
  fs.writeFileSync(journalFile, "");
  return { root, bin, cfg, state: path.join(root, "state"), profile, store, initialSystem, callsFile, journalFile };
}

type Env = Record<string, string | undefined>;

function baseEnv(sb: Sandbox): Env {
  return {
    PATH: `${sb.bin}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    HOME: sb.root,
    LANG: "C.UTF-8",
    FAKE_CALLS: sb.callsFile,
    FAKE_JOURNAL: sb.journalFile,
    FAKE_STORE: sb.store,
    AUTO_UPGRADE_CONFIG_PATH: sb.cfg,
    AUTO_UPGRADE_FLAKE_HOST: HOST,
    AUTO_UPGRADE_STATE_DIR: sb.state,
    AUTO_UPGRADE_PROFILE: sb.profile,
  };
}

/**
 * Runs `bash auto-upgrade.sh ARGS` in the sandbox (cwd = sandbox root); `undefined` unsets a variable.
 * Asynchronous on purpose: spawnSync would block the vitest worker's event loop for the whole run.
 */
function run(sb: Sandbox, args: string[], env: Env = {}, command: string[] = ["bash", SCRIPT]): Promise<Result> {
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...baseEnv(sb), ...env })) if (v !== undefined) merged[k] = v;
  return new Promise((resolve, reject) => {
    const child = spawn(command[0], [...command.slice(1), ...args], { cwd: sb.root, env: merged });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

function readLines<T>(file: string): T[] {
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as T);
}

const calls = (sb: Sandbox) => readLines<Call>(sb.callsFile);
const callsOf = (sb: Sandbox, cmd: string) => calls(sb).filter((c) => c.cmd === cmd);
/** The fake logger appends `TAG NUL MSG NUL` per message (no jq: it runs for every log line). */
function journalEntries(sb: Sandbox): Array<{ tag: string; msg: string }> {
  const fields = fs.readFileSync(sb.journalFile, "utf8").split("\0");
  const out: Array<{ tag: string; msg: string }> = [];
  for (let i = 0; i + 1 < fields.length; i += 2) out.push({ tag: fields[i], msg: fields[i + 1] });
  return out;
}
const journal = (sb: Sandbox) => journalEntries(sb).map((e) => e.msg);
const status = (sb: Sandbox) => JSON.parse(fs.readFileSync(path.join(sb.state, "status.json"), "utf8")) as Status;
const gitVerbs = (sb: Sandbox) => callsOf(sb, "git").map((c) => c.argv[2]);
const validatedLink = (sb: Sandbox) => path.join(sb.state, "validated");

function expectLogged(sb: Sandbox, r: Result, pattern: RegExp) {
  expect(journal(sb).some((m) => pattern.test(m)), `journal has ${pattern}:\n${journal(sb).join("\n")}`).toBe(true);
  expect(r.stderr.split("\n").some((l) => pattern.test(l)), `stderr has ${pattern}:\n${r.stderr}`).toBe(true);
  expect(new Set(journalEntries(sb).map((e) => e.tag))).toEqual(new Set(["auto-upgrade"]));
}

function expectNoSwitch(sb: Sandbox) {
  expect(callsOf(sb, "nix-env")).toEqual([]);
  expect(callsOf(sb, "switch-to-configuration")).toEqual([]);
  expect(fs.readlinkSync(sb.profile)).toBe(sb.initialSystem);
}

describe("1. build validation fails", () => {
  it("run: exits non-zero, never switches, logs FAILED, records failed at validate, profile untouched", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], { FAKE_NH_BUILD_FAIL: "1" });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("");
    expectNoSwitch(sb);
    expectLogged(sb, r, /^=== Build Validation FAILED ===$/);
    // nh's own error reaches the journal, not just stderr (push mode's stderr is not in the journal).
    expect(journal(sb)).toContain(
      "nh: error: builder for '/nix/store/aaaa-nixos-system.drv' failed with exit code 1",
    );
    const s = status(sb);
    expect(s).toMatchObject({ host: HOST, step: "validate", result: "failed", validatedPath: null });
    expect(s.currentSystem).toBe(sb.initialSystem);
    expect(s.lastRun).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  });

  it("validate: a failed build drops the older validated link so a later switch cannot deploy it", async () => {
    const sb = sandbox();
    const ok = await run(sb, ["validate"]);
    expect(ok.status).toBe(0);
    const bad = await run(sb, ["validate"], { FAKE_NH_BUILD_FAIL: "1" });
    expect(bad.status).toBe(1);
    expect(bad.stdout).toBe("");
    expect(fs.existsSync(validatedLink(sb))).toBe(false);
    const sw = await run(sb, ["switch"]);
    expect(sw.status).toBe(1);
    expectLogged(sb, sw, /Switch REFUSED: no validated build/);
    expectNoSwitch(sb);
  });
});

describe("2. pre-update hooks", () => {
  const HOOKS = "chezmoi-pre-update.service b.service c@x.service";

  it("hooks: starts each hook in the configured order, before anything else", async () => {
    const sb = sandbox();
    const r = await run(sb, ["hooks"], { AUTO_UPGRADE_HOOKS: HOOKS, FAKE_SYSTEMD_UNITS: HOOKS });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("");
    const all = calls(sb);
    expect(all.every((c) => c.cmd === "systemctl")).toBe(true);
    expect(all.filter((c) => c.argv[0] === "start").map((c) => c.argv)).toEqual([
      ["start", "--", "chezmoi-pre-update.service"],
      ["start", "--", "b.service"],
      ["start", "--", "c@x.service"],
    ]);
    expectLogged(sb, r, /^=== Running pre-update hooks ===$/);
    expect(status(sb)).toMatchObject({ step: "hooks", result: "success" });
  });

  it("hooks: a failing hook stops the step: later hooks are not started", async () => {
    const sb = sandbox();
    const r = await run(sb, ["hooks"], {
      AUTO_UPGRADE_HOOKS: HOOKS,
      FAKE_SYSTEMD_UNITS: HOOKS,
      FAKE_SYSTEMD_START_FAIL: "b.service",
    });
    expect(r.status).toBe(1);
    expectLogged(sb, r, /^=== Pre-update hook b\.service FAILED ===$/);
    expect(callsOf(sb, "systemctl").filter((c) => c.argv[0] === "start").map((c) => c.argv[2])).toEqual([
      "chezmoi-pre-update.service",
      "b.service",
    ]);
    expect(status(sb)).toMatchObject({ step: "hooks", result: "failed" });
  });

  it("hooks: a missing unit is a warning and is skipped", async () => {
    const sb = sandbox();
    const r = await run(sb, ["hooks"], { AUTO_UPGRADE_HOOKS: "missing.service b.service", FAKE_SYSTEMD_UNITS: "b.service" });
    expect(r.status).toBe(0);
    expectLogged(sb, r, /^warning: pre-update hook missing\.service: unit not found, skipped$/);
    expect(callsOf(sb, "systemctl").filter((c) => c.argv[0] === "start").map((c) => c.argv[2])).toEqual([
      "b.service",
    ]);
  });

  it("hooks: a missing required unit fails", async () => {
    const sb = sandbox();
    const r = await run(sb, ["hooks"], {
      AUTO_UPGRADE_HOOKS: "missing.service b.service",
      AUTO_UPGRADE_REQUIRED_HOOKS: "missing.service",
      FAKE_SYSTEMD_UNITS: "b.service",
    });
    expect(r.status).toBe(1);
    expectLogged(sb, r, /=== Pre-update hook missing\.service FAILED: unit not found and it is required/);
    expect(callsOf(sb, "systemctl").filter((c) => c.argv[0] === "start")).toEqual([]);
    expect(status(sb)).toMatchObject({ step: "hooks", result: "failed" });
  });

  it("run: a failed hook (systemctl is-failed) aborts before pull", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], {
      AUTO_UPGRADE_HOOKS: HOOKS,
      FAKE_SYSTEMD_UNITS: HOOKS,
      FAKE_SYSTEMD_FAILED: "b.service",
    });
    expect(r.status).toBe(1);
    expectLogged(sb, r, /^=== Pre-update hook b\.service FAILED ===$/);
    expect(callsOf(sb, "git")).toEqual([]);
    expect(callsOf(sb, "nh")).toEqual([]);
    expectNoSwitch(sb);
    expect(
      callsOf(sb, "systemctl")
        .filter((c) => c.argv[0] === "is-failed")
        .map((c) => c.argv),
    ).toEqual([
      ["is-failed", "--quiet", "--", "chezmoi-pre-update.service"],
      ["is-failed", "--quiet", "--", "b.service"],
    ]);
    expect(status(sb)).toMatchObject({ step: "hooks", result: "failed" });
  });

  it("run: hooks were started by systemd, so run only checks them (no systemctl start)", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], { AUTO_UPGRADE_HOOKS: HOOKS, FAKE_SYSTEMD_UNITS: HOOKS });
    expect(r.status).toBe(0);
    expect(callsOf(sb, "systemctl").some((c) => c.argv[0] === "start")).toBe(false);
    // The hook checks come first.
    expect(calls(sb).slice(0, 3).every((c) => c.cmd === "systemctl")).toBe(true);
  });

  it("run: a missing required unit fails before pull (systemd's wants ignores missing units)", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], {
      AUTO_UPGRADE_HOOKS: "missing.service",
      AUTO_UPGRADE_REQUIRED_HOOKS: "missing.service",
    });
    expect(r.status).toBe(1);
    expectLogged(sb, r, /Pre-update hook missing\.service FAILED: unit not found/);
    expect(callsOf(sb, "git")).toEqual([]);
  });
});

describe("3. git pull fails (no network)", () => {
  it("run: clear log line with git's message, no build, no switch, exit non-zero", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], { FAKE_GIT_PULL_FAIL: "1" });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("");
    expectLogged(sb, r, /^=== git pull FAILED \(origin main\): .*Could not resolve host: example\.invalid ===$/);
    expect(callsOf(sb, "nh")).toEqual([]);
    expectNoSwitch(sb);
    expect(callsOf(sb, "git").map((c) => c.argv)).toEqual([["-C", sb.cfg, "pull", "--ff-only", "--", "origin", "main"]]);
    const s = status(sb);
    expect(s).toMatchObject({ step: "pull", result: "failed" });
    expect(s.message).toMatch(/git pull FAILED.*Could not resolve host/);
  });

  it("pull never discards local edits: only `git pull --ff-only`, no reset/stash/checkout", async () => {
    const sb = sandbox();
    const r = await run(sb, ["pull"], { AUTO_UPGRADE_REMOTE: "upstream", AUTO_UPGRADE_BRANCH: "release" });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(""); // git's "Already up to date." went to stderr
    expect(r.stderr).toContain("Already up to date.");
    expect(callsOf(sb, "git").map((c) => c.argv)).toEqual([
      ["-C", sb.cfg, "pull", "--ff-only", "--", "upstream", "release"],
    ]);
    expect(status(sb)).toMatchObject({ step: "pull", result: "success" });
  });
});

describe("4. commit-back", () => {
  it("COMMIT=true: add, commit with the exact message, rebase onto the branch, push HEAD:branch, after the switch", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], { AUTO_UPGRADE_COMMIT: "true" });
    expect(r.status).toBe(0);
    const git = callsOf(sb, "git");
    expect(git.map((c) => c.argv.slice(2))).toEqual([
      ["pull", "--ff-only", "--", "origin", "main"],
      ["add", "-u"],
      ["diff", "--cached", "--quiet"],
      ["commit", "-m", expect.stringMatching(COMMIT_MESSAGE)],
      ["pull", "--rebase", "--no-autostash", "--", "origin", "main"],
      ["push", "--", "origin", "HEAD:main"],
    ]);
    expect(git.every((c) => c.argv[0] === "-C" && c.argv[1] === sb.cfg)).toBe(true);
    const all = calls(sb);
    const switched = all.findIndex((c) => c.cmd === "switch-to-configuration");
    const committed = all.findIndex((c) => c.cmd === "git" && c.argv[2] === "commit");
    expect(switched).toBeGreaterThanOrEqual(0);
    expect(committed).toBeGreaterThan(switched);
    expect(status(sb)).toMatchObject({ step: "run", result: "success" });
  });

  it("a refused push is retried after a new rebase, three times, then a warning: exit 0, commit kept, warning logged and recorded", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], { AUTO_UPGRADE_COMMIT: "true", FAKE_GIT_PUSH_FAIL: "1" });
    expect(r.status).toBe(0);
    expectLogged(sb, r, /^=== Commit-back push FAILED \(warning\): .*Could not read from remote repository\. ===$/);
    expect(gitVerbs(sb)).toEqual(["pull", "add", "diff", "commit", "pull", "push", "pull", "push", "pull", "push"]);
    // Every push attempt comes right after a rebase onto the branch, and nothing was undone.
    const git = callsOf(sb, "git").map((c) => c.argv.slice(2));
    const commit = git.findIndex((a) => a[0] === "commit");
    for (const i of [commit + 1, commit + 3, commit + 5]) {
      expect(git[i]).toEqual(["pull", "--rebase", "--no-autostash", "--", "origin", "main"]);
      expect(git[i + 1]).toEqual(["push", "--", "origin", "HEAD:main"]);
    }
    expect(git.some((a) => a[0] === "rebase")).toBe(false);
    expectLogged(sb, r, /^Commit-back: push attempt 1 refused, rebasing again: /);
    const s = status(sb);
    expect(s).toMatchObject({ step: "run", result: "success" });
    expect(s.message).toMatch(/warning: commit-back push failed, commit kept locally: .*Could not read from remote repository\.\)$/);

    const sb2 = sandbox();
    const c = await run(sb2, ["commit"], { AUTO_UPGRADE_COMMIT: "true", FAKE_GIT_PUSH_FAIL: "1" });
    expect(c.status).toBe(0);
    expect(status(sb2)).toMatchObject({ step: "commit", result: "success" });
    expect(status(sb2).message).toMatch(/push FAILED \(warning\)/);
  });

  it("a failed rebase onto the branch is a warning: exit 0, rebase aborted, no push, warning logged and recorded", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], { AUTO_UPGRADE_COMMIT: "true", FAKE_GIT_REBASE_FAIL: "1" });
    expect(r.status).toBe(0);
    expect(callsOf(sb, "git").map((c) => c.argv.slice(2))).toEqual([
      ["pull", "--ff-only", "--", "origin", "main"],
      ["add", "-u"],
      ["diff", "--cached", "--quiet"],
      ["commit", "-m", expect.stringMatching(COMMIT_MESSAGE)],
      ["pull", "--rebase", "--no-autostash", "--", "origin", "main"],
      ["rebase", "--abort"],
    ]);
    expectLogged(
      sb,
      r,
      /^=== Commit-back rebase FAILED \(warning\): CONFLICT \(content\): Merge conflict in flake\.lock \| .*Could not apply abc1234\.\.\. chore: auto-update ===$/,
    );
    expect(journal(sb)).toContain("git: CONFLICT (content): Merge conflict in flake.lock");
    expect(journal(sb).some((m) => /push/i.test(m))).toBe(false);
    const s = status(sb);
    expect(s).toMatchObject({ step: "run", result: "success" });
    expect(s.message).toMatch(
      /\(warning: commit-back could not rebase onto origin\/main, commit kept locally: CONFLICT \(content\): Merge conflict in flake\.lock .*\)$/,
    );

    // The commit step alone, as another user: the abort goes through runuser like every git call.
    const sb2 = sandbox();
    const c = await run(sb2, ["commit"], {
      AUTO_UPGRADE_COMMIT: "true",
      AUTO_UPGRADE_USER: "alice",
      AUTO_UPGRADE_REMOTE: "upstream",
      AUTO_UPGRADE_BRANCH: "release",
      FAKE_GIT_REBASE_FAIL: "1",
    });
    expect(c.status).toBe(0);
    expect(callsOf(sb2, "runuser").map((x) => x.argv.slice(6))).toEqual([
      ["add", "-u"],
      ["diff", "--cached", "--quiet"],
      ["commit", "-m", expect.stringMatching(COMMIT_MESSAGE)],
      ["pull", "--rebase", "--no-autostash", "--", "upstream", "release"],
      ["rebase", "--abort"],
    ]);
    expect(callsOf(sb2, "runuser").every((x) => x.argv.slice(0, 6).join("\0") === ["-u", "alice", "--", "git", "-C", sb2.cfg].join("\0"))).toBe(true);
    expect(callsOf(sb2, "git").every((x) => x.user === "alice")).toBe(true);
    expect(callsOf(sb2, "git")).toHaveLength(5);
    expect(status(sb2)).toMatchObject({ step: "commit", result: "success" });
    expect(status(sb2).message).toMatch(/^Commit-back committed locally; rebase onto upstream\/release FAILED \(warning\): CONFLICT/);
  });

  it("COMMIT=false (and by default): no git add/commit/push at all", async () => {
    for (const commit of ["false", undefined]) {
      const sb = sandbox();
      const r = await run(sb, ["run"], { AUTO_UPGRADE_COMMIT: commit });
      expect(r.status).toBe(0);
      expect(gitVerbs(sb)).toEqual(["pull"]);
      expectLogged(sb, r, /commit-back disabled/);

      const sb2 = sandbox();
      const c = await run(sb2, ["commit"], { AUTO_UPGRADE_COMMIT: commit });
      expect(c.status).toBe(0);
      expect(calls(sb2)).toEqual([]);
      expect(status(sb2)).toMatchObject({ step: "commit", result: "success" });
    }
  });

  it("nothing staged: no commit, no push", async () => {
    const sb = sandbox();
    const r = await run(sb, ["commit"], { AUTO_UPGRADE_COMMIT: "true", FAKE_GIT_NOTHING_STAGED: "1" });
    expect(r.status).toBe(0);
    expect(gitVerbs(sb)).toEqual(["add", "diff"]);
    expectLogged(sb, r, /nothing to commit/);
  });

  it("a failed commit fails the step", async () => {
    const sb = sandbox();
    const r = await run(sb, ["commit"], { AUTO_UPGRADE_COMMIT: "true", FAKE_GIT_COMMIT_FAIL: "1" });
    expect(r.status).toBe(1);
    expectLogged(sb, r, /Commit-back FAILED: git commit: Author identity unknown/);
    expect(gitVerbs(sb)).toEqual(["add", "diff", "commit"]);
    expect(status(sb)).toMatchObject({ step: "commit", result: "failed" });
  });
});

describe("4b. commit-back with real git: two hosts committing back to the same branch", () => {
  it("the second host rebases onto the first host's commit: both pushed, linear history, ff-only pulls keep working", async () => {
    const sb = sandbox();
    fs.rmSync(path.join(sb.bin, "git")); // the real git from here on; the fake logger still records the journal
    const me = spawnSync("id", ["-un"], { encoding: "utf8" }).stdout.trim();
    const gitEnv: Env = {
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_CONFIG_GLOBAL: "/dev/null",
      GIT_AUTHOR_NAME: "auto-upgrade",
      GIT_AUTHOR_EMAIL: "auto-upgrade@example.invalid",
      GIT_COMMITTER_NAME: "auto-upgrade",
      GIT_COMMITTER_EMAIL: "auto-upgrade@example.invalid",
    };
    const git = (cwd: string, ...args: string[]) => {
      const r = spawnSync("git", args, { cwd, encoding: "utf8", env: { ...process.env, HOME: sb.root, ...gitEnv } });
      expect(r.status, `git ${args.join(" ")}:\n${r.stdout}${r.stderr}`).toBe(0);
      return r.stdout.trim();
    };
    const origin = path.join(sb.root, "origin.git");
    const [a, b] = [path.join(sb.root, "desktop"), path.join(sb.root, "laptop")];
    git(sb.root, "init", "-q", "--bare", "-b", "main", origin);
    git(sb.root, "init", "-q", "-b", "main", sb.cfg);
    fs.writeFileSync(path.join(sb.cfg, "flake.nix"), "{ }\n");
    git(sb.cfg, "add", "-A");
    git(sb.cfg, "commit", "-q", "-m", "seed");
    git(sb.cfg, "push", "-q", origin, "main");
    // Both hosts are up to date with origin before either commits back.
    git(sb.root, "clone", "-q", origin, a);
    git(sb.root, "clone", "-q", origin, b);

    const commitBack = (cfg: string, host: string) =>
      run(sb, ["commit"], {
        ...gitEnv,
        AUTO_UPGRADE_CONFIG_PATH: cfg,
        AUTO_UPGRADE_FLAKE_HOST: host,
        AUTO_UPGRADE_STATE_DIR: path.join(sb.root, `state-${host}`),
        AUTO_UPGRADE_USER: me,
        AUTO_UPGRADE_COMMIT: "true",
      });
    const statusOf = (host: string) =>
      JSON.parse(fs.readFileSync(path.join(sb.root, `state-${host}`, "status.json"), "utf8")) as Status;

    // As the copy step leaves them: nixfleet's files staged. An untracked file (invisible to the
    // build, maybe private) must stay local: origin's tree is checked exactly below.
    fs.writeFileSync(path.join(a, "desktop.lock"), "desktop\n");
    git(a, "add", "--", "desktop.lock");
    fs.writeFileSync(path.join(a, "notes-untracked.txt"), "private\n");
    const ra = await commitBack(a, "desktop");
    expect(ra.status, ra.stderr).toBe(0);
    expect(statusOf("desktop")).toMatchObject({ step: "commit", result: "success", message: "Commit-back PASSED: pushed to origin main" });

    // The laptop's checkout is now behind origin; without the rebase its push would be refused.
    fs.writeFileSync(path.join(b, "laptop.lock"), "laptop\n");
    git(b, "add", "--", "laptop.lock");
    const rb = await commitBack(b, "laptop");
    expect(rb.status, rb.stderr).toBe(0);
    expect(rb.stderr).not.toMatch(/FAILED/);
    expect(statusOf("laptop")).toMatchObject({ step: "commit", result: "success", message: "Commit-back PASSED: pushed to origin main" });

    // Origin: seed, then the desktop's commit, then the laptop's on top; no merge commits.
    expect(git(origin, "log", "--format=%s", "main").split("\n")).toEqual([
      expect.stringMatching(/^chore\(laptop\): auto-update /),
      expect.stringMatching(/^chore\(desktop\): auto-update /),
      "seed",
    ]);
    expect(git(origin, "rev-list", "--merges", "main")).toBe("");
    expect(git(origin, "ls-tree", "-r", "--name-only", "main").split("\n").sort()).toEqual([
      "desktop.lock",
      "flake.nix",
      "laptop.lock",
    ]);
    expect(git(b, "rev-parse", "HEAD")).toBe(git(origin, "rev-parse", "main"));
    expect(git(b, "status", "--porcelain")).toBe("");

    // The next timer run's `git pull --ff-only` succeeds on both hosts.
    git(b, "pull", "--ff-only", "--", "origin", "main");
    git(a, "pull", "--ff-only", "--", "origin", "main");
    expect(git(a, "rev-parse", "HEAD")).toBe(git(origin, "rev-parse", "main"));
    expect(fs.readFileSync(path.join(a, "laptop.lock"), "utf8")).toBe("laptop\n");
    expect(fs.readFileSync(path.join(a, "notes-untracked.txt"), "utf8")).toBe("private\n");

    // A commit-back whose push failed leaves the laptop ahead while origin moves on: the next pull
    // replays the laptop's commit instead of failing every run from then on.
    fs.writeFileSync(path.join(b, "unpushed.lock"), "laptop\n");
    git(b, "add", "--", "unpushed.lock");
    git(b, "commit", "-q", "-m", "chore(laptop): auto-update (push failed)");
    fs.writeFileSync(path.join(a, "desktop.lock"), "desktop 2\n");
    git(a, "commit", "-q", "-am", "desktop moves on");
    git(a, "push", "-q", "origin", "main");
    const pullB = (commit: string) =>
      run(sb, ["pull"], { ...gitEnv, AUTO_UPGRADE_CONFIG_PATH: b, AUTO_UPGRADE_FLAKE_HOST: "laptop", AUTO_UPGRADE_STATE_DIR: path.join(sb.root, "state-laptop"), AUTO_UPGRADE_USER: me, AUTO_UPGRADE_COMMIT: commit });
    const refused = await pullB("false");
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/=== git pull FAILED \(origin main\): .*(Not possible to fast-forward|diverg)/);
    const dirty = path.join(b, "flake.nix");
    fs.writeFileSync(dirty, "{ } # local edit\n");
    const keptEdit = await pullB("true");
    expect(keptEdit.status).toBe(1);
    expect(fs.readFileSync(dirty, "utf8")).toBe("{ } # local edit\n");
    git(b, "checkout", "--", "flake.nix");
    const replayed = await pullB("true");
    expect(replayed.status, replayed.stderr).toBe(0);
    expect(replayed.stderr).toMatch(/replaying this host's unpushed commit-back commits/);
    expect(git(b, "log", "--format=%s", "-2").split("\n")).toEqual(["chore(laptop): auto-update (push failed)", "desktop moves on"]);
  });
});

describe("5. what is validated is what is deployed", () => {
  it("run: exactly one build, switch to its store path, no flake update anywhere", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], { AUTO_UPGRADE_HOOKS: "a.service", FAKE_SYSTEMD_UNITS: "a.service" });
    expect(r.status).toBe(0);
    const nh = callsOf(sb, "nh");
    expect(nh.map((c) => c.argv)).toEqual([
      ["os", "build", "-R", "-H", HOST, "-o", validatedLink(sb), "--", sb.cfg],
    ]);
    // Nix fetches the flake with git as root: the checkout (often a user's) is trusted for that call.
    expect(fs.readFileSync(`${sb.callsFile}.nh-env`, "utf8").trim().split("\n")).toEqual([
      "GIT_CONFIG_COUNT=1",
      "GIT_CONFIG_KEY_0=safe.directory",
      `GIT_CONFIG_VALUE_0=${sb.cfg}`,
    ]);
    const validated = fs.readlinkSync(validatedLink(sb));
    expect(validated.startsWith(sb.store + "/")).toBe(true);
    expect(r.stdout).toBe(validated + "\n");
    expect(callsOf(sb, "nix-env").map((c) => c.argv)).toEqual([["-p", sb.profile, "--set", validated]]);
    expect(callsOf(sb, "switch-to-configuration")).toEqual([
      { cmd: "switch-to-configuration", self: path.join(validated, "bin/switch-to-configuration"), argv: ["switch"] },
    ]);
    expect(fs.readlinkSync(sb.profile)).toBe(validated);
    for (const c of calls(sb)) {
      for (const a of c.argv) expect(a).not.toMatch(/^(-u|--update|update)$/);
      expect(c.argv.join(" ")).not.toMatch(/flake update/);
    }
    expect(status(sb)).toMatchObject({
      step: "run",
      result: "success",
      validatedPath: validated,
      currentSystem: validated,
    });
    expectLogged(sb, r, new RegExp(`^=== Build Validation PASSED: ${validated} ===$`));
    expectLogged(sb, r, new RegExp(`^=== Switch PASSED: ${validated} ===$`));
  });

  it("validate prints the store path as the only stdout line; switch (default and explicit) deploys it", async () => {
    const sb = sandbox();
    const v = await run(sb, ["validate"]);
    expect(v.status).toBe(0);
    const validated = fs.readlinkSync(validatedLink(sb));
    expect(v.stdout).toBe(validated + "\n"); // the fake nh's stdout chatter went to stderr
    expect(v.stderr).toContain("building the system configuration...");
    expectNoSwitch(sb);
    expect(status(sb)).toMatchObject({ step: "validate", result: "success", validatedPath: validated });

    const s1 = await run(sb, ["switch", validated]);
    expect(s1.status).toBe(0);
    expect(s1.stdout).toBe(validated + "\n");
    const s2 = await run(sb, ["switch"]);
    expect(s2.status).toBe(0);
    expect(callsOf(sb, "nix-env").map((c) => c.argv[3])).toEqual([validated, validated]);
    expect(callsOf(sb, "nh")).toHaveLength(1);
    expect(status(sb)).toMatchObject({ step: "switch", result: "success", currentSystem: validated });
  });

  it("VALIDATE=false: one `nh os switch` (no -u), logged as validation disabled", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], { AUTO_UPGRADE_VALIDATE: "false" });
    expect(r.status).toBe(0);
    expect(callsOf(sb, "nh").map((c) => c.argv)).toEqual([["os", "switch", "-R", "-H", HOST, "--", sb.cfg]]);
    expectLogged(sb, r, /validation disabled/);
    expect(callsOf(sb, "nix-env")).toEqual([]);
    const current = fs.readlinkSync(sb.profile);
    expect(r.stdout).toBe(current + "\n");
    expect(status(sb)).toMatchObject({ step: "run", result: "success", currentSystem: current });
  });

  it("switch-to-configuration failing is a failed switch step", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], { FAKE_SWITCH_FAIL: "1" });
    expect(r.status).toBe(1);
    expectLogged(sb, r, /^=== Switch FAILED: switch-to-configuration switch exited non-zero/);
    expect(status(sb)).toMatchObject({ step: "switch", result: "failed" });
  });
});

describe("6. switch refuses anything but the validated build", () => {
  it("switch /nix/store/other: exit 1, not the validated build, nothing touched", async () => {
    const sb = sandbox();
    expect((await run(sb, ["validate"])).status).toBe(0);
    const validated = fs.readlinkSync(validatedLink(sb));
    const r = await run(sb, ["switch", "/nix/store/other"]);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("");
    expectLogged(sb, r, new RegExp(`^=== Switch REFUSED: /nix/store/other is not the validated build \\(${validated}\\) ===$`));
    expectNoSwitch(sb);
    expect(status(sb)).toMatchObject({ step: "switch", result: "failed", validatedPath: validated });
  });

  it("switch with no validated build refuses", async () => {
    const sb = sandbox();
    const r = await run(sb, ["switch"]);
    expect(r.status).toBe(1);
    expectLogged(sb, r, /Switch REFUSED: no validated build/);
    expectNoSwitch(sb);
  });
});

describe("7. git runs as the checkout owner", () => {
  it("AUTO_UPGRADE_USER differs from the current user: git goes through runuser", async () => {
    const sb = sandbox();
    const r = await run(sb, ["run"], { AUTO_UPGRADE_USER: "alice", AUTO_UPGRADE_COMMIT: "true" });
    expect(r.status).toBe(0);
    const ru = callsOf(sb, "runuser");
    const prefix = ["-u", "alice", "--", "git", "-C", sb.cfg];
    expect(ru.map((c) => c.argv)).toEqual([
      [...prefix, "pull", "--ff-only", "--", "origin", "main"],
      [...prefix, "add", "-u"],
      [...prefix, "diff", "--cached", "--quiet"],
      [...prefix, "commit", "-m", expect.stringMatching(COMMIT_MESSAGE)],
      [...prefix, "pull", "--rebase", "--no-autostash", "--", "origin", "main"],
      [...prefix, "push", "--", "origin", "HEAD:main"],
    ]);
    expect(callsOf(sb, "git")).toHaveLength(ru.length);
    expect(callsOf(sb, "git").every((c) => c.user === "alice")).toBe(true);
  });

  it("AUTO_UPGRADE_USER equal to the current user: git runs directly", async () => {
    const sb = sandbox();
    const me = spawnSync("id", ["-un"], { encoding: "utf8" }).stdout.trim();
    const r = await run(sb, ["pull"], { AUTO_UPGRADE_USER: me });
    expect(r.status).toBe(0);
    expect(callsOf(sb, "runuser")).toEqual([]);
    expect(callsOf(sb, "git")).toHaveLength(1);
  });

  it.skipIf(process.getuid?.() !== 0)("default user is the owner of the checkout (stat -c %U)", async () => {
    const sb = sandbox();
    fs.chownSync(sb.cfg, 65534, 65534);
    const owner = spawnSync("stat", ["-c", "%U", sb.cfg], { encoding: "utf8" }).stdout.trim();
    const r = await run(sb, ["pull"]);
    expect(r.status).toBe(0);
    expect(callsOf(sb, "runuser").map((c) => c.argv.slice(0, 3))).toEqual([["-u", owner, "--"]]);
    expect(callsOf(sb, "git")[0].user).toBe(owner);
  });
});

describe("8. bad settings exit 2 naming the variable", () => {
  const cases: Array<[string, Env, RegExp]> = [
    ["relative CONFIG_PATH", { AUTO_UPGRADE_CONFIG_PATH: "nix-config" }, /AUTO_UPGRADE_CONFIG_PATH must be an absolute path/],
    ["missing CONFIG_PATH", { AUTO_UPGRADE_CONFIG_PATH: undefined }, /AUTO_UPGRADE_CONFIG_PATH is required/],
    ["missing FLAKE_HOST", { AUTO_UPGRADE_FLAKE_HOST: undefined }, /AUTO_UPGRADE_FLAKE_HOST is required/],
    ["VALIDATE=yes", { AUTO_UPGRADE_VALIDATE: "yes" }, /AUTO_UPGRADE_VALIDATE must be exactly 'true' or 'false', got 'yes'/],
    ["COMMIT=1", { AUTO_UPGRADE_COMMIT: "1" }, /AUTO_UPGRADE_COMMIT must be exactly 'true' or 'false', got '1'/],
    ["hook foo;rm -rf /", { AUTO_UPGRADE_HOOKS: "a.service foo;rm -rf /" }, /AUTO_UPGRADE_HOOKS: 'foo;rm' is not a systemd unit name/],
    ["hook with a newline", { AUTO_UPGRADE_HOOKS: "a.service\nb.service" }, /AUTO_UPGRADE_HOOKS: 'a\.service\nb\.service' is not a systemd unit name/],
    ["required hook not in hooks", { AUTO_UPGRADE_HOOKS: "a.service", AUTO_UPGRADE_REQUIRED_HOOKS: "b.service" }, /AUTO_UPGRADE_REQUIRED_HOOKS: 'b\.service' is not in AUTO_UPGRADE_HOOKS/],
    ["relative STATE_DIR", { AUTO_UPGRADE_STATE_DIR: "state" }, /AUTO_UPGRADE_STATE_DIR must be an absolute path/],
    ["bad USER", { AUTO_UPGRADE_USER: "-o evil" }, /AUTO_UPGRADE_USER must be a user name/],
  ];
  it.each(cases)("%s", async (_name, env, message) => {
    const sb = sandbox();
    for (const step of ["run", "hooks", "validate"]) {
      const r = await run(sb, [step], env);
      expect(r.status).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(message);
      expect(journal(sb).some((m) => message.test(m))).toBe(true);
    }
    expect(calls(sb)).toEqual([]);
    expect(fs.existsSync(path.join(sb.state, "status.json"))).toBe(false);
  });

  it("unknown step and stray arguments exit 2", async () => {
    const sb = sandbox();
    expect((await run(sb, ["deploy"])).status).toBe(2);
    expect((await run(sb, ["deploy"])).stderr).toMatch(/unknown step 'deploy'/);
    expect((await run(sb, ["validate", "extra"])).status).toBe(2);
    expect((await run(sb, ["switch", "/a", "/b"])).status).toBe(2);
    expect(calls(sb)).toEqual([]);
  });
});

describe("9. hostile values stay data", () => {
  const evil = `x "$(touch canary)" '$(touch canary)' \`touch canary\`; touch canary`;

  it("branch, remote, flake host and config path with spaces, quotes and $(...) reach the tools verbatim", async () => {
    const sb = sandbox(`nix config ${evil.replace(/\//g, "_")}`);
    const host = `mal phas ${evil}`;
    const r = await run(sb, ["run"], {
      AUTO_UPGRADE_FLAKE_HOST: host,
      AUTO_UPGRADE_BRANCH: `main ${evil}`,
      AUTO_UPGRADE_REMOTE: `-origin ${evil}`,
      AUTO_UPGRADE_COMMIT: "true",
    });
    expect(r.status).toBe(0);
    expect(fs.existsSync(path.join(sb.root, "canary"))).toBe(false);
    const git = callsOf(sb, "git");
    expect(git[0].argv).toEqual(["-C", sb.cfg, "pull", "--ff-only", "--", `-origin ${evil}`, `main ${evil}`]);
    expect(git[3].argv[4].startsWith(`chore(${host}): auto-update `)).toBe(true);
    expect(git[4].argv).toEqual(["-C", sb.cfg, "pull", "--rebase", "--no-autostash", "--", `-origin ${evil}`, `main ${evil}`]);
    expect(git[5].argv).toEqual(["-C", sb.cfg, "push", "--", `-origin ${evil}`, `HEAD:main ${evil}`]);
    expect(git).toHaveLength(6);
    expect(callsOf(sb, "nh")[0].argv).toEqual(["os", "build", "-R", "-H", host, "-o", validatedLink(sb), "--", sb.cfg]);
    expect(status(sb).host).toBe(host);
  });

  it("a hostile hook is rejected (exit 2) and never runs", async () => {
    const sb = sandbox();
    for (const hooks of [`a.service $(touch canary)`, "`touch canary`.service", "a.service;touch canary"]) {
      const r = await run(sb, ["hooks"], { AUTO_UPGRADE_HOOKS: hooks, FAKE_SYSTEMD_UNITS: "a.service" });
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/AUTO_UPGRADE_HOOKS/);
    }
    expect(calls(sb)).toEqual([]);
    expect(fs.existsSync(path.join(sb.root, "canary"))).toBe(false);
  });

  it("a hostile switch path is refused and never runs", async () => {
    const sb = sandbox();
    expect((await run(sb, ["validate"])).status).toBe(0);
    const r = await run(sb, ["switch", `$(touch canary)`]);
    expect(r.status).toBe(1);
    expect(fs.existsSync(path.join(sb.root, "canary"))).toBe(false);
    expectNoSwitch(sb);
  });
});

describe("status record", () => {
  it("status prints status.json; writes leave no temp files behind", async () => {
    const sb = sandbox();
    expect((await run(sb, ["status"])).status).toBe(1); // no record yet
    expect((await run(sb, ["run"])).status).toBe(0);
    const r = await run(sb, ["status"]);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(status(sb));
    expect(Object.keys(status(sb))).toEqual([
      "host",
      "lastRun",
      "step",
      "result",
      "validatedPath",
      "currentSystem",
      "message",
    ]);
    expect(fs.readdirSync(sb.state).sort()).toEqual(["lock", "status.json", "validated"]);
  });

  it("an unexpected failure still records failed with the step name (ERR/EXIT trap)", async () => {
    const sb = sandbox();
    // `id -un` failing is not a handled case: errexit fires inside the pull step.
    fs.writeFileSync(path.join(sb.bin, "id"), "#!/usr/bin/env bash\nexit 3\n", { mode: 0o755 });
    const r = await run(sb, ["run"]);
    expect(r.status).not.toBe(0);
    expect(callsOf(sb, "git")).toEqual([]);
    expectLogged(sb, r, /=== Step pull FAILED unexpectedly/);
    const s = status(sb);
    expect(s).toMatchObject({ step: "pull", result: "failed" });
    expect(s.message).toMatch(/unexpected failure in step pull/);
  });

  it("a second run while one holds the lock is refused without touching the record", async () => {
    const sb = sandbox();
    fs.mkdirSync(sb.state);
    const r = await run(sb, ["validate"], {}, ["flock", path.join(sb.state, "lock"), "bash", SCRIPT]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/another run holds/);
    expect(callsOf(sb, "nh")).toEqual([]);
    expect(fs.existsSync(path.join(sb.state, "status.json"))).toBe(false);
  });
});

describe("shellcheck", () => {
  it("passes on the script as-is", async () => {
    const r = spawnSync(SHELLCHECK, [SCRIPT], { encoding: "utf8" });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("passes on the script as writeShellApplication wraps it", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "auto-upgrade-sc-"));
    sandboxes.push(dir);
    const wrapped = path.join(dir, "auto-upgrade");
    fs.writeFileSync(
      wrapped,
      "#!/usr/bin/env bash\nset -o errexit -o nounset -o pipefail\n" + fs.readFileSync(SCRIPT, "utf8"),
    );
    const r = spawnSync(SHELLCHECK, [wrapped], { encoding: "utf8" });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });
});
