/**
 * `nixfleet:index:Fleet`: the hosts of one stack. Hosts are independent: one host's failed
 * step never blocks another (run `pulumi up --continue-on-error` so the engine keeps going).
 */
import * as pulumi from "@pulumi/pulumi";
import type { ResolvedFleet } from "../config/resolve";
import { Host, type HostStatus } from "./host";
import { TYPES } from "./tokens";

export interface FleetArgs {
  /** Hosts and timeouts from `resolveFleet(parseFleetConfig(...))`. */
  readonly fleet: ResolvedFleet;
  /** The SSH private key for every host; pass it as a secret. */
  readonly privateKey: pulumi.Input<string>;
}

export class Fleet extends pulumi.ComponentResource {
  public readonly hosts: Readonly<Record<string, Host>>;
  /** Per host: validated path, switched system, file hashes, commit-back result. */
  public readonly status: pulumi.Output<Record<string, HostStatus>>;

  constructor(name: string, args: FleetArgs, opts?: pulumi.ComponentResourceOptions) {
    super(TYPES.fleet, name, {}, opts);
    const hosts: Record<string, Host> = {};
    for (const host of args.fleet.hosts) {
      hosts[host.name] = new Host(host.name, { host, privateKey: args.privateKey, timeouts: args.fleet.timeouts }, { parent: this });
    }
    this.hosts = hosts;
    this.status = pulumi.all(Object.fromEntries(Object.entries(hosts).map(([n, h]) => [n, h.status])));
    this.registerOutputs({ status: this.status });
  }
}
