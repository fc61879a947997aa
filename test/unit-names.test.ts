// The systemd unit-name rule is written three times, once per language that must enforce it: the
// zod schema (config/schema.ts), the module's option type (auto-upgrade.nix) and the agent's UnitRE
// (agent/internal/settings/settings.go). This pins that all three accept and reject exactly the same names, and that each
// of them is a name NixOS' own unitNameType (nixos/lib/systemd-lib.nix; the type of the service's
// `after`/`wants`/`onFailure`) accepts too, so a bad hook is refused naming nixfleet's option.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseFleetConfig } from "../config/schema";
import { printNix } from "../render/nix";
import { NIXOS_UNIT_PATTERN } from "./module/helpers";
import { useNixMachine } from "./nix-machine";

const DIR = join(__dirname, "..", "nix", "modules", "services", "system");
/** Nix 2.26 in a booted machine of the fleet image (test/nix-machine.ts). */
const nix = useNixMachine();
const NAMES = [
  "chezmoi-pre-update.service", "getty@tty1.service", "getty@.service", "a.target", "x.device", "y.swap",
  "foo\\x2dbar.mount", ":weird_.timer", ".hidden.path", "z.automount", "s.slice", "c.scope", "k.socket",
  "-x.service", "foo", "foo.conf", "a b.service", "a;b.service", "a@b@c.service", "$(x).service", "",
  "ünï.service", "a/b.service", ".service", "foo.service\n", "a%i.service", "x.service.service",
];

function schemaAccepts(name: string): boolean {
  try {
    parseFleetConfig({ hosts: [{ name: "h", address: "h", role: "pi", configPath: "/x", preUpdateHooks: [name] }] });
    return true;
  } catch {
    return false;
  }
}

/**
 * The agent's pattern, read from its source. Go's RE2 and JavaScript read this syntax alike (anchors,
 * bracket classes with `\\`, `?`, `|` groups; no look-around, no back-references), so JavaScript applies it
 * here; settings_test.go checks the same rule in Go.
 */
function agentAccepts(): boolean[] {
  const re = /\tUnitRE += regexp\.MustCompile\(`([^`]*)`\)/.exec(readFileSync(join(DIR, "agent/internal/settings/settings.go"), "utf8"))![1];
  return NAMES.map((n) => new RegExp(re).test(n));
}

async function nixAccepts(re = /^\s*unitNameRegex = (".*");$/m.exec(readFileSync(join(DIR, "auto-upgrade.nix"), "utf8"))![1]): Promise<boolean[]> {
  const expr = `let re = ${re}; in map (n: builtins.match re n != null) ${printNix(NAMES)}`;
  const out = await nix.must(["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr]);
  return JSON.parse(out);
}

describe("systemd unit names: schema, module and agent agree", () => {
  it("accept and reject the same names, all of them names NixOS accepts", async () => {
    const schema = NAMES.map(schemaAccepts);
    expect(agentAccepts()).toEqual(schema);
    expect(await nixAccepts()).toEqual(schema);
    const nixos = await nixAccepts(printNix(NIXOS_UNIT_PATTERN));
    expect(NAMES.filter((_, i) => schema[i] && !nixos[i])).toEqual([]);
    // NixOS' rule is wider (it takes `%`, several `@`, a leading `-`): ours is the stricter one.
    expect(NAMES.filter((_, i) => nixos[i] && !schema[i]).length).toBeGreaterThan(0);
    // And the rule is not trivially all-or-nothing.
    expect(schema.filter(Boolean).length).toBeGreaterThan(8);
    expect(schema.filter((x) => !x).length).toBeGreaterThan(8);
  });
});
