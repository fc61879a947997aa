/**
 * Nix for the tests that evaluate or build Nix: Debian trixie's Nix 2.26 in ONE booted machine of the fleet
 * image per test file (fleet/machine/nix.ts: the repository and the given directories bound read-only at
 * the same paths; what Nix builds stays in the machine's store), never the deployer's own Nix. The machine
 * boots in `beforeAll` (about 2 s) and stops in `afterAll`; its store starts empty each time, so a build
 * of the agent compiles it in every run (11-20 s on the 2-core deployer), as a host's first build does.
 */
import { afterAll, beforeAll } from "vitest";
import { startNixMachine, type NixMachine, type RunOptions } from "../fleet/machine/nix";

export { FLAKES, NIX_OPTS } from "../fleet/machine/nix";

/** What a test uses of its Nix machine: run a command there, read a file of it. */
export type TestNixMachine = Pick<NixMachine, "run" | "must" | "file">;

/**
 * Boots this test file's Nix machine. `dirs` is called in `beforeAll` (after the hooks registered before
 * this call) and lists the deployer directories Nix must read besides the repository.
 */
export function useNixMachine(dirs: () => readonly string[] = () => []): TestNixMachine {
  let nix: NixMachine | undefined;
  beforeAll(async () => {
    nix = await startNixMachine(dirs());
  });
  afterAll(async () => {
    await nix?.stop();
  });
  const booted = () => {
    if (!nix) throw new Error("the Nix machine is not booted (call useNixMachine at the top of the test file)");
    return nix;
  };
  return {
    run: (argv: readonly string[], opts?: RunOptions) => booted().run(argv, opts),
    must: (argv: readonly string[], opts?: RunOptions) => booted().must(argv, opts),
    file: (p: string) => booted().file(p),
  };
}
