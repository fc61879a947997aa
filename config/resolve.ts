/**
 * From parsed stack config to one fully-resolved record per host: the preset's built-in defaults,
 * then the stack's `roles` settings, then the host's own overrides. A custom role starts from the
 * built-in defaults of the preset it names (not from the stack's settings for that preset).
 */
import { TABLE, type SettingSpec } from "./table";
import { ConfigError, DEFAULT_TIMEOUTS, pushShape, ROLES, settingsShape, STACK_CONFIG, type FleetConfig, type HostConfig, type Preset, type PushSettings, type Role, type Settings, type Source } from "./schema";

export type FullSettings = Required<Settings>;
export type FullPushSettings = Required<PushSettings>;
export type Timeouts = { readonly [K in keyof typeof DEFAULT_TIMEOUTS]: number };

const defaults = (group: Readonly<Record<string, SettingSpec>>) => Object.fromEntries(Object.entries(group).map(([k, s]) => [k, s.default]));

/** The module's defaults (auto-upgrade.json), which the presets start from. */
const common = defaults(TABLE.settings) as FullSettings;

/** deploy-rs confirms within 30 s by default; nixfleet matches it. One wave unless the stack says. */
export const PUSH_DEFAULTS = defaults(TABLE.push) as FullPushSettings;

/** Where a host keeps its state unless the stack says (auto-upgrade.json `host.stateDir`). */
export const DEFAULT_STATE_DIR = TABLE.host.stateDir.default as string;

/** The plan's role defaults (auto-upgrade.json `presets`): desktops and laptops commit back, servers and Pis are pull-only; all run the chezmoi hook. */
// Indexable by any role name (undefined for a custom one): callers holding a plain string can look up.
export const ROLE_DEFAULTS: Readonly<Record<Preset, FullSettings>> & Readonly<Partial<Record<string, FullSettings>>> = Object.fromEntries(
  ROLES.map((r) => [r, { ...common, ...TABLE.presets[r] } as FullSettings]),
) as Record<Preset, FullSettings>;

export interface ResolvedHost {
  /** Position in `nixfleet:hosts`, for messages that name the config key. */
  readonly index: number;
  readonly name: string;
  readonly role: Role;
  readonly address: string;
  readonly port: number;
  readonly user: string;
  readonly hostKey?: string;
  readonly configPath: string;
  /** Owner of the checkout, when the stack says; otherwise whoever owns the directory on the host. */
  readonly configOwner?: string;
  readonly stateDir: string;
  /** The role file's values (built-in defaults + stack `roles`), rendered as `lib.mkDefault`. */
  readonly roleSettings: FullSettings;
  /** Only what the host sets itself, rendered at normal priority. */
  readonly overrides: Settings;
  /** What the host ends up with: role settings, then overrides. */
  readonly settings: FullSettings;
  /** Deployer-only settings (never rendered): defaults, then the stack's role, then the host. */
  readonly push: FullPushSettings;
}

export interface ResolvedFleet {
  readonly hosts: readonly ResolvedHost[];
  readonly timeouts: Timeouts;
  /** Settings that are set but deprecated, each naming the key and why (the components log them). */
  readonly warnings: readonly string[];
}

/** A line per deprecated setting the config sets (auto-upgrade.json `deprecated`), naming its key. */
export function deprecations(cfg: FleetConfig, source: Source = STACK_CONFIG): string[] {
  const lines: string[] = [];
  const check = (where: PropertyKey[], values: Settings) => {
    for (const [name, spec] of Object.entries(TABLE.settings)) {
      if (spec.deprecated !== undefined && values[name as keyof Settings] !== undefined) lines.push(`${source.keyPath([...where, name])} is deprecated: ${spec.deprecated}`);
    }
  };
  for (const [role, s] of Object.entries(cfg.roles ?? {})) check(["roles", role], s ?? {});
  cfg.hosts.forEach((h, i) => check(["hosts", i], h));
  return lines;
}

const SETTING_KEYS = Object.keys(settingsShape) as (keyof Settings)[];
const PUSH_KEYS = Object.keys(pushShape) as (keyof PushSettings)[];

function pickPush(from: PushSettings): PushSettings {
  const out: Record<string, unknown> = {};
  for (const key of PUSH_KEYS) if (from[key] !== undefined) out[key] = from[key];
  return out as PushSettings;
}

function pickSettings(from: Settings): Settings {
  const out: Record<string, unknown> = {};
  for (const key of SETTING_KEYS) if (from[key] !== undefined) out[key] = from[key];
  return out as Settings;
}

/** The preset a role starts from: itself for a built-in role, its `preset` for a custom one. */
export function presetOf(cfg: FleetConfig, role: Role): Preset {
  if ((ROLES as readonly string[]).includes(role)) return role as Preset;
  const preset = cfg.roles?.[role]?.preset;
  // parseFleetConfig refuses a custom role without a preset; this guards callers that skipped it.
  if (preset === undefined) throw new Error(`nixfleet: role ${JSON.stringify(role)} is neither built in nor defined in roles with a preset`);
  return preset;
}

export function roleSettings(cfg: FleetConfig, role: Role): FullSettings {
  return { ...ROLE_DEFAULTS[presetOf(cfg, role)], ...pickSettings(cfg.roles?.[role] ?? {}) };
}

function resolveHost(cfg: FleetConfig, host: HostConfig, index: number): ResolvedHost {
  const user = host.user ?? "root";
  const role = roleSettings(cfg, host.role);
  const overrides = pickSettings(host);
  return {
    index,
    name: host.name,
    role: host.role,
    address: host.address,
    port: host.port ?? 22,
    user,
    hostKey: host.hostKey,
    configPath: host.configPath,
    configOwner: host.configOwner,
    stateDir: host.stateDir ?? DEFAULT_STATE_DIR,
    roleSettings: role,
    overrides,
    settings: { ...role, ...overrides },
    push: { ...PUSH_DEFAULTS, ...pickPush(cfg.roles?.[host.role] ?? {}), ...pickPush(host) },
  };
}

/** Resolves every host; cross-field rules that need the merged settings are checked here. */
export function resolveFleet(cfg: FleetConfig, source: Source = STACK_CONFIG): ResolvedFleet {
  const hosts = cfg.hosts.map((h, i) => resolveHost(cfg, h, i));
  const issues: string[] = [];
  hosts.forEach((h, i) => {
    const missing = h.settings.requiredHooks.filter((u) => !h.settings.preUpdateHooks.includes(u));
    if (missing.length > 0) {
      issues.push(`${source.keyPath(["hosts", i, "requiredHooks"])}: ${missing.map((u) => JSON.stringify(u)).join(", ")} not in the host's preUpdateHooks; allowed: a subset of [${h.settings.preUpdateHooks.join(", ")}]`);
    }
  });
  for (const [role, s] of Object.entries(cfg.roles ?? {})) {
    const missing = (s?.requiredHooks ?? []).filter((u) => !roleSettings(cfg, role).preUpdateHooks.includes(u));
    if (missing.length > 0) issues.push(`${source.keyPath(["roles", role, "requiredHooks"])}: ${missing.join(", ")} not in the role's preUpdateHooks`);
  }
  if (issues.length > 0) throw new ConfigError(issues, source.what);
  return { hosts, timeouts: { ...DEFAULT_TIMEOUTS, ...cfg.timeouts }, warnings: deprecations(cfg, source) };
}
