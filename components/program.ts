/**
 * The nixfleet Pulumi program: read the stack's `nixfleet:*` config and build the fleet from it.
 * The Fleet validates all of it, once, before any resource exists, naming each bad value by its
 * config key (`nixfleet:hosts[2].address`). `index.ts` runs it under `pulumi up`; the demo and the
 * end-to-end tests run the same function as an Automation API inline program. Healing a failed
 * confirm needs nothing here: the Fleet reads its own last outputs (see Host).
 */
import * as pulumi from "@pulumi/pulumi";
import { STACK_CONFIG } from "../config/errors";
import { rawConfigFromMap } from "../config/stack";
import { ARGS_SOURCE, Fleet, type FleetArgs } from "./fleet";

/** The stack output every host's status is exported under. */
export const HOSTS_OUTPUT = "hosts";

export function fleetProgram() {
  const args: FleetArgs & { [ARGS_SOURCE]: typeof STACK_CONFIG } = {
    ...(rawConfigFromMap(pulumi.runtime.allConfig()) as unknown as FleetArgs),
    privateKey: new pulumi.Config("nixfleet").requireSecret("sshPrivateKey"),
    [ARGS_SOURCE]: STACK_CONFIG,
  };
  const fleet = new Fleet("fleet", args);
  return { [HOSTS_OUTPUT]: fleet.status };
}
