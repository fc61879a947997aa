#!/usr/bin/env bash
# Provide the Pulumi CLI and nixfleet's stand-in command provider for offline use.
#
#   PATH="$(toolchain/build.sh):$PATH"
#
# The last line on stdout is the bin dir holding `pulumi` and `pulumi-resource-command`; everything else goes to
# stderr. Versions come from package.json's devDependencies, the exact versions this repository installs and tests
# with (@pulumi/pulumi for the CLI, @pulumi/command for the provider, whose plugin version must match it exactly);
# the package itself takes them as caret-range peer dependencies. Binaries are cached outside the repo in
#   ${NIXFLEET_TOOLCHAIN_DIR:-$HOME/.cache/nixfleet/toolchain/pulumi-v<X>_command-v<Y>}/bin
# and rebuilt only when a version or the provider source changes. Needs Go (>= 1.25) and a Go module proxy.
#
# NIXFLEET_COMMAND_PROVIDER=<path to a pulumi-resource-command binary> uses that binary instead of the stand-in
# (e.g. the real provider built from upstream source for a manual comparison run; never in CI). It gets its own
# cache dir (suffix _external) so the stand-in's cache is left alone.
#
# Callers must also set, for a fully offline engine:
#   PULUMI_BACKEND_URL=file://<state dir>  PULUMI_CONFIG_PASSPHRASE=<anything>
#   PULUMI_SKIP_UPDATE_CHECK=true          PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

log() { printf 'toolchain: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

dep_version() { # dep_version <npm package> -> exact version pinned in package.json's devDependencies
	local v
	if command -v node >/dev/null 2>&1; then
		v="$(node -e 'const p=require(process.argv[1]); process.stdout.write((p.devDependencies||{})[process.argv[2]]||"")' \
			"$repo/package.json" "$1")"
	else
		v="$(jq -r --arg d "$1" '.devDependencies[$d] // ""' "$repo/package.json")"
	fi
	[[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "package.json must pin $1 to an exact version in devDependencies (found '${v}')"
	printf '%s' "$v"
}

pulumi_version="$(dep_version @pulumi/pulumi)"
command_version="$(dep_version @pulumi/command)"
grep -q "pluginVersion = \"$command_version\"" "$here/provider/provider.go" ||
	die "toolchain/provider/provider.go pluginVersion does not match @pulumi/command $command_version"

external="${NIXFLEET_COMMAND_PROVIDER:-}"
if [[ -n "$external" ]]; then
	[[ -x "$external" ]] || die "NIXFLEET_COMMAND_PROVIDER=$external is not an executable file"
	external="$(realpath "$external")"
fi
cache="${NIXFLEET_TOOLCHAIN_DIR:-$HOME/.cache/nixfleet/toolchain/pulumi-v${pulumi_version}_command-v${command_version}${external:+_external}}"
bin="$cache/bin"
mkdir -p "$bin"

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go

provider_hash() {
	(cd "$here/provider" && cat go.mod go.sum ./*.go) | sha256sum | cut -d' ' -f1
}

# One builder at a time per cache dir (tests may call this in parallel).
exec 9>"$cache/.lock"
flock 9

# ---- pulumi CLI ---------------------------------------------------------------------------------------------
cli_stamp="pulumi v$pulumi_version"
if [[ -x "$bin/pulumi" && "$(cat "$bin/.pulumi.stamp" 2>/dev/null)" == "$cli_stamp" ]]; then
	: # cached
elif existing="$(PATH="${PATH//$bin/}" command -v pulumi)" &&
	[[ "$("$existing" version 2>/dev/null)" == "v$pulumi_version" ]]; then
	log "using $existing (v$pulumi_version, found on PATH)"
	ln -sf "$existing" "$bin/pulumi"
	printf '%s\n' "$cli_stamp" >"$bin/.pulumi.stamp"
else
	[[ -x "$go_bin" ]] || die "no Go toolchain found (need go >= 1.25 to build the Pulumi CLI)"
	log "building the Pulumi CLI v$pulumi_version from github.com/pulumi/pulumi/pkg/v3 (cold: ~8 min)…"
	start=$SECONDS
	work="$(mktemp -d)"
	trap 'rm -rf "$work"' EXIT
	(
		cd "$work"
		export GOFLAGS=-mod=mod GOTOOLCHAIN=local
		"$go_bin" mod init nixfleet.local/toolchain/pulumi-cli
		printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"\n' >tools.go
		"$go_bin" mod edit -go=1.25 \
			"-require=github.com/pulumi/pulumi/pkg/v3@v$pulumi_version" \
			"-require=github.com/pulumi/pulumi/sdk/v3@v$pulumi_version"
		# pkg/v3's own go.mod carries replace directives that a dependent module does not inherit
		# (github.com/atotto/clipboard => a fork); copy its module-to-module replaces (not ../sdk).
		pkg_mod="$("$go_bin" mod download -json "github.com/pulumi/pulumi/pkg/v3@v$pulumi_version" | jq -r .GoMod)"
		while IFS= read -r rep; do
			[[ -n "$rep" ]] && "$go_bin" mod edit "-replace=$rep"
		done < <("$go_bin" mod edit -json "$pkg_mod" |
			jq -r '.Replace[]? | select(.New.Version != null) |
				"\(.Old.Path)\(if .Old.Version then "@"+.Old.Version else "" end)=\(.New.Path)@\(.New.Version)"')
		"$go_bin" mod tidy
		"$go_bin" build -trimpath -o "$bin/pulumi.new" \
			-ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$pulumi_version" \
			github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
	) >&2
	mv -f "$bin/pulumi.new" "$bin/pulumi"
	[[ "$("$bin/pulumi" version)" == "v$pulumi_version" ]] || die "built pulumi reports $("$bin/pulumi" version)"
	printf '%s\n' "$cli_stamp" >"$bin/.pulumi.stamp"
	log "built pulumi v$pulumi_version in $((SECONDS - start)) s ($(du -h "$bin/pulumi" | cut -f1))"
fi

# ---- command provider: the stand-in, or NIXFLEET_COMMAND_PROVIDER ------------------------------------------
if [[ -n "$external" ]]; then
	prov_stamp="command v$command_version external $external $(sha256sum "$external" | cut -d' ' -f1)"
	if [[ "$(cat "$bin/.provider.stamp" 2>/dev/null)" != "$prov_stamp" ]]; then
		log "using the command provider $external instead of the stand-in (NIXFLEET_COMMAND_PROVIDER)"
		ln -sfn "$external" "$bin/pulumi-resource-command"
		printf '%s\n' "$prov_stamp" >"$bin/.provider.stamp"
	fi
elif prov_stamp="command v$command_version $(provider_hash)" &&
	[[ -x "$bin/pulumi-resource-command" && "$(cat "$bin/.provider.stamp" 2>/dev/null)" == "$prov_stamp" ]]; then
	: # cached
else
	[[ -x "$go_bin" ]] || die "no Go toolchain found (need go >= 1.25 to build the command provider)"
	log "building the stand-in pulumi-resource-command v$command_version from toolchain/provider…"
	start=$SECONDS
	(cd "$here/provider" && GOFLAGS=-mod=mod GOTOOLCHAIN=local \
		"$go_bin" build -trimpath -o "$bin/pulumi-resource-command.new" .) >&2
	mv -f "$bin/pulumi-resource-command.new" "$bin/pulumi-resource-command"
	printf '%s\n' "$prov_stamp" >"$bin/.provider.stamp"
	log "built pulumi-resource-command in $((SECONDS - start)) s ($(du -h "$bin/pulumi-resource-command" | cut -f1))"
fi

# ---- install the provider as a plugin ---------------------------------------------------------------------
# Installed into the toolchain's own PULUMI_HOME, callers can set PULUMI_IGNORE_AMBIENT_PLUGINS=true and the
# engine stops warning "using pulumi-resource-command from $PATH" on every operation.
home="$cache/home"
plugin_stamp="$prov_stamp $cli_stamp"
if [[ "$(cat "$home/.plugin.stamp" 2>/dev/null)" != "$plugin_stamp" ]]; then
	mkdir -p "$home"
	PULUMI_HOME="$home" PULUMI_SKIP_UPDATE_CHECK=true "$bin/pulumi" plugin install resource command "v$command_version" \
		--reinstall --file "$bin/pulumi-resource-command" >&2
	printf '%s\n' "$plugin_stamp" >"$home/.plugin.stamp"
fi

printf '%s\n' "$bin"
