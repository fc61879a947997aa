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
    AUTO_UPGRADE_USER: host.configOwner,
    AUTO_UPGRADE_VALIDATE: String(s.preUpdateValidation),
  };
}

/** One step of the shipped script, under `timeout` because the provider ignores customTimeouts. */
export function stepCommand(host: ResolvedHost, step: Step, timeoutSeconds: number, args: string[] = []): string {
  const script = `${host.configPath}/${SCRIPT_FILE}`;
  const words = ["timeout", String(timeoutSeconds), "bash", script, step, ...args].map(q).join(" ");
  return asRoot(host.user, `${shellEnv(scriptEnv(host))} ${words}`);
}

/**
 * Writes one rendered file (content on stdin) into the checkout and stages it, because flakes
 * only see tracked files. It refuses, and changes nothing, when the file on the host differs
 * from both the new content and what nixfleet last wrote there: someone edited it on the host.
 * The record of what was last written lives in the state dir, outside the checkout.
 */
export function putFileCommand(host: ResolvedHost, file: RenderedFile, timeoutSeconds: number): string {
  const script = [
    "set -eu",
    `cfg=${q(host.configPath)}; rel=${q(file.path)}; want=${q(sha256(file.content))}; owner=${q(host.configOwner)}`,
    `rec=${q(`${host.stateDir}/pushed/${file.path}.sha256`)}`,
    'f="$cfg/$rel"',
    '[ -d "$cfg/.git" ] || { echo "nixfleet: $cfg is not a git checkout; clone the nix-config there first" >&2; exit 3; }',
    'cur=""; [ -e "$f" ] && cur=$(sha256sum < "$f" | cut -c1-64)',
    'last=""; [ -e "$rec" ] && last=$(cat "$rec")',
    'if [ -n "$cur" ] && [ "$cur" != "$want" ] && [ "$cur" != "$last" ]; then',
    '  if [ -n "$last" ]; then why="was edited on the host since nixfleet last wrote it"; else why="exists and was not written by nixfleet"; fi',
    '  echo "nixfleet: refusing to overwrite $f: it $why. Nothing was changed. Keep the edit by moving it into the stack config or the repo, then move the file away and run pulumi up again." >&2',
    "  exit 3",
    "fi",
    'mkdir -p "$(dirname "$f")" "$(dirname "$rec")"',
    'tmp=$(mktemp "$f.nixfleet.XXXXXX")',
    'cat > "$tmp"',
    '[ "$(sha256sum < "$tmp" | cut -c1-64)" = "$want" ] || { rm -f "$tmp"; echo "nixfleet: $rel arrived damaged" >&2; exit 3; }',
    `chmod ${file.content.startsWith("#!") ? "0755" : "0644"} "$tmp"; chown --reference="$cfg" "$tmp"`,
    'mv -f "$tmp" "$f"',
    'echo "$want" > "$rec"',
    // git as the checkout's owner: root on a user's repo fails with "dubious ownership".
    'if [ "$(id -un)" = "$owner" ]; then git -C "$cfg" add -- "$rel"; else runuser -u "$owner" -- git -C "$cfg" add -- "$rel"; fi',
    'echo "$want"',
  ].join("\n");
  return asRoot(host.user, `timeout ${q(String(timeoutSeconds))} sh -c ${q(script)}`);
}
