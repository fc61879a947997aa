/**
 * The package's root export (`import { Fleet } from "nixfleet"`): the components, their args, the
 * config schema and resolver, the renderer and the agent check. Importing it creates nothing; this
 * repository's own `index.ts` is one program built on it (`fleetProgram`).
 */
export * from "./args";
export * from "./fleet";
export * from "./host";
export * from "./program";
export * from "./tokens";
export * from "./agent";
export * from "../config/schema";
export * from "../config/resolve";
export * from "../config/stack";
export * from "../render/nix";
export * from "../render/shell";
export * from "../render/files";
export * from "../render/bundle";
