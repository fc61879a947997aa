/**
 * The shell text of every remote step. Pure functions, so tests read exactly what runs on a
 * host. Every value goes through `shellQuote`/`shellEnv`; the upgrade steps themselves live
 * in the shipped script (nix/modules/services/system/auto-upgrade.sh), shared with the timer.
 */
import { createHash } from "node:crypto";
import type { ResolvedHost } from "../config/resolve";
import { SCRIPT_FILE, type RenderedFile } from "../render/files";
import { shellEnv, shellQuote as q } from "../render/shell";

export type Step = "hooks" | "validate" | "switch" | "commit";

export const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");

/** Runs `script` as root: as is for root, through passwordless sudo otherwise (the provider has no PTY). */
export function asRoot(user: string, script: string): string {
  return user === "root" ? script : `sudo -n -- sh -c ${q(script)}`;
}

/** The script's settings, as the NixOS module would set them (see docs/architecture.md). */
export function scriptEnv(host: ResolvedHost): Record<string, string> {
  const s = host.settings;
  return {
    AUTO_UPGRADE_BRANCH: s.branch,
    AUTO_UPGRADE_COMMIT: String(s.hostCanCommitConfig),
    AUTO_UPGRADE_CONFIG_PATH: host.configPath,
    AUTO_UPGRADE_FLAKE_HOST: host.name,
    AUTO_UPGRADE_HOOKS: s.preUpdateHooks.join(" "),
    AUTO_UPGRADE_REMOTE: s.remote,
    AUTO_UPGRADE_REQUIRED_HOOKS: s.requiredHooks.join(" "),
    AUTO_UPGRADE_STATE_DIR: host.stateDir,
    // Empty: the script takes the owner of the checkout.
    AUTO_UPGRADE_USER: host.configOwner ?? "",
    AUTO_UPGRADE_VALIDATE: String(s.preUpdateValidation),
  };
}

/**
 * One step of the shipped script, under `timeout` because the provider ignores customTimeouts.
 * The script runs as root, so it must be the one nixfleet installed: its sha256 is checked first.
 */
export function stepCommand(host: ResolvedHost, step: Step, timeoutSeconds: number, scriptSha: string, args: string[] = []): string {
  const script = `${host.configPath}/${SCRIPT_FILE}`;
  const check = `printf '%s  %s\\n' ${q(scriptSha)} ${q(script)} | sha256sum -c --status - || { echo ${q(`nixfleet: ${script} is not the script nixfleet installed (edited on the host?); refusing to run it as root`)} >&2; exit 3; }`;
  const run = ["timeout", String(timeoutSeconds), "bash", script, step, ...args].map(q).join(" ");
  return asRoot(host.user, `${check}; ${shellEnv(scriptEnv(host))} ${run}`);
}

/**
 * Shared start of the file commands: settings, a journal logger, the owner of the checkout, and the
 * upgrade lock (the one the script takes), so a timer run never sees half-copied files.
 */
function fileCommandPreamble(host: ResolvedHost): string[] {
  return [
    "set -eu",
    `cfg=${q(host.configPath)}; state=${q(host.stateDir)}; owner=${q(host.configOwner ?? "")}`,
    'say() { logger -t auto-upgrade -- "nixfleet: $*" 2>/dev/null || true; echo "nixfleet: $*" >&2; }',
    '[ -d "$cfg/.git" ] || { say "$cfg is not a git checkout; clone the nix-config there first"; exit 3; }',
    '[ -n "$owner" ] || owner=$(stat -c %U "$cfg")',
    // As the owner: root on a user's repo trips "dubious ownership" and leaves root-owned files behind.
    'as_owner() { if [ "$(id -un)" = "$owner" ]; then "$@"; else runuser -u "$owner" -- "$@"; fi; }',
    'mkdir -p "$state"; exec 9>"$state/lock"',
    'flock -n 9 || { say "an upgrade is running on this host (lock $state/lock); nothing was changed, run pulumi up again later"; exit 3; }',
  ];
}

/** Shell that adds `rel` to $conflicts if the host's copy differs from both `want` and nixfleet's last write. */
function conflictCheck(rel: string, want: string): string[] {
  return [
    `rel=${q(rel)}; want=${q(want)}; f="$cfg/$rel"; rec="$state/pushed/$rel.sha256"`,
    'cur=""; [ -e "$f" ] && cur=$(sha256sum < "$f" | cut -c1-64)',
    'last=""; [ -e "$rec" ] && last=$(cat "$rec")',
    'if [ -n "$cur" ] && [ "$cur" != "$want" ] && [ "$cur" != "$last" ]; then',
    '  if [ -n "$last" ]; then why="edited on the host since nixfleet last wrote it"; else why="not written by nixfleet"; fi',
    '  conflicts="$conflicts $rel ($why)"',
    "fi",
  ];
}

const refuseOnConflicts = [
  'if [ -n "$conflicts" ]; then',
  '  say "refusing to overwrite:$conflicts. Nothing was changed. Keep an edit by moving it into the stack config or the repo, then move the file away and run pulumi up again."',
  "  exit 3",
  "fi",
];

/**
 * Checks every file the host is about to get before any is written, so a host-side edit of one
 * file stops the whole copy (not after the others were replaced). Runs again whenever any file changes.
 */
export function checkFilesCommand(host: ResolvedHost, files: readonly RenderedFile[], timeoutSeconds: number): string {
  const script = [
    ...fileCommandPreamble(host),
    'conflicts=""',
    ...files.flatMap((f) => conflictCheck(f.path, sha256(f.content))),
    ...refuseOnConflicts,
  ].join("\n");
  return asRoot(host.user, `timeout ${q(String(timeoutSeconds))} sh -c ${q(script)}`);
}

/**
 * Writes one rendered file (content on stdin) into the checkout and stages it, because flakes
 * only see tracked files. It checks its own file again (the host may have changed since the check
 * step), writes atomically and verifies the sha256. The record of what was last written lives in
 * the state dir, outside the checkout.
 */
export function putFileCommand(host: ResolvedHost, file: RenderedFile, timeoutSeconds: number): string {
  const script = [
    ...fileCommandPreamble(host),
    'conflicts=""',
    ...conflictCheck(file.path, sha256(file.content)),
    ...refuseOnConflicts,
    'as_owner mkdir -p "$(dirname "$f")"',
    'mkdir -p "$(dirname "$rec")"',
    'tmp=$(mktemp "$f.nixfleet.XXXXXX")',
    'cat > "$tmp"',
    '[ "$(sha256sum < "$tmp" | cut -c1-64)" = "$want" ] || { rm -f "$tmp"; say "$rel arrived damaged; nothing was changed"; exit 3; }',
    `chmod ${file.content.startsWith("#!") ? "0755" : "0644"} "$tmp"; chown --reference="$cfg" "$tmp"`,
    'mv -f "$tmp" "$f"',
    'echo "$want" > "$rec"',
    'as_owner git -C "$cfg" add -- "$rel"',
    'echo "$want"',
  ].join("\n");
  return asRoot(host.user, `timeout ${q(String(timeoutSeconds))} sh -c ${q(script)}`);
}
