// Plain Node (CommonJS, no tsx): `require("nixfleet")` under Pulumi mocks must register no resource.
// A Fleet named "probe" is constructed afterwards and waited for: every registration has happened by
// then, and it shows the mocks see resources. Anything not the probe's came from the import.
// Prints one JSON line: also the root exports and the subpaths' exports.
const pulumi = require("@pulumi/pulumi");
const created = [];
pulumi.runtime.setMocks({ newResource: (a) => (created.push(`${a.type}::${a.name}`), { id: a.name, state: a.inputs }), call: (a) => a.inputs }, "p", "s", false);
const notProbe = () => created.filter((t) => !t.startsWith("pulumi:pulumi:Stack::") && !/::probe(-|$)/.test(t));

async function main() {
  let probe;
  let nixfleet;
  await pulumi.runtime.runInPulumiStack(async () => {
    const lib = (nixfleet = require("nixfleet"));
    const hosts = [{ name: "a", role: "server", address: "10.0.0.1", configPath: "/etc/nixos/c", hostKey: process.argv[2] }];
    probe = new lib.Fleet("probe", { hosts, privateKey: "k" });
    return {};
  });
  await new Promise((resolve) => probe.status.apply(resolve));
  const onImport = notProbe();
  const onConstruct = created.filter((t) => /::probe(-|$)/.test(t));
  const tsx = Object.keys(require.cache).filter((k) => k.includes("/tsx/"));
  const config = Object.keys(require("nixfleet/config")).sort();
  const render = Object.keys(require("nixfleet/render")).sort();
  process.stdout.write(`${JSON.stringify({ onImport, onConstruct, tsx, exports: Object.keys(nixfleet).sort(), config, render, resolved: require.resolve("nixfleet") })}\n`);
}
main().catch((e) => {
  process.stderr.write(`no-side-effects: ${e && e.stack}\n`);
  process.exitCode = 1;
});
