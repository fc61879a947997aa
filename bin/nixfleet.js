#!/usr/bin/env node
// Runs the TypeScript CLI directly through tsx, so `npx nixfleet` needs no build step.
require("tsx/cjs");
process.exitCode = require("../cli/nixfleet.ts").main(process.argv.slice(2));
