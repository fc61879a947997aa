/**
 * The package's root export (`import { Fleet } from "nixfleet"`): the two components, their args and
 * status types, and the error bad args throw. Importing it creates nothing. Config and render helpers
 * are behind `nixfleet/config` and `nixfleet/render`; this repository's own program (`program.ts`) and
 * the agent check are not exported. Nothing here reaches zod's types, so a strict CommonJS project
 * without `esModuleInterop` or `skipLibCheck` compiles against it.
 */
export { Fleet, type FleetArgs } from "./fleet";
export { Host, type HostArgs, type HostStatus } from "./host";
export type { FleetSpec, HostSpec, RoleArgs, TimeoutArgs, UpgradeSettings } from "./args";
export { ConfigError } from "../config/errors";
