/**
 * nixfleet's settings and time bounds, from the one table both sides read:
 * nix/modules/services/system/auto-upgrade.json. The NixOS module declares its options from it
 * (`builtins.fromJSON`); here the schema takes each setting's bounds, the resolver its defaults and
 * presets, the commands their environment names and `timeout`s. Tests check the agent's defaults
 * and waits, the args' docs and the README against it (test/settings-table.test.ts). A Go program can
 * read the same file.
 */
import table from "../nix/modules/services/system/auto-upgrade.json";

export type SettingType = "bool" | "units" | "branch" | "remote" | "calendar" | "timespan" | "seconds" | "int" | "path";

export interface SettingSpec {
  readonly type: SettingType;
  readonly default: boolean | number | string | readonly string[];
  /** The variable the agent reads it from; absent for settings only the module or the deployer uses. */
  readonly env?: string;
  readonly min?: number;
  readonly max?: number;
  readonly example?: unknown;
  readonly doc: string;
  /** Why the setting no longer does anything (a warning says so when it is set). */
  readonly deprecated?: string;
}

export interface BoundSpec {
  readonly doc: string;
  readonly seconds: number;
  /** Setting name (a timeout, `healthTimeout` or `confirmTimeout`) → factor. */
  readonly terms: Readonly<Record<string, number>>;
}

/** The table as typed data: each group's entries by name. */
export const TABLE = table as unknown as {
  readonly settings: Readonly<Record<string, SettingSpec>>;
  readonly presets: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  readonly host: Readonly<Record<string, SettingSpec>>;
  readonly push: Readonly<Record<string, SettingSpec>>;
  readonly timeouts: Readonly<Record<string, SettingSpec>>;
  readonly bounds: Readonly<Record<"activatorReady" | "confirmWait" | "deploy" | "confirm", BoundSpec>>;
};

/** A bound's seconds for the given values of its terms (every term must be given). */
export function boundSeconds(name: keyof typeof TABLE.bounds, values: Readonly<Record<string, number>>): number {
  const b = TABLE.bounds[name];
  return Object.entries(b.terms).reduce((sum, [term, factor]) => {
    const v = values[term];
    if (v === undefined) throw new Error(`nixfleet: bound ${name} needs ${term}`);
    return sum + factor * v;
  }, b.seconds);
}

/** "Defaults to X." as the docs write it. */
export function defaultText(spec: SettingSpec): string {
  const v = spec.default;
  if (Array.isArray(v)) return `[${v.map((x) => JSON.stringify(x)).join(", ")}]`;
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}
