import { execFileSync, spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { shellCommand, shellEnv, shellQuote } from "./shell";
import { prng } from "../test/prng";

describe("shellQuote", () => {
  it("leaves safe words bare and single-quotes the rest", () => {
    expect(
      ["abc", "/nix/var/nix/profiles/system", "--flag=v", "a,b:c@d%e+f", "", "a b", "it's", "$(id)", "~", "#x", "=x", "A=1", "é"].map(shellQuote),
    ).toMatchInlineSnapshot(`
      [
        "abc",
        "/nix/var/nix/profiles/system",
        "--flag=v",
        "a,b:c@d%e+f",
        "''",
        "'a b'",
        "'it'\\''s'",
        "'$(id)'",
        "'~'",
        "'#x'",
        "'=x'",
        "'A=1'",
        "'é'",
      ]
    `);
  });

  it("rejects NUL and lone surrogates without echoing the word", () => {
    expect(() => shellQuote("sec\0ret")).toThrow(/^shell word contains a NUL character at index 3, which no shell word can carry: remove it$/);
    expect(() => shellCommand("a", "b\0")).toThrow(/shell word 1 contains a NUL character at index 1/);
    expect(() => shellEnv({ TOKEN: "s3cr3t\0" })).toThrow(/^environment variable TOKEN contains a NUL character at index 6[^3]*$/);
    expect(() => shellQuote("\ud800")).toThrow(/lone UTF-16 surrogate/);
  });

  it("shellEnv sorts and validates names", () => {
    expect(shellEnv({ B: "x y", A: "", AUTO_UPGRADE_HOOKS: "a.service b.service", _X1: "v" })).toBe(
      "A='' AUTO_UPGRADE_HOOKS='a.service b.service' B='x y' _X1=v",
    );
    expect(shellEnv({})).toBe("");
    for (const bad of ["lower", "1A", "A-B", "", "A B", "A=B", "É"]) {
      expect(() => shellEnv({ [bad]: "v" })).toThrow(/invalid environment variable name .*: use upper-case letters, digits and _ only/);
    }
  });

  it("shellCommand needs a command", () => {
    expect(() => shellCommand()).toThrow(/needs at least the command name/);
  });
});


const HOSTILE = [
  " ", "  ", "'", "''", '"', "\\", "$", "$(id)", "`id`", "${HOME}", "$HOME", "\n", "\t", "\r", "*", "?", "[a]",
  "{a,b}", "~", "~root", "#", ";", "&", "&&", "|", ">", "<", "(", ")", "!", "!!", "-", "--", "-n", "-e", "=",
  "A=1", "%", "é", "漢字", "😀", "\u00a0", "\\'", "'\\''", "a", "b", "z9", "/", ".", "..", ",", ":", "@",
];

function hostileStrings(n: number): string[] {
  const r = prng(424242);
  const out = ["", "-n", "-e", "--", "A=1", "~", "*", "'", "\n", "$(touch /tmp/nixfleet-pwned)"];
  while (out.length < n) {
    let s = "";
    for (let k = Math.floor(r() * 8); k >= 0; k--) s += HOSTILE[Math.floor(r() * HOSTILE.length)];
    out.push(r() < 0.02 ? s.repeat(500) : s);
  }
  return out;
}

// Runs `script` in each shell; the script prints its words NUL-separated.
function runIn(shell: string, script: string, cwd = "/"): string[] {
  const out = execFileSync(shell, ["-c", script], { cwd, encoding: "utf8", maxBuffer: 1 << 26 });
  return out.split("\0").slice(0, -1);
}

describe.each([["bash"], ["sh"]])("quoted words survive real %s", (shell) => {
  const words = hostileStrings(300);

  it("300 generated hostile words come back unchanged as arguments", () => {
    // Globs are matched against the cwd; "/" has entries, so an unquoted `*` would expand.
    const got = runIn(shell, `printf '%s\\0' ${words.map(shellQuote).join(" ")}`);
    expect(got).toEqual(words);
  });

  it("shellCommand words reach argv unchanged (through a nested bash -c)", () => {
    const inner = 'for a in "$@"; do printf "%s\\0" "$a"; done';
    const got = runIn(shell, shellCommand("bash", "-c", inner, "argv0", ...words));
    expect(got).toEqual(words);
  });

  it("shellEnv values reach the environment unchanged", () => {
    const vars: Record<string, string> = {};
    words.slice(0, 100).forEach((w, i) => (vars[`V_${String(i).padStart(3, "0")}`] = w));
    const inner = Object.keys(vars).sort().map((k) => `"$${k}"`).join(" ");
    const got = runIn(shell, `${shellEnv(vars)} ${shellCommand("bash", "-c", `printf '%s\\0' ${inner}`)}`);
    expect(got).toEqual(Object.keys(vars).sort().map((k) => vars[k]));
  });

  it("a quoted NAME=value first word is a command name, not an assignment", () => {
    const r = spawnSync(shell, ["-c", `${shellCommand("A=1")}; echo "A=$A"`], { encoding: "utf8" });
    expect(r.stdout).toBe("A=\n");
    expect(r.stderr).toMatch(/not found/);
  });
});
