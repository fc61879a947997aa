// nix/push-bootstrap.sh (docs/rollout.md §5), the JSON escaper, shellcheck of both shipped files, and a
// push on a PATH with only stock NixOS tools (no jq, no nh).
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { BOOTSTRAP, bundle, cleanupHosts, confirm, makeHost, push, pushFiles, run, SCRIPT, sha256, status, type Host } from "./harness";

afterEach(cleanupHosts);

async function bootstrap(h: Host, text: string, env: Record<string, string> = {}) {
  return run(["bash", "-c", fs.readFileSync(BOOTSTRAP, "utf8"), "nixfleet-push"], { ...h.env, ...env }, text);
}

/** A refusal: exit 1, one stderr line, no stdout, no stage left, nothing installed or recorded. */
function expectRefused(h: Host, r: { code: number | null; stdout: string; stderr: string }, reason: RegExp) {
  expect(r.code).toBe(1);
  expect(r.stdout).toBe("");
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toMatch(reason);
  expect(fs.readdirSync(path.join(h.root, "tmp"))).toEqual([]);
  expect(fs.existsSync(path.join(h.state, "status.json"))).toBe(false);
}

describe("push-bootstrap.sh", () => {
  it("a good bundle runs the staged script's push; AUTO_UPGRADE_RETRY makes the token <T>-r<N>", async () => {
    const h = makeHost();
    const files = pushFiles(h, [{ path: "roles/form-desktop.nix", content: "{ }\n" }]);
    const r = await push(h, files, { AUTO_UPGRADE_RETRY: "3" });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).rollout).toBe(`${r.token}-r3`);
    expect(fs.readFileSync(path.join(h.cfg, "roles/form-desktop.nix"), "utf8")).toBe("{ }\n");
    expect(fs.readdirSync(path.join(h.root, "tmp"))).toEqual([]);
    expect((await confirm(h, `${r.token}-r3`)).code).toBe(0);
  });

  it("refuses a file whose content does not match its sha256", async () => {
    const h = makeHost();
    const b = bundle(pushFiles(h, [{ path: "roles/x.nix", content: "{ }\n" }])).replace("\n{ }\n", "\n{ evil = true; }\n");
    expectRefused(h, await bootstrap(h, b), /roles\/x\.nix: sha256 mismatch/);
  });

  it("refuses paths that climb out, are absolute or have '.' segments", async () => {
    const h = makeHost();
    for (const [bad, why] of [["../evil.nix", /not allowed/], ["/etc/evil.nix", /bad file header/], ["roles/./x.nix", /not allowed/], ["a//b", /bad file header/]] as const) {
      const good = bundle(pushFiles(h, [{ path: "roles/x.nix", content: "{ }\n" }]));
      const b = good.replace(/ roles\/x\.nix\n/, ` ${bad}\n`);
      expect(b).not.toBe(good);
      expectRefused(h, await bootstrap(h, b), why);
    }
  });

  it("refuses a bundle that is not one, is truncated, has trailing data, or does not start with the script", async () => {
    const h = makeHost();
    const good = bundle(pushFiles(h));
    expectRefused(h, await bootstrap(h, "hello\n"), /not a nixfleet bundle/);
    expectRefused(h, await bootstrap(h, good.slice(0, good.length - 40)), /ends inside|without its 'end'/);
    expectRefused(h, await bootstrap(h, `${good}file 0644 ${sha256("x\n")} text 1 x\nx\n`), /data after/);
    const [script, settings] = pushFiles(h);
    expectRefused(h, await bootstrap(h, bundle([settings, script])), /first file must be modules\/services\/system\/auto-upgrade\.sh/);
  });
});

describe("JSON without jq", () => {
  const jsonStr = (value: string) =>
    spawnSync("bash", ["-c", `source <(sed -n '/^json_str()/,/^}/p' "$1"); json_str "$2"`, "_", SCRIPT, value], { encoding: "utf8", env: { PATH: "/usr/bin:/bin", LANG: "C.UTF-8" } }).stdout;

  it("escapes every control character, quotes and backslashes; passes UTF-8 through (checked by a real JSON parser)", () => {
    const controls = Array.from({ length: 31 }, (_, i) => String.fromCharCode(i + 1)).join("");
    for (const v of [controls, 'say "hi" \\ back\\\\slash', "ünïcödé 日本語 🚀", "\u007f del", "", "%s %d \\u0041", "a\nb\r\nc\td"]) {
      const out = jsonStr(v);
      expect(JSON.parse(out), JSON.stringify(v)).toBe(v);
    }
  });

  it("status.json and the push result line parse with a real JSON parser (message with tool output)", async () => {
    const h = makeHost();
    const r = await push(h);
    expect(JSON.parse(r.stdout)).toMatchObject({ action: "unchanged" });
    expect(typeof status(h).lastRun).toBe("string");
  });
});

describe("shellcheck and stock tools", () => {
  it("both shipped files are shellcheck-clean, the script also as writeShellApplication wraps it", () => {
    for (const f of [SCRIPT, BOOTSTRAP]) {
      const r = spawnSync("shellcheck", [f], { encoding: "utf8" });
      expect(r.status, r.stdout).toBe(0);
    }
    // nixpkgs' writeShellApplication: runtimeShell shebang, errexit/nounset/pipefail, PATH export, then the text.
    const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? "/tmp", "au-wsa-"));
    try {
      const wrapped = path.join(dir, "auto-upgrade");
      fs.writeFileSync(wrapped, `#!/nix/store/00000000000000000000000000000000-bash-5.2p37/bin/bash\nset -o errexit\nset -o nounset\nset -o pipefail\n\nexport PATH="/nix/store/00000000000000000000000000000000-coreutils/bin:$PATH"\n\n${fs.readFileSync(SCRIPT, "utf8")}`);
      const r = spawnSync("shellcheck", [wrapped], { encoding: "utf8" });
      expect(r.status, r.stdout).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("push + confirm work on a PATH of stock NixOS tools only (no jq, no nh, no Debian extras)", async () => {
    const h = makeHost();
    const stock = path.join(h.root, "stock-bin");
    fs.mkdirSync(stock);
    const pkgs = ["bash", "coreutils", "util-linux", "bsdutils", "findutils", "grep", "sed", "gzip", "git", "nix-bin"];
    const listed = spawnSync("dpkg", ["-L", ...pkgs], { encoding: "utf8" }).stdout.split("\n");
    for (const f of listed.filter((l) => /^\/(usr\/)?s?bin\/[^/]+$/.test(l))) {
      const dest = path.join(stock, path.basename(f));
      if (!fs.existsSync(dest)) fs.symlinkSync(f, dest);
    }
    for (const f of fs.readdirSync(path.join(h.root, "bin"))) fs.rmSync(path.join(stock, f), { force: true }), fs.symlinkSync(path.join(h.root, "bin", f), path.join(stock, f));
    expect(fs.existsSync(path.join(stock, "jq"))).toBe(false);
    expect(fs.existsSync(path.join(stock, "nh"))).toBe(false);
    const env = { PATH: stock };
    h.env.PATH = stock;
    fs.writeFileSync(path.join(h.cfg, "hosts/malphas/configuration.nix"), '{ version = "2"; }\n');
    const d = await push(h, pushFiles(h), env);
    expect(d.code, d.stderr).toBe(0);
    expect((await confirm(h, d.token, env)).code).toBe(0);
    expect(status(h)).toMatchObject({ result: "success" });
    expect(fs.readFileSync(SCRIPT, "utf8")).not.toMatch(/^[^#]*\b(jq|nh)\s/m);
  });
});
