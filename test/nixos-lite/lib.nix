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
  reverseList = xs: let l = length xs; in genList (n: builtins.elemAt xs (l - n - 1)) l;
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
  optionalString = cond: s: if cond then s else "";
  concatMapStrings = f: xs: concatStringsSep "" (map f xs);
  removeSuffix = suff: str:
    if hasSuffix suff str then substring 0 (stringLength str - stringLength suff) str else str;
  # nixpkgs lib/strings.nix: toJSON with `$` escaped, so the result is a Nix string literal.
  escapeNixString = s: replaceStrings [ "$" ] [ "\\$" ] (toJSON s);
  escapeNixIdentifier = s:
    if builtins.match "[a-zA-Z_][a-zA-Z0-9_'-]*" s != null
      && !(elem s [ "assert" "else" "if" "in" "inherit" "let" "or" "rec" "then" "with" ])
    then s else escapeNixString s;
  # nixpkgs: plain words stay bare, everything else is single-quoted.
  escapeShellArg = arg:
    let s = toString arg; in
    if builtins.match "[[:alnum:],._+:@%/-]+" s != null then s
    else "'${replaceStrings [ "'" ] [ "'\\''" ] s}'";
  escapeShellArgs = xs: concatStringsSep " " (map escapeShellArg xs);
  splitString = sep: s: filter isString (builtins.split (escapeRegex sep) s);
  # nixpkgs lib/attrsets.nix getOutput + lib/strings.nix makeSearchPathOutput: a package's `bin`
  # output (or `out`), a string stays itself; makeBinPath is makeSearchPathOutput "bin" "bin".
  getOutput = output: pkg:
    if !(isAttrs pkg && pkg ? outputSpecified && pkg.outputSpecified)
    then pkg.${output} or pkg.out or pkg else pkg;
  getBin = getOutput "bin";
  makeSearchPathOutput = output: subDir: pkgs:
    concatStringsSep ":" (map (p: "${getOutput output p}/${subDir}") (filter (x: x != null) pkgs));
  makeBinPath = makeSearchPathOutput "bin" "bin";

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
  optionalAttrs = cond: as: if cond then as else { };
  nameValuePair = name: value: { inherit name value; };
  mapAttrs' = f: set: listToAttrs (mapAttrsToList f set);
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
  # nixpkgs lib/options.nix: parts that are not Nix identifiers are quoted, `<name>` and `*` stay.
  showOption = loc: concatStringsSep "."
    (map (p: if p == "*" || builtins.match "<(.*)>" p != null then p else escapeNixIdentifier p) loc);
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
  # nixpkgs lib/modules.nix: mkOrder sorts the definitions of one option (stable, lower first).
  mkOrder = priority: content: { _type = "order"; inherit priority content; };
  defaultOrderPriority = 1000;
  mkBefore = mkOrder 500;
  mkAfter = mkOrder 1500;

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

  # Expands mkMerge and mkIf, unwraps mkOverride and mkOrder; returns [ { priority; order; value; } ].
  # (nixpkgs discharges mkIf/mkMerge, then filterOverrides', then sortProperties; unwrapping all
  # three here in one pass gives the same result for every nesting NixOS itself accepts.)
  dischargeProperties = dischargeWith { priority = defaultOverridePriority; order = defaultOrderPriority; };
  dischargeWith = props: v:
    let t = if isAttrs v then v._type or null else null; in
    if t == "merge" then concatLists (map (dischargeWith props) v.contents)
    else if t == "if" then
      (if isBool v.condition then
        (if v.condition then dischargeWith props v.content else [ ])
      else throw "‘mkIf’ called with a non-Boolean condition")
    else if t == "override" then dischargeWith (props // { inherit (v) priority; }) v.content
    else if t == "order" then dischargeWith (props // { order = v.priority; }) v.content
    else [ (props // { value = v; }) ];

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
        (d: map (p: { inherit (d) file; inherit (p) priority order value; }) (dischargeProperties d.value))
        defs);
      highestPrio = foldl' (acc: d: if d.priority < acc then d.priority else acc) 9999 discharged;
      # nixpkgs sortProperties: builtins.sort is stable, so equal orders keep definition order.
      defsFinal = map (d: { inherit (d) file value; })
        (builtins.sort (a: b: a.order < b.order) (filter (d: d.priority == highestPrio) discharged));
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
        else throw "The option `${showOption loc}' was accessed but has no value defined. Try setting the option.";
      optionalValue = if isDefined then { value = mergedValue; } else { };
    };

  mergeEqualOption = loc: defs:
    if defs == [ ] then throw "The option `${showOption loc}' was accessed but has no value defined. Try setting the option."
    else if all (d: d.value == (head defs).value) defs then (head defs).value
    else throw "The option `${showOption loc}' has conflicting definition values:${showDefs defs}\nUse `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.";
  # nixpkgs lib/options.nix mergeDefaultOption (types.unspecified): lists concatenate, attrsets
  # merge, bools or, strings concatenate, equal ints stay; anything else cannot be merged.
  mergeDefaultOption = loc: defs:
    let list = map (d: d.value) defs; in
    if length list == 1 then head list
    else if all isFunction list then x: mergeDefaultOption loc (map (d: d // { value = d.value x; }) defs)
    else if all isList list then concatLists list
    else if all isAttrs list then foldl' (a: b: a // b) { } list
    else if all isBool list then any (x: x) list
    else if all isString list then concatStringsSep "" list
    else if all isInt list && all (x: x == head list) list then head list
    else throw "Cannot merge definitions of `${showOption loc}'. Definition values:${showDefs defs}";
  # nixpkgs lib/options.nix mergeUniqueOption: even equal values may not be defined twice.
  mergeOneOption = loc: defs:
    if length defs == 1 then (head defs).value
    else throw "The option `${showOption loc}' is defined multiple times while it's expected to be unique.\n\nDefinition values:${showDefs defs}\nUse `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.\n";

  # --- types -----------------------------------------------------------------
  # nixpkgs lib/types.nix addCheck: the type with one more condition on its values.
  addCheck = elemType: check: elemType // { check = x: elemType.check x && check x; };

  mkOptionType = { name, description ? name, check ? (_: true), merge ? mergeEqualOption, getSubOptions ? (_: { }), nestedTypes ? { } }:
    { _type = "option-type"; inherit name description check merge getSubOptions nestedTypes; };

  types = rec {
    bool = mkOptionType { name = "bool"; description = "boolean"; check = isBool; };
    int = mkOptionType { name = "int"; description = "signed integer"; check = isInt; };
    # nixpkgs lib/types.nix `ints`: names and descriptions as there (they appear in type errors).
    ints =
      let
        betweenDesc = lo: hi: "${toString lo} and ${toString hi} (both inclusive)";
        between = lo: hi: addCheck int (x: x >= lo && x <= hi) // {
          name = "intBetween"; description = "integer between ${betweenDesc lo hi}";
        };
        ign = lo: hi: name: docStart: between lo hi // { inherit name; description = "${docStart}; between ${betweenDesc lo hi}"; };
        unsign = bit: range: ign 0 (range - 1) "unsignedInt${toString bit}" "${toString bit} bit unsigned integer";
        sign = bit: range: ign (0 - range / 2) (range / 2 - 1) "signedInt${toString bit}" "${toString bit} bit signed integer";
      in
      {
        inherit between;
        unsigned = addCheck int (x: x >= 0) // { name = "unsignedInt"; description = "unsigned integer, meaning >=0"; };
        positive = addCheck int (x: x > 0) // { name = "positiveInt"; description = "positive integer, meaning >0"; };
        u8 = unsign 8 256;
        u16 = unsign 16 65536;
        u32 = unsign 32 4294967296;
        s8 = sign 8 256;
        s16 = sign 16 65536;
        s32 = sign 32 4294967296;
      };
    port = ints.u16;
    str = mkOptionType { name = "str"; description = "string"; check = isString; };
    # nixpkgs: the whole string must match (builtins.match is anchored); the pattern is shown in errors.
    strMatching = pattern: mkOptionType {
      name = "strMatching ${escapeNixString pattern}";
      description = "string matching the pattern ${pattern}";
      check = x: isString x && builtins.match pattern x != null;
    };
    # nixpkgs: one line, optionally newline-terminated; the merge drops that trailing newline.
    singleLineStr = mkOptionType {
      name = "singleLineStr";
      description = "(optionally newline-terminated) single-line string";
      check = (strMatching "[^\n\r]*\n?").check;
      merge = loc: defs: removeSuffix "\n" (mergeEqualOption loc defs);
    };
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
    unspecified = mkOptionType { name = "unspecified"; description = "unspecified value"; merge = mergeDefaultOption; };
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
    inherit types addCheck mkOrder mkBefore mkAfter defaultOrderPriority dischargeWith
      reverseList optionalString concatMapStrings removeSuffix escapeNixString escapeNixIdentifier getOutput getBin
      makeSearchPathOutput optionalAttrs nameValuePair mapAttrs';
    inherit mkOptionType mkOption mkEnableOption mkPackageOption literalExpression literalMD mdDoc
      mkIf mkMerge mkOverride mkOptionDefault mkDefault mkForce mkVMOverride defaultOverridePriority
      isOption isType dischargeProperties pushDownProperties mergeDefinitions mergeEqualOption mergeOneOption mergeDefaultOption
      optional optionals subtractLists unique imap1 last toList flatten
      hasPrefix hasSuffix hasInfix escapeRegex boolToString escapeShellArg escapeShellArgs splitString makeBinPath
      isDerivation attrByPath filterAttrs mapAttrsToList recursiveUpdate getExe getExe'
      showVal showOption showDefs;
    inherit (builtins) all any attrNames attrValues concatLists concatMap concatStringsSep elem elemAt filter
      foldl' genList head isAttrs isBool isFunction isInt isList isPath isString length listToAttrs mapAttrs
      replaceStrings stringLength substring tail toJSON typeOf;
    inherit (modulesLib) evalModules;
    # nixpkgs has lib.strings / lib.lists / lib.attrsets; a few common spellings.
    strings = { inherit hasPrefix hasSuffix hasInfix escapeShellArg escapeShellArgs concatStringsSep splitString
      optionalString removeSuffix escapeNixString escapeNixIdentifier makeSearchPathOutput; };
    lists = { inherit optional optionals subtractLists unique imap1 last toList flatten reverseList; };
    attrsets = { inherit attrByPath filterAttrs mapAttrsToList optionalAttrs nameValuePair mapAttrs' getOutput getBin; };
    trivial = { inherit boolToString; };
    nixosLite = true; # marker: this is the simulation, not nixpkgs' lib
  };
in
lib
