/**
 * From a stack's raw config map (`nixfleet:hosts` → value) to validated, resolved hosts. The
 * Pulumi program passes `pulumi.runtime.allConfig()` (object values arrive as JSON text);
 * `nixfleet render` passes the `config:` map of stacks/Pulumi.<stack>.yaml. Same path for both.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { resolveFleet, type ResolvedFleet } from "./resolve";
import { ConfigError, parseFleetConfig, type FleetConfig } from "./schema";

const NAMESPACE = "nixfleet:";
/** Keys read by the program; `sshPrivateKey` is the secret read separately. */
const DATA_KEYS = ["roles", "hosts", "timeouts"] as const;
const KNOWN_KEYS = [...DATA_KEYS, "sshPrivateKey"];

export function fleetFromConfigMap(map: Record<string, unknown>): ResolvedFleet {
  return resolveFleet(configFromConfigMap(map));
}

/** The parsed (validated per field, not yet resolved) `nixfleet:*` config: the shape `Fleet` takes. */
export function configFromConfigMap(map: Record<string, unknown>): FleetConfig {
  return parseFleetConfig(rawConfigFromMap(map));
}

/**
 * The `nixfleet:*` values as data (JSON text decoded), not yet validated: unknown keys and values
 * that are not structured are refused here, everything else is the schema's job (the Fleet's, in
 * the program: validation happens once).
 */
export function rawConfigFromMap(map: Record<string, unknown>): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  const issues: string[] = [];
  for (const [key, value] of Object.entries(map)) {
    if (!key.startsWith(NAMESPACE)) continue;
    const name = key.slice(NAMESPACE.length);
    if (!KNOWN_KEYS.includes(name)) {
      issues.push(`${key}: unknown key; allowed: ${KNOWN_KEYS.map((k) => NAMESPACE + k).join(", ")}`);
    } else if ((DATA_KEYS as readonly string[]).includes(name)) {
      raw[name] = typeof value === "string" ? parseJson(key, value, issues) : value;
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return raw;
}

function parseJson(key: string, text: string, issues: string[]): unknown {
  try {
    return JSON.parse(text);
  } catch {
    issues.push(`${key}: must be a structured value (a YAML list or map), not the string ${JSON.stringify(text.slice(0, 40))}`);
    return undefined;
  }
}

/** Reads `config:` from a stack file (Pulumi.<stack>.yaml). */
export function readStackFile(file: string): Record<string, unknown> {
  const doc = parseYaml(readFileSync(file, "utf8")) as { config?: Record<string, unknown> } | null;
  return doc?.config ?? {};
}
