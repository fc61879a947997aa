/**
 * `nixfleet:index:Fleet`: the hosts of one stack, rolled out in waves (stack config `wave`, default 0).
 * Hosts of one wave run in parallel; every host of wave k+1 waits for every confirm of wave k. The
 * engine skips dependents of a failed resource even with `--continue-on-error`, so one failed host
 * stops all later waves (verified with the real engine, see Host). `status` resolves for every host
 * even when some failed, and the fleet logs one error per failed host and one per stopped wave.
 */
import * as pulumi from "@pulumi/pulumi";
import { argsSource, resolveArgs, type FleetSpec } from "./args";
import { fleetContext } from "./context";
import { Host, type HostArgs, type HostStatus } from "./host";
import { TYPES } from "./tokens";

/**
 * The fleet: `hosts`, `roles` and `timeouts` are what a stack's `nixfleet:hosts`, `nixfleet:roles`
 * and `nixfleet:timeouts` hold (see HostSpec, RoleArgs, TimeoutArgs), plus the key. Bad values throw
 * a ConfigError naming the field (`hosts[2].address: …`); Output values are checked when they resolve.
 */
export interface FleetArgs extends FleetSpec {
  /** The SSH private key for every host; pass it as a secret. */
  readonly privateKey: pulumi.Input<string>;
  /**
   * `status` of the last run, by host name (e.g. this stack's own `hosts` output, read with a
   * StackReference). It lets a host whose confirm failed deploy again on the next plain `up`, and
   * keeps a skipped host's last facts. Defaults to none: no healing, skipped hosts report little.
   */
  readonly previous?: pulumi.Input<Record<string, HostStatus> | undefined>;
}

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
  public readonly hosts: Readonly<Record<string, Host>>;
  /** Per host: result, validated/golden path, needsReboot; for a failed host which step and why. */
  public readonly status: pulumi.Output<Record<string, HostStatus>>;

  constructor(name: string, args: FleetArgs, opts?: pulumi.ComponentResourceOptions) {
    super(TYPES.fleet, name, {}, opts);
    const source = argsSource(`args of Fleet ${JSON.stringify(name)}`, false);
    const { known, resolved } = resolveArgs(args, source);
    const previous = pulumi.output(args.previous);
    const hosts: Record<string, Host> = {};
    const waves = [...new Set(known.hosts.map((h) => h.push.wave))].sort((a, b) => a - b);
    let before: Host[] = [];
    for (const wave of waves) {
      const current: Host[] = [];
      for (const host of known.hosts.filter((h) => h.push.wave === wave)) {
        const hostArgs: HostArgs = {
          ...args.hosts[host.index],
          roles: args.roles,
          timeouts: args.timeouts,
          privateKey: args.privateKey,
          after: before,
          previous: previous.apply((p) => p?.[host.name]),
        };
        // Validated here, fleet-wide (unique names and endpoints), once the Outputs resolve.
        fleetContext.set(hostArgs, { known: host, resolved: resolved.apply((f) => f.hosts[host.index]), timeouts: known.timeouts, source });
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
    // Nothing in the component's own state: the status is the stack output already (state stays small).
    this.registerOutputs({});
  }
}
