// The bundle's path rule and the rollout token are checked on both sides of the wire: by the renderer and the
// component (TypeScript), the bootstrap (bash) and the agent (Go). Each language enforces its own copy;
// this pins that the copies say the same thing, so a change to one cannot drift silently.
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";

const read = (rel: string) => readFileSync(path.join(__dirname, "..", rel), "utf8");
const one = (text: string, re: RegExp, what: string) => {
  const m = re.exec(text);
  if (!m) throw new Error(`${what} not found`);
  return m[1];
};

describe("protocol patterns agree across TypeScript, bash and Go", () => {
  const agent = read("nix/modules/services/system/agent/internal/settings/settings.go");

  it("bundle paths: render/bundle.ts, nix/push-bootstrap.sh and the agent", () => {
    const ts = one(read("render/bundle.ts"), /const REL_PATH = \/(.*)\/;/, "REL_PATH").replaceAll("\\/", "/");
    const sh = one(agent, /\tRelRE += regexp\.MustCompile\(`(.*)`\)/, "RelRE");
    const boot = `^${one(read("nix/push-bootstrap.sh"), /\(text\|gzip-base64\) \(\[0-9\]\{1,6\}\) \((.*)\)\$'$/m, "bootstrap path")}$`;
    expect(sh).toBe(ts);
    expect(boot).toBe(ts);
  });

  it("the agent's build bound: nix/push-bootstrap.sh's timeout is the one components/remote.ts counts in the deploy's bound", () => {
    const ts = one(read("components/remote.ts"), /export const AGENT_BUILD_SECONDS = (\d+);/, "AGENT_BUILD_SECONDS");
    expect(one(read("nix/push-bootstrap.sh"), /timeout (\d+) \\$/m, "bootstrap build timeout")).toBe(ts);
  });

  it("rollout tokens: components/remote.ts and the agent", () => {
    const ts = one(read("components/remote.ts"), /const TOKEN = \/(.*)\/;/, "TOKEN");
    expect(one(agent, /\tTokenRE += regexp\.MustCompile\(`(.*)`\)/, "TokenRE")).toBe(ts);
  });
});
