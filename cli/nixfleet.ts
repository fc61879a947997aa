/**
 * `nixfleet render --stack <name> --out <dir>`: writes, one folder per host, exactly the files
 * `pulumi up` would push. No Pulumi engine, no network. Everything is rendered in memory
 * first, so invalid config writes nothing.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { fleetFromConfigMap, readStackFile } from "../config/stack";
import { ConfigError } from "../config/schema";
import { renderHost } from "../render/files";
import { statusMain } from "./status";

const USAGE = "usage: nixfleet render --stack <name> --out <dir> [--stacks-dir <dir>]\n       nixfleet status --stack <name> [--stacks-dir <dir>] [--identity <file>] [--json] [--timeout <s>] [--insecure-host-key]";

export function main(argv: string[]): number {
  const [verb, ...rest] = argv;
  if (verb === "status") {
    // status waits for ssh: it sets the exit code when done (bin/nixfleet.js's 0 is set before that).
    void statusMain(rest).then((code) => (process.exitCode = code));
    return 0;
  }
  if (verb !== "render") {
    console.error(USAGE);
    return 2;
  }
  let values: { stack?: string; out?: string; "stacks-dir"?: string };
  try {
    ({ values } = parseArgs({ args: rest, options: { stack: { type: "string" }, out: { type: "string" }, "stacks-dir": { type: "string" } } }));
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!values.stack || !values.out) {
    console.error(USAGE);
    return 2;
  }
  const stackFile = join(values["stacks-dir"] ?? "stacks", `Pulumi.${values.stack}.yaml`);
  let outputs: { file: string; content: string }[];
  try {
    const fleet = fleetFromConfigMap(readStackFile(stackFile));
    for (const w of fleet.warnings) console.error(`${stackFile}: warning: ${w}`);
    outputs = fleet.hosts.flatMap((host) =>
      renderHost(host).map((f) => ({ file: join(values.out!, host.name, ...f.path.split("/")), content: f.content })),
    );
  } catch (e) {
    if (e instanceof ConfigError) console.error(`${stackFile}: ${e.message}`);
    else console.error(`${stackFile}: ${(e as Error).message}`);
    return 2;
  }
  for (const { file, content } of outputs) {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, content);
  }
  console.log(`rendered ${outputs.length} files for stack ${values.stack} into ${resolve(values.out)}`);
  return 0;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
