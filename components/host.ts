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
 * but deploy's inputs are unchanged, so the engine would never run it again. Each Host registers its
 * `status` as its outputs, and the next run reads them back from the stack's last state (a Host in a
 * Fleet gets them from the Fleet, which reads them once): when they say confirm failed, the retry
 * number goes up by one, which changes deploy's command (`AUTO_UPGRADE_RETRY`) and with it the
 * rollout token (`<T>-r<N>`), so the next plain `pulumi up` deploys again. Nothing to wire in the
 * user's program. A successful or unchanged host keeps its number: a no-op `up` runs nothing.
 */
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import type { ResolvedHost } from "../config/resolve";
import { sha256 } from "../render/bundle";
import { shellQuote } from "../render/shell";
import type { FleetSpec, HostSpec, TimeoutArgs } from "./args";
import { argsSource, FROM_FLEET, resolveArgs, type HostContext } from "./validate";
import { ended, lastOutputs } from "./outcome";
import { hostCommands, parseDeployOutput } from "./remote";

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
}

/** A Host made by a Fleet: its args carry the Fleet's validation (see FROM_FLEET). */
type FleetHostArgs = HostArgs & { readonly [FROM_FLEET]?: HostContext };

/** A Host a user makes validates its own args; its last status it reads itself (`last` undefined). */
function ownContext(name: string, args: HostArgs): Omit<HostContext, "last"> & { last?: pulumi.Output<unknown>; warnings: readonly string[] } {
  const { privateKey: _k, roles, timeouts, after: _a, ...spec } = args;
  const source = argsSource(`args of Host ${JSON.stringify(name)}`, true);
  const r = resolveArgs({ hosts: [spec], roles, timeouts }, source);
  return { known: r.known.hosts[0], resolved: r.resolved.apply((f) => f.hosts[0]), timeouts: r.known.timeouts, source, warnings: r.known.warnings };
}

/** A status read back from state, or undefined when it is not one (first run, another version's shape). */
export function asHostStatus(v: unknown): HostStatus | undefined {
  if (v === null || typeof v !== "object") return undefined;
  const s = v as Partial<HostStatus>;
  return typeof s.result === "string" && typeof s.retry === "number" && typeof s.retryNeeded === "boolean" ? (s as HostStatus) : undefined;
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

const HOST_BRAND = Symbol.for(TYPES.host);

export class Host extends pulumi.ComponentResource {
  /**
   * Whether `obj` is a Host, also one made by another copy of nixfleet in the same program (an
   * `instanceof` check fails across copies).
   */
  public static isInstance(obj: unknown): obj is Host {
    return typeof obj === "object" && obj !== null && (obj as Record<symbol, unknown>)[HOST_BRAND] === true;
  }

  public readonly deploy: command.remote.Command;
  public readonly confirm: command.remote.Command;
  /** Result, validated/golden path, needsReboot; for a failed host which step and why. Also the component's registered output. */
  public readonly status: pulumi.Output<HostStatus>;

  constructor(name: string, args: HostArgs, opts?: pulumi.ComponentResourceOptions) {
    // Validated before the component exists: bad args create nothing.
    const ctx: HostContext | ReturnType<typeof ownContext> = (args as FleetHostArgs)[FROM_FLEET] ?? ownContext(name, args);
    super(TYPES.host, name, {}, opts);
    Object.defineProperty(this, HOST_BRAND, { value: true });
    // A Fleet logs its own config's warnings once; a Host alone logs its own.
    if ("warnings" in ctx) for (const w of ctx.warnings) void pulumi.log.warn(w, this);
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
    // This host's status from the last run: how a failed confirm heals and a skipped host keeps its facts.
    const previous = (ctx.last ?? lastOutputs(this).apply((o) => o?.status)).apply(asHostStatus);
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
      .all([ended(this.deploy.stdout), ended(this.confirm.stdout), previous, retry, bundleId, upstream])
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
    // In the state: the next run reads it back (healing), and tools see each host's last result.
    this.registerOutputs({ status: this.status });
  }
}
