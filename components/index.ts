export * from "./fleet";
export * from "./host";
export * from "./program";
export * from "./tokens";
export * from "./agent";
