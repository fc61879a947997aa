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
  /** Build the new system before switching; a failed build deploys nothing. Always on: the build always comes first, so false changes nothing (deprecated). Defaults to true. */
  readonly preUpdateValidation?: boolean;
  /** systemd units started, in order, before the upgrade (e.g. syncing dotfiles); a missing one is a warning unless listed in requiredHooks. Defaults to ["chezmoi-pre-update.service"]. */
  readonly preUpdateHooks?: readonly string[];
  /** Hooks that must exist on the host (a subset of preUpdateHooks); a missing one fails the upgrade before anything changes. Defaults to []. */
  readonly requiredHooks?: readonly string[];
  /** After a successful switch the host commits its checkout's changes to tracked files and pushes them (commit-back); a failed push is a warning. Defaults to true for desktop and laptop, false for server and pi. */
  readonly hostCanCommitConfig?: boolean;
  /** Branch pulled (timer) and pushed (commit-back). Defaults to "main". */
  readonly branch?: string;
  /** Git remote pulled and pushed. Defaults to "origin". */
  readonly remote?: string;
  /** When the timer runs, a systemd calendar expression (OnCalendar=); a missed run happens at next boot. Defaults to "04:00" for desktop, laptop and server, "Sun 04:00" for pi. */
  readonly schedule?: string;
  /** Random delay added to each timer run (RandomizedDelaySec=), a systemd time span; "0" turns it off. Defaults to "30min". */
  readonly randomizedDelaySec?: string;
  /** Run the health gate after activation: no unit newly failed, every healthUnits unit active, and (timer runs) the git remote still reachable; a failed gate rolls back. Defaults to true. */
  readonly healthCheck?: boolean;
  /** systemd units that must be active (and not failed) after activation. Defaults to []. */
  readonly healthUnits?: readonly string[];
  /** Seconds the whole health gate may take; past it the gate fails and the host rolls back. From 1 to 3600. Defaults to 120. */
  readonly healthTimeout?: number;
  /** systemd units started when a timer run fails or rolls back (OnFailure=), e.g. a mail or ntfy unit. Defaults to []. */
  readonly onFailure?: readonly string[];
  /** Seconds the host waits for the deployer's confirmation before rolling back. Push only, never rendered. From 5 to 3600. Defaults to 30. */
  readonly confirmTimeout?: number;
  /** Rollout wave: wave k+1 starts only after every host of wave k confirmed. Push only, never rendered. From 0 to 1000. Defaults to 0. */
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
  /** Waiting for the host's upgrade lease (a timer run may hold it). From 1 to 86400. Defaults to 120. */
  readonly lease?: number;
  /** All pre-update hooks together. From 1 to 86400. Defaults to 900. */
  readonly hooks?: number;
  /** Building the new system. From 1 to 86400. Defaults to 3600. */
  readonly validate?: number;
  /** Activating it (switch-to-configuration), and later the profile and boot entry. From 1 to 86400. Defaults to 600. */
  readonly switch?: number;
  /** Commit-back (git commit and push as the checkout's owner). From 1 to 86400. Defaults to 300. */
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
  /** Where the host keeps status.json, the GC-rooted validated and golden links, the lease and push records. Defaults to "/var/lib/auto-upgrade". */
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

