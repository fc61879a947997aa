/**
 * Documentation text generated from the settings table (auto-upgrade.json): the args' JSDoc lines
 * (components/args.ts, checked by test/settings-table.test.ts) and the README's settings and bounds
 * tables (written by `npm run docs`, checked by the same test). Nothing here runs in a program.
 */
import { ROLES } from "./errors";
import { boundSeconds, TABLE, type SettingSpec } from "./table";

const fmt = (v: unknown) => (Array.isArray(v) ? `[${v.map((x) => JSON.stringify(x)).join(", ")}]` : typeof v === "string" ? JSON.stringify(v) : String(v));
const list = (xs: readonly string[]) => (xs.length <= 1 ? xs.join("") : `${xs.slice(0, -1).join(", ")} and ${xs[xs.length - 1]}`);

/** A setting's value for each preset (the module's default where a preset does not set it). */
export function presetValues(name: string): Record<string, unknown> {
  const spec = TABLE.settings[name];
  return Object.fromEntries(ROLES.map((r) => [r, name in TABLE.presets[r] ? TABLE.presets[r][name] : spec.default]));
}

/** "Defaults to X." for a setting, per preset where they differ. */
export function defaultsSentence(name: string): string {
  const groups = new Map<string, string[]>();
  for (const [role, v] of Object.entries(presetValues(name))) groups.set(fmt(v), [...(groups.get(fmt(v)) ?? []), role]);
  if (groups.size === 1) return `Defaults to ${[...groups.keys()][0]}.`;
  return `Defaults to ${[...groups].map(([v, roles]) => `${v} for ${list(roles)}`).join(", ")}.`;
}

/** The JSDoc text of each documented arg, by group and name: the table's doc, then its default. */
export function argDocs(): Record<string, Record<string, string>> {
  const range = (s: SettingSpec) => (s.min !== undefined ? ` From ${s.min} to ${s.max}.` : "");
  const simple = (s: SettingSpec) => `${s.doc}${range(s)} Defaults to ${fmt(s.default)}.`;
  const settings = Object.fromEntries(Object.entries(TABLE.settings).map(([n, s]) => [n, `${s.doc}${range(s)} ${defaultsSentence(n)}`]));
  return {
    UpgradeSettings: { ...settings, ...Object.fromEntries(Object.entries(TABLE.push).map(([n, s]) => [n, simple(s)])) },
    TimeoutArgs: Object.fromEntries(Object.entries(TABLE.timeouts).map(([n, s]) => [n, simple(s)])),
    HostSpec: { stateDir: simple(TABLE.host.stateDir) },
  };
}

const cell = (v: unknown) => (Array.isArray(v) ? `\`${fmt(v).replace(/"/g, "")}\`` : typeof v === "string" ? `\`${v}\`` : String(v));

/** The README's table of role settings: one row per setting, one column per preset. */
export function settingsTable(): string {
  const rows = Object.entries(TABLE.settings).map(([n, s]) => {
    const values = presetValues(n);
    const doc = s.deprecated ? `deprecated: ${s.deprecated}` : s.doc;
    return `| \`${n}\` | ${doc.replace(/\|/g, "\\|")} | ${ROLES.map((r) => cell(values[r])).join(" | ")} |`;
  });
  const push = Object.entries(TABLE.push).map(([n, s]) => `| \`${n}\` | ${s.doc} | ${ROLES.map(() => cell(s.default)).join(" | ")} |`);
  return [`| setting | meaning | ${ROLES.join(" | ")} |`, `| --- | --- | ${ROLES.map(() => "---").join(" | ")} |`, ...rows, ...push].join("\n");
}

/** The README's rows for the two SSH sessions' `timeout`s, with the default values. */
export function boundsRows(): string {
  const t = Object.fromEntries(Object.entries(TABLE.timeouts).map(([n, s]) => [n, s.default as number]));
  const values = { ...t, healthTimeout: TABLE.settings.healthTimeout.default as number, confirmTimeout: TABLE.push.confirmTimeout.default as number };
  const formula = (name: "deploy" | "confirm") => {
    const b = TABLE.bounds[name];
    const terms = Object.entries(b.terms).map(([k, f]) => `${f === 1 ? "" : `${f} × `}${k} ${values[k as keyof typeof values]}`);
    return `${terms.join(" + ")} + ${b.seconds} s = **${boundSeconds(name, values)} s**`;
  };
  return [`| deploy session (\`timeout\`) | ${formula("deploy")} |`, `| confirm session (\`timeout\`) | ${formula("confirm")} |`].join("\n");
}

/** The README line listing the phase timeouts and their defaults. */
export function timeoutsLine(): string {
  const t = Object.entries(TABLE.timeouts).map(([n, s]) => `\`${n}\` ${s.default}`);
  return `Set them in \`nixfleet:timeouts\` (seconds; defaults ${t.join(", ")}) and per role/host (\`healthTimeout\`, \`confirmTimeout\`).`;
}

/** `text` with each documented arg's JSDoc replaced by `argDocs()` (components/args.ts). */
export function withArgDocs(text: string): string {
  let out = text;
  for (const [group, docs] of Object.entries(argDocs())) {
    const start = out.indexOf(`export interface ${group} `);
    if (start < 0) throw new Error(`args: no interface ${group}`);
    const end = out.indexOf("\n}\n", start);
    let body = out.slice(start, end);
    for (const [name, doc] of Object.entries(docs)) {
      const re = new RegExp(`  /\\*\\*[^\\n]*\\*/\\n(  readonly ${name}\\?:)`);
      if (!re.test(body)) throw new Error(`args: ${group}.${name} has no one-line doc`);
      body = body.replace(re, (_m, decl: string) => `  /** ${doc} */\n${decl}`);
    }
    out = out.slice(0, start) + body + out.slice(end);
  }
  return out;
}

/** `text` (the README) with each generated section between its markers replaced. */
export function withReadmeSections(text: string): string {
  const sections: Record<string, string> = { settings: settingsTable(), bounds: boundsRows(), timeouts: timeoutsLine() };
  let out = text;
  for (const [name, body] of Object.entries(sections)) {
    const open = `<!-- generated from auto-upgrade.json by \`npm run docs\`: ${name} -->`;
    const close = `<!-- end of generated ${name} -->`;
    const a = out.indexOf(open);
    const b = out.indexOf(close);
    if (a < 0 || b < a) throw new Error(`README: no generated section ${name}`);
    out = `${out.slice(0, a + open.length)}\n${body}\n${out.slice(b)}`;
  }
  return out;
}
