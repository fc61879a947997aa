# ============================================================================
#  SIMULATION — nixos-lite `pkgs.buildGoModule`. This is NOT nixpkgs'.
#
#  The same call as nixpkgs' buildGoModule, enough for a module with no
#  dependencies (vendorHash = null, the standard library only): it builds
#  `subPackages` with the machine's own Go (Debian's golang-go on a fleet
#  machine, /usr/local/go on the deployer: the first found of the paths below),
#  offline (GOPROXY=off, GOTOOLCHAIN=local), with a fresh build cache each time
#  as nixpkgs' builder has. `env`, `ldflags`, `doCheck`, `meta` are honoured as
#  far as such a module needs; `tags` too. Used by nixos-lite's pkgs and by the
#  script tests' flake (test/script/flake).
# ============================================================================
{ system }:
{ pname, version, src, vendorHash ? null, subPackages ? [ "." ], ldflags ? [ ], tags ? [ ], env ? { }, meta ? { }, ... }:
assert vendorHash == null || throw "nixos-lite buildGoModule: only modules without dependencies (vendorHash = null)";
derivation {
  name = "${pname}-${version}";
  inherit system src;
  builder = "/bin/sh";
  packages = toString subPackages;
  flags = toString ldflags;
  buildTags = builtins.concatStringsSep "," tags;
  cgo = env.CGO_ENABLED or "1";
  args = [ "-c" ''
    set -e
    go=""
    for g in /usr/lib/go/bin/go /usr/bin/go /usr/local/go/bin/go; do if [ -x "$g" ]; then go=$g; break; fi; done
    [ -n "$go" ] || { echo "nixos-lite buildGoModule: no Go on this machine (/usr/lib/go, /usr/bin/go, /usr/local/go)" >&2; exit 1; }
    export HOME="$TMPDIR" GOCACHE="$TMPDIR/go-cache" GOPATH="$TMPDIR/go" GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-trimpath CGO_ENABLED="$cgo"
    cd "$src"
    for p in $packages; do "$go" build -tags "$buildTags" -ldflags "$flags" -o "$out/bin/" "./$p"; done
  '' ];
} // { inherit pname version meta; }
