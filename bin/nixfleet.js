#!/usr/bin/env node
// An installed package runs the compiled CLI (dist/, built by `npm run build` / prepack): no tsx.
// In a source checkout (cli/nixfleet.ts is there; the package does not ship it) the TypeScript runs
// through tsx, a devDependency, so the repo's tests never run a stale build.
const path = require("node:path");
const fs = require("node:fs");
const source = path.join(__dirname, "..", "cli", "nixfleet.ts");
if (fs.existsSync(source)) {
  require("tsx/cjs");
  process.exitCode = require(source).main(process.argv.slice(2));
} else {
  process.exitCode = require("../dist/cli/nixfleet.js").main(process.argv.slice(2));
}
