/**
 * `nixfleet:index:Fleet`: the hosts of one stack, rolled out in waves (stack config `wave`, default 0).
 * Hosts of one wave run in parallel; every host of wave k+1 waits for every confirm of wave k. The
 * engine skips dependents of a failed resource even with `--continue-on-error`, so one failed host
 * stops all later waves (verified with the real engine, see Host). `status` resolves for every host
 * even when some failed, and the fleet logs one error per failed host and one per stopped wave.
 */
import * as pulumi from "@pulumi/pulumi";
import type { Source } from "../config/errors";
import type { FleetSpec } from "./args";
import { argsSource, FROM_FLEET, resolveArgs } from "./validate";
import { Host, type HostArgs, type HostStatus } from "./host";
import { lastOutputs } from "./outcome";
import { TYPES } from "./tokens";

/**
 * The fleet: `hosts`, `roles` and `timeouts` are what a stack's `nixfleet:hosts`, `nixfleet:roles`
 * and `nixfleet:timeouts` hold (see HostSpec, RoleArgs, TimeoutArgs), plus the key. Bad values throw
 * a ConfigError naming the field (`hosts[2].address: …`); Output values are checked when they resolve.
 */
export interface FleetArgs extends FleetSpec {
  /** The SSH private key for every host; pass it as a secret. */
  readonly privateKey: pulumi.Input<string>;
}

/**
 * How errors name fields: a Fleet a user makes names its args (`hosts[2].address`); the stack's own
 * program (program.ts) passes its config under this key so they name config keys
 * (`nixfleet:hosts[2].address`). Not exported from the package.
 */
export const ARGS_SOURCE: unique symbol = Symbol("nixfleet.argsSource");
type ProgramFleetArgs = FleetArgs & { readonly [ARGS_SOURCE]?: Source };

const FLEET_BRAND = Symbol.for(TYPES.fleet);

/** The log lines for a finished run: one per failed host, one per stopped wave (empty when all went well). */
export function failureSummary(statuses: Record<string, HostStatus>): string[] {
  const lines: string[] = [];
  const failed = Object.entries(statuses).filter(([, s]) => s.result === "failed");
  for (const [name, s] of failed) lines.push(`host ${name} (wave ${s.wave}) failed at ${s.step}: ${s.message}`);
  const waves = [...new Set(failed.map(([, s]) => s.wave))].sort((a, b) => a - b);
  if (waves.length > 0) {
    const w = waves[0];
    const skipped = Object.entries(statuses).filter(([, s]) => s.result === "skipped").map(([n]) => n);
    const names = failed.filter(([, s]) => s.wave === w).map(([n]) => n);
    const later = skipped.length > 0 ? `; later waves not started: ${skipped.join(", ")}` : "";
    lines.push(`wave ${w} stopped: ${names.join(", ")} failed${later}`);
  }
  return lines;
}

export class Fleet extends pulumi.ComponentResource {
  /**
   * Whether `obj` is a Fleet, also one made by another copy of nixfleet in the same program (an
   * `instanceof` check fails across copies).
   */
  public static isInstance(obj: unknown): obj is Fleet {
    return typeof obj === "object" && obj !== null && (obj as Record<symbol, unknown>)[FLEET_BRAND] === true;
  }

  public readonly hosts: Readonly<Record<string, Host>>;
  /** Per host: result, validated/golden path, needsReboot; for a failed host which step and why. Also the component's registered output. */
  public readonly status: pulumi.Output<Record<string, HostStatus>>;

  constructor(name: string, args: FleetArgs, opts?: pulumi.ComponentResourceOptions) {
    // Validated once, here, before the component exists: bad args create nothing.
    const source = (args as ProgramFleetArgs)[ARGS_SOURCE] ?? argsSource(`args of Fleet ${JSON.stringify(name)}`, false);
    const { known, resolved } = resolveArgs(args, source);
    super(TYPES.fleet, name, {}, opts);
    Object.defineProperty(this, FLEET_BRAND, { value: true });
    for (const w of known.warnings) void pulumi.log.warn(w, this);
    // Every host's status from the last run, read once for the fleet (see Host: healing).
    const last = lastOutputs(this).apply((o) => o?.status as Record<string, unknown> | undefined);
    const hosts: Record<string, Host> = {};
    const waves = [...new Set(known.hosts.map((h) => h.push.wave))].sort((a, b) => a - b);
    let before: Host[] = [];
    for (const wave of waves) {
      const current: Host[] = [];
      for (const host of known.hosts.filter((h) => h.push.wave === wave)) {
        // Validated above, fleet-wide (unique names and endpoints; Outputs once they resolve): the
        // Host takes the result as it is.
        const hostArgs: HostArgs & { [FROM_FLEET]: unknown } = {
          ...args.hosts[host.index],
          roles: args.roles,
          timeouts: args.timeouts,
          privateKey: args.privateKey,
          after: before,
          [FROM_FLEET]: { known: host, resolved: resolved.apply((f) => f.hosts[host.index]), timeouts: known.timeouts, source, last: last.apply((p) => p?.[host.name]) },
        };
        // Prefixed with the fleet's name: two fleets in one program never collide.
        const h = new Host(`${name}-${host.name}`, hostArgs, { parent: this });
        hosts[host.name] = h;
        current.push(h);
      }
      before = current;
    }
    this.hosts = hosts;
    this.status = pulumi.all(Object.fromEntries(Object.entries(hosts).map(([n, h]) => [n, h.status]))).apply((statuses) => {
      for (const line of failureSummary(statuses)) void pulumi.log.error(line, this);
      return statuses;
    });
    // In the state: the next run reads it back (healing; see Host).
    this.registerOutputs({ status: this.status });
  }
}
