/**
 * The stack config schema: the one place that says what `nixfleet:*` config may hold.
 * The Pulumi program and `nixfleet render` both parse through `parseFleetConfig`, once,
 * before anything is created or written. Every check here is about data reaching Nix and
 * shell as data: the printer and the quoting make values safe, the schema makes them *sane*.
 */
import { z } from "zod";
import { TABLE, type SettingSpec } from "./table";
import { ConfigError, ROLES, STACK_CONFIG, type KeyPath, type Preset, type Source } from "./errors";

export { ConfigError, configKeyPath, ROLES, STACK_CONFIG, type KeyPath, type Preset, type Role, type Source } from "./errors";

const isPreset = (r: string): r is Preset => (ROLES as readonly string[]).includes(r);

// systemd.unit(5) names, the same rule as the module's assertion and the agent's UnitRE: letters,
// digits and ":-_.\" (not "-" first), one "@" for a template, a unit type suffix; at most 255 chars.
const UNIT_SUFFIXES = ["service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice", "scope"];
const UNIT_NAME = new RegExp(`^[A-Za-z0-9:_.\\\\][-A-Za-z0-9:_.\\\\]*(@[-A-Za-z0-9:_.\\\\]*)?\\.(${UNIT_SUFFIXES.join("|")})$`);
// RFC 1123 label; a host's name is also its flake attribute and folder name.
const HOST_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;
const UNIX_USER = /^[a-z_][a-z0-9_-]{0,31}$/;
const HOST_KEY = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,2}$/;
// A calendar expression reaches systemd as data; this keeps it to the characters systemd.time(7) uses.
const CALENDAR = /^[A-Za-z0-9*:,./~ -]{1,100}$/;
const DURATION = /^[0-9]+ ?(us|ms|s|sec|m|min|h|hr|d|w)?( ?[0-9]+ ?(us|ms|s|sec|m|min|h|hr|d|w))*$/;

/** A value echoed in an error: JSON, cut to ~80 characters so a huge input never makes a huge message. */
export function show(value: unknown): string {
  const text = typeof value === "string" ? value : String(value);
  if (text.length <= 80) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, 80))}… (${text.length} characters)`;
}

/** git-check-ref-format(1) rules for a branch name, plus no leading "-" (option injection). */
export function branchProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > 200) return "must be 1 to 200 characters";
  if (name.startsWith("-")) return "must not start with '-'";
  if (/[\x00-\x20\x7f~^:?*[\\]/.test(name)) return "must not contain spaces, control characters or any of ~ ^ : ? * [ \\";
  if (name.includes("..") || name.includes("//") || name.includes("@{")) return "must not contain '..', '//' or '@{'";
  if (name === "@" || name.startsWith("/") || name.endsWith("/") || name.endsWith(".")) return "must not be '@' or start/end with '/' or end with '.'";
  if (name.split("/").some((part) => part.startsWith(".") || part.endsWith(".lock"))) return "no path component may start with '.' or end with '.lock'";
  return undefined;
}

const MAX_PATH = 1024;

/** An absolute path with no "..": it is copied to, built from and committed in on the host. */
export function pathProblem(p: string): string | undefined {
  if (p.length > MAX_PATH) return `must be at most ${MAX_PATH} characters`;
  if (!p.startsWith("/")) return "must be an absolute path (start with '/')";
  if (/[\x00-\x1f\x7f]/.test(p)) return "must not contain control characters";
  // The checkout is built as a flake reference: '#' and '?' would pick another attribute or flake.
  if (/[#?]/.test(p)) return "must not contain '#' or '?'";
  if (p.split("/").some((seg) => seg === "..")) return "must not contain '..'";
  if (p.length > 1 && p.endsWith("/")) return "must not end with '/'";
  if (/\/\.?\//.test(`${p}/`.slice(1))) return "must be a clean path: no '//' or '/./'";
  return undefined;
}

// Directories the system owns: a state dir there (or one of them itself) would mix nixfleet's files
// with the OS's, and `golden`/`validated` GC roots, a lease and a lock would land in them.
const SYSTEM_TREES = ["/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/nix", "/proc", "/sbin", "/sys", "/usr"];
const SYSTEM_DIRS = ["/", "/home", "/mnt", "/opt", "/root", "/run", "/srv", "/tmp", "/var", "/var/lib", "/var/log"];
const inside = (p: string, dir: string) => p === dir || p.startsWith(dir === "/" ? "/" : `${dir}/`);

/** Where nixfleet may keep its state on a host: its own directory, never a system one. */
export function stateDirProblem(p: string): string | undefined {
  const why = pathProblem(p);
  if (why) return why;
  const tree = SYSTEM_TREES.find((d) => inside(p, d));
  if (tree || SYSTEM_DIRS.includes(p)) return `is a system directory${tree && tree !== p ? ` (inside ${tree})` : ""}; allowed: a directory of nixfleet's own, e.g. "/var/lib/auto-upgrade"`;
  return undefined;
}

/** The unit that runs the upgrade: as a hook, health or onFailure unit it would start or wait on itself. */
export const SELF_UNIT = "auto-upgrade.service";

// `pulumi config set --path k true` stores a YAML boolean; a quoted "true" is a mistake worth naming.
const bool = () => z.boolean({ error: "must be true or false (a boolean, not a string)" });

/** A whole number in [lo, hi], with one message for every way it can be wrong. */
const intIn = (lo: number, hi: number, what: string) => {
  const error = `must be a whole number${what} from ${lo} to ${hi}`;
  return z.number({ error }).refine((n) => Number.isInteger(n) && n >= lo && n <= hi, { error });
};

const unitName = z.string().refine((s) => s.length <= 255 && UNIT_NAME.test(s), {
  error: (iss) =>
    `${show(iss.input)} is not a systemd unit name; allowed: letters, digits and ":-_.\\" (not "-" first; one "@" for a template), ending in .${UNIT_SUFFIXES.join("/.")}, e.g. "chezmoi-pre-update.service"`,
});

const unitList = z
  .array(
    unitName.refine((s) => s !== SELF_UNIT, {
      error: `is ${SELF_UNIT} itself, which would start or wait on the upgrade from inside the upgrade; allowed: any other unit`,
    }),
  )
  .max(32, { error: "at most 32 units" });

const withProblem = (problem: (s: string) => string | undefined) =>
  z.string().superRefine((s, ctx) => {
    const why = problem(s);
    if (why) ctx.addIssue({ code: "custom", message: `${show(s)}: ${why}` });
  });

const pattern = (re: RegExp, allowed: string) =>
  z.string().refine((s) => s.length <= 1000 && re.test(s), { error: (iss) => `${show(iss.input)} is not allowed; ${allowed}` });

/** A whole number within the table's bounds for `spec`. */
const bounded = (spec: SettingSpec) => intIn(spec.min!, spec.max!, spec.type === "seconds" ? " of seconds" : "");
const S = TABLE.settings;

/**
 * The upgrade settings a role sets and a host may override. All optional here; defaults come from the
 * role. Each setting's type, bounds, default and doc are in auto-upgrade.json (config/table.ts): the
 * validators here are per type, and test/settings-table.test.ts checks that every setting of the
 * table has one of the table's type, and no other.
 */
export const settingsShape = {
  preUpdateValidation: bool().optional(),
  preUpdateHooks: unitList.optional(),
  requiredHooks: unitList.optional(),
  hostCanCommitConfig: bool().optional(),
  branch: withProblem(branchProblem).optional(),
  remote: pattern(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "allowed: a git remote name of letters, digits and ._-").optional(),
  schedule: pattern(CALENDAR, "allowed: a systemd calendar expression such as \"04:00\" or \"Sun *-*-* 03:00\"").optional(),
  randomizedDelaySec: pattern(DURATION, "allowed: a systemd time span such as \"30min\" or \"0\"").optional(),
  healthCheck: bool().optional(),
  healthUnits: unitList.optional(),
  healthTimeout: bounded(S.healthTimeout).optional(),
  onFailure: unitList.optional(),
};

/**
 * Settings only the deployer uses (never rendered into Nix): how long the host waits for the
 * confirmation, and the rollout wave. Per role, overridable per host.
 */
export const pushShape = {
  confirmTimeout: bounded(TABLE.push.confirmTimeout).optional(),
  wave: bounded(TABLE.push.wave).optional(),
};

const settings = z.strictObject(settingsShape);
export type Settings = z.infer<typeof settings>;
const roleObject = z.strictObject({
  ...settingsShape,
  ...pushShape,
  /** The built-in role this one starts from; required for a custom role, not allowed on a preset. */
  preset: z.enum(ROLES, { error: `must be one of ${ROLES.join(", ")}` }).optional(),
});
// Role names become file names (roles/form-<role>.nix): the same rule as host names.
const ROLE_NAME = HOST_LABEL;
const ROLE_NAME_RULE = "an RFC 1123 label: lowercase letters, digits and '-', 1 to 63 characters";
export type PushSettings = z.infer<z.ZodObject<typeof pushShape>>;

const host = z.strictObject({
  /** The host's name: its flake attribute (`nixosConfigurations.<name>`) and folder. */
  name: pattern(HOST_LABEL, "allowed: an RFC 1123 label: lowercase letters, digits and '-', 1 to 63 characters, not starting or ending with '-'"),
  /** Where SSH connects: an RFC 1123 hostname or an IP address. */
  address: z.string().refine(
    (s) => s.length <= 253 && (IPV4.test(s) || (s.includes(":") && IPV6.test(s)) || (s.length <= 253 && s.split(".").every((l) => HOST_LABEL.test(l.toLowerCase())))),
    { error: (iss) => `${show(iss.input)} is not allowed; allowed: an RFC 1123 hostname or an IPv4/IPv6 address` },
  ),
  /** SSH port. Defaults to 22. */
  port: z
    .number({ error: "must be a port number from 1 to 65535" })
    .refine((n) => Number.isInteger(n) && n >= 1 && n <= 65535, { error: "must be a port number from 1 to 65535" })
    .optional(),
  /** SSH user; commands that need root run through passwordless sudo when it is not root. */
  user: pattern(UNIX_USER, "allowed: a Unix user name (lowercase letters, digits, '_' and '-')").optional(),
  /** The host's SSH public key in authorized_keys format; without it the connection is not authenticated. */
  hostKey: pattern(HOST_KEY, "allowed: one public key in authorized_keys format without comment, e.g. \"ssh-ed25519 AAAA…\"")
    .refine((k) => !k.startsWith("ssh-rsa "), {
      error: "is an RSA key: the command provider offers only SHA-1 ssh-rsa for it, which OpenSSH 8.8 and later refuse; pin the ed25519 key: ssh-keyscan -t ed25519 <address>",
    })
    .optional(),
  /** A preset (desktop, laptop, server, pi) or a role defined in `roles` (checked below). */
  role: z.string({ error: `must be a role name: one of ${ROLES.join(", ")} or a role defined in roles` }),
  /** The nix-config checkout on the host. */
  configPath: withProblem((p) => (p === "/" ? "must not be '/'; allowed: the nix-config checkout's own directory" : pathProblem(p))),
  /** Owner of the checkout; git runs as this user. Defaults to whoever owns the directory on the host. */
  configOwner: pattern(UNIX_USER, "allowed: a Unix user name (lowercase letters, digits, '_' and '-')").optional(),
  /** Where the status record and the validated out-link live on the host. Defaults to /var/lib/auto-upgrade. */
  stateDir: withProblem(stateDirProblem).optional(),
  ...settingsShape,
  ...pushShape,
});
export type HostConfig = z.infer<typeof host>;

const T = TABLE.timeouts;

/**
 * Bounds of the remote phases (docs/rollout.md §3, auto-upgrade.json `timeouts`): the agent runs
 * each under `timeout`; the deploy and confirm commands are bounded by the table's sums (the
 * provider ignores customTimeouts).
 */
export const DEFAULT_TIMEOUTS = {
  lease: T.lease.default as number,
  hooks: T.hooks.default as number,
  validate: T.validate.default as number,
  switch: T.switch.default as number,
  commit: T.commit.default as number,
} as const;

const fleetObject = z.strictObject({
  // Every key is checked (superRefine below): a record of enum keys alone would skip `__proto__`.
  roles: z.record(z.string(), roleObject).optional(),
  hosts: z.array(host).min(1, { error: "list at least one host" }).max(1000, { error: "at most 1000 hosts per stack" }),
  timeouts: z.strictObject({
    lease: bounded(T.lease).optional(),
    hooks: bounded(T.hooks).optional(),
    validate: bounded(T.validate).optional(),
    switch: bounded(T.switch).optional(),
    commit: bounded(T.commit).optional(),
  }).optional(),
});

export const fleetConfigSchema = fleetObject.superRefine((cfg, ctx) => {
  for (const [name, role] of Object.entries(cfg.roles ?? {})) {
    if (isPreset(name) && role.preset !== undefined && role.preset !== name) {
      ctx.addIssue({ code: "custom", path: ["roles", name, "preset"], message: `is not allowed on the built-in role ${show(name)}; it is its own preset` });
    }
    if (!isPreset(name) && role.preset === undefined) {
      ctx.addIssue({ code: "custom", path: ["roles", name, "preset"], message: `is required for the custom role ${show(name)}; allowed: ${ROLES.join(", ")} (the built-in role whose defaults it starts from)` });
    }
  }
  const names = new Map<string, number>();
  const endpoints = new Map<string, number>();
  cfg.hosts.forEach((h, i) => {
    const first = names.get(h.name);
    if (first !== undefined) {
      ctx.addIssue({ code: "custom", path: ["hosts", i, "name"], message: `${show(h.name)} is already hosts[${first}].name; host names must be unique` });
    }
    names.set(h.name, i);
    if (!isPreset(h.role) && !Object.hasOwn(cfg.roles ?? {}, h.role)) {
      const custom = Object.keys(cfg.roles ?? {}).filter((r) => !isPreset(r));
      ctx.addIssue({ code: "custom", path: ["hosts", i, "role"], message: `${show(h.role)} is not a role; allowed: ${[...ROLES, ...custom].join(", ")} (a custom role is defined in roles with a preset)` });
    }
    // Two entries for one machine would switch it to the other host's system.
    const endpoint = `${h.address.toLowerCase()}:${h.port ?? 22}`;
    const same = endpoints.get(endpoint);
    if (same !== undefined) {
      ctx.addIssue({ code: "custom", path: ["hosts", i, "address"], message: `${show(endpoint)} is already hosts[${same}]'s address and port; each host must be a different machine` });
    }
    endpoints.set(endpoint, i);
    const state = h.stateDir ?? (TABLE.host.stateDir.default as string);
    // Only between two otherwise valid paths: "/" is already refused on its own.
    const bothValid = stateDirProblem(state) === undefined && h.configPath !== "/";
    if (bothValid && (inside(state, h.configPath) || inside(h.configPath, state))) {
      ctx.addIssue({ code: "custom", path: ["hosts", i, "stateDir"], message: `${show(state)} overlaps configPath ${show(h.configPath)}; allowed: a directory outside the checkout that does not contain it` });
    }
  });
});
export type FleetConfig = z.infer<typeof fleetConfigSchema>;

/** Parses the `nixfleet:*` config values (already decoded from YAML/JSON) or throws a ConfigError naming every bad field. */
export function parseFleetConfig(raw: unknown, source: Source = STACK_CONFIG): FleetConfig {
  const roleIssues = badRoleNames(raw, source.keyPath);
  const result = fleetConfigSchema.safeParse(raw, { reportInput: true });
  if (result.success && roleIssues.length === 0) return result.data;
  const issues = result.success ? [] : result.error.issues.map((iss) => issueLine(iss, source.keyPath));
  throw new ConfigError(boundIssues([...roleIssues, ...issues]), source.what);
}

/**
 * Every key of `roles` must be a valid role name. Checked on the raw value: a parsed record silently
 * loses a `__proto__` key (assigning it sets the prototype), so zod's output cannot show it.
 */
function badRoleNames(raw: unknown, keyPath: KeyPath): string[] {
  const roles = (raw as { roles?: unknown } | null)?.roles;
  if (roles === null || typeof roles !== "object" || Array.isArray(roles)) return [];
  return Object.keys(roles)
    .filter((k) => !ROLE_NAME.test(k))
    .map((k) => `${keyPath(["roles", k])}: ${show(k)} is not a role name; allowed: ${ROLE_NAME_RULE}`);
}

/** At most 20 lines of at most 400 characters: an error about huge input stays readable. */
export function boundIssues(lines: string[]): string[] {
  const cut = lines.slice(0, 20).map((l) => (l.length > 400 ? `${l.slice(0, 400)}…` : l));
  return lines.length > 20 ? [...cut, `… and ${lines.length - 20} more`] : cut;
}

function allowedKeys(path: readonly PropertyKey[]): string[] {
  if (path.length === 0) return Object.keys(fleetObject.shape);
  if (path[0] === "hosts") return Object.keys(host.shape);
  if (path[0] === "timeouts") return Object.keys(DEFAULT_TIMEOUTS);
  return Object.keys(roleObject.shape);
}

function issueLine(iss: z.core.$ZodIssue, configKeyPath: KeyPath): string {
  if (iss.code === "unrecognized_keys") {
    const unknown = iss.keys.slice(0, 5).map((k) => show(k)).join(", ");
    return `${configKeyPath(iss.path)}: unknown key(s) ${unknown}; allowed: ${allowedKeys(iss.path).join(", ")}`;
  }
  if (iss.code === "invalid_type" && iss.input === undefined && iss.path.length > 0) {
    return `${configKeyPath(iss.path)}: is required`;
  }
  return `${configKeyPath(iss.path)}: ${iss.message}`;
}
