// A user's own Pulumi TypeScript program that imports the packed `nixfleet` (test/package copies this
// folder into a fresh temporary project, compiles it with tsc against the package's .d.ts and runs it
// with plain node: no tsx). It composes Fleet itself and wires nothing else: no `previous`, no stack
// reference, so a host whose confirm failed must heal by the Fleet alone. The host's address is an
// Output, as a VM's IP address created in the same program would be. The program runs as an Automation
// API inline program on the offline engine (no nodejs language host offline, see toolchain/README.md);
// the SIMULATED fleet's facts come from the test in NIXFLEET_SIM.
import * as pulumi from "@pulumi/pulumi";
import { LocalWorkspace, PulumiCommand } from "@pulumi/pulumi/automation";
import { ConfigError, Fleet, Host, type FleetArgs, type HostStatus } from "nixfleet";

interface Sim {
  /** The stack, and the address the Output resolves to (a test sets a bad one on purpose). */
  stack: string;
  address: string;
  host: { name: string; port: number; hostKey: string; checkout: string; stateDir: string; confirmTimeout: number; preUpdateHooks?: string[] };
  privateKey: string;
  bin: string;
  workDir: string;
  env: Record<string, string>;
}

async function main(): Promise<void> {
  const sim = JSON.parse(process.env.NIXFLEET_SIM ?? "") as Sim;
  const checks: string[] = [];
  const program = async () => {
    // Stands in for e.g. `vm.ipAddress`: known only once the engine resolves it.
    const address = pulumi.output("pending").apply(() => sim.address);
    const { name, port, hostKey, checkout, stateDir, confirmTimeout, preUpdateHooks } = sim.host;
    const args: FleetArgs = { privateKey: pulumi.secret(sim.privateKey), hosts: [{ name, role: "server", address, port, hostKey, configPath: checkout, stateDir, confirmTimeout, preUpdateHooks }] };
    const fleet = new Fleet("lab", args);
    if (!Fleet.isInstance(fleet) || !Host.isInstance(fleet.hosts[name]) || Fleet.isInstance(fleet.hosts[name])) checks.push("isInstance");
    try {
      new Fleet("bad", { privateKey: "k", hosts: [] });
      checks.push("no ConfigError");
    } catch (e) {
      if (!(e instanceof ConfigError)) checks.push(`not a ConfigError: ${String(e)}`);
    }
    return { hosts: fleet.status };
  };
  const stack = await LocalWorkspace.createOrSelectStack(
    { stackName: sim.stack, projectName: "consumer", program },
    {
      workDir: sim.workDir,
      projectSettings: { name: "consumer", runtime: "nodejs" },
      envVars: sim.env,
      // The offline CLI is 3.248; the project's SDK may be newer (the test installs the newest).
      pulumiCommand: await PulumiCommand.get({ root: sim.bin, skipVersionCheck: true }),
    },
  );
  const up = await stack.up({ continueOnError: true, onOutput: (line) => process.stderr.write(line) });
  const hosts = up.outputs.hosts?.value as Record<string, HostStatus> | undefined;
  process.stdout.write(`${JSON.stringify({ result: up.summary.result, hosts, checks, node: process.version })}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`consumer: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
