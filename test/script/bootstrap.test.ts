// nix/push-bootstrap.sh (docs/rollout.md §5): refusals, the agent it builds, shellcheck; and a push on a
// PATH with only stock NixOS tools (no jq, no nh). The agent's JSON is encoding/json (Go unit tests).
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { BOOTSTRAP, bundle, cleanupHosts, confirm, inHost, makeHost, push, pushFiles, run, sha256, status, type Host, present } from "./harness";
import { agentFiles } from "../../render/files";

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
  expect(present(path.join(h.state, "status.json"))).toBe(false);
}

describe("push-bootstrap.sh", () => {
  it("a good bundle: builds the staged agent and runs its push; AUTO_UPGRADE_RETRY makes the token <T>-r<N>", async () => {
    const h = await makeHost();
    const files = pushFiles(h, [{ path: "roles/form-desktop.nix", content: "{ }\n" }]);
    const r = await push(h, files, { AUTO_UPGRADE_RETRY: "3" });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).rollout).toBe(`${r.token}-r3`);
    expect(fs.readFileSync(path.join(h.cfg, "roles/form-desktop.nix"), "utf8")).toBe("{ }\n");
    expect(fs.readdirSync(path.join(h.root, "tmp"))).toEqual([]);
    expect((await confirm(h, `${r.token}-r3`)).code).toBe(0);
  });

  it("refuses a file whose content does not match its sha256", async () => {
    const h = await makeHost();
    const b = bundle(pushFiles(h, [{ path: "roles/x.nix", content: "{ }\n" }])).replace("\n{ }\n", "\n{ evil = true; }\n");
    expectRefused(h, await bootstrap(h, b), /roles\/x\.nix: sha256 mismatch/);
  });

  it("refuses paths that climb out, are absolute or have '.' segments", async () => {
    const h = await makeHost();
    for (const [bad, why] of [["../evil.nix", /not allowed/], ["/etc/evil.nix", /bad file header/], ["roles/./x.nix", /not allowed/], ["a//b", /bad file header/]] as const) {
      const good = bundle(pushFiles(h, [{ path: "roles/x.nix", content: "{ }\n" }]));
      const b = good.replace(/ roles\/x\.nix\n/, ` ${bad}\n`);
      expect(b).not.toBe(good);
      expectRefused(h, await bootstrap(h, b), why);
    }
  });

  it("refuses a bundle that is not one, is truncated, has trailing data, or has no agent source", async () => {
    const h = await makeHost();
    const good = bundle(pushFiles(h));
    expectRefused(h, await bootstrap(h, "hello\n"), /not a nixfleet bundle/);
    expectRefused(h, await bootstrap(h, good.slice(0, good.length - 40)), /ends inside|without its 'end'/);
    expectRefused(h, await bootstrap(h, `${good}file 0644 ${sha256("x\n")} text 1 x\nx\n`), /data after/);
    const settings = pushFiles(h).find((f) => f.path.endsWith("nixfleet.nix"))!;
    expectRefused(h, await bootstrap(h, bundle([settings])), /the bundle has no modules\/services\/system\/agent\/package\.nix/);
  });
});

describe("JSON", () => {
  it("status.json and the push result line parse with a real JSON parser (message with tool output)", async () => {
    const h = await makeHost();
    const r = await push(h);
    expect(JSON.parse(r.stdout)).toMatchObject({ action: "unchanged" });
    expect(typeof status(h).lastRun).toBe("string");
  });
});

describe("shellcheck and stock tools", () => {
  it("the bootstrap is shellcheck-clean", () => {
    const r = spawnSync("shellcheck", [BOOTSTRAP], { encoding: "utf8" });
    expect(r.status, r.stdout).toBe(0);
  });

  it("push + confirm work on a PATH of stock NixOS tools only (no jq, no nh, no Debian extras)", async () => {
    const h = await makeHost();
    const stock = path.join(h.root, "stock-bin");
    fs.mkdirSync(stock);
    // The machine's programs of these Debian packages (systemd: systemctl, systemd-run; bsdutils: logger).
    const pkgs = ["bash", "coreutils", "util-linux", "bsdutils", "findutils", "grep", "sed", "gzip", "git", "nix-bin", "systemd"];
    const listed = inHost(["dpkg", "-L", ...pkgs]).split("\n");
    for (const f of listed.filter((l) => /^\/(usr\/)?s?bin\/[^/]+$/.test(l))) {
      const dest = path.join(stock, path.basename(f));
      if (!fs.lstatSync(dest, { throwIfNoEntry: false })) fs.symlinkSync(f, dest);
    }
    // (lstat: the links lead to the machine's files, which the deployer does not have at those paths)
    expect(fs.lstatSync(path.join(stock, "systemctl"), { throwIfNoEntry: false })).toBeDefined();
    expect(fs.lstatSync(path.join(stock, "jq"), { throwIfNoEntry: false })).toBeUndefined();
    expect(fs.lstatSync(path.join(stock, "nh"), { throwIfNoEntry: false })).toBeUndefined();
    const env = { PATH: stock };
    h.env.PATH = stock;
    fs.writeFileSync(path.join(h.cfg, "hosts/malphas/configuration.nix"), '{ version = "2"; }\n');
    const d = await push(h, pushFiles(h), env);
    expect(d.code, d.stderr).toBe(0);
    expect((await confirm(h, d.token, env)).code).toBe(0);
    expect(status(h)).toMatchObject({ result: "success" });
    // The agent starts no jq and no nh (a tool is started by its name as a Go string literal).
    for (const f of agentFiles()) expect(f.content, f.path).not.toMatch(/"(jq|nh)"/);
  });
});
