/**
 * `nixfleet render` as a user runs it: the real CLI (`node bin/nixfleet.js`) in a child
 * process, cwd the repo.
 *
 * 1. Golden files: the golden stack (test/golden/Pulumi.golden.yaml) renders to exactly the
 *    committed tree test/golden/expected/ — same file list, same bytes. `UPDATE_GOLDEN=1`
 *    rewrites expected/ instead (test/golden/README.md).
 * 2. Bad input: the golden stack broken one field at a time must fail with a non-zero exit,
 *    name the field and what is allowed, and write nothing at all (the other hosts are valid).
 * 3. Usage errors: exit 2.
 */
import { execFile } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve, sep } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseDocument } from "yaml";
import { agentFiles } from "../../render/files";

const REPO = resolve(__dirname, "..", "..");
const GOLDEN_DIR = join(REPO, "test", "golden");
const GOLDEN_STACK = join(GOLDEN_DIR, "Pulumi.golden.yaml");
const EXPECTED = join(GOLDEN_DIR, "expected");
const CLI = join(REPO, "bin", "nixfleet.js");

const tmp = mkdtempSync(join(tmpdir(), "nixfleet-cli-test-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/nixfleet.js ...args` in the repo; never throws on a non-zero exit. */
function cli(args: string[]): Promise<Run> {
  return new Promise((done, fail) => {
    execFile(process.execPath, [CLI, ...args], { cwd: REPO, encoding: "utf8", timeout: 60_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return fail(err);
      done({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/** Every file under `dir`, as sorted "/"-separated paths relative to it. */
function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(relative(dir, p).split(sep).join("/"));
    }
  };
  if (existsSync(dir)) walk(dir);
  return out.sort();
}

/** A short unified-style hunk around the first differing line of two texts. */
function diffHint(file: string, expected: string, actual: string): string {
  const a = expected.split("\n");
  const b = actual.split("\n");
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const ctx = 3;
  const from = Math.max(0, start - ctx);
  const cap = (lines: string[], mark: string) =>
    (lines.length > 20 ? [...lines.slice(0, 20), `… ${lines.length - 20} more`] : lines).map((l) => mark + l);
  return [
    `--- expected/${file}`,
    `+++ rendered/${file}`,
    `@@ -${from + 1},${endA - from + ctx} +${from + 1},${endB - from + ctx} @@`,
    ...a.slice(from, start).map((l) => " " + l),
    ...cap(a.slice(start, endA), "-"),
    ...cap(b.slice(start, endB), "+"),
    ...a.slice(endA, endA + ctx).map((l) => " " + l),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// 1. Golden files

describe("nixfleet render: golden files", () => {
  it("the golden stack covers what it is meant to cover", () => {
    const cfg = parseDocument(readFileSync(GOLDEN_STACK, "utf8")).toJS().config;
    const hosts = cfg["nixfleet:hosts"] as Record<string, unknown>[];
    expect(hosts.map((h) => h.role).sort()).toEqual(["desktop", "laptop", "pi", "server"]);
    expect(hosts.some((h) => h.configOwner !== undefined && h.configOwner !== "root")).toBe(true);
    expect(hosts.some((h) => "schedule" in h || "hostCanCommitConfig" in h || "randomizedDelaySec" in h)).toBe(true);
    expect(Object.keys(cfg["nixfleet:roles"] ?? {}).length).toBeGreaterThan(0);
  });

  it("renders byte for byte the tree in test/golden/expected/", async () => {
    const out = join(tmp, "golden-out");
    const run = await cli(["render", "--stack", "golden", "--stacks-dir", "test/golden", "--out", out]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    // Per host: its two rendered files, the module, the settings table and the agent's source.
    expect(run.stdout).toMatch(new RegExp(`^rendered ${4 * (4 + agentFiles().length)} files for stack golden into `));

    // The shipped module, settings table and agent are nixfleet's source (module and agent with a header), the same for every host
    // (render/files.test.ts pins that); the golden tree holds what is rendered from the config.
    const source = (f: string) => readFileSync(join(REPO, "nix", f), "utf8");
    for (const file of listFiles(out).filter((f) => f.includes("/modules/"))) {
      expect(readFileSync(join(out, file), "utf8").replace(/^# installed by nixfleet[^\n]*\n|^\/\/ installed by nixfleet[^\n]*\n\n/, ""), file).toBe(source(file.replace(/^[^/]+\//, "")));
      rmSync(join(out, file));
    }

    if (process.env.UPDATE_GOLDEN === "1") {
      rmSync(EXPECTED, { recursive: true, force: true });
      cpSync(out, EXPECTED, { recursive: true });
      console.warn(`UPDATE_GOLDEN=1: rewrote ${relative(REPO, EXPECTED)}; read the diff (git diff) before committing`);
    }

    const got = listFiles(out);
    const want = listFiles(EXPECTED);
    expect(got, "file list differs from test/golden/expected/ (UPDATE_GOLDEN=1 regenerates; read the diff)").toEqual(want);
    for (const file of want) {
      const e = readFileSync(join(EXPECTED, file));
      const r = readFileSync(join(out, file));
      if (!e.equals(r)) {
        throw new Error(
          `rendered ${file} differs from test/golden/expected/${file} ` +
            `(UPDATE_GOLDEN=1 regenerates; read the diff):\n${diffHint(file, e.toString("utf8"), r.toString("utf8"))}`,
        );
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Bad input: one broken field, nothing written

interface BadCase {
  name: string;
  /** [path in the YAML document, new value] edits applied to the golden stack. */
  edits: [(string | number)[], unknown][];
  /** Every pattern must appear in stderr: the field and what is allowed. */
  stderr: RegExp[];
}

const H = "nixfleet:hosts";
const BAD: BadCase[] = [
  {
    name: "a hook that is not a systemd unit name",
    edits: [[["config", H, 2, "preUpdateHooks"], ["chezmoi pre-update"]]],
    stderr: [/nixfleet:hosts\[2\]\.preUpdateHooks\[0\]: /, /"chezmoi pre-update" is not a systemd unit name; allowed: /, /\.service/],
  },
  {
    name: "a branch breaking git's ref rules",
    edits: [[["config", H, 0, "branch"], "a..b"]],
    stderr: [/nixfleet:hosts\[0\]\.branch: "a\.\.b": must not contain '\.\.'/],
  },
  {
    name: "a relative configPath",
    edits: [[["config", H, 1, "configPath"], "nix-config"]],
    stderr: [/nixfleet:hosts\[1\]\.configPath: "nix-config": must be an absolute path \(start with '\/'\)/],
  },
  {
    name: "a configPath containing ..",
    edits: [[["config", H, 3, "configPath"], "/home/nixfleet/../root/nix-config"]],
    stderr: [/nixfleet:hosts\[3\]\.configPath: "\/home\/nixfleet\/\.\.\/root\/nix-config": must not contain '\.\.'/],
  },
  {
    name: "a hostname outside RFC 1123",
    edits: [[["config", H, 3, "name"], "Bad_Host"]],
    stderr: [/nixfleet:hosts\[3\]\.name: "Bad_Host" is not allowed; allowed: an RFC 1123 label/],
  },
  {
    name: "a non-boolean flag",
    edits: [[["config", H, 1, "hostCanCommitConfig"], "yes"]],
    stderr: [/nixfleet:hosts\[1\]\.hostCanCommitConfig: must be true or false/],
  },
  {
    name: "an unknown host key",
    edits: [[["config", H, 0, "autoUpdate"], true]],
    stderr: [/nixfleet:hosts\[0\]: unknown key\(s\) "autoUpdate"; allowed: name, address, /],
  },
  {
    name: "an unknown role setting",
    edits: [[["config", "nixfleet:roles", "server", "validate"], false]],
    stderr: [/nixfleet:roles\.server: unknown key\(s\) "validate"; allowed: preUpdateValidation, /],
  },
  {
    name: "an unknown nixfleet: config key",
    edits: [[["config", "nixfleet:host"], []]],
    stderr: [/nixfleet:host: unknown key; allowed: nixfleet:roles, nixfleet:hosts, /],
  },
];

describe.concurrent("nixfleet render: bad input writes nothing", () => {
  BAD.forEach((c, i) => {
    it(c.name, async () => {
      const dir = join(tmp, `bad-${i}`);
      mkdirSync(dir);
      const doc = parseDocument(readFileSync(GOLDEN_STACK, "utf8"));
      for (const [path, value] of c.edits) doc.setIn(path, value);
      writeFileSync(join(dir, "Pulumi.broken.yaml"), doc.toString());
      // Every other case: the out dir exists and is empty, and must stay empty.
      const out = join(dir, "out");
      if (i % 2 === 1) mkdirSync(out);

      const run = await cli(["render", "--stack", "broken", "--stacks-dir", dir, "--out", out]);
      expect(run.code, run.stderr).not.toBe(0);
      expect(run.stdout).toBe("");
      expect(run.stderr).toContain(join(dir, "Pulumi.broken.yaml"));
      for (const re of c.stderr) expect(run.stderr).toMatch(re);
      if (i % 2 === 1) expect(readdirSync(out)).toEqual([]);
      else expect(existsSync(out)).toBe(false);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// 3. Usage errors

describe.concurrent("nixfleet render: usage", () => {
  const USAGE = /^usage: nixfleet render --stack <name> --out <dir> \[--stacks-dir <dir>\]$/m;

  it("without --stack: usage, exit 2", async () => {
    const run = await cli(["render", "--out", join(tmp, "u1")]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(USAGE);
    expect(existsSync(join(tmp, "u1"))).toBe(false);
  });

  it("without --out: usage, exit 2", async () => {
    const run = await cli(["render", "--stack", "golden", "--stacks-dir", "test/golden"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(USAGE);
  });

  it("an unknown option: usage, exit 2", async () => {
    const run = await cli(["render", "--stack", "golden", "--out", join(tmp, "u3"), "--bogus"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(USAGE);
    expect(existsSync(join(tmp, "u3"))).toBe(false);
  });

  it("a stack with no file: names the file, exit 2", async () => {
    const out = join(tmp, "u4");
    const run = await cli(["render", "--stack", "nosuch", "--stacks-dir", "test/golden", "--out", out]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(join("test", "golden", "Pulumi.nosuch.yaml"));
    expect(run.stderr).toMatch(/no such file|ENOENT|not found/i);
    expect(existsSync(out)).toBe(false);
  });
});
