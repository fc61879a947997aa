/**
 * Type tokens are part of every URN: renaming one orphans existing stacks' resources (it
 * would need `aliases`). Pick once, keep here, never change.
 */
export const TYPES = {
  fleet: "nixfleet:index:Fleet",
  host: "nixfleet:index:Host",
} as const;
