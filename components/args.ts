/**
 * The args a user feeds `Fleet` and `Host` directly, and how they become the resolver's hosts.
 *
 * `address`, `port`, `hostKey` and `configPath` are `pulumi.Input`s, so a machine created in the same
 * program (a VM's IP address) can be a host. Everything else decides resource names, waves or the
 * commands' shape, so it must be known when the component is constructed.
 *
 * Validation is the stack config's (config/schema.ts), with field names in the args' own terms
 * (components/validate.ts): what is known is checked at construction (the constructor throws a
 * ConfigError); an Input that is an Output is checked when it resolves, and a bad value fails the
 * host's commands with the same field-named error (the engine reports it for the resource and the
 * update fails). This file holds only the types, so the package's `.d.ts` never reach zod's.
 */
import type * as pulumi from "@pulumi/pulumi";
import type { Preset } from "../config/errors";

/** Upgrade settings a role sets and a host may override; rendered into the host's Nix. */
export interface UpgradeSettings {
  /** Build the new system before switching; a failed build deploys nothing. Defaults to true. */
  readonly preUpdateValidation?: boolean;
  /** systemd units started, in order, before the upgrade. Defaults to ["chezmoi-pre-update.service"]. */
  readonly preUpdateHooks?: readonly string[];
  /** Hooks that must exist on the host (a subset of preUpdateHooks); a missing one fails the upgrade. Defaults to []. */
  readonly requiredHooks?: readonly string[];
  /** The host commits and pushes its local config changes after a successful switch. Defaults to true for desktop and laptop, false for server and pi. */
  readonly hostCanCommitConfig?: boolean;
  /** Branch pulled (timer) and pushed (commit-back). Defaults to "main". */
  readonly branch?: string;
  /** Git remote name. Defaults to "origin". */
  readonly remote?: string;
  /** systemd calendar expression for the timer. Defaults to "04:00" ("Sun 04:00" for pi). */
  readonly schedule?: string;
  /** systemd time span spread added to the timer. Defaults to "30min". */
  readonly randomizedDelaySec?: string;
  /** Run the health gate after activation (failed units, health units). Defaults to true. */
  readonly healthCheck?: boolean;
  /** systemd units that must start and not be failed after activation. Defaults to []. */
  readonly healthUnits?: readonly string[];
  /** Seconds for the whole health gate (1–3600). Defaults to 120. */
  readonly healthTimeout?: number;
  /** systemd units started when a timer run fails or rolls back (e.g. a mail or ntfy unit). Defaults to []. */
  readonly onFailure?: readonly string[];
  /** Seconds the host waits for the deployer's confirmation before rolling back (5–3600). Never rendered. Defaults to 30. */
  readonly confirmTimeout?: number;
  /** Rollout wave (0–1000): wave k+1 starts only after every host of wave k confirmed. Never rendered. Defaults to 0. */
  readonly wave?: number;
}

/**
 * A role's settings. The four presets (desktop, laptop, server, pi) exist without an entry; an entry
 * under a preset's name changes that preset's settings. Any other name is a custom role: it must name
 * the `preset` whose built-in defaults it starts from (not that preset's entry here), then its own settings.
 */
export interface RoleArgs extends UpgradeSettings {
  /** The built-in role a custom role starts from. Required for a custom role; not allowed on a preset's own entry. */
  readonly preset?: Preset;
}

/** Bounds of the remote phases, in seconds (1–86400 each). */
export interface TimeoutArgs {
  /** Waiting for the host's upgrade lease (a timer run may hold it). Defaults to 120. */
  readonly lease?: number;
  /** All pre-update hooks together. Defaults to 900. */
  readonly hooks?: number;
  /** Building the new system. Defaults to 3600. */
  readonly validate?: number;
  /** Activating it (switch-to-configuration), and later the profile and boot entry. Defaults to 600. */
  readonly switch?: number;
  /** Commit-back (git commit and push as the checkout's owner). Defaults to 300. */
  readonly commit?: number;
}

/** One machine, as `Fleet`'s `hosts` lists it (the same fields as an entry of `nixfleet:hosts`). */
export interface HostSpec extends UpgradeSettings {
  /** The host's name: its flake attribute (`nixosConfigurations.<name>`) and folder; an RFC 1123 label. */
  readonly name: string;
  /** A preset (desktop, laptop, server, pi) or a custom role defined in `roles`. */
  readonly role: string;
  /** Where SSH connects: an RFC 1123 hostname or an IP address. May come from another resource. */
  readonly address: pulumi.Input<string>;
  /** SSH port (1–65535). Defaults to 22. */
  readonly port?: pulumi.Input<number>;
  /** SSH user; commands that need root run through passwordless sudo when it is not root. Defaults to "root". */
  readonly user?: string;
  /** The host's SSH public key, authorized_keys format without comment ("ssh-ed25519 AAAA…"). Defaults to none: the connection does not authenticate the host (a warning says so). */
  readonly hostKey?: pulumi.Input<string | undefined>;
  /** The nix-config checkout on the host (absolute path). */
  readonly configPath: pulumi.Input<string>;
  /** Owner of the checkout; git runs as this user. Defaults to whoever owns the directory on the host. */
  readonly configOwner?: string;
  /** Where the status record and the validated out-link live on the host. Defaults to "/var/lib/auto-upgrade". */
  readonly stateDir?: string;
}

/** The part of the args that is validated like stack config. */
export interface FleetSpec {
  readonly hosts: readonly HostSpec[];
  /** Preset changes and custom roles, by role name. Defaults to none: the presets' built-in defaults. */
  readonly roles?: Readonly<Record<string, RoleArgs>>;
  /** Defaults to lease 120, hooks 900, validate 3600, switch 600, commit 300. */
  readonly timeouts?: TimeoutArgs;
}

