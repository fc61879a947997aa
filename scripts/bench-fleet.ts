// `npm run bench:fleet`: how a rollout scales with the number of hosts, on the SIMULATED fleet with the
// real engine (fleet/README.md). One run, one table; it asserts nothing. The machine is shared and noisy:
// compare the ratios within one run, never absolute times across runs.
//
//   BENCH_SIZES=1,8,24,48   fleet sizes (default)
//   BENCH_BUILD_SECONDS=5   how long each host's build takes (a real derivation that sleeps), default 5
//   BENCH_CONFIRM_TIMEOUT=30  confirmTimeout of every role, default 30 (the product's)
//
// For each size: first `up`; a setting changed for every host (`up` again); a plain parallel-ssh baseline
// that runs the very same deploy and confirm commands (bundle on stdin) without Pulumi; a no-op `up` and a
// `preview`; SSH sessions per host (sshd logs); state size per host; peak RSS of the CLI and of this process.
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Stack } from "@pulumi/pulumi/automation";
import { fleetFromConfigMap } from "../config/stack";
import { hostCommands } from "../components/remote";
import { hostMemory, hostPath, sshArgs, startFleet, type SimFleet } from "../fleet/fleet";
import { fleetStack, setFleetConfig } from "../fleet/stack";
import { configFor, sessions, withRoles } from "../test/e2e/harness";

const SIZES = (process.env.BENCH_SIZES ?? "1,8,24,48").split(",").map(Number);
const BUILD_SECONDS = Number(process.env.BENCH_BUILD_SECONDS ?? 5);
// The activator's wait for the confirmation (the product's default, 30 s). Under a 48-machine load on 2 CPUs
// some confirms took longer and those hosts rolled back (measured): raise it to measure the rollout itself.
const CONFIRM_TIMEOUT = Number(process.env.BENCH_CONFIRM_TIMEOUT ?? 30);
const ROLES = ["desktop", "laptop", "server", "pi"] as const;

const seconds = async (fn: () => Promise<unknown>) => {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
};

/** Every host's build takes BUILD_SECONDS whenever nixfleet's files for it change (a real, uncached derivation). */
async function slowBuilds(fleet: SimFleet) {
  for (const h of fleet.hosts) {
    const file = hostPath(h, path.join(h.checkout, "hosts", h.name, "configuration.nix"));
    const text = await fs.readFile(file, "utf8");
    const end = text.lastIndexOf("}");
    const slow = `  # bench: a build that takes ${BUILD_SECONDS} s whenever nixfleet's settings for this host change
  environment.systemPackages = let
    stamp = builtins.hashString "sha256" (toString (map (f: if builtins.pathExists f then builtins.readFile f else "") [ ./nixfleet.nix ../../roles/form-${h.role}.nix ]));
  in [ (derivation { name = "bench-build-\${builtins.substring 0 8 stamp}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "/bin/sleep ${BUILD_SECONDS}; /bin/mkdir -p $out/bin" ]; }) ];
`;
    await fs.writeFile(file, `${text.slice(0, end)}${slow}${text.slice(end)}`);
  }
}

/** Peak resident memory of every `pulumi` process started meanwhile, sampled from /proc. */
function cliPeak() {
  let peak = 0;
  const timer = setInterval(async () => {
    for (const pid of await fs.readdir("/proc").catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid)) continue;
      const status = await fs.readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
      if (!/^Name:\s+pulumi$/m.test(status)) continue;
      const hwm = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
      peak = Math.max(peak, hwm);
    }
  }, 100);
  return { stop: () => (clearInterval(timer), peak) };
}

/** The same two sessions per host as nixfleet, with plain `ssh`, all hosts in parallel. */
async function baseline(fleet: SimFleet, config: Record<string, unknown>) {
  const resolved = fleetFromConfigMap(config);
  const sh = (host: SimFleet["hosts"][number], command: string, input: string) =>
    new Promise<string>((resolve, reject) => {
      const child = spawn("ssh", [...sshArgs(fleet, host), "--", command], { stdio: ["pipe", "pipe", "pipe"] });
      let out = "";
      let err = "";
      child.stdout.on("data", (d) => (out += d));
      child.stderr.on("data", (d) => (err += d));
      child.on("close", (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`${host.name}: exit ${code}: ${err.slice(-400)}`))));
      child.stdin.end(input);
    });
  await Promise.all(
    resolved.hosts.map(async (h) => {
      const sim = fleet.hosts.find((f) => f.name === h.name)!;
      const cmds = hostCommands(h, resolved.timeouts);
      const deployed = await sh(sim, cmds.deploy, cmds.bundle);
      await sh(sim, cmds.confirm(deployed), "");
    }),
  );
}

async function stateBytes(stack: Stack) {
  return JSON.stringify((await stack.exportStack()).deployment).length;
}

async function measure(n: number) {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), `nixfleet-bench-${n}-`));
  const hosts = Array.from({ length: n }, (_, i) => ({ name: `b${String(i).padStart(2, "0")}`, role: ROLES[i % ROLES.length] }));
  const booting = process.hrtime.bigint();
  const fleet = await startFleet({ root: path.join(root, "fleet"), basePort: 2900, hosts });
  const boot = Number(process.hrtime.bigint() - booting) / 1e9;
  let row;
  try {
    await slowBuilds(fleet);
    // Commit-back off: n hosts racing for one branch measures the forge, not nixfleet.
    let config: Record<string, unknown> = { ...configFor(fleet), "nixfleet:roles": Object.fromEntries(ROLES.map((r) => [r, { hostCanCommitConfig: false, confirmTimeout: CONFIRM_TIMEOUT }])) };
    const stack = await fleetStack({ fleet, dir: path.join(root, "pulumi"), stackName: `bench${n}`, config });
    const cli = cliPeak();
    const first = await seconds(() => stack.up({ continueOnError: true }));
    // Resident memory of every process of every machine (systemd, journald, sshd, …), after a rollout.
    const machineBytes = fleet.hosts.reduce((sum, h) => sum + hostMemory(h), 0) / n;
    const sessionsFirst = (await Promise.all(fleet.hosts.map(sessions))).reduce((a, b) => a + b, 0) / n;
    config = withRoles(config, { randomizedDelaySec: "42min" });
    await setFleetConfig(stack, config, fleet.privateKey);
    const s0 = (await Promise.all(fleet.hosts.map(sessions))).reduce((a, b) => a + b, 0);
    const update = await seconds(() => stack.up({ continueOnError: true }));
    const sessionsUpdate = ((await Promise.all(fleet.hosts.map(sessions))).reduce((a, b) => a + b, 0) - s0) / n;
    const noop = await seconds(() => stack.up());
    const preview = await seconds(() => stack.preview());
    const cliPeakBytes = cli.stop();
    const state = (await stateBytes(stack)) / n;
    // Baseline last: the same steps again for a new setting, without the engine.
    const base = await seconds(() => baseline(fleet, withRoles(config, { randomizedDelaySec: "43min" })));
    row = { n, boot, machineBytes, first, update, base, noop, preview, sessionsFirst, sessionsUpdate, state, cliPeakBytes, programPeak: process.resourceUsage().maxRSS * 1024 };
  } catch (e) {
    // Keep the fleet's disks for a look (each machine's journal is in hosts/<name>/disk/var/log/journal).
    await fleet.stop();
    process.stderr.write(`bench:fleet: ${n} hosts failed; fleet kept at ${root}\n`);
    throw e;
  }
  await fleet.stop();
  await fs.rm(root, { recursive: true, force: true });
  return row;
}

async function main() {
  const rows = [];
  for (const n of SIZES) {
    process.stderr.write(`bench:fleet: ${n} host(s)…\n`);
    const row = await measure(n);
    process.stderr.write(`bench:fleet: ${JSON.stringify(row)}\n`);
    rows.push(row);
  }
  const one = rows.find((r) => r.n === 1) ?? rows[0];
  const f = (x: number, d = 1) => x.toFixed(d);
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MB`;
  const table = [
    ["hosts", "machines up (image cached)", "memory/machine", "first up", "×1 host", "update", "×1 host", "ssh baseline", "update/baseline", "no-op up", "preview", "no-op/preview", "sessions/host (first, update)", "state/host", "CLI peak", "bench process peak (cumulative)"],
    ...rows.map((r) => [
      String(r.n),
      `${f(r.boot)} s`,
      mb(r.machineBytes),
      `${f(r.first)} s`,
      f(r.first / one.first, 2),
      `${f(r.update)} s`,
      f(r.update / one.update, 2),
      `${f(r.base)} s`,
      f(r.update / r.base, 2),
      `${f(r.noop)} s`,
      `${f(r.preview)} s`,
      f(r.noop / r.preview, 2),
      `${f(r.sessionsFirst)}, ${f(r.sessionsUpdate)}`,
      `${f(r.state / 1024)} kB`,
      mb(r.cliPeakBytes),
      mb(r.programPeak),
    ]),
  ];
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  const line = (row: string[]) => `| ${row.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  console.log(`simulated build time ${BUILD_SECONDS} s per host; one run on ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(1)}`);
  console.log([line(table[0]), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...table.slice(1).map(line)].join("\n"));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exitCode = 1;
});
