import { defineConfig } from "vitest/config";

// Unit tests (mocks, pure functions) and tests that drive real Nix, bash and shellcheck
// run in every `npm test`; the end-to-end tests (real Pulumi engine, real sshd) live in
// test/e2e and are part of the same run.
export default defineConfig({
  test: {
    include: ["**/*.test.ts"],
    exclude: ["node_modules/**"],
    // The end-to-end tests drive whole rollouts on a shared 2-core machine; unit tests take far less.
    testTimeout: 300_000,
    hookTimeout: 600_000,
    reporters: ["default", "./test/summary-reporter.ts"],
  },
});
