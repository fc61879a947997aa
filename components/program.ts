/**
 * The nixfleet Pulumi program: read the stack's `nixfleet:*` config, validate all of it before
 * any resource exists, then build the fleet. `index.ts` runs it under `pulumi up`; the demo and
 * the end-to-end tests run the same function as an Automation API inline program.
 */
import * as pulumi from "@pulumi/pulumi";
import { resolveFleet } from "../config/resolve";
import { configFromConfigMap } from "../config/stack";
import { Fleet } from "./fleet";
import type { HostStatus } from "./host";

/** The stack output every host's status is exported under; the next run reads it back. */
export const HOSTS_OUTPUT = "hosts";

export function fleetProgram() {
  // Checked here first, so a bad value is named by its config key (nixfleet:hosts[2].address).
  const config = configFromConfigMap(pulumi.runtime.allConfig());
  resolveFleet(config);
  // This stack's own last outputs (empty on the first run): how a host whose confirm failed gets
  // deployed again by a plain `up` (see Host). Verified with the real engine: a failed `up` still
  // saves the outputs, and reading them back works in preview and up.
  const self = new pulumi.StackReference("nixfleet-last-run", {
    name: `${pulumi.getOrganization()}/${pulumi.getProject()}/${pulumi.getStack()}`,
  });
  const previous = self.getOutput(HOSTS_OUTPUT) as pulumi.Output<Record<string, HostStatus> | undefined>;
  const fleet = new Fleet("fleet", {
    ...config,
    privateKey: new pulumi.Config("nixfleet").requireSecret("sshPrivateKey"),
    previous,
  });
  return { [HOSTS_OUTPUT]: fleet.status };
}
