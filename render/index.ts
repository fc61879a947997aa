/**
 * `nixfleet/render`: one resolved host → the files its checkout gets, and those files as the deploy's
 * bundle. Pure: no Pulumi. `printNix` is the only code that emits Nix text.
 */
export { hostFile, MODULE_FILE, renderHost, renderHostSettings, renderRole, roleFile, TABLE_FILE, type RenderedFile } from "./files";
export { parseBundle, renderBundle, rolloutToken } from "./bundle";
export { printNix, type NixValue } from "./nix";
