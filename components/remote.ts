/**
 * The shell text of a host's two remote commands (docs/rollout.md §1). Pure functions, so tests
 * read exactly what runs on a host. Every value goes through `shellQuote`/`shellEnv`; the upgrade
 * itself is the agent (nix/modules/services/system/agent, built on the host by nix/push-bootstrap.sh),
 * shared with the timer.
 */
import type { ResolvedHost, Timeouts } from "../config/resolve";
import { DEFAULT_TIMEOUTS } from "../config/schema";
import { boundSeconds, TABLE } from "../config/table";
import { renderBundle, rolloutToken } from "../render/bundle";
import { bootstrapText, renderHost } from "../render/files";
import { shellCommand, shellEnv, shellQuote as q } from "../render/shell";

/**
 * The bootstrap's bound for building the agent (`timeout 900 nix build …` in nix/push-bootstrap.sh), part
 * of auto-upgrade.json's `bounds.deploy` seconds (test/settings-table.test.ts checks both).
 */
export const AGENT_BUILD_SECONDS = 900;
/** Runs `command` as root: as is for root, through passwordless sudo otherwise (the provider has no PTY). */
export function asRoot(user: string, command: string): string {
  return user === "root" ? command : `sudo -n -- ${command}`;
}

/**
 * The settings the module writes into `auto-upgrade.service` from the same rendered files (§3, §6):
 * push mode checks these against the validated system, so they must match it exactly.
 */
export function moduleEnv(host: ResolvedHost): Record<string, string> {
  const env: Record<string, string> = {
    AUTO_UPGRADE_CONFIG_PATH: host.configPath,
    AUTO_UPGRADE_FLAKE_HOST: host.name,
    [TABLE.host.stateDir.env!]: host.stateDir,
    // Empty: the agent takes the owner of the checkout.
    AUTO_UPGRADE_USER: host.configOwner ?? "",
  };
  // Every setting the table gives a variable, written as the module writes it (auto-upgrade.nix `envValue`).
  for (const [name, spec] of Object.entries(TABLE.settings)) {
    if (spec.env !== undefined) env[spec.env] = envValue(host.settings[name as keyof typeof host.settings]);
  }
  return Object.fromEntries(Object.entries(env).sort(([a], [b]) => a.localeCompare(b)));
}

/** A setting as the environment carries it: lists space-separated, booleans and numbers as text. */
const envValue = (v: unknown) => (Array.isArray(v) ? v.join(" ") : String(v));

/**
 * Everything push mode hands the agent: the module's settings plus the deployer's own (phase bounds
 * from `nixfleet:timeouts`, the confirmation window, the lease wait). These are not module options:
 * if the module also writes them into the service, the agent must not compare them (they come
 * from stack config, which the rendered Nix does not carry).
 * `retry` > 0 adds `AUTO_UPGRADE_RETRY`, which makes the rollout token `<T>-r<retry>` (see Host).
 */
export function scriptEnv(host: ResolvedHost, timeouts: Timeouts = DEFAULT_TIMEOUTS, retry = 0): Record<string, string> {
  const env: Record<string, string> = { ...moduleEnv(host), [TABLE.push.confirmTimeout.env!]: String(host.push.confirmTimeout) };
  for (const [name, spec] of Object.entries(TABLE.timeouts)) env[spec.env!] = String(timeouts[name as keyof Timeouts]);
  if (retry > 0) env.AUTO_UPGRADE_RETRY = String(retry);
  return env;
}

/** The values a bound's terms name, for one host. */
const boundValues = (host: ResolvedHost, t: Timeouts) => ({ ...t, healthTimeout: host.settings.healthTimeout, confirmTimeout: host.push.confirmTimeout });

/**
 * Seconds `<host>-deploy` may run (auto-upgrade.json `bounds.deploy`): more than the bootstrap's agent build
 * and the agent's own bounds for the push, so the agent, not `timeout`, reports what took too long.
 */
export const deployBound = (host: ResolvedHost, t: Timeouts) => boundSeconds("deploy", boundValues(host, t));
/**
 * Seconds `<host>-confirm` may run (auto-upgrade.json `bounds.confirm`): more than the agent's own wait,
 * the lease hand-back and a retried commit-back, so a slow commit-back is reported by the host, not cut off.
 */
export const confirmBound = (host: ResolvedHost, t: Timeouts) => boundSeconds("confirm", boundValues(host, t));

/** `<host>-deploy`: the bootstrap reads the bundle from stdin and runs the staged script's `push`. */
export function deployCommand(host: ResolvedHost, timeouts: Timeouts, retry = 0): string {
  const run = `timeout ${deployBound(host, timeouts)} env ${shellEnv(scriptEnv(host, timeouts, retry))} ${shellCommand("bash", "-c", bootstrapText(), "nixfleet-push")}`;
  return asRoot(host.user, run);
}

/** What deploy prints on success: one JSON line (§1). */
export interface DeployResult {
  readonly rollout: string;
  readonly validatedPath: string;
  readonly action: "armed" | "unchanged";
  readonly needsReboot: boolean;
  /** Package-level difference between the system that ran and the validated one (`nix store diff-closures`, bounded on the host); "" when none. */
  readonly diff: string;
}

const TOKEN = /^[0-9a-f]{16}(-r[0-9]{1,6})?$/;
const STORE_PATH = /^\/nix\/store\/[0-9a-z]{32}-[A-Za-z0-9+._?=-]+$/;

/** The deploy's JSON line, or why it is not one (the last non-empty stdout line is the result). */
export function parseDeployOutput(stdout: string | undefined): DeployResult | string {
  const line = (stdout ?? "").trim().split("\n").pop() ?? "";
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return `deploy printed no result line (last stdout line: ${JSON.stringify(line.slice(0, 80))})`;
  }
  if (typeof v.rollout !== "string" || !TOKEN.test(v.rollout)) return "deploy's result has no valid rollout token";
  if (typeof v.validatedPath !== "string" || !STORE_PATH.test(v.validatedPath)) return "deploy's result has no valid validatedPath";
  if (v.action !== "armed" && v.action !== "unchanged") return "deploy's result has no valid action";
  // The host bounds the diff (40 lines, 2 KiB); cut again so a bad host cannot bloat the outputs.
  const diff = typeof v.diff === "string" ? v.diff.slice(0, 4096) : "";
  return { rollout: v.rollout, validatedPath: v.validatedPath, action: v.action, needsReboot: v.needsReboot === true, diff };
}

/** The agent deploy ran, kept by it as a GC root in the state dir: `confirm` runs it. */
export const agentPath = (host: ResolvedHost) => `${host.stateDir}/agent/bin/nixfleet-agent`;

/**
 * `<host>-confirm`, on a NEW connection after deploy: the agent the deploy built from nixfleet's source
 * (a Nix store path, checked, because it runs as root) confirms rollout `token` and waits for the
 * activator to finish. A deploy output that is not a result line becomes a command that fails saying so.
 */
export function confirmCommand(host: ResolvedHost, timeouts: Timeouts, deployStdout: string | undefined): string {
  const parsed = parseDeployOutput(deployStdout);
  if (typeof parsed === "string") return `echo ${q(`nixfleet: ${host.name}: ${parsed}; nothing to confirm`)} >&2; exit 3`;
  // Never a file of the user-owned checkout (its owner could swap it between a check and the run): the
  // store path the bootstrap built, immutable and root's, through the root-owned state dir's link.
  const agent = agentPath(host);
  const check = `case $(readlink -f -- ${q(agent)}) in /nix/store/*) ;; *) echo ${q(`nixfleet: ${agent} is not an agent in the Nix store; refusing to run it as root`)} >&2; exit 3 ;; esac`;
  const run = `timeout ${confirmBound(host, timeouts)} env ${shellEnv(scriptEnv(host, timeouts))} ${shellCommand(agent, "confirm", parsed.rollout)}`;
  // One `sh -c` so the check and the run are both root's (sudo runs one command).
  return asRoot(host.user, host.user === "root" ? `${check}; ${run}` : `sh -c ${q(`${check}; ${run}`)}`);
}

/** Both commands and the bundle of one host, for the component and for benchmarks that replay them over plain ssh. */
export function hostCommands(host: ResolvedHost, timeouts: Timeouts, retry = 0) {
  const files = renderHost(host);
  const bundle = renderBundle(files);
  return {
    files,
    bundle,
    /** The rollout token the agent derives from this bundle and retry. */
    token: rolloutToken(bundle, retry),
    deploy: deployCommand(host, timeouts, retry),
    confirm: (deployStdout: string | undefined) => confirmCommand(host, timeouts, deployStdout),
  };
}
