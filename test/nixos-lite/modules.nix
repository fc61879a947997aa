# ============================================================================
#  SIMULATION — nixos-lite module system. This is NOT nixpkgs' lib.evalModules.
#
#  A tiny re-implementation of the NixOS module system, big enough to evaluate
#  nixfleet's auto-upgrade module with real Nix:
#    - `imports` resolved recursively (paths, attrsets, functions taking
#      `{ config, lib, pkgs, options, ... }`), deduplicated by file like nixpkgs;
#    - options declared with mkOption anywhere in nested attrsets;
#    - definitions merged with priorities (mkDefault 1000 < plain 100 <
#      mkForce 50; the highest priority wins), mkIf, mkMerge, option defaults;
#    - every merged value is checked against its type (error names the option);
#    - a definition of an undeclared option under a declared tree is an error:
#      "The option `x' does not exist";
#    - equal-priority definitions merge in REVERSE module order, as nixpkgs'
#      lib/modules.nix does (`mergeModules prefix (reverseList …)`);
#    - `disabledModules` (paths, strings under `modulesPath`, attrsets with
#      `key`) removes those modules and what only they import, as
#      nixpkgs' collectModules does.
#  See ./README.md for what is and is not simulated.
# ============================================================================
{ lib }:
let
  inherit (builtins)
    attrNames concatLists elem filter foldl' functionArgs intersectAttrs isAttrs isFunction isPath isString
    mapAttrs removeAttrs;
  inherit (lib) imap1 isOption mergeDefinitions pushDownProperties reverseList showDefs showOption types unique;

  structuredKeys = [ "_class" "_file" "key" "imports" "options" "config" "meta" "disabledModules" ];

  evalModules = { modules, specialArgs ? { }, prefix ? [ ] }:
    let
      args = { inherit lib config options; } // specialArgs;

      applyArgs = f:
        let fa = functionArgs f; in
        f (if fa == { } then args else intersectAttrs fa args);

      # Normalises one module (path, function or attrset) to
      # { key; file; imports; options; config; }.
      load = parentFile: parentKey: idx: m:
        let
          isFile = isPath m || isString m;
          raw = if isFile then import m else m;
          value = if isFunction raw then applyArgs raw else raw;
          # nixpkgs: `key` of the module itself, else the file's path, else parent key + index.
          key = toString (value.key or (if isFile then toString m else "${parentKey}:anon-${toString idx}"));
          file = toString (value._file or (if isFile then toString m else parentFile));
          structured = value ? config || value ? options;
          unsupported = filter (n: !(elem n structuredKeys)) (attrNames value);
        in
        if !isAttrs value then
          throw "nixos-lite: module `${file}' is not an attribute set (nor a function returning one)."
        else if structured && unsupported != [ ] then
          throw "Module `${file}' has an unsupported attribute `${builtins.head unsupported}'. This is caused by introducing a top-level `config' or `options' attribute. Add configuration attributes immediately on the top level instead, or move all of them (namely: ${builtins.concatStringsSep " " unsupported}) into the explicit `config' attribute."
        else {
          inherit key file;
          importsLoaded = imap1 (load file key) (value.imports or [ ]);
          disabledModules = map (disabledKey file) (value.disabledModules or [ ]);
          options = value.options or { };
          config = if structured then value.config or { } else removeAttrs value structuredKeys;
        };

      # nixpkgs lib/modules.nix collectModules/isDisabled: what a disabledModules entry names.
      disabledKey = file: d:
        if isString d then
          (if builtins.substring 0 1 d == "/" then d else "${toString (specialArgs.modulesPath or "")}/${d}")
        else if isPath d then toString d
        else if isAttrs d && d ? key then toString d.key
        else if isAttrs d then
          throw "Module `${file}` contains a disabledModules item that is an attribute set, presumably a module, that does not have a `key` attribute. This means that the module system doesn't have any means to identify the module that should be disabled. Make sure that you've put the correct value in disabledModules: a string path relative to modulesPath, a path value, or an attribute set with a `key` attribute."
        else
          throw "Each disabledModules item must be a path, string, or a attribute set with a key attribute, or a value supported by toString. However, one of the disabledModules items in `${file}` is none of that, but is of type ${builtins.typeOf d}.";

      topModules = imap1 (load "<unknown-file>" "<top>") modules;
      # Every module reachable, disabled or not: their disabledModules all count (nixpkgs collects
      # them from the whole import tree before filtering).
      everything = builtins.genericClosure { startSet = topModules; operator = m: m.importsLoaded; };
      disabled = concatLists (map (m: m.disabledModules) everything);
      enabled = filter (m: !(elem m.key disabled));
      # Breadth-first and deduplicated by key, like nixpkgs' filterModules (genericClosure); a
      # disabled module's imports are not followed.
      loaded = builtins.genericClosure { startSet = enabled topModules; operator = m: enabled m.importsLoaded; };

      # --- declarations ------------------------------------------------------
      mergeDecls = loc: a: b:
        a // mapAttrs
          (name: bv:
            let l = loc ++ [ name ]; in
            if !(a ? ${name}) then bv
            else if isOption a.${name} || isOption bv then
              throw "The option `${showOption l}' in `${builtins.head (bv.declarations or [ "<unknown-file>" ])}' is already declared in `${builtins.head (a.${name}.declarations or [ "<unknown-file>" ])}'."
            else mergeDecls l a.${name} bv)
          b;

      # Tags each mkOption with the file that declares it.
      tagDecls = file: tree: mapAttrs
        (_: v:
          if isOption v then v // { declarations = [ file ]; }
          else if isAttrs v then tagDecls file v
          else throw "nixos-lite: `options' in `${file}' contains a value that is neither an option nor an attribute set.")
        tree;

      declTree = foldl' (acc: m: mergeDecls prefix acc (tagDecls m.file m.options)) { } loaded;

      # --- definitions -------------------------------------------------------
      evalOption = loc: decl: defs:
        let
          type = decl.type or types.unspecified;
          r0 = mergeDefinitions loc type defs;
          # nixpkgs adds the default as one more definition, `mkOptionDefault` (1500), in front of the
          # others. Same result, but the default is only evaluated when no definition beats it.
          r = if !(decl ? default) || r0.highestPrio < 1500 then r0
            else mergeDefinitions loc type ([{ file = builtins.head decl.declarations; value = lib.mkOptionDefault decl.default; }] ++ defs);
        in
        decl // {
          inherit loc;
          inherit (r) isDefined;
          # nixpkgs evalOptionValue: `apply` turns the merged value into the option's value.
          value = if decl ? apply then decl.apply r.value else r.value;
          files = unique (map (d: d.file) defs);
          definitions = map (d: d.value) r.defsFinal;
          highestPrio = r.highestPrio;
        };

      evalNode = loc: node: defs:
        let
          pushed = concatLists (map
            (d:
              if isAttrs d.value then
                map (v: { inherit (d) file; value = v; }) (pushDownProperties d.value)
              else throw "The option set `${showOption loc}' must be defined by an attribute set. Definition values:${showDefs [ d ]}")
            defs);
          definedNames = unique (concatLists (map (d: attrNames d.value) pushed));
          undeclared = filter (n: !(node ? ${n})) definedNames;
          bad = builtins.head undeclared;
          check =
            if undeclared == [ ] then true
            else throw "The option `${showOption (loc ++ [ bad ])}' does not exist. Definition values:${showDefs (defsFor bad)}";
          defsFor = name: concatLists (map
            (d: if d.value ? ${name} then [{ inherit (d) file; value = d.value.${name}; }] else [ ])
            pushed);
          children = mapAttrs
            (name: decl:
              if isOption decl then evalOption (loc ++ [ name ]) decl (defsFor name)
              else evalNode (loc ++ [ name ]) decl (defsFor name))
            node;
        in
        { inherit check children; };

      # nixpkgs merges `reverseList` of the collected modules: at equal priority a later module's
      # list entries come first (a user module's hook lands before the role's, not after).
      root = evalNode prefix declTree (map (m: { inherit (m) file; value = m.config; }) (reverseList loaded));

      configOf = n: builtins.seq n.check (mapAttrs (_: c: if c ? check then configOf c else c.value) n.children);
      optionsOf = n: mapAttrs (_: c: if c ? check then optionsOf c else c) n.children;

      config = configOf root;
      options = optionsOf root;
    in
    {
      _type = "configuration";
      inherit config options;
      # Every declared option that has a value, as [ { loc; value; } ] — used to
      # type-check the whole configuration (see nixosSystem).
      definedOptions =
        let
          walk = n: concatLists (map
            (name:
              let c = n.children.${name}; in
              if c ? check then builtins.seq c.check (walk c)
              else if c.isDefined then [ c ] else [ ])
            (attrNames n.children));
        in
        builtins.seq root.check (walk root);
    };
in
{ inherit evalModules; }
