// The bundle (docs/rollout.md §5): deterministic, round-trips, and readable by the shell tools a
// stock NixOS host has (bash, coreutils base64/sha256sum, gzip), which is how the bootstrap reads it.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { resolveFleet } from "../config/resolve";
import { parseFleetConfig } from "../config/schema";
import { parseBundle, renderBundle, rolloutToken, sha256 } from "./bundle";
import { AGENT_DIR, AGENT_PACKAGE, MODULE_FILE, renderHost } from "./files";

const [host] = resolveFleet(parseFleetConfig({ hosts: [{ name: "malphas", address: "10.0.0.2", role: "desktop", configPath: "/home/evie/nix-config" }] })).hosts;
const files = renderHost(host);

describe("renderBundle", () => {
  it("is deterministic: the same files give the same bytes (gzip without mtime or name)", () => {
    const a = renderBundle(files);
    const b = renderBundle(renderHost(host));
    expect(b).toBe(a);
    expect(rolloutToken(a)).toMatch(/^[0-9a-f]{16}$/);
    expect(rolloutToken(a, 2)).toBe(`${sha256(a).slice(0, 16)}-r2`);
  });

  it("the shipped files (module, agent source) travel gzipped, rendered ones as text lines", () => {
    const bundle = renderBundle(files);
    const heads = bundle.split("\n").filter((l) => l.startsWith("file "));
    expect(bundle.startsWith("nixfleet-bundle 1\n")).toBe(true);
    expect(bundle.endsWith("\nend\n")).toBe(true);
    expect(heads).toContainEqual(expect.stringMatching(new RegExp(`^file 0644 [0-9a-f]{64} gzip-base64 \\d+ ${AGENT_PACKAGE}$`)));
    expect(heads.filter((l) => l.includes(` ${AGENT_DIR}/`)).every((l) => / gzip-base64 /.test(l))).toBe(true);
    expect(heads.some((l) => l.endsWith("_test.go"))).toBe(false);
    expect(heads).toContainEqual(expect.stringMatching(new RegExp(`^file 0644 [0-9a-f]{64} gzip-base64 \\d+ ${MODULE_FILE}$`)));
    expect(heads).toContainEqual(expect.stringMatching(/^file 0644 [0-9a-f]{64} text \d+ hosts\/malphas\/nixfleet\.nix$/));
    // `preview --diff` shows the rendered Nix lines themselves.
    expect(bundle).toContain('    randomizedDelaySec = lib.mkDefault "30min";');
    expect(heads).toHaveLength(files.length);
  });

  it("round-trips: every file comes back byte for byte with its sha256 and mode", () => {
    const back = parseBundle(renderBundle(files));
    expect(back.map((f) => f.path)).toEqual(files.map((f) => f.path));
    for (const f of back) {
      expect(f.content).toBe(files.find((x) => x.path === f.path)!.content);
      expect(f.sha256).toBe(sha256(f.content));
    }
  });

  it("a gzip-base64 body is what `base64 -d | gzip -d` (coreutils, gzip) turns back into the file", () => {
    const bundle = renderBundle(files);
    const lines = bundle.split("\n");
    const at = lines.findIndex((l) => l.endsWith(` ${MODULE_FILE}`));
    const n = Number(lines[at].split(" ")[4]);
    const body = lines.slice(at + 1, at + 1 + n);
    expect(body.every((l) => l.length <= 76)).toBe(true);
    const r = spawnSync("bash", ["-c", "base64 -d | gzip -d"], { input: `${body.join("\n")}\n`, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(files.find((f) => f.path === MODULE_FILE)!.content);
  });

  it.each([
    [[{ path: "../etc/passwd", content: "x\n" }], /file path "\.\.\/etc\/passwd" is not allowed/],
    [[{ path: "/etc/passwd", content: "x\n" }], /file path "\/etc\/passwd" is not allowed/],
    [[{ path: "a/./b", content: "x\n" }], /is not allowed/],
    [[{ path: "a b", content: "x\n" }], /is not allowed/],
    [[{ path: "x.nix", content: "no newline" }], /x\.nix does not end with a newline/],
    [[{ path: AGENT_PACKAGE, content: "{ }\n" }], /appears twice/],
  ])("refuses %j", (extra, message) => {
    expect(() => renderBundle([...files, ...extra])).toThrow(message);
  });

  it("refuses a bundle without the agent's package.nix", () => {
    expect(() => renderBundle(files.filter((f) => f.path !== AGENT_PACKAGE))).toThrow(/agent\/package\.nix is missing/);
  });

  it("parseBundle refuses damage: a changed line, a cut body, trailing text", () => {
    const good = renderBundle(files);
    expect(() => parseBundle(good.replace('"30min"', '"31min"'))).toThrow(/does not match its sha256/);
    expect(() => parseBundle(good.replace(/\nend\n$/, "\n"))).toThrow(/cut short|expected a file header/);
    expect(() => parseBundle(`${good}x\n`)).toThrow(/text after "end"/);
  });
});
