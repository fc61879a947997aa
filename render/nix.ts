// The only code in nixfleet that emits Nix syntax. Everything a user supplies reaches Nix as
// data through printNix; code the project writes itself is marked with raw()/apply().
// Escaping rules follow the Nix 2.8 lexer (src/libexpr/lexer.l) and are checked against
// real `nix-instantiate` of today's Nix (2.26, in a machine of the fleet image) in nix.test.ts.

/** A trusted Nix expression written by nixfleet itself (never built from user values). */
export class NixRaw {
  /** @internal */
  constructor(
    /** @internal */ readonly render: (indent: string) => string,
    /** True when the expression needs no parentheses as a list element or argument. */
    readonly atomic: boolean,
  ) {}
}

/** A Nix path literal such as `./x.nix` or `../../roles/form-pi.nix`. */
export class NixPath {
  /** @internal */
  constructor(readonly path: string) {}
}

export type NixValue =
  | string
  | number
  | boolean
  | null
  | NixRaw
  | NixPath
  | NixValue[]
  | { [key: string]: NixValue };

// An identifier or a dotted select (`pkgs.git`, `lib.mkDefault`) needs no parentheses.
const SELECT = /^[A-Za-z_][A-Za-z0-9_'-]*(\.[A-Za-z_][A-Za-z0-9_'-]*)*$/;

/** Marks `expr` as trusted Nix code. Only for expressions the project writes itself. */
export function raw(expr: string): NixRaw {
  return new NixRaw(() => expr, SELECT.test(expr));
}

/** `fn arg`, e.g. `apply("lib.mkDefault", 3)` prints `lib.mkDefault 3`. `fn` is trusted code. */
export function apply(fn: string, arg: NixValue): NixRaw {
  return new NixRaw((indent) => `${fn} ${printElement(arg, indent)}`, false);
}

/** `lib.mkDefault <value>` (the caller's file must have `lib` in scope). */
export function mkDefault(value: NixValue): NixRaw {
  return apply("lib.mkDefault", value);
}

// Stricter than the lexer (which allows a trailing slash in later versions and `~/…`):
// only relative (`./`, `../`) or absolute paths with plain segments.
const PATH = /^(\.\.?)?(\/[A-Za-z0-9._+-]+)+$/;

/** A Nix path literal; throws unless `p` is `./…`, `../…` or `/…` made of `[A-Za-z0-9._+-/]`. */
export function path(p: string): NixPath {
  if (!PATH.test(p)) {
    throw new Error(
      `invalid Nix path literal ${JSON.stringify(p)}: it must start with "./", "../" or "/", ` +
        `use only the characters A-Z a-z 0-9 . _ + - /, and have no empty segment or trailing slash`,
    );
  }
  return new NixPath(p);
}

// Control characters other than \n \r \t have no escape in Nix ("\b" reads as "b"), and
// lone UTF-16 surrogates cannot be written as UTF-8: refuse them rather than alter the text.
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]|[\ud800-\udfff]/u;

function checkText(s: string): void {
  const m = FORBIDDEN.exec(s);
  if (m) {
    const code = m[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
    throw new Error(
      `cannot write U+${code} at index ${m.index} in a Nix string: only printable text, ` +
        `newline, carriage return and tab are allowed (no other control characters or lone surrogates)`,
    );
  }
}

/**
 * A `# …` comment line. A newline (or any control character) would end the comment and turn the
 * rest into code, so text that cannot stay one line is refused, not escaped.
 */
export function nixComment(text: string): string {
  if (/[\x00-\x1f\x7f\u2028\u2029]/.test(text)) {
    throw new Error(`a Nix comment must be one line without control characters: ${JSON.stringify(text.slice(0, 60))}`);
  }
  return `# ${text}`.trimEnd();
}

/** The `"…"` form of `s`: escapes `\`, `"`, `${`, newline, CR and tab; rejects other control characters. */
export function nixString(s: string): string {
  checkText(s);
  // `$$` needs no escape; `$${` lexes as `$` then `\${`, which Nix reads back as `$${`.
  const body = s.replace(/\\|"|\$\{|\n|\r|\t/g, (c) => {
    switch (c) {
      case "\n":
        return "\\n";
      case "\r":
        return "\\r";
      case "\t":
        return "\\t";
      default:
        return "\\" + c;
    }
  });
  return `"${body}"`;
}

/**
 * The `''…''` form of `s`, laid out as
 *
 *     ''
 *     <indent+2>line…
 *     <indent>''
 *
 * Nix drops the newline after the opening `''`, strips the smallest indentation of the lines
 * that are not all spaces, and drops a last line made only of spaces. We add exactly
 * `indent+2` spaces to each non-empty line, so the text comes back unchanged if
 *   - `s` contains a newline (otherwise `"…"` is shorter and used instead),
 *   - some line of `s` that is not all spaces starts with a non-space (its own indentation is 0),
 *   - the last line of `s` is empty or not all spaces.
 * Otherwise this returns `nixString(s)`. Inside, `''` → `'''`, `${` → `''${`, CR → `''\r` and
 * tab → `''\t` (Nix would keep them literally, but they are invisible in diffs), and a lone `'`
 * right before another `'` (an escape or the closing `''`) → `''\'`.
 */
export function printIndentedString(s: string, indent = ""): string {
  checkText(s);
  checkIndent(indent);
  const lines = s.split("\n");
  const last = lines[lines.length - 1];
  const zeroIndent = lines.some((l) => /^[^ ]/.test(l));
  if (lines.length < 2 || !zeroIndent || /^ +$/.test(last)) return nixString(s);

  // Escape into tokens first: whether a lone `'` is safe depends on the next token's first char
  // (`'` then `'''` would lex as `'''` then `'`).
  const tokens: string[] = [];
  for (let i = 0; i < s.length; ) {
    const c = s[i];
    if (s.startsWith("''", i)) {
      tokens.push("'''");
      i += 2;
    } else if (s.startsWith("${", i)) {
      tokens.push("''${");
      i += 2;
    } else if (c === "\r") {
      tokens.push("''\\r");
      i++;
    } else if (c === "\t") {
      tokens.push("''\\t");
      i++;
    } else {
      tokens.push(c);
      i++;
    }
  }
  for (let i = 0; i < tokens.length; i++) {
    const next = i + 1 < tokens.length ? tokens[i + 1][0] : "'"; // the closing `''`
    if (tokens[i] === "'" && next === "'") tokens[i] = "''\\'";
  }
  const pad = indent + "  ";
  const body = tokens
    .join("")
    .split("\n")
    .map((l) => (l === "" ? l : pad + l))
    .join("\n");
  // After a final newline the closing line is `indent''`, which Nix drops as all-spaces.
  return `''\n${body}${s.endsWith("\n") ? indent : ""}''`;
}

// Keywords of the Nix 2.8 lexer; `or` is accepted as an attribute name there, quoting it is harmless.
const KEYWORDS = new Set(["if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or"]);
const IDENT = /^[A-Za-z_][A-Za-z0-9_'-]*$/;

/** An attribute name: bare if a plain identifier that is not a keyword, else quoted. */
export function attrName(name: string): string {
  return IDENT.test(name) && !KEYWORDS.has(name) ? name : nixString(name);
}

function checkIndent(indent: string): void {
  if (!/^ *$/.test(indent)) throw new Error(`indent must be spaces only, got ${JSON.stringify(indent)}`);
}

// Byte order of UTF-8 = code point order: the order Nix itself uses for attribute names.
function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

function printInt(n: number): string {
  if (!Number.isSafeInteger(n)) {
    throw new Error(
      `cannot write ${n} as a Nix value: only integers between ` +
        `${Number.MIN_SAFE_INTEGER} and ${Number.MAX_SAFE_INTEGER} are allowed (no fractions, NaN or Infinity)`,
    );
  }
  return String(n); // String(-0) is "0"
}

// Lists and function arguments take only atoms: wrap applications and negative numbers.
function printElement(value: NixValue, indent: string, seen = new Set<object>()): string {
  const text = print(value, indent, seen);
  const atomic =
    value instanceof NixRaw ? value.atomic : !(typeof value === "number" && text.startsWith("-"));
  return atomic ? text : `(${text})`;
}

function print(value: NixValue, indent: string, seen: Set<object>): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "string":
      return value.includes("\n") ? printIndentedString(value, indent) : nixString(value);
    case "number":
      return printInt(value);
    case "boolean":
      return value ? "true" : "false";
    case "object":
      break;
    default:
      throw new Error(`cannot write a ${typeof value} as a Nix value`);
  }
  if (value instanceof NixRaw) return value.render(indent);
  if (value instanceof NixPath) return value.path;
  if (seen.has(value)) throw new Error("cannot write a cyclic structure as a Nix value");
  const inner = indent + "  ";
  const below = new Set(seen).add(value);
  if (Array.isArray(value)) {
    if (value.length === 0) return "[ ]";
    const items = value.map((v) => `${inner}${printElement(v, inner, below)}\n`);
    return `[\n${items.join("")}${indent}]`;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    throw new Error(`cannot write a ${proto?.constructor?.name ?? "non-plain"} object as a Nix value`);
  }
  const keys = Object.keys(value).sort(compareKeys);
  if (keys.length === 0) return "{ }";
  const rec = value as { [key: string]: NixValue };
  const lines = keys.map((k) => {
    // `a = { b = { c = 1; }; };` reads better as `a.b.c = 1;` (the same attrset in Nix): follow
    // plain one-binding attrsets down to the first value that is not one.
    const names = [attrName(k)];
    const path = new Set(below);
    let v = rec[k];
    while (isPlainObject(v) && Object.keys(v).length === 1 && !path.has(v)) {
      path.add(v);
      const [only] = Object.keys(v);
      names.push(attrName(only));
      v = v[only];
    }
    return `${inner}${names.join(".")} = ${print(v, inner, path)};\n`;
  });
  return `{\n${lines.join("")}${indent}}`;
}

function isPlainObject(v: NixValue): v is { [key: string]: NixValue } {
  if (v === null || typeof v !== "object" || Array.isArray(v) || v instanceof NixRaw || v instanceof NixPath) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Nix source for `value`: sorted keys, two-space indent, one element or binding per line.
 * `indent` is the indentation of the line the value starts on (spaces only).
 * Strings with a newline use the `''…''` form when it is exact (see printIndentedString).
 */
export function printNix(value: NixValue, indent = ""): string {
  checkIndent(indent);
  return print(value, indent, new Set());
}
