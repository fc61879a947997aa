// The systemd unit-name rule is written three times, once per language that must enforce it: the
// zod schema (config/schema.ts), the module's option type (auto-upgrade.nix) and the script's UNIT_RE
// (auto-upgrade.sh). This pins that all three accept and reject exactly the same names, and that each
// of them is a name NixOS' own unitNameType (nixos/lib/systemd-lib.nix; the type of the service's
// `after`/`wants`/`onFailure`) accepts too, so a bad hook is refused naming nixfleet's option.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseFleetConfig } from "../config/schema";
import { printNix } from "../render/nix";
import { NIXOS_UNIT_PATTERN } from "./module/helpers";

const DIR = join(__dirname, "..", "nix", "modules", "services", "system");
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

function bashAccepts(): boolean[] {
  const re = /^readonly UNIT_RE='([^']*)'$/m.exec(readFileSync(join(DIR, "auto-upgrade.sh"), "utf8"))![1];
  const out = execFileSync("bash", ["-c", 're=$1; shift; for n in "$@"; do if [[ $n =~ $re ]]; then echo 1; else echo 0; fi; done', "_", re, ...NAMES], { encoding: "utf8" });
  return out.trim().split("\n").map((l) => l === "1");
}

function nixAccepts(re = /^\s*unitNameRegex = (".*");$/m.exec(readFileSync(join(DIR, "auto-upgrade.nix"), "utf8"))![1]): boolean[] {
  const expr = `let re = ${re}; in map (n: builtins.match re n != null) ${printNix(NAMES)}`;
  const out = execFileSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", expr], { encoding: "utf8" });
  return JSON.parse(out);
}

describe("systemd unit names: schema, module and script agree", () => {
  it("accept and reject the same names, all of them names NixOS accepts", () => {
    const schema = NAMES.map(schemaAccepts);
    expect(bashAccepts()).toEqual(schema);
    expect(nixAccepts()).toEqual(schema);
    const nixos = nixAccepts(printNix(NIXOS_UNIT_PATTERN));
    expect(NAMES.filter((_, i) => schema[i] && !nixos[i])).toEqual([]);
    // NixOS' rule is wider (it takes `%`, several `@`, a leading `-`): ours is the stricter one.
    expect(NAMES.filter((_, i) => nixos[i] && !schema[i]).length).toBeGreaterThan(0);
    // And the rule is not trivially all-or-nothing.
    expect(schema.filter(Boolean).length).toBeGreaterThan(8);
    expect(schema.filter((x) => !x).length).toBeGreaterThan(8);
  });
});
