/**
 * Fleet → Host hand-over, deliberately not part of the package's exports (components/index.ts does
 * not re-export this file): the Fleet already validated each host's args, with fleet-wide checks
 * and field names in the fleet's terms; a Host a user makes validates its own.
 */
import type { HostContext } from "./args";
import type { HostArgs } from "./host";

export const fleetContext = new WeakMap<HostArgs, HostContext>();
