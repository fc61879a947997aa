/**
 * `nixfleet:index:Host`: one machine's push-mode upgrade as a chain of remote commands.
 *
 *   check files → copy (one per rendered file) → hooks → validate → switch → commit-back
 *
 * Each step depends on the one before, so a failed step stops this host only. Steps that
 * must re-run when the rendered files change carry their hash in `triggers` (a trigger change
 * replaces the command, which runs it again); switch runs when the validated path changes;
 * an unchanged host runs nothing on `pulumi up`.
 */
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import type { ResolvedHost, Timeouts } from "../config/resolve";
import { renderHost, SCRIPT_FILE } from "../render/files";
import { shellQuote } from "../render/shell";
import { checkFilesCommand, putFileCommand, sha256, stepCommand, type Step } from "./remote";
import { TYPES } from "./tokens";

export interface HostArgs {
  /** The host with its resolved settings (from `resolveFleet`). */
  readonly host: ResolvedHost;
  /** The SSH private key (OpenSSH format); pass it as a secret. */
  readonly privateKey: pulumi.Input<string>;
  /** Seconds each remote step may run before `timeout` stops it. */
  readonly timeouts: Timeouts;
}

/** What one host reports after `pulumi up`; never secrets. */
export interface HostStatus {
  readonly role: string;
  /** The store path `nh os build` produced and kept as a GC root. */
  readonly validatedPath: string;
  /** The system the host switched to; equals validatedPath. */
  readonly switchedSystem: string;
  /** sha256 of every rendered file, by path. */
  readonly files: Record<string, string>;
  /** Whether the host commits and pushes its config changes after switching. */
  readonly commitBack: boolean;
  /** Per step, the `=== … ===` lines the script logged (its journal lines, without tool output). */
  readonly steps: Record<string, string[]>;
}

/** The step summary lines of a script run's stderr. */
const stepLines = (stderr: string) => stderr.split("\n").filter((l) => /^=== .* ===$/.test(l));

const slug = (path: string) => path.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "");

export class Host extends pulumi.ComponentResource {
  public readonly validatedPath: pulumi.Output<string>;
  public readonly switchedSystem: pulumi.Output<string>;
  public readonly status: pulumi.Output<HostStatus>;

  constructor(name: string, args: HostArgs, opts?: pulumi.ComponentResourceOptions) {
    super(TYPES.host, name, {}, opts);
    const { host, timeouts } = args;

    if (!host.hostKey) {
      pulumi.log.warn(
        `host ${host.name}: no hostKey pinned, so the SSH connection does not authenticate the host ` +
          `(the command provider ignores host keys unless one is set). Pin it: ` +
          `pulumi config set --path 'nixfleet:hosts[${host.index}].hostKey' "$(ssh-keyscan -t ed25519 ${shellQuote(host.address)} | cut -d' ' -f2-)"`,
        this,
      );
    }

    const connection: command.types.input.remote.ConnectionArgs = {
      host: host.address,
      port: host.port,
      user: host.user,
      privateKey: pulumi.secret(args.privateKey),
      hostKey: host.hostKey,
    };
    const run = (suffix: string, create: pulumi.Input<string>, deps: pulumi.Resource[], triggers?: pulumi.Input<unknown>[], stdin?: string) =>
      new command.remote.Command(`${name}-${suffix}`, { connection, create, stdin, triggers, logging: "stdoutAndStderr" }, { parent: this, dependsOn: deps });

    const files = renderHost(host);
    const hashes = Object.fromEntries(files.map((f) => [f.path, sha256(f.content)]));
    const filesHash = sha256(JSON.stringify(hashes));
    const step = (which: Step, timeout: number, args: string[] = []) => stepCommand(host, which, timeout, hashes[SCRIPT_FILE], args);

    // Every file is checked for host-side edits before any is written (the command text holds all hashes).
    const check = run("check-files", checkFilesCommand(host, files, timeouts.copy), []);
    // stdin is the file's text, so `pulumi preview --diff` shows the Nix diff per file.
    // One after another: each stages its file, and concurrent `git add`s collide on the index lock.
    const copies: command.remote.Command[] = [];
    for (const f of files) {
      copies.push(run(`file-${slug(f.path)}`, putFileCommand(host, f, timeouts.copy), [copies.at(-1) ?? check], undefined, f.content));
    }
    const hooks = run("hooks", step("hooks", timeouts.hooks), copies, [filesHash]);
    const validate = run("validate", step("validate", timeouts.validate), [hooks], [filesHash]);
    this.validatedPath = validate.stdout;
    // The validated path is part of the command text: switch runs again exactly when it changes.
    const switched = run("switch", validate.stdout.apply((p) => step("switch", timeouts.switch, [p])), [validate]);
    this.switchedSystem = switched.stdout;

    const steps: Record<string, command.remote.Command> = { hooks, validate, switch: switched };
    if (host.settings.hostCanCommitConfig) {
      // After every switch, and after new files even when they build to the same system.
      // A push failure is only a warning (logged on the host), so this step fails only if the commit does.
      steps.commit = run("commit", step("commit", timeouts.commit), [switched], [switched.stdout, filesHash]);
    }

    // Resolves once every step has run, so the status never reports a half-done host as done.
    const logs = pulumi.all(Object.fromEntries(Object.entries(steps).map(([which, cmd]) => [which, cmd.stderr.apply(stepLines)])));
    this.status = pulumi.all([validate.stdout, switched.stdout, logs]).apply(([validatedPath, switchedSystem, stepLog]) => ({
      role: host.role,
      validatedPath,
      switchedSystem,
      files: hashes,
      commitBack: host.settings.hostCanCommitConfig,
      steps: stepLog,
    }));
    this.registerOutputs({ validatedPath: this.validatedPath, switchedSystem: this.switchedSystem, status: this.status });
  }
}
