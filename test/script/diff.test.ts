// The closure diff (issue 9 item 4): validate reports what the upgrade changes, package by package
// (`nix store diff-closures <running> <validated>`, real Nix): in the deploy's JSON line ("diff"), in
// status.json (closureDiff) and in the journal; bounded, without colour codes, safe for JSON.
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { cleanupHosts, commitAsOwner, confirm, journal, makeHost, push, status, timer, writeHostConfig } from "./harness";

afterEach(cleanupHosts);

describe("closure diff", () => {
  it("a changed package version shows as `hello: 2.10 → 2.12` in deploy's JSON, status.json and the journal", async () => {
    const h = await makeHost();
    // 64 KiB more: diff-closures prints the size change in ANSI colour, which must not reach anyone.
    writeHostConfig(h, { version: "2", hello: "2.12", helloKiB: 64 });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout.split("\n").filter(Boolean)).toHaveLength(1);
    expect(d.stdout.length).toBeLessThan(16 * 1024);
    const out = JSON.parse(d.stdout);
    const lines: string[] = out.diff.split("\n");
    expect(lines).toContain("nixos-system-malphas: 1 → 2");
    expect(lines.find((l) => l.startsWith("hello:"))).toMatch(/^hello: 2\.10 → 2\.12, \+\d+\.\d KiB$/);
    expect(`${d.stdout}${d.stderr}${fs.readFileSync(path.join(h.state, "status.json"), "utf8")}`).not.toMatch(/\x1b/);
    // The activator (another process) and confirm keep it with the validated path it belongs to.
    expect(status(h)).toMatchObject({ phase: "awaiting-confirmation", closureDiff: out.diff });
    const c = await confirm(h, d.token);
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ result: "success", closureDiff: out.diff });
    expect(journal(h)).toMatch(/closure diff: hello: 2\.10 → 2\.12, \+\d+\.\d KiB\n/);

    // Nothing changes: an empty diff. A failed build: no diff (null), not the last run's.
    const again = await push(h);
    expect(JSON.parse(again.stdout)).toMatchObject({ action: "unchanged", diff: "" });
    expect(status(h).closureDiff).toBe("");
    writeHostConfig(h, { version: "3", hello: "broken\"" });
    commitAsOwner(h);
    const broken = await push(h);
    expect(broken.code).toBe(1);
    expect(status(h)).toMatchObject({ result: "failed", phase: "validate", closureDiff: null });
  });

  it("is bounded: at most 40 lines and 2 KiB, then `… N more`; the journal gets every line", async () => {
    const h = await makeHost();
    const short = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`pkg${String(i).padStart(2, "0")}`, "1.0"]));
    writeHostConfig(h, { version: "1", packages: short });
    commitAsOwner(h);
    const r = await timer(h);
    expect(r.code, r.stderr).toBe(0);

    // 60 packages 1.0 -> 2.0 and the system itself: 61 lines, cut by the line bound.
    writeHostConfig(h, { version: "2", packages: Object.fromEntries(Object.keys(short).map((k) => [k, "2.0"])) });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    const lines: string[] = JSON.parse(d.stdout).diff.split("\n");
    expect(lines).toHaveLength(41);
    expect(lines.at(-1)).toBe("… 21 more");
    expect(lines[0]).toBe("nixos-system-malphas: 1 → 2");
    expect(lines[1]).toBe("pkg00: 1.0 → 2.0");
    expect(journal(h)).toMatch(/closure diff: pkg59: 1\.0 → 2\.0\n/);
    expect((await confirm(h, d.token)).code).toBe(0);

  });

  it("is bounded in bytes too: long names are cut off at 2 KiB, each line at 200 bytes on a character boundary", async () => {
    // A Nix store name may have 211 characters: 30 new packages with 194-character names, so each line
    // (over 200 bytes) is cut too, right inside the 3-byte "∅": the cut never splits a UTF-8 character.
    const h = await makeHost();
    writeHostConfig(h, { version: "2", packages: Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`${"x".repeat(192)}${String(i).padStart(2, "0")}`, "3.0"])) });
    commitAsOwner(h);
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    const diff: string = JSON.parse(d.stdout).diff;
    expect(Buffer.byteLength(diff)).toBeLessThanOrEqual(2048);
    const lines = diff.split("\n");
    // 31 lines in all (30 added, the system): the kept ones and the count add up.
    const more = Number(/^… (\d+) more$/.exec(lines.at(-1)!)![1]);
    expect(lines.length - 1 + more).toBe(31);
    expect(lines.length - 1).toBeLessThan(20);
    expect(lines[0]).toMatch(/^nixos-system-malphas: 1 → 2, \+\d+\.\d KiB$/);
    for (const x of lines.slice(1, -1)) expect(x).toMatch(/^x{192}\d\d: …$/);
    expect(diff).not.toContain("\ufffd");
  });
});
