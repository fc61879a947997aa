/**
 * Component args → validated, resolved hosts: the stack config's schema and resolver, with field names
 * in the args' own terms (`hosts[2].address` for a Fleet, `address` for a Host). Not exported from the
 * package root.
 */
import * as pulumi from "@pulumi/pulumi";
import { resolveFleet, type ResolvedFleet, type ResolvedHost } from "../config/resolve";
import { configKeyPath, parseFleetConfig, type Source } from "../config/schema";
import type { FleetSpec, HostSpec } from "./args";

/** The fields that may be Outputs; checked when they resolve. */
const INPUT_FIELDS = ["address", "port", "hostKey", "configPath"] as const;
type InputField = (typeof INPUT_FIELDS)[number];

const pending = (v: unknown) => pulumi.Output.isInstance(v) || v instanceof Promise;

/**
 * Valid stand-ins for values not known yet, so everything else is checked at construction. They
 * cannot collide with a real host (".invalid" is reserved, RFC 2606) and are never used: the
 * resolved hosts come from the real values.
 */
function placeholder(field: InputField, i: number): unknown {
  if (field === "address") return `pending-${i}.invalid`;
  if (field === "port") return 22;
  if (field === "configPath") return `/nixfleet-pending-input/${i}`;
  return undefined;
}

/** Field names in the args' own terms: `hosts[2].address` for a Fleet, `address` for a Host. */
export function argsSource(what: string, hostOnly: boolean): Source {
  return {
    what,
    keyPath: (path) => {
      const rest = hostOnly && path[0] === "hosts" ? path.slice(2) : path;
      // configKeyPath writes `nixfleet:a.b[0]`; args have no namespace.
      return configKeyPath(rest).replace(/^nixfleet:?/, "") || "(args)";
    },
  };
}

export interface ResolvedArgs {
  /** Hosts with what is known now (Outputs replaced by stand-ins): names, roles, settings, waves, users. */
  readonly known: ResolvedFleet;
  /** The hosts with every value, validated when the Outputs resolve. */
  readonly resolved: pulumi.Output<ResolvedFleet>;
  /** Whether some value is an Output (validated later). */
  readonly hasPending: boolean;
}

/** Validates `spec` (throws a ConfigError naming fields in `source`'s terms) and resolves it. */
export function resolveArgs(spec: FleetSpec, source: Source): ResolvedArgs {
  // Stack config reaches here unchecked (program.ts): a value of the wrong shape is the schema's to name.
  if (!Array.isArray(spec.hosts) || spec.hosts.some((h) => h === null || typeof h !== "object")) resolveFleet(parseFleetConfig(spec, source), source);
  const plain = (h: HostSpec) => Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined));
  const raw = (hosts: Record<string, unknown>[]) => ({ ...(spec.roles === undefined ? {} : { roles: spec.roles }), hosts, ...(spec.timeouts === undefined ? {} : { timeouts: spec.timeouts }) });
  const check = (hosts: Record<string, unknown>[]) => resolveFleet(parseFleetConfig(raw(hosts), source), source);
  let hasPending = false;
  const standIns = spec.hosts.map((h, i) => {
    const out: Record<string, unknown> = plain(h);
    for (const f of INPUT_FIELDS) {
      if (pending(h[f])) {
        hasPending = true;
        const v = placeholder(f, i);
        if (v === undefined) delete out[f];
        else out[f] = v;
      }
    }
    return out;
  });
  const known = check(standIns);
  if (!hasPending) return { known, resolved: pulumi.output(known) as pulumi.Output<ResolvedFleet>, hasPending };
  const values = spec.hosts.map((h) => Object.fromEntries(INPUT_FIELDS.map((f) => [f, h[f]])));
  const resolved = pulumi.output(values).apply((vals) => check(spec.hosts.map((h, i) => plain({ ...h, ...(vals[i] as Partial<HostSpec>) }))));
  return { known, resolved: resolved as unknown as pulumi.Output<ResolvedFleet>, hasPending };
}

/** What a Fleet hands each of its Hosts, so they neither validate again nor lose the fleet-wide checks. */
export interface HostContext {
  readonly known: ResolvedHost;
  readonly resolved: pulumi.Output<ResolvedHost>;
  readonly timeouts: ResolvedFleet["timeouts"];
  readonly source: Source;
  /** The host's status from the Fleet's last outputs (the Fleet reads them once for all hosts). */
  readonly last: pulumi.Output<unknown>;
}

/**
 * The key under which a Fleet passes a HostContext inside the args of the Hosts it makes: an explicit
 * path from Fleet to Host (no shared state), and no field a user can set by accident (the symbol is
 * not exported from the package).
 */
export const FROM_FLEET: unique symbol = Symbol("nixfleet.fromFleet");
