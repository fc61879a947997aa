// Commit-back that heals (issue 8): unpushed commits reach origin on the next run even with nothing new to
// commit; a rebase conflict is loud (status.json, non-zero exit) while the upgrade itself stands; a host's
// edit of a nixfleet-managed file is never committed back; no root-owned file in the checkout. Real git.
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { cleanupHosts, commitAsOwner, confirm, gitAs, makeHost, push, pushFiles, inHost, rootOwned, status, systemState, timer, validated, writeAsOwner, writeHostConfig, OWNER, present } from "./harness";

afterEach(cleanupHosts);

const COMMIT = { AUTO_UPGRADE_COMMIT: "true" };
const NOTES = "hosts/malphas/notes.txt";
const originHead = (origin: string) => gitAs(origin, "rev-parse", "main");

/** Another host (a clone of origin) pushes a change of `rel`. */
function otherHostPushes(h: { root: string; origin: string }, rel: string, content: string) {
  const other = path.join(h.root, "home", "other");
  if (!present(other)) {
    inHost(["runuser", "-u", OWNER, "--", "env", "HOME=/nonexistent", "git", "clone", "-q", h.origin, other]);
    gitAs(other, "config", "user.name", "Other");
    gitAs(other, "config", "user.email", "other@example.invalid");
  }
  gitAs(other, "pull", "-q");
  writeAsOwner(path.join(other, rel), content);
  gitAs(other, "commit", "-qam", "other host's change");
  gitAs(other, "push", "-q", "origin", "main");
}

describe("commit-back", () => {
  it("a commit made while origin is unreachable is pushed by the next run, with nothing new to commit", async () => {
    const h = await makeHost({}, COMMIT);
    writeAsOwner(path.join(h.cfg, NOTES), "one\n");
    commitAsOwner(h, "track notes");
    gitAs(h.cfg, "push", "-q", "origin", "main");
    writeAsOwner(path.join(h.cfg, NOTES), "two\n");
    fs.renameSync(h.origin, `${h.origin}.away`);
    const r1 = await timer(h);
    fs.renameSync(`${h.origin}.away`, h.origin);
    expect(r1.code, r1.stderr).toBe(0);
    expect(status(h).warnings.join(" ")).toMatch(/cannot fetch origin main/);
    expect(gitAs(h.cfg, "status", "--porcelain")).toBe("");
    expect(gitAs(h.cfg, "rev-parse", "HEAD")).not.toBe(originHead(h.origin));

    const r2 = await timer(h);
    expect(r2.code, r2.stderr).toBe(0);
    expect(originHead(h.origin)).toBe(gitAs(h.cfg, "rev-parse", "HEAD"));
    expect(status(h)).toMatchObject({ result: "success", warnings: [] });
    expect(rootOwned(h.cfg)).toEqual([]);
  });

  it("a rebase conflict fails confirm loudly, the upgrade stands; still loud on retry; resolved, the retry heals", async () => {
    const h = await makeHost({}, COMMIT);
    writeAsOwner(path.join(h.cfg, NOTES), "base\n");
    commitAsOwner(h, "track notes");
    gitAs(h.cfg, "push", "-q", "origin", "main");
    otherHostPushes(h, NOTES, "the other host's line\n");
    writeAsOwner(path.join(h.cfg, NOTES), "this host's line\n");
    writeHostConfig(h, { version: "2" });
    const d = await push(h);
    expect(d.code, d.stderr).toBe(0);
    const c = await confirm(h, d.token);
    expect(c.code).toBe(1);
    const st = JSON.parse(c.stdout);
    expect(st).toMatchObject({ result: "failed", phase: "commit" });
    expect(st.message).toMatch(/conflict in hosts\/malphas\/notes\.txt/);
    expect(st.message).toMatch(/the upgrade itself succeeded/);
    expect(c.stderr).toMatch(/Commit-back FAILED/);
    // The host is on the new system, profile and boot entry too; the checkout is not left mid-rebase.
    const v = validated(h);
    expect(systemState(h)).toEqual({ running: v, profile: v, boot: v });
    expect(present(path.join(h.cfg, ".git", "rebase-merge"))).toBe(false);
    expect(rootOwned(h.cfg)).toEqual([]);

    const again = await confirm(h, d.token);
    expect(again.code).toBe(1);
    expect(JSON.parse(again.stdout).message).toMatch(/conflict/);

    // The user resolves it: takes the other host's version, keeps their commits' other changes.
    gitAs(h.cfg, "fetch", "-q", "origin");
    gitAs(h.cfg, "rebase", "-q", "-X", "theirs", "origin/main");
    const healed = await confirm(h, d.token);
    expect(healed.code, healed.stdout).toBe(0);
    expect(JSON.parse(healed.stdout)).toMatchObject({ result: "success" });
    expect(originHead(h.origin)).toBe(gitAs(h.cfg, "rev-parse", "HEAD"));
  });

  it("a host's edit of a nixfleet-managed file is never committed back; the user's other edits are", async () => {
    const h = await makeHost({}, COMMIT);
    const ROLE = "roles/form-desktop.nix";
    const d = await push(h, pushFiles(h, [{ path: ROLE, content: "{ }\n" }]));
    expect(d.code, d.stderr).toBe(0);
    expect((await confirm(h, d.token)).code).toBe(0);
    expect(gitAs(h.origin, "show", `main:${ROLE}`)).toBe("{ }");

    writeAsOwner(path.join(h.cfg, ROLE), "{ }\n# local tweak\n");
    writeAsOwner(path.join(h.cfg, "flake.lock"), `${fs.readFileSync(path.join(h.cfg, "flake.lock"), "utf8")}\n`);
    const r = await timer(h);
    expect(r.code, r.stderr).toBe(0);
    expect(gitAs(h.origin, "show", `main:${ROLE}`)).toBe("{ }");
    expect(gitAs(h.origin, "show", "main:flake.lock")).toMatch(/version/);
    expect(gitAs(h.origin, "diff", "--stat", "main~1", "main")).toMatch(/flake\.lock/);
    expect(status(h).warnings.join(" ")).toMatch(/roles\/form-desktop\.nix was edited on the host/);
    expect(fs.readFileSync(path.join(h.cfg, ROLE), "utf8")).toContain("local tweak");
    expect(rootOwned(h.cfg)).toEqual([]);

    // Moving the managed file away (the refusal's advice) is not a deletion to commit back either.
    fs.renameSync(path.join(h.cfg, ROLE), path.join(h.cfg, `${ROLE}.mine`));
    const r2 = await timer(h);
    expect(r2.code, r2.stderr).toBe(0);
    expect(gitAs(h.origin, "show", `main:${ROLE}`)).toBe("{ }");
  });
});
