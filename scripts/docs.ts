// `npm run docs`: writes what is generated from the settings table (nix/modules/services/system/
// auto-upgrade.json) into components/args.ts (each arg's JSDoc) and README.md (the settings table, the
// sessions' bounds, the timeouts line). test/settings-table.test.ts fails when either is stale.
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { withArgDocs, withReadmeSections } from "../config/docs";

const REPO = path.join(__dirname, "..");
for (const [file, rewrite] of [["components/args.ts", withArgDocs], ["README.md", withReadmeSections]] as const) {
  const p = path.join(REPO, file);
  const before = readFileSync(p, "utf8");
  const after = rewrite(before);
  if (after !== before) writeFileSync(p, after);
  console.log(`${file}: ${after === before ? "up to date" : "rewritten"}`);
}
