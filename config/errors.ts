/**
 * The plain types and errors of nixfleet's config, with no dependency on the schema library: what a
 * component's `.d.ts` may mention without pulling zod's types into a user's `tsc` (under `strict`
 * with CommonJS and no `esModuleInterop`, zod's `.d.cts` does not compile).
 */

/** The built-in roles (presets), each with the plan's defaults (see `ROLE_DEFAULTS`). */
export const ROLES = ["desktop", "laptop", "server", "pi"] as const;
export type Preset = (typeof ROLES)[number];
/** A role name: a preset, or a role defined in `roles` (which names the preset it starts from). */
export type Role = string;
/** Thrown for invalid stack config or component args; `issues` are lines like `nixfleet:hosts[2].preUpdateHooks[0]: …`. */
export class ConfigError extends Error {
  constructor(
    readonly issues: string[],
    what = "nixfleet stack config",
  ) {
    super(`invalid ${what}:\n  ${issues.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

/** `["hosts", 2, "preUpdateHooks", 0]` → `nixfleet:hosts[2].preUpdateHooks[0]`, the key `pulumi config set --path` takes. */
export function configKeyPath(path: readonly PropertyKey[]): string {
  let out = "nixfleet";
  path.forEach((seg, i) => {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += i === 0 ? `:${String(seg)}` : `.${String(seg)}`;
  });
  return out;
}

/** How an issue names its field: `configKeyPath` for stack config, a component's own for its args. */
export type KeyPath = (path: readonly PropertyKey[]) => string;

/** Where the values came from, for error messages: stack config by default. */
export interface Source {
  readonly keyPath: KeyPath;
  /** "nixfleet stack config", `args of Fleet "home"`, … */
  readonly what: string;
}
export const STACK_CONFIG: Source = { keyPath: configKeyPath, what: "nixfleet stack config" };

