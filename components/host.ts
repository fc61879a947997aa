/**
 * `nixfleet:index:Host`: one machine's push rollout as exactly two remote commands
 * (docs/rollout.md §1):
 *
 *   <name>-deploy   stdin = the bundle; lease, files, hooks, validate, activate, health gate;
 *                   prints {"rollout":T,"validatedPath":P,"action":…,"needsReboot":B}
 *   <name>-confirm  a NEW connection: confirms T, waits for profile + boot entry + commit-back
 *
 * A changed bundle or setting changes deploy's stdin or command text: an update, never a replacement.
 * Only confirm has `triggers` ([deploy.stdout]), so it runs again for every new rollout.
 *
 * Healing: if the host rolled back after deploy succeeded (no confirmation arrived), confirm fails,
 * but deploy's inputs are unchanged, so the engine would never run it again. The Host therefore
 * reads its own entry of the stack's last outputs (`previous`): when that says confirm failed, the
 * retry number goes up by one, which changes deploy's command (`AUTO_UPGRADE_RETRY`) and with it
 * the rollout token (`<T>-r<N>`), so the next plain `pulumi up` deploys again. A successful or
 * unchanged host keeps its number: a no-op `up` runs nothing.
 */
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import type { ResolvedHost } from "../config/resolve";
import { sha256 } from "../render/bundle";
import { shellQuote } from "../render/shell";
import { argsSource, resolveArgs, type FleetSpec, type HostContext, type HostSpec, type TimeoutArgs } from "./args";
import { fleetContext } from "./context";
import { hostCommands, parseDeployOutput } from "./remote";

// The commands of one host, for tools that replay them over plain ssh (scripts/bench-fleet.ts).
export { hostCommands } from "./remote";
import { TYPES } from "./tokens";

/**
 * Connection bounds, chosen on purpose. perDialTimeout bounds one TCP connect; the provider retries a
 * failed dial dialErrorLimit times with a back-off of min(0.1 s × 1.5^k, 5 s). Worst case for a host
 * that does not accept TCP: 4 × 10 s + 0.5 s ≈ 41 s (real defaults 11 × 15 s + ~12 s ≈ 3 min). Three
 * retries still ride out an sshd restart during activation; a wrong host key (retried too by the real
 * provider) fails in about 1 s instead of 17 s. A host that accepts TCP but never speaks SSH is NOT
 * bounded by these (the provider does not time out the handshake): see the README's worst cases.
 */
export const DIAL_ERROR_LIMIT = 3;
export const PER_DIAL_TIMEOUT = 10;

/** Args of one `Host`: the machine (as a `Fleet` lists it) plus what a fleet otherwise supplies. */
export interface HostArgs extends HostSpec {
  /** The SSH private key (OpenSSH format); pass it as a secret. */
  readonly privateKey: pulumi.Input<string>;
  /** Preset changes and custom roles this host's role may name. Defaults to none: the presets' built-in defaults. */
  readonly roles?: FleetSpec["roles"];
  /** Bounds of the remote phases. Defaults to lease 120, hooks 900, validate 3600, switch 600, commit 300. */
  readonly timeouts?: TimeoutArgs;
  /** Hosts of the previous wave: this host's deploy starts after all of them confirmed. Defaults to none. */
  readonly after?: readonly Host[];
  /** This host's status from the stack's last outputs, for retries and skipped hosts. Defaults to none (no healing). */
  readonly previous?: pulumi.Input<HostStatus | undefined>;
}


function ownContext(name: string, args: HostArgs): HostContext {
  const { privateKey: _k, roles, timeouts, after: _a, previous: _p, ...spec } = args;
  const source = argsSource(`args of Host ${JSON.stringify(name)}`, true);
  const r = resolveArgs({ hosts: [spec], roles, timeouts }, source);
  return { known: r.known.hosts[0], resolved: r.resolved.apply((f) => f.hosts[0]), timeouts: r.known.timeouts, source };
}

/** What one host reports after `pulumi up`, also when it failed; never secrets. */
export interface HostStatus {
  readonly role: string;
  readonly wave: number;
  /** success: confirmed, on the validated system. failed: see `step` and `message`. skipped: not touched this run (an earlier wave stopped); other fields are the last run's. */
  readonly result: "success" | "failed" | "skipped";
  /** The command that failed. */
  readonly step?: "deploy" | "confirm";
  readonly message?: string;
  /** For a skipped host: the wave whose failure stopped the rollout. */
  readonly stoppedWave?: number;
  readonly rollout?: string;
  readonly action?: "armed" | "unchanged";
  /** The store path deploy built and kept (GC-rooted) and the host now runs. */
  readonly validatedPath?: string;
  /** The last system that passed the health gate and was confirmed (GC-rooted). */
  readonly goldenPath?: string;
  readonly needsReboot?: boolean;
  /** What this rollout changes, package by package (`nix store diff-closures` of the running and the validated system). */
  readonly closureDiff?: string;
  readonly warnings?: string[];
  /** First 16 hex of sha256 of the bundle this run pushed. */
  readonly bundle: string;
  /** The retry number deploy ran with. */
  readonly retry: number;
  /** Confirm failed after deploy succeeded: the next run deploys again with retry + 1. */
  readonly retryNeeded: boolean;
}

/** The retry number this run uses, from the last run's status. */
export const nextRetry = (prev: HostStatus | undefined) => (prev ? (prev.retry ?? 0) + (prev.retryNeeded ? 1 : 0) : 0);

/**
 * The value of `o` once its resource finished, or `undefined` when the resource failed or was skipped.
 * Verified with the real engine (3.248, `--continue-on-error`): a failed or skipped resource's outputs
 * are UNKNOWN, so `apply` never runs and anything built on them (the stack output) is dropped. The
 * SDK-internal `promise()` (pinned @pulumi/pulumi 3.248.0) yields `undefined` for them instead.
 * During preview, unknown means "not run yet" and stays unknown.
 */
export function settled<T>(o: pulumi.Output<T>): pulumi.Output<T | undefined> {
  if (pulumi.runtime.isDryRun()) return o;
  const promise = (o as unknown as { promise?: () => Promise<T> }).promise;
  if (typeof promise !== "function") throw new Error("nixfleet: this @pulumi/pulumi has no Output.promise(); pin @pulumi/pulumi 3.248.0");
  return pulumi.output(promise.call(o).catch(() => undefined)) as pulumi.Output<T | undefined>;
}

const cut = (s: string, n = 300) => (s.length > n ? `${s.slice(0, n)}…` : s);

/** The confirm's stdout: status.json as one line. */
function parseConfirm(stdout: string): Partial<HostStatus> {
  try {
    const s = JSON.parse(stdout.trim().split("\n").pop() ?? "") as Record<string, unknown>;
    return {
      goldenPath: typeof s.goldenPath === "string" ? s.goldenPath : undefined,
      needsReboot: typeof s.needsReboot === "boolean" ? s.needsReboot : undefined,
      warnings: Array.isArray(s.warnings) ? s.warnings.slice(0, 10).map((w) => cut(String(w))) : undefined,
    };
  } catch {
    return { warnings: ["confirm printed no status line"] };
  }
}

export class Host extends pulumi.ComponentResource {
  public readonly deploy: command.remote.Command;
  public readonly confirm: command.remote.Command;
  public readonly status: pulumi.Output<HostStatus>;

  constructor(name: string, args: HostArgs, opts?: pulumi.ComponentResourceOptions) {
    super(TYPES.host, name, {}, opts);
    const ctx = fleetContext.get(args) ?? ownContext(name, args);
    const { known: host, resolved, timeouts } = ctx;
    if (args.hostKey === undefined) {
      const key = ctx.source.keyPath(["hosts", host.index, "hostKey"]);
      const address = typeof args.address === "string" ? shellQuote(host.address) : "<address>";
      pulumi.log.warn(
        `host ${host.name}: no hostKey pinned, so the SSH connection does not authenticate the host ` +
          `(the command provider ignores host keys unless one is set). Pin it: ` +
          (key.startsWith("nixfleet:")
            ? `pulumi config set --path '${key}' "$(ssh-keyscan -t ed25519 ${address} | cut -d' ' -f2-)"`
            : `set ${key} to the output of: ssh-keyscan -t ed25519 ${address} | cut -d' ' -f2-`),
        this,
      );
    }
    // A value given as an Output comes from the validated host once it resolves (a bad one fails the
    // commands, named); a plain value is used as it is, exactly as before Inputs were allowed.
    const later = <K extends "address" | "port" | "hostKey">(k: K) =>
      typeof args[k] === "object" ? (resolved.apply((h) => h[k]) as pulumi.Output<NonNullable<ResolvedHost[K]>>) : host[k];
    const connection: command.types.input.remote.ConnectionArgs = {
      host: later("address"),
      port: later("port"),
      user: host.user,
      privateKey: pulumi.secret(args.privateKey),
      hostKey: later("hostKey"),
      dialErrorLimit: DIAL_ERROR_LIMIT,
      perDialTimeout: PER_DIAL_TIMEOUT,
    };
    const previous = pulumi.output(args.previous);
    const retry = previous.apply((p) => nextRetry(p));
    const cmds = pulumi.all([resolved, retry]).apply(([h, r]) => hostCommands(h, timeouts, r));
    const bundleId = cmds.apply((c) => sha256(c.bundle).slice(0, 16));
    const common = { connection, logging: "stdoutAndStderr" as const, addPreviousOutputInEnv: false };

    this.deploy = new command.remote.Command(
      `${name}-deploy`,
      // The bundle as stdin: rendered files are text in it, so `preview --diff` shows the Nix lines.
      { ...common, create: cmds.apply((c) => c.deploy), stdin: cmds.apply((c) => c.bundle) },
      { parent: this, dependsOn: (args.after ?? []).map((h) => h.confirm) },
    );
    this.confirm = new command.remote.Command(
      `${name}-confirm`,
      { ...common, create: pulumi.all([cmds, this.deploy.stdout]).apply(([c, out]) => c.confirm(out)), triggers: [this.deploy.stdout] },
      { parent: this, dependsOn: [this.deploy] },
    );

    const upstream = pulumi.all((args.after ?? []).map((h) => h.status));
    this.status = pulumi
      .all([settled(this.deploy.stdout), settled(this.confirm.stdout), previous, retry, bundleId, upstream])
      .apply(([deployed, confirmed, prev, r, bundle, before]): HostStatus => {
        const base = { role: host.role, wave: host.push.wave, bundle, retry: r };
        // After a failure the host runs the system it had (rolled back): its last golden one.
        const lastGolden = prev?.goldenPath === undefined ? {} : { goldenPath: prev.goldenPath };
        if (deployed === undefined) {
          const stopped = before.filter((b) => b.result !== "success");
          if (stopped.length > 0) {
            const wave = Math.min(...stopped.map((b) => (b.result === "failed" ? b.wave : (b.stoppedWave ?? b.wave))));
            // Not touched: keep what the last run knew, including a pending retry.
            return {
              ...(prev ?? { ...base, retryNeeded: false }),
              role: host.role,
              wave: host.push.wave,
              result: "skipped",
              step: undefined,
              stoppedWave: wave,
              message: `not started: wave ${wave} stopped before this host's wave ${host.push.wave}`,
            };
          }
          return { ...base, ...lastGolden, retryNeeded: false, result: "failed", step: "deploy", message: `${name}-deploy failed; its error above says why (also in ${host.stateDir}/status.json on the host)` };
        }
        const d = parseDeployOutput(deployed);
        const facts = typeof d === "string" ? {} : { rollout: d.rollout, action: d.action, validatedPath: d.validatedPath, needsReboot: d.needsReboot, closureDiff: d.diff };
        if (confirmed === undefined) {
          return {
            ...base,
            ...lastGolden,
            ...facts,
            result: "failed",
            step: "confirm",
            retryNeeded: true,
            message: `${name}-confirm failed: the host rolled back or commit-back failed; its error above says why (also in ${host.stateDir}/status.json). The next pulumi up deploys again (retry ${r + 1}).`,
          };
        }
        return { ...base, ...facts, ...parseConfirm(confirmed), result: "success", retryNeeded: false };
      });
    // Nothing in the component's own state: the status is the stack output already (state stays small).
    this.registerOutputs({});
  }
}
