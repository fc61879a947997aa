/**
 * The nixfleet Pulumi program: read the stack's `nixfleet:*` config, validate all of it before
 * any resource exists, then build the fleet. `index.ts` runs it under `pulumi up`; the demo and
 * the end-to-end tests run the same function as an Automation API inline program.
 */
import * as pulumi from "@pulumi/pulumi";
import { fleetFromConfigMap } from "../config/stack";
import { Fleet } from "./fleet";

export function fleetProgram() {
  const fleet = new Fleet("fleet", {
    fleet: fleetFromConfigMap(pulumi.runtime.allConfig()),
    privateKey: new pulumi.Config("nixfleet").requireSecret("sshPrivateKey"),
  });
  return { hosts: fleet.status };
}
