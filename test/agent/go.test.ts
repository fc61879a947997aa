// The agent's own Go tests (decisions, lease heartbeat, waits, settings) and `go vet`, under `npm test` so
// CI runs them. Offline: the agent uses the standard library only (no module download), the local toolchain.
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { describe, expect, it } from "vitest";

const AGENT = path.join(__dirname, "..", "..", "nix", "modules", "services", "system", "agent");
const go = (...args: string[]) =>
  spawnSync("go", args, { cwd: AGENT, encoding: "utf8", env: { ...process.env, GOPROXY: "off", GOTOOLCHAIN: "local", GOFLAGS: "-mod=mod" } });

describe("nixfleet-agent (Go)", () => {
  it("go vet ./... is clean", () => {
    const r = go("vet", "./...");
    expect(r.stderr + r.stdout).toBe("");
    expect(r.status).toBe(0);
  });

  it("gofmt -l lists no file", () => {
    const r = spawnSync("gofmt", ["-l", "."], { cwd: AGENT, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("");
  });

  it("go test ./... passes (every package has tests that ran)", () => {
    const r = go("test", "-count=1", "./...");
    console.log(r.stdout.trim());
    expect(r.status, r.stdout + r.stderr).toBe(0);
    // Every package with code has tests (a package without any prints "[no test files]").
    expect(r.stdout).not.toMatch(/no test files/);
  });
});
