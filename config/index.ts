/**
 * `nixfleet/config`: the stack config's schema, resolver and loaders, for tools that read a stack's
 * `nixfleet:*` config without Pulumi (as `nixfleet render` does). Its types include zod's: a project
 * that imports this subpath under `strict` CommonJS needs `esModuleInterop` or `skipLibCheck`.
 */
export { ConfigError, configKeyPath, ROLES, type KeyPath, type Preset, type Role, type Source } from "./errors";
export { fleetConfigSchema, parseFleetConfig, type FleetConfig, type HostConfig, type Settings } from "./schema";
export { PUSH_DEFAULTS, resolveFleet, ROLE_DEFAULTS, type FullSettings, type ResolvedFleet, type ResolvedHost, type Timeouts } from "./resolve";
export { configFromConfigMap, fleetFromConfigMap, readStackFile } from "./stack";
