// Push mode's file install and settings check: every file is checked before any is written; a refusal
// changes nothing and its advice works as written; the deploy's settings must equal the validated system's.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { cleanupHosts, confirm, gitAs, HOST, inHost, makeHost, push, pushFiles, rootOwned, status, systemState, writeAsOwner } from "./harness";

afterEach(cleanupHosts);

const ROLE = "roles/form-desktop.nix";

describe("file install", () => {
  it("refuses a host edit of a file nixfleet wrote, changing nothing; following the advice word for word converges", async () => {
    const h = await makeHost();
    const first = await push(h, pushFiles(h, [{ path: ROLE, content: "{ }\n" }]));
    expect(first.code, first.stderr).toBe(0);
    expect(fs.readFileSync(path.join(h.state, "pushed", `${ROLE}.sha256`), "utf8").trim()).toMatch(/^[0-9a-f]{64}$/);
    expect(gitAs(h.cfg, "ls-files", "--", ROLE)).toBe(ROLE);
    (await confirm(h, first.token)).code;

    const role = path.join(h.cfg, ROLE);
    writeAsOwner(role, "{ }\n# local edit\n");
    const statusBefore = fs.readFileSync(path.join(h.state, "status.json"), "utf8");
    const before = systemState(h);
    const settingsBefore = fs.readFileSync(path.join(h.cfg, "hosts", HOST, "nixfleet.nix"), "utf8");
    const d = await push(h, pushFiles(h, [{ path: ROLE, content: "{ x = 1; }\n" }], { ...h.env, AUTO_UPGRADE_HEALTH_TIMEOUT: "31" }), { AUTO_UPGRADE_HEALTH_TIMEOUT: "31" });
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/refusing to overwrite: roles\/form-desktop\.nix \(edited on the host since nixfleet last wrote it\)/);
    expect(fs.readFileSync(role, "utf8")).toBe("{ }\n# local edit\n");
    // Nothing else was written either (the settings file, checked before, is still the old one).
    expect(fs.readFileSync(path.join(h.cfg, "hosts", HOST, "nixfleet.nix"), "utf8")).toBe(settingsBefore);
    expect(systemState(h)).toEqual(before);
    expect(status(h)).toMatchObject({ phase: "files", result: "failed" });
    expect(statusBefore).not.toBe(fs.readFileSync(path.join(h.state, "status.json"), "utf8"));

    const advice = /run: (mv .*?) and run pulumi up again/.exec(d.stderr)?.[1];
    expect(advice).toBeTruthy();
    expect(spawnSync("runuser", ["-u", "nobody", "--", "bash", "-c", advice!]).status).toBe(0);
    const again = await push(h, pushFiles(h, [{ path: ROLE, content: "{ x = 1; }\n" }], { ...h.env, AUTO_UPGRADE_HEALTH_TIMEOUT: "31" }), { AUTO_UPGRADE_HEALTH_TIMEOUT: "31" });
    expect(again.code, again.stderr).toBe(0);
    expect(fs.readFileSync(role, "utf8")).toBe("{ x = 1; }\n");
    expect(fs.readFileSync(`${role}.mine`, "utf8")).toBe("{ }\n# local edit\n");
    expect((await confirm(h, again.token)).code).toBe(0);
    expect(rootOwned(h.cfg)).toEqual([]);
  });

  it("refuses to overwrite a file nixfleet never wrote", async () => {
    const h = await makeHost();
    writeAsOwner(path.join(h.cfg, ROLE), "# the user's own\n");
    const d = await push(h, pushFiles(h, [{ path: ROLE, content: "{ }\n" }]));
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/refusing to overwrite: roles\/form-desktop\.nix \(not written by nixfleet\)/);
    expect(fs.readFileSync(path.join(h.cfg, ROLE), "utf8")).toBe("# the user's own\n");
  });
});

describe("settings check against the validated system", () => {
  it("a deploy whose settings differ from the system's unit fails naming the setting and both values; nothing activated", async () => {
    const h = await makeHost();
    const before = systemState(h);
    // The user's configuration overrides the branch (what the unit will say); this deploy says main.
    const d = await push(h, pushFiles(h, [], { ...h.env, AUTO_UPGRADE_BRANCH: "stable" }));
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/AUTO_UPGRADE_BRANCH: this deploy has 'main', the validated system has 'stable'/);
    expect(systemState(h)).toEqual(before);
    expect(status(h)).toMatchObject({ result: "failed", phase: "validate" });
  });

  it("values with %, quotes, backslashes and newlines compare equal after undoing JSON and %% escaping", async () => {
    const weird = 'we%ird "br\\anch"\nx%%y';
    const h = await makeHost({}, { AUTO_UPGRADE_BRANCH: weird });
    const d = await push(h, pushFiles(h, [{ path: "hosts/extra.nix", content: "{ }\n" }]));
    expect(d.code, d.stderr).toBe(0);
    // Same settings as the running system: nothing to activate, but the check ran (it precedes that decision).
    expect(JSON.parse(d.stdout).action).toBe("unchanged");
    const unit = inHost(["cat", path.join(JSON.parse(d.stdout).validatedPath, "etc/systemd/system/auto-upgrade.service")]);
    expect(unit).toContain("%%ird");
  });

  it("a system without the auto-upgrade unit fails: is the settings file imported?", async () => {
    const h = await makeHost();
    fs.rmSync(path.join(h.cfg, "hosts", HOST, "nixfleet.nix"));
    gitAs(h.cfg, "rm", "-q", "--cached", `hosts/${HOST}/nixfleet.nix`);
    const files = pushFiles(h).filter((f) => !f.path.endsWith("nixfleet.nix"));
    const d = await push(h, files);
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/is hosts\/malphas\/nixfleet\.nix imported\?/);
  });
});
