// `npm run bench`: how nixfleet's pure part (parse + resolve + render) scales with fleet size,
// next to the printer alone and to `nix-instantiate --parse` (Nix 2.26 in a booted machine of the fleet
// image, fleet/machine/nix.ts; not the deployer's Nix), all in one process and one run.
// It prints numbers, it asserts nothing: machines here are shared and noisy, so compare the
// ratios within one run, not absolute times across runs.
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { ROLES } from "../config/schema";
import { fleetFromConfigMap } from "../config/stack";
import { agentFiles, MODULE_FILE, renderHost, renderHostSettings, renderRole, type RenderedFile } from "../render/files";
import { printNix, type NixValue } from "../render/nix";
import { startNixMachine } from "../fleet/machine/nix";

const REPS = Number(process.env.BENCH_REPS ?? 5);
const SIZES = [1, 10, 100, 1000];
/** Small fleets take ~1 ms a run: repeat them more so their median is not one scheduler hiccup. */
const repsFor = (n: number) => (n < 100 ? REPS * 10 : REPS);

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const ms = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e6;
const fmt = (x: number, digits = 2) => x.toFixed(digits);
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;

/** A valid stack config map of `n` hosts: roles in turn, some host overrides, stack role settings. */
function configMap(n: number): Record<string, unknown> {
  const key = (i: number) => `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${Buffer.alloc(24, i % 251).toString("base64")}`;
  const hosts = Array.from({ length: n }, (_, i) => {
    const role = ROLES[i % ROLES.length];
    const host: Record<string, unknown> = {
      name: `host-${String(i).padStart(4, "0")}`,
      address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      port: 22 + (i % 3),
      hostKey: key(i),
      role,
      configPath: `/home/user${i % 7}/nix-config`,
    };
    if (i % 3 === 0) host.preUpdateHooks = ["chezmoi-pre-update.service", `backup-${i}.service`];
    if (i % 5 === 0) host.hostCanCommitConfig = false;
    if (i % 4 === 1) host.branch = `hosts/host-${i}`;
    if (i % 6 === 2) host.schedule = "Sat *-*-* 02:30";
    return host;
  });
  return {
    "nixfleet:roles": {
      desktop: { preUpdateHooks: ["chezmoi-pre-update.service"], hostCanCommitConfig: true },
      server: { requiredHooks: ["chezmoi-pre-update.service"], randomizedDelaySec: "1h" },
      pi: { schedule: "Sun 04:00" },
    },
    "nixfleet:hosts": hosts,
    "nixfleet:timeouts": { validate: 7200 },
  };
}

/** parse + resolve + render of a whole fleet; returns the time split and the files. */
function pipeline(map: Record<string, unknown>) {
  const t0 = process.hrtime.bigint();
  const fleet = fleetFromConfigMap(map);
  const parsed = ms(t0);
  const files: RenderedFile[][] = fleet.hosts.map(renderHost);
  return { total: ms(t0), parsed, files };
}

/** The same work, but each host's files are dropped at once (what a streaming writer would keep). */
function pipelineDropping(map: Record<string, unknown>) {
  const t0 = process.hrtime.bigint();
  const fleet = fleetFromConfigMap(map);
  const parsed = ms(t0);
  for (const h of fleet.hosts) renderHost(h);
  return { total: ms(t0), parsed };
}

function timeReps<T>(fn: () => T): { times: number[]; last: T } {
  fn(); // warm-up (JIT, file cache)
  const times: number[] = [];
  let last!: T;
  for (let r = 0; r < REPS; r++) {
    const t0 = process.hrtime.bigint();
    last = fn();
    times.push(ms(t0));
  }
  return { times, last };
}

/** timeReps for a child process (a command in the Nix machine): one warm-up, then REPS timed runs. */
async function timeRepsAsync(fn: () => Promise<unknown>): Promise<number[]> {
  await fn();
  const times: number[] = [];
  for (let r = 0; r < REPS; r++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(ms(t0));
  }
  return times;
}

const wallStart = process.hrtime.bigint();

// Memory for 1000 hosts, measured first while the heap is still small (printed after the timings):
// allocation during one run, and what stays live while the result is held.
const memory: string[] = [];
{
  const out = (l = "") => memory.push(l);
  pipeline(configMap(10)); // load and JIT the code first, so the deltas are the data's
  const map = configMap(1000);
  gc();
  const before = process.memoryUsage();
  const res = pipeline(map);
  const during = process.memoryUsage();
  gc();
  const held = process.memoryUsage();
  const outBytes = res.files.reduce((a, f) => a + f.reduce((b, x) => b + Buffer.byteLength(x.content), 0), 0);
  out();
  out("## memory, 1000 hosts (process.memoryUsage deltas; gc forced before and after)");
  out();
  out("| measure | heapUsed Δ | rss Δ |");
  out("| --- | ---: | ---: |");
  out(`| right after one run (garbage included) | ${mb(during.heapUsed - before.heapUsed)} | ${mb(during.rss - before.rss)} |`);
  out(`| after gc, result still referenced (${mb(outBytes)} of file text) | ${mb(held.heapUsed - before.heapUsed)} | ${mb(held.rss - before.rss)} |`);
  void res.files.length; // keep the result alive until here
}

const lines: string[] = [];
const out = (s = "") => lines.push(s);

out(`# nixfleet bench — ${os.cpus().length} CPU(s) (${os.cpus()[0]?.model.trim() ?? "?"}), node ${process.version}, ${os.platform()} ${os.release()}`);
out(`One run; each number is the median of ${REPS} repetitions (${REPS * 10} for fleets under 100 hosts) after one warm-up, sizes interleaved. Compare ratios, not absolute times.`);
out();
out("## parse + resolve + render (fleetFromConfigMap + renderHost per host)");
out();
out("| hosts | total ms | parse+resolve ms | render ms | µs / host | per-host vs 10 hosts | files | output |");
out("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");

// Sizes run round-robin (one round = every size once, small ones several times), so a slow
// phase of a shared machine hits every size alike instead of skewing one row's ratio.
const maps = new Map(SIZES.map((n) => [n, configMap(n)] as const));
const runs = new Map(SIZES.map((n) => [n, [] as { total: number; parsed: number }[]] as const));
const lastFiles = new Map<number, RenderedFile[][]>();
const dropped: { total: number; parsed: number }[] = [];
for (const n of SIZES) pipeline(maps.get(n)!); // warm-up
for (let r = 0; r < REPS; r++) {
  for (const n of SIZES) {
    for (let k = 0; k < repsFor(n) / REPS; k++) {
      const res = pipeline(maps.get(n)!);
      runs.get(n)!.push(res);
      lastFiles.set(n, res.files);
    }
  }
  dropped.push(pipelineDropping(maps.get(1000)!));
}
const perHost = new Map(SIZES.map((n) => [n, (median(runs.get(n)!.map((r) => r.total)) * 1000) / n] as const));
for (const n of SIZES) {
  const rs = runs.get(n)!;
  const files = lastFiles.get(n)!;
  const total = median(rs.map((r) => r.total));
  const parsed = median(rs.map((r) => r.parsed));
  const render = median(rs.map((r) => r.total - r.parsed));
  const count = files.reduce((acc, f) => acc + f.length, 0);
  const bytes = files.reduce((acc, f) => acc + f.reduce((b2, x) => b2 + Buffer.byteLength(x.content), 0), 0);
  out(`| ${n} | ${fmt(total)} | ${fmt(parsed)} | ${fmt(render)} | ${fmt(perHost.get(n)!, 1)} | ${fmt(perHost.get(n)! / perHost.get(10)!)} | ${count} | ${mb(bytes)} |`);
}
lastFiles.clear();
{
  const total = median(dropped.map((r) => r.total));
  const parsed = median(dropped.map((r) => r.parsed));
  out(`| 1000, files not kept | ${fmt(total)} | ${fmt(parsed)} | ${fmt(median(dropped.map((r) => r.total - r.parsed)))} | ${fmt(total, 1)} | ${fmt(total / perHost.get(10)!)} | — | — |`);
  out();
  out("The last row does the same work for 1000 hosts but drops each host's files at once; its difference to the row");
  out("above is what keeping all file text live (see memory) costs in this run, within this run's noise.");
}

// Where render time goes, 1000 hosts: the two generated files vs re-reading the shipped ones.
{
  const fleet = fleetFromConfigMap(configMap(1000));
  const nixDir = path.join(__dirname, "..", "nix");
  const part = (fn: () => void) => median(timeReps(fn).times);
  const total = part(() => fleet.hosts.forEach((h) => renderHost(h)));
  const role = part(() => fleet.hosts.forEach((h) => renderRole(h.role, h.roleSettings)));
  const hostFileT = part(() => fleet.hosts.forEach((h) => renderHostSettings(h)));
  const shipped = part(() => fleet.hosts.forEach(() => [MODULE_FILE, ...agentFiles().map((f) => f.path)].forEach((f) => readFileSync(path.join(nixDir, f), "utf8"))));
  out();
  out("## render breakdown, 1000 hosts (each part timed on its own)");
  out();
  out("| part | ms | share of renderHost |");
  out("| --- | ---: | ---: |");
  out(`| renderHost (all files) | ${fmt(total)} | 100% |`);
  out(`| renderRole (roles/form-<role>.nix) | ${fmt(role)} | ${fmt((100 * role) / total, 0)}% |`);
  out(`| renderHostSettings (hosts/<host>/nixfleet.nix) | ${fmt(hostFileT)} | ${fmt((100 * hostFileT) / total, 0)}% |`);
  out(`| readFileSync of the shipped files (module, agent source), per host | ${fmt(shipped)} | ${fmt((100 * shipped) / total, 0)}% |`);
  const rest = total - role - hostFileT - shipped;
  out(`| rest (header concat of the shipped text, sort, noise) | ${fmt(rest)} | ${fmt((100 * rest) / total, 0)}% |`);
}

lines.push(...memory);

// The printer alone, on one large nested value (escapes, lists, nested attrsets, raw and paths).
{
  const big: Record<string, NixValue> = {};
  for (let i = 0; i < 2000; i++) {
    big[`host-${i}`] = {
      enable: i % 2 === 0,
      port: 22 + i,
      path: `/home/u${i}/nix-config`,
      "needs quoting.${i}": `value with "quotes", \${interpolation} and \\ backslash ${i}`,
      multi: `line one\nline two ${i}\n  indented ''quoted'' $\{x}\n`,
      hooks: ["chezmoi-pre-update.service", `backup-${i}.service`, { nested: [1, 2, { deep: null }] }],
      settings: { schedule: "Sun 04:00", delay: "30min", branch: `hosts/h${i}` },
    };
  }
  const { times, last } = timeReps(() => printNix(big));
  const t = median(times);
  const bytes = Buffer.byteLength(last);
  out();
  out("## printer alone (printNix of a 2000-entry nested attrset)");
  out();
  out("| output | ms | MB/s |");
  out("| ---: | ---: | ---: |");
  out(`| ${mb(bytes)} | ${fmt(t)} | ${fmt(bytes / 2 ** 20 / (t / 1000), 1)} |`);
}

// Where time goes in a real run: one child process parsing one host's rendered Nix files.
async function nixParse(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "nixfleet-bench-"));
  try {
    const host = fleetFromConfigMap(configMap(4)).hosts[0];
    const nixFiles: string[] = [];
    for (const f of renderHost(host)) {
      const file = path.join(dir, f.path);
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, f.content);
      if (f.path.endsWith(".nix")) nixFiles.push(file);
    }
    const inProcess = median(timeReps(() => renderHost(host)).times);
    let parse = "no Nix machine (it needs root and the fleet image)";
    let version = "";
    try {
      const nix = await startNixMachine([dir]);
      try {
        version = (await nix.must(["nix-instantiate", "--version"])).trim();
        const parseT = median(await timeRepsAsync(() => nix.must(["nix-instantiate", "--parse", ...nixFiles])));
        const spawnT = median(await timeRepsAsync(() => nix.must(["true"])));
        parse = `${fmt(parseT)}`;
        out();
        out(`## one host's ${nixFiles.length} rendered .nix files: render in process vs \`nix-instantiate --parse\` (${version}, in a machine)`);
        out();
        out("| step | ms | vs render |");
        out("| --- | ---: | ---: |");
        out(`| renderHost (in process) | ${fmt(inProcess, 3)} | 1× |`);
        out(`| run \`true\` in the machine (process start + nsenter baseline) | ${fmt(spawnT)} | ${fmt(spawnT / inProcess, 0)}× |`);
        out(`| \`nix-instantiate --parse\` (one child in the machine) | ${parse} | ${fmt(parseT / inProcess, 0)}× |`);
      } finally {
        await nix.stop();
      }
    } catch (err) {
      out();
      out(`## nix-instantiate --parse: skipped (${parse}; ${(err as Error).message.split("\n")[0]})`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

nixParse().then(
  () => {
    out();
    out(`Total bench wall time: ${fmt(ms(wallStart) / 1000, 1)} s.`);
    console.log(lines.join("\n"));
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
