# ============================================================================
#  SIMULATION — nixos-lite `lib`. This is NOT nixpkgs.
#
#  A small stand-in for the few nixpkgs `lib` functions that nixfleet's NixOS
#  module uses, so that real Nix can evaluate the module offline (nixpkgs is not
#  available here). Names, argument order and error messages follow nixpkgs;
#  the implementation is deliberately small. See ./README.md.
# ============================================================================
let
  inherit (builtins)
    all any attrNames concatLists concatStringsSep elem filter foldl' genList
    head isAttrs isBool isFunction isInt isList isPath isString length listToAttrs
    mapAttrs replaceStrings stringLength substring tail toJSON typeOf;

  # --- lists ---------------------------------------------------------------
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  subtractLists = remove: filter (x: !(elem x remove));
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  imap1 = f: xs: genList (i: f (i + 1) (builtins.elemAt xs i)) (length xs);
  last = xs: builtins.elemAt xs (length xs - 1);
  toList = x: if isList x then x else [ x ];
  flatten = x: if isList x then concatLists (map flatten x) else [ x ];

  # --- strings -------------------------------------------------------------
  hasPrefix = pref: str: substring 0 (stringLength pref) str == pref;
  hasSuffix = suff: str:
    let
      ls = stringLength str;
      lf = stringLength suff;
    in
    lf <= ls && substring (ls - lf) lf str == suff;
  hasInfix = infix: str: builtins.match ".*${escapeRegex infix}.*" str != null;
  escapeRegex = s: replaceStrings
    [ "\\" "[" "]" "{" "}" "(" ")" "^" "$" "*" "+" "?" "." "|" ]
    [ "\\\\" "\\[" "\\]" "\\{" "\\}" "\\(" "\\)" "\\^" "\\$" "\\*" "\\+" "\\?" "\\." "\\|" ]
    s;
  boolToString = b: if b then "true" else "false";
  # nixpkgs: plain words stay bare, everything else is single-quoted.
  escapeShellArg = arg:
    let s = toString arg; in
    if builtins.match "[[:alnum:],._+:@%/-]+" s != null then s
    else "'${replaceStrings [ "'" ] [ "'\\''" ] s}'";
  escapeShellArgs = xs: concatStringsSep " " (map escapeShellArg xs);
  splitString = sep: s: filter isString (builtins.split (escapeRegex sep) s);
  makeBinPath = pkgs: concatStringsSep ":" (map (p: "${p}/bin") pkgs);

  # --- attrsets ------------------------------------------------------------
  isDerivation = x: isAttrs x && (x.type or null) == "derivation";
  attrByPath = path: default: set:
    if path == [ ] then set
    else if isAttrs set && set ? ${head path} then attrByPath (tail path) default set.${head path}
    else default;
  filterAttrs = pred: set:
    listToAttrs (map (n: { name = n; value = set.${n}; })
      (filter (n: pred n set.${n}) (attrNames set)));
  mapAttrsToList = f: set: map (n: f n set.${n}) (attrNames set);
  recursiveUpdate = a: b: a // mapAttrs
    (n: v: if isAttrs v && isAttrs (a.${n} or null) && !isDerivation v then recursiveUpdate a.${n} v else v) b;
  getExe = drv:
    let name = drv.meta.mainProgram or (throw
      "lib.getExe: the package `${drv.name or "?"}' has no meta.mainProgram"); in
    "${drv}/bin/${name}";
  getExe' = drv: name: "${drv}/bin/${name}";

  # --- printing values in error messages (never throws on functions) --------
  showVal = v:
    if isString v then toJSON v
    else if isPath v then toString v
    else if isFunction v then "<function>"
    else if isList v then "[ ${concatStringsSep " " (map showVal v)} ]"
    else if isDerivation v then "<derivation ${v.name or "?"}>"
    else if isAttrs v then "{ ${concatStringsSep " " (map (n: "${n} = ${showVal v.${n}};") (attrNames v))} }"
    else toJSON v;
  showOption = loc: concatStringsSep "." loc;
  showDefs = defs: concatStringsSep "" (map (d: "\n- In `${d.file}': ${showVal d.value}") defs);

  # --- properties: mkIf / mkMerge / mkOverride -------------------------------
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkOptionDefault = mkOverride 1500;
  mkDefault = mkOverride 1000;
  defaultOverridePriority = 100;
  mkForce = mkOverride 50;
  mkVMOverride = mkOverride 10;

  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = name: mkOption {
    type = types.bool;
    default = false;
    example = true;
    description = "Whether to enable ${name}.";
  };
  mkPackageOption = pkgs: name: extra: mkOption ({
    type = types.package;
    default = pkgs.${name};
    description = "The ${name} package to use.";
  } // extra);
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  literalMD = text: { _type = "literalMD"; inherit text; };
  mdDoc = s: s;

  isOption = x: isAttrs x && (x._type or null) == "option";
  isType = t: x: isAttrs x && (x._type or null) == t;

  # Expands mkMerge and mkIf, unwraps mkOverride; returns [ { priority; value; } ].
  dischargeProperties = priority: v:
    let t = if isAttrs v then v._type or null else null; in
    if t == "merge" then concatLists (map (dischargeProperties priority) v.contents)
    else if t == "if" then
      (if isBool v.condition then
        (if v.condition then dischargeProperties priority v.content else [ ])
      else throw "lib.mkIf called with a non-Boolean condition (${showVal v.condition})")
    else if t == "override" then dischargeProperties v.priority v.content
    else [{ inherit priority; value = v; }];

  # Distributes mkMerge / mkIf / mkOverride over the attributes of an attrset,
  # so that definitions can be collected attribute by attribute.
  pushDownProperties = v:
    let t = if isAttrs v then v._type or null else null; in
    if t == "merge" then concatLists (map pushDownProperties v.contents)
    else if t == "if" then map (mapAttrs (_: mkIf v.condition)) (pushDownProperties v.content)
    else if t == "override" then map (mapAttrs (_: mkOverride v.priority)) (pushDownProperties v.content)
    else [ v ];

  # The heart of the module system (nixpkgs: lib.modules.mergeDefinitions).
  # defs: [ { file; value; } ] where value may carry properties.
  mergeDefinitions = loc: type: defs:
    let
      discharged = concatLists (map
        (d: map (p: { inherit (d) file; inherit (p) priority value; }) (dischargeProperties defaultOverridePriority d.value))
        defs);
      highestPrio = foldl' (acc: d: if d.priority < acc then d.priority else acc) 9999 discharged;
      defsFinal = map (d: { inherit (d) file value; }) (filter (d: d.priority == highestPrio) discharged);
      bad = filter (d: !(type.check d.value)) defsFinal;
      isDefined = defsFinal != [ ];
      mergedValue =
        if bad != [ ] then
          throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:${showDefs bad}"
        else type.merge loc defsFinal;
    in
    {
      inherit isDefined defsFinal highestPrio;
      value = if isDefined then mergedValue
        else throw "The option `${showOption loc}' is used but not defined.";
      optionalValue = if isDefined then { value = mergedValue; } else { };
    };

  mergeEqualOption = loc: defs:
    if defs == [ ] then throw "The option `${showOption loc}' is used but not defined."
    else if all (d: d.value == (head defs).value) defs then (head defs).value
    else throw "The option `${showOption loc}' has conflicting definition values:${showDefs defs}\nUse `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.";
  mergeOneOption = loc: defs:
    if length defs == 1 then (head defs).value
    else mergeEqualOption loc defs;

  # --- types -----------------------------------------------------------------
  mkOptionType = { name, description ? name, check ? (_: true), merge ? mergeEqualOption, getSubOptions ? (_: { }), nestedTypes ? { } }:
    { _type = "option-type"; inherit name description check merge getSubOptions nestedTypes; };

  types = rec {
    bool = mkOptionType { name = "bool"; description = "boolean"; check = isBool; };
    int = mkOptionType { name = "int"; description = "signed integer"; check = isInt; };
    port = mkOptionType { name = "port"; description = "16 bit unsigned integer"; check = x: isInt x && x >= 0 && x <= 65535; };
    str = mkOptionType { name = "str"; description = "string"; check = isString; };
    nonEmptyStr = mkOptionType { name = "nonEmptyStr"; description = "non-empty string"; check = x: isString x && builtins.match "[ \t\n]*" x == null; };
    lines = mkOptionType {
      name = "lines"; description = "strings concatenated with \"\\n\""; check = isString;
      merge = _: defs: concatStringsSep "\n" (map (d: d.value) defs);
    };
    path = mkOptionType {
      name = "path"; description = "path";
      check = x: isPath x || (isString x && hasPrefix "/" x) || isDerivation x;
    };
    package = mkOptionType { name = "package"; description = "package"; check = isDerivation; merge = mergeOneOption; };
    raw = mkOptionType { name = "raw"; description = "raw value"; merge = mergeOneOption; };
    unspecified = mkOptionType { name = "unspecified"; description = "unspecified value"; merge = mergeOneOption; };
    attrs = mkOptionType {
      name = "attrs"; description = "attribute set"; check = isAttrs;
      merge = _: defs: foldl' (acc: d: acc // d.value) { } defs;
    };
    # Attrsets merge recursively, lists concatenate, scalars must agree.
    anything = mkOptionType {
      name = "anything"; description = "anything";
      merge = loc: defs:
        if all (d: isAttrs d.value && !isDerivation d.value) defs then (attrsOf anything).merge loc defs
        else if all (d: isList d.value) defs then (listOf anything).merge loc defs
        else mergeEqualOption loc defs;
    };
    enum = values: mkOptionType {
      name = "enum";
      description = "one of ${concatStringsSep ", " (map showVal values)}";
      check = x: elem x values;
    };
    nullOr = t: mkOptionType {
      name = "nullOr"; description = "null or ${t.description}";
      check = x: x == null || t.check x;
      merge = loc: defs:
        if all (d: d.value == null) defs then null
        else if any (d: d.value == null) defs then
          throw "The option `${showOption loc}' is defined both null and not null, in ${concatStringsSep ", " (map (d: "`${d.file}'") defs)}."
        else t.merge loc defs;
      nestedTypes.elemType = t;
    };
    either = a: b: mkOptionType {
      name = "either"; description = "${a.description} or ${b.description}";
      check = x: a.check x || b.check x;
      merge = loc: defs:
        if all (d: a.check d.value) defs then a.merge loc defs
        else if all (d: b.check d.value) defs then b.merge loc defs
        else mergeOneOption loc defs;
    };
    oneOf = ts: foldl' either (head ts) (tail ts);
    listOf = elemType: mkOptionType {
      name = "listOf"; description = "list of ${elemType.description}";
      check = isList;
      merge = loc: defs: map (x: x.value) (filter (x: x ? value) (concatLists (imap1
        (n: d: imap1
          (m: v: (mergeDefinitions (loc ++ [ "[definition ${toString n}-entry ${toString m}]" ]) elemType
            [{ inherit (d) file; value = v; }]).optionalValue)
          d.value)
        defs)));
      nestedTypes.elemType = elemType;
    };
    attrsOf = elemType: mkOptionType {
      name = "attrsOf"; description = "attribute set of ${elemType.description}";
      check = isAttrs;
      merge = loc: defs:
        let
          names = unique (concatLists (map (d: attrNames d.value) defs));
          merged = map
            (name: {
              inherit name;
              r = mergeDefinitions (loc ++ [ name ]) elemType
                (concatLists (map (d: if d.value ? ${name} then [{ inherit (d) file; value = d.value.${name}; }] else [ ]) defs));
            })
            names;
        in
        listToAttrs (map (x: { inherit (x) name; value = x.r.value; }) (filter (x: x.r.isDefined) merged));
      nestedTypes.elemType = elemType;
    };
    lazyAttrsOf = attrsOf;
    # A submodule is evaluated with the module system itself (see ./modules.nix).
    submodule = modules: mkOptionType {
      name = "submodule"; description = "submodule";
      check = x: isAttrs x || isFunction x || isPath x;
      merge = loc: defs:
        (modulesLib.evalModules {
          prefix = loc;
          specialArgs = { name = last loc; };
          modules = toList modules ++ map (d: { _file = d.file; imports = [ d.value ]; }) defs;
        }).config;
    };
  };

  modulesLib = import ./modules.nix { inherit lib; };

  lib = {
    inherit types mkOptionType mkOption mkEnableOption mkPackageOption literalExpression literalMD mdDoc
      mkIf mkMerge mkOverride mkOptionDefault mkDefault mkForce mkVMOverride defaultOverridePriority
      isOption isType dischargeProperties pushDownProperties mergeDefinitions mergeEqualOption mergeOneOption
      optional optionals subtractLists unique imap1 last toList flatten
      hasPrefix hasSuffix hasInfix escapeRegex boolToString escapeShellArg escapeShellArgs splitString makeBinPath
      isDerivation attrByPath filterAttrs mapAttrsToList recursiveUpdate getExe getExe'
      showVal showOption showDefs;
    inherit (builtins) all any attrNames attrValues concatLists concatMap concatStringsSep elem elemAt filter
      foldl' genList head isAttrs isBool isFunction isInt isList isPath isString length listToAttrs mapAttrs
      replaceStrings stringLength substring tail toJSON typeOf;
    inherit (modulesLib) evalModules;
    # nixpkgs has lib.strings / lib.lists / lib.attrsets; a few common spellings.
    strings = { inherit hasPrefix hasSuffix hasInfix escapeShellArg escapeShellArgs concatStringsSep splitString; };
    lists = { inherit optional optionals subtractLists unique imap1 last toList flatten; };
    trivial = { inherit boolToString; };
    nixosLite = true; # marker: this is the simulation, not nixpkgs' lib
  };
in
lib
