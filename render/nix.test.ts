import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { useNixMachine } from "../test/nix-machine";
import { prng } from "../test/prng";
import {
  apply,
  attrName,
  mkDefault,
  nixComment,
  nixString,
  NixValue,
  path,
  printIndentedString,
  printNix,
  raw,
} from "./nix";

// ---------------------------------------------------------------------------------------------
// Structure: small inline snapshots.

describe("printNix structure", () => {
  it("sorts keys, indents by two spaces, ends each binding with ;", () => {
    expect(printNix({ b: 1, a: [true, null, "x"], c: { z: false, y: [] }, d: {} })).toMatchInlineSnapshot(`
      "{
        a = [
          true
          null
          "x"
        ];
        b = 1;
        c = {
          y = [ ];
          z = false;
        };
        d = { };
      }"
    `);
  });

  it("writes a chain of one-binding attrsets as a dotted path, stopping at the first wider value", () => {
    expect(printNix({ a: { b: { c: 1 } }, d: { e: { f: 1, g: 2 } }, h: { "x.y": { if: {} } } })).toBe(
      '{\n  a.b.c = 1;\n  d.e = {\n    f = 1;\n    g = 2;\n  };\n  h."x.y"."if" = { };\n}',
    );
  });

  it("prints empty containers and scalars", () => {
    expect([printNix([]), printNix({}), printNix(0), printNix(-0), printNix(-7), printNix(null)]).toEqual([
      "[ ]",
      "{ }",
      "0",
      "0",
      "-7",
      "null",
    ]);
  });

  it("continues from the given indent", () => {
    expect(printNix({ a: [1] }, "    ")).toMatchInlineSnapshot(`
      "{
            a = [
              1
            ];
          }"
    `);
  });

  it("wraps negative numbers and applications inside lists, not elsewhere", () => {
    expect(printNix({ n: -5, l: [-5, 3, mkDefault(-1), raw("pkgs.git"), raw("a b")] })).toMatchInlineSnapshot(`
      "{
        l = [
          (-5)
          3
          (lib.mkDefault (-1))
          pkgs.git
          (a b)
        ];
        n = -5;
      }"
    `);
  });

  it("prints applications of attrsets at the current indent", () => {
    expect(printNix({ x: mkDefault({ b: [1], a: "s" }), y: apply("f", [apply("g", 1)]) })).toMatchInlineSnapshot(`
      "{
        x = lib.mkDefault {
          a = "s";
          b = [
            1
          ];
        };
        y = f [
          (g 1)
        ];
      }"
    `);
  });

  it("prints path literals bare", () => {
    expect(printNix([path("./x/y.nix"), path("../../roles/form-pi.nix"), path("/abs")])).toMatchInlineSnapshot(`
      "[
        ./x/y.nix
        ../../roles/form-pi.nix
        /abs
      ]"
    `);
  });

  it("quotes keywords, empty, dotted, dashed-leading and unicode attribute names", () => {
    const names = ["if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or"];
    for (const k of names) expect(attrName(k)).toBe(`"${k}"`);
    expect(["", "a.b", "-x", "1a", "é", "a b", "${x}", "true", "null", "a-b'c_1", "_"].map(attrName)).toEqual([
      '""',
      '"a.b"',
      '"-x"',
      '"1a"',
      '"é"',
      '"a b"',
      '"\\${x}"',
      "true",
      "null",
      "a-b'c_1",
      "_",
    ]);
  });

  it("escapes double-quoted strings exactly", () => {
    expect(nixString('a"b\\c${d}$e$${f}\\${g}$$\n\r\t')).toBe('"a\\"b\\\\c\\${d}$e$\\${f}\\\\\\${g}$$\\n\\r\\t"');
    expect(nixString("$")).toBe('"$"');
    expect(nixString("")).toBe('""');
  });

  it("uses the indented form for multi-line strings when exact", () => {
    expect(printNix({ script: "echo '${x}'\n  ''\n" })).toMatchInlineSnapshot(`
      "{
        script = ''
          echo ''\\'''\${x}'
            '''
        '';
      }"
    `);
    // Text whose every line is indented would lose its indentation: fall back.
    expect(printIndentedString("  a\n  b")).toBe('"  a\\n  b"');
    // A last line of only spaces would be dropped: fall back.
    expect(printIndentedString("a\n  ")).toBe('"a\\n  "');
    // Single line: the "…" form is used.
    expect(printIndentedString("a")).toBe('"a"');
  });
});

// ---------------------------------------------------------------------------------------------
// Rejections, with messages that say what is allowed.

describe("printNix rejects", () => {
  it.each([["\u0000"], ["\u0001"], ["\b"], ["\u001b[0m"], ["\u007f"], ["\ud800"], ["a\udc00"]])(
    "control character or lone surrogate %j",
    (s) => {
      const msg = /cannot write U\+[0-9A-F]{4} at index \d+ in a Nix string: only printable text, newline, carriage return and tab are allowed/;
      expect(() => nixString(s)).toThrow(msg);
      expect(() => printIndentedString(`x\n${s}`)).toThrow(msg);
      expect(() => printNix({ k: [s] })).toThrow(msg);
      expect(() => printNix({ [s]: 1 })).toThrow(msg);
    },
  );

  it.each([[1.5], [NaN], [Infinity], [-Infinity], [2 ** 53], [-(2 ** 53)]])("number %s", (n) => {
    expect(() => printNix([n])).toThrow(/cannot write .* as a Nix value: only integers between -9007199254740991 and 9007199254740991/);
  });

  it.each([["x"], ["./"], ["/"], ["./a/"], ["a/b"], ["./a b"], ["./a//b"], ["~/x"], ["./a$b"], ["./${x}"], [""], ["./é"]])(
    "path %j",
    (p) => {
      expect(() => path(p)).toThrow(/invalid Nix path literal .*: it must start with "\.\/", "\.\.\/" or "\/", use only the characters/);
    },
  );

  it("comments that would spill onto a second line (and become code)", () => {
    expect(nixComment("Host \"malphas\" (role desktop)")).toBe('# Host "malphas" (role desktop)');
    expect(() => nixComment("x\n}; evil = true; {")).toThrow(/a Nix comment must be one line without control characters/);
    expect(() => nixComment("x\ry")).toThrow(/one line/);
  });

  it("non-plain objects, cycles, functions, bad indent", () => {
    expect(() => printNix(new Date() as unknown as NixValue)).toThrow(/cannot write a Date object/);
    expect(() => printNix({ a: new Map() as unknown as NixValue })).toThrow(/cannot write a Map object/);
    const cyc: NixValue[] = [];
    cyc.push({ c: cyc });
    expect(() => printNix(cyc)).toThrow(/cyclic/);
    const loop: Record<string, unknown> = {};
    loop.only = { again: loop };
    expect(() => printNix({ start: loop } as never)).toThrow(/cyclic/);
    expect(() => printNix((() => 1) as unknown as NixValue)).toThrow(/cannot write a function/);
    expect(() => printNix(1, "\t")).toThrow(/indent must be spaces only/);
  });

  it("data shaped like raw or path is still data", () => {
    expect(printNix({ expr: "pkgs.git", path: "./x" } as NixValue)).toMatchInlineSnapshot(`
      "{
        expr = "pkgs.git";
        path = "./x";
      }"
    `);
  });

  it("shared (non-cyclic) subvalues are fine", () => {
    const shared = { a: 1 };
    expect(printNix([shared, shared])).toContain("a = 1;");
  });
});

// ---------------------------------------------------------------------------------------------
// Property round trip through real Nix (Debian trixie's 2.26, in a booted machine: test/nix-machine.ts).


const FRAGMENTS = [
  '"', "\\", "${", "$", "$$", "$${", "\\${", "''", "'", "'''", "''$", "''\\", "'$", "$'", "}", "{",
  "\n", "\n", "\n", "\t", "\r", "\r\n", " ", "   ", "a", "b", "xyz", "é", "ñ", "漢字", "😀", "𝄞",
  "\\n", "\\\"", "''${", "#", "/*", "in", "or",
];

function generator(seed: number) {
  const r = prng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const str = (): string => {
    if (r() < 0.01) return pick(FRAGMENTS).repeat(10_001); // long strings
    const n = int(12);
    let s = "";
    for (let i = 0; i < n; i++) s += pick(FRAGMENTS);
    // Half the multi-line strings start flush left, so the indented form is really exercised.
    return r() < 0.5 ? s.replace(/^ +/, "") : s;
  };
  const integer = (): number =>
    pick([0, 1, -1, 42, -5, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, int(1e9) - 5e8]);
  const value = (depth: number): NixValue => {
    const k = int(depth > 3 ? 5 : 7);
    switch (k) {
      case 0:
      case 1:
        return str();
      case 2:
        return integer();
      case 3:
        return r() < 0.5;
      case 4:
        return null;
      case 5:
        return Array.from({ length: int(4) }, () => value(depth + 1));
      default: {
        const o: { [k: string]: NixValue } = {};
        for (let i = int(4); i > 0; i--) {
          const key = r() < 0.3 ? pick(["if", "or", "a.b", "", "__proto__", "x-y", "in"]) : str();
          // defineProperty: a `__proto__` key must become an own property, as JSON.parse makes it.
          Object.defineProperty(o, key, { value: value(depth + 1), enumerable: true, writable: true, configurable: true });
        }
        return o;
      }
    }
  };
  return { str, value, int };
}

const dir = mkdtempSync(join(tmpdir(), "nixfleet-nix-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
/** Nix 2.26 in a booted machine of the fleet image, reading `dir` at the same path (test/nix-machine.ts). */
const nix = useNixMachine(() => [dir]);

// One file per expression, all imported by ONE main file evaluated by ONE nix-instantiate
// call: each file is parsed on its own (a value cannot swallow a neighbour), and one process
// keeps the test fast. `prelude` is a let-binding for names the expressions use (`lib`, `f`).
async function nixEvalEach(name: string, texts: string[], prelude = ""): Promise<unknown[]> {
  const files = texts.map((t, i) => {
    const file = join(dir, `${name}-${i}.nix`);
    writeFileSync(file, prelude ? `let ${prelude} in\n${t}\n` : `${t}\n`);
    return file;
  });
  const main = join(dir, `${name}.nix`);
  writeFileSync(main, `[\n${files.map((f) => `  (import ${f})\n`).join("")}]\n`);
  const out = await nix.must(["nix-instantiate", "--eval", "--strict", "--json", main]);
  return JSON.parse(out) as unknown[];
}

describe("round trip through nix-instantiate", () => {
  const gen = generator(20240601);

  it("600 generated values evaluate back to themselves", async () => {
    const values = Array.from({ length: 600 }, () => gen.value(0));
    const printed = values.map((v) => printNix(v));
    const got = await nixEvalEach("value", printed);
    expect(got).toHaveLength(values.length);
    values.forEach((v, i) => expect(got[i], printed[i]).toEqual(v));
  });

  it("nested in a list at an indent, the same values still evaluate back", async () => {
    const values = Array.from({ length: 200 }, () => gen.value(0));
    const printed = printNix(values, "    ");
    expect(await nixEvalEach("nested", [printed])).toEqual([values]);
  });

  it("600 generated strings survive both the \"…\" and the ''…'' forms", async () => {
    const strings = Array.from({ length: 600 }, () => gen.str());
    strings.push("", "$", "${", "$${", "$$", "\\${", "'", "''", "a'", "a\n'", "\n", "\n\n", " \n", "a\n \nb", "\ta\n b");
    const indents = strings.map(() => " ".repeat(gen.int(5)));
    const quoted = strings.map(nixString);
    const indented = strings.map((s, i) => printIndentedString(s, indents[i]));
    // Guard against a silent fallback for everything: the indented form must really be tested.
    expect(indented.filter((t) => t.startsWith("''")).length).toBeGreaterThan(150);
    expect(strings.some((s) => s.length > 10_000)).toBe(true);
    const got = await nixEvalEach("string", strings.map((_, i) => `[ ${quoted[i]} ${indented[i]} ]`));
    expect(got).toHaveLength(strings.length);
    strings.forEach((s, i) => {
      const [q, ind] = got[i] as [string, string];
      expect(q, quoted[i]).toBe(s);
      expect(ind, indented[i]).toBe(s);
    });
  });

  it("paths resolve like Node's path.resolve", async () => {
    const paths = ["./x/y.nix", "../../roles/form-pi.nix", "/abs", "./a/../b+c_d-e.f", "/x/./y", "./."];
    const text = `map builtins.toString ${printNix(paths.map(path))}`;
    expect(await nixEvalEach("paths", [text])).toEqual([paths.map((p) => resolve(dir, p))]);
  });

  it("raw expressions and applications evaluate with a stand-in lib", async () => {
    const expr = printNix({
      a: mkDefault([-1, { if: mkDefault("x\ny") }]),
      b: raw("builtins.toString"),
      c: [apply("f", "x"), apply("f", -2), apply("f", apply("f", [1]))],
    });
    const prelude = "lib = { mkDefault = v: { _default = v; }; }; f = v: [ v ];";
    const [got] = await nixEvalEach("raw", [`${expr} // { b = null; }`], prelude);
    expect(got).toEqual({
      a: { _default: [-1, { if: { _default: "x\ny" } }] },
      b: null,
      c: [["x"], [-2], [[[1]]]],
    });
  });

  it("nix-instantiate --parse accepts every printed value file by file", async () => {
    const texts = [...Array.from({ length: 100 }, () => printNix(gen.value(0))), printNix(path("./x"))];
    const files = texts.map((t, i) => {
      const file = join(dir, `parse-${i}.nix`);
      writeFileSync(file, t + "\n");
      return file;
    });
    // Throws (with Nix's message) on the first file that does not parse.
    await nix.must(["nix-instantiate", "--parse", ...files]);
  });
});
